"""FedAsync and FedBuff on Flower: a ServerApp that drives the Grid itself, and its ClientApp.

Flower's strategies run synchronous rounds (``send_and_receive`` waits for a whole cohort). This
ServerApp uses the Grid's message API directly, so the aggregation is asynchronous across
processes: it pushes a job to every idle node (:meth:`Grid.push_messages`), pulls whatever replies
are in without waiting for the rest (:meth:`Grid.pull_messages`), and applies each with lorakit's
own server step, :meth:`AsyncFL.mix <lorakit.asynchronous.clock.AsyncFL.mix>` (FedAsync, Xie et al.
2019) or :meth:`AsyncFL.aggregate <lorakit.asynchronous.clock.AsyncFL.aggregate>` (FedBuff, Nguyen
et al. 2022): the rules, staleness functions and buffer of :mod:`lorakit.asynchronous.clock`, on a
wall clock instead of a virtual one.

The server. It builds the problem named in the run config (so it knows the shapes, W⁰ and, for a
teaching run, f(W)), keeps the global model W and its version (the number of server updates so
far) and runs until ``updates`` server updates or ``time-budget`` seconds:

* **dispatch** — an idle node (no job in flight) gets a job when the global model has changed since
  it last downloaded one: the current W and its version (and, with ``rank = r``, the adapter's A
  drawn from the run's ``init`` stream, B = 0, so a run is reproducible from the server's seed).
  Without this rule a FedBuff node that finished before the buffer filled would be sent the model
  it has just trained on and return a second update from it (the same one, for lorakit's exact
  local gradients); with it, each buffer holds at most one update per node and version, a node
  waits for the flush, and FedBuff with K equal to the number of nodes is synchronous FedAvg.
  FedAsync always moves the model, so its nodes never wait. K must not exceed the number of nodes.
* **arrival** — the replies of one pull are handled in dispatch order (the virtual clock's rule
  for equal finish times); staleness τ = version now − version downloaded. FedAsync mixes the
  node's model W_start + ΔW in at once with α_t = α·s(τ); FedBuff buffers (τ, ΔW) and, when K are
  in, steps by η_s·Σ s(τ_i)ΔW_i/K. An update staler than ``max-staleness`` is discarded.
* **failures** — a job whose reply is an error (the ClientApp raised; the SuperLink reports the
  node unavailable or the message expired) or that is older than ``job-timeout`` seconds is lost,
  alone: the model and every other job are untouched, and that node gets no further job. Jobs
  still in flight when the run ends are recorded as ``pending``.

Every job is recorded (:func:`load_result`): node, client, version downloaded, dispatch and arrival
times (seconds since the start), staleness, status (``applied``, ``discarded``, ``lost``,
``pending``, ``unused`` for a reply that came after the last update) and ``bytes_up`` (floats ×
``bytes_per_float``, the clock's accounting). With ``out`` set, the server appends each event to
``out/events.jsonl`` as it happens and writes ``out/result.pt`` at the end.

Against the virtual clock (:class:`~lorakit.asynchronous.clock.Simulation`): where replies come in
the clock's order the two agree bit for bit (FedAsync always; FedBuff when no node finishes twice
before a flush); a FedBuff node that is faster than the buffer fills is re-sent the same model at
once on the clock and waits here.

The ClientApp trains client ``partition-id`` (node config) of the same problem with lorakit's local
trainer (:mod:`lorakit.local`): ``local-steps`` SGD steps with step ``gamma`` on every row of the
client, on W itself (``rank = 0``: :func:`~lorakit.local.train_weights`, uploading ΔW) or on a
fresh rank-r adapter (:func:`~lorakit.local.train`, uploading B and A; the server forms
s·B·A). The node config's ``sleep`` (seconds, default 0) is added to every job: a node's speed.

Run it: :func:`write_app` writes the app's ``pyproject.toml`` (``python -m
lorakit.distributed.flower_async DIR``), then ``flwr run DIR`` against a SuperLink (README
"Asynchronous aggregation on Flower" gives the commands). Not supported here: gradient noise and
minibatches (each node would draw from its own stream, so the run could not equal the clock's),
compressed uploads, model (peft) problems.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import tomli_w
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from .._validation import check_choice, check_int, check_real
from ..asynchronous.clock import AsyncFL
from ..divergence import BLOWUP, DivergenceError, exploded
from ..local import Local, init_adapter, train, train_weights
from ..problems import PROBLEMS, make_problem
from ..problems.protocol import check_problem_protocol, site_scalings
from ..rng import Streams
from ..tree import finite, leaves, tree_like

__all__ = [
    "RULES",
    "RUN_CONFIG",
    "AsyncServer",
    "Result",
    "client_app",
    "load_result",
    "problem_from",
    "server_app",
    "settings",
    "write_app",
]


_MODULE = "lorakit.distributed.flower_async"
#: The asynchronous rules this server runs (synchronous FedAvg is FedBuff with K = nodes).
RULES = ("fedasync", "fedbuff")

#: The run config and its defaults (the app's ``[tool.flwr.app.config]``); ``flwr run -c`` sets them.
RUN_CONFIG = {
    "rule": "fedasync",  # "fedasync" or "fedbuff"
    "problem": "heterogeneous_quadratics",  # a name of lorakit.problems.PROBLEMS with clients
    "problem-args": '{"M": 3, "m": 6, "n": 5, "spread": 1.0}',  # its keyword arguments (JSON)
    "seed": 0,  # the server's streams (the adapters' A)
    "gamma": 0.1,  # local SGD step
    "local-steps": 1,
    "rank": 0,  # 0: full deltas ΔW; r ≥ 1: a fresh rank-r adapter per job
    "lora-alpha": 0.0,  # 0: α = r (s = 1)
    "alpha": 0.6,  # FedAsync's mixing weight α
    "staleness": "constant",  # s(τ): "constant", "polynomial" or "hinge"
    "a": 0.5,
    "b": 4.0,
    "buffer": 3,  # FedBuff's K
    "server-lr": 1.0,  # FedBuff's η_s
    "max-staleness": -1,  # discard updates staler than this (−1: never)
    "updates": 10,  # stop after this many server updates ...
    "time-budget": 600.0,  # ... or this many seconds
    "min-nodes": 1,  # wait (within time-budget) for this many nodes before the first job
    "job-timeout": 300.0,  # a job without a reply after this many seconds is lost (its TTL)
    "poll": 0.2,  # seconds between pulls that brought nothing
    "out": "",  # a directory for events.jsonl and result.pt ("" : none)
}


# -- the run config --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """A run config, checked: the rule as an :class:`AsyncFL` and the server's own limits."""

    cfg: AsyncFL
    problem: str
    problem_args: str
    seed: int
    updates: int
    time_budget: float
    min_nodes: int
    job_timeout: float
    poll: float
    out: str


