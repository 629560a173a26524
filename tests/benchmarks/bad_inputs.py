"""A catalogue of bad and extreme inputs against every public entry point (issue 11 §6).

Not a test: a script that runs a few hundred bad calls and sorts each outcome into

* ``refused`` — a ValueError/TypeError whose message names the argument (the case's ``name``:
  ``|``-separated fragments, any of which may match, case-insensitively);
* ``warned``  — the call returned but a UserWarning said why the value does nothing;
* ``silent``  — the call returned without a word (a silent no-op or a silently changed value);
* ``obscure`` — another exception type, or a message that does not name the argument;
* ``hang``    — still running after ``TIMEOUT`` seconds.

Run ``PYTHONPATH=. LORAKIT_FAST=1 python tests/benchmarks/bad_inputs.py [-v]``; the counts are in
the report of issue 11. Cases that stay bad are listed with their outcome.
"""

from __future__ import annotations

import signal
import sys
import warnings
from collections import Counter

import networkx as nx
import numpy as np
import torch

sys.path.insert(0, "tests")

import lorakit as lk
from lorakit import lowrank, zoo
from lorakit.adapters import ModelProblem
from lorakit.asynchronous import AsyncFL
from lorakit.decentralized import markov
from lorakit.decentralized.gossip import GossipLoRA
from lorakit.decentralized.walk import RWLoRA
from lorakit.federated import FEDERATED_METHODS, budgets, make_federated
from lorakit.federated.partition import partition

TIMEOUT = 20
CASES: list[tuple[str, str, object]] = []  # (label, argument name, thunk)


def case(label, name, thunk):
    CASES.append((label, name, thunk))


class _Hang(Exception):
    pass


def _alarm(*_):
    raise _Hang


def quad():
    return lk.problems.quadratic(5, 3, L=1.0, mu=0.1, seed=0)


def fed(**kw):
    return lk.problems.heterogeneous_quadratics(4, 5, 3, L=0.5, seed=0, **kw)


RING = nx.cycle_graph(4)
BAD_INTS = {"zero": 0, "negative": -1, "float": 1.5, "str": "3", "None": None, "bool": True,
            "nan": float("nan")}  # fmt: skip
BAD_SEEDS = {"negative": -1, "float": 1.5, "str": "0", "None": None, "empty": [],
             "list_negative": [0, -1], "bool": True, "nan": float("nan"), "list_float": [0, 0.5]}  # fmt: skip
BAD_REALS = {"zero": 0.0, "negative": -1.0, "nan": float("nan"), "inf": float("inf"),
             "str": "0.1", "None": None}  # fmt: skip
BAD_PROBLEMS = {"None": None, "str": "quadratic", "int": 3}

# -- chain ---------------------------------------------------------------------------------------
CHAIN = {"lora": {"update": "sgd"}, "asymm_lora": {}, "cola": {"update": "sgd"}, "rac_lora": {},
         "bernoulli_lora": {"p": 0.5}}  # fmt: skip
for meth, kw in CHAIN.items():
    base = dict(rank=2, gamma=0.1, **kw)
    for lab, v in BAD_INTS.items():
        case(
            f"run[{meth}] steps={lab}",
            "steps",
            lambda m=meth, v=v, b=base: lk.run(m, quad(), v, **b),
        )
        case(
            f"run[{meth}] rank={lab}",
            "rank",
            lambda m=meth, v=v, b=base: lk.run(m, quad(), 3, **{**b, "rank": v}),
        )
    case(
        f"run[{meth}] rank=huge",
        "rank",
        lambda m=meth, b=base: lk.run(m, quad(), 3, **{**b, "rank": 10**6}),
    )
    for lab, v in BAD_REALS.items():
        case(
            f"run[{meth}] gamma={lab}",
            "gamma",
            lambda m=meth, v=v, b=base: lk.run(m, quad(), 3, **{**b, "gamma": v}),
        )
    for lab, v in BAD_SEEDS.items():
        case(
            f"run[{meth}] seeds={lab}",
            "seed",
            lambda m=meth, v=v, b=base: lk.run(m, quad(), 3, v, **b),
        )
    for lab, v in BAD_PROBLEMS.items():
        case(
            f"run[{meth}] problem={lab}",
            "problem",
            lambda m=meth, v=v, b=base: lk.run(m, v, 3, **b),
        )
    case(
        f"run[{meth}] problem=federated-none",
        "problem",
        lambda m=meth, b=base: lk.run(m, [quad()], 3, **b),
    )
    case(
        f"run[{meth}] log_every=0",
        "log_every",
        lambda m=meth, b=base: lk.run(m, quad(), 3, log_every=0, **b),
    )
    case(
        f"run[{meth}] unknown kw", "gama", lambda m=meth, b=base: lk.run(m, quad(), 3, gama=1, **b)
    )
