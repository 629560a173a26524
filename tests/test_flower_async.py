"""The asynchronous Flower server (lorakit.distributed.flower_async) against lorakit's own rule.

Two kinds of test:

* in process, the real ``server_app`` and ``client_app`` on a *virtual-clock Grid* (below): a job
  pushed at time t to a node of speed x comes back at t + x·local_steps, and one pull returns the
  replies with the earliest finish time, as the clock of lorakit.asynchronous.clock orders its
  events. Fast and deterministic, so the server must equal the clock bit for bit;
* real processes on 127.0.0.1: ``flower-superlink`` and ``flower-supernode`` (insecure, loopback
  only, telemetry and dependency installation off), the run submitted with ``flwr run``. Each
  SuperNode runs every job in a fresh ``flwr-clientapp`` process, so a node's speed is its
  ``sleep`` (node config) plus that start-up; a crash is a SuperNode's process group killed. The
  simulation engine is not used: its virtual nodes share one Ray actor pool, so a node's speed
  could only be faked inside the ClientApp and a node cannot be killed as a process.
"""

import heapq
import json
import os
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no network beyond loopback

import pytest
import torch
from flower_processes import Federation, InProcessGrid
from flwr.app import Context, Error, Message, RecordDict

from lorakit.asynchronous.clock import AsyncFL, Simulation
from lorakit.distributed import flower_async as fa
from lorakit.local import Local, train_weights
from lorakit.rng import Streams

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = {"problem": "heterogeneous_quadratics", "problem-args": '{"M": 3, "m": 6, "n": 5}'}


def problem():
    return fa.problem_from(PROBLEM["problem"], PROBLEM["problem-args"])


def clock_order(seed: int, M: int) -> list[int]:
    """The order in which the clock first dispatches its clients (its ``cohort`` stream)."""
    return torch.randperm(M, generator=Streams(seed)["cohort"]).tolist()


class ClockGrid(InProcessGrid):
    """A Grid on a virtual clock, calling the real ClientApp in process (module docstring).
    Node ids are 100 + client; the clients in ``fail`` answer with an error (a lost node)."""

    def __init__(self, run_config, speeds, order, *, fail=()):
        self.run_config, self.speeds, self.fail = run_config, speeds, set(fail)
        self.nodes = [100 + c for c in order]
        self.steps = fa.settings(run_config).cfg.local_steps
        self.time, self.seq, self.heap = 0.0, 0, []

    def get_node_ids(self):
        return list(self.nodes)

    def push_messages(self, messages):
        ids = []
        for message in messages:
            mid = f"m{self.seq}"
            message.metadata.__dict__["_message_id"] = mid
            client = message.metadata.dst_node_id - 100
            context = Context(
                1, 100 + client, {"partition-id": client}, RecordDict(), self.run_config
            )
            reply = (
                Message(Error(code=5, reason="node unavailable"), reply_to=message)
                if client in self.fail
                else fa.client_app(message, context)
            )
            finish = self.time + self.speeds[client] * self.steps
            heapq.heappush(self.heap, (finish, self.seq, mid, reply))
            ids.append(mid)
            self.seq += 1
        return ids

    def pull_messages(self, message_ids):
        wanted = set(message_ids)
        due = [e for e in self.heap if e[2] in wanted]
        if not due:
            return []
        self.time = min(e[0] for e in due)
        out = [e for e in due if e[0] == self.time]
        self.heap = [e for e in self.heap if e not in out]
        heapq.heapify(self.heap)
        return [e[3] for e in sorted(out)]

    def send_and_receive(self, messages, *, timeout=None):
        raise NotImplementedError("the asynchronous server never waits for a cohort")


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """What Flower's runtime sets in a ServerApp's process before it creates messages."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


def serve(tmp_path, run_config, speeds, order, **kw):
    """Run the real server_app on a ClockGrid; its result."""
    run_config = {**PROBLEM, **run_config, "out": str(tmp_path), "poll": 0.0}
    fa.server_app(
        ClockGrid(run_config, speeds, order, **kw), Context(1, 0, {}, RecordDict(), run_config)
    )
    return fa.load_result(tmp_path)


def replay(p, cfg: AsyncFL, events, seed: int = 0):
    """FedAsync's global model from the recorded applied jobs, recomputed in process with
    lorakit's trainer and rule (each job from the model of the version it downloaded)."""
    applied = events[events.status == "applied"].sort_values("update")
    models, W = [p.start()], p.start()
    for e in applied.itertuples():
        assert e.update == len(models)  # one server update per applied job, in order
        assert e.staleness == len(models) - 1 - e.version_started  # τ = version now − downloaded
        W_start = models[e.version_started]
        W_node = train_weights(
            p, W_start, e.client, Local(cfg.local_steps, cfg.gamma), Streams(seed)
        )
        W = cfg.mix(W, W_start + (W_node - W_start), e.staleness)
        models.append(W)
    return W