def settings(run_config) -> Settings:
    """The :class:`Settings` of a Flower run config (missing keys take :data:`RUN_CONFIG`'s
    defaults); a bad value raises ``ValueError`` naming the key and its allowed range."""
    unknown = sorted(set(run_config) - set(RUN_CONFIG))
    if unknown:
        raise ValueError(f"unknown run config keys {unknown}; allowed: {sorted(RUN_CONFIG)}")
    c = {**RUN_CONFIG, **dict(run_config)}
    check_choice("rule", c["rule"], RULES)
    rank = check_int("rank", c["rank"], low=0)
    alpha = check_real("lora-alpha", c["lora-alpha"], low=0.0)
    max_staleness = check_int("max-staleness", c["max-staleness"], low=-1)
    cfg = AsyncFL(
        c["rule"],
        check_real("gamma", c["gamma"], low=0.0, low_open=True),
        local_steps=check_int("local-steps", c["local-steps"], low=1),
        alpha=check_real("alpha", c["alpha"], low=0.0, high=1.0, low_open=True),
        staleness=c["staleness"],
        a=check_real("a", c["a"], low=0.0),
        b=check_real("b", c["b"], low=0.0),
        buffer=check_int("buffer", c["buffer"], low=1),
        server_lr=check_real("server-lr", c["server-lr"], low=0.0, low_open=True),
        max_staleness=None if max_staleness < 0 else max_staleness,
        rank=rank or None,
        lora_alpha=alpha or None,
    )
    check_choice("problem", c["problem"], tuple(PROBLEMS))
    _problem_kwargs(c["problem-args"])
    return Settings(
        cfg,
        c["problem"],
        c["problem-args"],
        check_int("seed", c["seed"], low=0),
        check_int("updates", c["updates"], low=1),
        check_real("time-budget", c["time-budget"], low=0.0, low_open=True),
        check_int("min-nodes", c["min-nodes"], low=1),
        check_real("job-timeout", c["job-timeout"], low=0.0, low_open=True),
        check_real("poll", c["poll"], low=0.0),
        str(c["out"]),
    )


