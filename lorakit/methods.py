"""The one registry of every method lorakit runs, and the one call that runs any of them.

Each :class:`Method` names a pattern (who talks to whom), a description, its source (paper and
algorithm), a ``build(*args, **config)`` that returns its configuration object (the arguments go
to the configuration class unchanged, so a renamed field needs no change here) and the unit of its
iteration count::

    lk.make("fslora", rank=2, gamma=0.3, budgets=1)            # a FederatedLoRA
    frame = lk.run("rw_lora", problem, 100, seeds=range(3), rank=2, gamma=0.3, graph=ring)
    frame.attrs["unit"], frame.attrs["messages"]               # "hop", one row per transfer

=================  =============  ======  ==========================================================
pattern            methods        unit    configuration
=================  =============  ======  ==========================================================
``chain``          5              step    :class:`~lorakit.chain.Chain` (LoRA, AsymmLoRA, COLA,
                                          RAC-LoRA, Bernoulli-LoRA)
``federated``      7              round   :class:`~lorakit.federated.lora.FederatedLoRA` (the
                                          FSLoRA family), :class:`~lorakit.federated.fed_rac.
                                          FedRACLoRA`
``decentralized``  2              hop /   :class:`~lorakit.decentralized.walk.RWLoRA` (a hop of
                                  round   the token), :class:`~lorakit.decentralized.gossip.
                                          GossipLoRA` (a gossip round)
``asynchronous``   3              update  :class:`~lorakit.asynchronous.clock.AsyncFL` (one rule
                                          each: FedAvg, FedAsync, FedBuff)
=================  =============  ======  ==========================================================

In the chain, LoRA is a chain of one link training both factors; COLA merges and restarts it;
AsymmLoRA is RAC-LoRA with T = 1 (the sketch is never redrawn); RAC-LoRA left/right is
Bernoulli-LoRA with p = 1/0. The non-smooth Bernoulli-LoRA (Algorithm 3) is ``bernoulli_lora`` on a
non-smooth problem with a constant ``gamma`` or ``gamma="polyak"``. FedIT is FSLoRA with k_i = r.

:data:`METHODS` (``lk.METHODS``) is the chain's part of :data:`REGISTRY`, as it always was;
:data:`lorakit.federated.FEDERATED_METHODS` is the federated part.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ._validation import check_choice
from .asynchronous.clock import AsyncFL
from .chain import Chain
from .coins import alternating, always, bernoulli, both
from .decentralized.gossip import GossipLoRA
from .decentralized.walk import RWLoRA
from .federated.fed_rac import FedRACLoRA
from .federated.lora import FederatedLoRA

__all__ = ["METHODS", "PATTERNS", "RECORDS", "REGISTRY", "Attached", "Method", "make", "run"]

#: The communication patterns (README "Architecture": one engine each).
PATTERNS = ("chain", "federated", "decentralized", "asynchronous")
#: The unit of a pattern's iteration count (gossip, a decentralized method, counts rounds).
_UNITS = {"chain": "step", "federated": "round", "decentralized": "hop", "asynchronous": "update"}
#: Frames a pattern's ``run`` returns beside the history when asked (``messages=True``, ...).
RECORDS = ("messages", "events")


@dataclass(frozen=True)
class Method:
    """One registered method: ``build(*args, **config)`` returns its configuration object, an
    instance of ``config``, whose ``run(problem, count, seeds, **options)`` runs it."""

    name: str
    pattern: str  # "chain" | "federated" | "decentralized" | "asynchronous"
    description: str
    source: str  # paper and algorithm
    build: Callable
    config: type
    unit: str  # what the iteration count counts: "step", "round", "hop" or "update"

    @property
    def paper(self) -> str:
        """The source (the name notebook 00's table reads)."""
        return self.source

    def run_options(self) -> tuple[str, ...]:
        """The keyword-only arguments of the configuration's ``run`` (``log_every``,
        ``on_divergence``, ``blowup``, ``progress``; ``graph`` for a decentralized method, ...)."""
        params = inspect.signature(self.config.run).parameters.values()
        return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


class Attached(pd.DataFrame):
    """A frame carried in another frame's ``attrs`` (``messages``, ``events``). pandas deep-copies
    ``attrs`` on every operation and compares them in ``pd.concat``, where two plain frames raise
    "truth value of a DataFrame is ambiguous"; an Attached frame is shared, not copied, and equal
    only to itself, so run frames still concatenate (their attrs are then dropped, as pandas does
    for differing attrs). Anything computed from it is a plain :class:`pandas.DataFrame`."""

    @property
    def _constructor(self):
        return pd.DataFrame

    def __deepcopy__(self, memo=None):
        return self

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    __hash__ = None


# -- chain ----------------------------------------------------------------------------------------
def _lora(rank, gamma, *, update="sgd", **kw) -> Chain:
    return Chain(rank, gamma, coin=both(), steps_per_link=None, update=update, method="lora", **kw)


def _asymm_lora(rank, gamma, *, side="left", **kw) -> Chain:
    return Chain(rank, gamma, coin=always(side), steps_per_link=None, method="asymm_lora", **kw)


def _cola(rank, gamma, *, steps_per_link=1, update="sgd", **kw) -> Chain:
    return Chain(
        rank, gamma, coin=both(), steps_per_link=steps_per_link, update=update, method="cola", **kw
    )


def _rac_lora(rank, gamma, *, side="left", **kw) -> Chain:
    check_choice("side", side, ("left", "right", "alternating"))
    coin = alternating() if side == "alternating" else always(side)
    return Chain(rank, gamma, coin=coin, method="rac_lora", **kw)


def _bernoulli_lora(rank, gamma, *, p=0.5, **kw) -> Chain:
    return Chain(rank, gamma, coin=bernoulli(p), method="bernoulli_lora", **kw)


# -- federated: the FSLoRA family is one FederatedLoRA, configured ---------------------------------
def _federated(method, **fixed):
    def build(*args, **config) -> FederatedLoRA:
        return FederatedLoRA(*args, **fixed, **config, method=method)

    return build


def _fedit(*args, budgets=None, **config) -> FederatedLoRA:
    cfg = FederatedLoRA(*args, **config, method="fedit")  # budgets None: k_i = r
    if budgets not in (None, cfg.rank):
        raise ValueError("fedit trains the full rank: budgets must be None (k_i = r)")
    return cfg


def _fslora_topk(*args, topk_ratio=0.5, **config) -> FederatedLoRA:
    return FederatedLoRA(*args, topk_ratio=topk_ratio, **config, method="fslora_topk")


def _rule(rule):
    def build(*args, **config) -> AsyncFL:
        return AsyncFL(rule, *args, **config)

    return build


def _m(name, pattern, description, source, build, config, unit=None) -> Method:
    return Method(name, pattern, description, source, build, config, unit or _UNITS[pattern])


#: Every method, by name: chain, federated, decentralized, asynchronous (the order ``lorakit
#: methods`` lists them in).
REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        _m("lora", "chain",
           "LoRA: train B and A jointly from (B=0, A random), no restart",
           "Hu et al. 2021; RAC-LoRA §2.1", _lora, Chain),
        _m("asymm_lora", "chain",
           "AsymmLoRA: one random frozen factor for the whole run",
           "Zhu et al. 2024; RAC-LoRA §2.2", _asymm_lora, Chain),
        _m("cola", "chain",
           "COLA: train both factors, merge and restart every K steps",
           "Xia et al. 2024; RAC-LoRA §2.3", _cola, Chain),
        _m("rac_lora", "chain",
           "RAC-LoRA: fresh frozen sketch each link (left, right or alternating)",
           "RAC-LoRA Algorithm 1", _rac_lora, Chain),
        _m("bernoulli_lora", "chain",
           "Bernoulli-LoRA: a Be(p) coin picks the trained factor each link",
           "Bernoulli-LoRA Algorithms 1-6", _bernoulli_lora, Chain),
        _m("fslora", "federated",
           "FSLoRA: each client trains a random k_i-subset of the rank-r adapter",
           "FSLoRA Algorithm 1", _federated("fslora"), FederatedLoRA),
        _m("fedit", "federated",
           "FedIT: vanilla federated LoRA, every client trains the full rank r",
           "Zhang et al. 2024; FSLoRA baseline (k_i = r)", _fedit, FederatedLoRA),
        _m("hetero_lora", "federated",
           "HeteroLoRA: leading k_i components, zero-padded average",
           "Cho et al. 2024; FSLoRA baseline",
           _federated("hetero_lora", selection="leading"), FederatedLoRA),
        _m("fslora_topk", "federated",
           "FSLoRA with top-k sparsified uploads",
           "FSLoRA App. C.2", _fslora_topk, FederatedLoRA),
        _m("flex_lora", "federated",
           "FlexLoRA: average the products B_i A_i, re-factor by SVD",
           "Bai et al. 2024; FSLoRA baseline",
           _federated("flex_lora", selection="leading", aggregation="svd"), FederatedLoRA),
        _m("fedstack_lora", "federated",
           "FedStackLoRA: merge stacked products into the base",
           "Wang et al. 2024 (FLoRA); FSLoRA baseline",
           _federated("fedstack_lora", selection="leading", aggregation="stack"), FederatedLoRA),
        _m("fed_rac_lora", "federated",
           "Fed-RAC-LoRA: a shared frozen sketch, RR local epochs",
           "RAC-LoRA Algorithm 2", FedRACLoRA, FedRACLoRA),
        _m("rw_lora", "decentralized",
           "RW-LoRA: one LoRA token walks the graph, each visited node trains it",
           "RW-LoRA Algorithm 1", RWLoRA, RWLoRA, "hop"),
        _m("gossip_lora", "decentralized",
           "gossip Dec-LoRA: every node trains, then averages with neighbours",
           "RW-LoRA baseline (spec rw_lora.md §5)", GossipLoRA, GossipLoRA, "round"),
        _m("fedavg", "asynchronous",
           "FedAvg: synchronous rounds, the server waits for the slowest client of the cohort",
           "McMahan et al. 2017; Async-FL synchronous baseline", _rule("fedavg"), AsyncFL),
        _m("fedasync", "asynchronous",
           "FedAsync: each arriving model is mixed in at once, weighted by its staleness",
           "Xie et al. 2019; Async-FL extension (spec §3.8)", _rule("fedasync"), AsyncFL),
        _m("fedbuff", "asynchronous",
           "FedBuff: arriving deltas are buffered, K at a time, weighted by their staleness",
           "Nguyen et al. 2022; Async-FL extension (spec §3.8)", _rule("fedbuff"), AsyncFL),
    )
}  # fmt: skip

