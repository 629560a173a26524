"""A cohort of clients in one pass of the model (lorakit.adapters.cohort) against the clients one
after another: the same factor gradients and the same FSLoRA rounds (float64 to 1e-10, float32 to
1e-6), and the explicit fallbacks (dropout, non-linear sites, a model that is not row-wise)."""

import copy
from types import SimpleNamespace

import networkx as nx
import pytest
import torch
from peft_toys import kind_problem, toy_problem
from torch import nn

import lorakit as lk
from lorakit.adapters import ModelProblem
from lorakit.adapters import problem as problem_module
from lorakit.decentralized.gossip import GossipLoRA
from lorakit.federated import budgets, make_federated
from lorakit.local import Local, train
from lorakit.rng import Streams
from lorakit.tree import PerSite

BLOCKS = [torch.tensor([0, 1, 2]), torch.tensor([3]), torch.tensor([4, 5]), torch.tensor([6, 7])]


@pytest.fixture(scope="module")
def gpt2():
    """The zoo's tiny GPT-2 (LoRA r = 4 on c_attn and c_proj: Conv1D sites, 3-D activations)."""
    from lorakit import zoo

    return zoo.gpt2_problem(rank=4, lora_alpha=8, blocks=8, block_size=16)


def _next_byte_loss(model, batch):
    """transformers' causal-LM loss in the model's dtype (transformers upcasts the logits to
    float32, which would cap a float64 comparison at float32's rounding)."""
    logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
    return nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"][:, 1:].flatten())


def _problem(gpt2, dtype, **kw) -> ModelProblem:
    """Clients of unequal sizes (3, 1, 2, 2 blocks): the grouped products pad them."""
    model = copy.deepcopy(gpt2.model).to(dtype).eval()  # eval: GPT-2's own dropout off
    return ModelProblem(
        model, gpt2.data, loss_fn=_next_byte_loss, clients=BLOCKS, name="gpt2", **kw
    )


@pytest.fixture
def passes(monkeypatch):
    """Counts the cohort passes actually taken (so a silent fallback fails the tests)."""
    calls = []
    real = problem_module.cohort_factor_grads

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(problem_module, "cohort_factor_grads", spy)
    return calls


def _stack(problem, seed=0):
    """Per-client factors at mixed ranks: client c's rank-r factors zero outside its first
    k_c = 1..r components (HeteroLoRA's zero padding), random elsewhere, and scalings s·r/k_c."""
    g = torch.Generator().manual_seed(seed)
    C, r, kw = problem.M, problem.ranks[0], {"dtype": problem.dtype}
    k = torch.tensor([1 + c % r for c in range(C)])
    on = (torch.arange(r) < k[:, None]).to(problem.dtype)
    B = [0.3 * torch.randn(C, m, r, generator=g, **kw) * on[:, None, :] for m, _ in problem.shapes]
    A = [0.3 * torch.randn(C, r, n, generator=g, **kw) * on[:, :, None] for _, n in problem.shapes]
    s = [sc * r / k.to(problem.dtype) for sc in problem.scalings]
    return B, A, s, k


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10)])  # float32: the rounds below
@pytest.mark.parametrize("cohort_rows", [64, 3])  # one pass; passes that split clients
@pytest.mark.parametrize("minibatch", [False, True])
def test_cohort_gradients_equal_each_client_alone(gpt2, passes, dtype, tol, cohort_rows, minibatch):
    """∇_B f_c, ∇_A f_c of every client from the cohort pass equal peft's own gradients of each
    client alone at its k_c active components (the sliced rank-k_c adapter). In float32 a single
    gradient of this model is only good to ~3e-5 of its largest entry either way (measured against
    float64), so the float32 check is on whole rounds, where the adapters are compared."""
    problem = _problem(gpt2, dtype, cohort_rows=cohort_rows)
    B, A, s, k = _stack(problem)
    W0 = problem.start()
    clients = torch.arange(problem.M)
    g = torch.Generator().manual_seed(1)
    idx = (
        [torch.randperm(problem.client_size(c), generator=g)[:2] for c in range(problem.M)]
        if minibatch
        else None
    )
    gB, gA = problem.factor_grads(W0, B, A, s, client=clients, idx=idx)
    assert passes
    for c in range(problem.M):
        kc = int(k[c])
        one = problem.factor_grads(
            W0, [b[c][:, :kc] for b in B], [a[c][:kc] for a in A], [x[c].item() for x in s],
            client=c, idx=None if idx is None else idx[c],
        )  # fmt: skip
        for got, want, part in ((gB, one[0], "B"), (gA, one[1], "A")):
            for l, (x, y) in enumerate(zip(got, want, strict=True)):
                mine = x[c][:, :kc] if part == "B" else x[c][:kc]
                scale = float(y.abs().max())
                assert scale > 0
                assert float((mine - y).abs().max()) <= tol * scale, (c, part, l)
                rest = x[c][:, kc:] if part == "B" else x[c][kc:]
                assert rest.numel() == 0 or float(rest.abs().max()) == 0.0  # padding: no gradient