def _problem_kwargs(text: str) -> dict:
    try:
        kwargs = json.loads(text)
    except (TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"problem-args must be a JSON object, got {text!r}: {error}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"problem-args must be a JSON object, got {text!r}")
    return kwargs


@lru_cache(maxsize=4)
def problem_from(name: str, args: str):
    """The problem ``name`` of :data:`lorakit.problems.PROBLEMS` built with the JSON keyword
    arguments ``args`` (cached per process); it must have clients."""
    problem = make_problem(name, **_problem_kwargs(args))
    return check_problem_protocol(problem, clients=True)


# -- trees on the wire -----------------------------------------------------------------------------
def _pack(tree) -> ArrayRecord:
    """One array per site (``site0``, ``site1``, ...), dtype kept: float64 travels bit for bit."""
    return ArrayRecord(
        OrderedDict((f"site{j}", x.detach().cpu().contiguous()) for j, x in enumerate(leaves(tree)))
    )


def _unpack(record: ArrayRecord, problem):
    mats = record.to_torch_state_dict()
    return problem.tree(mats[f"site{j}"].to(problem.device) for j in range(len(problem.shapes)))


def _floats(tree) -> int:
    return sum(x.numel() for x in leaves(tree))


# -- the server ------------------------------------------------------------------------------------
@dataclass
class _Job:
    seq: int
    node: int
    version: int
    W_start: object
    dispatched: float
    event: dict


class AsyncServer:
    """The asynchronous server of one run (module docstring): :meth:`run` drives a ``Grid``."""

    def __init__(self, s: Settings, *, clock=time.monotonic, sleep=time.sleep):
        self.s, self.cfg = s, s.cfg
        self.p = problem_from(s.problem, s.problem_args)
        self.scalings = None
        if self.cfg.rank is not None:
            self.scalings = site_scalings(self.p, self.cfg.rank, self.cfg.lora_alpha)
        self.streams = Streams(s.seed)
        self.clock, self.sleep = clock, sleep
        self.t0 = clock()
        self.W, self.version = self.p.start(), 0
        self.loss0 = self.loss = self.evaluate(self.W)
        self.jobs: dict[str, _Job] = {}  # message id → job in flight
        self.seq = 0
        self.idle: deque[int] = deque()
        self.known: set[int] = set()
        self.dead: set[int] = set()
        self.downloaded: dict[int, int] = {}  # node → version of its last job
        self.buffer: list = []  # FedBuff: (τ, ΔW, event)
        self.events: list[dict] = []
        self.rows: list[dict] = []
        self.stopped = ""
        self.out = Path(s.out) if s.out else None
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "events.jsonl").write_text("")

    # -- bookkeeping -------------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock() - self.t0

    def evaluate(self, W) -> float:
        with torch.no_grad():
            return float(self.p.client_losses(W).mean()) if finite(W) else math.nan

    def emit(self, kind: str, event: dict) -> None:
        """Append one event to ``out/events.jsonl`` at once (a test or a user can watch it)."""
        if self.out is not None:
            with open(self.out / "events.jsonl", "a") as f:
                f.write(json.dumps({"event": kind, **event}) + "\n")

    def row(self, stale: list[int]) -> None:
        self.rows.append({
            "update": self.version, "time": self.now(), "loss": self.loss,
            "staleness": sum(stale) / len(stale) if stale else 0.0,
            "staleness_max": max(stale) if stale else 0, "applied": len(stale),
        })  # fmt: skip

    # -- nodes and jobs ----------------------------------------------------------------------------
    def discover(self, grid: Grid) -> int:
        """Add nodes that joined (in the Grid's order) to the idle queue; the number alive."""
        for node in grid.get_node_ids():
            if node not in self.known:
                self.known.add(node)
                self.idle.append(node)
        return len(self.known - self.dead)

    def dispatch(self, grid: Grid) -> None:
        """Push a job to every idle node whose last job was on an older model (module docstring)."""
        ready = [n for n in self.idle if self.downloaded.get(n, -1) < self.version]
        if not ready:
            return
        messages, jobs = [], []
        for node in ready:
            self.idle.remove(node)
            content = RecordDict({
                "model": _pack(self.W),
                "job": ConfigRecord({"version": self.version, "job": self.seq}),
            })  # fmt: skip
            if self.cfg.rank is not None:  # the job's adapter start, from the server's stream
                _, A = init_adapter(self.p, self.cfg.rank, self.streams["init"])
                content["adapter"] = _pack(A)
            messages.append(
                Message(
                    content, node, MessageType.TRAIN, ttl=self.s.job_timeout, group_id=str(self.seq)
                )
            )
            event = {
                "job": self.seq, "node": node, "client": None, "version_started": self.version,
                "dispatched": self.now(), "arrived": None, "staleness": None, "status": "pending",
                "update": None, "bytes_up": 0.0, "reason": "",
            }  # fmt: skip
            jobs.append(_Job(self.seq, node, self.version, self.W, event["dispatched"], event))
            self.downloaded[node] = self.version
            self.events.append(event)
            self.seq += 1
        ids = list(grid.push_messages(messages))
        ids += [None] * (len(jobs) - len(ids))  # a refused push returns fewer ids or None
        for job, mid in zip(jobs, ids, strict=True):
            if mid:
                self.jobs[mid] = job
                self.emit("dispatch", job.event)
            else:
                self.lose(job, "the SuperLink refused the message")

    def lose(self, job: _Job, reason: str) -> None:
        job.event.update(status="lost", reason=reason, arrived=self.now())
        self.dead.add(job.node)
        self.emit("lost", job.event)
        log(logging.INFO, "job %d lost (node %d): %s", job.seq, job.node, reason)

    def expire(self) -> None:
        now = self.now()
        for mid, job in list(self.jobs.items()):
            if now - job.dispatched > self.s.job_timeout:
                del self.jobs[mid]
                self.lose(job, f"no reply within job-timeout = {self.s.job_timeout:g} s")

    # -- the server step ---------------------------------------------------------------------------
    def delta(self, job: _Job, content: RecordDict):
        """ΔW of a reply (the node's ΔW, or s·B·A of its adapter, as the clock forms it) and the
        number of floats the node uploaded."""
        if self.cfg.rank is None:
            delta = _unpack(content["update"], self.p)
            return delta, _floats(delta)
        B, A = _unpack(content["B"], self.p), _unpack(content["A"], self.p)
        mats = [s * (b @ a) for b, a, s in zip(leaves(B), leaves(A), self.scalings, strict=True)]
        return tree_like(job.W_start, mats), _floats(B) + _floats(A)

    def arrive(self, job: _Job, reply: Message) -> None:
        event = job.event
        event["arrived"] = self.now()
        if reply.has_error():
            self.lose(job, f"error {reply.error.code}: {reply.error.reason}")
            return
        self.idle.append(job.node)
        content = reply.content
        event["client"] = int(content["job"]["client"])
        if self.version >= self.s.updates:  # a reply after the run's last update
            event["status"] = "unused"
            self.emit("unused", event)
            return
        tau = self.version - job.version
        delta, floats = self.delta(job, content)
        event.update(staleness=tau, bytes_up=float(floats * self.cfg.bytes_per_float))
        if self.cfg.max_staleness is not None and tau > self.cfg.max_staleness:
            event["status"] = "discarded"
            self.emit("discarded", event)
            return
        event["status"] = "applied"
        if self.cfg.rule == "fedasync":
            self.apply(self.cfg.mix(self.W, job.W_start + delta, tau), [event])
        else:
            self.buffer.append((tau, delta, event))
            if len(self.buffer) == self.cfg.buffer:
                W_new = self.cfg.aggregate(self.W, [(t, d) for t, d, _ in self.buffer])
                applied = [e for _, _, e in self.buffer]
                self.buffer.clear()
                self.apply(W_new, applied)

    def apply(self, W_new, applied: list[dict]) -> None:
        """Replace W by a finite candidate whose loss did not explode (else DivergenceError)."""
        loss = self.evaluate(W_new)
        if exploded(loss, self.loss0, BLOWUP):
            raise DivergenceError(
                f"{self.cfg.rule} diverged at server update {self.version + 1}: the candidate "
                f"model's loss is {loss:g}; lower gamma = {self.cfg.gamma:g}",
                step=self.version + 1,
                seed=self.s.seed,
                frame=pd.DataFrame(self.rows),
            )
        self.W, self.loss = W_new, loss
        self.version += 1
        for event in applied:
            event["update"] = self.version
            self.emit("applied", event)
        self.row([e["staleness"] for e in applied])
        log(logging.INFO, "update %d: loss %.6g, staleness %s", self.version, loss,
            [e["staleness"] for e in applied])  # fmt: skip

    # -- the loop ----------------------------------------------------------------------------------
    def wait_for_nodes(self, grid: Grid) -> None:
        while self.discover(grid) < self.s.min_nodes:
            if self.now() > self.s.time_budget:
                raise RuntimeError(
                    f"only {len(self.known)} of min-nodes = {self.s.min_nodes} nodes connected "
                    f"within time-budget = {self.s.time_budget:g} s"
                )
            self.sleep(max(self.s.poll, 0.05))
        nodes = len(self.known)
        if self.cfg.rule == "fedbuff" and self.cfg.buffer > nodes:
            raise ValueError(
                f"buffer = {self.cfg.buffer} must be in [1, {nodes}] (the connected nodes): a node "
                "contributes one update per model version, so a larger buffer never fills"
            )

    def run(self, grid: Grid) -> None:
        """Serve until ``updates`` server updates, ``time-budget`` seconds, or no live node; the
        result is written (``out``) whatever happens, an error included."""
        try:
            self.wait_for_nodes(grid)
            self.row([])
            while self.version < self.s.updates:
                if self.now() > self.s.time_budget:
                    self.stopped = f"time-budget = {self.s.time_budget:g} s"
                    break
                alive = self.discover(grid)
                self.dispatch(grid)
                self.expire()
                if not self.jobs and (alive == 0 or not self.dispatchable()):
                    self.stopped = "no node can take a job"
                    break
                replies = list(grid.pull_messages(list(self.jobs))) if self.jobs else []
                if not replies:
                    self.sleep(self.s.poll)
                    continue
                pairs = [(r.metadata.reply_to_message_id, r) for r in replies]
                arrived = [(self.jobs.pop(i), r) for i, r in pairs if i in self.jobs]
                for job, reply in sorted(arrived, key=lambda jr: jr[0].seq):
                    self.arrive(job, reply)
        except BaseException as error:
            self.stopped = f"{type(error).__name__}: {error}"
            raise
        finally:
            self.finish()

    def dispatchable(self) -> bool:
        return any(self.downloaded.get(n, -1) < self.version for n in self.idle)

    def finish(self) -> None:
        for job in self.jobs.values():
            self.emit("pending", job.event)
        if self.stopped:
            log(logging.INFO, "stopped: %s", self.stopped)
        if self.out is not None:  # written whole, then renamed: a reader never sees half of it
            tmp = self.out / "result.pt.tmp"
            torch.save(
                {"W": [x.cpu() for x in leaves(self.W)], "rows": self.rows,
                 "events": self.events, "stopped": self.stopped},
                tmp,
            )  # fmt: skip
            os.replace(tmp, self.out / "result.pt")


