"""An event-driven simulator of asynchronous federated learning, on any problem with clients.

The paper (spec async_fl.md §0, §3.3) promises a "fully asynchronous" protocol but gives no rule:
its experiment and theory are synchronous FedAvg. lorakit supplies the standard rules, labelled as
extensions (spec §3.8, §9), as the server steps :meth:`AsyncFL.mix` and :meth:`AsyncFL.aggregate`
(also used by :mod:`lorakit.distributed.flower_async`), site by site on the global model's tree
(:mod:`lorakit.tree`, README "Architecture"):

* ``"fedavg"`` — synchronous FedAvg (McMahan et al. 2017): a cohort starts from one model, the
  server waits for the slowest of them and applies the mean of their deltas;
* ``"fedasync"`` — FedAsync (Xie, Koyejo & Gupta 2019): each model x_new trained from version τ is
  mixed in on arrival, x ← (1 − α_t)x + α_t x_new with α_t = α·s(t − τ), where s is ``constant``
  (1), ``polynomial`` ((τ + 1)^(−a)) or ``hinge`` (1 for τ ≤ b, else 1/(a(τ − b) + 1));
* ``"fedbuff"`` — FedBuff (Nguyen et al. 2022): deltas are buffered; when K are in,
  W ← W + η_s·(Σ s(τ_i)Δ_i)/K.

The clock. A job's staleness is the number of updates between its download and its arrival. Jobs
finishing at one time are handled together in dispatch order, before idle clients (a FIFO queue,
first order from the ``cohort`` stream) are dispatched: equal speeds behave synchronously, and a
model run has the matrix run's event times. A crashing job stops at a uniform point of its compute
time and uploads nothing; its client restarts from the current model. A candidate global model is
checked whole (every site finite, the loss not exploded) before it replaces the old one. Each
pending job holds its W_start and ΔW.

Every seed starts from ``problem.reset()``; ``problem.commit(W)`` writes the last seed's global
model back (a peft model: merged into the base weights, B = 0), also after a divergence or an
interruption. Randomness: one generator per source (``speed``, ``crash``, ``cohort``, ``init``,
``compression``, ``noise``; a model's dropout: ``model``).
"""

from __future__ import annotations

import heapq
import itertools
import math
import warnings
from collections import deque
from dataclasses import dataclass

import pandas as pd
import torch

from .._validation import ArgumentTypeError, check_choice, check_int, check_real, check_seeds
from ..compressors import Compressor, make_compressor
from ..config import Config, deprecated
from ..divergence import BLOWUP, DivergenceError, check_blowup, exploded, restored_note, run_seeds
from ..estimators import Estimator
from ..local import Local, init_adapter, local_estimator, train, train_weights
from ..lowrank import LowRank
from ..problems.protocol import check_problem_protocol, site_scalings
from ..progress import bar as progress_bar
from ..progress import stop_requested
from ..rng import Streams
from ..tree import finite, leaves, sq_norm, tree_like, tree_map

__all__ = [
    "MAX_EVENTS",
    "RULES",
    "SPEEDS",
    "STALENESS",
    "AsyncFL",
    "Interrupted",
    "Simulation",
    "staleness_weight",
]