@pytest.mark.parametrize(
    "method,kw",
    [
        ("fslora", dict(budgets=budgets.mix())),  # random I_i, k_i from the paper's ratio mix
        ("hetero_lora", dict(budgets=[1, 2, 3, 4], aggregation="count")),  # leading k_i
        ("fedit", dict()),
    ],
)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-6)])
def test_cohort_round_equals_client_by_client(gpt2, passes, method, kw, dtype, tol):
    """Two rounds trained as a cohort (``impl="mask"``) and client after client on the k_i slices
    (``impl="slice"``, what a device computes): the same adapters and losses."""
    problem = _problem(gpt2, dtype)
    out = {}
    for impl in ("mask", "slice"):
        cfg = make_federated(method, 4, 0.05, local_steps=2, impl=impl, **kw)
        frame = cfg.run(problem, 2)
        out[impl] = frame.loss.to_numpy(), [(s.B.detach(), s.A.detach()) for s in problem.sites]
        if impl == "mask":
            assert passes, "the cohort pass was not taken"
            passes.clear()
    assert not passes  # the slice path trains client by client
    (la, fa), (lb, fb) = out["mask"], out["slice"]
    assert abs(la - lb).max() <= tol * abs(lb).max()
    scale = max(float(x.abs().max()) for pair in fb for x in pair)
    diff = max(
        float((x - y).abs().max())
        for p, q in zip(fa, fb, strict=True)
        for x, y in zip(p, q, strict=True)
    )
    assert diff <= tol * scale
    assert la[-1] < la[0]


def test_stacked_minibatch_steps_equal_the_stack_client_by_client(gpt2, passes):
    """The shared local trainer on a stack with ``sgd(batch_size=b)``: one pass per step equals
    the stack's clients evaluated one by one (``cohort_rows=None``), the same rows drawn (1e-10).
    Like a matrix problem's stack, the stack draws each step's minibatches client after client,
    step after step; the clients trained one after another (``impl="slice"``) draw all of a
    client's steps first, so they see other rows (FSLoRA's module docstring)."""
    local = Local(steps=3, gamma=0.05, estimator=lk.sgd(batch_size=1))
    out = []
    for rows in (64, None):
        problem = _problem(gpt2, torch.float64, cohort_rows=rows)
        B, A, _, _ = _stack(problem)
        new = train(problem, problem.start(), PerSite(B), PerSite(A), problem.scalings,
                    torch.arange(problem.M), local, Streams(0))  # fmt: skip
        out.append([*new[0], *new[1]])
    assert len(passes) == 3  # one pass per local step
    for x, y in zip(*out, strict=True):
        assert float((x - y).abs().max()) <= 1e-10 * float(y.abs().max())


def test_gossip_node_updates_take_one_pass(gpt2, passes):
    """Gossip's node updates go through the same trainer: every node in one pass per local step,
    with the numbers of the nodes one by one (float64, 1e-10), minibatches included."""
    cfg = GossipLoRA(rank=4, gamma=0.05, local_steps=2, estimator=lk.sgd(batch_size=2))
    frames = []
    for rows in (64, None):
        problem = _problem(gpt2, torch.float64, cohort_rows=rows)
        frames.append(cfg.run(problem, 2, graph=nx.cycle_graph(problem.M)))
    assert len(passes) == 2 * 2
    a, b = (f.loss.to_numpy() for f in frames)
    assert abs(a - b).max() <= 1e-10 * abs(b).max() and a[-1] < a[0]


# -- fallbacks ---------------------------------------------------------------------------------------
def _fslora_twice(problem):
    """The final adapter of FSLoRA trained as a cohort and on the k_i slices."""
    out = []
    for impl in ("mask", "slice"):
        cfg = make_federated("fslora", 2, 0.3, budgets=[1, 2, 1, 2], local_steps=2, impl=impl)
        frame = cfg.run(problem, 2)
        out.append((frame.loss.to_numpy(), [s.A.detach().clone() for s in problem.sites]))
    return out


def test_lora_dropout_trains_client_by_client(passes):
    """Active LoRA dropout: one pass would draw one mask for the whole batch where the clients
    draw theirs one after another from the ``model`` stream, so the cohort trains client by
    client and gives exactly the numbers of the slice path."""
    problem = toy_problem(rank=2, clients=4, lora_dropout=0.3)
    problem.model.train()
    assert not problem.batched_factors
    assert "dropout" in problem.cohort_fallback
    (la, fa), (lb, fb) = _fslora_twice(problem)
    assert not passes
    assert (la == lb).all() and all(torch.equal(x, y) for x, y in zip(fa, fb, strict=True))


class _Dropped(nn.Module):
    """The toy MLP with the model's own ``nn.Dropout`` between its LoRA layers."""

    def __init__(self):
        super().__init__()
        self.fc1, self.drop, self.fc2 = nn.Linear(6, 8), nn.Dropout(0.2), nn.Linear(8, 3)

    def forward(self, x, labels=None):
        logits = self.fc2(self.drop(torch.tanh(self.fc1(x))))
        return SimpleNamespace(loss=nn.functional.cross_entropy(logits, labels), logits=logits)


