"""Base gradient estimators G^t (Bernoulli-LoRA Table 1), written as pure init/update pairs.

An estimator sees only the effective weight W^t and the problem (:mod:`lorakit.problems.protocol`);
the chain then projects G^t onto the sketch (eq. (8)). W and G are trees (:mod:`lorakit.tree`): a
bare tensor for a matrix problem, one matrix per site for a peft model, so the single-node
estimators run unchanged at both scales. State is explicit, in the spirit of optax: ``init``
returns (G^0, state) and ``update`` returns (G^t, state). Every random draw comes from the run's
named streams: minibatch indices from ``data``, additive noise from ``noise`` (drawn site by site,
in site order), PAGE's coin from ``estimator``.

==========  ===================================================================  ====================
name        G^t                                                                  source
==========  ===================================================================  ====================
``gd``      ∇f(W^t)                                                              Alg. 2
``sgd``     g(W^t): ∇f + noise of variance σ², or a minibatch mean of ∇f_i       Alg. 4, Asm. 4/5
``rr``      ∇f_{π_i}(W^t), π a fresh permutation of the N components each epoch   RAC-LoRA eq. (7)
``page``    ∇f(W^t) w.p. q, else G^{t−1} + ∇f_i(W^t) − ∇f_i(W^{t−1})             Alg. 6, eq. (117)
``mvr``     ∇f_ξ(W^t) + (1 − b)(G^{t−1} − ∇f_ξ(W^{t−1})), same ξ at both points  Alg. 5, eq. (108)
``qgd``     (1/M) Σ_l Q_l(∇f_l(W^t)), Q unbiased                                  Alg. 7, eq. (125)
``marina``  mean of G_l^t: ∇f_l(W^t) w.p. q (shared coin), else                  Alg. 8, eq. (128)
            G_l^{t−1} + Q_l(∇f_l(W^t) − ∇f_l(W^{t−1}))
``ef21``    mean of G_l^t = G_l^{t−1} + C_l(∇f_l(W^t) − G_l^{t−1}), C contractive  Alg. 9, eq. (137)
==========  ===================================================================  ====================

The federated estimators (``qgd``, ``marina``, ``ef21``) need a
:class:`~lorakit.problems.federated.FederatedProblem` (batched client gradients; not a model) and
draw their compression randomness from the ``compression`` stream (:mod:`lorakit.compressors`).

Messages. Every :class:`Estimate` carries ``bytes_up``, the bytes the clients uploaded to form
this G^t, summed over the ``clients`` that sent (the estimators with ``federated = True``); the
single-node estimators report ``bytes_up = 0`` and ``clients = 0``. In Algs. 7–9 every client
sends a message of the same size in a step, so one client's upload is ``bytes_up / clients``. A
message of d = m·n entries costs ``floats·bytes_per_float + indices·bytes_per_index`` with
(floats, indices) the compressor's :meth:`~lorakit.compressors.Compressor.payload` (d) and
4 bytes each unless the estimator is built otherwise:

==========  ==============================================================  =====================
estimator   a client's upload in step t ≥ 1                                 step 0 (``init``)
==========  ==============================================================  =====================
``qgd``     Q_l(∇f_l(W^t)): payload(d)                                      the same
``marina``  s^t = 1: ∇f_l(W^t) in full, d floats; else Q_l(∇f_l(W^t) −       ∇f_l(W^0): d floats
            ∇f_l(W^{t−1})): payload(d)
``ef21``    C_l(∇f_l(W^t) − G_l^{t−1}): payload(d) (identity: d floats)       ``grad``: d floats;
                                                                            ``zero``: nothing
==========  ==============================================================  =====================

The chain (:mod:`lorakit.chain`) logs these counts and the server's broadcast of W^{t+1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ._validation import check_byte_size, check_choice, check_int, check_real
from .compressors import Compressor, make_compressor
from .problems.base import MatrixProblem
from .problems.federated import FederatedProblem
from .rng import Streams

__all__ = [
    "ESTIMATORS",
    "Estimate",
    "Estimator",
    "Oracle",
    "ef21",
    "gd",
    "make_estimator",
    "marina",
    "mvr",
    "page",
    "qgd",
    "rr",
    "sgd",
]


class Estimate(NamedTuple):
    """G^t, the estimator's state, whether G^t is the exact full gradient, and its messages.

    ``bytes_up``: bytes uploaded to form this G^t, summed over the ``clients`` that sent a message
    (module docstring, "Messages"); 0 and 0 for the single-node estimators.
    """

    G: torch.Tensor
    state: Any
    exact: bool
    bytes_up: float = 0.0
    clients: int = 0


# --------------------------------------------------------------------------------------------
# Stochastic oracles: a sample ξ and the component gradient ∇f_ξ(W)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Oracle:
    """How ∇f_ξ is sampled: a minibatch of ``batch_size`` rows, additive Gaussian noise with
    E‖∇f_ξ − ∇f‖² = σ², or both (the noise on the minibatch gradient).

    With noise, (A_1, B_1, C_1) = (0, 1, σ²) in Assumption 4: ξ has i.i.d. N(0, σ²/D) entries,
    D = Σ_l m_l n_l over the sites, drawn per site in site order (one m×n draw for a matrix).
    ``draw`` and ``grad`` are separate so MVR and PAGE can evaluate one sample at two points.
    """

    sigma: float | None = None
    batch_size: int | None = None

    def resolve(self, problem) -> Oracle:
        if self.sigma is not None and self.batch_size is None:
            return self
        if problem.n_samples is None:
            raise ValueError(
                f"problem {problem.name!r} is not a finite sum: give sigma (additive noise) "
                "alone to the stochastic estimator"
            )
        batch = check_int("batch_size", self.batch_size or 1, low=1, high=problem.n_samples)
        return Oracle(self.sigma, batch)

    def draw(self, problem, streams: Streams):
        """(rows or None, ξ or None): the minibatch from the ``data`` stream, ξ from ``noise``."""
        idx = xi = None
        if self.batch_size is not None:
            perm = torch.randperm(problem.n_samples, generator=streams["data"])
            idx = perm[: self.batch_size].to(problem.device)
        if self.sigma is not None:
            scale = self.sigma / math.sqrt(sum(m * n for m, n in problem.shapes))
            gen, dtype = streams["noise"], problem.dtype
            xi = problem.tree(
                (scale * torch.randn(m, n, generator=gen, dtype=dtype)).to(problem.device)
                for m, n in problem.shapes
            )
        return idx, xi

    def grad(self, problem, W, sample):
        idx, xi = sample
        G = problem.grad(W) if idx is None else problem.grad(W, idx)
        return G if xi is None else G + xi

    def __str__(self) -> str:
        parts = [f"sigma={self.sigma:g}"] if self.sigma is not None else []
        return ",".join(parts + ([f"batch={self.batch_size}"] if self.batch_size else []))


def _oracle(sigma, batch_size) -> Oracle:
    if sigma is not None:
        sigma = check_real("sigma", sigma, low=0.0)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, low=1)
    return Oracle(sigma, batch_size)


# --------------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------------
class Estimator:
    """Interface: ``init(problem, W, streams)`` and ``update(problem, W, state, streams)``."""

    name: str = "estimator"
    #: True for the estimators of Algs. 7–9, whose clients send messages (``Estimate.bytes_up``).
    federated: bool = False

    def bind(self, problem) -> Estimator:
        """Resolve problem-dependent defaults (the oracle) once per run."""
        return self

    def init(self, problem, W, streams) -> Estimate:
        return self.update(problem, W, None, streams)

    def update(self, problem, W, state, streams) -> Estimate:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class GD(Estimator):
    """G^t = ∇f(W^t) (Bernoulli-LoRA Alg. 2; RAC-LoRA eqs. (3)–(4))."""

    name = "gd"

    def update(self, problem, W, state, streams):
        return Estimate(problem.grad(W), None, True)

    def __str__(self):
        return "gd"


@dataclass(frozen=True)
class SGD(Estimator):
    """G^t = g(W^t), unbiased (Bernoulli-LoRA Alg. 4; RAC-LoRA App. E eq. (10))."""

    oracle: Oracle = Oracle()
    name = "sgd"

    def bind(self, problem):
        return SGD(self.oracle.resolve(problem))

    def update(self, problem, W, state, streams):
        return Estimate(
            self.oracle.grad(problem, W, self.oracle.draw(problem, streams)), None, False
        )

    def __str__(self):
        return f"sgd({self.oracle})"


@dataclass(frozen=True)
class PAGE(Estimator):
    """PAGE (Bernoulli-LoRA Alg. 6, eq. (117)); G^0 = ∇f(W^0) so the 𝒢^0 term of Thm 4 vanishes."""

    q: float
    oracle: Oracle = Oracle()
    name = "page"

    def bind(self, problem):
        return PAGE(self.q, self.oracle.resolve(problem))

    def init(self, problem, W, streams):
        G = problem.grad(W)
        return Estimate(G, (G, W), True)

    def update(self, problem, W, state, streams):
        G_prev, W_prev = state
        if streams.uniform("estimator") < self.q:
            G, exact = problem.grad(W), True
        else:
            xi = self.oracle.draw(problem, streams)
            G = G_prev + self.oracle.grad(problem, W, xi) - self.oracle.grad(problem, W_prev, xi)
            exact = False
        return Estimate(G, (G, W), exact)

    def __str__(self):
        return f"page(q={self.q:g}, {self.oracle})"


@dataclass(frozen=True)
class MVR(Estimator):
    """STORM momentum (Bernoulli-LoRA Alg. 5, eq. (108)); G^0 = ∇f_{ξ^0}(W^0)."""

    b: float
    oracle: Oracle = Oracle()
    name = "mvr"

    def bind(self, problem):
        return MVR(self.b, self.oracle.resolve(problem))

    def init(self, problem, W, streams):
        G = self.oracle.grad(problem, W, self.oracle.draw(problem, streams))
        return Estimate(G, (G, W), False)

    def update(self, problem, W, state, streams):
        G_prev, W_prev = state
        xi = self.oracle.draw(problem, streams)
        G = self.oracle.grad(problem, W, xi)
        G = G + (1 - self.b) * (G_prev - self.oracle.grad(problem, W_prev, xi))
        return Estimate(G, (G, W), False)

    def __str__(self):
        return f"mvr(b={self.b:g}, {self.oracle})"


@dataclass(frozen=True)
class RR(Estimator):
    """Random reshuffling (RAC-LoRA App. D, eq. (7)): every epoch draws a permutation π of the N
    components from the ``data`` stream and step i of the epoch uses G = ∇f_{π_i}(W). With
    ``steps_per_link = N`` a link is one epoch under one sketch, the method Theorems D.2–D.3 analyse.
    """

    name = "rr"

    def bind(self, problem):
        if problem.n_samples is None:
            raise ValueError(f"problem {problem.name!r} is not a finite sum: rr needs components")
        return self

    def update(self, problem, W, state, streams):
        perm, i = state if state is not None else (None, 0)
        if perm is None or i == perm.numel():
            perm, i = torch.randperm(problem.n_samples, generator=streams["data"]), 0
        G = problem.grad(W, perm[i : i + 1].to(problem.device))
        return Estimate(G, (perm, i + 1), False)

    def __str__(self):
        return "rr"


def gd() -> Estimator:
    """Full gradients."""
    return GD()


def sgd(*, sigma: float | None = None, batch_size: int | None = None) -> Estimator:
    """Minibatches of ``batch_size`` rows (default 1), additive noise of variance σ² (``sigma``),
    or both."""
    return SGD(_oracle(sigma, batch_size))


def rr() -> Estimator:
    """Random reshuffling over the problem's N components, one component per step."""
    return RR()


