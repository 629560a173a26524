"""Asynchronous federated learning on a virtual clock (a labelled extension, spec async_fl.md §3.8).

The paper behind this pattern describes no concrete asynchronous rule (spec §0, §3.3): its
experiment and theory are synchronous FedAvg. :class:`AsyncFL` supplies the standard rules —
synchronous FedAvg, FedAsync (Xie et al. 2019) and FedBuff (Nguyen et al. 2022) — in an
event-driven simulator with client speeds, communication delay, a concurrency limit, crashes and
a maximum staleness (:mod:`lorakit.asynchronous.clock`).
"""

from __future__ import annotations

from .clock import MAX_EVENTS, RULES, SPEEDS, STALENESS, AsyncFL, Interrupted, staleness_weight

#: The asynchronous methods a user can run (``lorakit methods`` lists them): the rules of
#: :class:`AsyncFL`, name → description; run one with ``AsyncFL(name, lr, ...)``.
ASYNC_METHODS = {
    "fedavg": "FedAvg: synchronous rounds, the server waits for the slowest client of the cohort",
    "fedasync": "FedAsync: each arriving model is mixed in at once, weighted by its staleness",
    "fedbuff": "FedBuff: arriving deltas are buffered, K at a time, weighted by their staleness",
}

__all__ = [
    "ASYNC_METHODS",
    "MAX_EVENTS",
    "RULES",
    "SPEEDS",
    "STALENESS",
    "AsyncFL",
    "Interrupted",
    "staleness_weight",
]
