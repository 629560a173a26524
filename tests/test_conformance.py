"""One table of bad inputs against every public entry point (issue 11 §6).

In the spirit of scikit-learn's ``check_estimator`` and peft's common tester: each row is
(entry point, bad input, expected error type, a fragment of its message). A refusal must be a
``ValueError`` or ``TypeError`` naming the argument; a legitimate value that does nothing must warn
(``UserWarning``). :func:`test_every_method_and_entry_point_has_a_row` fails when a method
(``tests/patterns.py`` CASES, :data:`lorakit.METHODS`, :data:`lorakit.federated.FEDERATED_METHODS`,
the asynchronous rules) or a public entry point has no row, so a new one must be added here.

The catalogue behind the table (a few hundred bad and extreme inputs, with their outcomes) is
``tests/benchmarks/bad_inputs.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from patterns import CASES
from peft_toys import toy_model, toy_problem

import lorakit as lk
from lorakit import lowrank, theory, zoo
from lorakit._validation import ArgumentTypeError, check_seeds
from lorakit.adapters import ModelProblem
from lorakit.asynchronous import RULES, AsyncFL
from lorakit.decentralized import markov
from lorakit.decentralized.gossip import GossipLoRA
from lorakit.decentralized.walk import RWLoRA
from lorakit.federated import FEDERATED_METHODS, budgets, make_federated
from lorakit.federated.partition import partition

RING = nx.cycle_graph(4)
NAN = float("nan")


@dataclass(frozen=True)
class Row:
    entry: str  # the public entry point (a method name for method rows)
    case: str  # the bad input, as it reads in the test id
    call: Callable[[], object]
    error: type  # ValueError, TypeError or UserWarning (a legitimate value that does nothing)
    match: str  # a fragment of the message (a regular expression)


def quad(**kw):
    return lk.problems.quadratic(5, 3, L=1.0, mu=0.1, seed=0, **kw)


def fed(**kw):
    return lk.problems.heterogeneous_quadratics(4, 5, 3, L=0.5, seed=0, **kw)


def toy_data(n=16, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return {"x": torch.randn(n, 6, generator=g, dtype=dtype), "labels": torch.randint(0, 3, (n,))}


# -- rows per family ------------------------------------------------------------------------------
CHAIN_KW = {
    "lora": {"update": "sgd"},
    "asymm_lora": {},
    "cola": {"update": "sgd"},
    "rac_lora": {},
    "bernoulli_lora": {"p": 0.5},
}


def chain_rows(method: str) -> list[Row]:
    kw = {"rank": 2, "gamma": 0.1, **CHAIN_KW[method]}

    def run(problem=None, steps=3, seeds=0, **change):
        problem = quad() if problem is None else problem
        return lk.run(method, problem, steps, seeds, **{**kw, **change})

    return [
        Row(method, "steps=0", lambda: run(steps=0), ValueError, r"steps must be in \[1, inf\]"),
        Row(method, "steps=1.5", lambda: run(steps=1.5), TypeError, "steps must be an integer"),
        Row(method, "rank=0", lambda: run(rank=0), ValueError, r"rank must be in \[1, inf\]"),
        Row(method, "rank>min(m,n)", lambda: run(rank=4), ValueError, r"rank must be in \[1, 3\]"),
        Row(method, "gamma=nan", lambda: run(gamma=NAN), ValueError, "gamma must be a finite"),
        Row(method, "gamma=-1", lambda: run(gamma=-1.0), ValueError, r"gamma must be in \(0"),
        Row(method, "seeds=-1", lambda: run(seeds=-1), ValueError, r"seeds must be in \[0"),
        Row(method, "seeds=1.5", lambda: run(seeds=1.5), TypeError, "seeds must be a non-neg"),
        Row(method, "seeds=None", lambda: run(seeds=None), TypeError, "seeds must be a non-neg"),
        Row(method, "seeds=[]", lambda: run(seeds=[]), ValueError, "non-empty sequence"),
        Row(method, "seeds=True", lambda: run(seeds=True), TypeError, "seeds must be a non-neg"),
        Row(method, "seeds=['0']", lambda: run(seeds=["0"]), TypeError, r"seeds\[0\] must be an"),
        Row(method, "problem=None", lambda: lk.run(method, None, 3, **kw), TypeError,
            "problem must be a MatrixProblem .* or a lorakit.adapters.ModelProblem"),
        Row(method, "problem=str", lambda: lk.run(method, "quadratic", 3, **kw), TypeError,
            "problem must be a MatrixProblem .* or a lorakit.adapters.ModelProblem"),
        Row(method, "log_every=0", lambda: run(log_every=0), ValueError, "log_every must be"),
        Row(method, "model rank != peft r", lambda: run(toy_problem(rank=2), rank=3),
            ValueError, "rank"),
    ]  # fmt: skip


def federated_rows(method: str) -> list[Row]:
    kw = (
        {"budgets": [1, 2, 1, 2]} if method in ("hetero_lora", "flex_lora", "fedstack_lora") else {}
    )

    def run(problem=None, rounds=2, seeds=0, rank=2, gamma=0.1, **change):
        problem = fed() if problem is None else problem
        return make_federated(method, rank, gamma, **{**kw, **change}).run(problem, rounds, seeds)

    rows = [
        Row(method, "rank=0", lambda: run(rank=0), ValueError, r"rank must be in \[1"),
        Row(method, "rank>min(m,n)", lambda: run(rank=4), ValueError, r"rank must be in \[1, 3\]"),
        Row(method, "gamma=inf", lambda: run(gamma=float("inf")), ValueError,
            "gamma must be a finite"),
        Row(method, "gamma=0", lambda: run(gamma=0.0), ValueError, r"gamma must be in \(0"),
        Row(method, "rounds=0", lambda: run(rounds=0), ValueError, "rounds must be in"),
        Row(method, "seeds=1.5", lambda: run(seeds=1.5), TypeError, "seeds must be a non-neg"),
        Row(method, "seeds=[]", lambda: run(seeds=[]), ValueError, "non-empty sequence"),
        Row(method, "seeds=[0,-1]", lambda: run(seeds=[0, -1]), ValueError, r"seeds\[1\] must be"),
        Row(method, "problem=None", lambda: make_federated(method, 2, 0.1, **kw).run(None, 2),
            ValueError, "problem must be a FederatedProblem"),
        Row(method, "problem=single node", lambda: run(quad()), ValueError,
            "problem must be a FederatedProblem"),
        Row(method, "model without clients", lambda: run(toy_problem()), ValueError, "clients"),
        Row(method, "bytes_per_float=-4", lambda: run(bytes_per_float=-4), ValueError,
            r"bytes_per_float must be in \[1"),
        Row(method, "cohort>M", lambda: run(cohort=9), ValueError, r"cohort must be in \[1, 4\]"),
        Row(method, "unknown keyword", lambda: run(lrr=1), TypeError, "lrr"),
    ]  # fmt: skip
    if method != "fed_rac_lora":  # Fed-RAC-LoRA has no dropout
        rows.append(
            Row(
                method,
                "dropout=1",
                lambda: run(dropout=1.0),
                ValueError,
                r"dropout must be in \[0, 1\)",
            )
        )
    return rows


def walk_rows() -> list[Row]:
    def walk(**kw):
        return RWLoRA(**{"rank": 2, "gamma": 0.1, "transition": "lazy", **kw})

    return [
        Row("rw_lora", "rank=0", lambda: walk(rank=0), ValueError, r"rank must be in \[1"),
        Row("rw_lora", "rank>min(m,n)", lambda: walk(rank=4).run(fed(), 3, graph=RING), ValueError,
            r"rank must be in \[1, 3\]"),
        Row("rw_lora", "hops=0", lambda: walk().run(fed(), 0, graph=RING), ValueError, "hops must"),
        Row("rw_lora", "seeds=1.5", lambda: walk().run(fed(), 3, 1.5, graph=RING), TypeError,
            "seeds must be a non-neg"),
        Row("rw_lora", "problem=None", lambda: walk().run(None, 3, graph=RING), ValueError,
            "problem must be a FederatedProblem"),
        Row("rw_lora", "graph=None", lambda: walk().run(fed(), 3, graph=None), ValueError,
            "graph is required"),
        Row("rw_lora", "graph='ring'", lambda: walk().run(fed(), 3, graph="ring"), TypeError,
            "graph must be a networkx.Graph"),
        Row("rw_lora", "graph of 5 nodes", lambda: walk().run(fed(), 3, graph=nx.cycle_graph(5)),
            ValueError, "graph has 5 nodes"),
        Row("rw_lora", "token_loss=1", lambda: walk(token_loss=1.0), ValueError,
            r"token_loss must be in \[0, 1\)"),
        Row("rw_lora", "node_failure=1", lambda: walk(node_failure=1.0), ValueError,
            r"node_failure must be in \[0, 1\)"),
        Row("rw_lora", "laziness=1", lambda: walk(laziness=1.0), ValueError,
            r"laziness must be in \[0, 1\)"),
        Row("rw_lora", "transition=identity", lambda: walk(transition=np.eye(4)), ValueError,
            "transition is the identity"),
        Row("rw_lora", "bytes_per_float=-4", lambda: walk(bytes_per_float=-4), ValueError,
            r"bytes_per_float must be in \[1"),
    ]  # fmt: skip


def gossip_rows() -> list[Row]:
    def gossip(**kw):
        return GossipLoRA(**{"rank": 2, "gamma": 0.1, **kw})

    return [
        Row("gossip_lora", "gamma=nan", lambda: gossip(gamma=NAN), ValueError,
            "gamma must be a finite"),
        Row("gossip_lora", "rounds=-1", lambda: gossip().run(fed(), -1, graph=RING), ValueError,
            "rounds must be in"),
        Row("gossip_lora", "seeds=None", lambda: gossip().run(fed(), 2, None, graph=RING),
            TypeError, "seeds must be a non-neg"),
        Row("gossip_lora", "graph disconnected", lambda: gossip().run(fed(), 2,
            graph=nx.empty_graph(4)), ValueError, "connected"),
        Row("gossip_lora", "mixing=identity", lambda: gossip(mixing=np.eye(4)), UserWarning,
            "mixing is the identity: nothing mixes"),
        Row("gossip_lora", "link_failure=1", lambda: gossip(link_failure=1.0), UserWarning,
            "nothing mixes"),
        Row("gossip_lora", "mixing not symmetric", lambda: gossip(mixing=np.triu(np.ones((3, 3)))),
            ValueError, "mixing must be symmetric"),
        Row("gossip_lora", "bytes_per_float=0", lambda: gossip(bytes_per_float=0), ValueError,
            r"bytes_per_float must be in \[1"),
    ]  # fmt: skip


def async_rows(rule: str) -> list[Row]:
    def run(updates=2, seeds=0, problem=None, **kw):
        problem = fed() if problem is None else problem
        return AsyncFL(rule, 0.1, **kw).run(problem, updates, seeds)

    return [
        Row(rule, "updates=0", lambda: run(updates=0), ValueError, "updates must be in"),
        Row(rule, "seeds='0'", lambda: run(seeds="0"), TypeError, "seeds must be a non-neg"),
        Row(rule, "seeds=[]", lambda: run(seeds=[]), ValueError, "non-empty sequence"),
        Row(rule, "problem=None", lambda: AsyncFL(rule, 0.1).run(None, 2), ValueError,
            "problem must be a FederatedProblem"),
        Row(rule, "bytes_per_float=-4", lambda: run(bytes_per_float=-4), ValueError,
            r"bytes_per_float must be in \[1"),
        Row(rule, "bytes_per_index=-4", lambda: run(bytes_per_index=-4), ValueError,
            r"bytes_per_index must be in \[1"),
        Row(rule, "delay=nan", lambda: run(delay=NAN), ValueError, "delay must be a finite"),
        Row(rule, "rank>min(m,n)", lambda: run(rank=4), ValueError, r"rank must be in"),
        Row(rule, "lora_alpha without rank", lambda: AsyncFL(rule, 0.1, lora_alpha=4.0),
            UserWarning, "lora_alpha does nothing with rank=None"),
        Row(rule, "speed of 2 clients", lambda: run(speed=(1.0, 2.0)), ValueError,
            "speed must give one time per client"),
    ]  # fmt: skip


def lowrank_rows(name: str) -> list[Row]:
    fn = lowrank.LOWRANK_METHODS[name]
    X = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return [
        Row(name, "integer X", lambda: fn(torch.arange(24).reshape(6, 4), 2), TypeError,
            "X must be a floating-point tensor"),
        Row(name, "bool X", lambda: fn(X > 0, 2), TypeError, "X must be a floating-point"),
        Row(name, "X on meta", lambda: fn(torch.zeros(6, 4, device="meta"), 2), ValueError,
            "X is on the meta device"),
        Row(name, "X with NaN", lambda: fn(torch.full((6, 4), NAN), 2), ValueError,
            "X must have finite entries"),
        Row(name, "X 1-D", lambda: fn(torch.zeros(4), 1), ValueError, "X must be a 2-D"),
        Row(name, "X ndarray", lambda: fn(np.zeros((6, 4)), 1), ValueError,
            "X must be a torch.Tensor"),
        Row(name, "rank=0", lambda: fn(X, 0), ValueError, r"rank must be in \[1, 4\]"),
        Row(name, "rank=5", lambda: fn(X, 5), ValueError, r"rank must be in \[1, 4\]"),
        Row(name, "rank=2.0", lambda: fn(X, 2.0), TypeError, "rank must be an integer"),
    ]  # fmt: skip


P_RING = markov.metropolis_hastings(RING)
L_RING = markov.lazy(P_RING)

MARKOV_ROWS = [
    Row("lazy", "laziness=1", lambda: markov.lazy(P_RING, 1.0), ValueError,
        r"laziness must be in \[0, 1\)"),
    Row("lazy", "P not stochastic", lambda: markov.lazy(np.ones((3, 3))), ValueError,
        "row-stochastic"),
    Row("lazy", "sparse P not stochastic", lambda: markov.lazy(sp.csr_array(np.ones((3, 3)))),
        ValueError, "row-stochastic"),
    Row("lazy", "P='ring'", lambda: markov.lazy("ring"), TypeError, "P must be a square matrix"),
    Row("lazy", "P non-square", lambda: markov.lazy(np.ones((2, 3))), ValueError,
        "P must be a non-empty square"),
    Row("mixing_time", "eps=0", lambda: markov.mixing_time(L_RING, 0.0), ValueError, "eps"),
    Row("mixing_time", "eps=nan", lambda: markov.mixing_time(L_RING, NAN), ValueError, "eps"),
    Row("mixing_time", "t_max=-1", lambda: markov.mixing_time(L_RING, 0.25, t_max=-1),
        ValueError, "t_max"),
    Row("levin_peres_bounds", "eps=1.5", lambda: markov.levin_peres_bounds(L_RING, 1.5),
        ValueError, "eps"),
    Row("tv_distance_curve", "t_max=1.5", lambda: markov.tv_distance_curve(L_RING, 1.5),
        TypeError, "t_max must be an integer"),
    Row("stationary_distribution", "P=ones", lambda: markov.stationary_distribution(
        np.ones((3, 3))), ValueError, "row-stochastic"),
    Row("spectral", "P=None", lambda: markov.spectral(None), ValueError, "P must be"),
    Row("metropolis_hastings", "pi negative", lambda: markov.metropolis_hastings(
        RING, [1, -1, 1, 1]), ValueError, "pi"),
    Row("pi_from_sizes", "negative size", lambda: markov.pi_from_sizes([1, -2, 3]), ValueError,
        "sizes"),
    Row("validate_chain", "graph of 5 nodes", lambda: markov.validate_chain(
        P_RING, nx.cycle_graph(5)), ValueError, "the graph has 5 nodes"),
    Row("sparse_spectral_bounds", "eps=0", lambda: markov.sparse_spectral_bounds(RING, 0.0),
        ValueError, "eps"),
    Row("make_graph", "kind=nonsense", lambda: lk.decentralized.make_graph("nonsense", 4),
        ValueError, "kind must be one of"),
    Row("make_graph", "N=0", lambda: lk.decentralized.make_graph("ring", 0), ValueError, "N"),
]  # fmt: skip

PROBLEM_BUILDERS = {
    "quadratic": lambda **k: lk.problems.quadratic(5, 3, **k),
    "counterexample": lambda **k: lk.problems.counterexample(**k),
    "heterogeneous_quadratics": lambda **k: lk.problems.heterogeneous_quadratics(3, 5, 3, **k),
    "smooth_nonconvex": lambda **k: lk.problems.smooth_nonconvex(5, 3, **k),
    "frobenius_distance": lambda **k: lk.problems.frobenius_distance(5, 3, **k),
    "l1_distance": lambda **k: lk.problems.l1_distance(5, 3, **k),
    "linear_regression": lambda **k: lk.problems.linear_regression(3, 2, n_finetune=20, **k),
    "logistic_regression": lambda **k: lk.problems.logistic_regression(3, 1, n_samples=40, **k),
    "digits_softmax": lambda **k: lk.problems.digits_softmax(**k),
    "federated_digits": lambda **k: lk.problems.federated_digits(**k),
}


def problem_rows(name: str) -> list[Row]:
    build = PROBLEM_BUILDERS[name]
    seeds = [] if name == "counterexample" else [  # the counterexample draws nothing
        Row(name, "seed=-1", lambda: build(seed=-1), ValueError, "seed must be in"),
        Row(name, "seed=1.5", lambda: build(seed=1.5), TypeError, "seed must be an integer"),
        Row(name, "seed=True", lambda: build(seed=True), TypeError, "seed must be an integer"),
    ]  # fmt: skip
    return [
        *seeds,
        Row(name, "dtype=float16", lambda: build(dtype=torch.float16), ValueError,
            "dtype must be one of .*half-precision"),
        Row(name, "dtype=bfloat16", lambda: build(dtype=torch.bfloat16), ValueError,
            "dtype must be one of"),
        Row(name, "dtype=int64", lambda: build(dtype=torch.int64), ValueError, "dtype must be"),
        Row(name, "device='meta'", lambda: build(device="meta"), ValueError, "device must hold"),
        Row(name, "device='nonsense'", lambda: build(device="nonsense"), ValueError,
            "device must be a torch device"),
    ]  # fmt: skip


def linreg():
    return lk.problems.linear_regression(3, 2, n_finetune=20, seed=0)


DATA_ROWS = [
    Row("make_problem", "name=nonsense", lambda: lk.problems.make_problem("nonsense"),
        ValueError, "name must be one of"),
    Row("quadratic", "mu>L", lambda: lk.problems.quadratic(5, 3, L=1.0, mu=2.0), ValueError,
        "mu"),
    Row("split", "problem=quadratic", lambda: lk.problems.split(quad(), 2), ValueError,
        "problem must be a finite-sum"),
    Row("split", "overlapping parts", lambda: lk.problems.split(linreg(), 2,
        parts=[list(range(12)), list(range(8, 20))]), ValueError, "parts must be disjoint"),
    Row("split", "seed=-1", lambda: lk.problems.split(linreg(), 2, seed=-1), ValueError, "seed"),
    Row("partition", "labels=None", lambda: partition(None, 2), ValueError, "labels"),
    Row("partition", "dirichlet, one class", lambda: partition([0] * 10, 2, "dirichlet",
        generator=0), UserWarning, "single class"),
    Row("partition", "generator=1.5", lambda: partition([0, 1, 0, 1], 2, generator=1.5),
        ValueError, "generator"),
    Row("budgets", "fractional list", lambda: make_federated("fslora", 2, 0.1,
        budgets=[1, 1.5, 1, 2]).run(fed(), 1), TypeError, r"budgets\[1\] must be an integer"),
    Row("budgets", "fractional int", lambda: make_federated("fslora", 2, 0.1,
        budgets=1.5).run(fed(), 1), TypeError, "budgets must be an int"),
    Row("budgets", "budgets='x'", lambda: make_federated("fslora", 2, 0.1,
        budgets="x").run(fed(), 1), TypeError, "budgets must be an int"),
    Row("budgets", "fixed(1.5)", lambda: budgets.fixed(1.5), TypeError, "k must be an integer"),
    Row("ModelProblem", "model=None", lambda: ModelProblem(None, toy_data()), TypeError,
        "model must be a torch.nn.Module"),
    Row("ModelProblem", "data=None", lambda: ModelProblem(toy_model(2), None), ValueError,
        "data must be a non-empty dict"),
    Row("ModelProblem", "overlapping clients", lambda: ModelProblem(toy_model(2), toy_data(),
        clients=[torch.arange(0, 10), torch.arange(5, 16)]), ValueError,
        "clients must be disjoint: index 5 appears twice"),
    Row("ModelProblem", "fractional client indices", lambda: ModelProblem(toy_model(2),
        toy_data(), clients=[torch.tensor([0.5, 1.0])]), TypeError, "integer sample indices"),
    Row("ModelProblem", "data on meta", lambda: ModelProblem(toy_model(2), {"x": torch.zeros(
        4, 6, dtype=torch.float64, device="meta")}), ValueError, r"data\['x'\] is on the meta"),
    Row("ModelProblem", "float32 model, float64 data", lambda: ModelProblem(toy_model(
        2, dtype=torch.float32), toy_data()), ValueError, r"data\['x'\] is torch.float64"),
    Row("ModelProblem", "float16 model", lambda: ModelProblem(toy_model(2, dtype=torch.float16),
        toy_data(dtype=torch.float16)), ValueError, "model's dtype .* must be one of"),
    Row("ModelProblem.split", "dirichlet without labels", lambda: toy_problem().split(
        4, "dirichlet"), ValueError, "needs labels"),
    Row("ModelProblem.split", "seed=-1", lambda: toy_problem().split(4, seed=-1), ValueError,
        r"seed must be in \[0"),
    Row("ModelProblem.split", "seed=1.5", lambda: toy_problem().split(4, seed=1.5), TypeError,
        "seed must be an integer"),
    Row("ModelProblem.split", "generator=0", lambda: toy_problem().split(4, generator=0),
        TypeError, "split takes seed="),
    Row("Chain", "rank=0", lambda: lk.Chain(0, 0.1), ValueError, "rank"),
    Row("Chain", "coin='left'", lambda: lk.Chain(2, 0.1, coin="left"), TypeError,
        "coin must be a lorakit.coins.Coin"),
    Row("Chain", "sketch on meta", lambda: lk.Chain(2, 0.1, sketch=lk.sketches.fixed(
        torch.zeros(5, 2, device="meta"))), ValueError, "matrix is on the meta device"),
    Row("make", "method=nonsense", lambda: lk.make("nonsense", 2, 0.1), ValueError,
        "method must be one of"),
    Row("make_federated", "method=nonsense", lambda: make_federated("nonsense", 2, 0.1),
        ValueError, "method must be one of"),
    Row("AsyncFL", "rule=nonsense", lambda: AsyncFL("nonsense", 0.1), ValueError,
        "rule must be one of"),
    Row("lowrank", "method=nonsense", lambda: lowrank.lowrank("nonsense", 2), ValueError,
        "method must be one of"),
    Row("estimators", "qgd bytes_per_float=-4", lambda: lk.estimators.qgd(
        "identity", bytes_per_float=-4), ValueError, r"bytes_per_float must be in \[1"),
    Row("Streams", "seed=1.5", lambda: lk.Streams(1.5), TypeError, "seed must be an integer"),
    Row("Streams", "seed=-1", lambda: lk.Streams(-1), ValueError, r"seed must be in \[0"),
    Row("Streams", "substream key=-1", lambda: lk.Streams(0).substream("sketch", -1), ValueError,
        r"key must be in \[0"),
    Row("coins", "bernoulli(1.5)", lambda: lk.bernoulli(1.5), ValueError, r"p must be in \[0, 1\]"),
    Row("coins", "always('up')", lambda: lk.always("up"), ValueError, "side must be one of"),
    Row("estimators", "sgd(batch_size=0)", lambda: lk.sgd(batch_size=0), ValueError,
        "batch_size must be in"),
    Row("estimators", "page(q=2)", lambda: lk.page(2.0), ValueError, r"q must be in \(0, 1\]"),
    Row("compressors", "top_k(0)", lambda: lk.compressors.top_k(0), ValueError,
        r"k must be in \[1"),
    Row("compressors", "name=nonsense", lambda: lk.compressors.make_compressor("nonsense"),
        ValueError, "compressor must be one of"),
    Row("sketches", "name=3", lambda: lk.sketches.make_sketch(3), ValueError,
        "sketch must be one of"),
    Row("get_theorem", "key=nonsense", lambda: theory.get_theorem("nonsense"), ValueError,
        "key must be one of"),
    Row("expected_projector", "r>d", lambda: theory.expected_projector("gaussian", 3, 5),
        ValueError, "r"),
    Row("expected_projector", "dtype=float16", lambda: theory.expected_projector(
        "gaussian", 4, 2, samples=10, dtype=torch.float16), ValueError, "dtype must be one of"),
    Row("expected_projector", "device='meta'", lambda: theory.expected_projector(
        "gaussian", 4, 2, samples=10, device="meta"), ValueError, "device must hold"),
    Row("expected_projector", "seed=1.5", lambda: theory.expected_projector(
        "gaussian", 4, 2, samples=10, seed=1.5), TypeError, "seed must be an integer"),
    Row("cur", "generator=3", lambda: lowrank.cur(torch.eye(4, dtype=torch.float64), 2,
        generator=3), TypeError, "generator must be a torch.Generator"),
    Row("paper_row_id", "generator='a'", lambda: lowrank.paper_row_id(torch.eye(
        4, dtype=torch.float64), 2, generator="a"), TypeError, "generator must be a torch"),
    Row("lambda_p", "p=1.5", lambda: theory.lambda_p(1.5, 2, 5, 3), ValueError, "p"),
    # The zoo checks the rank on a meta-device skeleton before pre-training or loading anything.
    Row("digits_problem", "rank=10**6", lambda: zoo.digits_problem(rank=10**6), ValueError,
        r"rank must be in \[1, 5\]: .* site fc3 is 5×64"),
    Row("digits_problem", "rank=65, fc1 and fc2 only", lambda: zoo.digits_problem(
        rank=65, target_modules=("fc1", "fc2")), ValueError, r"rank must be in \[1, 64\]"),
    Row("digits_problem", "target_modules=['nope']", lambda: zoo.digits_problem(
        target_modules=["nope"]), ValueError, "match no layer"),
    Row("digits_problem", "dtype=float16", lambda: zoo.digits_problem(dtype=torch.float16),
        ValueError, "dtype must be one of"),
    Row("digits_problem", "seed=-1", lambda: zoo.digits_problem(seed=-1), ValueError, "seed"),
    Row("gpt2_problem", "rank=10**6", lambda: zoo.gpt2_problem(rank=10**6), ValueError,
        r"rank must be in \[1, 64\]"),
    Row("gpt2_problem", "blocks=0", lambda: zoo.gpt2_problem(blocks=0), ValueError, "blocks"),
    Row("minilm_problem", "rank=10**6", lambda: zoo.minilm_problem(rank=10**6), ValueError,
        r"rank must be in \[1, 384\]"),
    Row("from_pretrained", "rank=10**6", lambda: zoo.from_pretrained(
        zoo.minilm_path(), task="sequence-classification", num_labels=2, rank=10**6),
        ValueError, r"rank must be in \[1, 384\]"),
    Row("text_problem", "model=None", lambda: zoo.text_problem(None, None, ["some text"]),
        TypeError, "model must be a torch.nn.Module"),
    Row("from_pretrained", "task=nonsense", lambda: zoo.from_pretrained("x", task="nonsense"),
        ValueError, "task must be one of"),
]  # fmt: skip

TABLE: list[Row] = [
    *(row for method in CHAIN_KW for row in chain_rows(method)),
    Row(
        "run",
        "method=nonsense",
        lambda: lk.run("nonsense", quad(), 3, rank=2, gamma=0.1),
        ValueError,
        "method must be one of",
    ),
    *(row for method in FEDERATED_METHODS for row in federated_rows(method)),
    *walk_rows(),
    *gossip_rows(),
    *(row for rule in RULES for row in async_rows(rule)),
    *(row for name in lowrank.LOWRANK_METHODS for row in lowrank_rows(name)),
    *MARKOV_ROWS,
    *(row for name in PROBLEM_BUILDERS for row in problem_rows(name)),
    *DATA_ROWS,
]


@pytest.mark.parametrize("row", TABLE, ids=[f"{r.entry}: {r.case}" for r in TABLE])
def test_bad_input_is_refused_or_warned(row: Row):
    if row.error is UserWarning:
        with pytest.warns(UserWarning, match=row.match):
            row.call()
        return
    # A wrong type raises ArgumentTypeError, both a TypeError and a ValueError: either row works.
    with pytest.raises(row.error, match=row.match):
        row.call()


def test_every_method_and_entry_point_has_a_row():
    """A new method or public entry point must be added to the table to pass."""
    entries = {row.entry for row in TABLE}
    methods = (
        {case.method for case in CASES}
        | set(lk.METHODS)
        | set(FEDERATED_METHODS)
        | set(RULES)
        | {"rw_lora", "gossip_lora"}
    )
    public = (
        {"run", "make", "Chain", "make_federated", "AsyncFL", "ModelProblem", "ModelProblem.split"}
        | set(lowrank.LOWRANK_METHODS)
        | {"lowrank", "partition", "split", "budgets", "estimators", "make_problem", "Streams"}
        | {"coins", "compressors", "sketches"}
        | set(lk.problems.PROBLEMS)
        | {"lazy", "mixing_time", "levin_peres_bounds", "tv_distance_curve", "spectral"}
        | {"stationary_distribution", "metropolis_hastings", "pi_from_sizes", "validate_chain"}
        | {"sparse_spectral_bounds", "make_graph", "get_theorem", "expected_projector", "lambda_p"}
        | {"digits_problem", "gpt2_problem", "minilm_problem", "from_pretrained", "text_problem"}
    )
    assert not (methods | public) - entries, f"no row for {sorted((methods | public) - entries)}"


def test_argument_type_error_is_both_type_and_value_error():
    """Code that catches ValueError (the kit's convention) still catches a wrong type."""
    with pytest.raises(ValueError, match="seeds must be a non-negative int"):
        check_seeds(1.5)
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)


