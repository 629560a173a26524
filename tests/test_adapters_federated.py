"""The FSLoRA family (lorakit.federated.lora) and Fed-RAC-LoRA (lorakit.federated.fed_rac) on a peft
model: one engine each, the same as at matrix scale."""

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from bars import StopAfter
from peft_toys import toy_problem
from torch import nn

import lorakit as lk
from lorakit.adapters import ModelProblem, sites
from lorakit.adapters.grads import site_gradients
from lorakit.federated import make_federated
from lorakit.federated.lora import FederatedRun, Upload
from lorakit.problems.base import MatrixProblem
from lorakit.problems.federated import FederatedProblem
from lorakit.problems.regression import LinearRegression
from lorakit.progress import report_progress
from lorakit.rng import Streams
from lorakit.sketches import kaiming_uniform, projector


@pytest.fixture(scope="module")
def toy():
    return toy_problem(rank=2, clients=4)


@pytest.fixture(scope="module")
def random_toy():
    """Rank 3 with a random peft adapter (init_lora_weights=False), merged into the run's W^0."""
    return toy_problem(rank=3, clients=4, init_lora_weights=False)


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _factors(problem) -> list:
    return [(s.B.detach().clone(), s.A.detach().clone()) for s in problem.sites]


def _initial_factors(problem, cfg, seed) -> list:
    """The factors every run of ``cfg`` with ``seed`` starts from (peft's init from the seed's
    ``init`` stream: B = 0, A Kaiming-uniform)."""
    _, B, A = FederatedRun(cfg, problem, seed).state()
    return list(zip(B, A, strict=True))


# -- FSLoRA with k_i = r is FedIT ------------------------------------------------------------------
def test_fslora_with_full_budgets_is_fedit(toy):
    kw = dict(local_steps=3, estimator=lk.sgd(batch_size=8), cohort=3, dropout=0.2)
    a = make_federated("fslora", 2, 0.3, budgets=2, **kw).run(toy, 6, seeds=1)
    fa = _factors(toy)
    b = make_federated("fedit", 2, 0.3, **kw).run(toy, 6, seeds=1)
    fb = _factors(toy)
    np.testing.assert_array_equal(a.loss.to_numpy(), b.loss.to_numpy())
    np.testing.assert_array_equal(a.grad_norm_sq.to_numpy(), b.grad_norm_sq.to_numpy())
    for (Ba, Aa), (Bb, Ab) in zip(fa, fb, strict=True):
        assert torch.allclose(Ba, Bb, rtol=0, atol=1e-12) and torch.allclose(
            Aa, Ab, rtol=0, atol=1e-12
        )
    assert a.loss.iloc[-1] < a.loss.iloc[0] - 0.02


def test_same_seed_same_numbers_and_seeds_differ(toy):
    cfg = make_federated(
        "fslora", 2, 0.3, budgets=[1, 2, 1, 2], estimator=lk.sgd(batch_size=4), local_steps=2
    )
    a, b = cfg.run(toy, 3, seeds=[0, 1]), cfg.run(toy, 3, seeds=[0, 1], progress=True)
    np.testing.assert_array_equal(a.loss.to_numpy(), b.loss.to_numpy())
    assert a.loss[a.seed == 0].iloc[-1] != a.loss[a.seed == 1].iloc[-1]


def test_loss_column_is_the_problem_loss(toy):
    frame = make_federated("fslora", 2, 0.3, budgets=1).run(toy, 2)
    assert frame.loss.iloc[-1] == toy.loss()  # the model holds the last round
    assert frame.gap.isna().all()


