"""Gossip Dec-LoRA: every node keeps its own factors and averages them with its neighbours'
(the baseline of RW-LoRA, [4]/[14]; spec ``rw_lora.md`` §5).

Node i holds (A_i, B_i), all initialised identically (A ~ N(0, σ_init²) or Kaiming-uniform, one
draw shared by every node; B = 0). A round:

1. every node takes ``local_steps`` simultaneous steps on its own objective f_i from its own
   iterate W_i = W0 + s·B_i A_i (∇_A = s·B_iᵀ∇f_i, ∇_B = s·∇f_i A_iᵀ; batched over the nodes with
   :meth:`~lorakit.problems.federated.FederatedProblem.local_grads`);
2. the nodes exchange factors with their neighbours and mix them with a symmetric doubly
   stochastic matrix M supported on the graph and the diagonal:

       A_i ← Σ_j M_ij A_j,   B_i ← Σ_j M_ij B_j.

Mixing matrices: ``"metropolis"`` (default; Metropolis weights M_ij = 1/(1 + max(d_i, d_j)), the
rest on the diagonal, :func:`lorakit.decentralized.markov.metropolis_weights`), ``"uniform"``
(equal link weights 1/(1 + d_max), the rest on the diagonal: 1/(d + 1) everywhere on a d-regular
graph, J/N on the complete graph — exact factor averaging), or a given symmetric doubly stochastic
matrix. With ``link_failure`` every link is down for a round independently with that probability:
it carries nothing, and M is rebuilt on the surviving graph (the Metropolis or equal weights of
the surviving graph; for a given matrix the dropped links' weights move to the diagonal), so it
stays symmetric and doubly stochastic and the node average of the factors is preserved.

Because M mixes factors, not products, node i ends the round with
(Σ_j M_ij B_j)(Σ_j M_ij A_j) ≠ Σ_j M_ij B_j A_j: the *bilinear mismatch* (spec §6,
:mod:`lorakit.decentralized.mismatch`), which RW-LoRA's single token never pays.

The objective is the uniform average f = (1/N) Σ_i f_i (the π that a doubly stochastic M targets).

Communication (spec §5, §10.5): every node sends its adapter, r(m + n) floats, to each neighbour,
so a round costs Σ_i deg_i × r(m + n) = 2|E|·r(m + n) floats network-wide — O(N·degree·model) —
against RW-LoRA's one adapter per hop; and N·``local_steps`` local updates against its
``local_steps``. AdamW's state (``optimizer="adamw"``) stays on each node: it is neither mixed nor
sent.

Randomness (:class:`lorakit.rng.Streams`): ``init`` (the shared A), ``links`` (dropped links: one
uniform per edge and round, edges in sorted order), ``data`` and ``noise`` as in RW-LoRA.

Model scale: :meth:`GossipLoRA.run` on a :class:`lorakit.adapters.ModelProblem` with clients keeps
each node's per-site factors outside the model (:mod:`lorakit.adapters.decentralized`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .._validation import check_choice, check_int, check_real
from ..divergence import BLOWUP, DivergenceError
from ..problems.federated import FederatedProblem
from ..rng import Streams
from ._loop import run_logged
from .markov import metropolis_weights
from .mismatch import bilinear_mismatch
from .walk import (
    _as_matrix,
    _check_common,
    _check_flag,
    _factor_step,
    _finite_and_bounded,
    _init_A,
    _local_grads,
    _prepare_graph,
    _scale,
    _seed_loop,
    _simulation_class,
    _zero_state,
)

__all__ = [
    "MIXINGS",
    "GossipLoRA",
    "GossipSimulation",
    "check_mixing",
    "equal_weights",
    "metropolis_matrix",
]

MIXINGS = ("metropolis", "uniform")


# ---------------------------------------------------------------------------------------------
# Mixing matrices on an adjacency (numpy, rebuilt every round when links fail)
# ---------------------------------------------------------------------------------------------
def _adjacency(adjacency) -> np.ndarray:
    adj = np.asarray(adjacency) != 0
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1] or not (adj == adj.T).all():
        raise ValueError("adjacency must be a symmetric N×N matrix")
    adj = adj.copy()
    np.fill_diagonal(adj, False)
    return adj


def metropolis_matrix(adjacency) -> np.ndarray:
    """Metropolis weights of an undirected graph: M_ij = 1/(1 + max(d_i, d_j)) on links, the rest
    on the diagonal. Symmetric and doubly stochastic for any graph, connected or not."""
    adj = _adjacency(adjacency)
    d = adj.sum(axis=1)
    M = np.where(adj, 1.0 / (1.0 + np.maximum(d[:, None], d[None, :])), 0.0)
    M[np.diag_indices_from(M)] = 1.0 - M.sum(axis=1)
    return M


def equal_weights(adjacency) -> np.ndarray:
    """Equal link weights 1/(1 + d_max), the rest on the diagonal (``mixing="uniform"``).

    Symmetric and doubly stochastic for any graph; 1/(d + 1) everywhere on a d-regular graph (the
    "uniform 1/(d+1)" of spec §5, :func:`lorakit.decentralized.markov.uniform_weights` there) and
    J/N on the complete graph. On an irregular graph ``uniform_weights`` (1/(d_u + 1) per row) is
    only row-stochastic — gossip with it drifts to a degree-weighted average — so the equal
    weights here use the largest degree instead.
    """
    adj = _adjacency(adjacency)
    d = adj.sum(axis=1)
    M = np.where(adj, 1.0 / (1.0 + d.max(initial=0)), 0.0)
    M[np.diag_indices_from(M)] = 1.0 - M.sum(axis=1)
    return M


def check_mixing(M, adjacency=None, *, atol: float = 1e-9) -> np.ndarray:
    """Check M: finite, non-negative, symmetric, doubly stochastic and (with ``adjacency``)
    supported on the links and the diagonal; returns it as float64."""
    M = _as_matrix("mixing", M)
    if not np.allclose(M, M.T, rtol=0.0, atol=atol):
        raise ValueError("mixing must be symmetric (M = Mᵀ)")
    if not np.allclose(M.sum(axis=1), 1.0, rtol=0.0, atol=atol):
        raise ValueError("mixing must be doubly stochastic: every row and column must sum to 1")
    if adjacency is not None:
        adj = _adjacency(adjacency)
        if adj.shape != M.shape:
            raise ValueError(
                f"mixing is {M.shape[0]}×{M.shape[1]}; the graph has N = {adj.shape[0]}"
            )
        off = ~adj & ~np.eye(M.shape[0], dtype=bool)
        if (M[off] > atol).any():
            i, j = np.argwhere(off & (M > atol))[0]
            raise ValueError(f"mixing puts weight on ({i}, {j}), which is not a link of the graph")
    return M


def _drop_into_diagonal(M: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """M with the weights of the dropped links (a symmetric mask) moved to the diagonal."""
    lost = np.where(dropped, M, 0.0)
    out = M - lost
    out[np.diag_indices_from(out)] += lost.sum(axis=1)
    return out


# ---------------------------------------------------------------------------------------------
# Gossip Dec-LoRA
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GossipLoRA:
    """A gossip Dec-LoRA configuration (spec §5); :meth:`run` simulates it on a graph of N nodes.

    Parameters
    ----------
    rank, lr, local_steps, optimizer, alpha, init, init_std, sigma, batch_size, bytes_per_float,
    optimizer_kwargs : as :class:`~lorakit.decentralized.walk.RWLoRA` (AdamW's state is per node).
    mixing : ``"metropolis"``, ``"uniform"`` (equal link weights 1/(1 + d_max)) or an N×N
        symmetric doubly stochastic matrix supported on the graph's links and the diagonal.
    link_failure : probability in [0, 1] that a link is down for a round (module docstring).
        ``link_failure=1`` and an identity ``mixing`` mix nothing: a ``UserWarning`` says so.
    """

    rank: int
    lr: float
    mixing: str | np.ndarray = "metropolis"
    local_steps: int = 1
    optimizer: str = "sgd"
    alpha: float | None = None
    init: str = "gaussian"
    init_std: float | None = None
    sigma: float | None = None
    batch_size: int | None = None
    link_failure: float = 0.0
    bytes_per_float: int = 4
    method: str = "gossip_lora"
    optimizer_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        set_ = object.__setattr__
        _check_common(self)
        if isinstance(self.mixing, str):
            check_choice("mixing", self.mixing, MIXINGS)
        else:
            set_(self, "mixing", check_mixing(self.mixing))
        set_(self, "link_failure", check_real("link_failure", self.link_failure, low=0.0, high=1.0))
        # Legitimate (each node trains alone: the no-communication baseline) but nothing mixes.
        if self.link_failure == 1.0:
            warnings.warn(
                "link_failure=1 takes every link down in every round: nothing mixes and each node "
                "trains alone",
                UserWarning,
                stacklevel=3,
            )
        if isinstance(self.mixing, np.ndarray) and np.allclose(
            self.mixing, np.eye(self.mixing.shape[0]), rtol=0.0, atol=1e-12
        ):
            warnings.warn(
                "mixing is the identity: nothing mixes and each node trains alone",
                UserWarning,
                stacklevel=3,
            )

    @property
    def scale(self) -> float:
        return _scale(self)

    def describe(self) -> dict:
        return {
            "method": self.method,
            "rank": self.rank,
            "mixing": self.mixing if isinstance(self.mixing, str) else "custom",
            "optimizer": self.optimizer,
            "local_steps": self.local_steps,
        }

    def mixing_matrix(self, problem: FederatedProblem, graph) -> np.ndarray:
        """M on the whole graph (no failed links)."""
        G, adj = _prepare_graph(graph, problem)
        if isinstance(self.mixing, np.ndarray):
            return check_mixing(self.mixing, adj)
        if self.mixing == "uniform":
            return equal_weights(adj)
        return check_mixing(np.asarray(metropolis_weights(G), dtype=np.float64), adj)

    def simulator(self, problem: FederatedProblem, graph, seed: int = 0) -> GossipSimulation:
        """A step-by-step simulation (``.round()``; the node stacks ``.A`` (N, r, n), ``.B``); for
        a ModelProblem a :class:`lorakit.adapters.decentralized.ModelGossip` (per-site stacks)."""
        cls = _simulation_class(self, problem, GossipSimulation, "ModelGossip")
        M = self.mixing_matrix(problem, graph)
        _, adj = _prepare_graph(graph, problem)
        return cls(self, problem, check_int("seed", seed, low=0), M, adj)

    def run(
        self,
        problem: FederatedProblem,
        rounds: int,
        seeds=0,
        *,
        graph,
        log_every: int = 1,
        messages: bool = False,
        on_divergence: str = "raise",
        blowup: float = BLOWUP,
        progress: bool = False,
    ):
        """Simulate ``rounds`` gossip rounds per seed.

        ``problem`` is a :class:`~lorakit.problems.federated.FederatedProblem` or a
        :class:`~lorakit.adapters.ModelProblem` with clients (a peft model: each node's adapter
        lives outside the model; :mod:`lorakit.adapters.decentralized` lists the conventions).
        ``progress=True`` shows a ``tqdm.auto`` bar over the seeds (matrix scale) or over the
        rounds of each seed (model scale).

        Returns the history, one row per logged round and seed (round 0: the common start):

        * ``loss`` — f(W0 + s·B̄Ā) of the **average model** (the node means Ā, B̄ of the factors);
          ``node_loss_mean`` — (1/N) Σ_i f(W_i), the global objective at each node's own model,
          averaged; ``local_loss_mean`` — (1/N) Σ_i f_i(W_i), each node on its own objective;
          ``gap`` = loss − f*; ``grad_norm_sq`` = ‖∇_A f‖² + ‖∇_B f‖² at the average model;
          ``consensus`` = (1/N) Σ_i (‖A_i − Ā‖² + ‖B_i − B̄‖²);
        * ``mismatch`` = max_i ‖Σ_j M_ij B_j A_j − (Σ_j M_ij B_j)(Σ_j M_ij A_j)‖_F of this round's
          mixing and ``mismatch_global`` = ‖(1/N) Σ_i B_i A_i − B̄Ā‖_F, both on the factors the
          nodes mix (after the local steps, before mixing);
        * cumulative ``communicated_params`` (Σ_i deg_i × r(m + n) per round over the links up),
          ``bytes``, ``local_updates`` (N·local_steps per round); ``links`` up and
          ``dropped_links`` this round.

        With ``messages=True`` also a frame of every directed message: ``seed``, ``round``,
        ``src``, ``dst``, ``params``, ``bytes``, ``dropped``.

        Divergence: as :meth:`RWLoRA.run <lorakit.decentralized.walk.RWLoRA.run>` (threshold
        ``blowup``, default 10³); a model gets the average adapter of the last logged round that
        passed.
        """
        cls = _simulation_class(self, problem, GossipSimulation, "ModelGossip")
        rounds = check_int("rounds", rounds, low=1)
        log_every = check_int("log_every", log_every, low=1)
        model = cls is not GossipSimulation
        kw = {"progress": _check_flag("progress", progress)} if model else {}
        M = self.mixing_matrix(problem, graph)
        _, adj = _prepare_graph(graph, problem)
        frame, msgs, _ = _seed_loop(
            self, problem, seeds, rounds, log_every, messages, on_divergence,
            lambda seed: cls(self, problem, seed, M, adj, record=messages, **kw),
            progress=progress and not model, blowup=blowup,
        )  # fmt: skip
        frame.attrs["M"] = M.tolist()
        return (frame, msgs) if messages else frame


class GossipSimulation:
    """One seeded gossip run: the node stacks ``A`` (N, r, n), ``B`` (N, m, r) and their state."""

    blowup = BLOWUP  # the divergence threshold (set by the seed loop)

    def __init__(self, cfg: GossipLoRA, problem, seed: int, M: np.ndarray, adjacency, record=True):
        self.cfg, self.problem, self.seed = cfg, problem, seed
        self.N = problem.M
        self.streams = Streams(seed)
        self.M, self.adj = M, np.asarray(adjacency, dtype=bool)
        self.edges = np.argwhere(np.triu(self.adj))  # sorted (i < j)
        kw = {"dtype": problem.dtype, "device": problem.device}
        self.M_torch = torch.as_tensor(np.array(M), **kw)
        self.A, self.B = self.init_nodes()
        self.state = self.zero_state(self.A, self.B) if cfg.optimizer == "adamw" else None
        self.nodes = torch.arange(self.N)
        self.floats = self.transfer_floats()
        self.f_star = problem.f_star if problem.f_star is not None else math.nan
        self.t = 0
        self.communicated = self.local_updates = 0
        self.record = record
        self.messages: list[dict] = []
        self.rows: list[dict] = []

    # -- the nodes' factors (overridden at model scale: lorakit.adapters.decentralized) ---------
    def init_nodes(self) -> tuple:
        """The stacks (A, B): one A^(0) from the ``init`` stream shared by every node, B = 0."""
        p, r = self.problem, self.cfg.rank
        A = _init_A(self.cfg, p, self.streams["init"])
        B = torch.zeros(self.N, p.m, r, dtype=p.dtype, device=p.device)
        return A.expand(self.N, *A.shape).clone(), B

    def zero_state(self, A, B) -> dict:
        """Every node's fresh AdamW state (stacked)."""
        return _zero_state(A, B)

    def transfer_floats(self) -> int:
        """Floats of one adapter sent over one link: r(m + n)."""
        return self.cfg.rank * (self.problem.m + self.problem.n)

    def mix(self, A, B, M: torch.Tensor) -> tuple:
        """Gossip the factors with M; (the mixing's largest node mismatch, the global mismatch,
        mixed A, mixed B), the mismatches measured on the factors before mixing."""
        with torch.no_grad():
            local = float(torch.linalg.matrix_norm(bilinear_mismatch(B, A, M)).max())
            glob = float(torch.linalg.matrix_norm(bilinear_mismatch(B, A)))
            return (
                local, glob,
                torch.einsum("ij,jrn->irn", M, A), torch.einsum("ij,jmr->imr", M, B),
            )  # fmt: skip

    # -- one round -----------------------------------------------------------------------------
    def local_steps(self):
        """Every node's ``local_steps`` steps from its own iterate; the half-step stacks."""
        cfg, p, s = self.cfg, self.problem, self.cfg.scale
        A, B, state = self.A, self.B, self.state
        with torch.no_grad():
            for _ in range(cfg.local_steps):
                W = torch.baddbmm(p.W0.expand(self.N, *p.W0.shape), B, A, alpha=s)
                G = _local_grads(cfg, p, W, self.nodes, self.streams)
                gA, gB = s * (B.mT @ G), s * (G @ A.mT)
                A, B, state = _factor_step(cfg, A, B, gA, gB, state)
        return A, B, state

    def mixing(self) -> tuple[np.ndarray, np.ndarray]:
        """(M_t, the dropped links as a symmetric N×N mask) for this round."""
        if self.cfg.link_failure <= 0 or len(self.edges) == 0:
            return self.M, np.zeros_like(self.adj)
        u = torch.rand(len(self.edges), generator=self.streams["links"], dtype=torch.float64)
        down = self.edges[(u < self.cfg.link_failure).numpy()]
        dropped = np.zeros_like(self.adj)
        dropped[down[:, 0], down[:, 1]] = dropped[down[:, 1], down[:, 0]] = True
        if not dropped.any():
            return self.M, dropped
        mixing = self.cfg.mixing
        if isinstance(mixing, np.ndarray):
            return _drop_into_diagonal(self.M, dropped), dropped
        surviving = self.adj & ~dropped
        M = equal_weights(surviving) if mixing == "uniform" else metropolis_matrix(surviving)
        return M, dropped

    def round(self) -> dict:
        """One round: local steps, then factor gossip; returns this round's record."""
        cfg = self.cfg
        self.t += 1
        A, B, state = self.local_steps()
        problem = _finite_and_bounded((A, B), (self.A, self.B))
        if problem is not None:
            raise DivergenceError(
                f"{cfg.method} diverged in round {self.t} (seed {self.seed}): {problem}; the "
                f"nodes keep round {self.t - 1}. Lower lr = {cfg.lr:g}",
                step=self.t,
                seed=self.seed,
                frame=pd.DataFrame(self.rows),
            )
        M_np, dropped = self.mixing()
        M = (
            self.M_torch
            if M_np is self.M
            else torch.as_tensor(M_np, dtype=self.M_torch.dtype, device=self.M_torch.device)
        )
        local, glob, self.A, self.B = self.mix(A, B, M)
        self.state = state
        up = self.adj & ~dropped
        degrees = up.sum(axis=1)
        sent = int(degrees.sum()) * self.floats
        self.communicated += sent
        self.local_updates += self.N * cfg.local_steps
        if self.record:
            for i, j in np.argwhere(self.adj):
                x = bool(dropped[i, j])
                self.messages.append(
                    {"seed": self.seed, "round": self.t, "src": int(i), "dst": int(j),
                     "params": 0 if x else self.floats,
                     "bytes": 0 if x else self.floats * cfg.bytes_per_float, "dropped": x}
                )  # fmt: skip
        return {
            "mismatch": local,
            "mismatch_global": glob,
            "links": int(up.sum()) // 2,
            "dropped_links": int(dropped.sum()) // 2,
        }

    # -- the loop ------------------------------------------------------------------------------
    def run(self, rounds: int, log_every: int = 1) -> list[dict]:
        links = int(self.adj.sum()) // 2
        first = {"mismatch": 0.0, "mismatch_global": 0.0, "links": links, "dropped_links": 0}
        return run_logged(self, self.round, rounds, log_every, first, "round")

    def measure(self) -> tuple[float, float, float, float, float]:
        """(f at the average model, mean over nodes of f(W_i), mean of f_i(W_i), ‖∇_A f‖² +
        ‖∇_B f‖² at the average model, consensus distance)."""
        p, s = self.problem, self.cfg.scale
        with torch.no_grad():
            A_bar, B_bar = self.A.mean(0), self.B.mean(0)
            W = p.W0 + s * (B_bar @ A_bar)
            loss = float(p.loss(W))
            G = p.grad(W)
            grad_sq = float((s * (B_bar.T @ G)).square().sum() + (s * (G @ A_bar.T)).square().sum())
            W_nodes = torch.baddbmm(p.W0.expand(self.N, *p.W0.shape), self.B, self.A, alpha=s)
            losses = p.client_losses(W_nodes)  # (N nodes' models, M = N objectives)
            consensus = float(
                ((self.A - A_bar).square().sum() + (self.B - B_bar).square().sum()) / self.N
            )
        return (
            loss,
            float(losses.mean()),
            float(torch.diagonal(losses).mean()),
            grad_sq,
            consensus,
        )

    def log(self, record: dict) -> dict:
        loss, node_loss_mean, local_loss_mean, grad_sq, consensus = self.measure()
        return {
            "seed": self.seed, "round": self.t, "loss": loss,
            "node_loss_mean": node_loss_mean, "local_loss_mean": local_loss_mean,
            "gap": loss - self.f_star, "grad_norm_sq": grad_sq, "consensus": consensus,
            **record,
            "communicated_params": self.communicated,
            "bytes": self.communicated * self.cfg.bytes_per_float,
            "local_updates": self.local_updates,
        }  # fmt: skip