def _peft_problem(net, cohort_rows=64):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(net().double(), LoraConfig(r=2, lora_alpha=2, target_modules=["fc1", "fc2"]))  # fmt: skip
    g = torch.Generator().manual_seed(1)
    data = {"x": torch.randn(32, 6, generator=g, dtype=torch.float64),
            "labels": torch.randint(0, 3, (32,), generator=g)}  # fmt: skip
    return ModelProblem(model, data, cohort_rows=cohort_rows).split(4)


def test_the_models_own_dropout_trains_client_by_client(passes):
    problem = _peft_problem(_Dropped)
    problem.model.train()
    assert "dropout" in problem.cohort_fallback and not problem.batched_factors
    (la, fa), (lb, fb) = _fslora_twice(problem)
    assert not passes
    assert (la == lb).all() and all(torch.equal(x, y) for x, y in zip(fa, fb, strict=True))
    problem.model.eval()  # no dropout drawn: one pass again
    assert problem.batched_factors


def test_embedding_and_conv_sites_train_client_by_client(passes):
    for kind in ("embedding", "conv"):
        problem = kind_problem(kind, clients=4)
        assert f"a {kind}" in problem.cohort_fallback and "only linear" in problem.cohort_fallback
        (la, fa), (lb, fb) = _fslora_twice(problem)
        assert (la == lb).all() and all(torch.equal(x, y) for x, y in zip(fa, fb, strict=True))
    assert not passes


class _Noisy(nn.Module):
    """The toy MLP with a functional dropout (no module to see): it draws in the forward."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x, labels=None):
        h = nn.functional.dropout(torch.tanh(self.fc1(x)), 0.2, training=True)
        logits = self.fc2(h)
        return SimpleNamespace(loss=nn.functional.cross_entropy(logits, labels), logits=logits)


class _Pooled(nn.Module):
    """A LoRA site after a sum over the rows: its input's first dimension is not the rows."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x, labels=None):
        pooled = torch.tanh(self.fc1(x)).mean(0, keepdim=True)  # (1, 8)
        logits = self.fc2(pooled).expand(len(x), -1)
        return SimpleNamespace(loss=nn.functional.cross_entropy(logits, labels), logits=logits)


@pytest.mark.parametrize(
    "net,why", [(_Noisy, "drew from the random generator"), (_Pooled, "not the batch's rows")]
)
def test_a_model_that_refuses_a_pass_is_found_before_training(net, why):
    """A forward that draws randomness (a functional dropout no module shows), or a site that is
    not row-wise, is found by one probe pass before any training: a warning, and the run trains
    client by client throughout, with the numbers of a problem that never tried
    (``cohort_rows=None``), bit for bit."""
    frames = []
    for rows in (64, None):
        problem = _peft_problem(net, rows)
        cfg = make_federated("fslora", 2, 0.3, budgets=[1, 2, 1, 2], local_steps=2)
        if rows is None:
            frames.append(cfg.run(problem, 2).loss.to_numpy())
            continue
        with pytest.warns(RuntimeWarning, match=why):
            frames.append(cfg.run(problem, 2).loss.to_numpy())
        assert why in problem.cohort_fallback and not problem.batched_factors
    assert (frames[0] == frames[1]).all()


class _LateNoise(_Noisy):
    """Draws only on batches of more than two rows: the probe (two rows) misses it."""

    def forward(self, x, labels=None):
        h = torch.tanh(self.fc1(x))
        h = nn.functional.dropout(h, 0.2, training=True) if len(x) > 2 else h
        logits = self.fc2(h)
        return SimpleNamespace(loss=nn.functional.cross_entropy(logits, labels), logits=logits)


def test_a_refusal_found_in_a_pass_puts_the_generator_back_and_falls_back():
    """The safety net behind the probe: a pass that draws gives up with a warning, the generator
    as it was, and the stack evaluated client by client (the numbers of ``cohort_rows=None``)."""
    grads = []
    for rows in (64, None):
        problem = _peft_problem(_LateNoise, rows)
        B, A, s, _ = _stack(problem)
        torch.manual_seed(5)
        if rows is None:
            grads.append(problem.factor_grads(problem.start(), B, A, s, client=torch.arange(4)))
            continue
        assert problem.batched_factors  # the probe passed
        with pytest.warns(RuntimeWarning, match="drew from the random generator"):
            grads.append(problem.factor_grads(problem.start(), B, A, s, client=torch.arange(4)))
        assert not problem.batched_factors
    for x, y in zip([*grads[0][0], *grads[0][1]], [*grads[1][0], *grads[1][1]], strict=True):
        assert torch.equal(x, y)


def test_cohort_rows_is_checked():
    problem = toy_problem(rank=2)
    with pytest.raises(ValueError, match="cohort_rows"):
        ModelProblem(problem.model, problem.data, cohort_rows=0)
    assert ModelProblem(problem.model, problem.data, cohort_rows=None).cohort_fallback == (
        "cohort_rows is None"
    )
