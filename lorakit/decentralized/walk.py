"""RW-LoRA: one LoRA token walks the communication graph (RW-LoRA Algorithm 1; spec ``rw_lora.md`` §4).

A single adapter (B ∈ ℝ^{m×r}, A ∈ ℝ^{r×n}) over a frozen W0 — the *token* — sits at node v_t of a
connected graph of N nodes (the N clients of a :class:`~lorakit.problems.federated.FederatedProblem`).
Each hop:

1. node v_t forms W^(t) = W0 + s·B^(t)A^(t) (s = α/r; the paper has no scaling, α = r gives s = 1)
   and takes ``local_steps`` steps on its own objective f_{v_t} — the simultaneous (Jacobi) update
   of eqs. (7)–(8), both gradients at the same W (Lemma 1, eq. (12)):

       ∇_A = s·Bᵀ ∇f̃_v(W),   ∇_B = s·∇f̃_v(W) Aᵀ;

2. the next node is drawn, v_{t+1} ~ P_{v_t,·}, and the token (the factors, plus the optimizer
   state when it travels) is sent there.

The walk's transition matrix is Metropolis–Hastings for a target π (``"mh"``, spec §4.4), its lazy
version (I + P)/2 or more generally laziness·I + (1 − laziness)·P (``"lazy"``: aperiodic even on an
even ring, where plain MH is the periodic simple random walk, spec §9.1), the Metropolis weights of
the gossip literature (``"metropolis"``, uniform π), or any row-stochastic matrix supported on the
graph. The objective is f = E_{v∼π} f_v, eq. (5): the history's ``loss`` is the π-weighted mean of
the node losses Σ_v π_v f_v(W), and ``gap`` is loss − f*_π, with f*_π the problem's f* when π is
uniform and, for diagonal-quadratic nodes, the closed form W*_π = Σ_v π_v Λ_v∘C_v / Σ_v π_v Λ_v
otherwise (NaN when unknown).

Communication (spec §4.5, §10.5). A transfer sends one adapter, r(m + n) floats, however many
nodes there are; with ``optimizer="adamw"`` and ``optimizer_state="token"`` the two moment buffers
and the step counter travel too, 3·r(m + n) + 1 floats. A self-loop (the walk stays put: lazy
chains, Metropolis self-weights, a token with no live neighbour) sends nothing. Every hop is
``local_steps`` local updates.

Failures (options; the paper has none):

* ``node_failure`` — at every hop each node other than the token's holder is down independently
  with this probability. A walk step drawn onto a down node is *skipped*: the token goes instead to
  a node drawn from P_{v_t,·} restricted to the live nodes (and stays at v_t when every node of the
  row's support is down). No work is lost: only the skipped destination is counted.
* ``token_loss`` — a transfer is lost with this probability. Every node keeps the token it
  received until the next node has it; the sender re-issues the token from that copy — the state
  *before* its own update — so the lost hop's update is discarded (at most one hop's work is lost,
  its bytes and local updates still count) and the walk resumes from the sender.

Randomness (:class:`lorakit.rng.Streams`): ``init`` (A's draw), ``walk`` (the start when random,
and exactly one uniform per hop for the next node, so runs with and without failures use the same
draws hop by hop), ``failure`` (down nodes and rerouting), ``loss`` (lost transfers), ``data``
(minibatches), ``noise`` (additive gradient noise: ξ with i.i.d. N(0, σ²/(mn)) entries, so
E‖ξ‖²_F = σ², the variance of Assumption 4 for exact local gradients).

A diverging update raises :class:`~lorakit.chain.DivergenceError` before it is kept: the token's
last good state is untouched and ``error.frame`` holds the rows logged so far.

Model scale: :meth:`RWLoRA.run` on a :class:`lorakit.adapters.ModelProblem` with clients runs the
same walk with every LoRA site's factors as the token (:mod:`lorakit.adapters.decentralized`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pandas as pd
import torch

from .._validation import (
    check_byte_size,
    check_choice,
    check_int,
    check_problem,
    check_real,
    check_seeds,
)
from ..divergence import BLOWUP, DivergenceError, check_blowup, run_seeds
from ..problems.federated import FederatedProblem
from ..progress import bar as progress_bar
from ..rng import Streams
from ..sketches import gaussian, kaiming_uniform
from ._loop import run_logged
from .graphs import as_graph, check_connected
from .markov import (
    is_periodic,
    lazy,
    metropolis_hastings,
    metropolis_weights,
    pi_from_sizes,
    stationary_distribution,
    validate_chain,
)

__all__ = [
    "INITS",
    "OPTIMIZERS",
    "OPTIMIZER_STATES",
    "TRANSITIONS",
    "RWLoRA",
    "WalkSimulation",
    "token_path",
    "visit_frequencies",
]

TRANSITIONS = ("mh", "lazy", "metropolis")
PIS = ("uniform", "sizes")
STARTS = ("uniform", "stationary")
OPTIMIZERS = ("sgd", "adamw")
OPTIMIZER_STATES = ("token", "node", "reset")
INITS = ("gaussian", "kaiming")
_ADAMW_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}  # torch's AdamW


# ---------------------------------------------------------------------------------------------
# Pieces shared with gossip Dec-LoRA (lorakit.decentralized.gossip)
# ---------------------------------------------------------------------------------------------
def _check_common(cfg) -> None:
    """Validate the fields RW-LoRA and gossip Dec-LoRA share (in place on a frozen dataclass)."""
    set_ = object.__setattr__
    set_(cfg, "rank", check_int("rank", cfg.rank, low=1))
    set_(cfg, "lr", check_real("lr", cfg.lr, low=0.0, low_open=True))
    set_(cfg, "local_steps", check_int("local_steps", cfg.local_steps, low=1))
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    if cfg.alpha is not None:
        check_real("alpha", cfg.alpha, low=0.0, low_open=True)
    check_choice("init", cfg.init, INITS)
    if cfg.init_std is not None:
        check_real("init_std", cfg.init_std, low=0.0, low_open=True)
    if cfg.sigma is not None:
        check_real("sigma", cfg.sigma, low=0.0)
    if cfg.batch_size is not None:
        check_int("batch_size", cfg.batch_size, low=1)
    set_(cfg, "bytes_per_float", check_byte_size("bytes_per_float", cfg.bytes_per_float))
    kwargs = dict(cfg.optimizer_kwargs)
    if cfg.optimizer == "sgd" and kwargs:
        raise ValueError(f"optimizer_kwargs apply to optimizer='adamw' only, got {kwargs}")
    unknown = set(kwargs) - set(_ADAMW_DEFAULTS)
    if unknown:
        raise ValueError(
            f"optimizer_kwargs may set {sorted(_ADAMW_DEFAULTS)}, got unknown {sorted(unknown)}"
        )
    if "betas" in kwargs:
        b1, b2 = kwargs["betas"]
        check_real("betas[0]", b1, low=0.0, high=1.0, high_open=True)
        check_real("betas[1]", b2, low=0.0, high=1.0, high_open=True)
    if "eps" in kwargs:
        check_real("eps", kwargs["eps"], low=0.0, low_open=True)
    if "weight_decay" in kwargs:
        check_real("weight_decay", kwargs["weight_decay"], low=0.0)


def _scale(cfg) -> float:
    return (cfg.alpha if cfg.alpha is not None else cfg.rank) / cfg.rank


def _prepare_graph(graph, problem) -> tuple[nx.Graph, np.ndarray]:
    """The graph (nodes 0..N−1), checked connected and against the problem's N clients."""
    if graph is None:
        raise ValueError("graph is required: a networkx.Graph or an N×N adjacency matrix")
    G = as_graph(graph)
    N = G.number_of_nodes()
    if N != problem.M:
        raise ValueError(
            f"graph has {N} nodes but the problem has M = {problem.M} clients: one node per client"
        )
    check_connected(G)
    adjacency = nx.to_numpy_array(G, nodelist=range(N), weight=None, dtype=float) > 0
    np.fill_diagonal(adjacency, False)
    return G, adjacency