# -- in process, on the virtual clock ----------------------------------------------------------------
@pytest.mark.parametrize(("rank", "max_staleness"), [(0, -1), (2, -1), (0, 1)])
def test_fedasync_equals_the_clock_update_by_update(tmp_path, rank, max_staleness):
    """Clients of speeds 1, 2.5 and 4: the server's staleness of every applied update, its client,
    the updates discarded as too stale, and the global model equal the virtual clock's, bit for
    bit (full deltas, rank-2 LoRA, max-staleness 1)."""
    speeds, seed, updates = (1.0, 2.5, 4.0), 0, 9
    config = {"rule": "fedasync", "gamma": 0.3, "local-steps": 2, "alpha": 0.7,
              "staleness": "polynomial", "rank": rank, "updates": updates, "seed": seed,
              "max-staleness": max_staleness}  # fmt: skip
    result = serve(tmp_path, config, speeds, clock_order(seed, 3))
    cfg = fa.settings({**PROBLEM, **config}).cfg
    sim = Simulation(cfg.with_params(speed=speeds), problem(), seed)
    sim.run(updates, None)
    clock = [e for e in sim.events if e["applied"]]
    ours = result.events[result.events.status == "applied"].sort_values("update")
    assert ours.staleness.tolist() == [e["staleness"] for e in clock]
    assert ours.client.tolist() == [e["client"] for e in clock]
    dropped = result.events[result.events.status == "discarded"].sort_values("arrived")
    assert dropped.client.tolist() == [e["client"] for e in sim.events if e["discarded"]]
    if max_staleness < 0:
        assert max(ours.staleness) >= 2 and dropped.empty  # the slow clients' updates are stale
    else:
        assert max(ours.staleness) <= 1 and len(dropped) >= 1  # ... and here too stale to apply
    assert result.history.loss.tolist() == [r["loss"] for r in sim.rows]
    assert torch.equal(result.W[0], sim.W)


@pytest.mark.parametrize("rank", [0, 2])
def test_fedbuff_with_k_nodes_and_equal_speeds_is_fedavg(tmp_path, rank):
    """FedBuff with K = 3 nodes of equal speed: each flush averages one update per node, all from
    the same model, so the run is synchronous FedAvg: equal to the clock's FedBuff bit for bit and
    to the clock's FedAvg to 1e-12 (float64; FedAvg sums the deltas in client order, the server in
    dispatch order). Rank 2: the adapters' A are drawn in dispatch order, which FedAvg's rounds do
    not share, so only the clock's FedBuff is compared."""
    seed, updates = 1, 4
    config = {"rule": "fedbuff", "buffer": 3, "gamma": 0.2, "local-steps": 3, "rank": rank,
              "server-lr": 0.8, "staleness": "polynomial", "updates": updates, "seed": seed}  # fmt: skip
    result = serve(tmp_path, config, (1.0, 1.0, 1.0), clock_order(seed, 3))
    applied = result.events[result.events.status == "applied"]
    assert (applied.staleness == 0).all() and len(applied) == 3 * updates
    assert (applied.groupby("update").client.nunique() == 3).all()
    cfg = fa.settings({**PROBLEM, **config}).cfg
    buff = Simulation(cfg.with_params(speed=(1.0, 1.0, 1.0)), problem(), seed)
    buff.run(updates, None)
    assert torch.equal(result.W[0], buff.W)
    if rank == 0:
        avg = Simulation(cfg.with_params(rule="fedavg", method="fedavg"), problem(), seed)
        avg.run(updates, None)
        assert (result.W[0] - avg.W).abs().max() <= 1e-12


