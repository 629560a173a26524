"""Gossip Dec-LoRA: every node keeps its own factors and averages them with its neighbours' (the
baseline of RW-LoRA, [4]/[14]; spec ``rw_lora.md`` §5).

Node i holds an adapter (B_i, A_i) (:mod:`lorakit.decentralized.simulation`), all starting equal.
A round: every node takes ``local_steps`` steps on its own f_i from W_i = W0 + s·B_i A_i; then the
nodes mix, A_i ← Σ_j M_ij A_j, B_i ← Σ_j M_ij B_j on every site, M symmetric, doubly stochastic and
supported on the graph and the diagonal. With an upload ``compressor`` node i mixes its
neighbours' C(A_j) (one message per node and round) and its own A_i exactly.

M is ``"metropolis"`` (M_ij = 1/(1 + max(d_i, d_j))), ``"uniform"`` (1/(1 + d_max) on every link,
J/N on the complete graph) or a given matrix, the rest of each row on the diagonal. A link down
(``link_failure``) carries nothing for the round and M is rebuilt on the links up (a given
matrix's dropped weights move to the diagonal), keeping the node average of the factors.

M mixes factors, not products, so (Σ_j M_ij B_j)(Σ_j M_ij A_j) ≠ Σ_j M_ij B_j A_j: the *bilinear
mismatch* (spec §6, :mod:`lorakit.decentralized.mismatch`). The objective is f = (1/N) Σ_i f_i. A
round costs Σ_i deg_i messages (2|E|·d floats) and N·``local_steps`` local updates; AdamW's state
stays on each node. Streams: ``init``, ``links`` (one uniform per edge and round, edges sorted),
``compression``, ``data``, ``noise``, ``model``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .._validation import check_choice, check_real
from ..divergence import BLOWUP
from ..local import train
from ..tree import leaves, tree_map
from . import graphs, simulation
from .markov import metropolis_weights
from .mismatch import bilinear_mismatch
from .simulation import NodeConfig, Simulation

__all__ = [
    "MIXINGS",
    "GossipLoRA",
    "GossipSimulation",
    "check_mixing",
    "equal_weights",
    "metropolis_matrix",
]

MIXINGS = ("metropolis", "uniform")


def _adjacency(adjacency) -> np.ndarray:  # checked symmetric, as booleans without the diagonal
    return graphs.adjacency(adjacency).toarray() > 0


def _with_diagonal(adj: np.ndarray, links: np.ndarray) -> np.ndarray:
    """The link weights ``links`` on the links of ``adj``, the rest of each row on the diagonal."""
    M = np.where(adj, links, 0.0)
    M[np.diag_indices_from(M)] = 1.0 - M.sum(axis=1)
    return M


def metropolis_matrix(adjacency) -> np.ndarray:
    """Metropolis weights of an undirected graph: M_ij = 1/(1 + max(d_i, d_j)) on links, the rest
    on the diagonal. Symmetric and doubly stochastic for any graph, connected or not."""
    adj = _adjacency(adjacency)
    d = adj.sum(axis=1)
    return _with_diagonal(adj, 1.0 / (1.0 + np.maximum(d[:, None], d[None, :])))


def equal_weights(adjacency) -> np.ndarray:
    """Equal link weights 1/(1 + d_max), the rest on the diagonal (``mixing="uniform"``): doubly
    stochastic on any graph, unlike :func:`lorakit.decentralized.markov.uniform_weights`, which it
    equals on a regular graph (spec §5)."""
    adj = _adjacency(adjacency)
    return _with_diagonal(adj, 1.0 / (1.0 + adj.sum(axis=1).max(initial=0)))


def check_mixing(M, adjacency=None, *, atol: float = 1e-9) -> np.ndarray:
    """Check M: finite, non-negative, symmetric, doubly stochastic and (with ``adjacency``)
    supported on the links and the diagonal; returns it as float64."""
    M = simulation.square_matrix("mixing", M)
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
        off = ~adj & ~np.eye(M.shape[0], dtype=bool) & (M > atol)
        if off.any():
            i, j = np.argwhere(off)[0]
            raise ValueError(f"mixing puts weight on ({i}, {j}), which is not a link of the graph")
    return M


@dataclass(frozen=True, kw_only=True)
class GossipLoRA(NodeConfig):
    """A gossip Dec-LoRA configuration (spec §5); :meth:`run` simulates it on a graph of N nodes.

    Parameters
    ----------
    rank, gamma, local_steps, optimizer, alpha, init, init_std, estimator, compressor,
    bytes_per_float, bytes_per_index, optimizer_kwargs : as
        :class:`~lorakit.decentralized.simulation.NodeConfig` (AdamW's state is per node).
    mixing : ``"metropolis"``, ``"uniform"`` or an N×N symmetric doubly stochastic matrix
        supported on the graph's links and the diagonal (module docstring).
    link_failure : probability in [0, 1] that a link is down for a round; 1 (or an identity
        ``mixing``) mixes nothing, and a ``UserWarning`` says so.
    """

    mixing: str | np.ndarray = "metropolis"
    link_failure: float = 0.0
    method: str = "gossip_lora"
    rule = "mixing"

    def __post_init__(self):
        super().__post_init__()
        set_ = object.__setattr__
        if isinstance(self.mixing, str):
            check_choice("mixing", self.mixing, MIXINGS)
        else:
            set_(self, "mixing", check_mixing(self.mixing))
        set_(self, "link_failure", check_real("link_failure", self.link_failure, low=0.0, high=1.0))
        identity = isinstance(self.mixing, np.ndarray) and np.allclose(
            self.mixing, np.eye(len(self.mixing)), rtol=0.0, atol=1e-12
        )
        # Legitimate (each node trains alone: the no-communication baseline) but nothing mixes.
        alone = {"link_failure=1 takes every link down in every round": self.link_failure == 1.0}
        alone["mixing is the identity"] = identity
        for what in [what for what, yes in alone.items() if yes]:
            message = f"{what}: nothing mixes and each node trains alone"
            warnings.warn(message, UserWarning, stacklevel=4)

    def mixing_matrix(self, problem, graph) -> np.ndarray:
        """M on the whole graph (no failed links)."""
        G, adj = simulation.check_graph(graph, problem)
        if isinstance(self.mixing, np.ndarray):
            return check_mixing(self.mixing, adj)
        if self.mixing == "uniform":
            return equal_weights(adj)
        return check_mixing(np.asarray(metropolis_weights(G), dtype=np.float64), adj)

    def simulations(self, problem, graph, record: bool = True, run: bool = False):
        """``make(seed)``: a :class:`GossipSimulation` per seed."""
        M, (_, adj) = self.mixing_matrix(problem, graph), simulation.check_graph(graph, problem)
        return lambda seed: GossipSimulation(self, problem, seed, M, adj, record)

    def run(
        self,
        problem,
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
        """Simulate ``rounds`` rounds per seed (``progress``: a bar; divergence: see
        :mod:`lorakit.divergence`). Returns one row per logged round and seed (round 0: the start):
        ``loss`` = f(W0 + s·B̄Ā) of the average model (the node means B̄, Ā); ``node_loss_mean`` =
        (1/N) Σ_i f(W_i); ``local_loss_mean`` = (1/N) Σ_i f_i(W_i); ``gap`` = loss − f*;
        ``grad_norm_sq`` = ‖∇_A f‖² + ‖∇_B f‖² at the average model; ``consensus`` =
        (1/N) Σ_i (‖A_i − Ā‖² + ‖B_i − B̄‖²); ``mismatch`` = max_i ‖Σ_j M_ij B_j A_j −
        (Σ_j M_ij B_j)(Σ_j M_ij A_j)‖_F of the round's mixing and ``mismatch_global`` =
        ‖(1/N) Σ_i B_i A_i − B̄Ā‖_F, both on the factors mixed (sites as one Frobenius norm);
        cumulative ``communicated_params`` (floats over the links up), ``bytes``,
        ``local_updates``; ``links`` up and ``dropped_links`` this round. ``frame.attrs["M"]``
        is the mixing matrix. With ``messages=True`` also a frame of every directed message:
        ``seed``, ``round``, ``src``, ``dst``, ``params``, ``bytes``, ``dropped``.
        """

        options = (log_every, on_divergence, blowup, progress, messages)
        return simulation.run_simulations(self, problem, graph, "rounds", rounds, seeds, *options)


class GossipSimulation(Simulation):
    """One seeded gossip run: the node stacks ``B``, ``A`` (per site (N, m, r), (N, r, n))."""

    unit = "round"

    def __init__(self, cfg: GossipLoRA, problem, seed: int, M: np.ndarray, adjacency, record=True):
        super().__init__(cfg, problem, seed, record)
        self.M, self.adj = M, np.asarray(adjacency, dtype=bool)
        self.edges = np.argwhere(np.triu(self.adj))  # sorted (i < j)
        self.M_torch = torch.as_tensor(np.array(M), dtype=problem.dtype, device=problem.device)
        stack = lambda x: x.expand(self.N, *x.shape).clone()  # noqa: E731  (every node's copy)
        self.B, self.A = tree_map(stack, self.B), tree_map(stack, self.A)
        self.uniform = torch.full((self.N,), 1.0 / self.N, dtype=torch.float64)
        f_star = problem.weighted_f_star(self.uniform)
        self.f_star = math.nan if f_star is None else f_star

    def mix(self, A, B, M: torch.Tensor) -> tuple:
        """Gossip the factors with M: (the largest node mismatch, the global mismatch, mixed A,
        mixed B, one message's payload), the mismatches measured before mixing."""
        sq = lambda X: sum(x.square().sum(dim=(-2, -1)) for x in X)  # noqa: E731
        pairs = list(zip(leaves(B), leaves(A), strict=True))
        local = float(sq([bilinear_mismatch(b, a, M) for b, a in pairs]).max().sqrt())
        glob = math.sqrt(float(sq([bilinear_mismatch(b, a) for b, a in pairs])))
        sentB, sentA, payload = simulation.compress_factors(
            self.cfg.compressor, B, A, self.streams, 1
        )
        own = torch.diagonal(M)

        def gossip(x, sent):  # x_i ← M_ii x_i + Σ_{j≠i} M_ij x_j as received (sent is x: exact)
            if sent is x:
                return torch.einsum("ij,j...->i...", M, x)
            off = torch.einsum("ij,j...->i...", M - torch.diag(own), sent)
            return own[:, None, None] * x + off

        return local, glob, tree_map(gossip, A, sentA), tree_map(gossip, B, sentB), payload

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
        up, mixing = self.adj & ~dropped, self.cfg.mixing
        if isinstance(mixing, np.ndarray):  # the dropped links' weights move to the diagonal
            return _with_diagonal(up, self.M), dropped
        return (equal_weights(up) if mixing == "uniform" else metropolis_matrix(up)), dropped

    def local_steps(self) -> tuple:
        """Every node's ``local_steps`` steps from its own iterate: the stacks (A, B, state)."""
        args = (self.W0, self.B, self.A, self.scalings, self.clients, self.local, self.streams)
        B, A, state = train(self.problem, *args, state=self.state)
        return A, B, state

    def round(self) -> dict:
        """One round: local steps, then factor gossip; returns this round's record."""
        self.t += 1
        A, B, state = self.local_steps()
        trouble = simulation.factor_trouble(
            simulation.largest(A, B), simulation.largest(self.A, self.B)
        )
        if trouble is not None:
            keep = f"the nodes keep round {self.t - 1}"
            raise self.diverged(f"in round {self.t} (seed {self.seed}): {trouble}; {keep}")
        M_np, dropped = self.mixing()
        M = self.M_torch if M_np is self.M else torch.as_tensor(M_np).to(self.M_torch)
        local, glob, self.A, self.B, payload = self.mix(A, B, M)
        self.state = state
        up = self.adj & ~dropped
        floats, sent = self.cost(payload)
        self.communicated += int(up.sum()) * floats
        self.bytes += int(up.sum()) * sent
        self.local_updates += self.N * self.cfg.local_steps
        if self.record:
            for i, j in np.argwhere(self.adj):
                x = bool(dropped[i, j])
                params, nbytes = (0, 0) if x else (floats, sent)
                message = dict(seed=self.seed, round=self.t, src=int(i), dst=int(j), params=params)
                self.messages.append({**message, "bytes": nbytes, "dropped": x})
        links, dropped_links = int(up.sum()) // 2, int(dropped.sum()) // 2
        return dict(mismatch=local, mismatch_global=glob, links=links, dropped_links=dropped_links)

    def first_record(self) -> dict:
        links = int(self.adj.sum()) // 2
        return {"mismatch": 0.0, "mismatch_global": 0.0, "links": links, "dropped_links": 0}

    def result(self, B, A) -> tuple:
        """The adapter a model keeps: the nodes' average (B̄, Ā)."""
        return tree_map(lambda b: b.mean(0), B), tree_map(lambda a: a.mean(0), A)

    @staticmethod
    def annotate(frame, sims) -> None:
        frame.attrs["M"] = sims[0].M.tolist()

    def log(self, record: dict) -> dict:
        """The row of the current nodes (:meth:`GossipLoRA.run`)."""
        B_bar, A_bar = self.result(self.B, self.A)
        loss, grad_sq = self.objective(B_bar, A_bar, self.uniform)
        losses = self.client_loss_table(self.adapted(self.B, self.A))  # (N models, N objectives)
        spread = leaves(self.A) + leaves(self.B)
        row = {"seed": self.seed, "round": self.t, "loss": loss}
        row["node_loss_mean"] = float(losses.mean())
        row["local_loss_mean"] = float(torch.diagonal(losses).mean())
        row["gap"], row["grad_norm_sq"] = loss - self.f_star, grad_sq
        row["consensus"] = sum(float((x - x.mean(0)).square().sum()) for x in spread) / self.N
        row.update(record, communicated_params=self.communicated, bytes=self.bytes)
        return {**row, "local_updates": self.local_updates}