def _client_sizes(problem) -> list:
    """Samples per client (None for a client that is not a finite sum), either problem kind."""
    if isinstance(problem, FederatedProblem):
        return [c.n_samples for c in problem.clients]
    return [int(c.numel()) for c in problem.clients]


def _check_problem(cfg, problem, what: str = "problem") -> None:
    check_problem(
        problem, FederatedProblem, "a FederatedProblem or a lorakit.adapters.ModelProblem", what
    )
    check_int("rank", cfg.rank, low=1, high=min(problem.m, problem.n))


def _simulation_class(cfg, problem, matrix_class, model_class: str):
    """The simulation class for ``problem``: ``matrix_class``, or for a ModelProblem the class
    ``model_class`` of :mod:`lorakit.adapters.decentralized` (configuration checked against the
    model's sites; its constructor also takes ``progress``)."""
    if not getattr(problem, "stateful", False):
        _check_problem(cfg, problem)
        return matrix_class
    from ..adapters import decentralized  # model scale: imported only on this path

    decentralized.check_model_config(cfg, problem)
    return getattr(decentralized, model_class)


def _init_A(cfg, problem, gen: torch.Generator) -> torch.Tensor:
    """A^(0): N(0, σ_init²) entries (Algorithm 1 line 1; σ_init = 1/r as peft's ``"gaussian"`` when
    ``init_std`` is None) or peft's default Kaiming-uniform. B^(0) = 0 always, so W^(0) = W0."""
    return _draw_A(cfg, (cfg.rank, problem.n), gen, problem.dtype, problem.device)


def _draw_A(cfg, shape: tuple, gen: torch.Generator, dtype, device) -> torch.Tensor:
    """One A^(0) of ``shape`` (r, n) as :func:`_init_A` describes (one site's at model scale)."""
    kw = {"dtype": dtype, "device": device}
    if cfg.init == "gaussian":
        std = cfg.init_std if cfg.init_std is not None else 1.0 / cfg.rank
        return gaussian(std).sample(shape, gen, side="right", **kw)
    A = kaiming_uniform().sample(shape, gen, side="right", **kw)
    return A * (cfg.init_std / A.std()) if cfg.init_std is not None and A.numel() > 1 else A