for lab, v in {"-0.1": -0.1, "1.5": 1.5, "nan": float("nan"), "str": "0.5"}.items():
    case(
        f"run[bernoulli_lora] p={lab}",
        "p",
        lambda v=v: lk.run("bernoulli_lora", quad(), 3, rank=2, gamma=0.1, p=v),
    )
case("make method=nonsense", "method", lambda: lk.make("nonsense", 2, 0.1))
case("make method=None", "method", lambda: lk.make(None, 2, 0.1))
case("Chain rank=0", "rank", lambda: lk.Chain(0, 0.1))
case("Chain coin=str", "coin", lambda: lk.Chain(2, 0.1, coin="left").run(quad(), 3))
case("Chain sketch=nonsense", "sketch", lambda: lk.Chain(2, 0.1, sketch="nonsense"))
case("Chain update=nonsense", "update", lambda: lk.Chain(2, 0.1, update="nonsense"))
case(
    "run float16 problem",
    "dtype",
    lambda: lk.run(
        "rac_lora", lk.problems.quadratic(5, 3, dtype=torch.float16), 3, rank=2, gamma=0.1
    ),
)
case(
    "run bfloat16 problem",
    "dtype",
    lambda: lk.run(
        "rac_lora", lk.problems.quadratic(5, 3, dtype=torch.bfloat16), 3, rank=2, gamma=0.1
    ),
)
case(
    "run sketch fixed on meta",
    "device",
    lambda: lk.Chain(2, 0.1, sketch=lk.sketches.fixed(torch.zeros(5, 2, device="meta"))).run(
        quad(), 3
    ),
)
case(
    "quadratic W0 on meta",
    "device",
    lambda: lk.run("rac_lora", lk.problems.quadratic(5, 3, device="meta"), 3, rank=2, gamma=0.1),
)
case(
    "estimator bytes_per_float=-4",
    "bytes_per_float",
    lambda: lk.estimators.qgd("identity", bytes_per_float=-4),
)

# -- federated -----------------------------------------------------------------------------------
FED_KW = {"fslora": {"budgets": 1}, "hetero_lora": {"budgets": [1, 2, 1, 2]}, "fslora_topk": {"budgets": 1},
          "flex_lora": {"budgets": [1, 2, 1, 2]}, "fedstack_lora": {"budgets": [1, 2, 1, 2]}}  # fmt: skip
