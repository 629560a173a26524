"""Every method a user can run, at both scales: the table the conformance properties iterate over.

One :class:`Case` per registered method (chain, federated, decentralized, asynchronous), with how to
run it on a matrix problem with known constants and on the float64 peft toy of ``peft_toys``
(fc1 8×6, fc2 3×8, rank 2, 64 rows in 4 iid clients). ``tests/test_cli.py`` checks that the table
names exactly the (method, pattern) pairs ``lorakit methods`` lists, so a new method must be added
here to pass (and ``tests/test_conformance.py`` that each has a row of bad inputs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import networkx as nx
from peft_toys import toy_problem

import lorakit as lk
from lorakit.asynchronous import AsyncFL
from lorakit.decentralized.gossip import GossipLoRA
from lorakit.decentralized.walk import RWLoRA
from lorakit.federated import make_federated

M = 4  # clients / nodes
RANK = 2
RING = nx.cycle_graph(M)


@dataclass(frozen=True)
class Case:
    """``run(problem, steps, seeds=0, **run_kwargs)`` returns the method's frame."""

    method: str
    pattern: str  # "chain" | "federated" | "decentralized" | "asynchronous"
    run: Callable
    matrix: Callable  # () -> a matrix problem the method accepts
    model: Callable = field(default=lambda: toy_problem(rank=RANK, clients=M))  # () -> ModelProblem
    #: keyword arguments that make the run diverge at both scales (a step size far too large)
    diverge: dict = field(default_factory=dict)
    #: keyword arguments that make the model-scale run take good steps, then diverge within 8
    diverge_model: dict = field(default_factory=dict)
    #: per scale, a :class:`Split`: in 6 steps one seed diverges while the other finishes
    one_seed_diverges: dict = field(default_factory=dict)

    def __str__(self):
        return self.method


def _chain(method, gamma=0.05, **kw):
    def run(problem, steps, seeds=0, *, gamma=gamma, **run_kw):
        return lk.run(method, problem, steps, seeds=seeds, rank=RANK, gamma=gamma, **kw, **run_kw)

    # The model toy has no clients for a chain; the matrix problem is a 5×3 quadratic.
    return Case(
        method,
        "chain",
        run,
        matrix=lambda: lk.problems.quadratic(5, 3, L=1.0, mu=0.1, seed=0),
        model=lambda: toy_problem(rank=RANK),
        diverge={"gamma": 1e6},
    )


def _federated(method, **kw):
    def run(problem, rounds, seeds=0, *, gamma=0.3, cohort=None, **run_kw):
        cfg = make_federated(method, RANK, gamma, cohort=cohort, **kw)
        return cfg.run(problem, rounds, seeds=seeds, **run_kw)

    return Case(method, "federated", run, matrix=_quadratics, diverge={"gamma": 1e6})


def _quadratics():
    return lk.problems.heterogeneous_quadratics(M, 5, 3, L=0.5, seed=0)


def _walk(problem, hops, seeds=0, *, gamma=0.3, **run_kw):
    return RWLoRA(rank=RANK, gamma=gamma, transition="lazy").run(
        problem, hops, seeds=seeds, graph=RING, **run_kw
    )


def _gossip(problem, rounds, seeds=0, *, gamma=0.3, **run_kw):
    return GossipLoRA(rank=RANK, gamma=gamma).run(
        problem, rounds, seeds=seeds, graph=RING, **run_kw
    )


def _async(rule, rank):
    def run(problem, updates, seeds=0, *, gamma=0.3, cohort=None, **run_kw):
        return AsyncFL(rule, gamma, rank=rank, local_steps=2, cohort=cohort).run(
            problem, updates, seeds=seeds, **run_kw
        )

    return run


CASES: list[Case] = [
    _chain("lora", update="sgd"),
    _chain("asymm_lora"),
    _chain("cola", steps_per_link=2, update="sgd"),
    _chain("rac_lora"),
    _chain("bernoulli_lora", p=0.5),
    _federated("fslora", budgets=1),
    _federated("fedit"),
    _federated("hetero_lora", budgets=[1, 2, 1, 2]),
    _federated("fslora_topk", budgets=1),
    _federated("flex_lora", budgets=[1, 2, 1, 2]),
    _federated("fedstack_lora", budgets=[1, 2, 1, 2]),
    _federated("fed_rac_lora"),
    Case("rw_lora", "decentralized", _walk, matrix=_quadratics, diverge={"gamma": 1e9}),
    Case("gossip_lora", "decentralized", _gossip, matrix=_quadratics, diverge={"gamma": 1e9}),
    Case("fedavg", "asynchronous", _async("fedavg", None), _quadratics, diverge={"gamma": 1e9}),
    Case("fedasync", "asynchronous", _async("fedasync", None), _quadratics, diverge={"gamma": 1e9}),
    Case("fedbuff", "asynchronous", _async("fedbuff", RANK), _quadratics, diverge={"gamma": 1e9}),
]