# -- the sketch touches exactly the chosen slice --------------------------------------------------
def test_sketch_touches_exactly_the_k_chosen_columns_and_rows(random_toy):
    """Every upload: per module |I| = k_i, one I for B and A, every column of ΔB[:, I] and row of
    ΔA[I, :] moved (FSLoRA Lemma 3.2); the aggregate is the mean of the padded uploads."""
    p, uploads = random_toy, []
    cfg = make_federated("fslora", 3, 0.2, budgets=[1, 2, 3, 2], local_steps=2)
    before = _initial_factors(p, cfg, 4)
    cfg.run(p, 1, seeds=4, trace=uploads.append)
    assert [u.client for u in uploads] == [0, 1, 2, 3] and all(
        isinstance(u, Upload) for u in uploads
    )
    for u in uploads:
        for j, site in enumerate(p.sites):  # per site: I and the slice deltas ΔB[:, I], ΔA[I, :]
            I, dB, dA = u.index[j], u.dB[j], u.dA[j]
            assert I.numel() == u.k and bool((I.diff() > 0).all())
            assert dB.shape == (site.shape[0], u.k) and dA.shape == (u.k, site.shape[1])
            assert bool((dB.abs().sum(0) > 0).all()) and bool((dA.abs().sum(1) > 0).all())
        for dB, dA, I in zip(*u.padded(3), u.index, strict=True):
            assert torch.equal(dB.abs().sum(0).nonzero().flatten(), I)
            assert torch.equal(dA.abs().sum(1).nonzero().flatten(), I)
    for j, (site, (B0, A0)) in enumerate(zip(p.sites, before, strict=True)):
        mean_B = sum(u.padded(3)[0][j] for u in uploads) / 4
        mean_A = sum(u.padded(3)[1][j] for u in uploads) / 4
        assert torch.allclose(site.B.detach() - B0, mean_B, atol=1e-15)
        assert torch.allclose(site.A.detach() - A0, mean_A, atol=1e-15)
    # a fresh I per module: over the 4 clients with k < r, the two modules do not always agree
    sets = [[tuple(I.tolist()) for I in u.index] for u in uploads if u.k < 3]
    assert any(a != b for a, b in sets)


@pytest.mark.parametrize("shared", [False, True])
def test_one_client_round_leaves_every_other_entry_bit_identical(random_toy, shared):
    p, uploads = random_toy, []
    cfg = make_federated("fslora", 3, 0.2, budgets=2, cohort=1, local_steps=3)
    before = _initial_factors(p, cfg, 2)
    cfg.run(p, 1, seeds=2, trace=uploads.append, shared_index=shared)
    (u,) = uploads
    changed = []
    for site, (B0, A0), I in zip(p.sites, before, u.index, strict=True):
        out = torch.ones(3, dtype=torch.bool)
        out[I] = False
        cols = (site.B.detach() != B0).any(0).nonzero().flatten()
        rows = (site.A.detach() != A0).any(1).nonzero().flatten()
        assert torch.equal(cols, I) and torch.equal(rows, I)  # the same I for B and A
        assert torch.equal(site.B.detach()[:, out], B0[:, out])
        assert torch.equal(site.A.detach()[out, :], A0[out, :])
        changed.append(tuple(I.tolist()))
    if shared:
        assert len(set(changed)) == 1


def test_index_draws_match_the_matrix_engine_per_module(random_toy):
    """Per module, in site order, the k_i-subsets are the matrix engine's ``sketch`` draws."""
    uploads = []
    cfg = make_federated("fslora", 3, 0.1, budgets=[1, 2, 1, 2])
    cfg.run(random_toy, 2, seeds=5, trace=uploads.append)
    ref = FederatedRun(cfg, random_toy, 5)
    k = torch.tensor([1, 2, 1, 2])
    for t in (1, 2):
        for j in range(len(random_toy.sites)):
            chosen = ref.sketch(k) != 0
            for c, u in enumerate(x for x in uploads if x.round == t):
                assert torch.equal(u.index[j], chosen[c].nonzero().flatten())


# -- the model-scale round is the matrix-scale round ------------------------------------------------
class _Linear(nn.Module):
    def __init__(self, n, m):
        super().__init__()
        self.fc = nn.Linear(n, m, bias=False)

    def forward(self, x):
        return self.fc(x)