def test_seeds_accept_numpy_integers_and_ranges():
    """The positive side of the seed rows: numpy integers and ranges are integral seeds."""
    assert check_seeds(np.int64(3)) == [3]
    assert check_seeds(range(2)) == [0, 1]
    assert check_seeds(np.arange(2)) == [0, 1]
    frame = lk.run("rac_lora", quad(), 2, np.int64(1), rank=2, gamma=0.1)
    assert frame.seed.unique().tolist() == [1]


def test_zoo_rank_is_refused_before_anything_is_built(monkeypatch):
    """The rank rows above fail fast: the check runs on the architecture's shapes (a meta-device
    skeleton) before pre-training, building or loading weights, which here would raise."""
    import transformers

    from lorakit.zoo import digits, gpt2

    def built(*args, **kwargs):
        raise AssertionError("the model was built before the rank was checked")

    monkeypatch.setattr(digits, "digits_mlp", built)
    monkeypatch.setattr(gpt2, "tiny_gpt2_path", built)
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", built)
    with pytest.raises(ValueError, match=r"rank must be in \[1, 5\]"):
        zoo.digits_problem(rank=6)
    with pytest.raises(ValueError, match=r"rank must be in \[1, 64\]"):
        zoo.gpt2_problem(rank=65)
    with pytest.raises(ValueError, match=r"rank must be in \[1, 384\]"):
        zoo.minilm_problem(rank=385)