def page(q: float, *, sigma: float | None = None, batch_size: int | None = None) -> Estimator:
    """PAGE with full-gradient probability q ∈ (0, 1]; q = 1 is GD."""
    return PAGE(check_real("q", q, low=0.0, high=1.0, low_open=True), _oracle(sigma, batch_size))


def mvr(b: float, *, sigma: float | None = None, batch_size: int | None = None) -> Estimator:
    """MVR / STORM with momentum b ∈ (0, 1] (the analysis divides by b); b = 1 is SGD."""
    return MVR(check_real("b", b, low=0.0, high=1.0, low_open=True), _oracle(sigma, batch_size))


ESTIMATORS = {"gd": gd, "sgd": sgd, "rr": rr, "page": page, "mvr": mvr}


def make_estimator(estimator: Estimator | str, **kwargs) -> Estimator:
    """An :class:`Estimator` from itself or a registered name plus its parameters."""
    if isinstance(estimator, Estimator):
        return estimator
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}, got {estimator!r}")
    return ESTIMATORS[estimator](**kwargs)


# --------------------------------------------------------------------------------------------
# Federated estimators (Bernoulli-LoRA Algs. 7–9): M clients send compressed messages
# --------------------------------------------------------------------------------------------
def _federated(problem, estimator: str) -> FederatedProblem:
    name = getattr(problem, "name", type(problem).__name__)
    if not getattr(problem, "batched", True):  # a model: its clients are evaluated one by one
        raise ValueError(
            f"estimator {estimator!r} is not available at model scale: it needs batched client "
            f"gradients (a FederatedProblem), which problem {name!r} lacks; use gd, sgd, page, "
            "mvr or rr"
        )
    if not isinstance(problem, FederatedProblem):
        raise ValueError(
            f"estimator {estimator!r} needs a FederatedProblem (M clients), but problem "
            f"{name!r} is a {type(problem).__name__}"
        )
    return problem