def _matched_problems(m=5, n=4, r=3, per=6, M=2, seed=0):
    """One LoRA site with f(W) = ½·mean_{i,j} ((W x_i)_j − y_ij)², as a peft model and as a
    FederatedProblem of LinearRegression clients (rows kron(e_j, x_i), targets y_ij)."""
    from peft import LoraConfig, get_peft_model

    g = torch.Generator().manual_seed(7)
    W0 = torch.randn(m, n, generator=g, dtype=torch.float64)
    X = torch.randn(M * per, n, generator=g, dtype=torch.float64)
    Y = torch.randn(M * per, m, generator=g, dtype=torch.float64)
    base = _Linear(n, m).double()
    with torch.no_grad():
        base.fc.weight.copy_(W0)
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=r, target_modules=["fc"]))
    A0 = kaiming_uniform().sample((r, n), Streams(seed)["init"], side="right")
    (site,) = sites(model)
    site.set_factors(torch.zeros(m, r, dtype=torch.float64), A0)  # the matrix engine's start

    def loss_fn(model, batch):
        return 0.5 * (model(batch["x"]) - batch["y"]).square().mean()

    clients = [torch.arange(c * per, (c + 1) * per) for c in range(M)]
    model_problem = ModelProblem(model, {"x": X, "y": Y}, loss_fn=loss_fn, clients=clients)
    matrix_clients = []
    for rows in clients:
        D = torch.zeros(per * m, m * n, dtype=torch.float64)
        for a, i in enumerate(rows.tolist()):
            for j in range(m):
                D[a * m + j, j * n : (j + 1) * n] = X[i]
        b = Y[rows].reshape(-1)
        matrix_clients.append(LinearRegression(m=m, n=n, W0=W0.clone(), D=D, b=b, reg=0.0))
    return model_problem, FederatedProblem.from_clients(matrix_clients)


@pytest.mark.parametrize(
    "method,kw",
    [
        ("fslora", dict(budgets=[1, 2])),
        ("fedit", dict()),
        ("hetero_lora", dict(budgets=[1, 2], aggregation="count")),
        ("fslora_topk", dict(budgets=[2, 1])),
        ("fslora", dict(budgets=[1, 2], server_optimizer="adam", server_lr=0.05)),
        ("fslora", dict(budgets=1, download="slice", dropout=0.4)),
        ("flex_lora", dict(budgets=[1, 2])),
    ],
)
def test_model_round_equals_matrix_round(method, kw):
    """A peft model with one Linear site and a quadratic loss against the same problem as a
    FederatedProblem: same seeds → the same losses, gradients, bytes and factors (1e-10)."""
    model_problem, matrix_problem = _matched_problems()
    cfg = make_federated(method, 3, 0.15, local_steps=3, **kw)
    a, ma = cfg.run(model_problem, 4, seeds=0, messages=True)
    ref = FederatedRun(cfg, matrix_problem, 0)
    rows, mb = ref.run(4, 1)
    b = [r["loss"] for r in rows]
    np.testing.assert_allclose(a.loss.to_numpy(), b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        a.grad_norm_sq, [r["grad_norm_sq"] for r in rows], rtol=1e-8, atol=1e-12
    )
    assert ma.to_dict("records") == mb
    (site,) = model_problem.sites
    assert torch.allclose(site.B.detach(), ref.B.detach(), rtol=0, atol=1e-10)
    assert torch.allclose(site.A.detach(), ref.A.detach(), rtol=0, atol=1e-10)
    assert a.loss.iloc[-1] < a.loss.iloc[0]


# -- the baselines learn ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,kw,margin",
    [
        ("hetero_lora", dict(budgets=[1, 2, 1, 2]), 0.1),
        ("flex_lora", dict(budgets=[1, 2, 1, 2]), 0.1),
        ("fedstack_lora", dict(budgets=[1, 2, 1, 2]), 0.04),
        ("fslora_topk", dict(budgets=1), 0.1),
        (
            "fslora",
            dict(
                budgets=1, estimator=lk.sgd(batch_size=4), server_optimizer="adam", server_lr=0.02
            ),
            0.04,
        ),
    ],
)
def test_methods_lower_the_loss(toy, method, kw, margin):
    frame = make_federated(method, 2, 0.5, local_steps=3, **kw).run(toy, 10)
    assert frame.loss.iloc[-1] < frame.loss.iloc[0] - margin, frame.loss.tolist()


