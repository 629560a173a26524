"""Asynchronous federated learning on a virtual clock (a labelled extension, spec async_fl.md §3.8).

The paper behind this pattern describes no concrete asynchronous rule (spec §0, §3.3): its
experiment and theory are synchronous FedAvg. :class:`AsyncFL` supplies the standard rules —
synchronous FedAvg, FedAsync (Xie et al. 2019) and FedBuff (Nguyen et al. 2022) — in an
event-driven simulator with client speeds, communication delay, a concurrency limit, crashes and
a maximum staleness (:mod:`lorakit.asynchronous.clock`). Each rule is a registered method
(:data:`lorakit.methods.REGISTRY`): ``lk.run("fedbuff", problem, updates, ...)``.
"""

from __future__ import annotations

from .clock import MAX_EVENTS, RULES, SPEEDS, STALENESS, AsyncFL, Interrupted, staleness_weight

__all__ = [
    "MAX_EVENTS",
    "RULES",
    "SPEEDS",
    "STALENESS",
    "AsyncFL",
    "Interrupted",
    "staleness_weight",
]