RULES = ("fedavg", "fedasync", "fedbuff")
STALENESS = ("constant", "polynomial", "hinge")
_K = 1.5  # the Pareto shape of "heavy_tail"
#: Each named speed's X as a function of u ~ U[0, 1) (its inverse CDF); every X has mean 1.
_QUANTILE = {
    "uniform": lambda u: 0.5 + u,
    "exponential": lambda u: -math.log1p(-u),
    "heavy_tail": lambda u: (_K - 1) / _K * (1.0 - u) ** (-1.0 / _K),  # Pareto(_K, x_m = 1/3)
}
SPEEDS = tuple(_QUANTILE)
#: :meth:`AsyncFL.run` refuses more estimated client jobs per seed: about 5 minutes at the measured
#: 650 jobs a second (5×3 problem, 4 clients, loaded 2-core CPU); far longer at model scale.
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
class AsyncFL(Config):
    """An (a)synchronous federated configuration; :meth:`run` simulates it on a virtual clock.

    Parameters
    ----------
    rule : ``"fedavg"``, ``"fedasync"`` or ``"fedbuff"`` (module docstring).
    gamma, local_steps : the clients' SGD step size γ > 0 and steps per job (≥ 1).
    concurrency : at most this many clients compute at once (None: all).
    cohort : FedAvg's clients per round (None: all), drawn from the ``cohort`` stream.
    alpha, staleness, a, b : FedAsync's mixing weight α ∈ (0, 1] and s(τ) with a, b ≥ 0.
    buffer, server_lr : FedBuff's K ≥ 1 and server step η_s > 0 (also FedAvg's η_s).
    max_staleness : updates staler than this are discarded (None: never).
    speed, scale, delay : a job computes for local_steps·scale·X (scale > 0) and uploads after
        ``delay`` ≥ 0, X drawn per job (``"uniform"`` U[0.5, 1.5], ``"exponential"`` Exp(1),
        ``"heavy_tail"`` Pareto of shape 1.5; mean 1) or a tuple of fixed per-client times > 0.
    crash : the probability in [0, 1] that a job crashes (counted, like discarded updates).
    rank, lora_alpha : None: a job (:mod:`lorakit.local`) trains W and uploads ΔW; r: a fresh
        adapter per site (B = 0, A from the ``init`` stream) trained and uploaded as B and A, the
        server forming ΔW = s·B·A, s = α/r (α = r by default; a peft site's own, which α matches).
    compressor : for each uploaded matrix (a :class:`~lorakit.compressors.Compressor` or a name;
        a :class:`~lorakit.lowrank.LowRank` at rank min(k, m_l, n_l), the paper's clipping, spec
        §3.6), its bytes at ``bytes_per_float``/``bytes_per_index`` (≥ 1) each.
    estimator : the clients' oracle, ``"gd"`` or ``sgd(batch_size=b, sigma=σ)``; ``sigma=`` is
        its deprecated shorthand.
    method : the name in the results (default: the rule).
    """

    rule: str
    gamma: float
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
    compressor: Compressor | str = "identity"
    rank: int | None = None
    lora_alpha: float | None = None
    estimator: Estimator | str = "gd"
    bytes_per_float: int = 4
    bytes_per_index: int = 4
    method: str | None = None
    sigma: float | None = deprecated()

    def __post_init__(self):
        set_ = object.__setattr__
        check_choice("rule", self.rule, RULES)
        check_choice("staleness", self.staleness, STALENESS)
        for name, high in (("gamma", None), ("alpha", 1.0), ("server_lr", None), ("scale", None)):
            set_(self, name, check_real(name, vars(self)[name], low=0.0, high=high, low_open=True))
        for name, high in (("a", None), ("b", None), ("delay", None), ("crash", 1.0)):
            set_(self, name, check_real(name, getattr(self, name), low=0.0, high=high))
        for name in ("local_steps", "buffer", "bytes_per_float", "bytes_per_index"):
            set_(self, name, check_int(name, getattr(self, name), low=1))
        for name, low in (("concurrency", 1), ("cohort", 1), ("max_staleness", 0), ("rank", 1)):
            if getattr(self, name) is not None:  # None: no limit (rank: full deltas)
                set_(self, name, check_int(name, getattr(self, name), low=low))
        if isinstance(self.speed, str):
            check_choice("speed", self.speed, SPEEDS)
        else:
            speeds = tuple(self.speed)
            if not speeds:
                raise ValueError("speed must be a distribution name or a non-empty tuple")
            for i, v in enumerate(speeds):
                check_real(f"speed[{i}]", v, low=0.0, low_open=True)
            set_(self, "speed", tuple(float(v) for v in speeds))
        set_(self, "compressor", make_compressor(self.compressor))
        if self.lora_alpha is not None:
            alpha = check_real("lora_alpha", self.lora_alpha, low=0.0, low_open=True)
            set_(self, "lora_alpha", alpha)
            if self.rank is None:
                warnings.warn(  # a UserWarning
                    "lora_alpha does nothing with rank=None (the clients upload full deltas ΔW)",
                    stacklevel=3,
                )
        set_(self, "estimator", local_estimator(self.estimator, self.sigma, owner="AsyncFL"))
        set_(self, "sigma", None)
        if self.method is None:
            set_(self, "method", self.rule)

    def describe(self) -> dict:
        return {
            "method": self.method,
            "rule": self.rule,
            "speed": self.speed if isinstance(self.speed, str) else "fixed",
            "rank": self.rank if self.rank is not None else "full",
            "estimator": str(self.estimator),
        }

    def weight(self, tau: int) -> float:
        """s(τ) of this configuration."""
        return staleness_weight(self.staleness, tau, self.a, self.b)

    def mix(self, W, W_new, tau: int):
        """FedAsync's server step (Xie et al. 2019, Algorithm 1) for a model x_new trained from one
        τ updates old: x ← (1 − α_t)x + α_t x_new, α_t = α·s(τ), as W + α_t(x_new − W) on trees."""
        return W + self.alpha * self.weight(tau) * (W_new - W)

    def aggregate(self, W, buffer: list):
        """FedBuff's server step for a full buffer of (τ_i, Δ_i) (Nguyen et al. 2022, Algorithm 1):
        W + η_s·(Σ_i s(τ_i)Δ_i)/K with K = len(buffer); synchronous FedAvg weighs every Δ_i by 1."""
        weights = [self.weight(tau) if self.rule == "fedbuff" else 1.0 for tau, _ in buffer]
        mean = sum(w * d for w, (_, d) in zip(weights, buffer, strict=True)) / len(buffer)
        return W + self.server_lr * mean

    def estimated_events(
        self, clients: int, updates: int | None = None, time_budget: float | None = None
    ) -> float:
        """The expected client jobs of one seed's run: the smaller of budget·concurrency·mean(1/d),
        d = (1 − crash)·(c + delay) + crash·c/2 a job's mean duration (c = local_steps·scale·X),
        and updates·(1, ``buffer`` or ``cohort`` jobs per update)/(1 − crash). Discarded updates
        and FedAvg's wait for the slowest are not counted."""
        clients = check_int("clients", clients, low=1)
        xs = [1.0] if isinstance(self.speed, str) else self.speed
        cs = [self.local_steps * self.scale * x for x in xs]  # a job's compute time
        ds = [(1 - self.crash) * (c + self.delay) + self.crash * c / 2 for c in cs]  # its duration
        rate = sum(1 / d for d in ds) / len(ds)  # jobs per unit of time per running slot
        running = min(self.concurrency or clients, clients)
        estimate = math.inf if time_budget is None else time_budget * running * rate
        if updates is not None and self.crash < 1:
            per_update = {"fedasync": 1, "fedbuff": self.buffer, "fedavg": self.cohort or clients}
            estimate = min(estimate, updates * per_update[self.rule] / (1 - self.crash))
        return estimate

    def run(
        self,
        problem,
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
        """Simulate to ``updates`` server updates or virtual time ``time_budget``, whichever first,
        on a problem with clients (a :class:`~lorakit.problems.federated.FederatedProblem` or a
        split :class:`~lorakit.adapters.ModelProblem`); more than ``max_events`` estimated client
        jobs per seed (:meth:`estimated_events`) are refused. ``progress``: bars over the seeds.

        Returns one row per server update and seed (row 0: the start): ``time``, ``update``,
        ``loss`` f = (1/M) Σ_c f_c, ``gap`` (NaN where f* is unknown), ``grad_norm_sq`` = Σ_l
        ‖∇_{W_l} f‖², ``staleness`` (mean over the update's contributions), ``staleness_max``,
        ``applied`` (contributions), and the counts of the events handled so far (ties in dispatch
        order): ``discarded``, ``crashed``, ``bytes_up``. A run stopped by ``time_budget`` (or by
        its bar, :mod:`lorakit.progress`) ends with a row at that time, ``applied`` = 0. With
        ``events=True`` also the frame of every job: ``client``, ``start``, ``finish``,
        ``version_started``, ``staleness``, ``applied``, ``discarded``, ``crashed``, ``bytes_up``.
        Ctrl-C raises :class:`Interrupted` holding both so far. Divergence: see
        :mod:`lorakit.divergence` (a model keeps the global model of the update before).
        """
        M = check_problem_protocol(problem, clients=True).M
        if not isinstance(progress, bool):
            raise ArgumentTypeError(f"progress must be True or False, got {progress!r}")
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
        for name in ("concurrency", "cohort"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=1, high=M)
        if not isinstance(self.speed, str) and len(self.speed) != M:
            raise ValueError(f"speed must give one time per client ({M}), got {len(self.speed)}")
        if self.rank is not None:
            check_int("rank", self.rank, low=1, high=min(min(shape) for shape in problem.shapes))
            site_scalings(problem, self.rank, self.lora_alpha)  # a peft rank or α that differs
        seeds = check_seeds(seeds)
        estimate = self.estimated_events(M, updates, time_budget)
        if estimate > max_events:
            limits = {"updates": updates, "time_budget": time_budget}
            limits = " and ".join(f"{k} = {v:g}" for k, v in limits.items() if v is not None)
            raise ValueError(
                f"{self.method} with {limits} would simulate about {estimate:.3g} client jobs per "
                f"seed, above max_events = {max_events:g}: lower time_budget or updates (or raise "
                "max_events knowingly)"
            )

        sims: list[Simulation] = []  # every seed's simulation so far (for an interruption's frame)
        listed = lambda key: [x for s in sims for x in getattr(s, key)]  # noqa: E731

        def run(sim) -> list[dict]:
            sims.append(sim)
            try:
                sim.run(updates, time_budget)
            except KeyboardInterrupt:
                raise Interrupted(
                    f"{self.method} interrupted at virtual time {sim.time:g} (seed {sim.seed}, "
                    f"update {sim.version}): .frame holds the rows so far",
                    self.frame(listed("rows")),
                    pd.DataFrame(listed("events")) if events else None,
                ) from None
            return sim.rows

        # a stop asked by a seed's progress bar ends the whole run
        go_on = itertools.takewhile(lambda _: not (sims and sims[-1].stopped), seeds)
        frame, _ = run_seeds(
            progress_bar(go_on, enabled=progress, total=len(seeds), desc=self.method),
            lambda seed: Simulation(self, problem, seed, progress=progress),
            run,
            self.frame,
            on_divergence=on_divergence,
            blowup=blowup,
        )
        return (frame, pd.DataFrame(listed("events"))) if events else frame


class Simulation:
    """One seed of :meth:`AsyncFL.run`: the global model ``W``, its ``version``, the counters."""

    blowup = BLOWUP  # the divergence threshold (set by the seed loop)

    def __init__(self, cfg: AsyncFL, problem, seed: int, *, progress: bool = False):
        self.cfg, self.p, self.seed = cfg, problem, check_int("seed", seed, low=0)
        self.streams = Streams(seed)
        self.local = Local(cfg.local_steps, cfg.gamma, estimator=cfg.estimator)
        self.scalings = cfg.rank and site_scalings(problem, cfg.rank, cfg.lora_alpha)
        problem.reset()
        self.W, self.version, self.time, self.bytes_up = problem.start(), 0, 0.0, 0.0
        self.seq = self.discarded = self.crashed = 0
        self.heap: list = []  # (finish, seq, client, version started, start, upload or None)
        self.rows, self.events = [], []
        self.progress, self.bar, self.stopped = progress, None, False
        with problem.seeded(self.streams):
            self.loss0 = self.loss = self.evaluate(self.W)

    def evaluate(self, W) -> float:
        """f(W) = (1/M) Σ_c f_c(W), NaN when W has a non-finite entry in any site."""
        with torch.no_grad():
            return float(self.p.client_losses(W).mean()) if finite(W) else math.nan

    def grad_norm_sq(self) -> float:
        """‖∇f(W)‖² = Σ_l ‖(1/M) Σ_c ∇_{W_l} f_c(W)‖² of the global model."""
        M = self.p.M
        stack = tree_map(lambda w: w.expand(M, *w.shape), self.W)
        with torch.no_grad():
            G = self.p.local_grads(stack, torch.arange(M, device=self.p.device))
        return sq_norm(tree_map(lambda g: g.mean(dim=0), G))

    def compress(self, X: torch.Tensor) -> tuple[torch.Tensor, float]:
        """An uploaded matrix through the compressor (a LowRank at rank min(k, m, n)); its bytes."""
        cfg, comp = self.cfg, self.cfg.compressor
        if isinstance(comp, LowRank):
            comp = LowRank(comp.method, min(comp.rank, *X.shape))
            pay = comp.payload_shape(*X.shape)
        else:
            pay = comp.payload(X.numel())
        sent = pay.floats * cfg.bytes_per_float + pay.indices * cfg.bytes_per_index
        return comp(X, self.streams["compression"]), float(sent)

    def local_train(self, W_start, client: int):
        """The client's job: ΔW (full, or s·B·A of its adapter) after compression, and its bytes."""
        p, local, streams = self.p, self.local, self.streams
        if self.cfg.rank is None:
            W = train_weights(p, W_start, client, local, streams)
            out = [self.compress(d) for d in leaves(W - W_start)]
            return tree_like(W_start, [d for d, _ in out]), sum(sent for _, sent in out)
        B, A = init_adapter(p, self.cfg.rank, streams["init"])
        B, A, _ = train(p, W_start, B, A, self.scalings, client, local, streams)
        up = [
            (self.compress(b), self.compress(a)) for b, a in zip(leaves(B), leaves(A), strict=True)
        ]
        delta = [s * (b @ a) for s, ((b, _), (a, _)) in zip(self.scalings, up, strict=True)]
        return tree_like(W_start, delta), sum(sent_b + sent_a for (_, sent_b), (_, sent_a) in up)

    def dispatch(self, client: int) -> None:
        """Start a job: the client downloads the current model and version."""
        cfg, t = self.cfg, self.time
        named = isinstance(cfg.speed, str)
        x = _QUANTILE[cfg.speed](self.streams.uniform("speed")) if named else cfg.speed[client]
        compute = cfg.local_steps * cfg.scale * x
        if cfg.crash > 0 and self.streams.uniform("crash") < cfg.crash:
            finish, payload = t + compute * self.streams.uniform("crash"), None
        else:
            finish, payload = t + compute + cfg.delay, (self.W, *self.local_train(self.W, client))
        heapq.heappush(self.heap, (finish, self.seq, client, self.version, t, payload))
        self.seq += 1

    def apply(self, W_new, stale: list[int]) -> None:
        """Replace the global model by a complete, finite candidate (else DivergenceError)."""
        loss, step = self.evaluate(W_new), self.version + 1
        if exploded(loss, self.loss0, self.blowup):
            raise DivergenceError(
                f"{self.cfg.method} diverged at server update {step} (seed {self.seed}): the "
                f"candidate model's loss is {loss:g}; the global model keeps update {step - 1}. "
                f"Lower gamma = {self.cfg.gamma:g}",
                step=step,
                seed=self.seed,
                frame=pd.DataFrame(self.rows),
            )
        self.W, self.loss, self.version = W_new, loss, step
        self.log(stale)
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    def log(self, stale: list[int] = (), time: float | None = None) -> None:
        """A history row after an update (``stale``: its contributions' τ) or at ``time``."""
        if time is not None:
            self.time = time
        loss, f_star = self.loss, self.p.f_star
        self.rows.append({
            "seed": self.seed, "time": self.time, "update": self.version, "loss": loss,
            "gap": loss - f_star if f_star is not None else math.nan,
            "grad_norm_sq": self.grad_norm_sq(),
            "staleness": sum(stale) / len(stale) if stale else 0.0,
            "staleness_max": max(stale) if stale else 0,
            "applied": len(stale), "discarded": self.discarded, "crashed": self.crashed,
            "bytes_up": self.bytes_up,
        })  # fmt: skip

    def arrive(self, job, buffer: list) -> None:
        """Count and record one job; FedAsync mixes it in at once, FedBuff and FedAvg buffer it."""
        cfg, (finish, _, client, v0, start, payload) = self.cfg, job
        tau, crashed = self.version - v0, payload is None
        W_start, delta, sent = (None, None, 0.0) if crashed else payload
        discarded = not crashed and cfg.max_staleness is not None and tau > cfg.max_staleness
        self.crashed, self.discarded = self.crashed + crashed, self.discarded + discarded
        self.bytes_up += sent
        self.events.append({
            "seed": self.seed, "client": client, "start": start, "finish": finish,
            "version_started": v0, "staleness": tau, "applied": not (crashed or discarded),
            "discarded": discarded, "crashed": crashed, "bytes_up": sent,
        })  # fmt: skip
        if crashed or discarded:
            return
        if cfg.rule == "fedasync":
            self.apply(cfg.mix(self.W, W_start + delta, tau), [tau])
        else:
            buffer.append((tau, delta))
            if cfg.rule == "fedbuff" and len(buffer) == cfg.buffer:
                self.flush(buffer)

    def flush(self, buffer: list) -> None:
        W_new, stale = self.cfg.aggregate(self.W, buffer), [tau for tau, _ in buffer]
        buffer.clear()
        self.apply(W_new, stale)

    def run(self, updates, time_budget) -> None:
        """Run to ``updates`` or ``time_budget``; commit the last accepted model in any case."""
        desc = f"{self.cfg.method} seed {self.seed}"
        self.bar = progress_bar(enabled=self.progress, total=updates, desc=desc)
        with self.bar, self.p.seeded(self.streams):
            try:
                self.log()
                self.loop(math.inf if updates is None else updates, time_budget)
            except DivergenceError as error:  # W is the last accepted (checked) global model
                error.append(restored_note("server update", self.version))
                raise
            except KeyboardInterrupt:
                self.log()
                raise
            finally:
                self.bar = None
                self.p.commit(self.W)

    def loop(self, last: float, time_budget) -> None:
        """The events up to update ``last``, or to the budget's end or a stop asked by the bar
        (then logged). FedAvg sends out each round's cohort and flushes when it is in."""
        cfg, M = self.cfg, self.p.M
        limit, sync, size = cfg.concurrency or M, cfg.rule == "fedavg", cfg.cohort or M
        perm = lambda: torch.randperm(M, generator=self.streams["cohort"])  # noqa: E731
        idle, buffer = deque() if sync else deque(perm().tolist()), []
        while self.version < last:
            if sync and not idle and not self.heap:  # a round: every client, or a cohort drawn
                idle = deque(range(M) if size == M else perm()[:size].sort().values.tolist())
            while idle and len(self.heap) < limit:
                self.dispatch(idle.popleft())
            self.stopped = stop_requested(self.bar)
            if self.stopped or not self.heap or (time_budget or math.inf) < self.heap[0][0]:
                self.log(time=None if self.stopped else time_budget)  # the state where it ends
                return
            self.time = t = self.heap[0][0]
            while self.heap and self.heap[0][0] == t:  # every job finishing now, in dispatch order
                job = heapq.heappop(self.heap)  # (arrivals dispatch nothing: the heap holds still)
                if self.version < last:
                    self.arrive(job, buffer)
                if not sync:
                    idle.append(job[2])
            if sync and buffer and not idle and not self.heap:  # the round is in
                self.flush(buffer)