def _compressor(compressor, *, estimator: str, need: str) -> Compressor:
    if isinstance(compressor, str):
        compressor = make_compressor(compressor)
    if not isinstance(compressor, Compressor):
        raise ValueError(f"compressor must be a lorakit.compressors.Compressor, got {compressor!r}")
    if need == "unbiased" and not compressor.unbiased:
        raise ValueError(
            f"{estimator} needs an unbiased compressor (Def. 2), got the contractive {compressor}: "
            "use identity, rand_k, natural or qsgd"
        )
    if need == "contractive" and not compressor.contractive:
        raise ValueError(
            f"{estimator} needs a contractive compressor (Def. 3), got {compressor}: use identity, "
            "top_k or scaled_rand_k (rand_k/(omega + 1))"
        )
    return compressor


class FedState(NamedTuple):
    """Per-client state of MARINA/EF21: G_l^t (M, m, n), ∇f_l(W^t) (M, m, n) and W^t."""

    G_clients: torch.Tensor
    grads: torch.Tensor
    W: torch.Tensor


class _Messages:
    """Byte accounting shared by the federated estimators (fields ``bytes_per_float/_index``)."""

    federated = True

    def __post_init__(self):  # also for direct construction, e.g. QGD(c, bytes_per_float=-4)
        check_byte_size("bytes_per_float", self.bytes_per_float)
        check_byte_size("bytes_per_index", self.bytes_per_index)

    def message_bytes(self, problem: MatrixProblem, compressor: Compressor | None) -> int:
        """One client's message of d = m·n entries: compressed by ``compressor``, or in full."""
        d = problem.m * problem.n
        floats, indices = (d, 0) if compressor is None else compressor.payload(d)
        return floats * self.bytes_per_float + indices * self.bytes_per_index

    def _estimate(self, problem, G, state, exact, compressor) -> Estimate:
        """An Estimate whose M clients each sent one message (``compressor`` None: in full)."""
        M = problem.M
        return Estimate(G, state, exact, float(M * self.message_bytes(problem, compressor)), M)