# -- the apps --------------------------------------------------------------------------------------
server_app = ServerApp()
client_app = ClientApp()


@server_app.main()
def _serve(grid: Grid, context: Context) -> None:
    AsyncServer(settings(context.run_config)).run(grid)


@client_app.train()
def _train(message: Message, context: Context) -> Message:
    s = settings(context.run_config)
    p = problem_from(s.problem, s.problem_args)
    if "partition-id" not in context.node_config:
        raise ValueError("the node config must give partition-id (the client this node trains)")
    client = check_int("partition-id", context.node_config["partition-id"], low=0, high=p.M - 1)
    pause = check_real("sleep", context.node_config.get("sleep", 0.0), low=0.0)
    content, cfg = message.content, s.cfg
    local, streams = Local(cfg.local_steps, cfg.gamma), Streams(s.seed)
    W_start = _unpack(content["model"], p)
    if cfg.rank is None:
        reply = {"update": _pack(train_weights(p, W_start, client, local, streams) - W_start)}
    else:
        scalings = site_scalings(p, cfg.rank, cfg.lora_alpha)
        A = _unpack(content["adapter"], p)
        B = p.tree(torch.zeros(m, cfg.rank, dtype=p.dtype, device=p.device) for m, _ in p.shapes)
        B, A, _ = train(p, W_start, B, A, scalings, client, local, streams)
        reply = {"B": _pack(B), "A": _pack(A)}
    time.sleep(pause)  # the node's controlled speed
    job = content["job"]
    record = ConfigRecord(
        {"version": int(job["version"]), "job": int(job["job"]), "client": client}
    )
    return Message(RecordDict({**reply, "job": record}), reply_to=message)