def _local_grads(cfg, problem, W: torch.Tensor, nodes: torch.Tensor, streams) -> torch.Tensor:
    """∇f̃_{nodes[c]}(W[c]) for W (C, m, n): exact, a minibatch of ``batch_size`` rows of a
    finite-sum node (``data`` stream), plus N(0, σ²/(mn)) noise per entry (``noise`` stream)."""
    idx = None
    if cfg.batch_size is not None:
        idx = []
        for v in nodes.tolist():
            size = problem.clients[v].n_samples
            if size is None:
                raise ValueError(f"node {v} is not a finite sum: batch_size needs data")
            perm = torch.randperm(size, generator=streams["data"])
            idx.append(perm[: min(cfg.batch_size, size)].to(problem.device))
    G = problem.local_grads(W, nodes.to(problem.device), idx)
    if cfg.sigma:
        noise = torch.randn(G.shape, generator=streams["noise"], dtype=G.dtype)
        G = G + (cfg.sigma / math.sqrt(problem.m * problem.n)) * noise.to(G.device)
    return G


def _zero_state(A: torch.Tensor, B: torch.Tensor) -> dict:
    """AdamW's state: first and second moments of A and B and the step counter."""
    return {
        "step": 0,
        "mA": torch.zeros_like(A),
        "vA": torch.zeros_like(A),
        "mB": torch.zeros_like(B),
        "vB": torch.zeros_like(B),
    }


def _copy_state(state: dict | None) -> dict | None:
    if state is None:
        return None
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}


def _adamw_step(cfg, A, B, gA, gB, state: dict):
    """One AdamW step on both factors (torch.optim.AdamW's update, decoupled weight decay);
    returns the new (A, B, state) without touching the inputs."""
    kw = {**_ADAMW_DEFAULTS, **cfg.optimizer_kwargs}
    (b1, b2), eps, wd, lr = kw["betas"], kw["eps"], kw["weight_decay"], cfg.lr
    step = state["step"] + 1
    bc1, bc2 = 1.0 - b1**step, 1.0 - b2**step
    new = {"step": step}
    out = []
    for name, P, g in (("A", A, gA), ("B", B, gB)):
        m = state["m" + name].lerp(g, 1.0 - b1)
        v = state["v" + name] * b2 + (1.0 - b2) * g * g
        denom = v.sqrt() / math.sqrt(bc2) + eps
        out.append(P * (1.0 - lr * wd) - (lr / bc1) * m / denom)
        new["m" + name], new["v" + name] = m, v
    return out[0], out[1], new


def _factor_step(cfg, A, B, gA, gB, state):
    """Simultaneous update of both factors from gradients taken at the same W (eqs. (7)–(8))."""
    if cfg.optimizer == "sgd":
        return A - cfg.lr * gA, B - cfg.lr * gB, state
    return _adamw_step(cfg, A, B, gA, gB, state)


def _largest(factors: tuple) -> float:
    """The largest |entry| of the tensors in ``factors`` (entries may be per-site tuples)."""
    flat = [x for f in factors for x in (f if isinstance(f, (tuple, list)) else (f,))]
    return float(torch.stack([x.abs().max() for x in flat]).max())


def _finite_and_bounded(new: tuple | float, old: tuple | float) -> str | None:
    """None if the new factors are finite and not exploding relative to the old ones (factors or
    their largest entry); else what is wrong."""
    size = new if isinstance(new, float) else _largest(new)
    scale = 1e6 * (1.0 + (old if isinstance(old, float) else _largest(old)))
    if not math.isfinite(size):
        return "the factors are not finite"
    if size > scale:
        return f"the factors grew to size {size:.3g}"
    return None


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _seed_loop(
    cfg, problem, seeds, steps: int, log_every: int, messages: bool, on_divergence, make,
    progress: bool = False, blowup: float = BLOWUP,
):  # fmt: skip
    """Run each seed (``make(seed)`` → a simulation with ``run(steps, log_every)``), collect the
    rows, attach the configuration columns; a diverging seed (loss above ``blowup``·max(1, |f_0|))
    raises with every finished seed's rows or, with ``on_divergence="stop"``, keeps its rows and
    is listed in ``attrs["diverged"]`` (:func:`lorakit.divergence.run_seeds`).
    ``progress`` shows a tqdm bar over the seeds."""
    check_choice("on_divergence", on_divergence, ("raise", "stop"))
    blowup = check_blowup(blowup)
    _check_flag("messages", messages)
    _check_flag("progress", progress)
    seeds = check_seeds(seeds)

    def with_config(rows) -> pd.DataFrame:
        frame = pd.DataFrame(rows)
        for key, value in reversed(cfg.describe().items()):
            frame.insert(0, key, value)
        return frame

    frame, sims = run_seeds(
        progress_bar(seeds, enabled=progress, desc=cfg.method),
        lambda seed: make(check_int("seed", seed, low=0)),
        lambda sim: sim.run(steps, log_every),
        with_config,
        on_divergence=on_divergence,
        blowup=blowup,
    )
    return frame, pd.DataFrame([m for sim in sims for m in sim.messages]), sims