for meth in FEDERATED_METHODS:
    kw = FED_KW.get(meth, {})
    for lab, v in BAD_INTS.items():
        case(
            f"fed[{meth}] rank={lab}",
            "rank",
            lambda m=meth, v=v, k=kw: make_federated(m, v, 0.1, **k).run(fed(), 2),
        )
        case(
            f"fed[{meth}] rounds={lab}",
            "rounds",
            lambda m=meth, v=v, k=kw: make_federated(m, 2, 0.1, **k).run(fed(), v),
        )
    for lab, v in BAD_REALS.items():
        case(
            f"fed[{meth}] lr={lab}",
            "lr",
            lambda m=meth, v=v, k=kw: make_federated(m, 2, v, **k).run(fed(), 2),
        )
    for lab, v in BAD_SEEDS.items():
        case(
            f"fed[{meth}] seeds={lab}",
            "seed",
            lambda m=meth, v=v, k=kw: make_federated(m, 2, 0.1, **k).run(fed(), 2, v),
        )
    for lab, v in BAD_PROBLEMS.items():
        case(
            f"fed[{meth}] problem={lab}",
            "problem",
            lambda m=meth, v=v, k=kw: make_federated(m, 2, 0.1, **k).run(v, 2),
        )
    case(
        f"fed[{meth}] problem=single",
        "problem",
        lambda m=meth, k=kw: make_federated(m, 2, 0.1, **k).run(quad(), 2),
    )
    case(
        f"fed[{meth}] rank=huge",
        "rank",
        lambda m=meth, k=kw: make_federated(m, 10**6, 0.1, **k).run(fed(), 2),
    )
    case(
        f"fed[{meth}] dropout=1",
        "dropout",
        lambda m=meth, k=kw: make_federated(m, 2, 0.1, dropout=1.0, **k).run(fed(), 2),
    )
    case(
        f"fed[{meth}] dropout=-0.5",
        "dropout",
        lambda m=meth, k=kw: make_federated(m, 2, 0.1, dropout=-0.5, **k),
    )
    case(
        f"fed[{meth}] bytes_per_float=-4",
        "bytes_per_float",
        lambda m=meth, k=kw: make_federated(m, 2, 0.1, bytes_per_float=-4, **k).run(fed(), 2),
    )
    case(
        f"fed[{meth}] cohort=100",
        "cohort",
        lambda m=meth, k=kw: make_federated(m, 2, 0.1, cohort=100, **k).run(fed(), 2),
    )
    case(
        f"fed[{meth}] unknown kw", "lrr", lambda m=meth, k=kw: make_federated(m, 2, 0.1, lrr=3, **k)
    )
    case(
        f"fed[{meth}] float16",
        "dtype",
        lambda m=meth, k=kw: make_federated(m, 2, 0.1, **k).run(fed(dtype=torch.float16), 2),
    )
for meth in ("fslora", "hetero_lora"):
    for lab, v in {"1.5": 1.5, "0": 0, "-1": -1, "list_frac": [1, 1.5, 1, 2], "list_short": [1, 2], "str": "x",
                   "huge": 100}.items():  # fmt: skip
        case(
            f"fed[{meth}] budgets={lab}",
            "budget",
            lambda m=meth, v=v: make_federated(m, 2, 0.1, budgets=v).run(fed(), 2),
        )
case("fed method=nonsense", "method", lambda: make_federated("nonsense", 2, 0.1))
case(
    "fed_rac_lora bytes_per_seed=-1",
    "bytes_per_seed",
    lambda: make_federated("fed_rac_lora", 2, 0.1, bytes_per_seed=-1),
)
case("budgets.fixed(1.5)", "k", lambda: budgets.fixed(1.5))
case("budgets.uniform(low=1.5)", "low", lambda: budgets.uniform(1.5, 3))
case("budgets.mix([])", "ratio", lambda: budgets.mix([]))

# -- partitions, splits, model problems ----------------------------------------------------------
case("partition labels=None", "labels", lambda: partition(None, 2))
case(
    "partition dirichlet one class",
    "labels",
    lambda: partition([0] * 10, 2, "dirichlet", generator=0),
)
case("partition num_clients=0", "num_clients", lambda: partition([0, 1, 0, 1], 0))
case("partition num_clients=big", "num_clients", lambda: partition([0, 1, 0, 1], 9))
case("partition alpha=0", "alpha", lambda: partition([0, 1, 0, 1], 2, "dirichlet", alpha=0))
case("partition generator=-1", "generator", lambda: partition([0, 1, 0, 1], 2, generator=-1))
case("partition generator=1.5", "generator", lambda: partition([0, 1, 0, 1], 2, generator=1.5))


def _toy(**kw):
    from peft_toys import toy_problem

    return toy_problem(**kw)


def _toy_model_problem(**kw):
    from peft_toys import toy_model

    g = torch.Generator().manual_seed(1)
    data = {
        "x": torch.randn(16, 6, generator=g, dtype=torch.float64),
        "labels": torch.randint(0, 3, (16,), generator=g),
    }
    return ModelProblem(toy_model(2), {**data, **kw.pop("data", {})}, **kw)


