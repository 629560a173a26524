"""Local training: what a client, a node or the token's holder does between two messages, in every
pattern (FSLoRA, Fed-RAC-LoRA, RW-LoRA, gossip, the asynchronous clients), written once against
:mod:`lorakit.problems.protocol`:

* the oracle (:func:`factor_grads`): client c's factor gradients at W = W0 + s·B·A (RW-LoRA eqs.
  (7)–(8) and (12); FSLoRA Lemma 3.2) from an estimator: ``gd`` (every row), ``sgd(batch_size=b)``
  (b rows drawn without replacement, ``data`` stream; ``sgd()``: b = 1) or ``sgd(sigma=σ)`` (noise
  ξ with i.i.d. N(0, σ²/D) entries on ∇_W f, ``noise`` stream, D = Σ_l m_l n_l so E‖ξ‖²_F = σ²,
  RW-LoRA Assumption 4). One oracle call per step: the estimators with a state across steps
  (``page``, ``mvr``, ``rr``) and the federated ones stay the chain's;
* the step (:func:`train`): ``torch.optim.SGD`` or ``AdamW`` on the trained factors, whose state
  can travel (an RW-LoRA token) as a ``state_dict()``; :func:`train_weights`: plain SGD on W itself
  (the asynchronous clients' full deltas);
* the adapter's start (:func:`init_adapter`).

A stack of clients (a 1-D tensor ``clients``, factors with a leading client axis) takes the
problem's fastest route (``batched``, ``batched_factors``: :mod:`lorakit.problems.protocol`); each
step draws its clients' minibatches and noise in client order, so a one-site model gives its
matrix problem's numbers.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import torch

from ._validation import check_choice, check_int, check_real
from .estimators import GD, SGD, Estimator, make_estimator, sgd
from .sketches import gaussian, kaiming_uniform
from .tree import leaves, tree_like, tree_map

__all__ = [
    "INITS",
    "OPTIMIZERS",
    "Local",
    "factor_grads",
    "init_adapter",
    "local_estimator",
    "minibatch",
    "train",
    "train_weights",
]

OPTIMIZERS = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}
#: The AdamW settings ``optimizer_kwargs`` may change (torch's defaults otherwise).
ADAMW_KWARGS = ("betas", "eps", "weight_decay")
INITS = ("kaiming", "gaussian")


@dataclass(frozen=True)
class Local:
    """How a client trains between messages.

    Parameters
    ----------
    steps : local steps per visit (round, hop, job), ≥ 1.
    gamma : the step size (the optimizer's learning rate), > 0.
    optimizer : ``"sgd"`` or ``"adamw"`` (torch's), with ``optimizer_kwargs`` (AdamW's
        ``betas``, ``eps``, ``weight_decay``; torch's defaults otherwise).
    estimator : the oracle, ``"gd"`` or ``sgd(...)`` (module docstring).
    """

    steps: int = 1
    gamma: float = 0.1
    optimizer: str = "sgd"
    optimizer_kwargs: dict = field(default_factory=dict)
    estimator: Estimator | str = "gd"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "steps", check_int("local_steps", self.steps, low=1))
        set_(self, "gamma", check_real("gamma", self.gamma, low=0.0, low_open=True))
        check_choice("optimizer", self.optimizer, tuple(OPTIMIZERS))
        _check_optimizer_kwargs(self.optimizer, self.optimizer_kwargs)
        set_(self, "estimator", local_estimator(self.estimator))

    @property
    def batch_size(self) -> int | None:
        """Rows per step (None: every row): ``sgd(batch_size=b)``'s b, 1 for a bare ``sgd()``."""
        oracle = getattr(self.estimator, "oracle", None)
        if oracle is None or oracle.sigma is not None:
            return getattr(oracle, "batch_size", None)
        return oracle.batch_size or 1

    @property
    def sigma(self) -> float:
        """σ of the additive noise (0: none)."""
        return getattr(getattr(self.estimator, "oracle", None), "sigma", None) or 0.0


def _check_optimizer_kwargs(optimizer: str, kwargs: dict) -> None:
    if optimizer == "sgd" and kwargs:
        raise ValueError(f"optimizer_kwargs apply to optimizer='adamw' only, got {kwargs}")
    unknown = set(kwargs) - set(ADAMW_KWARGS)
    if unknown:
        raise ValueError(
            f"optimizer_kwargs may set {sorted(ADAMW_KWARGS)}, got unknown {sorted(unknown)}"
        )
    if "betas" in kwargs:
        b1, b2 = kwargs["betas"]
        check_real("betas[0]", b1, low=0.0, high=1.0, high_open=True)
        check_real("betas[1]", b2, low=0.0, high=1.0, high_open=True)
    if "eps" in kwargs:
        check_real("eps", kwargs["eps"], low=0.0, low_open=True)
    if "weight_decay" in kwargs:
        check_real("weight_decay", kwargs["weight_decay"], low=0.0)


def local_estimator(estimator, sigma=None, batch_size=None, *, owner: str = "") -> Estimator:
    """``estimator`` checked for local training (``gd`` or ``sgd``; module docstring), or the
    earlier shorthand ``sigma=``/``batch_size=`` of a pattern's configuration ``owner``, now
    ``estimator=sgd(sigma=σ)`` / ``sgd(batch_size=b)`` (a ``DeprecationWarning``)."""
    if sigma is not None or batch_size is not None:
        warnings.warn(
            f"{owner}(sigma=..., batch_size=...) is deprecated: pass estimator=lk.sgd(sigma=σ) "
            "or estimator=lk.sgd(batch_size=b)",
            DeprecationWarning,
            stacklevel=4,
        )
        if estimator not in (None, "gd"):
            raise ValueError("give estimator= or the deprecated sigma=/batch_size=, not both")
        estimator = sgd(sigma=sigma, batch_size=batch_size)
    if isinstance(estimator, Estimator) or estimator in ("gd", "sgd"):
        estimator = make_estimator(estimator)
    if not isinstance(estimator, (GD, SGD)):
        raise ValueError(
            f"estimator must be 'gd' or 'sgd' (a minibatch or additive noise) for local training, "
            f"got {estimator}: one oracle call per local step; the estimators with a state across "
            "steps (page, mvr, rr) and the federated ones (qgd, marina, ef21) are the chain's"
        )
    return estimator


def init_adapter(problem, rank: int, gen: torch.Generator, init: str = "kaiming", std=None):
    """(B, A) trees: B_l = 0 (m_l × r) and A_l (r × n_l) drawn per site in site order from ``gen``:
    peft's Kaiming-uniform (rescaled to standard deviation ``std`` when given) or N(0, std²)
    with std = 1/r by default (peft's ``"gaussian"``). So W = W0 at the start."""
    check_choice("init", init, INITS)
    kw = {"dtype": problem.dtype, "device": problem.device}
    gaussian_ = init == "gaussian"
    sketch = gaussian(std if std is not None else 1.0 / rank) if gaussian_ else kaiming_uniform()
    As = [sketch.sample((rank, n), gen, side="right", **kw) for _, n in problem.shapes]
    if not gaussian_ and std is not None:  # Kaiming-uniform rescaled to standard deviation std
        As = [A * (std / A.std()) if A.numel() > 1 else A for A in As]
    return problem.tree(torch.zeros(m, rank, **kw) for m, _ in problem.shapes), problem.tree(As)


def minibatch(problem, client: int, batch_size: int | None, gen: torch.Generator):
    """Positions of ``batch_size`` of client c's rows drawn without replacement (``gen``), or None
    (every row). One permutation of the client's rows is drawn per call whatever its size."""
    if batch_size is None:
        return None
    size = problem.n_samples if client is None else problem.client_size(client)
    if size is None:
        raise ValueError(f"client {client} is not a finite sum: batch_size needs data")
    return torch.randperm(size, generator=gen)[: min(batch_size, size)].to(problem.device)


def _noise(problem, like, sigma: float, gen: torch.Generator):
    """ξ shaped as the W-space tree ``like`` (stacks allowed): i.i.d. N(0, σ²/D) entries."""
    std = sigma / math.sqrt(sum(m * n for m, n in problem.shapes))  # σ/√D
    return tree_map(
        lambda w: std * torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device), like
    )


def factor_grads(problem, W0, B, A, scalings, clients, local: Local, streams):
    """(∇_B f̃_c, ∇_A f̃_c) at W = W0 + s·B·A for client ``clients`` (an int; None on a problem
    without clients), or for each client of a 1-D tensor ``clients`` with B and A stacked on a
    leading client axis (W0 shared or stacked). Inputs are left as they are."""
    single = not isinstance(clients, torch.Tensor)
    nodes = [clients] if single else clients.tolist()
    idx = [None] * len(nodes)  # every row of every client: nothing to draw
    if local.batch_size is not None:
        idx = [minibatch(problem, c, local.batch_size, streams["data"]) for c in nodes]
    s = problem.tree(scalings)
    if not single and problem.batched:  # many clients in one tensor operation (s may be (C, 1, 1))
        W = tree_map(_stacked_weights, W0, B, A, s)  # a fresh stack: the gradients may go in it
        rows = idx if local.batch_size else None
        G = problem.local_grads(W, clients.to(problem.device), rows, overwrite=True)
        if local.sigma:
            G = G + _noise(problem, G, local.sigma, streams["noise"])
        # s·G·Aᵀ as (A·Gᵀ)ᵀ: the batched product is 1.6–3× faster on CPU with the rank as its rows.
        return (
            tree_map(lambda g, a, s: _scaled(a @ g.mT, s).mT, G, A, s),
            tree_map(lambda b, g, s: _scaled(b.mT @ g, s), B, G, s),
        )
    if single:
        gB, gA = problem.factor_grads(W0, B, A, scalings, client=clients, idx=idx[0])
    elif problem.batched_factors and _shared(W0, B):  # a model's cohort: one pass of the model
        rows = idx if local.batch_size is not None else None
        gB, gA = problem.factor_grads(W0, B, A, scalings, client=clients, idx=rows)
    else:  # client by client
        shared = _shared(W0, B)
        out = [
            problem.factor_grads(
                W0 if shared else _pick(W0, k), _pick(B, k), _pick(A, k),
                _scalings_of(scalings, k), client=c, idx=idx[k],
            )
            for k, c in enumerate(nodes)
        ]  # fmt: skip
        gB, gA = (_stack(like, g) for like, g in zip((B, A), zip(*out, strict=True), strict=True))
    if local.sigma:  # ξ on ∇_W f, carried to the factors: s·ξ·Aᵀ and s·Bᵀ·ξ
        W = tree_map(lambda w, b, a, s: w + s * (b @ a), W0, B, A, s)
        xi = _noise(problem, W, local.sigma, streams["noise"])
        gB = tree_map(lambda g, x, a, s: g + s * (x @ a.mT), gB, xi, A, s)
        gA = tree_map(lambda g, b, x, s: g + s * (b.mT @ x), gA, B, xi, s)
    return gB, gA


def _scaled(t: torch.Tensor, s) -> torch.Tensor:
    """s·t for a fresh product t, in place where s (a float or (C, 1, 1)) keeps t's dtype."""
    return t.mul_(s) if torch.result_type(t, s) == t.dtype else s * t


def _scalings_of(scalings, k: int) -> list:
    """Client k's scaling per site from a stack's scalings (a float, or one per client)."""
    return [
        float(s.reshape(-1)[k]) if isinstance(s, torch.Tensor) and s.numel() > 1 else s
        for s in scalings
    ]


def _stacked_weights(W0, B, A, s):
    """W0 + s·B·A for a stack of clients, one fused batched product where the stack is 3-D."""
    return torch.baddbmm(W0, B * s, A) if B.dim() == 3 else W0 + s * (B @ A)


def _shared(W0, B) -> bool:
    """True when W0 is shared by every client of a stack (one dimension fewer than B)."""
    return leaves(W0)[0].dim() < leaves(B)[0].dim()


def _pick(tree, k: int):
    return tree_map(lambda x: x[k], tree)


def _stack(like, trees: list):
    return tree_like(like, [torch.stack(x) for x in zip(*map(leaves, trees), strict=True)])


def train(
    problem, W0, B, A, scalings, clients, local: Local, streams, *, trained="both", state=None
):
    """``local.steps`` optimizer steps on the trained factors (``"both"``, ``"B"`` or ``"A"``) of
    client(s) ``clients`` (:func:`factor_grads`); the new (B, A, optimizer state or None for plain
    SGD). The inputs and ``state`` (a ``state_dict()`` to start from: an RW-LoRA token's AdamW
    moments) are copied: a caller keeps its last good state until it accepts the new one."""
    check_choice("trained", trained, ("both", "B", "A"))
    B = tree_map(lambda x: x.detach().clone().requires_grad_(trained in ("both", "B")), B)
    A = tree_map(lambda x: x.detach().clone().requires_grad_(trained in ("both", "A")), A)
    factors = leaves(B) + leaves(A)
    params = [x for x in factors if x.requires_grad]
    # Plain SGD (no kwargs: Local refuses them) is torch.optim.SGD's step x ← x − γ·g, taken
    # without an optimizer object: setting one up costs more than a whole step of a small matrix
    # problem with many clients.
    plain, opt = local.optimizer == "sgd", None
    if not plain:
        opt = OPTIMIZERS[local.optimizer](params, lr=local.gamma, **local.optimizer_kwargs)
        if state is not None:  # a copy: torch loads by reference, steps in place
            opt.load_state_dict(copy.deepcopy(state))
    for _ in range(local.steps):
        with torch.no_grad():
            gB, gA = factor_grads(problem, W0, B, A, scalings, clients, local, streams)
            for x, g in zip(factors, leaves(gB) + leaves(gA), strict=True):
                if plain and x.requires_grad:
                    x.add_(g, alpha=-local.gamma)
                else:
                    x.grad = g if x.requires_grad else None
        if opt is not None:
            opt.step()
    detach = lambda t: tree_map(lambda x: x.detach(), t)  # noqa: E731
    return detach(B), detach(A), (opt.state_dict() if opt is not None and opt.state else None)


def train_weights(problem, W, client: int, local: Local, streams):
    """``local.steps`` SGD steps W ← W − γ(∇f_c(W) + ξ) on the weights themselves (full
    fine-tuning: the asynchronous clients' ΔW), with :func:`factor_grads`' minibatch and noise;
    returns the new W. Plain SGD only: a step is one tensor operation, not an optimizer's setup."""
    if local.optimizer != "sgd" or local.optimizer_kwargs:
        raise ValueError("train_weights takes plain SGD steps: optimizer='sgd' without kwargs")
    one = torch.tensor([client], device=problem.device)
    with torch.no_grad():
        for _ in range(local.steps):
            idx = minibatch(problem, client, local.batch_size, streams["data"])
            stack = tree_map(lambda w: w[None], W)
            G = tree_map(
                lambda g: g[0], problem.local_grads(stack, one, None if idx is None else [idx])
            )
            if local.sigma:
                G = G + _noise(problem, G, local.sigma, streams["noise"])
            W = W - local.gamma * G
    return W