# -- results and the app directory -----------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    """What a run wrote to ``out``: the final global model's per-site matrices, the history (one
    row per server update, row 0 the start) and every job."""

    W: list
    history: pd.DataFrame
    events: pd.DataFrame
    stopped: str


def load_result(out) -> Result:
    """Read ``out/result.pt`` written by the server at the end of a run."""
    data = torch.load(Path(out) / "result.pt", weights_only=False)
    return Result(data["W"], pd.DataFrame(data["rows"]), pd.DataFrame(data["events"]),
                  data["stopped"])  # fmt: skip


def write_app(directory, **run_config) -> Path:
    """Write the Flower app (its ``pyproject.toml``) into ``directory``; ``run_config`` replaces
    defaults of :data:`RUN_CONFIG` (underscores for hyphens: ``server_lr=0.5``). The app holds no
    code: its components are this module's ``server_app`` and ``client_app``, imported from the
    installed lorakit. Returns the file."""
    config = {k.replace("_", "-"): v for k, v in run_config.items()}
    settings(config)  # refuse a bad key or value here rather than in the server
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    app = {
        "project": {
            "name": "lorakit-flower-async",
            "version": "0.1.0",
            "description": "lorakit's FedAsync and FedBuff as an asynchronous Flower app",
            "license": "MIT",
            "dependencies": ["flwr>=1.42"],
        },
        "tool": {"flwr": {"app": {
            "publisher": "lorakit",
            "components": {
                "serverapp": f"{_MODULE}:server_app",  # not __name__: "__main__" under -m
                "clientapp": f"{_MODULE}:client_app",
            },
            "config": {**RUN_CONFIG, **config},
        }}},
    }  # fmt: skip
    path = directory / "pyproject.toml"
    path.write_text(tomli_w.dumps(app))
    return path


if __name__ == "__main__":  # python -m lorakit.distributed.flower_async DIR [key=value ...]
    if len(sys.argv) < 2:
        sys.exit("usage: python -m lorakit.distributed.flower_async DIR [key=value ...]")
    pairs = dict(arg.split("=", 1) for arg in sys.argv[2:])
    typed = {k: type(RUN_CONFIG.get(k.replace("_", "-"), ""))(v) for k, v in pairs.items()}
    print(write_app(sys.argv[1], **typed))