#: The chain methods (``lk.METHODS``): the chain's part of :data:`REGISTRY`.
METHODS: dict[str, Method] = {k: m for k, m in REGISTRY.items() if m.pattern == "chain"}


def make(method: str, *args, **config):
    """The configuration object of a registered method, e.g. ``make("bernoulli_lora", 2, 0.1,
    p=0.3)`` (a :class:`~lorakit.chain.Chain`) or ``make("fslora", rank=8, gamma=0.1, budgets=4)``;
    the arguments go to the configuration class unchanged."""
    check_choice("method", method, REGISTRY)
    return REGISTRY[method].build(*args, **config)


def run(method: str, problem, steps, seeds=0, **kwargs) -> pd.DataFrame:
    """Run any registered method: ``make(method, **config).run(problem, steps, seeds, **options)``.

    ``steps`` counts the method's unit (steps, rounds, hops or updates; ``None`` with
    ``time_budget=`` for an asynchronous method). ``kwargs`` are split by name: the keyword
    arguments of the configuration's ``run`` (``log_every``, ``on_divergence``, ``blowup``,
    ``progress``, and per pattern ``graph=`` for a decentralized method, ``time_budget=``/
    ``max_events=`` for an asynchronous one, ...; :meth:`Method.run_options`) go to the run, every
    other one to the configuration. ``problem`` is a matrix problem or a
    :class:`~lorakit.adapters.ModelProblem`.

    Returns the history frame (one row per logged iteration and seed) with ``frame.attrs["unit"]``
    and, where the pattern has them, ``frame.attrs["messages"]`` (federated and decentralized: one
    row per message) or ``frame.attrs["events"]`` (asynchronous: one row per client job), as
    :class:`Attached` frames; ``messages=False``/``events=False`` skips recording them.
    """
    check_choice("method", method, REGISTRY)
    entry = REGISTRY[method]
    options = entry.run_options()
    run_kw = {key: kwargs.pop(key) for key in list(kwargs) if key in options}
    for record in RECORDS:
        if record in options:
            run_kw.setdefault(record, True)
    out = entry.build(**kwargs).run(problem, steps, seeds, **run_kw)
    recorded = [record for record in RECORDS if run_kw.get(record)]
    frame, extra = out if recorded else (out, None)
    if recorded:
        frame.attrs[recorded[0]] = Attached(extra)
    frame.attrs["unit"] = entry.unit
    return frame