case("ModelProblem.split dirichlet no labels", "labels", lambda: _toy().split(4, "dirichlet"))
case(
    "ModelProblem clients overlap",
    "clients",
    lambda: _toy_model_problem(clients=[torch.arange(0, 10), torch.arange(5, 16)]),
)
case(
    "ModelProblem clients float",
    "clients",
    lambda: _toy_model_problem(clients=[torch.tensor([0.5, 1.0])]),
)
case("ModelProblem model=None", "model", lambda: ModelProblem(None, {"x": torch.zeros(3, 6)}))
case("ModelProblem data=None", "data", lambda: ModelProblem(_toy().model, None))
case(
    "ModelProblem data on meta",
    "device",
    lambda: lk.run(
        "rac_lora",
        _toy_model_problem(data={"x": torch.zeros(16, 6, dtype=torch.float64, device="meta")}),
        2,
        rank=2,
        gamma=0.1,
    ),
)
case(
    "toy float16 rac_lora",
    "dtype",
    lambda: lk.run("rac_lora", _toy(dtype=torch.float16), 2, rank=2, gamma=0.1),
)
case("toy float32 model, float64 data", "data", lambda: _toy(dtype=torch.float32))
case(
    "toy bfloat16 lora",
    "dtype",
    lambda: lk.run("lora", _toy(dtype=torch.bfloat16), 2, rank=2, gamma=0.1),
)
case(
    "toy float16 fedit",
    "dtype",
    lambda: make_federated("fedit", 2, 0.1).run(_toy(dtype=torch.float16, clients=4), 2),
)
case(
    "toy float16 rw_lora",
    "dtype",
    lambda: walk().run(_toy(dtype=torch.float16, clients=4), 2, graph=RING),
)
case(
    "toy float16 fedavg",
    "dtype",
    lambda: AsyncFL("fedavg", 0.1).run(_toy(dtype=torch.float16, clients=4), 2),
)
case("toy seeds=1.5", "seed", lambda: lk.run("rac_lora", _toy(), 2, 1.5, rank=2, gamma=0.1))
case("toy rank=3 (peft r=2)", "rank", lambda: lk.run("rac_lora", _toy(), 2, rank=3, gamma=0.1))
case("toy fed no clients", "clients", lambda: make_federated("fedit", 2, 0.1).run(_toy(), 2))
case("ModelProblem split num_clients=0", "num_clients", lambda: _toy().split(0))
case(
    "ModelProblem eval_batch_size=0",
    "eval_batch_size",
    lambda: _toy_model_problem(eval_batch_size=0),
)
case(
    "problems.split parts overlap",
    "parts",
    lambda: lk.problems.split(
        lk.problems.linear_regression(3, 2, n_finetune=20, seed=0),
        2,
        parts=[list(range(12)), list(range(8, 20))],
    ),
)
case(
    "problems.split seed=-1",
    "seed",
    lambda: lk.problems.split(
        lk.problems.linear_regression(3, 2, n_finetune=20, seed=0), 2, seed=-1
    ),
)
case("problems.split problem=quadratic", "problem", lambda: lk.problems.split(quad(), 2))

# -- problems ------------------------------------------------------------------------------------
PROBS = {"quadratic": lambda **k: lk.problems.quadratic(**{"m": 5, "n": 3, **k}),
         "heterogeneous_quadratics": lambda **k: lk.problems.heterogeneous_quadratics(**{"M": 3, "m": 5, "n": 3, **k}),
         "counterexample": lambda **k: lk.problems.counterexample(**k),
         "smooth_nonconvex": lambda **k: lk.problems.smooth_nonconvex(**{"m": 5, "n": 3, **k}),
         "frobenius_distance": lambda **k: lk.problems.frobenius_distance(**{"m": 5, "n": 3, **k}),
         "linear_regression": lambda **k: lk.problems.linear_regression(**{"m": 3, "n": 2, "n_finetune": 20, **k}),
         "logistic_regression": lambda **k: lk.problems.logistic_regression(**{"m": 3, "n": 1, "n_samples": 40, **k})}  # fmt: skip
for pname, build in PROBS.items():
    for lab, v in {"negative": -1, "float": 1.5, "str": "0", "None": None, "bool": True}.items():
        case(f"{pname} seed={lab}", "seed", lambda b=build, v=v: b(seed=v))
    for lab, v in {
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
        "int": torch.int64,
        "str": "float64",
    }.items():
        case(f"{pname} dtype={lab}", "dtype", lambda b=build, v=v: b(dtype=v))
    case(f"{pname} device=nonsense", "device", lambda b=build: b(device="nonsense"))
