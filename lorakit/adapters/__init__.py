"""Model scale: the methods of lorakit on real peft LoRA models.

:mod:`~lorakit.adapters.sites` is the matrix view of every peft ``LoraLayer`` (W0, B, A, s), one
:class:`~lorakit.adapters.sites.Site` subclass per module kind (``nn.Linear`` and GPT-2's
``Conv1D``, ``nn.Embedding``, ``nn.Conv1d/2d/3d``): a new module kind is one Site subclass, and
:class:`~lorakit.adapters.problem.ModelProblem` works on it unchanged;
:class:`~lorakit.adapters.problem.ModelProblem` pairs a peft model with its data. The chain,
federated, decentralized and asynchronous methods accept a ``ModelProblem`` wherever they accept a
matrix problem, with the same names, configurations and results tables.
:func:`~lorakit.adapters.saving.save_trained` saves what any run trained (the adapter, or the merged
model when the run wrote the base weights) and :func:`~lorakit.adapters.saving.load_trained` reads it.
"""

from .problem import ModelProblem, default_loss
from .saving import base_changes, load_trained, save_trained, track_base
from .sites import (
    SIDES,
    ConvSite,
    EmbeddingSite,
    LinearSite,
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
    "ConvSite",
    "EmbeddingSite",
    "LinearSite",
    "ModelProblem",
    "Site",
    "adapter_state",
    "base_changes",
    "default_loss",
    "freeze",
    "load_adapter",
    "load_adapter_state",
    "load_trained",
    "save_adapter",
    "save_trained",
    "site_frame",
    "sites",
    "state_bytes",
    "swapped",
    "track_base",
]
