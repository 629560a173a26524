"""The federated methods as a Flower app (lorakit.distributed.flower) against lorakit's engine.

Three levels, each compared with the in-process run of the same run config (``reference``: the
engine's own seed loop, recording the global state after every round):

* in process, the real ClientApp on an *inline Grid* (every message handled at once by the node
  it is addressed to, each node with its own Context): every federated method, the history, the
  global adapter of every round and the message table equal, and the bytes that crossed the wire
  equal the table's (float64 with ``bytes-per-float = 8``);
* Flower's simulation on the Ray backend (``flwr run`` of the repository root on a
  ``flower-superlink --simulation``, 4 SuperNodes, bounded time): FSLoRA and FlexLoRA on the
  digits MLP, round by round to 1e-12 in float64;
* real processes on 127.0.0.1 (a SuperLink and two SuperNodes, ``flwr run`` from the repository
  root): three FSLoRA rounds, equal to the simulation's.
"""

import json
import os
import warnings
from itertools import count
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no network beyond loopback

import pandas as pd
import pytest
import torch
from flower_processes import ROOT, Federation, InProcessGrid
from flwr.app import ConfigRecord, Context, RecordDict

from lorakit.distributed import flower as fl
from lorakit.federated import fed_rac as fed_rac_engine
from lorakit.federated import lora as lora_engine
from lorakit.tree import leaves

TOL = 1e-12  # float64
# The digits MLP (3 LoRA sites) split among 8 clients, float64 on the wire and in the table.
BASE = {"clients": 8, "rounds": 3, "dtype": "float64", "bytes-per-float": 8, "rank": 4,
        "gamma": 0.3, "keep-rounds": True}  # fmt: skip
BUDGETS = "2,3,4,2,3,4,2,3"
CASES = {
    "fslora": {"method": "fslora", "budgets": BUDGETS, "cohort": 6, "dropout": 0.25},
    "fslora_full_download": {
        "method": "fslora",
        "budgets": BUDGETS,
        "download": "full",
        "shared-index": True,
    },
    "fedit": {"method": "fedit"},
    "hetero_lora": {"method": "hetero_lora", "budgets": BUDGETS, "cohort": 5},
    "fslora_topk": {"method": "fslora_topk", "budgets": BUDGETS, "bytes-per-index": 2},
    "flex_lora": {"method": "flex_lora", "budgets": BUDGETS},
    "fedstack_lora": {"method": "fedstack_lora", "budgets": BUDGETS},
    "fed_rac_lora": {
        "method": "fed_rac_lora",
        "gamma": 0.5,
        "batch-size": "none",
        "download": "adapter",
        "sketch-as-seed": True,
    },
    "fed_rac_lora_full": {
        "method": "fed_rac_lora",
        "gamma": 0.5,
        "batch-size": "none",
        "cohort": 5,
        "compressor": "top_k:40",
        "download": "full",
    },
}


class InlineGrid(InProcessGrid):
    """A Grid whose pushed messages are handled at once by the real ClientApp of the addressed
    node (node ids 100 + p, partition p of P, each with its own Context and state)."""

    def __init__(self, P: int):
        self.contexts = {
            100 + p: Context(1, 100 + p, {"partition-id": p, "num-partitions": P}, RecordDict(), {})
            for p in range(P)
        }
        self.ids, self.box = count(), {}

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):
        out = []
        for message in messages:
            mid = f"m{next(self.ids)}"
            message.metadata.__dict__["_message_id"] = mid
            self.box[mid] = fl.client_app(message, self.contexts[message.metadata.dst_node_id])
            out.append(mid)
        return out

    def pull_messages(self, message_ids):
        return [self.box.pop(mid) for mid in message_ids if mid in self.box]

    def send_and_receive(self, messages, *, timeout=None):
        return self.pull_messages(self.push_messages(list(messages)))


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """What Flower's runtime sets in a ServerApp's process before it creates messages."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


def reference(run_config: dict):
    """The in-process run of ``run_config``: (history, messages, global state after each round
    as lists of per-site matrices), from the engine's own seed loop on a fresh problem."""
    spec = fl.RunSpec.parse(run_config)
    cfg, problem = spec.method(), spec.problem()
    rounds, seed, states = spec.run["rounds"], spec.run["seed"], []
    if spec.name == "fed_rac_lora":

        class RecordedRAC(fed_rac_engine.FedRACRun):
            def round(self, t, rows):
                out = super().round(t, rows)
                states.append({"W": [w.clone() for w in leaves(self.W)]})
                return out

        frame, messages = fed_rac_engine.simulate(
            cfg, problem, rounds, seed, messages=True, runner=RecordedRAC
        )
    else:

        class Recorded(lora_engine.FederatedRun):
            def round(self, t, rows=()):
                out = super().round(t, rows)
                W0, B, A = self.state()
                states.append({"W0": leaves(W0), "B": leaves(B), "A": leaves(A)})
                return out

        def runner(cfg, problem, seed):
            return Recorded(cfg, problem, seed, shared_index=spec.run["shared-index"])

        frame, messages = lora_engine.simulate(cfg, problem, rounds, seed, 1, True, runner)
    return frame, messages, states