for lab, v in BAD_INTS.items():
    case(f"quadratic m={lab}", "m", lambda v=v: lk.problems.quadratic(v, 3))
    case(
        f"heterogeneous_quadratics M={lab}",
        "M",
        lambda v=v: lk.problems.heterogeneous_quadratics(v, 5, 3),
    )
for lab, v in BAD_REALS.items():
    case(f"quadratic L={lab}", "L", lambda v=v: lk.problems.quadratic(5, 3, L=v))
case("quadratic mu>L", "mu", lambda: lk.problems.quadratic(5, 3, L=1.0, mu=2.0))
case("quadratic W0 wrong shape", "W0", lambda: lk.problems.quadratic(5, 3, W0=torch.zeros(2, 2)))
case(
    "quadratic W0 nan",
    "W0",
    lambda: lk.problems.quadratic(5, 3, W0=torch.full((5, 3), float("nan"))),
)
case("make_problem nonsense", "name", lambda: lk.problems.make_problem("nonsense"))


# -- decentralized -------------------------------------------------------------------------------
def walk(**kw):
    return RWLoRA(**{"rank": 2, "gamma": 0.1, "transition": "lazy", **kw})


def gossip(**kw):
    return GossipLoRA(**{"rank": 2, "gamma": 0.1, **kw})


for cls_name, make, _run_kw in (("rw_lora", walk, {}), ("gossip_lora", gossip, {})):
    for lab, v in BAD_INTS.items():
        case(
            f"{cls_name} rank={lab}",
            "rank",
            lambda mk=make, v=v: mk(rank=v).run(fed(), 3, graph=RING),
        )
        case(f"{cls_name} steps={lab}", "s", lambda mk=make, v=v: mk().run(fed(), v, graph=RING))
    for lab, v in BAD_REALS.items():
        case(f"{cls_name} gamma={lab}", "gamma", lambda mk=make, v=v: mk(gamma=v))
    for lab, v in BAD_SEEDS.items():
        case(
            f"{cls_name} seeds={lab}",
            "seed",
            lambda mk=make, v=v: mk().run(fed(), 3, v, graph=RING),
        )
    for lab, v in BAD_PROBLEMS.items():
        case(
            f"{cls_name} problem={lab}", "problem", lambda mk=make, v=v: mk().run(v, 3, graph=RING)
        )
    case(f"{cls_name} graph=None", "graph", lambda mk=make: mk().run(fed(), 3, graph=None))
    case(
        f"{cls_name} graph wrong size",
        "graph",
        lambda mk=make: mk().run(fed(), 3, graph=nx.cycle_graph(5)),
    )
    case(
        f"{cls_name} graph disconnected",
        "connected",
        lambda mk=make: mk().run(fed(), 3, graph=nx.empty_graph(4)),
    )
    case(f"{cls_name} graph=str", "graph", lambda mk=make: mk().run(fed(), 3, graph="ring"))
    case(
        f"{cls_name} bytes_per_float=-4", "bytes_per_float", lambda mk=make: mk(bytes_per_float=-4)
    )
    case(f"{cls_name} rank=huge", "rank", lambda mk=make: mk(rank=10**6).run(fed(), 3, graph=RING))
    case(
        f"{cls_name} float16",
        "dtype",
        lambda mk=make: mk().run(fed(dtype=torch.float16), 3, graph=RING),
    )
    case(f"{cls_name} unknown kw", "foo", lambda mk=make: mk(foo=1))
case("rw_lora token_loss=1", "token_loss", lambda: walk(token_loss=1.0).run(fed(), 3, graph=RING))
case(
    "rw_lora node_failure=1",
    "node_failure",
    lambda: walk(node_failure=1.0).run(fed(), 3, graph=RING),
)
case("rw_lora laziness=1", "laziness", lambda: walk(laziness=1.0))
case(
    "rw_lora transition=identity",
    "transition",
    lambda: walk(transition=np.eye(4)).run(fed(), 3, graph=RING),
)
case("rw_lora start=9", "start", lambda: walk(start=9).run(fed(), 3, graph=RING))
case("rw_lora pi negative", "pi", lambda: walk(pi=[1, -1, 1, 1]))
case("gossip mixing=identity", "mixing", lambda: gossip(mixing=np.eye(4)).run(fed(), 3, graph=RING))
case(
    "gossip link_failure=1",
    "link_failure",
    lambda: gossip(link_failure=1.0).run(fed(), 3, graph=RING),
)
case("gossip mixing=nonsense", "mixing", lambda: gossip(mixing="nonsense"))

