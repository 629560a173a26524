"""RW-LoRA: one LoRA token walks the communication graph (RW-LoRA Algorithm 1; spec ``rw_lora.md`` §4).

A single adapter (B, A) over the frozen weights W0 — the *token* — sits at node v_t of a connected
graph of N nodes, the N clients of a problem (a
:class:`~lorakit.problems.federated.FederatedProblem`, B ∈ ℝ^{m×r}, A ∈ ℝ^{r×n}; or a peft
``ModelProblem`` split into N clients, one (B_l, A_l) per LoRA site). Each hop:

1. node v_t forms W^(t) = W0 + s·B^(t)A^(t) (s = α/r; the paper has no scaling, α = r gives s = 1;
   a model uses each site's peft scaling) and takes ``local_steps`` steps on its own objective
   f_{v_t} — the simultaneous (Jacobi) update of eqs. (7)–(8), both gradients at the same W
   (Lemma 1, eq. (12)):

       ∇_A = s·Bᵀ ∇f̃_v(W),   ∇_B = s·∇f̃_v(W) Aᵀ

   (:func:`lorakit.local.train`: the chain rule on a matrix problem, autograd through peft on a
   model, so LoRA dropout acts as in training);
2. the next node is drawn, v_{t+1} ~ P_{v_t,·}, and the token (the factors, plus the optimizer
   state when it travels) is sent there, through the upload ``compressor``.

The walk's transition matrix is Metropolis–Hastings for a target π (``"mh"``, spec §4.4), its lazy
version (I + P)/2 or more generally laziness·I + (1 − laziness)·P (``"lazy"``: aperiodic even on an
even ring, where plain MH is the periodic simple random walk, spec §9.1), the Metropolis weights of
the gossip literature (``"metropolis"``, uniform π), or any row-stochastic matrix supported on the
graph. The objective is f = E_{v∼π} f_v, eq. (5): the history's ``loss`` is the π-weighted mean of
the node losses Σ_v π_v f_v(W), and ``gap`` is loss − f*_π, with f*_π the problem's f* when π is
uniform and, for diagonal-quadratic nodes, the closed form
(:meth:`~lorakit.problems.federated.FederatedProblem.weighted_f_star`) otherwise (NaN when
unknown, as on a model). On a model, node v owns the rows ``clients[v]`` and f_v is their mean
loss; π = ``"sizes"`` weighs the nodes by their row counts.

Communication (spec §4.5, §10.5). A transfer sends one adapter, d = Σ_l r(m_l + n_l) floats
(peft's adapter state dict), however many nodes there are; with ``optimizer="adamw"`` and
``optimizer_state="token"`` the optimizer's ``state_dict()`` — two moment buffers and the step
counter — travels too, 3d + 1 floats. The adapter goes through the ``compressor``
(:mod:`lorakit.decentralized.simulation`: its ``payload(d)`` gives the floats and indices sent; the
optimizer state is sent as it is), and the next node trains the compressed token. A self-loop (the
walk stays put: lazy chains, Metropolis self-weights, a token with no live neighbour) sends
nothing. Every hop is ``local_steps`` local updates.

Failures (options; the paper has none):

* ``node_failure`` — at every hop each node other than the token's holder is down independently
  with this probability. A walk step drawn onto a down node is *skipped*: the token goes instead to
  a node drawn from P_{v_t,·} restricted to the live nodes (and stays at v_t when every node of the
  row's support is down). No work is lost: only the skipped destination is counted.
* ``token_loss`` — a transfer is lost with this probability. Every node keeps the token it
  received until the next node has it; the sender re-issues the token from that copy — the state
  *before* its own update — so the lost hop's update is discarded (at most one hop's work is lost,
  its bytes and local updates still count) and the walk resumes from the sender.

Randomness (:class:`lorakit.rng.Streams`): ``init`` (A's draw, site by site), ``walk`` (the start
when random, and exactly one uniform per hop for the next node, so runs with and without failures
— and at both scales — use the same draws hop by hop), ``failure`` (down nodes and rerouting),
``loss`` (lost transfers), ``compression``, ``data`` (minibatches), ``noise`` (additive gradient
noise: ξ with i.i.d. N(0, σ²/D) entries, D = Σ_l m_l n_l, so E‖ξ‖²_F = σ², the variance of
Assumption 4 for exact local gradients), ``model`` (a model's dropout).

A diverging update raises :class:`~lorakit.divergence.DivergenceError` before it is kept: the
token's last good state is untouched and ``error.frame`` holds the rows logged so far. Every seed
starts from ``problem.reset()``; afterwards a model holds the last seed's token in its adapter (its
base weights unchanged), after a divergence the token of the last logged hop that passed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .._validation import check_choice, check_int, check_real
from ..divergence import BLOWUP, check_run
from ..local import init_adapter, train
from ..tree import leaves, sq_norm
from .markov import (
    is_periodic,
    lazy,
    metropolis_hastings,
    metropolis_weights,
    pi_from_sizes,
    stationary_distribution,
    validate_chain,
)
from .simulation import (
    INITS,
    OPTIMIZERS,
    NodeConfig,
    Simulation,
    check_graph,
    check_problem,
    factor_trouble,
    largest,
    run_simulations,
    square_matrix,
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
OPTIMIZER_STATES = ("token", "node", "reset")


def _sample(cum: np.ndarray, u: float) -> int:
    """Inverse-CDF draw from cumulative weights (never a zero-weight entry)."""
    return min(int(np.searchsorted(cum, u * cum[-1], side="right")), cum.size - 1)


# ---------------------------------------------------------------------------------------------
# RW-LoRA
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RWLoRA(NodeConfig):
    """An RW-LoRA configuration (Algorithm 1); :meth:`run` simulates it on a graph of N nodes.

    Parameters
    ----------
    rank, gamma, local_steps, optimizer, alpha, init, init_std, estimator, compressor,
    bytes_per_float, bytes_per_index, optimizer_kwargs : how a node trains and what a transfer
        costs (:class:`~lorakit.decentralized.simulation.NodeConfig`); ``lr`` is ``gamma``'s
        deprecated name.
    transition : ``"mh"`` (Metropolis–Hastings for π, spec §4.4), ``"lazy"`` (laziness·I +
        (1 − laziness)·MH), ``"metropolis"`` (Metropolis weights 1/(1 + max(d_u, d_v)); uniform π)
        or an N×N row-stochastic matrix supported on the graph's edges and the diagonal.
    pi : the target distribution: None (uniform, or for a given matrix its stationary
        distribution), ``"uniform"``, ``"sizes"`` (π_v ∝ the number of samples of finite-sum node v)
        or N positive weights (normalised). It weighs the objective f = Σ_v π_v f_v (eq. (5)).
    laziness : the self-loop weight of ``"lazy"``, in [0, 1) (½ gives (I + P)/2).
    optimizer_state : where AdamW's state lives: ``"token"`` (it travels, and is counted),
        ``"node"`` (each node keeps its own) or ``"reset"`` (fresh at every visit). Spec §12 item 4.
    start : v_0: None (node 0), a node, ``"uniform"`` or ``"stationary"`` (drawn from π) from the
        ``walk`` stream.
    node_failure, token_loss : failure probabilities in [0, 1) (module docstring; 1 would keep the
        token at its start / discard every update, so it is refused).
    """

    transition: str | np.ndarray = "mh"
    pi: str | np.ndarray | None = None
    laziness: float = 0.5
    optimizer_state: str = "token"
    start: int | str | None = None
    node_failure: float = 0.0
    token_loss: float = 0.0
    method: str = "rw_lora"

    def __post_init__(self):
        super().__post_init__()
        set_ = object.__setattr__
        if isinstance(self.transition, str):
            check_choice("transition", self.transition, TRANSITIONS)
        else:
            P = square_matrix("transition", self.transition)
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

    def describe(self) -> dict:
        return {
            "method": self.method,
            "rank": self.rank,
            "transition": self.transition if isinstance(self.transition, str) else "custom",
            "optimizer": self.optimizer,
            "estimator": str(self.estimator),
            "local_steps": self.local_steps,
        }

    @property
    def state_travels(self) -> bool:
        """True when AdamW's state travels with the token (``optimizer_state="token"``)."""
        return self.optimizer == "adamw" and self.optimizer_state == "token"

    # -- the chain -----------------------------------------------------------------------------
    def target(self, problem, N: int) -> np.ndarray | None:
        """π as configured (None: to be read off a given transition matrix)."""
        if isinstance(self.pi, np.ndarray):
            if self.pi.size != N:
                raise ValueError(f"pi has {self.pi.size} entries; the graph has N = {N} nodes")
            return np.asarray(self.pi)
        if self.pi == "sizes":
            sizes = [problem.client_size(v) for v in range(problem.M)]
            if any(s is None for s in sizes):
                raise ValueError("pi='sizes' needs finite-sum nodes (every client's n_samples)")
            return np.asarray(pi_from_sizes(sizes), dtype=np.float64)
        if self.pi == "uniform" or isinstance(self.transition, str):
            return np.full(N, 1.0 / N)
        return None

    def transition_matrix(self, problem, graph) -> tuple[np.ndarray, np.ndarray]:
        """(P, π) for ``graph``: built (``"mh"``, ``"lazy"``, ``"metropolis"``) or the given matrix,
        checked with :func:`lorakit.decentralized.markov.validate_chain` (rows sum to 1, support on
        the graph and the diagonal, πP = π)."""
        G, adjacency = check_graph(graph, problem)
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

    def run_chain(self, problem, graph) -> tuple[np.ndarray, np.ndarray]:
        """(P, π) of a run (:meth:`transition_matrix`), with a warning when the walk is periodic."""
        P, pi = self.transition_matrix(problem, graph)
        if is_periodic(P):
            warnings.warn(
                "the walk is periodic (e.g. Metropolis–Hastings on an even ring): τ_mix = ∞ and "
                "Theorem 1 does not apply; transition='lazy' makes it aperiodic",
                stacklevel=3,
            )
        return P, pi

    def simulator(self, problem, graph, seed: int = 0) -> WalkSimulation:
        """A step-by-step simulation (``.hop()``; the token's ``.B``, ``.A`` and ``.node``)."""
        check_problem(self, problem)
        P, pi = self.transition_matrix(problem, graph)
        return WalkSimulation(self, problem, check_int("seed", seed, low=0), P, pi)

    def run(
        self,
        problem,
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
        ``lorakit.adapters.ModelProblem`` with clients (every LoRA site's factors form the token).
        ``progress=True`` shows a ``tqdm.auto`` bar over the hops of each seed.

        Returns the history, one row per logged hop and seed (hop 0 is the initial token):

        * ``hop``; ``node`` — where this hop's local update ran (v_{t−1} for hop t; v_0 at hop 0);
          ``to`` — the node the token was sent to; ``lost`` and ``skipped`` — this hop's transfer
          was lost / its first destination was down;
        * ``loss`` = f(W) = Σ_v π_v f_v(W) of the π-weighted global objective, ``gap`` = loss − f*_π
          (NaN when unknown), ``grad_norm_sq`` = ‖∇_A f‖² + ‖∇_B f‖² of that objective,
          ``A_norm``, ``B_norm`` (Frobenius over every site: Assumption 5's a and b are their
          maxima);
        * cumulative ``communicated_params`` (floats sent), ``bytes`` (floats and indices),
          ``transfers``, ``local_updates``, ``lost_hops``, ``skipped_nodes``; ``mismatch`` = 0 (one
          token, no factor averaging: spec §6).

        ``frame.attrs``: ``"path"`` (seed → [v_0, …, v_T], the holder after every hop, for the
        node-link view), ``"pi"`` (a list; P is :meth:`transition_matrix`), ``"diverged"``
        (seed → hop). With ``messages=True`` also a frame of every hop's transfer: ``seed``,
        ``hop``, ``src``, ``dst``, ``params``, ``bytes``, ``lost``, ``skipped`` (the down node
        first drawn, or −1) and ``down`` (the nodes down at that hop).

        Divergence: factors that are not finite or grow 10⁶-fold in one hop, or a logged loss above
        ``blowup``·max(1, |f_0|) (default 10³; a finite number > 1), stop the seed: a
        :class:`~lorakit.DivergenceError` whose frame keeps every finished seed's rows
        (``on_divergence="raise"``), or the rows so far and ``attrs["diverged"]`` (``"stop"``). A
        model gets the token of the last logged hop that passed.
        """
        check_problem(self, problem)
        hops, seeds, log_every, blowup = check_run(
            "hops", hops, seeds, log_every, on_divergence, blowup, messages=messages,
            progress=progress,
        )  # fmt: skip
        P, pi = self.run_chain(problem, graph)
        frame, msgs, sims = run_simulations(
            self, seeds, hops, lambda seed: WalkSimulation(self, problem, seed, P, pi, messages),
            log_every=log_every, on_divergence=on_divergence, blowup=blowup, progress=progress,
        )  # fmt: skip
        frame.attrs["path"] = {sim.seed: list(sim.path) for sim in sims}
        frame.attrs["pi"] = [float(p) for p in pi]
        return (frame, msgs) if messages else frame


class WalkSimulation(Simulation):
    """One seeded RW-LoRA run: the token (``B``, ``A``, optimizer ``state``) and where it is."""

    unit = "hop"

    def __init__(self, cfg: RWLoRA, problem, seed: int, P: np.ndarray, pi, record: bool = True):
        super().__init__(cfg, problem, seed, record)
        self.P, self.pi = P, np.asarray(pi, dtype=np.float64)
        self.pi_weights = torch.tensor(self.pi)  # the objective's client weights
        self.N = P.shape[0]
        self.cum = np.cumsum(P, axis=1)
        self.B, self.A = init_adapter(
            problem, cfg.rank, self.streams["init"], cfg.init, cfg.init_std
        )
        self.d = sum(x.numel() for x in leaves(self.B) + leaves(self.A))
        self.state = None  # the token's optimizer state_dict (None: fresh)
        self.node_states: dict[int, dict | None] = {}
        start = cfg.start
        if start is None:
            self.node = 0
        elif start == "uniform":
            self.node = int(torch.randint(self.N, (), generator=self.streams["walk"]))
        elif start == "stationary":
            self.node = _sample(np.cumsum(self.pi), self.streams.uniform("walk"))
        else:
            self.node = check_int("start", start, low=0, high=self.N - 1)
        f_star = problem.weighted_f_star(self.pi)
        self.f_star = math.nan if f_star is None else f_star
        self.size = None  # the token's largest entry (the divergence check's scale), cached
        self.path = [self.node]
        self.transfers = self.local_updates = 0
        self.lost_hops = self.skipped_nodes = 0

    def visit_state(self, v: int):
        """The optimizer state node v's update starts from: the token's, node v's own, or fresh."""
        where = self.cfg.optimizer_state
        return (
            self.state if where == "token" else self.node_states.get(v) if where == "node" else None
        )

    def next_node(self, u: int) -> tuple[int, int, list[int]]:
        """(v_{t+1}, the down node first drawn or −1, the nodes down this hop)."""
        v = _sample(self.cum[u], self.streams.uniform("walk"))
        down = self.down_nodes(u)
        if down is None:
            return v, -1, []
        if not down[v]:
            return v, -1, np.flatnonzero(down).tolist()
        live = np.where(down, 0.0, self.P[u])
        if live.sum() <= 0:
            w = u  # every node the token could go to is down: it waits at u
        else:
            w = _sample(np.cumsum(live), self.streams.uniform("failure"))
        return w, v, np.flatnonzero(down).tolist()

    def down_nodes(self, u: int) -> np.ndarray | None:
        """The nodes down this hop as a boolean mask (None: no node can be down): each node other
        than the holder u is down independently with probability ``node_failure`` (``failure``
        stream; the holder is up: it has the token). A walk on other processes adds the nodes it
        finds dead (:mod:`lorakit.distributed.ray_walk`)."""
        if self.cfg.node_failure <= 0:
            return None
        down = torch.rand(self.N, generator=self.streams["failure"], dtype=torch.float64)
        down = (down < self.cfg.node_failure).numpy()
        down[u] = False
        return down

    def hop(self) -> dict:
        """One hop of Algorithm 1 (lines 4–7); returns this hop's record."""
        cfg, u = self.cfg, self.node
        self.t += 1
        # The destination is drawn first: the walk's streams (walk, failure, loss) are not the
        # update's (data, noise, compression), so the order changes no draw, and the holder then
        # knows whether it sends.
        v, skipped, down = self.next_node(u)
        moved = v != u
        lost = moved and cfg.token_loss > 0 and self.streams.uniform("loss") < cfg.token_loss
        B, A, state, new_size, payload = self.visit(u, moved)
        floats = sent = 0
        if moved:  # the adapter through the compressor; AdamW's travelling state as it is
            floats, sent = self.cost(payload, 2 * self.d + 1 if cfg.state_travels else 0)
        self.local_updates += cfg.local_steps
        self.communicated += floats
        self.bytes += sent
        self.transfers += int(moved)
        self.skipped_nodes += int(skipped >= 0)
        if cfg.optimizer_state == "node":
            self.node_states[u] = state  # a node's own state: its work is done either way
        if lost:
            # The sender re-issues the token from the copy it kept on receipt: the state before
            # its own update. This hop's update is discarded; the walk resumes at u.
            self.lost_hops += 1
        else:
            self.B, self.A, self.size = B, A, new_size
            if cfg.optimizer_state == "token":
                self.state = state
            self.node = v
        self.path.append(self.node)
        if self.record:
            self.messages.append(
                {"seed": self.seed, "hop": self.t, "src": u, "dst": v, "params": floats,
                 "bytes": sent, "lost": bool(lost), "skipped": skipped, "down": tuple(down)}
            )  # fmt: skip
        return {"node": u, "to": v, "lost": bool(lost), "skipped": skipped >= 0}

    def visit(self, u: int, send: bool) -> tuple:
        """Node u's part of a hop: its local steps on the token (:func:`lorakit.local.train`, from
        the optimizer state :meth:`visit_state` gives), the divergence test (:meth:`check_token`)
        and, when the token moves on (``send``), the token through the upload compressor.

        Returns (B, A, the optimizer state after the steps, the largest entry of the token as
        sent, the compressor's payload or None). A walk on other processes overrides this alone
        (:class:`lorakit.distributed.ray_walk.RayWalkSimulation`: node u's actor does it)."""
        B, A, state = train(
            self.problem, self.W0, self.B, self.A, self.scalings, u, self.local, self.streams,
            state=self.visit_state(u),
        )  # fmt: skip
        new_size = largest(B, A)
        self.check_token(u, new_size)
        payload = None
        if send:
            B, A, payload = self.compress(B, A)
            if not self.cfg.compressor.is_identity:
                new_size = largest(B, A)
        return B, A, state, new_size, payload

    def check_token(self, u: int, new_size: float) -> None:
        """Raise :class:`~lorakit.divergence.DivergenceError` when node u's update made the token's
        largest entry ``new_size`` non-finite or 10⁶-fold its last one (before it is kept)."""
        if self.size is None:
            self.size = largest(self.B, self.A)
        trouble = factor_trouble(new_size, self.size)
        if trouble is not None:
            raise self.diverged(
                f"at hop {self.t} (seed {self.seed}, node {u}): {trouble}; the token keeps hop "
                f"{self.t - 1}. f_v is Lb²-smooth in A and La²-smooth in B (Lemma 3)"
            )

    def token(self) -> tuple:
        """The token's factors (B, A) as tensors here (a walk on other processes fetches them)."""
        return self.B, self.A

    # -- the loop (lorakit.decentralized.simulation.Simulation) ---------------------------------
    def step(self) -> dict:
        return self.hop()

    def first_record(self) -> dict:
        return {"node": self.node, "to": self.node, "lost": False, "skipped": False}

    def result(self, B, A) -> tuple:
        """The adapter a model keeps: the token."""
        return B, A

    def log(self, record: dict) -> dict:
        """The row of the current token: f = Σ_v π_v f_v, its factor-gradient norm², ‖A‖, ‖B‖."""
        B, A = self.token()
        loss, G = self.objective(self.adapted(B, A), self.pi_weights)
        grad_sq = self.factor_grad_sq(G, B, A)
        return {
            "seed": self.seed, "hop": self.t, **record,
            "loss": loss, "gap": loss - self.f_star, "grad_norm_sq": grad_sq,
            "A_norm": math.sqrt(sq_norm(A)), "B_norm": math.sqrt(sq_norm(B)),
            "communicated_params": self.communicated, "bytes": self.bytes,
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