def _closed_form_optimum(problem: FederatedProblem, pi: np.ndarray) -> float:
    """f*_π = min_W Σ_v π_v f_v(W) for diagonal-quadratic nodes (NaN otherwise)."""
    stack = getattr(problem, "_stack", None)
    if stack is None:
        return math.nan
    lam, C, _ = stack
    w = torch.as_tensor(np.array(pi), dtype=lam.dtype, device=lam.device)[:, None, None]
    total = (w * lam).sum(0)
    num = (w * lam * C).sum(0)
    W_star = torch.where(total > 0, num / torch.where(total > 0, total, 1.0), 0.0)
    return float((problem.client_losses(W_star) * w.flatten()).sum())


def _as_matrix(name: str, value) -> np.ndarray:
    X = np.array(value, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != X.shape[1]:
        raise ValueError(f"{name} must be a square N×N matrix, got shape {X.shape}")
    if not np.isfinite(X).all() or (X < 0).any():
        raise ValueError(f"{name} must have finite non-negative entries")
    X.setflags(write=False)
    return X


def _sample(cum: np.ndarray, u: float) -> int:
    """Inverse-CDF draw from cumulative weights (never a zero-weight entry)."""
    return min(int(np.searchsorted(cum, u * cum[-1], side="right")), cum.size - 1)


# ---------------------------------------------------------------------------------------------
# RW-LoRA
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RWLoRA:
    """An RW-LoRA configuration (Algorithm 1); :meth:`run` simulates it on a graph of N nodes.

    Parameters
    ----------
    rank : r, 1 ≤ r ≤ min(m, n) (checked against the problem).
    lr : η > 0, the step size (SGD, the theory's) or AdamW's learning rate (the experiments').
    transition : ``"mh"`` (Metropolis–Hastings for π, spec §4.4), ``"lazy"`` (laziness·I +
        (1 − laziness)·MH), ``"metropolis"`` (Metropolis weights 1/(1 + max(d_u, d_v)); uniform π)
        or an N×N row-stochastic matrix supported on the graph's edges and the diagonal.
    pi : the target distribution: None (uniform, or for a given matrix its stationary
        distribution), ``"uniform"``, ``"sizes"`` (π_v ∝ the number of samples of finite-sum node v)
        or N positive weights (normalised). It weighs the objective f = Σ_v π_v f_v (eq. (5)).
    laziness : the self-loop weight of ``"lazy"``, in [0, 1) (½ gives (I + P)/2).
    local_steps : steps per visit (1 in the paper).
    optimizer : ``"sgd"`` (constant η, the theory) or ``"adamw"`` (torch's AdamW update; defaults
        betas (0.9, 0.999), eps 1e-8, weight_decay 0.01, changed by ``optimizer_kwargs``).
    optimizer_state : where AdamW's state lives: ``"token"`` (it travels, and is counted),
        ``"node"`` (each node keeps its own) or ``"reset"`` (fresh at every visit). Spec §12 item 4.
    alpha : LoRA scaling, W = W0 + (α/r)·BA; default α = r (the paper's W0 + BA).
    init : A^(0) ~ ``"gaussian"`` N(0, init_std²) (Algorithm 1; init_std default 1/r as peft's
        gaussian init) or ``"kaiming"`` (peft's default, Kaiming-uniform). B^(0) = 0.
    sigma : additive gradient noise with E‖ξ‖² = σ² (Assumption 4's σ² for exact local gradients).
    batch_size : minibatch of finite-sum nodes (sampled without replacement per step).
    start : v_0: None (node 0), a node, ``"uniform"`` or ``"stationary"`` (drawn from π) from the
        ``walk`` stream.
    node_failure, token_loss : failure probabilities in [0, 1) (module docstring; 1 would keep the
        token at its start / discard every update, so it is refused).
    bytes_per_float : bytes per communicated float.
    """

    rank: int
    lr: float
    transition: str | np.ndarray = "mh"
    pi: str | np.ndarray | None = None
    laziness: float = 0.5
    local_steps: int = 1
    optimizer: str = "sgd"
    optimizer_state: str = "token"
    alpha: float | None = None
    init: str = "gaussian"
    init_std: float | None = None
    sigma: float | None = None
    batch_size: int | None = None
    start: int | str | None = None
    node_failure: float = 0.0
    token_loss: float = 0.0
    bytes_per_float: int = 4
    method: str = "rw_lora"
    optimizer_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        set_ = object.__setattr__
        _check_common(self)
        if isinstance(self.transition, str):
            check_choice("transition", self.transition, TRANSITIONS)
        else:
            P = _as_matrix("transition", self.transition)
            if not np.allclose(P.sum(axis=1), 1.0, rtol=0.0, atol=1e-9):
                raise ValueError("transition must be row-stochastic: every row must sum to 1")
            if np.allclose(P, np.eye(P.shape[0]), rtol=0.0, atol=1e-12) and P.shape[0] > 1:
                raise ValueError(
                    "transition is the identity: the token never leaves its start (a reducible "
                    "chain); give a matrix that moves it, or 'mh'/'lazy'"
                )
            set_(self, "transition", P)
        if isinstance(self.pi, str):
            check_choice("pi", self.pi, PIS)
        elif self.pi is not None:
            pi = np.array(self.pi, dtype=np.float64).ravel()
            if pi.size == 0 or not np.isfinite(pi).all() or (pi <= 0).any():
                raise ValueError("pi must be positive weights, one per node (π_v > 0)")
            pi = pi / pi.sum()
            pi.setflags(write=False)
            set_(self, "pi", pi)
        if isinstance(self.transition, str) and self.transition == "metropolis":
            if self.pi is not None and not (isinstance(self.pi, str) and self.pi == "uniform"):
                raise ValueError(
                    "transition='metropolis' is doubly stochastic (uniform π); use 'mh' or 'lazy' "
                    "for another pi"
                )
        set_(
            self,
            "laziness",
            check_real("laziness", self.laziness, low=0.0, high=1.0, high_open=True),
        )
        check_choice("optimizer_state", self.optimizer_state, OPTIMIZER_STATES)
        if self.start is not None:
            if isinstance(self.start, str):
                check_choice("start", self.start, STARTS)
            else:
                set_(self, "start", check_int("start", self.start, low=0))
        # Probability 1 is refused: every other node down keeps the token at its start forever,
        # and a token lost on every transfer discards every update (the run would be a no-op).
        for name in ("node_failure", "token_loss"):
            set_(
                self, name, check_real(name, getattr(self, name), low=0.0, high=1.0, high_open=True)
            )

    @property
    def scale(self) -> float:
        return _scale(self)

    def describe(self) -> dict:
        return {
            "method": self.method,
            "rank": self.rank,
            "transition": self.transition if isinstance(self.transition, str) else "custom",
            "optimizer": self.optimizer,
            "local_steps": self.local_steps,
        }

    def floats_per_transfer(self, m: int, n: int) -> int:
        """Floats one token transfer carries: r(m + n), plus AdamW's state when it travels."""
        adapter = self.rank * (m + n)
        if self.optimizer == "adamw" and self.optimizer_state == "token":
            return 3 * adapter + 1  # two moment buffers and the step counter
        return adapter

    # -- the chain -----------------------------------------------------------------------------
    def target(self, problem: FederatedProblem, N: int) -> np.ndarray | None:
        """π as configured (None: to be read off a given transition matrix)."""
        if isinstance(self.pi, np.ndarray):
            if self.pi.size != N:
                raise ValueError(f"pi has {self.pi.size} entries; the graph has N = {N} nodes")
            return np.asarray(self.pi)
        if self.pi == "sizes":
            sizes = _client_sizes(problem)
            if any(s is None for s in sizes):
                raise ValueError("pi='sizes' needs finite-sum nodes (every client's n_samples)")
            return np.asarray(pi_from_sizes(sizes), dtype=np.float64)
        if self.pi == "uniform" or isinstance(self.transition, str):
            return np.full(N, 1.0 / N)
        return None

    def transition_matrix(self, problem: FederatedProblem, graph) -> tuple[np.ndarray, np.ndarray]:
        """(P, π) for ``graph``: built (``"mh"``, ``"lazy"``, ``"metropolis"``) or the given matrix,
        checked with :func:`lorakit.decentralized.markov.validate_chain` (rows sum to 1, support on
        the graph and the diagonal, πP = π)."""
        G, adjacency = _prepare_graph(graph, problem)
        N = G.number_of_nodes()
        pi = self.target(problem, N)
        if isinstance(self.transition, np.ndarray):
            P = self.transition
            if P.shape != (N, N):
                raise ValueError(f"transition is {P.shape[0]}×{P.shape[1]}; the graph has N = {N}")
            off = (P > 0) & ~adjacency & ~np.eye(N, dtype=bool)
            if off.any():
                u, v = np.argwhere(off)[0]
                raise ValueError(
                    f"transition moves the token from {u} to {v}, which is not an edge of the graph"
                )
            if pi is None:
                pi = stationary_distribution(P)
        elif self.transition == "metropolis":
            P = np.asarray(metropolis_weights(G), dtype=np.float64)
        else:
            P = np.asarray(metropolis_hastings(G, pi), dtype=np.float64)
            if self.transition == "lazy":
                P = np.asarray(lazy(P, self.laziness), dtype=np.float64)
        validate_chain(P, G, pi)
        return P, pi

    def simulator(self, problem: FederatedProblem, graph, seed: int = 0) -> WalkSimulation:
        """A step-by-step simulation (``.hop()``; the token's ``.A``, ``.B``, ``.node``); for a
        ModelProblem a :class:`lorakit.adapters.decentralized.ModelWalk` (per-site tuples)."""
        cls = _simulation_class(self, problem, WalkSimulation, "ModelWalk")
        P, pi = self.transition_matrix(problem, graph)
        return cls(self, problem, check_int("seed", seed, low=0), P, pi)

    def run(
        self,
        problem: FederatedProblem,
        hops: int,
        seeds=0,
        *,
        graph,
        log_every: int = 1,
        messages: bool = False,
        on_divergence: str = "raise",
        blowup: float = BLOWUP,
        progress: bool = False,
    ):
        """Simulate ``hops`` hops of the token per seed.

        ``problem`` is a :class:`~lorakit.problems.federated.FederatedProblem` or a
        :class:`~lorakit.adapters.ModelProblem` with clients (a peft model: every LoRA site's
        factors form the token; :mod:`lorakit.adapters.decentralized` lists the conventions).
        ``progress=True`` shows a ``tqdm.auto`` bar over the seeds (matrix scale) or over the hops
        of each seed (model scale).

        Returns the history, one row per logged hop and seed (hop 0 is the initial token):

        * ``hop``; ``node`` — where this hop's local update ran (v_{t−1} for hop t; v_0 at hop 0);
          ``to`` — the node the token was sent to; ``lost`` and ``skipped`` — this hop's transfer
          was lost / its first destination was down;
        * ``loss`` = f(W) = Σ_v π_v f_v(W) of the π-weighted global objective, ``gap`` = loss − f*_π
          (NaN when unknown), ``grad_norm_sq`` = ‖∇_A f‖² + ‖∇_B f‖² of that objective,
          ``A_norm``, ``B_norm`` (Frobenius: Assumption 5's a and b are their maxima);
        * cumulative ``communicated_params`` (floats sent), ``bytes``, ``transfers``,
          ``local_updates``, ``lost_hops``, ``skipped_nodes``; ``mismatch`` = 0 (one token, no
          factor averaging: spec §6).

        ``frame.attrs``: ``"path"`` (seed → [v_0, …, v_T], the holder after every hop, for the
        node-link view), ``"pi"`` (a list; P is :meth:`transition_matrix`), ``"diverged"``
        (seed → hop). With
        ``messages=True`` also a frame of every hop's transfer: ``seed``, ``hop``, ``src``, ``dst``,
        ``params``, ``bytes``, ``lost``, ``skipped`` (the down node first drawn, or −1) and ``down``
        (the nodes down at that hop).

        Divergence: factors that are not finite or grow 10⁶-fold in one hop, or a logged loss above
        ``blowup``·max(1, |f_0|) (default 10³; a finite number > 1), stop the seed: a
        :class:`~lorakit.DivergenceError` whose frame keeps every finished seed's rows
        (``on_divergence="raise"``), or the rows so far and ``attrs["diverged"]`` (``"stop"``). A
        model gets the token of the last logged hop that passed.
        """
        cls = _simulation_class(self, problem, WalkSimulation, "ModelWalk")
        hops = check_int("hops", hops, low=1)
        log_every = check_int("log_every", log_every, low=1)
        model = cls is not WalkSimulation
        kw = {"progress": _check_flag("progress", progress)} if model else {}
        P, pi = self.transition_matrix(problem, graph)
        if is_periodic(P):
            warnings.warn(
                "the walk is periodic (e.g. Metropolis–Hastings on an even ring): τ_mix = ∞ and "
                "Theorem 1 does not apply; transition='lazy' makes it aperiodic",
                stacklevel=2,
            )
        frame, msgs, sims = _seed_loop(
            self, problem, seeds, hops, log_every, messages, on_divergence,
            lambda seed: cls(self, problem, seed, P, pi, record=messages, **kw),
            progress=progress and not model, blowup=blowup,
        )  # fmt: skip
        frame.attrs["path"] = {sim.seed: list(sim.path) for sim in sims}
        frame.attrs["pi"] = [float(p) for p in pi]
        return (frame, msgs) if messages else frame


class WalkSimulation:
    """One seeded RW-LoRA run: the token (``A``, ``B``, optimizer ``state``) and where it is."""

    blowup = BLOWUP  # the divergence threshold (set by the seed loop)

    def __init__(self, cfg: RWLoRA, problem, seed: int, P: np.ndarray, pi, record: bool = True):
        self.cfg, self.problem, self.seed, self.record = cfg, problem, seed, record
        self.P, self.pi = P, np.asarray(pi, dtype=np.float64)
        self.N = P.shape[0]
        self.streams = Streams(seed)
        self.cum = np.cumsum(P, axis=1)
        self.node_index = [torch.tensor([v]) for v in range(self.N)]
        self.A, self.B = self.init_token()
        adamw = cfg.optimizer == "adamw"
        self.state = (
            self.zero_state(self.A, self.B) if adamw and cfg.optimizer_state == "token" else None
        )
        self.node_states: dict[int, dict] = {}
        start = cfg.start
        if start is None:
            self.node = 0
        elif start == "uniform":
            self.node = int(torch.randint(self.N, (), generator=self.streams["walk"]))
        elif start == "stationary":
            self.node = _sample(np.cumsum(self.pi), self.streams.uniform("walk"))
        else:
            self.node = check_int("start", start, low=0, high=self.N - 1)
        self.uniform_pi = bool(np.allclose(self.pi, 1.0 / self.N, rtol=0.0, atol=1e-15))
        self.weights = torch.as_tensor(
            np.array(self.pi), dtype=problem.dtype, device=problem.device
        )
        self.f_star = self.optimum()
        self.floats = self.transfer_floats()
        self.t = 0
        self.size = None  # the token's largest entry (the divergence check's scale), cached
        self.path = [self.node]
        self.communicated = self.transfers = self.local_updates = 0
        self.lost_hops = self.skipped_nodes = 0
        self.messages: list[dict] = []
        self.rows: list[dict] = []

    # -- the token (overridden at model scale: lorakit.adapters.decentralized) -------------------
    def init_token(self) -> tuple:
        """(A^(0), B^(0) = 0): Algorithm 1 line 1, A from the ``init`` stream."""
        p = self.problem
        A = _init_A(self.cfg, p, self.streams["init"])
        return A, torch.zeros(p.m, self.cfg.rank, dtype=p.dtype, device=p.device)

    def zero_state(self, A, B) -> dict:
        """A fresh AdamW state for the token (A, B)."""
        return _zero_state(A, B)

    def transfer_floats(self) -> int:
        """Floats one token transfer carries (:meth:`RWLoRA.floats_per_transfer`)."""
        return self.cfg.floats_per_transfer(self.problem.m, self.problem.n)

    def optimum(self) -> float:
        """f*_π: the problem's f* for uniform π, else the diagonal-quadratic closed form (or NaN)."""
        p = self.problem
        if self.uniform_pi:
            return p.f_star if p.f_star is not None else math.nan
        return _closed_form_optimum(p, self.pi)

    # -- one hop -------------------------------------------------------------------------------
    def local_update(self, v: int):
        """``local_steps`` simultaneous steps (7)–(8) of node v on the token; the new
        (A, B, state), leaving the token as it is."""
        cfg, p, s = self.cfg, self.problem, self.cfg.scale
        A, B = self.A, self.B
        state = self.visit_state(v)
        node = self.node_index[v]
        with torch.no_grad():
            for _ in range(cfg.local_steps):
                W = p.W0 + s * (B @ A)
                G = _local_grads(cfg, p, W[None], node, self.streams)[0]
                gA, gB = s * (B.T @ G), s * (G @ A.T)  # eq. (12), both at the same W
                A, B, state = _factor_step(cfg, A, B, gA, gB, state)
        return A, B, state

    def visit_state(self, v: int):
        """The optimizer state node v's update starts from: the token's, node v's own, or fresh."""
        cfg, state = self.cfg, self.state
        if cfg.optimizer == "adamw" and cfg.optimizer_state != "token":
            state = self.node_states.get(v) if cfg.optimizer_state == "node" else None
            state = self.zero_state(self.A, self.B) if state is None else state
        return state

    def next_node(self, u: int) -> tuple[int, int, list[int]]:
        """(v_{t+1}, the down node first drawn or −1, the nodes down this hop)."""
        v = _sample(self.cum[u], self.streams.uniform("walk"))
        if self.cfg.node_failure <= 0:
            return v, -1, []
        down = torch.rand(self.N, generator=self.streams["failure"], dtype=torch.float64)
        down = (down < self.cfg.node_failure).numpy()
        down[u] = False  # the holder is up: it has the token
        if not down[v]:
            return v, -1, np.flatnonzero(down).tolist()
        live = np.where(down, 0.0, self.P[u])
        if live.sum() <= 0:
            w = u  # every node the token could go to is down: it waits at u
        else:
            w = _sample(np.cumsum(live), self.streams.uniform("failure"))
        return w, v, np.flatnonzero(down).tolist()

    def hop(self) -> dict:
        """One hop of Algorithm 1 (lines 4–7); returns this hop's record."""
        cfg, u = self.cfg, self.node
        self.t += 1
        A, B, state = self.local_update(u)
        if self.size is None:
            self.size = _largest((self.A, self.B))
        new_size = _largest((A, B))
        problem = _finite_and_bounded(new_size, self.size)
        if problem is not None:
            raise DivergenceError(
                f"{cfg.method} diverged at hop {self.t} (seed {self.seed}, node {u}): {problem}; "
                f"the token keeps hop {self.t - 1}. Lower lr = {cfg.lr:g}: f_v is Lb²-smooth in A "
                "and La²-smooth in B (Lemma 3)",
                step=self.t,
                seed=self.seed,
                frame=pd.DataFrame(self.rows),
            )
        v, skipped, down = self.next_node(u)
        moved = v != u
        lost = moved and cfg.token_loss > 0 and self.streams.uniform("loss") < cfg.token_loss
        self.local_updates += cfg.local_steps
        sent = self.floats if moved else 0
        self.communicated += sent
        self.transfers += int(moved)
        self.skipped_nodes += int(skipped >= 0)
        if cfg.optimizer == "adamw" and cfg.optimizer_state == "node":
            self.node_states[u] = state  # a node's own state: its work is done either way
        if lost:
            # The sender re-issues the token from the copy it kept on receipt: the state before
            # its own update. This hop's update is discarded; the walk resumes at u.
            self.lost_hops += 1
        else:
            self.A, self.B, self.size = A, B, new_size
            if cfg.optimizer_state == "token":
                self.state = state
            self.node = v
        self.path.append(self.node)
        record = {"node": u, "to": v, "lost": bool(lost), "skipped": skipped >= 0}
        if self.record:
            self.messages.append(
                {"seed": self.seed, "hop": self.t, "src": u, "dst": v, "params": sent,
                 "bytes": sent * cfg.bytes_per_float, "lost": bool(lost), "skipped": skipped,
                 "down": tuple(down)}
            )  # fmt: skip
        return record

    # -- the loop ------------------------------------------------------------------------------
    def run(self, hops: int, log_every: int = 1) -> list[dict]:
        first = {"node": self.node, "to": self.node, "lost": False, "skipped": False}
        return run_logged(self, self.hop, hops, log_every, first, "hop")

    def objective(self, W: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(f(W), ∇f(W)) of f = Σ_v π_v f_v."""
        p = self.problem
        if self.uniform_pi:
            return float(p.loss(W)), p.grad(W)
        w = self.weights
        loss = float((p.client_losses(W) * w).sum())
        grad = (p.client_grads(W) * w[:, None, None]).sum(0)
        return loss, grad

    def measure(self) -> tuple[float, float, float, float]:
        """(f(W), ‖∇_A f‖² + ‖∇_B f‖², ‖A‖_F, ‖B‖_F) of the token."""
        s = self.cfg.scale
        with torch.no_grad():
            W = self.problem.W0 + s * (self.B @ self.A)
            loss, G = self.objective(W)
            gA, gB = s * (self.B.T @ G), s * (G @ self.A.T)
            grad_sq = float(gA.square().sum() + gB.square().sum())
        A_norm = float(torch.linalg.matrix_norm(self.A))
        return loss, grad_sq, A_norm, float(torch.linalg.matrix_norm(self.B))

    def log(self, record: dict) -> dict:
        loss, grad_sq, A_norm, B_norm = self.measure()
        return {
            "seed": self.seed, "hop": self.t, **record,
            "loss": loss, "gap": loss - self.f_star, "grad_norm_sq": grad_sq,
            "A_norm": A_norm, "B_norm": B_norm,
            "communicated_params": self.communicated,
            "bytes": self.communicated * self.cfg.bytes_per_float,
            "transfers": self.transfers, "local_updates": self.local_updates,
            "lost_hops": self.lost_hops, "skipped_nodes": self.skipped_nodes, "mismatch": 0.0,
        }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Reading a history
# ---------------------------------------------------------------------------------------------
def token_path(history: pd.DataFrame, seed: int | None = None) -> pd.DataFrame:
    """The token's holder after every hop, (seed, hop, node), from ``history.attrs["path"]``
    (every hop, whatever ``log_every`` was), for a node-link view of the walk."""
    paths = history.attrs.get("path")
    if not paths:
        raise ValueError("history has no token path: pass the frame RWLoRA.run returned")
    chosen = paths if seed is None else {seed: paths[seed]} if seed in paths else None
    if chosen is None:
        raise ValueError(f"seed must be one of {sorted(paths)}, got {seed!r}")
    rows = [
        {"seed": s, "hop": t, "node": int(v)}
        for s, path in chosen.items()
        for t, v in enumerate(path)
    ]
    return pd.DataFrame(rows)


def visit_frequencies(history: pd.DataFrame, *, burn_in: int = 0) -> pd.DataFrame:
    """How often each node ran the token's update, per seed: (seed, node, visits, frequency, pi).

    Visits are the holders v_0, …, v_{T−1} of hops 1..T (from ``attrs["path"]`` when present, else
    the ``node`` column of a history logged every hop), skipping the first ``burn_in`` hops. By the
    ergodic theorem ``frequency`` → π_v (spec §9.2 item 6).
    """
    burn_in = check_int("burn_in", burn_in, low=0)
    paths = history.attrs.get("path")
    if paths:
        visited = {s: np.asarray(path[:-1], dtype=int) for s, path in paths.items()}
    else:
        if "node" not in history or "hop" not in history:
            raise ValueError("history needs a 'node' column or attrs['path'] (RWLoRA.run's frame)")
        body = history[history["hop"] >= 1]
        visited = {s: g.sort_values("hop")["node"].to_numpy() for s, g in body.groupby("seed")}
    pi = history.attrs.get("pi")
    N = len(pi) if pi else 1 + max(int(v.max()) for v in visited.values() if v.size)
    rows = []
    for s, nodes in visited.items():
        nodes = nodes[burn_in:]
        counts = np.bincount(nodes, minlength=N)
        total = max(int(counts.sum()), 1)
        for v in range(N):
            rows.append(
                {"seed": s, "node": v, "visits": int(counts[v]), "frequency": counts[v] / total,
                 "pi": pi[v] if pi else math.nan}
            )  # fmt: skip
    return pd.DataFrame(rows)
