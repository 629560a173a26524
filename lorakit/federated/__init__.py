"""Federated patterns: server rounds over many simulated clients.

``lk.make(name, **config)`` (or ``make_federated``) builds a registered method
(:data:`lorakit.methods.REGISTRY`), ``lk.run(name, problem, rounds, ...)`` runs it; every method of
the FSLoRA family is a configuration of :class:`~lorakit.federated.lora.FederatedLoRA`:

================  =====================================================================
``fslora``        random k_i-subset per client and round, scale r/k_i (FSLoRA Alg. 1)
``fedit``         k_i = r for everyone: vanilla federated LoRA (FSLoRA without sketching)
``hetero_lora``   the leading k_i components, no rescaling, zero-padded average (HeteroLoRA)
``fslora_topk``   FSLoRA with top-k sparsified uploads (FSLoRA App. C.2)
``flex_lora``     leading k_i components; the server averages the products B_i A_i and
                  re-factors them by truncated SVD (FlexLoRA)
``fedstack_lora`` a fresh adapter each round; the server merges the stacked products into
                  the base (FedStackLoRA / FLoRA)
``fed_rac_lora``  Fed-RAC-LoRA (RAC-LoRA Alg. 2): one shared frozen sketch per round, each
                  cohort client trains the other factor over a reshuffled epoch, the server
                  merges β·mean into W (:class:`~lorakit.federated.fed_rac.FedRACLoRA`)
================  =====================================================================
"""

from __future__ import annotations

import warnings

from .._validation import check_choice
from ..methods import REGISTRY, make
from . import budgets
from .fed_rac import FedRACLoRA
from .lora import FederatedLoRA

__all__ = ["FEDERATED_METHODS", "FedRACLoRA", "FederatedLoRA", "budgets", "make_federated"]

#: The federated part of :data:`lorakit.methods.REGISTRY`: name → (build, description).
FEDERATED_METHODS = {
    name: (m.build, m.description) for name, m in REGISTRY.items() if m.pattern == "federated"
}


def make_federated(
    method: str, rank, gamma=None, *, lr=None, **config
) -> FederatedLoRA | FedRACLoRA:
    """A registered federated method, e.g. ``make_federated("fslora", 8, 0.1, budgets=4)``:
    :func:`lorakit.make` restricted to the federated pattern, with its old signature (rank, step
    size). ``lr=`` (this function's old name for the step size, used in README examples) still
    works, with a ``DeprecationWarning``: the step size is ``gamma``."""
    check_choice("method", method, FEDERATED_METHODS)
    if lr is not None:
        if gamma is not None:
            raise TypeError("make_federated got both gamma and lr: give gamma")
        warnings.warn(
            "make_federated(lr=...) is deprecated: the step size is gamma", DeprecationWarning, 2
        )
        gamma = lr
    return make(method, rank, *(() if gamma is None else (gamma,)), **config)
