"""Every method a user can run, at both scales: the table the conformance properties iterate over.

One :class:`Case` per registered method (chain, federated, decentralized, asynchronous), with how to
run it on a matrix problem with known constants and on the float64 peft toy of ``peft_toys``
(fc1 8×6, fc2 3×8, rank 2, 64 rows in 4 iid clients). ``tests/test_conformance.py`` checks that the
table names every method ``lorakit methods`` lists, so a new method must be added here to pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
    def run(problem, rounds, seeds=0, *, lr=0.3, **run_kw):
        return make_federated(method, RANK, lr, **kw).run(problem, rounds, seeds=seeds, **run_kw)

    return Case(method, "federated", run, matrix=_quadratics, diverge={"lr": 1e6})


def _quadratics():
    return lk.problems.heterogeneous_quadratics(M, 5, 3, L=0.5, seed=0)


def _walk(problem, hops, seeds=0, *, lr=0.3, **run_kw):
    return RWLoRA(rank=RANK, lr=lr, transition="lazy").run(
        problem, hops, seeds=seeds, graph=RING, **run_kw
    )


def _gossip(problem, rounds, seeds=0, *, lr=0.3, **run_kw):
    return GossipLoRA(rank=RANK, lr=lr).run(problem, rounds, seeds=seeds, graph=RING, **run_kw)


def _async(rule, adapter):
    def run(problem, updates, seeds=0, *, lr=0.3, **run_kw):
        return AsyncFL(rule, lr, adapter=adapter, local_steps=2).run(
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
    Case("rw_lora", "decentralized", _walk, matrix=_quadratics, diverge={"lr": 1e9}),
    Case("gossip_lora", "decentralized", _gossip, matrix=_quadratics, diverge={"lr": 1e9}),
    Case("fedavg", "asynchronous", _async("fedavg", None), _quadratics, diverge={"lr": 1e9}),
    Case("fedasync", "asynchronous", _async("fedasync", None), _quadratics, diverge={"lr": 1e9}),
    Case("fedbuff", "asynchronous", _async("fedbuff", RANK), _quadratics, diverge={"lr": 1e9}),
]