def test_fedbuff_a_fast_node_waits_for_the_flush(tmp_path):
    """K = 2 of 3 nodes of speeds 1, 2.5 and 4: the fastest is back before the buffer fills and
    waits for the flush instead of being sent the model it has just trained on (the virtual clock
    would send it at once, and its second update would join the first in the buffer). So every
    node's jobs start from ever newer models, every buffer holds two nodes, and the slowest
    node's updates arrive stale."""
    config = {"rule": "fedbuff", "buffer": 2, "gamma": 0.2, "updates": 4}
    result = serve(tmp_path, config, (1.0, 2.5, 4.0), [0, 1, 2])
    ev = result.events
    for _, jobs in ev.groupby("node"):
        assert (jobs.sort_values("job").version_started.diff().dropna() > 0).all()
    applied = ev[ev.status == "applied"]
    assert (applied.groupby("update").node.nunique() == 2).all()
    slow = applied[applied.client == 2]
    assert len(slow) >= 1 and (slow.staleness >= 1).all()


def test_a_lost_node_loses_only_its_own_update(tmp_path):
    """Client 1's node answers with an error (the SuperLink's "node unavailable"): that job is
    lost and the node gets no further job; every other job is applied, and the global model is
    the in-process replay of exactly those jobs."""
    config = {"rule": "fedasync", "gamma": 0.3, "alpha": 0.5, "staleness": "polynomial",
              "updates": 6}  # fmt: skip
    result = serve(tmp_path, config, (1.0, 1.5, 2.0), [0, 1, 2], fail=[1])
    ev = result.events
    lost = ev[ev.status == "lost"]
    assert lost.node.tolist() == [101] and "node unavailable" in lost.reason.iloc[0]
    assert (ev[ev.node != 101].status == "applied").sum() == 6
    assert set(ev.status) <= {"applied", "lost", "pending", "unused"}
    W = replay(problem(), fa.settings({**PROBLEM, **config}).cfg, ev)
    assert torch.equal(result.W[0], W)


def test_bad_run_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown run config keys"):
        fa.settings({"sped": 1})
    with pytest.raises(ValueError, match="rule"):
        fa.settings({"rule": "fedavg"})
    with pytest.raises(ValueError, match="problem-args must be a JSON object"):
        fa.settings({"problem-args": "M=3"})
    with pytest.raises(ValueError, match="max-staleness"):
        fa.settings({"max-staleness": -2})
    with pytest.raises(ValueError, match=r"buffer = 4 must be in \[1, 3\]"):
        serve(tmp_path, {"rule": "fedbuff", "buffer": 4}, (1.0, 1.0, 1.0), [0, 1, 2])


def test_write_app_is_a_flower_app(tmp_path):
    """The written pyproject.toml passes Flower's own validation and carries the run config."""
    from flwr.cli.config_utils import load_and_validate

    path = fa.write_app(tmp_path, rule="fedbuff", buffer=2, server_lr=0.5)
    config, _ = load_and_validate(path)
    app = config["tool"]["flwr"]["app"]
    assert app["components"]["serverapp"] == "lorakit.distributed.flower_async:server_app"
    assert app["config"]["buffer"] == 2 and app["config"]["server-lr"] == 0.5
    with pytest.raises(ValueError, match="buffer"):
        fa.write_app(tmp_path, buffer=0)


