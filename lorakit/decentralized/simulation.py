"""What RW-LoRA's token walk and gossip Dec-LoRA share (spec ``rw_lora.md`` §4–5).

Both run on the N clients of a problem (README "Architecture"), node v owning f_v. An adapter is a
pair of trees (B, A) over W0 = ``problem.start()`` (:func:`lorakit.local.init_adapter`), W = W0 +
s·BA per site (:func:`~lorakit.problems.protocol.site_scalings`); local steps are
:func:`lorakit.local.train` (RW-LoRA eqs. (7)–(8), (12)). A message is the adapter as one vector of
d = Σ_l r(m_l + n_l) entries through the upload ``compressor``, costing floats·``bytes_per_float``
+ indices·``bytes_per_index`` of the compressor's ``payload(d)``. A :class:`Simulation` is one
seed, from ``problem.reset()`` inside ``problem.seeded(streams)`` (the same numbers at both
scales); it leaves the problem holding its last logged state that passed (``problem.commit(W0, B,
A)``; divergence: see :mod:`lorakit.divergence`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pandas as pd
import torch

from .._validation import check_byte_size, check_choice, check_int, check_real
from ..compressors import Compressor, Payload, make_compressor
from ..config import Config, deprecated
from ..divergence import BLOWUP, DivergenceError, check_run, iterate, run_seeds
from ..estimators import Estimator
from ..local import INITS, Local, init_adapter, local_estimator
from ..local import OPTIMIZERS as LOCAL_OPTIMIZERS
from ..problems.protocol import check_problem_protocol, site_scalings
from ..rng import Streams
from ..tree import leaves, sq_norm, tree_like, tree_map
from .graphs import adjacency, as_graph, check_connected

__all__ = [
    "INITS",
    "OPTIMIZERS",
    "NodeConfig",
    "Simulation",
    "check_graph",
    "check_problem",
    "compress_factors",
    "factor_trouble",
    "largest",
    "run_simulations",
    "square_matrix",
]

OPTIMIZERS = tuple(LOCAL_OPTIMIZERS)


@dataclass(frozen=True)
class NodeConfig(Config):
    """The fields RW-LoRA and gossip Dec-LoRA share: how a node trains and what a message costs.

    Parameters
    ----------
    rank : r ≥ 1 (and r ≤ min(m, n), a peft model's own r).
    gamma : η > 0, the step size (SGD) or AdamW's learning rate; ``lr=`` is its deprecated name.
    local_steps : steps per visit (1 in the paper).
    optimizer : ``"sgd"`` or ``"adamw"`` (torch's defaults unless ``optimizer_kwargs`` says).
    alpha : W = W0 + (α/r)·BA; default α = r. A peft model's own scaling must agree, if given.
    init, init_std : A^(0) ~ ``"gaussian"`` N(0, init_std²) (default 1/r) or ``"kaiming"``;
        B^(0) = 0.
    estimator : a node's oracle (:mod:`lorakit.local`): ``"gd"``, ``sgd(batch_size=b)`` or
        ``sgd(sigma=σ)`` (E‖ξ‖² = σ², RW-LoRA Assumption 4); ``sigma=``/``batch_size=`` are its
        deprecated shorthand.
    compressor : every message's upload compressor (a Compressor or a name); default identity.
    bytes_per_float, bytes_per_index : message accounting (module docstring).
    """

    rank: int
    gamma: float | None = None
    local_steps: int = 1
    optimizer: str = "sgd"
    alpha: float | None = None
    init: str = "gaussian"
    init_std: float | None = None
    estimator: Estimator | str = "gd"
    compressor: Compressor | str = "identity"
    bytes_per_float: int = 4
    bytes_per_index: int = 4
    method: str = ""
    optimizer_kwargs: dict = field(default_factory=dict)
    lr: float | None = deprecated()
    sigma: float | None = deprecated()
    batch_size: int | None = deprecated()
    rule = ""  # the field naming the graph rule ("transition", "mixing"): a describe() column

    def __post_init__(self):
        set_, owner = object.__setattr__, type(self).__name__
        if self.lr is not None:  # the README's old name of the step size
            message = f"{owner}(lr=...) is deprecated: the step size is gamma"
            warnings.warn(message, DeprecationWarning, stacklevel=4)
            if self.gamma is not None:
                raise TypeError("give the step size once: gamma (lr is its deprecated name)")
            set_(self, "gamma", self.lr)
        if self.gamma is None:
            raise TypeError(f"{owner} needs gamma, the step size")
        set_(self, "rank", check_int("rank", self.rank, low=1))
        set_(self, "gamma", check_real("gamma", self.gamma, low=0.0, low_open=True))
        set_(self, "local_steps", check_int("local_steps", self.local_steps, low=1))
        for name in ("alpha", "init_std"):
            if getattr(self, name) is not None:
                check_real(name, getattr(self, name), low=0.0, low_open=True)
        check_choice("init", self.init, INITS)
        estimator = local_estimator(self.estimator, self.sigma, self.batch_size, owner=owner)
        set_(self, "estimator", estimator)
        for name in ("lr", "sigma", "batch_size"):  # deprecated names: read, then None
            set_(self, name, None)
        set_(self, "compressor", make_compressor(self.compressor))
        for name in ("bytes_per_float", "bytes_per_index"):
            set_(self, name, check_byte_size(name, getattr(self, name)))
        self.local()  # checks optimizer and optimizer_kwargs

    def describe(self) -> dict:
        rule = getattr(self, self.rule)
        return {
            "method": self.method,
            "rank": self.rank,
            self.rule: rule if isinstance(rule, str) else "custom",
            "optimizer": self.optimizer,
            "estimator": str(self.estimator),
            "local_steps": self.local_steps,
        }

    def simulator(self, problem, graph, seed: int = 0):
        """One seed's simulation on ``graph`` to step by hand (``.hop()``/``.round()``; factors
        ``.B``, ``.A``), made by the subclass's ``simulations(problem, graph, record, run)``."""
        check_problem(self, problem)
        return self.simulations(problem, graph)(check_int("seed", seed, low=0))

    def local(self) -> Local:
        """The local trainer of a node (:class:`lorakit.local.Local`)."""
        kwargs = dict(self.optimizer_kwargs)
        return Local(self.local_steps, self.gamma, self.optimizer, kwargs, self.estimator)


def check_problem(cfg: NodeConfig, problem) -> tuple[float, ...]:
    """Check that ``problem`` has clients and fits ``cfg``'s rank and α; returns every site's
    scaling (:func:`~lorakit.problems.protocol.site_scalings`)."""
    check_problem_protocol(problem, clients=True)
    check_int("rank", cfg.rank, low=1, high=min(min(shape) for shape in problem.shapes))
    return site_scalings(problem, cfg.rank, cfg.alpha)


def check_graph(graph, problem) -> tuple[nx.Graph, np.ndarray]:
    """The connected graph (one node per client of ``problem``) and its adjacency matrix without
    self-loops."""
    if graph is None:
        raise ValueError("graph is required: a networkx.Graph or an N×N adjacency matrix")
    G = as_graph(graph)
    N = G.number_of_nodes()
    if N != problem.M:
        raise ValueError(
            f"graph has {N} nodes but the problem has M = {problem.M} clients: one node per client"
        )
    check_connected(G)
    return G, adjacency(G).toarray() > 0


def square_matrix(name: str, value) -> np.ndarray:
    """``value`` as a read-only float64 N×N matrix with finite non-negative entries."""
    X = np.array(value, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != X.shape[1]:
        raise ValueError(f"{name} must be a square N×N matrix, got shape {X.shape}")
    if not np.isfinite(X).all() or (X < 0).any():
        raise ValueError(f"{name} must have finite non-negative entries")
    X.setflags(write=False)
    return X


class Simulation:
    """One seeded run of a decentralized pattern. A subclass holds the factors as ``B``, ``A`` and
    gives ``unit`` ("hop", "round"; also the method that takes one and returns its record),
    ``first_record()``, ``log(record)`` (a row) and ``result(B, A)`` (the adapter a model keeps).
    """

    unit = "step"
    blowup = BLOWUP  # the divergence threshold (set by the seed loop)

    def __init__(self, cfg: NodeConfig, problem, seed: int, record: bool = True):
        self.cfg, self.problem, self.seed, self.record = cfg, problem, seed, record
        self.streams = Streams(seed)
        self.scalings = check_problem(cfg, problem)
        problem.reset()
        self.W0 = problem.start()
        self.s = problem.tree(self.scalings)  # each site's scaling, as a tree
        init = self.streams["init"]
        self.B, self.A = init_adapter(problem, cfg.rank, init, cfg.init, cfg.init_std)
        self.local = cfg.local()
        self.N, self.clients = problem.M, torch.arange(problem.M, device=problem.device)
        self.t = self.communicated = self.bytes = self.local_updates = 0
        self.state = None  # the optimizer's state (the token's, or every node's stacked); fresh
        self.good = None  # (t, B, A) of the last logged state that passed
        self.messages, self.rows = [], []  # dicts: the messages sent, the rows logged

    def adapted(self, B, A):
        """W = W0 + s·B·A per site (B and A may be stacks over nodes)."""
        return tree_map(lambda w, b, a, s: w + s * (b @ a), self.W0, B, A, self.s)

    def objective(self, B, A, weights: torch.Tensor) -> tuple[float, float]:
        """(f, ‖∇_A f‖² + ‖∇_B f‖²) of f = Σ_v w_v f_v at W0 + s·BA (``weights``: one per client),
        the factor gradients ∇_A = s·BᵀG, ∇_B = s·G·Aᵀ of G = ∇_W f (RW-LoRA eq. (12))."""
        p, W = self.problem, self.adapted(B, A)
        losses = p.client_losses(W)
        loss = float((losses * weights.to(losses)).sum())
        stack = tree_map(lambda x: x.expand(self.N, *x.shape), W)
        G = p.local_grads(stack, self.clients)
        G = tree_map(lambda g: (g * weights.to(g)[:, None, None]).sum(0), G)
        gA = tree_map(lambda b, g, s: s * (b.mT @ g), B, G, self.s)
        gB = tree_map(lambda g, a, s: s * (g @ a.mT), G, A, self.s)
        return loss, sq_norm(gA) + sq_norm(gB)

    def client_loss_table(self, W) -> torch.Tensor:
        """(f_c(W_i))_{i,c} for a stack of per-node weights W (node by node unless batched)."""
        p = self.problem
        if p.batched:
            return p.client_losses(W)
        nodes = zip(*leaves(W), strict=True)  # node i's matrix at every site
        return torch.stack([p.client_losses(tree_like(W, mats)) for mats in nodes])

    def cost(self, payload: Payload, extra_floats: int = 0) -> tuple[int, int]:
        """(floats, bytes) of one message."""
        floats = payload.floats + extra_floats
        sent = floats * self.cfg.bytes_per_float + payload.indices * self.cfg.bytes_per_index
        return floats, sent

    def diverged(self, text: str) -> DivergenceError:
        """The error of a run that diverged at ``self.t``: ``text``, then the step-size advice."""
        message = f"{self.cfg.method} diverged {text}. Lower gamma = {self.cfg.gamma:g}"
        return DivergenceError(message, step=self.t, seed=self.seed, frame=pd.DataFrame(self.rows))

    def run(self, count: int, log_every: int = 1, progress: bool = False) -> list[dict]:
        """Advance ``count`` hops or rounds on :func:`lorakit.divergence.iterate` (a further call
        goes on), logging every ``log_every``-th state and the last; the problem then holds the
        last logged state that passed, whatever ended the run. Returns every row so far."""
        where = dict(unit=self.unit, progress=progress, rows=self.rows, start=self.t)
        try:
            return iterate(_Steps(self), count, log_every, **where)
        finally:
            if self.good is not None:
                self.problem.commit(self.W0, *self.result(*self.good[1:]))


class _Steps:
    """A :class:`Simulation` in :func:`lorakit.divergence.iterate`'s protocol."""

    def __init__(self, sim: Simulation):
        self.sim, self.problem, self.streams, self.seed = sim, sim.problem, sim.streams, sim.seed
        self.cfg, self.blowup = sim.cfg, sim.blowup
        self.step = getattr(sim, sim.unit)  # hop() or round()

    def round(self, t: int, rows: list) -> dict:
        return self.step()

    def log(self, t: int, record) -> dict:
        return self.sim.log(record or self.sim.first_record())

    def state(self) -> tuple:
        self.sim.good = (self.sim.t, self.sim.B, self.sim.A)
        return self.sim.good

    def commit(self, t: int, good) -> None:
        pass  # Simulation.run commits, whatever ended the run

    def diverged(self, t: int, what: str, rows: list):
        raise self.sim.diverged(f"at {self.sim.unit} {t} (seed {self.seed}): {what}")


def run_simulations(cfg, problem, graph, unit, count, seeds, *options, simulations=None):
    """Run ``count`` hops or rounds (``unit``) per seed by :func:`lorakit.divergence.run_seeds`,
    the options (``log_every``, ``on_divergence``, ``blowup``, ``progress``, ``messages``) checked
    before ``cfg.simulations`` (or ``simulations``) makes the runs. Returns the frame (``attrs`` by
    the class's ``annotate(frame, sims)``) and, with ``messages``, every message's frame."""
    log_every, on_divergence, blowup, progress, messages = options
    check_problem(cfg, problem)
    count, seeds, log_every, blowup = check_run(
        unit, count, seeds, log_every, on_divergence, blowup, messages=messages, progress=progress
    )
    make = (simulations or cfg.simulations)(problem, graph, messages, run=True)
    frame, sims = run_seeds(
        seeds,
        lambda seed: make(check_int("seed", seed, low=0)),
        lambda sim: sim.run(count, log_every, progress),
        cfg.frame,
        on_divergence=on_divergence,
        blowup=blowup,
    )
    type(sims[0]).annotate(frame, sims)
    if not messages:
        return frame
    return frame, pd.DataFrame([m for sim in sims for m in sim.messages])


def largest(*trees) -> float:
    """The largest |entry| of the trees (the divergence check's scale)."""
    return float(torch.stack([x.abs().max() for t in trees for x in leaves(t)]).max())


def factor_trouble(new: float, old: float) -> str | None:
    """What is wrong with factors whose largest entry went from ``old`` to ``new`` (not finite, or
    10⁶-fold: a diverging update, refused before it is kept), or None."""
    if not math.isfinite(new):
        return "the factors are not finite"
    return f"the factors grew to size {new:.3g}" if new > 1e6 * (1.0 + old) else None


def compress_factors(compressor: Compressor, B, A, streams: Streams, batch_dims: int = 0) -> tuple:
    """(C(B), C(A), payload): the adapter (B, A) as one message of d = Σ_l r(m_l + n_l) entries
    through ``compressor`` (``compression`` stream; each of the first ``batch_dims`` indices its
    own message). The identity returns the factors themselves."""
    mats = leaves(B) + leaves(A)
    batch = mats[0].shape[:batch_dims]
    sizes = [math.prod(x.shape[batch_dims:]) for x in mats]
    payload = compressor.payload(sum(sizes))
    if compressor.is_identity:
        return B, A, payload
    flat = torch.cat([x.reshape(*batch, -1) for x in mats], dim=-1)
    out = compressor(flat, streams["compression"], batch_dims=batch_dims)
    parts = [y.reshape(x.shape) for y, x in zip(out.split(sizes, -1), mats, strict=True)]
    L = len(leaves(B))
    return tree_like(B, parts[:L]), tree_like(A, parts[L:]), payload
