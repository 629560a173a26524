"""The ClientApp: a SuperNode trains its lorakit clients with lorakit's local trainer.

A ``train`` message carries the run's spec (:mod:`.spec`), the ``work`` table and the download;
the node builds the spec's problem once per process (cached: the zoo model, its data and the
split, so every message after the first costs only the local steps), checks that it holds the
client (client mod P = its ``partition-id``), runs the method's client round
(:func:`.fslora.client_round`, :func:`.fed_rac.client_round`) and replies with the upload and an
``info`` table. A ``query`` message asks for the node's partition (:func:`.link.node_map`).

Randomness: a client draws its minibatches, gradient noise, compression and model dropout from its
own streams (:class:`ClientStreams`, seeded by (seed, source, round, client)), as a real device
would. The in-process engine draws them from one stream per source, shared by the cohort in
order, so a Flower run equals it bit for bit where local training draws nothing (``estimator``
``gd``, a deterministic compressor such as top-k, no LoRA dropout) and in distribution otherwise.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from ...rng import Streams
from . import fed_rac, fslora
from .link import NUM_PARTITIONS, PARTITION_ID
from .spec import RunSpec
from .wire import pack_into, unpack

__all__ = ["ClientStreams", "NodeState", "app", "handle_query", "handle_train", "problem_of"]

_CACHE: dict[str, tuple] = {}  # spec key → (spec, configuration, problem): one build per process


class ClientStreams:
    """Client ``client``'s generators in round ``round``: source s draws from
    ``Streams(seed).substream(f"{s}@{round}", client)``, so clients and rounds never share a
    stream (the same seed gives the same draws on every node)."""

    def __init__(self, seed: int, round: int, client: int):
        self.seed, self.round, self.client = seed, round, client
        self.base = Streams(seed)
        self.gens = {}

    def __getitem__(self, source: str):
        if source not in self.gens:
            self.gens[source] = self.base.substream(f"{source}@{self.round}", self.client)
        return self.gens[source]

    def substream(self, source: str, key: int):
        return self.base.substream(f"{source}@{self.round}.{self.client}", key)


class NodeState:
    """Trees a node keeps between messages (FedStackLoRA's base, Fed-RAC-LoRA's W) with the
    round they hold, in the Flower ``Context.state`` (which persists across a run's messages)."""

    def __init__(self, state: RecordDict, prefix: str):
        self.state, self.prefix = state, prefix

    def get(self, name: str, default):
        """(round, tree) kept under ``name``, or (0, ``default``)."""
        key = f"{self.prefix}.{name}"
        if key not in self.state:
            return 0, default
        done = int(self.state[f"{key}.round"]["round"])
        return done, unpack(self.state[key], "x", default)

    def put(self, name: str, tree, round: int) -> None:
        key = f"{self.prefix}.{name}"
        self.state[key] = pack_into(ArrayRecord(), "x", tree)
        self.state[f"{key}.round"] = ConfigRecord({"round": int(round)})


def problem_of(spec: RunSpec):
    """(configuration, problem) of ``spec``, built once per process."""
    if spec.key not in _CACHE:
        # The zoo pre-trains its base model, and the caller may be in no_grad.
        with torch.enable_grad():
            problem = spec.problem()
        problem.reset()
        _CACHE[spec.key] = (spec.method(), problem)
    return _CACHE[spec.key]


def handle_train(content: RecordDict, context: Context) -> RecordDict:
    """One client's round from a ``train`` message's content; returns the reply's content."""
    spec = RunSpec.parse(dict(content["spec"]))
    work = dict(content["work"])
    client = int(work["client"])
    parts = context.node_config.get(NUM_PARTITIONS)
    mine = context.node_config.get(PARTITION_ID)
    if parts is not None and client % int(parts) != int(mine):
        raise ValueError(
            f"client {client} is held by partition {client % int(parts)}, not by this node "
            f"(partition {mine} of {parts})"
        )
    cfg, problem = problem_of(spec)
    streams = ClientStreams(int(work["seed"]), int(work["round"]), client)
    state = NodeState(context.state, f"lorakit.{spec.key}")
    protocol = fed_rac if spec.name == "fed_rac_lora" else fslora
    up, info = protocol.client_round(problem, cfg, work, content["down"], streams, state)
    reply = RecordDict({"info": ConfigRecord({"client": client, **info})})
    if up is not None:
        reply["up"] = up
    return reply


def handle_query(context: Context) -> RecordDict:
    """The node's partition (its ``node_config``)."""
    node = {k: v for k, v in context.node_config.items() if k in (PARTITION_ID, NUM_PARTITIONS)}
    return RecordDict({"node": ConfigRecord(node)})


app = ClientApp()


@app.train()
def _train(message: Message, context: Context) -> Message:
    return Message(handle_train(message.content, context), reply_to=message)


@app.query()
def _query(message: Message, context: Context) -> Message:
    return Message(handle_query(context), reply_to=message)