# -- asynchronous --------------------------------------------------------------------------------
for rule in ("fedavg", "fedasync", "fedbuff"):
    for lab, v in BAD_INTS.items():
        case(
            f"async[{rule}] updates={lab}",
            "updates",
            lambda r=rule, v=v: AsyncFL(r, 0.1).run(fed(), v),
        )
    for lab, v in BAD_REALS.items():
        case(f"async[{rule}] gamma={lab}", "gamma", lambda r=rule, v=v: AsyncFL(r, v))
    for lab, v in BAD_SEEDS.items():
        case(
            f"async[{rule}] seeds={lab}",
            "seed",
            lambda r=rule, v=v: AsyncFL(r, 0.1).run(fed(), 2, v),
        )
    for lab, v in BAD_PROBLEMS.items():
        case(
            f"async[{rule}] problem={lab}", "problem", lambda r=rule, v=v: AsyncFL(r, 0.1).run(v, 2)
        )
    case(
        f"async[{rule}] bytes_per_float=-4",
        "bytes_per_float",
        lambda r=rule: AsyncFL(r, 0.1, bytes_per_float=-4),
    )
    case(
        f"async[{rule}] bytes_per_index=-4",
        "bytes_per_index",
        lambda r=rule: AsyncFL(r, 0.1, bytes_per_index=-4),
    )
    case(f"async[{rule}] delay=nan", "delay", lambda r=rule: AsyncFL(r, 0.1, delay=float("nan")))
    case(
        f"async[{rule}] rank=huge",
        "rank",
        lambda r=rule: AsyncFL(r, 0.1, rank=10**6).run(fed(), 2),
    )
    case(
        f"async[{rule}] float16",
        "dtype",
        lambda r=rule: AsyncFL(r, 0.1).run(fed(dtype=torch.float16), 2),
    )
    case(
        f"async[{rule}] time_budget=-1",
        "time_budget",
        lambda r=rule: AsyncFL(r, 0.1).run(fed(), time_budget=-1.0),
    )
    case(
        f"async[{rule}] speed wrong length",
        "speed",
        lambda r=rule: AsyncFL(r, 0.1, speed=(1.0, 2.0)).run(fed(), 2),
    )
case("async rule=nonsense", "rule", lambda: AsyncFL("nonsense", 0.1))
case("async compressor=str", "compressor", lambda: AsyncFL("fedavg", 0.1, compressor="topk"))

# -- lowrank -------------------------------------------------------------------------------------
LR = {
    "pca": lowrank.pca,
    "qrcp": lowrank.qrcp,
    "cur": lowrank.cur,
    "paper_row_id": lowrank.paper_row_id,
}
X = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
for lname, fn in LR.items():
    case(f"{lname} int matrix", "X", lambda f=fn: f(torch.arange(24).reshape(6, 4), 2))
    case(f"{lname} bool matrix", "X", lambda f=fn: f(torch.ones(6, 4, dtype=torch.bool), 2))
    case(f"{lname} nan", "X", lambda f=fn: f(torch.full((6, 4), float("nan")), 2))
    case(f"{lname} empty", "X", lambda f=fn: f(torch.zeros(0, 4), 1))
    case(f"{lname} 1-D", "X", lambda f=fn: f(torch.zeros(4), 1))
    case(f"{lname} ndarray", "X", lambda f=fn: f(np.zeros((6, 4)), 1))
    case(f"{lname} meta", "X", lambda f=fn: f(torch.zeros(6, 4, device="meta"), 1))
    for lab, v in BAD_INTS.items():
        case(f"{lname} rank={lab}", "rank", lambda f=fn, v=v: f(X, v))
    case(f"{lname} rank=huge", "rank", lambda f=fn: f(X, 100))