def assert_same_run(history, messages, rounds, ref, tol=TOL):
    """History, message table and the global state of every round equal ``ref``'s (values to
    ``tol``), and the payload on the wire equal to the table's bytes."""
    frame, ref_messages, states = ref
    assert len(history) == len(frame) and history["round"].tolist() == frame["round"].tolist()
    for column in ("loss", "grad_norm_sq"):
        gap = (history[column].to_numpy() - frame[column].to_numpy()).__abs__().max()
        assert gap <= tol, f"{column} differs by {gap:g}"
    pd.testing.assert_frame_equal(
        messages[list(ref_messages.columns)].reset_index(drop=True),
        ref_messages.reset_index(drop=True),
        check_dtype=False,
    )
    assert (messages.wire_up == messages.bytes_up).all(), messages
    assert (messages.wire_down == messages.bytes_down).all(), messages
    assert len(rounds) == len(states)
    for t, (ours, theirs) in enumerate(zip(rounds, states, strict=True), start=1):
        assert ours["round"] == t
        for name, mats in theirs.items():
            if name == "round":
                continue
            for a, b in zip(ours[name], mats, strict=True):
                assert a.dtype == torch.float64
                gap = float((a - b).abs().max())
                assert gap <= tol, f"round {t}: {name} differs by {gap:g}"


# -- in process: the real ClientApp on an inline Grid --------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_every_method_through_the_app_equals_the_engine(case):
    """Three nodes holding 8 clients (client l on partition l mod 3): the Flower run is the
    engine's run, round by round (to 1e-12: the engine trains a cohort in batched passes of the
    model, a node one client at a time, so the sums round differently), and the wire carries
    exactly the table's bytes (slices and index sets, top-k pairs, stacks, sketches sent as
    seeds, compressed factors)."""
    run_config = {**BASE, **CASES[case]}
    ours = fl.run_flower(InlineGrid(3), fl.RunSpec.parse(run_config))
    assert_same_run(ours.history, ours.messages, ours.rounds, reference(run_config))


def test_the_round_log_is_flowertune_s_communication_line(caplog):
    """Every round logs the table's MB up and down, the wire's, and the running total."""
    spec = fl.RunSpec.parse({**BASE, **CASES["fslora"], "rounds": 2})
    with caplog.at_level("INFO", logger="flwr"):
        result = fl.run_flower(InlineGrid(2), spec)
    lines = [r.getMessage() for r in caplog.records if "lorakit fslora round" in r.getMessage()]
    assert len(lines) == 2
    total = float(result.history.mb_up.iloc[-1] + result.history.mb_down.iloc[-1])
    assert lines[-1].endswith(f"used {total:.4f} MB in all")


def test_a_node_refuses_a_client_it_does_not_hold():
    """Client 1 belongs to partition 1 of 2: the node of partition 0 refuses it by name."""
    spec = fl.RunSpec.parse({**BASE, "method": "fedit"})
    content = RecordDict({"spec": ConfigRecord(spec.record()), "work": ConfigRecord({"client": 1})})
    context = Context(1, 100, {"partition-id": 0, "num-partitions": 2}, RecordDict(), {})
    with pytest.raises(ValueError, match="client 1 is held by partition 1"):
        fl.handle_train(content, context)


def test_bad_run_config_is_refused_by_name():
    with pytest.raises(ValueError, match="method"):
        fl.RunSpec.parse({"method": "rw_lora", "rank": 4, "gamma": 0.1})
    with pytest.raises(ValueError, match="model"):
        fl.RunSpec.parse({"model": "resnet", "rank": 4, "gamma": 0.1})
    with pytest.raises(ValueError, match="clients"):
        fl.RunSpec.parse({"clients": 0, "rank": 4, "gamma": 0.1})
    with pytest.raises(ValueError, match="must give rank"):
        fl.RunSpec.parse({"method": "fslora", "gamma": 0.1})
    with pytest.raises(ValueError, match="must give gamma"):
        fl.RunSpec.parse({"method": "fslora", "rank": 4})
    with pytest.raises(ValueError, match="budgets"):
        fl.RunSpec.parse({"rank": 4, "gamma": 0.1, "budgets": "zipf:2"})
    with pytest.raises(ValueError, match="dtype"):
        fl.RunSpec.parse({"rank": 4, "gamma": 0.1, "model": "gpt2", "dtype": "float64"}).problem()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = fl.RunSpec.parse({"method": "fed_rac_lora", "rank": 4, "gamma": 0.1, "budgets": "2"})
    assert any("budgets" in str(w.message) and "ignored" in str(w.message) for w in caught)
    with pytest.warns(UserWarning, match="budgets"):
        assert "budgets" not in spec.method_kwargs()


