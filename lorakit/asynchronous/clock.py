"""An event-driven simulator of asynchronous federated learning on a :class:`FederatedProblem`.

The paper (spec async_fl.md §0, §3.3) promises a "fully asynchronous" protocol but gives no
asynchronous rule, staleness variable, discount or buffer: its experiment and theory are
synchronous FedAvg. lorakit therefore supplies the *standard* rules from the literature, labelled
as such (spec §3.8, §9 "optional, clearly labelled extensions"):

* ``"fedavg"`` — synchronous FedAvg (McMahan et al. 2017): a cohort starts from the same model and
  the server waits for the slowest of them, then applies the mean of their deltas;
* ``"fedasync"`` — FedAsync (Xie, Koyejo & Gupta 2019): each arriving model x_new, trained from the
  stale model of version τ, is mixed in at once, x ← (1 − α_t)x + α_t x_new with α_t = α·s(t − τ);
  staleness functions ``constant`` s = 1, ``polynomial`` s = (τ + 1)^(−a), ``hinge`` s = 1 for
  τ ≤ b else 1/(a(τ − b) + 1);
* ``"fedbuff"`` — FedBuff (Nguyen et al. 2022): arriving deltas are buffered, weighted by s(τ);
  when K are in, the server applies W ← W + η_s·(Σ s(τ_i)Δ_i)/K.

The clock. A heap holds (finish_time, seq, client, version_started, update). A dispatched client
downloads the current model (and its version), computes for ``local_steps × scale × X`` units of
virtual time (X drawn per job from ``speed``: U[0.5, 1.5], Exp(1), or Pareto with shape 1.5 and
mean 1 — heavy-tailed stragglers; or a tuple of fixed per-client times), then uploads after
``delay``. Staleness of an arriving update = current version − version_started. Events with equal
finish times are processed together (in dispatch order) before idle clients are dispatched, so
equal-speed clients behave synchronously. Idle clients wait in a FIFO queue (initial order drawn
from the ``cohort`` stream); at most ``concurrency`` clients compute at once.

Failures. With probability ``crash`` a job crashes at a uniform point of its compute time: nothing
is uploaded, the global model is untouched, the crash is counted and the client restarts from the
current model. An update staler than ``max_staleness`` is discarded (and counted). A candidate
global model that is not finite or whose loss explodes raises :class:`DivergenceError` before the
model changes.

Updates are full weight deltas ΔW (``adapter=None``) or LoRA adapters (``adapter=r``): the client
trains (B, A) from the LoRA init (B = 0, A Kaiming-uniform) on W_start + B A by local SGD and
uploads B and A; the server forms ΔW = B A. Each uploaded tensor passes through ``compressor``;
bytes come from its ``payload``.

History rows and counters. The history has one row per server update (row 0: the start); a run
stopped by ``time_budget`` ends with one more row at time = ``time_budget`` (no update: it repeats
the last update's number with ``applied = 0``), so its last row holds the state at the budget's end
even when no update ever happened (``crash=1``). The counters ``discarded``, ``crashed`` and
``bytes_up`` of a row count every event processed up to that row: events in time order, ties in
dispatch order (an event at the same time as an update but processed after it is in a later row).

Run size. The number of client jobs is estimated before a run (:meth:`AsyncFL.estimated_events`,
from the mean job time local_steps·scale·E[X] (+ delay), the concurrency, crashes, the rule's jobs
per update and ``updates``/``time_budget``); above ``max_events`` (default
:data:`MAX_EVENTS`) :meth:`AsyncFL.run` refuses with the estimate. A run stopped by Ctrl-C raises
:class:`Interrupted` (a ``KeyboardInterrupt``) whose ``frame`` holds every row so far, the
interrupted seed's last row being its state at the interruption.

Randomness: one generator per source (``speed``, ``crash``, ``cohort``, ``init``, ``compression``,
``noise``).

Model scale: :meth:`AsyncFL.run` on a :class:`lorakit.adapters.ModelProblem` with clients runs the
same clock and rules on every LoRA site's W = W0 + s·B·A (:mod:`lorakit.adapters.asynchronous`).
"""

