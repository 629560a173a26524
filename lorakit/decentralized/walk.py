"""RW-LoRA: one LoRA token walks the communication graph (RW-LoRA Algorithm 1; spec ``rw_lora.md`` §4).

The token, an adapter (B, A) (:mod:`lorakit.decentralized.simulation`), sits at node v_t of a
connected graph whose nodes are the problem's clients. Each hop, node v_t takes ``local_steps``
steps on its own f_{v_t}, both factor gradients at the same W = W0 + s·BA (eqs. (7)–(8), (12)),
then draws v_{t+1} ~ P_{v_t,·} and sends the token there through the upload ``compressor``.

P is Metropolis–Hastings for a target π (``"mh"``, spec §4.4), laziness·I + (1 − laziness)·MH
(``"lazy"``: aperiodic even on an even ring, §9.1), the Metropolis weights (``"metropolis"``,
uniform π) or a given row-stochastic matrix on the graph. The objective is f = Σ_v π_v f_v (eq. (5)).

A transfer sends one adapter (the compressor's payload) and, with ``optimizer_state="token"``,
AdamW's state (2d + 1 floats); a self-loop sends nothing (spec §4.5, §10.5). Failures (not in the
paper): with ``node_failure`` a step drawn onto a down node is *skipped*, the token going to a node
drawn from P_{v_t,·} restricted to the live nodes (or staying); with ``token_loss`` a lost transfer
is re-issued by the sender from its copy, discarding that hop's update (its cost still counts).

Streams (:class:`lorakit.rng.Streams`): ``init``, ``walk`` (the start when random, then one uniform
per hop: the same path with or without failures, at both scales), ``failure``, ``loss``,
``compression``, ``data``, ``noise``, ``model``. An update whose factors are not finite or grow
10⁶-fold raises before it is kept (divergence: see :mod:`lorakit.divergence`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .._validation import check_choice, check_int, check_real
from ..divergence import BLOWUP
from ..local import train
from ..tree import leaves, sq_norm
from . import markov, simulation
from .simulation import NodeConfig, Simulation

__all__ = [
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


@dataclass(frozen=True, kw_only=True)
class RWLoRA(NodeConfig):
    """An RW-LoRA configuration (Algorithm 1); :meth:`run` simulates it on a graph of N nodes.

    Parameters
    ----------
    rank, gamma, local_steps, optimizer, alpha, init, init_std, estimator, compressor,
    bytes_per_float, bytes_per_index, optimizer_kwargs : as
        :class:`~lorakit.decentralized.simulation.NodeConfig`.
    transition : ``"mh"``, ``"lazy"``, ``"metropolis"`` (module docstring) or an N×N
        row-stochastic matrix supported on the graph's edges and the diagonal.
    pi : the target π: None (uniform, or a given matrix's stationary distribution),
        ``"uniform"``, ``"sizes"`` (π_v ∝ finite-sum node v's sample count) or N positive weights.
    laziness : the self-loop weight of ``"lazy"``, in [0, 1) (½ gives (I + P)/2).
    optimizer_state : where AdamW's state lives: ``"token"`` (it travels, and is counted),
        ``"node"`` (each node keeps its own) or ``"reset"`` (fresh at every visit); spec §12.
    start : v_0: None (node 0), a node, ``"uniform"`` or ``"stationary"`` (from π).
    node_failure, token_loss : failure probabilities in [0, 1) (module docstring).
    """

    transition: str | np.ndarray = "mh"
    pi: str | np.ndarray | None = None
    laziness: float = 0.5
    optimizer_state: str = "token"
    start: int | str | None = None
    node_failure: float = 0.0
    token_loss: float = 0.0
    method: str = "rw_lora"
    rule = "transition"

    def __post_init__(self):
        super().__post_init__()
        set_ = object.__setattr__
        if isinstance(self.transition, str):
            check_choice("transition", self.transition, TRANSITIONS)
        else:
            P = simulation.square_matrix("transition", self.transition)
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
        uniform = self.pi is None or (isinstance(self.pi, str) and self.pi == "uniform")
        if isinstance(self.transition, str) and self.transition == "metropolis" and not uniform:
            raise ValueError(
                "transition='metropolis' is doubly stochastic (uniform π); use 'mh' or 'lazy' "
                "for another pi"
            )
        check_choice("optimizer_state", self.optimizer_state, OPTIMIZER_STATES)
        if isinstance(self.start, str):
            check_choice("start", self.start, STARTS)
        elif self.start is not None:
            set_(self, "start", check_int("start", self.start, low=0))
        # Failure probability 1 is refused: every other node down keeps the token at its start,
        # and a token lost on every transfer discards every update (the run would be a no-op).
        for name in ("laziness", "node_failure", "token_loss"):
            value = check_real(name, getattr(self, name), low=0.0, high=1.0, high_open=True)
            set_(self, name, value)

    @property
    def state_travels(self) -> bool:
        """True when AdamW's state travels with the token (``optimizer_state="token"``)."""
        return self.optimizer == "adamw" and self.optimizer_state == "token"

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
            return np.asarray(markov.pi_from_sizes(sizes), dtype=np.float64)
        uniform = self.pi == "uniform" or isinstance(self.transition, str)
        return np.full(N, 1.0 / N) if uniform else None

    def transition_matrix(self, problem, graph) -> tuple[np.ndarray, np.ndarray]:
        """(P, π) on ``graph``, checked by :func:`lorakit.decentralized.markov.validate_chain`."""
        G, adjacency = simulation.check_graph(graph, problem)
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
                pi = markov.stationary_distribution(P)
        elif self.transition == "metropolis":
            P = np.asarray(markov.metropolis_weights(G), dtype=np.float64)
        else:
            P = np.asarray(markov.metropolis_hastings(G, pi), dtype=np.float64)
            if self.transition == "lazy":
                P = np.asarray(markov.lazy(P, self.laziness), dtype=np.float64)
        markov.validate_chain(P, G, pi)
        return P, pi

    def run_chain(self, problem, graph) -> tuple[np.ndarray, np.ndarray]:
        """(P, π) of a run (:meth:`transition_matrix`), with a warning when the walk is periodic."""
        P, pi = self.transition_matrix(problem, graph)
        if markov.is_periodic(P):
            warnings.warn(
                "the walk is periodic (e.g. Metropolis–Hastings on an even ring): τ_mix = ∞ and "
                "Theorem 1 does not apply; transition='lazy' makes it aperiodic",
                stacklevel=3,
            )
        return P, pi

    def simulations(self, problem, graph, record: bool = True, run: bool = False):
        """``make(seed)``: a :class:`WalkSimulation` per seed (a ``run``'s warns when periodic)."""
        P, pi = (self.run_chain if run else self.transition_matrix)(problem, graph)
        return lambda seed: WalkSimulation(self, problem, seed, P, pi, record)

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
        """Simulate ``hops`` hops per seed (``progress``: a bar; divergence: see
        :mod:`lorakit.divergence`). Returns one row per logged hop and seed (hop 0: the start):
        ``hop``; ``node`` (where the hop's update ran), ``to`` (where the token was sent),
        ``lost``, ``skipped`` (the transfer was lost / its first destination was down); ``loss`` =
        Σ_v π_v f_v(W), ``gap`` = loss − f*_π (NaN when unknown), ``grad_norm_sq`` = ‖∇_A f‖² +
        ‖∇_B f‖², ``A_norm``, ``B_norm`` (Frobenius over every site; Assumption 5's a, b are their
        maxima); cumulative ``communicated_params`` (floats), ``bytes``, ``transfers``,
        ``local_updates``, ``lost_hops``, ``skipped_nodes``; ``mismatch`` = 0 (spec §6).
        ``frame.attrs``: ``"path"`` (seed → [v_0, …, v_T], the holder after every hop), ``"pi"``,
        ``"diverged"``. With ``messages=True`` also a frame of every hop's transfer: ``seed``,
        ``hop``, ``src``, ``dst``, ``params``, ``bytes``, ``lost``, ``skipped`` (the down node first
        drawn, or −1) and ``down`` (the nodes down at that hop).
        """

        options = (log_every, on_divergence, blowup, progress, messages)
        return simulation.run_simulations(self, problem, graph, "hops", hops, seeds, *options)


class WalkSimulation(Simulation):
    """One seeded RW-LoRA run: the token (``B``, ``A``, optimizer ``state``) and where it is."""

    unit = "hop"

    def __init__(self, cfg: RWLoRA, problem, seed: int, P: np.ndarray, pi, record: bool = True):
        super().__init__(cfg, problem, seed, record)
        self.P, self.pi = P, np.asarray(pi, dtype=np.float64)
        self.pi_weights = torch.tensor(self.pi)  # the objective's client weights
        self.cum = np.cumsum(P, axis=1)
        self.d = sum(x.numel() for x in leaves(self.B) + leaves(self.A))
        self.node_states: dict[int, dict | None] = {}
        start = cfg.start
        if start == "uniform":
            start = int(torch.randint(self.N, (), generator=self.streams["walk"]))
        elif start == "stationary":
            start = _sample(np.cumsum(self.pi), self.streams.uniform("walk"))
        self.node = check_int("start", start or 0, low=0, high=self.N - 1)  # None: node 0
        f_star = problem.weighted_f_star(self.pi)
        self.f_star = math.nan if f_star is None else f_star
        self.size = None  # the token's largest entry (the divergence check's scale), cached
        self.path = [self.node]
        self.transfers = self.lost_hops = self.skipped_nodes = 0

    def visit_state(self, v: int):
        """The optimizer state node v's update starts from: the token's, node v's own, or fresh."""
        where = self.cfg.optimizer_state
        return self.state if where == "token" else self.node_states.get(v)

    def next_node(self, u: int) -> tuple[int, int, list[int]]:
        """(v_{t+1}, the down node first drawn or −1, the nodes down this hop)."""
        v = _sample(self.cum[u], self.streams.uniform("walk"))
        down = self.down_nodes(u)
        listed = [] if down is None else np.flatnonzero(down).tolist()
        if down is None or not down[v]:
            return v, -1, listed
        live = np.where(down, 0.0, self.P[u])
        if live.sum() <= 0:  # every node the token could go to is down: it waits at u
            return u, v, listed
        return _sample(np.cumsum(live), self.streams.uniform("failure")), v, listed

    def down_nodes(self, u: int) -> np.ndarray | None:
        """The nodes down this hop (a mask; None: none can be): each but the holder u with
        probability ``node_failure`` (``failure`` stream)."""
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
        # The destination first: the walk's streams are not the update's, so the order changes no
        # draw, and the holder then knows whether it sends.
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
        self.lost_hops += int(lost)
        if not lost:  # else the sender re-issues its copy from before its update: the walk stays
            self.B, self.A, self.size, self.node = B, A, new_size, v
            if cfg.optimizer_state == "token":
                self.state = state
        self.path.append(self.node)
        record = {"node": u, "to": v, "lost": bool(lost), "skipped": skipped >= 0}
        if self.record:
            message = dict(seed=self.seed, hop=self.t, src=u, dst=v, params=floats, bytes=sent)
            message.update(lost=bool(lost), skipped=skipped, down=tuple(down))
            self.messages.append(message)
        return record

    def visit(self, u: int, send: bool) -> tuple:
        """Node u's local steps, :meth:`check_token` and (``send``) the upload compressor: (B, A,
        optimizer state, the largest entry sent, payload or None). Ray actors override this alone."""
        args = (self.W0, self.B, self.A, self.scalings, u, self.local, self.streams)
        B, A, state = train(self.problem, *args, state=self.visit_state(u))
        new_size = simulation.largest(B, A)
        self.check_token(u, new_size)
        payload = None
        if send:
            B, A, payload = simulation.compress_factors(self.cfg.compressor, B, A, self.streams)
            if not self.cfg.compressor.is_identity:
                new_size = simulation.largest(B, A)
        return B, A, state, new_size, payload

    def check_token(self, u: int, new_size: float) -> None:
        """Raise :class:`~lorakit.divergence.DivergenceError` when node u's update made the
        token's largest entry ``new_size`` non-finite or 10⁶-fold its last one."""
        if self.size is None:
            self.size = simulation.largest(self.B, self.A)
        trouble = simulation.factor_trouble(new_size, self.size)
        if trouble is not None:
            raise self.diverged(
                f"at hop {self.t} (seed {self.seed}, node {u}): {trouble}; the token keeps hop "
                f"{self.t - 1}. f_v is Lb²-smooth in A and La²-smooth in B (Lemma 3)"
            )

    def token(self) -> tuple:
        """The token's factors (B, A) as tensors here (a walk on Ray actors fetches them)."""
        return self.B, self.A

    def first_record(self) -> dict:
        return {"node": self.node, "to": self.node, "lost": False, "skipped": False}

    def result(self, B, A) -> tuple:
        return B, A  # a model keeps the token

    @staticmethod
    def annotate(frame, sims) -> None:
        frame.attrs["path"] = {sim.seed: list(sim.path) for sim in sims}
        frame.attrs["pi"] = [float(p) for p in sims[0].pi]

    def log(self, record: dict) -> dict:
        """The row of the current token: f = Σ_v π_v f_v, its factor-gradient norm², ‖A‖, ‖B‖."""
        B, A = self.token()
        loss, grad_sq = self.objective(B, A, self.pi_weights)
        row = {"seed": self.seed, "hop": self.t, **record, "loss": loss, "gap": loss - self.f_star}
        row["grad_norm_sq"] = grad_sq
        row["A_norm"], row["B_norm"] = math.sqrt(sq_norm(A)), math.sqrt(sq_norm(B))
        row["communicated_params"] = self.communicated
        counters = ("bytes", "transfers", "local_updates", "lost_hops", "skipped_nodes")
        return {**row, **{name: getattr(self, name) for name in counters}, "mismatch": 0.0}


def token_path(history: pd.DataFrame, seed: int | None = None) -> pd.DataFrame:
    """The token's holder after every hop, (seed, hop, node), from ``history.attrs["path"]``
    (every hop, whatever ``log_every`` was), for a node-link view of the walk."""
    paths = history.attrs.get("path")
    if not paths:
        raise ValueError("history has no token path: pass the frame RWLoRA.run returned")
    chosen = paths if seed is None else {seed: paths[seed]} if seed in paths else None
    if chosen is None:
        raise ValueError(f"seed must be one of {sorted(paths)}, got {seed!r}")
    rows = [(s, t, int(v)) for s, path in chosen.items() for t, v in enumerate(path)]
    return pd.DataFrame(rows, columns=["seed", "hop", "node"])


def visit_frequencies(history: pd.DataFrame, *, burn_in: int = 0) -> pd.DataFrame:
    """How often each node ran the token's update, per seed: (seed, node, visits, frequency, pi),
    over the holders of hops ``burn_in`` + 1, … (``attrs["path"]``, else the ``node`` column of a
    history logged every hop). By the ergodic theorem ``frequency`` → π_v (spec §9.2 item 6)."""
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
        counts = np.bincount(nodes[burn_in:], minlength=N)[:N]
        total = max(int(counts.sum()), 1)
        rows += [(s, v, int(c), c / total, pi[v] if pi else math.nan) for v, c in enumerate(counts)]
    return pd.DataFrame(rows, columns=["seed", "node", "visits", "frequency", "pi"])