def test_the_repository_is_a_flower_app():
    """``flwr run .`` reads the root pyproject.toml: Flower's own validation passes, the
    components are this package's apps and every run key has a default there."""
    from flwr.cli.config_utils import load_and_validate

    config, _ = load_and_validate(ROOT / "pyproject.toml")
    app = config["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "lorakit.distributed.flower.server:app",
                                 "clientapp": "lorakit.distributed.flower.client:app"}  # fmt: skip
    assert set(fl.DEFAULTS) <= set(app["config"])
    fl.RunSpec.parse(dict(app["config"]))  # the defaults are a valid run


# -- Flower's simulation on Ray, and real processes ----------------------------------------------------
SIM = {
    "fslora": {**BASE, "method": "fslora", "clients": 4, "budgets": "2,3,4,2"},
    "flex_lora": {**BASE, "method": "flex_lora", "budgets": "1,2,3,4,1,2,3,4", "cohort": 6},
}
SIM_TIMEOUT = 900  # seconds per run: Ray starts its processes, each actor builds the problem


def run_config(config: dict) -> str:
    """A run config as ``flwr run --run-config`` takes it (TOML values)."""
    return " ".join(
        f"{k}={str(v).lower() if isinstance(v, bool) else json.dumps(v)}" for k, v in config.items()
    )


def load(out: Path):
    saved = torch.load(out / "result.pt", weights_only=True)
    return pd.DataFrame(saved["history"]), pd.DataFrame(saved["messages"]), saved["rounds"]


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    """FSLoRA and FlexLoRA, each a ``flwr run`` of the repository root on a simulation SuperLink
    (``flower-superlink --simulation``, 4 virtual SuperNodes on Ray), one after the other; each
    run waits at most SIM_TIMEOUT for its result, and the SuperLink (with Ray) is always stopped."""
    fed = Federation(tmp_path_factory.mktemp("simulation"))
    fed.env["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        fed.superlink(simulation=True)
        for name, config in SIM.items():
            out = fed.tmp / name
            fed.flwr_run(ROOT, run_config({**config, "out-dir": str(out)}),
                         federation="num-supernodes=4")  # fmt: skip
            fed.wait_for(
                (out / "result.pt").exists,
                f"result of the Ray simulation of {name} (a loaded machine starts Ray slowly: "
                "raise SIM_TIMEOUT)",
                SIM_TIMEOUT,
            )
        yield fed.tmp
    finally:
        fed.stop()


@pytest.mark.parametrize("name", list(SIM))
def test_ray_simulation_equals_the_engine_round_by_round(simulation, name):
    """4 simulated SuperNodes (FSLoRA: 4 clients, one each; FlexLoRA: 8 clients, a cohort of 6,
    2 per node): the global adapter after every round, the
    losses (1e-12, float64) and the message table equal the in-process run; wire = table."""
    assert_same_run(*load(simulation / name), reference(SIM[name]))


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """A SuperLink and two SuperNodes (partitions 0 and 1 of 2) on 127.0.0.1."""
    fed = Federation(tmp_path_factory.mktemp("federation"))
    try:
        fed.superlink()
        for p in range(2):
            fed.supernode(f"supernode{p}", f"partition-id={p} num-partitions=2")
        yield fed
    finally:
        fed.stop()


def test_real_processes_equal_the_simulation(federation, simulation):
    """``flwr run`` of the repository root on a SuperLink and two SuperNodes (their ClientApps in
    separate processes): three FSLoRA rounds give the simulation's history, message table and
    global adapter of every round (1e-12, float64)."""
    out = federation.tmp / "fslora"
    federation.flwr_run(ROOT, run_config({**SIM["fslora"], "out-dir": str(out)}))
    federation.wait_for((out / "result.pt").exists, f"result in {out}", 900)
    history, messages, rounds = load(out)
    sim_history, sim_messages, sim_rounds = load(simulation / "fslora")
    ref = (sim_history, sim_messages.drop(columns=["wire_up", "wire_down"]), sim_rounds)
    assert_same_run(history, messages, rounds, ref)