# -- divergence (tests/test_divergence.py) -----------------------------------------------------------
class Split(NamedTuple):
    """Run 6 steps with ``kwargs``: seed ``finishes`` (0 or 1) finishes, the other seed diverges,
    by its loss passing ``blowup`` (``by_threshold``) or by a non-finite/exploding update."""

    finishes: int
    kwargs: dict
    by_threshold: bool = True


def _split(finishes, by_threshold=True, **kwargs) -> Split:
    return Split(finishes, kwargs, by_threshold)


# Measured on these problems (the loss of each seed over 6 steps, ``blowup`` between the two
# seeds' largest loss ratios |f|/max(1, |f₀|)); ``cohort=2`` where the seeds would otherwise draw
# nothing different (FedIT, HeteroLoRA, FlexLoRA at model scale; synchronous FedAvg).
_DIVERGENCE = {
    "lora": ({"gamma": 10.0}, _split(0, gamma=1.2, blowup=1e100), _split(1, gamma=1e2 / 3, blowup=3.5e17)),
    "asymm_lora": ({"gamma": 1e4}, _split(1, gamma=5.0, blowup=512.0), _split(1, gamma=1e3, blowup=1600.0)),
    "cola": ({"gamma": 10.0}, _split(0, gamma=1.5, blowup=3.8e6), _split(1, gamma=1e2 / 3, blowup=2.3e5)),
    "rac_lora": ({"gamma": 1e4}, _split(1, gamma=5.0, blowup=12.2), _split(0, gamma=1e3 / 3, blowup=320.0)),
    "bernoulli_lora": ({"gamma": 1e4}, _split(1, gamma=5.0, blowup=44.0), _split(0, gamma=1e3 / 3, blowup=320.0)),
    "fslora": ({"gamma": 1e4}, _split(0, False, gamma=1.5, blowup=21.0), _split(1, gamma=1e3 / 3, blowup=1e27)),
    "fedit": ({"gamma": 1e4}, _split(0, False, gamma=1.5, blowup=3.0), _split(0, gamma=10.0, cohort=2, blowup=1.6e4)),
    "hetero_lora": ({"gamma": 1e4}, _split(0, False, gamma=2.0, blowup=1.84e17), _split(0, gamma=10.0, cohort=2, blowup=100.0)),
    "fslora_topk": ({"gamma": 1e4}, _split(0, False, gamma=1.5, blowup=8.5e5), _split(1, gamma=1e3 / 3, blowup=5e26)),
    "flex_lora": ({"gamma": 1e4}, _split(0, False, gamma=1.5, blowup=7.05e16), _split(0, False, gamma=10.0, cohort=2, blowup=1.4e11)),
    "fedstack_lora": ({"gamma": 1e4}, _split(1, gamma=30.0, blowup=1.3e5), _split(1, gamma=1e3 / 3, blowup=33.0)),
    "fed_rac_lora": ({"gamma": 600.0}, _split(0, gamma=10.0, blowup=9000.0), _split(1, gamma=20.0, blowup=33.3)),
    "rw_lora": ({"gamma": 1e3}, _split(0, gamma=0.8, blowup=2.25e10), _split(0, gamma=1e2 / 3, blowup=5.2e15)),
    "gossip_lora": ({"gamma": 1e3}, _split(1, False, gamma=1.5, blowup=9.8e27), _split(1, gamma=1e2 / 3, blowup=2.4e16)),
    "fedavg": ({"gamma": 30.0, "blowup": 12.0}, _split(0, gamma=7.0, cohort=2, blowup=2.1738e9), _split(0, gamma=10.0, cohort=2, blowup=4.95)),
    "fedasync": ({"gamma": 1200.0}, _split(1, gamma=30.0, blowup=5.05e8), _split(0, gamma=120.0, blowup=82.5)),
    "fedbuff": ({"gamma": 30.0}, _split(1, gamma=1.5, blowup=2.6e4), _split(0, gamma=10.0, blowup=106.0)),
}  # fmt: skip
CASES = [
    replace(c, diverge_model=d[0], one_seed_diverges={"matrix": d[1], "model": d[2]})
    for c, d in ((c, _DIVERGENCE[c.method]) for c in CASES)
]