def _byte_size(name: str, value) -> int:
    return check_byte_size(name, value)


@dataclass(frozen=True)
class QGD(_Messages, Estimator):
    """Fed-Bernoulli-LoRA-QGD (Alg. 7, eq. (125)): G^t = (1/M) Σ_l Q_l^t(∇f_l(W^t)).

    Each client compresses its gradient independently (one ``batch_dims=1`` call on the stack).
    Lemma 15: G^t satisfies Assumption 4 with A_1 = Lω/M, B_1 = 1, C_1 = 2LωΔ*/M.
    """

    compressor: Compressor
    bytes_per_float: int = 4
    bytes_per_index: int = 4
    name = "qgd"

    def bind(self, problem):
        _federated(problem, self.name)
        return self

    def update(self, problem, W, state, streams):
        grads = _federated(problem, self.name).client_grads(W)
        sent = self.compressor(grads, streams["compression"], batch_dims=1)
        exact = self.compressor.is_identity
        return self._estimate(problem, sent.mean(dim=-3), None, exact, self.compressor)

    def __str__(self):
        return f"qgd({self.compressor})"


@dataclass(frozen=True)
class MARINA(_Messages, Estimator):
    """Fed-Bernoulli-LoRA-MARINA (Alg. 8, eq. (128)) with one coin s^t ~ Be(q) shared by all
    clients (Lemma 16 needs it shared), drawn from the ``estimator`` stream:
    G_l^t = ∇f_l(W^t) if s^t = 1, else G_l^{t−1} + Q_l^t(∇f_l(W^t) − ∇f_l(W^{t−1})); G^t = mean G_l^t.
    G_l^0 = ∇f_l(W^0), so 𝒢^0 = 0 in Thm 6. q = 1 is GD.
    """

    q: float
    compressor: Compressor
    bytes_per_float: int = 4
    bytes_per_index: int = 4
    name = "marina"

    def bind(self, problem):
        _federated(problem, self.name)
        return self

    def init(self, problem, W, streams):
        grads = _federated(problem, self.name).client_grads(W)
        return self._estimate(problem, grads.mean(dim=-3), FedState(grads, grads, W), True, None)

    def update(self, problem, W, state, streams):
        grads = _federated(problem, self.name).client_grads(W)
        if streams.uniform("estimator") < self.q:
            G_clients, exact, sent_with = grads, True, None  # s^t = 1: full gradients
        else:
            diff = grads - state.grads
            G_clients = state.G_clients + self.compressor(
                diff, streams["compression"], batch_dims=1
            )
            exact, sent_with = False, self.compressor
        G, new_state = G_clients.mean(dim=-3), FedState(G_clients, grads, W)
        return self._estimate(problem, G, new_state, exact, sent_with)

    def __str__(self):
        return f"marina(q={self.q:g}, {self.compressor})"