from __future__ import annotations

import functools
import heapq
import math
from collections import deque
from dataclasses import dataclass, field

import pandas as pd
import torch

from .._validation import (
    check_byte_size,
    check_choice,
    check_int,
    check_problem,
    check_real,
    check_seeds,
)
from ..compressors import Compressor, identity
from ..divergence import BLOWUP, DivergenceError, check_blowup, exploded, run_seeds
from ..problems.federated import FederatedProblem
from ..progress import bar as progress_bar
from ..rng import Streams
from ..sketches import kaiming_uniform

__all__ = [
    "MAX_EVENTS",
    "RULES",
    "SPEEDS",
    "STALENESS",
    "AsyncFL",
    "Interrupted",
    "staleness_weight",
]

RULES = ("fedavg", "fedasync", "fedbuff")
STALENESS = ("constant", "polynomial", "hinge")
SPEEDS = ("uniform", "exponential", "heavy_tail")
_PARETO_SHAPE = 1.5
#: :meth:`AsyncFL.run` refuses a run whose estimated number of client jobs per seed is above this:
#: measured about 650 jobs a second on a 5×3 problem with 4 clients (loaded 2-core CPU), so about
#: 5 minutes; far longer at model scale.
MAX_EVENTS = 200_000


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`AsyncFL.run`: ``frame`` holds the history so far (finished seeds and
    the interrupted seed up to a last row at the interruption), ``events`` the jobs (if asked)."""

    def __init__(self, message: str, frame: pd.DataFrame, events: pd.DataFrame | None = None):
        super().__init__(message)
        self.frame, self.events = frame, events


def staleness_weight(kind: str, tau: int, a: float = 0.5, b: float = 4.0) -> float:
    """s(τ) of FedAsync (Xie et al. 2019): constant, polynomial (τ+1)^(−a), or hinge (a, b)."""
    check_choice("staleness", kind, STALENESS)
    if kind == "constant":
        return 1.0
    if kind == "polynomial":
        return float((tau + 1) ** (-a))
    return 1.0 if tau <= b else 1.0 / (a * (tau - b) + 1.0)


@dataclass(frozen=True)
class AsyncFL:
    """An (a)synchronous federated configuration; :meth:`run` simulates it on a virtual clock.

    Parameters
    ----------
    rule : ``"fedavg"`` (synchronous), ``"fedasync"`` or ``"fedbuff"`` (see the module docstring).
    lr : the clients' local SGD step size.
    local_steps : local SGD steps per job.
    concurrency : at most this many clients compute at once (None: all clients).
    cohort : FedAvg's clients per round (None: all); drawn from the ``cohort`` stream.
    alpha : FedAsync's mixing weight α ∈ (0, 1].
    staleness, a, b : the staleness function s(τ) and its parameters (FedAsync, FedBuff).
    buffer : FedBuff's K.
    server_lr : FedBuff's / FedAvg's server step η_s.
    max_staleness : arriving updates staler than this are discarded and counted (None: never).
    speed : ``"uniform"``, ``"exponential"``, ``"heavy_tail"`` or a tuple of fixed per-client
        compute times (per local step, before ``scale``).
    scale : the mean compute time per local step.
    delay : the communication delay added to every job (≥ 0).
    crash : probability that a job crashes mid-update.
    compressor : applied to each uploaded tensor.
    adapter : None (full deltas ΔW) or the LoRA rank r of the clients' adapters.
    sigma : optional additive Gaussian gradient noise of variance σ² (``noise`` stream).
    """

    rule: str
    lr: float
    local_steps: int = 1
    concurrency: int | None = None
    cohort: int | None = None
    alpha: float = 0.6
    staleness: str = "constant"
    a: float = 0.5
    b: float = 4.0
    buffer: int = 4
    server_lr: float = 1.0
    max_staleness: int | None = None
    speed: str | tuple = "uniform"
    scale: float = 1.0
    delay: float = 0.0
    crash: float = 0.0
    compressor: Compressor = field(default_factory=identity)
    adapter: int | None = None
    sigma: float | None = None
    bytes_per_float: int = 4
    bytes_per_index: int = 4
    method: str | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        check_choice("rule", self.rule, RULES)
        set_(self, "lr", check_real("lr", self.lr, low=0.0, low_open=True))
        set_(self, "local_steps", check_int("local_steps", self.local_steps, low=1))
        if self.concurrency is not None:
            set_(self, "concurrency", check_int("concurrency", self.concurrency, low=1))
        if self.cohort is not None:
            set_(self, "cohort", check_int("cohort", self.cohort, low=1))
        set_(self, "alpha", check_real("alpha", self.alpha, low=0.0, high=1.0, low_open=True))
        check_choice("staleness", self.staleness, STALENESS)
        set_(self, "a", check_real("a", self.a, low=0.0))
        set_(self, "b", check_real("b", self.b, low=0.0))
        set_(self, "buffer", check_int("buffer", self.buffer, low=1))
        set_(self, "server_lr", check_real("server_lr", self.server_lr, low=0.0, low_open=True))
        if self.max_staleness is not None:
            set_(self, "max_staleness", check_int("max_staleness", self.max_staleness, low=0))
        if isinstance(self.speed, str):
            check_choice("speed", self.speed, SPEEDS)
        else:
            speeds = tuple(self.speed)
            if not speeds:
                raise ValueError("speed must be a distribution name or a non-empty tuple")
            for i, v in enumerate(speeds):
                check_real(f"speed[{i}]", v, low=0.0, low_open=True)
            set_(self, "speed", tuple(float(v) for v in speeds))
        set_(self, "scale", check_real("scale", self.scale, low=0.0, low_open=True))
        set_(self, "delay", check_real("delay", self.delay, low=0.0))
        set_(self, "crash", check_real("crash", self.crash, low=0.0, high=1.0))
        if not isinstance(self.compressor, Compressor):
            raise ValueError(f"compressor must be a Compressor, got {type(self.compressor)}")
        if self.adapter is not None:
            set_(self, "adapter", check_int("adapter", self.adapter, low=1))
        if self.sigma is not None:
            set_(self, "sigma", check_real("sigma", self.sigma, low=0.0))
        set_(self, "bytes_per_float", check_byte_size("bytes_per_float", self.bytes_per_float))
        set_(self, "bytes_per_index", check_byte_size("bytes_per_index", self.bytes_per_index))
        if self.method is None:
            set_(self, "method", self.rule)

    def describe(self) -> dict:
        return {
            "method": self.method,
            "rule": self.rule,
            "speed": self.speed if isinstance(self.speed, str) else "fixed",
            "adapter": self.adapter if self.adapter is not None else "full",
        }

    def weight(self, tau: int) -> float:
        """s(τ) of this configuration."""
        return staleness_weight(self.staleness, tau, self.a, self.b)

    def estimated_events(
        self, clients: int, updates: int | None = None, time_budget: float | None = None
    ) -> float:
        """The expected number of client jobs (events) of one seed's run, from the configuration.

        A job lasts d = (1 − crash)·(c + delay) + crash·c/2 on average, with c = local_steps ·
        scale · E[X] (E[X] = 1 for the named speeds); ``concurrency`` (or all ``clients``) jobs
        run at once, so a ``time_budget`` allows about budget · concurrency / d jobs (with fixed
        per-client times x_i, budget · concurrency · mean_i 1/d(x_i)). An update takes 1
        (FedAsync), ``buffer`` (FedBuff) or ``cohort`` (FedAvg) completed jobs, each completing
        with probability 1 − crash. With both limits, the smaller estimate. An estimate:
        discarded updates and FedAvg's wait for the slowest client are not counted.
        """
        clients = check_int("clients", clients, low=1)
        xs = [1.0] if isinstance(self.speed, str) else list(self.speed)

        def job(x):  # the mean duration of a job whose compute time per step is x
            compute = self.local_steps * self.scale * x
            return (1 - self.crash) * (compute + self.delay) + self.crash * compute / 2

        rate = sum(1 / job(x) for x in xs) / len(xs)  # jobs per unit of time per running slot
        running = min(self.concurrency or clients, clients)
        estimates = []
        if time_budget is not None:
            estimates.append(time_budget * running * rate)
        if updates is not None and self.crash < 1:
            per_update = {"fedasync": 1, "fedbuff": self.buffer, "fedavg": self.cohort or clients}
            estimates.append(updates * per_update[self.rule] / (1 - self.crash))
        return min(estimates) if estimates else math.inf

    # ------------------------------------------------------------------------------------------
    def run(
        self,
        problem: FederatedProblem,
        updates: int | None = None,
        seeds=0,
        *,
        time_budget: float | None = None,
        events: bool = False,
        on_divergence: str = "raise",
        blowup: float = BLOWUP,
        progress: bool = False,
        max_events: int = MAX_EVENTS,
    ):
        """Simulate until ``updates`` server updates or virtual time ``time_budget`` (first reached).

        ``problem`` is a :class:`~lorakit.problems.federated.FederatedProblem` or a
        :class:`~lorakit.adapters.ModelProblem` with clients (a peft model; the global model is
        every LoRA site's W = W0 + s·B·A: :mod:`lorakit.adapters.asynchronous` lists the
        conventions). ``progress=True`` shows a ``tqdm.auto`` bar over the seeds (matrix scale) or
        over the server updates of each seed (model scale).

        Returns the history, one row per server update and seed (row 0: the start; a run stopped
        by ``time_budget`` ends with a row at that time, see the module docstring): ``time``,
        ``update``, ``loss``, ``gap``, ``grad_norm_sq`` (‖∇f(W)‖²), ``staleness`` (mean over the
        update's contributions) and ``staleness_max``, ``applied`` (contributions), cumulative
        ``discarded``, ``crashed`` and ``bytes_up`` (every event processed up to the row).

        ``max_events``: a run whose estimated number of client jobs per seed
        (:meth:`estimated_events`) is above it is refused with a ``ValueError`` giving the
        estimate; raise it knowingly for a longer run. Ctrl-C raises :class:`Interrupted`, whose
        ``frame`` (and ``events``) hold what was simulated.

        With ``events=True`` also the frame of every job: ``client``, ``start``, ``finish``,
        ``version_started``, ``staleness``, ``applied``, ``discarded``, ``crashed``, ``bytes_up``.

        Divergence: a candidate global model that is not finite or whose loss is above
        ``blowup``·max(1, |f(W^0)|) (default 10³; a finite number > 1) is refused and stops the
        seed: a :class:`~lorakit.DivergenceError` whose frame keeps every finished seed's rows
        (``on_divergence="raise"``), or the rows so far and ``attrs["diverged"]`` (``"stop"``). A
        model keeps the global model of the update before.
        """
        from ..decentralized.walk import _check_flag

        model = getattr(problem, "stateful", False)
        if not model:
            check_problem(
                problem, FederatedProblem, "a FederatedProblem or a lorakit.adapters.ModelProblem"
            )
        _check_flag("progress", progress)
        if updates is None and time_budget is None:
            raise ValueError("give updates (server updates) or time_budget (virtual time)")
        if updates is not None:
            updates = check_int("updates", updates, low=1)
        if time_budget is not None:
            time_budget = check_real("time_budget", time_budget, low=0.0, low_open=True)
        if self.crash == 1.0 and time_budget is None:
            raise ValueError("crash=1 never completes an update: give time_budget")
        check_choice("on_divergence", on_divergence, ("raise", "stop"))
        max_events = check_int("max_events", max_events, low=1)
        blowup = check_blowup(blowup)
        if self.concurrency is not None:
            check_int("concurrency", self.concurrency, low=1, high=problem.M)
        if self.cohort is not None:
            check_int("cohort", self.cohort, low=1, high=problem.M)
        if not isinstance(self.speed, str) and len(self.speed) != problem.M:
            raise ValueError(
                f"speed must give one time per client ({problem.M}), got {len(self.speed)}"
            )
        if model:  # the model-scale simulator (imported only on this path)
            from ..adapters.asynchronous import ModelAsync, check_model_async

            check_model_async(self, problem)
            make = functools.partial(ModelAsync, self, problem, progress=progress)
        else:
            if self.adapter is not None:
                check_int("adapter", self.adapter, low=1, high=min(problem.m, problem.n))
            make = functools.partial(_Sim, self, problem)
        seeds = check_seeds(seeds)
        estimate = self.estimated_events(problem.M, updates, time_budget)
        if estimate > max_events:
            limits = " and ".join(
                f"{k} = {v:g}"
                for k, v in (("updates", updates), ("time_budget", time_budget))
                if v is not None
            )
            raise ValueError(
                f"{self.method} with {limits} would simulate about {estimate:.3g} client jobs per "
                f"seed, above max_events = {max_events:g}: lower time_budget or updates (or raise "
                "max_events knowingly)"
            )

        def with_config(rows) -> pd.DataFrame:
            frame = pd.DataFrame(rows)
            for key, value in reversed(self.describe().items()):
                frame.insert(0, key, value)
            return frame

        sims: list = []  # every seed's simulation so far (for an interruption's frame)

        def make_seed(seed):
            sims.append(make(check_int("seed", seed, low=0)))
            return sims[-1]

        def run(sim) -> list[dict]:
            try:
                sim.run(updates, time_budget)
            except KeyboardInterrupt:
                sim.log_end()
                raise Interrupted(
                    f"{self.method} interrupted at virtual time {sim.time:g} (seed {sim.seed}, "
                    f"update {sim.version}): .frame holds the rows so far",
                    with_config([r for s in sims for r in s.rows]),
                    pd.DataFrame([e for s in sims for e in s.events]) if events else None,
                ) from None
            return sim.rows

        frame, _ = run_seeds(
            progress_bar(seeds, enabled=progress and not model, desc=self.method),
            make_seed,
            run,
            with_config,
            on_divergence=on_divergence,
            blowup=blowup,
        )
        evs = [e for sim in sims for e in sim.events]
        return (frame, pd.DataFrame(evs)) if events else frame


class _Sim:
    """One seeded simulation: the global model, the version counter, the heap and the queues."""

    blowup = BLOWUP  # the divergence threshold (set by the seed loop)

    def __init__(self, cfg: AsyncFL, problem: FederatedProblem, seed: int):
        self.cfg, self.p, self.seed = cfg, problem, seed
        self.streams = Streams(seed)
        self.W = self.start()
        self.version = 0
        self.time = 0.0
        self.heap: list = []
        self.seq = 0
        self.discarded = self.crashed = 0
        self.bytes_up = 0.0
        self.rows: list[dict] = []
        self.events: list[dict] = []
        self.loss0 = self.evaluate(self.W)

    # -- the global model (overridden at model scale: lorakit.adapters.asynchronous) -----------
    def start(self) -> torch.Tensor:
        """The initial global model W0."""
        return self.p.W0.clone()

    def evaluate(self, W) -> float:
        """f(W), NaN when W has a non-finite entry."""
        with torch.no_grad():
            return float(self.p.loss(W)) if bool(torch.isfinite(W).all()) else math.nan

    def measure(self) -> tuple[float, float]:
        """(f(W), ‖∇f(W)‖²) of the global model."""
        with torch.no_grad():
            return float(self.p.loss(self.W)), float(self.p.grad(self.W).square().sum())

    # -- clients -------------------------------------------------------------------------------
    def compute_time(self, client: int) -> float:
        cfg = self.cfg
        if isinstance(cfg.speed, tuple):
            x = cfg.speed[client]
        else:
            u = self.streams.uniform("speed")
            if cfg.speed == "uniform":
                x = 0.5 + u
            elif cfg.speed == "exponential":
                x = -math.log1p(-u)
            else:  # Pareto(shape k, x_m) with mean k·x_m/(k−1) = 1
                k = _PARETO_SHAPE
                x = (k - 1) / k * (1.0 - u) ** (-1.0 / k)
        return cfg.local_steps * cfg.scale * x

    def grad(self, W: torch.Tensor, client: int) -> torch.Tensor:
        p = self.p
        G = p.local_grads(W[None], torch.tensor([client], device=p.device))[0]
        if self.cfg.sigma:
            noise = torch.randn(G.shape, generator=self.streams["noise"], dtype=G.dtype)
            G = G + (self.cfg.sigma / math.sqrt(p.m * p.n)) * noise.to(G.device)
        return G

    def compress(self, X: torch.Tensor) -> tuple[torch.Tensor, float]:
        cfg = self.cfg
        pay = cfg.compressor.payload(X.numel())
        sent = pay.floats * cfg.bytes_per_float + pay.indices * cfg.bytes_per_index
        return cfg.compressor(X, self.streams["compression"]), float(sent)

    def local_train(self, W_start: torch.Tensor, client: int) -> tuple[torch.Tensor, float]:
        """The client's job: ΔW (full, or B A of its adapter) after compression, and its bytes."""
        cfg, lr = self.cfg, self.cfg.lr
        with torch.no_grad():
            if cfg.adapter is None:
                W = W_start
                for _ in range(cfg.local_steps):
                    W = W - lr * self.grad(W, client)
                return self.compress(W - W_start)
            r, p = cfg.adapter, self.p
            A = kaiming_uniform().sample(
                (r, p.n), self.streams["init"], side="right", dtype=p.dtype, device=p.device
            )
            B = torch.zeros(p.m, r, dtype=p.dtype, device=p.device)
            for _ in range(cfg.local_steps):
                G = self.grad(W_start + B @ A, client)
                B, A = B - lr * (G @ A.T), A - lr * (B.T @ G)
            B, sent_B = self.compress(B)
            A, sent_A = self.compress(A)
            return B @ A, sent_B + sent_A

    def dispatch(self, client: int) -> None:
        """Start a job: the client downloads the current model and version."""
        cfg, t = self.cfg, self.time
        compute = self.compute_time(client)
        crashes = cfg.crash > 0 and self.streams.uniform("crash") < cfg.crash
        if crashes:
            finish, payload = t + compute * self.streams.uniform("crash"), None
        else:
            finish, payload = t + compute + cfg.delay, (self.W, *self.local_train(self.W, client))
        heapq.heappush(self.heap, (finish, self.seq, client, self.version, t, payload))
        self.seq += 1

    # -- the server ----------------------------------------------------------------------------
    def apply(self, W_new: torch.Tensor, stale: list[int]) -> None:
        """Replace the global model by a complete, finite candidate (else DivergenceError)."""
        loss = self.evaluate(W_new)
        step = self.version + 1
        if exploded(loss, self.loss0, self.blowup):
            raise DivergenceError(
                f"{self.cfg.method} diverged at server update {step} (seed {self.seed}): the "
                f"candidate model's loss is {loss:g}; the global model keeps update {step - 1}. "
                f"Lower lr = {self.cfg.lr:g}",
                step=step,
                seed=self.seed,
                frame=pd.DataFrame(self.rows),
            )
        self.W = W_new
        self.version = step
        self.log(stale)

    def log(self, stale: list[int]) -> None:
        self.rows.append(self.row(stale))

    def log_end(self, time: float | None = None) -> None:
        """The last row of a run stopped by the budget (time = budget) or interrupted: no update,
        the counters of every event processed so far."""
        if time is not None:
            self.time = time
        self.rows.append(self.row([]))

    def row(self, stale: list[int]) -> dict:
        p = self.p
        loss, grad_sq = self.measure()
        return {
            "seed": self.seed, "time": self.time, "update": self.version, "loss": loss,
            "gap": loss - p.f_star if p.f_star is not None else math.nan,
            "grad_norm_sq": grad_sq,
            "staleness": sum(stale) / len(stale) if stale else 0.0,
            "staleness_max": max(stale) if stale else 0,
            "applied": len(stale), "discarded": self.discarded, "crashed": self.crashed,
            "bytes_up": self.bytes_up,
        }  # fmt: skip

    def record(self, job, staleness, *, applied=False, discarded=False, crashed=False, sent=0.0):
        finish, _, client, v0, start, _ = job
        self.events.append({
            "seed": self.seed, "client": client, "start": start, "finish": finish,
            "version_started": v0, "staleness": staleness, "applied": applied,
            "discarded": discarded, "crashed": crashed, "bytes_up": sent,
        })  # fmt: skip

    def arrive(self, job, buffer: list) -> None:
        """Handle one finished or crashed job; full-weight mixing happens here for FedAsync."""
        cfg = self.cfg
        _, _, _, v0, _, payload = job
        tau = self.version - v0
        if payload is None:
            self.crashed += 1
            self.record(job, tau, crashed=True)
            return
        W_start, delta, sent = payload
        self.bytes_up += sent
        if cfg.max_staleness is not None and tau > cfg.max_staleness:
            self.discarded += 1
            self.record(job, tau, discarded=True, sent=sent)
            return
        self.record(job, tau, applied=True, sent=sent)
        if cfg.rule == "fedasync":
            a_t = cfg.alpha * cfg.weight(tau)
            self.apply(self.W + a_t * (W_start + delta - self.W), [tau])
        else:
            buffer.append((tau, delta))
            if cfg.rule == "fedbuff" and len(buffer) == cfg.buffer:
                self.flush(buffer)

    def flush(self, buffer: list) -> None:
        cfg = self.cfg
        weights = [cfg.weight(tau) if cfg.rule == "fedbuff" else 1.0 for tau, _ in buffer]
        mean = sum(w * d for w, (_, d) in zip(weights, buffer, strict=True)) / len(buffer)
        stale = [tau for tau, _ in buffer]
        buffer.clear()
        self.apply(self.W + cfg.server_lr * mean, stale)

    def done(self, updates, time_budget) -> bool:
        return updates is not None and self.version >= updates

    def pop_batch(self, time_budget) -> list | None:
        """All jobs finishing at the next event time (None when the budget is spent)."""
        if not self.heap or (time_budget is not None and self.heap[0][0] > time_budget):
            return None
        t = self.heap[0][0]
        self.time = t
        batch = []
        while self.heap and self.heap[0][0] == t:
            batch.append(heapq.heappop(self.heap))
        return batch

    # -- the loop ------------------------------------------------------------------------------
    def run(self, updates, time_budget) -> None:
        self.log([])
        self.loop(updates, time_budget)
        if not self.done(updates, time_budget):  # stopped by the budget: its end's state
            self.log_end(time_budget)

    def loop(self, updates, time_budget) -> None:
        cfg, M = self.cfg, self.p.M
        limit = cfg.concurrency if cfg.concurrency is not None else M
        if cfg.rule == "fedavg":
            self.run_sync(updates, time_budget, limit)
            return
        idle = deque(torch.randperm(M, generator=self.streams["cohort"]).tolist())
        buffer: list = []
        while not self.done(updates, time_budget):
            while idle and len(self.heap) < limit:
                self.dispatch(idle.popleft())
            batch = self.pop_batch(time_budget)
            if batch is None:
                return
            for job in batch:
                if not self.done(updates, time_budget):
                    self.arrive(job, buffer)
                idle.append(job[2])

    def run_sync(self, updates, time_budget, limit) -> None:
        """Synchronous FedAvg: each round's cohort starts from one model; the server waits."""
        cfg, M = self.cfg, self.p.M
        while not self.done(updates, time_budget):
            if cfg.cohort is None or cfg.cohort == M:
                pending = deque(range(M))
            else:
                perm = torch.randperm(M, generator=self.streams["cohort"])
                pending = deque(perm[: cfg.cohort].sort().values.tolist())
            buffer: list = []
            while pending or self.heap:
                while pending and len(self.heap) < limit:
                    self.dispatch(pending.popleft())
                batch = self.pop_batch(time_budget)
                if batch is None:
                    return
                for job in batch:
                    self.arrive(job, buffer)
            if buffer:
                self.flush(buffer)
