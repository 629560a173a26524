"""RW-LoRA on Ray actors: one actor per node, the token passed from actor to actor (issue 16 §3).

The in-process walk (:mod:`lorakit.decentralized.walk`) runs every node in one process. Here node v
is a Ray actor holding *its own client* of the problem and nothing else — a
:class:`~lorakit.problems.federated.FederatedProblem`'s ``clients[v]``, or for a peft
``ModelProblem.split(N)`` a copy of the model with node v's rows — and the token (B, A, the
optimizer state when it travels) goes from actor to actor as Ray object references along the Markov
chain: the driver draws the path and passes node u's output to node v's next call, so the factors
move between the actors through Ray's object store and reach the driver only when it logs.

**The same walk.** :class:`RayWalkSimulation` is the in-process
:class:`~lorakit.decentralized.walk.WalkSimulation` with one part moved to the actors: a node's
visit (:meth:`~lorakit.decentralized.walk.WalkSimulation.visit`: its local steps
:func:`lorakit.local.train` on its client, the divergence test, the upload compressor when it
sends). Everything else is the walk's own code: the path and failure draws, token loss, message
accounting and the rows of the history. The update's random streams (``data`` for minibatches,
``noise`` for gradient noise, ``compression``; :class:`lorakit.rng.Streams`) travel with the token
as generator states (about 15 KB, not counted as message bytes: it is how one seed's draws stay
the in-process walk's), so for the same seed the path, the message table and the adapter are the
in-process walk's (``tests/test_ray_walk.py``: adapter to 1e-12 in float64, path and messages
identical).

**A killed actor** is a node that is down, handled as the in-process walk handles a failed node
(``node_failure``, RW-LoRA spec §4): before each hop the driver checks every actor (a ping), a walk
step drawn onto a dead node is *skipped* and the token goes to a node drawn from P_{u,·}
restricted to the live nodes (``failure`` stream; it waits at u when every node of the row is
down), and the message table lists the dead nodes in ``down``. Random ``node_failure`` draws still
apply on top. The holder has the token, so it is up in the in-process walk; an actor that dies
while it holds the token (between its check and its visit, or during it) raises
:class:`NodeLost`, and the problem keeps the last logged token; so does a walk whose starting node
is dead. ``timeout`` bounds every wait on an actor.

**The log** (the π-weighted global objective Σ_v π_v f_v, its factor-gradient norm, a measurement
and no step of Algorithm 1) is evaluated by the driver on its problem, exactly as the in-process
walk does, so a dead node's f_v still counts; ``log_every`` spaces it out.

**Randomness of the model itself.** A model with active dropout draws from torch's global
generator; in process that is one generator for every node, here each actor has its own, seeded
from (seed, node) at the start of a seed: runs are reproducible but their dropout draws are not the
in-process walk's (a warning says so).

Ray starts on first use (``ray.init()`` with its defaults) unless the caller started it. Actors run
on the CPU; ``actor_options`` goes to Ray's ``.options`` (``num_cpus``, ``resources``, ...).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

try:
    import ray
    from ray.exceptions import RayActorError
except ImportError as error:  # pragma: no cover - the ray extra is missing
    raise ImportError(
        "lorakit.distributed.ray_walk needs Ray: pip install 'lorakit[ray]'"
    ) from error

from .._validation import ArgumentTypeError, check_int, check_real
from ..decentralized.simulation import (
    check_problem,
    compress_factors,
    largest,
    run_simulations,
)
from ..decentralized.walk import RWLoRA, WalkSimulation
from ..divergence import BLOWUP
from ..local import train
from ..problems.federated import FederatedProblem
from ..problems.protocol import check_problem_protocol
from ..rng import Streams

__all__ = ["TOKEN_SOURCES", "NodeLost", "RayNodes", "RayWalkSimulation", "run", "simulator"]

#: The streams a node's visit draws from (minibatches, gradient noise, the upload compressor):
#: their generator states travel with the token.
TOKEN_SOURCES = ("data", "noise", "compression")


class NodeLost(RuntimeError):
    """The actor of the node holding the token died: the walk cannot go on without its holder."""


def _dropout_active(model: torch.nn.Module) -> bool:
    """True when a dropout module of ``model`` draws in training mode (p > 0)."""
    nn = torch.nn
    kinds = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
    kinds += (nn.FeatureAlphaDropout,)
    return any(isinstance(m, kinds) and m.training and m.p > 0 for m in model.modules())


def _node_part(problem, v: int):
    """What node v's actor holds: (``"matrix"``, client v's problem) or (``"model"``, the fields
    of a one-client ModelProblem over node v's rows)."""
    if isinstance(problem, FederatedProblem):
        return "matrix", problem.clients[v]
    from ..adapters import ModelProblem

    if isinstance(problem, ModelProblem):
        return "model", {
            "data": problem.batch(problem.indices(v)),
            "loss_fn": problem.loss_fn,
            "adapter": problem.adapter,
            "eval_batch_size": problem.eval_batch_size,
            "name": f"{problem.name} node {v}",
        }
    raise ArgumentTypeError(
        "problem must be a FederatedProblem or a lorakit.adapters.ModelProblem split into "
        f"clients (one Ray actor per client), got {type(problem).__name__}"
    )


class _Node:
    """Node v: its client (one-client problem: the node's data alone) and its trainer.

    Its visits take the token as they receive it (Ray resolves the references) and return the
    trained token, the state of the update's streams and a small summary for the driver."""

    def __init__(self, v: int, kind: str, part, model):
        self.v = v
        if kind == "matrix":
            self.problem = part
        else:
            from ..adapters import ModelProblem

            self.problem = ModelProblem(model, **part)
        self.cfg = self.local = self.scalings = self.W0 = None

    def ping(self) -> int:
        return self.v

    def begin(self, seed: int, cfg: RWLoRA, scalings, W0) -> int:
        """A new seed of the run ``cfg``: its local trainer, the sites' scalings, the base weights
        W0, and the model's own generator seeded from (seed, v)."""
        self.cfg, self.local, self.scalings, self.W0 = cfg, cfg.local(), tuple(scalings), W0
        gen = Streams(seed).substream("model", self.v)
        torch.manual_seed(int(torch.randint(0, 2**62, (), generator=gen)))
        return self.v

    def visit(self, B, A, state, rng: dict, send: bool):
        """The node's local steps on the token, then (``send``) the upload compressor
        (:meth:`lorakit.decentralized.walk.WalkSimulation.visit`, on this actor)."""
        streams = Streams(0)
        for source, s in rng.items():
            streams[source].set_state(s)
        B, A, state = train(
            self.problem, self.W0, B, A, self.scalings, None, self.local, streams, state=state
        )
        trained = sent = largest(B, A)
        payload = None
        if send and math.isfinite(trained):
            B, A, payload = compress_factors(self.cfg.compressor, B, A, streams)
            if not self.cfg.compressor.is_identity:
                sent = largest(B, A)
        rng = {source: streams[source].get_state() for source in TOKEN_SOURCES}
        return B, A, state, rng, (trained, sent, payload)


class RayNodes:
    """One Ray actor per node (client) of ``problem``, each holding only its client
    (module docstring), for any number of runs and configurations on that problem; use as a
    context manager, or call :meth:`shutdown`.

    ``actors[v]`` is node v's actor handle (``ray.kill(nodes.actors[v])`` takes node v down).
    ``timeout`` bounds every wait on an actor (seconds; None waits as long as it takes): a call
    that does not answer in time raises Ray's ``GetTimeoutError`` instead of hanging the walk.
    """

    def __init__(self, problem, *, actor_options: dict | None = None, timeout: float | None = None):
        if actor_options is not None and not isinstance(actor_options, dict):
            raise ArgumentTypeError(f"actor_options must be a dict, got {actor_options!r}")
        self.timeout = (
            None if timeout is None else check_real("timeout", timeout, low=0.0, low_open=True)
        )
        check_problem_protocol(problem, clients=True)
        self.problem, self.N = problem, problem.M
        model = getattr(problem, "model", None)
        if model is not None and _dropout_active(model):
            warnings.warn(
                "the model has active dropout: each Ray actor draws it from its own generator, so "
                "the run is reproducible but not equal to the in-process walk (one generator)",
                stacklevel=2,
            )
        parts = [_node_part(problem, v) for v in range(self.N)]
        if not ray.is_initialized():
            ray.init()
        problem.reset()  # the actors' model copies: the problem's initial state
        model_ref = ray.put(model) if model is not None else None
        cls = ray.remote(_Node).options(**(actor_options or {}))
        self.actors = [cls.remote(v, kind, part, model_ref) for v, (kind, part) in enumerate(parts)]
        self.get([a.ping.remote() for a in self.actors])  # every actor up before the first hop
        self.dead: set[int] = set()

    def alive(self) -> np.ndarray:
        """Which nodes' actors answer a ping now (a boolean mask; a dead actor stays dead)."""
        live = [v for v in range(self.N) if v not in self.dead]
        refs = [self.actors[v].ping.remote() for v in live]
        for v, ref in zip(live, refs, strict=True):
            try:
                self.get(ref)
            except RayActorError:
                self.dead.add(v)
        return np.array([v not in self.dead for v in range(self.N)])

    def get(self, refs):
        """``ray.get`` bounded by ``timeout``."""
        return ray.get(refs, timeout=self.timeout)

    def shutdown(self) -> None:
        """Stop every actor."""
        for a in self.actors:
            ray.kill(a)
        self.actors = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()


class RayWalkSimulation(WalkSimulation):
    """One seeded RW-LoRA run whose nodes are Ray actors (module docstring): the in-process
    :class:`~lorakit.decentralized.walk.WalkSimulation` with each visit run by the visited node's
    actor and dead actors counted as down nodes. Between visits ``B``, ``A`` and ``state`` are Ray
    object references; :meth:`token` fetches the factors."""

    def __init__(self, cfg, problem, seed, P, pi, record=True, *, nodes: RayNodes):
        super().__init__(cfg, problem, seed, P, pi, record)
        if not isinstance(nodes, RayNodes) or nodes.problem is not problem:
            raise ValueError("nodes must be the RayNodes started for this problem")
        self.nodes = nodes
        # The update's streams, fresh for this seed as in process: they travel with the token.
        self.rng = {source: self.streams[source].get_state() for source in TOKEN_SOURCES}
        W0 = ray.put(self.W0)
        live = [v for v in range(self.N) if v not in nodes.dead]
        refs = [nodes.actors[v].begin.remote(self.seed, cfg, self.scalings, W0) for v in live]
        for v, ref in zip(live, refs, strict=True):
            try:
                nodes.get(ref)
            except RayActorError:
                nodes.dead.add(v)
        if self.node in nodes.dead:
            raise NodeLost(
                f"the walk starts at node {self.node} (seed {seed}), whose Ray actor is dead: "
                "start the walk at a live node (RWLoRA(start=...))"
            )

    def down_nodes(self, u: int) -> np.ndarray | None:
        """The walk's random failures (``node_failure``) and every node whose actor is dead."""
        down = super().down_nodes(u)
        dead = ~self.nodes.alive()
        if dead[u]:
            raise self.lost(u)
        if not dead.any():
            return down
        return dead if down is None else down | dead

    def visit(self, u: int, send: bool) -> tuple:
        """Node u's actor trains the token and, when it moves on, compresses it; the driver keeps
        references (the factors stay in Ray's object store) and the summary."""
        actor = self.nodes.actors[u]
        B, A, state, rng, info = actor.visit.options(num_returns=5).remote(
            self.B, self.A, self.visit_state(u), self.rng, send
        )
        try:
            trained, sent, payload = self.nodes.get(info)
        except RayActorError as error:
            self.nodes.dead.add(u)
            raise self.lost(u) from error
        self.rng = rng  # the update's draws happened, whether or not the token arrives
        self.check_token(u, trained)
        return B, A, state, sent, payload

    def lost(self, u: int) -> NodeLost:
        return NodeLost(
            f"node {u}'s Ray actor died holding the token at hop {self.t} (seed {self.seed}); the "
            f"problem keeps the token of hop {self.good[0] if self.good else 0}"
        )

    def token(self) -> tuple:
        """The token's factors (B, A), fetched from the object store."""
        return self.result(self.B, self.A)

    def result(self, B, A) -> tuple:
        if isinstance(B, ray.ObjectRef):
            B, A = self.nodes.get([B, A])
        return B, A


def simulator(cfg: RWLoRA, problem, graph, seed: int = 0, *, nodes: RayNodes):
    """A step-by-step walk on ``nodes``' actors (``.hop()``; the token by ``.token()``; its holder
    ``.node``), as :meth:`lorakit.decentralized.walk.RWLoRA.simulator` in process."""
    check_problem(cfg, problem)
    P, pi = cfg.transition_matrix(problem, graph)
    return RayWalkSimulation(cfg, problem, check_int("seed", seed, low=0), P, pi, nodes=nodes)


def run(
    cfg: RWLoRA,
    problem,
    hops: int,
    seeds=0,
    *,
    graph,
    nodes: RayNodes | None = None,
    actor_options: dict | None = None,
    timeout: float | None = None,
    log_every: int = 1,
    messages: bool = False,
    on_divergence: str = "raise",
    blowup: float = BLOWUP,
    progress: bool = False,
):
    """:meth:`lorakit.decentralized.walk.RWLoRA.run` with one Ray actor per node: the same
    arguments, the same history (and message table with ``messages=True``), the same path.

    ``nodes`` reuses running actors (:class:`RayNodes`; a killed one counts as a down node);
    otherwise actors are started (with ``actor_options`` and ``timeout``) and stopped at the end.
    """
    if not isinstance(cfg, RWLoRA):
        raise ArgumentTypeError(f"cfg must be an RWLoRA configuration, got {type(cfg).__name__}")
    started = []

    def simulations(problem, graph, record, run):  # the actors start once the arguments are checked
        P, pi = cfg.run_chain(problem, graph)
        if nodes is None:
            started.append(RayNodes(problem, actor_options=actor_options, timeout=timeout))
        on = nodes if nodes is not None else started[0]
        return lambda seed: RayWalkSimulation(cfg, problem, seed, P, pi, record, nodes=on)

    try:
        options = (log_every, on_divergence, blowup, progress, messages)
        return run_simulations(
            cfg, problem, graph, "hops", hops, seeds, *options, simulations=simulations
        )
    finally:
        for own in started:
            own.shutdown()