def test_fedstack_merges_the_mean_product_and_preserves_outputs(toy):
    """FedStackLoRA: W0 ← W0 + s·mean B_iA_i, then a fresh adapter with B = 0 (function unchanged)."""
    uploads = []
    cfg = make_federated("fedstack_lora", 2, 0.5, budgets=[1, 2, 1, 2], local_steps=2)
    before = list(zip(*FederatedRun(cfg, toy, 0).state(), strict=True))  # per site (W0, B, A)
    frame = cfg.run(toy, 1, trace=uploads.append)
    for j, (site, (W0, B0, A0)) in enumerate(zip(toy.sites, before, strict=True)):
        P = 0
        for u in uploads:
            P = P + (B0[:, : u.k] + u.dB[j]) @ (A0[: u.k, :] + u.dA[j])
        assert torch.allclose(site.W0, W0 + site.scaling * P / 4, rtol=0, atol=1e-13)
        assert bool((site.B == 0).all()) and not torch.equal(site.A.detach(), A0)
        assert float(site.A.detach().abs().max()) <= 1 / math.sqrt(
            site.shape[1]
        )  # peft's Kaiming bound
    x = toy.data["x"]
    with torch.no_grad():
        merged = toy.model(x).logits
        with toy.model.disable_adapter():
            base = toy.model(x).logits
    assert torch.equal(merged, base)
    assert frame.loss.iloc[-1] == toy.loss()


# -- dropout, divergence, bytes --------------------------------------------------------------------
def test_everyone_dropping_out_leaves_the_model_unchanged(toy):
    toy.reset()
    start = _state(toy.model)
    # dropout = 1 is refused (nothing would ever train); just below it, seed 0 drops everyone
    # in all 3 rounds (the assertion on `reported` below checks that it did).
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        make_federated("fslora", 2, 0.5, budgets=1, dropout=1.0)
    frame, msgs = make_federated("fslora", 2, 0.5, budgets=1, dropout=1 - 1e-9).run(
        toy, 3, messages=True
    )
    after = _state(toy.model)
    assert all(torch.equal(start[k], after[k]) for k in start)
    assert frame.loss.nunique() == 1 and (frame.reported == 0).all() and (msgs.bytes_up == 0).all()


@pytest.mark.parametrize("method", ["fslora", "fed_rac_lora"])
def test_divergence_is_refused_before_the_model_is_touched(toy, method):
    toy.reset()
    start = _state(toy.model)
    with pytest.raises(lk.DivergenceError, match=f"{method} diverged in round 1") as err:
        make_federated(method, 2, 1e8).run(toy, 3)
    assert err.value.frame["round"].tolist() == [0]
    after = _state(toy.model)
    assert all(torch.equal(start[k], after[k]) for k in start)


def test_a_later_divergent_round_keeps_the_previous_round(toy):
    """Round 2's aggregate explodes: the model stays bit-identical to round 1's result (the state
    the first upload of round 2 sees)."""
    seen = {}

    def snapshot(upload):
        seen.setdefault(upload.round, _state(toy.model))

    cfg = make_federated("fslora", 2, 100.0, budgets=1, local_steps=3)
    # round 1's loss (1.7e8) is above the default threshold: blowup=1e12 lets round 2 happen
    with pytest.raises(lk.DivergenceError, match=r"round 2 .*updates are of size") as err:
        cfg.run(toy, 5, trace=snapshot, blowup=1e12)
    assert err.value.frame["round"].tolist() == [0, 1]
    after = _state(toy.model)
    assert all(torch.equal(seen[2][k], after[k]) for k in after)
    assert not all(torch.equal(seen[1][k], after[k]) for k in after)


