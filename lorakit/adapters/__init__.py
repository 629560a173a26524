"""Model scale: the methods of lorakit on real peft LoRA models.

:mod:`~lorakit.adapters.sites` is the matrix view of every peft ``LoraLayer`` (W0, B, A, s);
:class:`~lorakit.adapters.problem.ModelProblem` pairs a peft model with its data. The chain,
federated, decentralized and asynchronous methods accept a ``ModelProblem`` wherever they accept a
matrix problem, with the same names, configurations and results tables.
"""

from .problem import ModelProblem, default_loss
from .sites import (
    SIDES,
    Site,
    adapter_state,
    freeze,
    load_adapter,
    load_adapter_state,
    save_adapter,
    site_frame,
    sites,
    state_bytes,
    swapped,
)

__all__ = [
    "SIDES",
    "ModelProblem",
    "Site",
    "adapter_state",
    "default_loss",
    "freeze",
    "load_adapter",
    "load_adapter_state",
    "save_adapter",
    "site_frame",
    "sites",
    "state_bytes",
    "swapped",
]