@dataclass(frozen=True)
class EF21(_Messages, Estimator):
    """Fed-Bernoulli-LoRA-EF21 (Alg. 9, eq. (137)): G_l^t = G_l^{t−1} + C_l^t(∇f_l(W^t) − G_l^{t−1}),
    G^t = (1/M) Σ_l G_l^t, with a contractive C (Def. 3).

    ``init="grad"``: G_l^0 = ∇f_l(W^0), so Ĝ^0 = 0 in Thm 21; ``init="zero"``: G_l^0 = 0, so
    Ĝ^0 = (1/M) Σ_l ‖∇f_l(W^0)‖² and the first step does not move W. With the identity compressor
    G_l^t = ∇f_l(W^t) is used directly (the same value without the rounding of G + (∇f − G)), so
    the method is GD exactly.
    """

    compressor: Compressor
    init_mode: str = "grad"
    bytes_per_float: int = 4
    bytes_per_index: int = 4
    name = "ef21"

    def bind(self, problem):
        _federated(problem, self.name)
        return self

    def init(self, problem, W, streams):
        grads = _federated(problem, self.name).client_grads(W)
        if self.init_mode == "grad":
            state = FedState(grads, grads, W)
            return self._estimate(problem, grads.mean(dim=-3), state, True, None)
        G_clients = torch.zeros_like(grads)  # G_l^0 = 0: nothing is sent
        G = G_clients.mean(dim=-3)
        return Estimate(G, FedState(G_clients, grads, W), False, 0.0, problem.M)

    def update(self, problem, W, state, streams):
        grads = _federated(problem, self.name).client_grads(W)
        if self.compressor.is_identity:
            G_clients = grads
        else:
            sent = self.compressor(grads - state.G_clients, streams["compression"], batch_dims=1)
            G_clients = state.G_clients + sent
        G, exact = G_clients.mean(dim=-3), self.compressor.is_identity
        return self._estimate(problem, G, FedState(G_clients, grads, W), exact, self.compressor)

    def __str__(self):
        init = "" if self.init_mode == "grad" else f", init={self.init_mode}"
        return f"ef21({self.compressor}{init})"


def qgd(
    compressor: Compressor | str, *, bytes_per_float: int = 4, bytes_per_index: int = 4
) -> Estimator:
    """Fed-QGD (Alg. 7) with an unbiased compressor (Def. 2); identity gives GD.

    ``bytes_per_float``/``bytes_per_index``: the message accounting (module docstring).
    """
    return QGD(
        _compressor(compressor, estimator="qgd", need="unbiased"),
        _byte_size("bytes_per_float", bytes_per_float),
        _byte_size("bytes_per_index", bytes_per_index),
    )


def marina(
    q: float, compressor: Compressor | str, *, bytes_per_float: int = 4, bytes_per_index: int = 4
) -> Estimator:
    """Fed-MARINA (Alg. 8): full gradients w.p. q ∈ (0, 1] (shared coin), else compressed
    gradient differences with an unbiased compressor (Def. 2)."""
    q = check_real("q", q, low=0.0, high=1.0, low_open=True)
    return MARINA(
        q,
        _compressor(compressor, estimator="marina", need="unbiased"),
        _byte_size("bytes_per_float", bytes_per_float),
        _byte_size("bytes_per_index", bytes_per_index),
    )


def ef21(
    compressor: Compressor | str,
    *,
    init: str = "grad",
    bytes_per_float: int = 4,
    bytes_per_index: int = 4,
) -> Estimator:
    """Fed-EF21 (Alg. 9) with a contractive compressor (Def. 3); ``init`` is ``"grad"``
    (G_l^0 = ∇f_l(W^0)) or ``"zero"`` (G_l^0 = 0)."""
    check_choice("init", init, ("grad", "zero"))
    return EF21(
        _compressor(compressor, estimator="ef21", need="contractive"),
        init,
        _byte_size("bytes_per_float", bytes_per_float),
        _byte_size("bytes_per_index", bytes_per_index),
    )


ESTIMATORS.update({"qgd": qgd, "marina": marina, "ef21": ef21})