def test_bytes_are_the_formula(toy):
    """Σ_modules k_i(m + n) floats up; r(m + n) down plus the k_i indices of each module's I."""
    width = (8 + 6) + (3 + 8)  # fc1 (8×6), fc2 (3×8)
    k = [1, 2, 1, 2]
    _, msgs = make_federated("fslora", 2, 0.1, budgets=k).run(toy, 2, messages=True)
    assert msgs.bytes_up.tolist() == [4 * ki * width for ki in k] * 2
    assert msgs.bytes_down.tolist() == [4 * 2 * width + 4 * 2 * ki * (ki < 2) for ki in k] * 2
    _, msgs = make_federated("fslora", 2, 0.1, budgets=k, download="slice").run(
        toy, 1, messages=True, shared_index=True
    )
    assert msgs.bytes_down.tolist() == [4 * ki * width + 4 * ki * (ki < 2) for ki in k]
    _, msgs = make_federated("fslora_topk", 2, 0.1, budgets=k).run(toy, 1, messages=True)
    keep = [math.ceil(0.5 * ki * 14) + math.ceil(0.5 * ki * 11) for ki in k]
    assert msgs.bytes_up.tolist() == [8 * x for x in keep]
    _, msgs = make_federated("fed_rac_lora", 2, 0.1).run(toy, 2, messages=True)
    up, sketch = 4 * 2 * (6 + 8), 4 * 2 * (8 + 3)  # trained A (r×n), sketch B_S (m×r)
    assert msgs.bytes_up.tolist() == [up] * 8
    assert msgs.bytes_down.tolist() == [sketch] * 4 + [2 * sketch + up] * 4


# -- Fed-RAC-LoRA ----------------------------------------------------------------------------------
def test_fed_rac_lowers_the_loss(toy):
    frame = make_federated("fed_rac_lora", 2, 0.5, cohort=3).run(toy, 8)
    assert frame.loss.iloc[-1] < frame.loss.iloc[0] - 0.1
    assert (frame.local_steps.iloc[1:] == 16).all()  # one reshuffled epoch over 16 rows


@pytest.mark.parametrize("side", ["left", "right"])
def test_fed_rac_round_is_the_projected_step(toy, side):
    """One full-batch step per client, full participation, β = 1: every module moves by
    W ← W − γ·H_B ∇f(W) (right: − γ·∇f(W)·H_A), RAC-LoRA eqs. (3)–(4)."""
    toy.reset()
    W0 = [s.W0.clone() for s in toy.sites]
    G = [site_gradients(toy, toy.batch(toy.indices(c)))[1] for c in range(toy.M)]
    mean_G = [sum(g[j] for g in G) / toy.M for j in range(len(toy.sites))]
    cfg = make_federated("fed_rac_lora", 2, 0.3, side=side, batch_size=None)
    cfg.run(toy, 1)
    gen = Streams(0).substream("sketch", 0)  # round 1's own sketch stream
    for site, W, g in zip(toy.sites, W0, mean_G, strict=True):
        (m, n), kw = site.shape, {"dtype": torch.float64}
        X = cfg.sketch.sample((m, 2) if side == "left" else (2, n), gen, side=side, **kw)
        H = projector(X, side)
        step = H @ g if side == "left" else g @ H
        assert torch.allclose(site.W0, W - 0.3 * step, rtol=0, atol=1e-12)
        assert bool((site.B == 0).all())


def test_fed_rac_is_untouched_by_lora_dropout():
    """The local steps and the logs use ∇_W f at W (``problem.local_grads``, no adapter path), so
    LoRA dropout, which acts on the adapter path only, changes nothing (it was refused while the
    model-scale twin stepped the factors by autograd through peft)."""
    cfg = make_federated("fed_rac_lora", 2, 0.3, cohort=1)
    plain = cfg.run(toy_problem(clients=2), 3, seeds=[0, 1])
    dropped = cfg.run(toy_problem(clients=2, lora_dropout=0.5), 3, seeds=[0, 1])
    pd.testing.assert_frame_equal(plain, dropped)


def test_a_stopped_fed_rac_run_logs_and_commits_the_round_it_reached(toy):
    with report_progress(StopAfter):
        frame = make_federated("fed_rac_lora", 2, 0.3).run(toy, 8, log_every=2)
    assert frame["round"].tolist() == [0, 2, 3]
    assert toy.loss() == pytest.approx(float(frame.loss.iloc[-1]), rel=1e-12)