case("lowrank() method=nonsense", "method", lambda: lowrank.lowrank("nonsense", 2))
case("lowrank() rank=0", "rank", lambda: lowrank.lowrank("pca", 0))
case("pca energy=1.5", "energy", lambda: lowrank.pca(X, energy=1.5))
case("pca rank+energy", "energy", lambda: lowrank.pca(X, 2, energy=0.5))
case("cur select=nonsense", "select", lambda: lowrank.cur(X, 2, select="nonsense"))
case("cur generator=int", "generator", lambda: lowrank.cur(X, 2, generator=3))

# -- markov --------------------------------------------------------------------------------------
P = markov.metropolis_hastings(RING)
case("lazy laziness=1", "laziness", lambda: markov.lazy(P, 1.0))
case("lazy laziness=-0.1", "laziness", lambda: markov.lazy(P, -0.1))
case("lazy laziness=nan", "laziness", lambda: markov.lazy(P, float("nan")))
case("lazy P non-square", "P", lambda: markov.lazy(np.ones((2, 3)), 0.5))
case("lazy P not stochastic", "P", lambda: markov.lazy(np.ones((3, 3)), 0.5))
case("lazy P=None", "P", lambda: markov.lazy(None, 0.5))
case("lazy P=str", "P", lambda: markov.lazy("ring", 0.5))
for lab, v in {"0": 0.0, "1.5": 1.5, "nan": float("nan"), "-1": -1.0, "str": "x"}.items():
    case(f"mixing_time eps={lab}", "eps", lambda v=v: markov.mixing_time(markov.lazy(P), v))
    case(
        f"levin_peres_bounds eps={lab}",
        "eps",
        lambda v=v: markov.levin_peres_bounds(markov.lazy(P), v),
    )
case("mixing_time t_max=-1", "t_max", lambda: markov.mixing_time(markov.lazy(P), 0.25, t_max=-1))
case("tv_distance_curve t_max=-1", "t_max", lambda: markov.tv_distance_curve(markov.lazy(P), -1))
case("tv_distance_curve t_max=1.5", "t_max", lambda: markov.tv_distance_curve(markov.lazy(P), 1.5))
case(
    "stationary_distribution not stochastic",
    "P",
    lambda: markov.stationary_distribution(np.ones((3, 3))),
)
case(
    "stationary_distribution nan",
    "P",
    lambda: markov.stationary_distribution(np.full((3, 3), np.nan)),
)
case("spectral P=None", "P", lambda: markov.spectral(None))
case("period empty", "P", lambda: markov.period(np.zeros((0, 0))))
case("metropolis_hastings G=None", "G", lambda: markov.metropolis_hastings(None))
case(
    "metropolis_hastings pi negative", "pi", lambda: markov.metropolis_hastings(RING, [1, -1, 1, 1])
)
case("metropolis_hastings pi short", "pi", lambda: markov.metropolis_hastings(RING, [0.5, 0.5]))
case("pi_from_sizes negative", "sizes", lambda: markov.pi_from_sizes([1, -2, 3]))
case("pi_from_sizes empty", "sizes", lambda: markov.pi_from_sizes([]))
case("validate_chain G mismatch", "G", lambda: markov.validate_chain(P, nx.cycle_graph(5)))
case("make_graph nonsense", "kind", lambda: lk.decentralized.make_graph("nonsense", 4))
case("make_graph N=0", "N", lambda: lk.decentralized.make_graph("ring", 0))
case("sparse_spectral_bounds eps=0", "eps", lambda: markov.sparse_spectral_bounds(RING, 0.0))

# -- theory (Theorem.bound belongs to the cli helper) --------------------------------------------
case(
    "get_theorem nonsense",
    "key",
    lambda: __import__("lorakit.theory").theory.get_theorem("nonsense"),
)

case(
    "expected_projector dtype=float16",
    "dtype",
    lambda: __import__("lorakit.theory").theory.expected_projector(
        "gaussian", 4, 2, samples=10, dtype=torch.float16
    ),
)
case(
    "expected_projector device=meta",
    "device",
    lambda: __import__("lorakit.theory").theory.expected_projector(
        "gaussian", 4, 2, samples=10, device="meta"
    ),
)
case(
    "expected_projector seed=1.5",
    "seed",
    lambda: __import__("lorakit.theory").theory.expected_projector(
        "gaussian", 4, 2, samples=10, seed=1.5
    ),
)
case(
    "expected_projector r>d",
    "r ",
    lambda: __import__("lorakit.theory").theory.expected_projector("gaussian", 3, 5),
)
case("lambda_p p=1.5", "p ", lambda: __import__("lorakit.theory").theory.lambda_p(1.5, 2, 5, 3))
case("cur generator=3", "generator must", lambda: lowrank.cur(X, 2, generator=3))
case(
    "paper_row_id generator=str",
    "generator must",
    lambda: lowrank.paper_row_id(X, 2, generator="a"),
)