# -- real processes: a SuperLink and SuperNodes on 127.0.0.1 ------------------------------------------
class AsyncFederation(Federation):
    """:class:`flower_processes.Federation` with the async app's SuperNodes, submission and
    results."""

    def supernode(self, client: int, sleep: float):
        return super().supernode(f"supernode{client}", f"partition-id={client} sleep={sleep}")

    def submit(self, name: str, budget: float, **config) -> Path:
        """Write the app with ``config`` and submit it with ``flwr run``; its output directory."""
        out = self.tmp / name
        app = fa.write_app(self.tmp / f"app-{name}", **config, time_budget=budget, out=str(out))
        self.flwr_run(app.parent)
        return out

    def result(self, out: Path, budget: float) -> fa.Result:
        """The run's result, once the server has written it (within its budget + 60 s)."""
        self.wait_for((out / "result.pt").exists, f"result in {out}", budget + 60)
        return fa.load_result(out)

    def events(self, out: Path) -> list[dict]:
        path = out / "events.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """A SuperLink and three SuperNodes (clients 0, 1, 2) of speeds sleep = 0, 0.5 and 2 s."""
    fed = AsyncFederation(tmp_path_factory.mktemp("federation"))
    try:
        fed.superlink()
        for client, sleep in enumerate((0.0, 0.5, 2.0)):
            fed.supernode(client, sleep)
        yield fed
    finally:
        fed.stop()


def test_processes_fedbuff_with_k_nodes_is_fedavg(federation):
    """Three SuperNodes of different speeds, FedBuff with K = 3: two server updates equal the
    clock's synchronous FedAvg to 1e-12 (float64), every applied update has staleness 0."""
    config = {**PROBLEM, "rule": "fedbuff", "buffer": 3, "gamma": 0.2, "local-steps": 2,
              "updates": 2, "min-nodes": 3}  # fmt: skip
    result = federation.result(federation.submit("fedbuff", 240.0, **config), 240.0)
    assert result.stopped == "", result.stopped
    applied = result.events[result.events.status == "applied"]
    assert len(applied) == 6 and (applied.staleness == 0).all()
    cfg = fa.settings(config).cfg.with_params(rule="fedavg", method="fedavg")
    avg = Simulation(cfg, problem(), 0)
    avg.run(2, None)
    assert (result.W[0] - avg.W).abs().max() <= 1e-12


def test_processes_a_killed_node_loses_only_its_own_update(federation):
    """FedAsync on the three SuperNodes and a fourth (client 3, sleep 60 s), killed with every
    process it started as soon as the server has sent it a job. The run still makes its 6
    updates; the killed node's job is never applied; every reply of the others is applied with
    its staleness recorded, and the global model equals the in-process replay of exactly those
    jobs (1e-12, float64)."""
    victim = federation.supernode(3, 60.0)
    config = {"problem": "heterogeneous_quadratics", "problem-args": '{"M": 4, "m": 6, "n": 5}',
              "rule": "fedasync", "gamma": 0.3, "alpha": 0.6, "staleness": "polynomial",
              "updates": 6, "min-nodes": 4}  # fmt: skip
    out = federation.submit("crash", 240.0, **config)
    node = federation.node_id(victim)
    federation.wait_for(lambda: any(
        e["event"] == "dispatch" and e["node"] == node for e in federation.events(out)
    ), what="a job sent to the victim")  # fmt: skip
    federation.kill(victim)
    result = federation.result(out, 240.0)
    assert result.stopped == "", result.stopped
    ev = result.events
    mine = ev[ev.node == node]
    assert len(mine) == 1 and mine.status.iloc[0] in ("pending", "lost")
    others = ev[ev.node != node]
    assert (others.status == "applied").sum() == 6
    assert set(others.status) <= {"applied", "pending", "unused"}
    assert ev.staleness[ev.status == "applied"].max() >= 1  # FedAsync: later arrivals are stale
    cfg = fa.settings(config).cfg
    W = replay(fa.problem_from(config["problem"], config["problem-args"]), cfg, ev)
    assert (result.W[0] - W).abs().max() <= 1e-12