@dataclass(eq=False)
class _Rows(MatrixProblem):
    """f(W) = (1/N) Σ_i (1/(2m))·‖W x_i − y_i‖²: the loss of :func:`_matched_problems`' model, one
    component per data row (as the model's rows), so random reshuffling sees the same components."""

    X: torch.Tensor = None
    Y: torch.Tensor = None

    def loss(self, W):
        return 0.5 * (W @ self.X.T - self.Y.T).square().mean((-2, -1))

    def grad(self, W, idx=None):
        X, Y = (self.X, self.Y) if idx is None else (self.X[idx], self.Y[idx])
        return (W @ X.T - Y.T) @ X / (self.m * len(X))


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(side="right", cohort=1),
        dict(batch_size=4, server_lr=1.5),
        dict(batch_size=None, side="right", sketch="haar"),
    ],
)
def test_fed_rac_on_a_one_site_model_is_the_matrix_run(kw):
    """One engine at both scales: a one-site peft model and the same f as a FederatedProblem of
    row-wise finite sums, from the same W0, give the same frames and messages (1e-10), and the
    model holds the last round's W."""
    model_problem, _ = _matched_problems()
    data, (site,) = model_problem.data, model_problem.sites
    W0 = site.W().detach().clone()
    matrix_problem = FederatedProblem.from_clients(
        [_Rows(m=5, n=4, W0=W0.clone(), n_samples=len(rows), X=data["x"][rows], Y=data["y"][rows])
         for rows in model_problem.clients]
    )  # fmt: skip
    cfg = make_federated("fed_rac_lora", 3, 0.2, **kw)
    a, ma = cfg.run(model_problem, 4, seeds=[0, 1], messages=True)
    b, mb = cfg.run(matrix_problem, 4, seeds=[0, 1], messages=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-10, atol=1e-12)
    pd.testing.assert_frame_equal(ma, mb)
    assert model_problem.loss() == pytest.approx(float(b.loss.iloc[-1]), rel=1e-10)
    assert a.loss.iloc[-1] < a.loss.iloc[0]


# -- options that do not map -----------------------------------------------------------------------
def test_options_that_do_not_map_are_named(toy):
    with pytest.raises(ValueError, match="peft adapter rank r = 2"):
        make_federated("fslora", 3, 0.1).run(toy, 1)
    with pytest.raises(ValueError, match="alpha = 4"):
        make_federated("fslora", 2, 0.1, alpha=4.0).run(toy, 1)
    with pytest.raises(ValueError, match="needs clients"):
        make_federated("fslora", 2, 0.1).run(toy_problem(), 1)
    with pytest.raises(ValueError, match="cohort must be in"):
        make_federated("fed_rac_lora", 2, 0.1, cohort=5).run(toy, 1)
    with pytest.raises(ValueError, match="shared_index"):
        make_federated("fslora", 2, 0.1).run(toy, 1, shared_index=1)


def test_matrix_progress_bar_runs():
    problem = lk.problems.heterogeneous_quadratics(3, 4, 4, L=1.0, spread=1.0, seed=0)
    frame = make_federated("fslora", 2, 0.1, budgets=1).run(problem, 2, seeds=[0, 1], progress=True)
    assert len(frame) == 6


def test_gradient_noise_runs_at_model_scale(toy):
    """sigma: N(0, σ²/D) noise on ∇_W f carried to the slices (lorakit.local), as at matrix scale."""
    cfg = make_federated("fslora", 2, 0.3, budgets=1, local_steps=2)
    plain = cfg.run(toy, 3)
    noisy = cfg.with_params(estimator=lk.sgd(sigma=0.5)).run(toy, 3)
    assert np.isfinite(noisy.loss).all() and noisy.loss.iloc[-1] != plain.loss.iloc[-1]
    np.testing.assert_array_equal(
        noisy.loss, cfg.with_params(estimator=lk.sgd(sigma=0.5)).run(toy, 3).loss
    )
