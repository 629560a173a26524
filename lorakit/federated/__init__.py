"""Federated patterns: server rounds over many simulated clients.

``make_federated(name, rank, lr, **config)`` builds a registered method; every method of the
FSLoRA family is a configuration of :class:`~lorakit.federated.lora.FederatedLoRA`:

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

from .._validation import check_choice
from . import budgets
from .fed_rac import FedRACLoRA
from .lora import FederatedLoRA

__all__ = ["FEDERATED_METHODS", "FedRACLoRA", "FederatedLoRA", "budgets", "make_federated"]


def _fslora(rank, lr, **kw):
    return FederatedLoRA(rank, lr, method="fslora", **kw)


def _fedit(rank, lr, **kw):
    if kw.get("budgets") not in (None, rank):
        raise ValueError("fedit trains the full rank: budgets must be None (k_i = r)")
    return FederatedLoRA(rank, lr, **{**kw, "budgets": None}, method="fedit")


def _hetero_lora(rank, lr, **kw):
    return FederatedLoRA(rank, lr, selection="leading", method="hetero_lora", **kw)


def _fslora_topk(rank, lr, topk_ratio=0.5, **kw):
    return FederatedLoRA(rank, lr, topk_ratio=topk_ratio, method="fslora_topk", **kw)


def _flex_lora(rank, lr, **kw):
    return FederatedLoRA(rank, lr, selection="leading", aggregation="svd", method="flex_lora", **kw)


def _fedstack_lora(rank, lr, **kw):
    return FederatedLoRA(
        rank, lr, selection="leading", aggregation="stack", method="fedstack_lora", **kw
    )


def _fed_rac_lora(rank, lr, **kw):
    return FedRACLoRA(rank, lr, **kw)


FEDERATED_METHODS = {
    "fslora": (_fslora, "FSLoRA: each client trains a random k_i-subset of the rank-r adapter"),
    "fedit": (_fedit, "FedIT: vanilla federated LoRA, every client trains the full rank r"),
    "hetero_lora": (_hetero_lora, "HeteroLoRA: leading k_i components, zero-padded average"),
    "fslora_topk": (_fslora_topk, "FSLoRA with top-k sparsified uploads"),
    "flex_lora": (_flex_lora, "FlexLoRA: average the products B_i A_i, re-factor by SVD"),
    "fedstack_lora": (_fedstack_lora, "FedStackLoRA: merge stacked products into the base"),
    "fed_rac_lora": (_fed_rac_lora, "Fed-RAC-LoRA: a shared frozen sketch, RR local epochs"),
}


def make_federated(method: str, rank: int, lr: float, **config) -> FederatedLoRA:
    """A registered federated method, e.g. ``make_federated("fslora", 8, 0.1, budgets=4)``."""
    check_choice("method", method, FEDERATED_METHODS)
    return FEDERATED_METHODS[method][0](rank, lr, **config)
