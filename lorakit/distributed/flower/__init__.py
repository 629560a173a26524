"""lorakit's federated methods as a Flower app (Message API: ``ServerApp``, ``ClientApp``,
``Grid``, ``ArrayRecord``), equal to the in-process engine round by round.

Every federated method of :data:`lorakit.methods.REGISTRY` runs: the FSLoRA family (``fslora``,
``fedit``, ``hetero_lora``, ``fslora_topk``, ``flex_lora``, ``fedstack_lora``) and
``fed_rac_lora``. The server is the engine itself (README "Architecture": one engine per pattern):
:class:`FlowerRun` and :class:`FlowerFedRACRun` are the engines' seed runs with their clients'
local training sent to SuperNodes, so the cohort, the index sets and sketches, the aggregation,
the server step, the divergence checks, the history and the message table are the engine's own
code; a SuperNode runs the engine's per-client functions (:func:`lorakit.federated.lora.
client_update`, ``FedRACRun.local_train``) on the clients it holds. The wire carries exactly what
the message table counts (:mod:`.wire`; FSLoRA: a client's k_i columns of B and rows of A, or the
whole adapter with ``download="full"``), and each round logs its communication as FlowerTune does.

Modules: :mod:`.spec` (the run config), :mod:`.wire` (trees and compressed messages in
``ArrayRecord``), :mod:`.link` (nodes, partitions, one exchange per round), :mod:`.fslora` and
:mod:`.fed_rac` (each method's server run and client round), :mod:`.client` (the ``ClientApp``),
:mod:`.server` (the ``ServerApp``, :func:`run_flower`).

Run it with ``flwr run .`` from the repository root (``[tool.flwr.app]`` in ``pyproject.toml``;
README "Scaling out") on real SuperNodes or on a simulation SuperLink (Ray).
Equality with ``lk.run``: bit for bit where local training draws nothing (estimator ``gd``, a
deterministic compressor, no LoRA dropout), in distribution otherwise (:mod:`.client`).
"""

from .client import ClientStreams, NodeState, handle_query, handle_train
from .client import app as client_app
from .fed_rac import FlowerFedRACRun
from .fed_rac import client_round as fed_rac_client_round
from .fslora import FlowerRun, client_round
from .link import Link, node_map
from .server import FlowerResult, run_flower, start_ray
from .server import app as server_app
from .spec import DEFAULTS, RunSpec, build_problem
from .wire import decode_message, encode_message, pack, pack_into, payload_bytes, unpack

__all__ = [
    "DEFAULTS",
    "ClientStreams",
    "FlowerFedRACRun",
    "FlowerResult",
    "FlowerRun",
    "Link",
    "NodeState",
    "RunSpec",
    "build_problem",
    "client_app",
    "client_round",
    "decode_message",
    "encode_message",
    "fed_rac_client_round",
    "handle_query",
    "handle_train",
    "node_map",
    "pack",
    "pack_into",
    "payload_bytes",
    "run_flower",
    "server_app",
    "start_ray",
    "unpack",
]