# -- zoo -----------------------------------------------------------------------------------------
case("digits_problem rank=10**6", "rank", lambda: zoo.digits_problem(rank=10**6))
case("digits_problem rank=65", "rank", lambda: zoo.digits_problem(rank=65))
case("digits_problem rank=0", "rank", lambda: zoo.digits_problem(rank=0))
case("digits_problem seed=-1", "seed", lambda: zoo.digits_problem(seed=-1))
case("digits_problem seed=1.5", "seed", lambda: zoo.digits_problem(seed=1.5))
case("digits_problem hidden=0", "hidden", lambda: zoo.digits_problem(hidden=0))
case("digits_problem dtype=int", "dtype", lambda: zoo.digits_problem(dtype=torch.int64))
case(
    "digits_problem target_modules=nonsense",
    "target_modules",
    lambda: zoo.digits_problem(target_modules=["nope"]),
)
case("gpt2_problem rank=10**6", "rank", lambda: zoo.gpt2_problem(rank=10**6))
case("gpt2_problem blocks=0", "blocks", lambda: zoo.gpt2_problem(blocks=0))
case("gpt2_problem seed=-1", "seed", lambda: zoo.gpt2_problem(seed=-1))
case("minilm_problem rank=10**6", "rank", lambda: zoo.minilm_problem(rank=10**6))
case(
    "from_pretrained rank=10**6",
    "rank",
    lambda: zoo.from_pretrained(zoo.tiny_gpt2_path(), rank=10**6),
)


# -- every method of tests/patterns.py at both scales ---------------------------------------------
def _patterns():
    from patterns import CASES as PATTERN_CASES

    return PATTERN_CASES


for pc in _patterns():
    for scale in ("matrix", "model"):
        for lab, kw, name in (
            ("steps=0", {"steps": 0}, "s must be in"),
            ("steps=None", {"steps": None}, "must be an integer|give updates"),
            ("seeds=1.5", {"seeds": 1.5}, "seeds"),
            ("seeds=[]", {"seeds": []}, "seeds"),
            ("seeds=-1", {"seeds": -1}, "seeds"),
            ("on_divergence=x", {"on_divergence": "x"}, "on_divergence"),
            ("log_every=0", {"log_every": 0}, "log_every"),
        ):

            def thunk(pc=pc, scale=scale, kw=kw):
                problem = getattr(pc, scale)()
                args = {"steps": 2, "seeds": 0, **kw}
                steps, seeds = args.pop("steps"), args.pop("seeds")
                return pc.run(problem, steps, seeds, **args)

            case(f"{pc.method}[{scale}] {lab}", name, thunk)


def classify(name, thunk):
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            thunk()
        user = [w for w in caught if issubclass(w.category, UserWarning)]
        return ("warned", str(user[0].message)) if user else ("silent", "")
    except _Hang:
        return "hang", ""
    except (ValueError, TypeError) as err:
        msg = str(err)
        named = any(n.lower() in msg.lower() for n in name.split("|"))
        return ("refused" if named else "obscure", f"{type(err).__name__}: {msg}")
    except Exception as err:
        return "obscure", f"{type(err).__name__}: {err}"
    finally:
        signal.alarm(0)


def main(verbose: bool = False) -> Counter:
    import peft  # noqa: F401  (imported once up front: its first import is not a case's hang)

    counts = Counter()
    for label, name, thunk in CASES:
        outcome, msg = classify(name, thunk)
        counts[outcome] += 1
        if verbose or outcome not in ("refused", "warned"):
            print(f"{outcome:8s} {label:50s} {msg[:160]}")
    print(f"{len(CASES)} cases:", dict(counts))
    return counts


if __name__ == "__main__":
    torch.set_num_threads(1)
    main("-v" in sys.argv)
