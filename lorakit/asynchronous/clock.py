"""An event-driven simulator of asynchronous federated learning, on any problem with clients.

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

The two server steps are :meth:`AsyncFL.mix` (FedAsync) and :meth:`AsyncFL.aggregate` (FedBuff,
FedAvg), so another engine applies the same rule (the asynchronous Flower server,
:mod:`lorakit.distributed.flower_async`).

One engine for both scales (README "Architecture"): the global model W is a tree of per-site
weights (:mod:`lorakit.tree`; one matrix for a :class:`~lorakit.problems.federated.
FederatedProblem`, every LoRA site's W_l = W0_l + s_l·B_l·A_l of a split
:class:`lorakit.adapters.ModelProblem`), seen only through the problem protocol
(:mod:`lorakit.problems.protocol`), and every rule above applies to it site by site.

The clock. A heap holds (finish_time, seq, client, version_started, update). A dispatched client
downloads the current model (and its version), computes for ``local_steps × scale × X`` units of
virtual time (X drawn per job from ``speed``: U[0.5, 1.5], Exp(1), or Pareto with shape 1.5 and
mean 1 — heavy-tailed stragglers; or a tuple of fixed per-client times), then uploads after
``delay``. Staleness of an arriving update = current version − version_started. Events with equal
finish times are processed together (in dispatch order) before idle clients are dispatched, so
equal-speed clients behave synchronously. Idle clients wait in a FIFO queue (initial order drawn
from the ``cohort`` stream); at most ``concurrency`` clients compute at once. The clock does not
depend on the problem: a model run has the matrix run's event times.

Failures. With probability ``crash`` a job crashes at a uniform point of its compute time: nothing
is uploaded, the global model is untouched, the crash is counted and the client restarts from the
current model. An update staler than ``max_staleness`` is discarded (and counted). A candidate
global model is checked whole before it replaces the old one: a non-finite entry in any site or an
exploding loss raises :class:`DivergenceError` and the global model keeps its previous value.

The jobs (:mod:`lorakit.local`). A client trains from the global model it downloaded, on every row
of its data, with the exact local gradient ∇f_c plus optional noise ξ with i.i.d. N(0, σ²/D)
entries (D = Σ_l m_l n_l; ``noise`` stream):

* ``rank=None``: ``local_steps`` SGD steps on every W_l (:func:`lorakit.local.train_weights`);
  upload ΔW = W − W_start;
* ``rank=r``: a fresh adapter per site (B_l = 0, A_l Kaiming-uniform from the ``init`` stream)
  trained on W_start + s·B·A by ``local_steps`` SGD steps on both factors (:func:`lorakit.local.
  train`: B ← B − γ s G Aᵀ, A ← A − γ s Bᵀ G); upload B and A, the server forms ΔW = s·B·A. The
  scaling is s = ``lora_alpha``/r (default α = r: s = 1, the unscaled matrix rule) or, on a peft
  model, each site's own scaling (:func:`~lorakit.problems.protocol.site_scalings`).

Compression (spec async_fl.md §3–4): each uploaded matrix passes through ``compressor`` site by
site, bytes from its ``payload``. A :class:`~lorakit.lowrank.LowRank` (PCA/QRCP/CUR) approximates
each (m_l × n_l) upload at rank k_l = min(k, m_l, n_l) — the paper's own clipping, k = min(10,
rank) (spec §3.6) — so a rank ≥ every site's size leaves the update unchanged; its bytes are
``payload_shape(m_l, n_l)`` (its ``shape`` field is not used: every upload has its own).

History rows and counters. The history has one row per server update (row 0: the start); a run
stopped by ``time_budget`` ends with one more row at time = ``time_budget`` (no update: it repeats
the last update's number with ``applied = 0``), so its last row holds the state at the budget's end
even when no update ever happened (``crash=1``). The counters ``discarded``, ``crashed`` and
``bytes_up`` of a row count every event processed up to that row: events in time order, ties in
dispatch order (an event at the same time as an update but processed after it is in a later row).
The loss is f = (1/M) Σ_c f_c (f_c the mean loss of client c) and ``grad_norm_sq`` = Σ_l ‖∇_{W_l}
f‖², both on every row of every client; ``gap`` is NaN where f* is unknown (a model).

Run size. The number of client jobs is estimated before a run (:meth:`AsyncFL.estimated_events`,
from the mean job time local_steps·scale·E[X] (+ delay), the concurrency, crashes, the rule's jobs
per update and ``updates``/``time_budget``); above ``max_events`` (default
:data:`MAX_EVENTS`) :meth:`AsyncFL.run` refuses with the estimate. A run stopped by Ctrl-C raises
:class:`Interrupted` (a ``KeyboardInterrupt``) whose ``frame`` holds every row so far, the
interrupted seed's last row being its state at the interruption; a run stopped by its progress
bar (:func:`lorakit.progress.stop_requested`, notebook 07's Cancel) returns the same rows.

The model after a run. Every seed starts from :meth:`problem.reset() <lorakit.adapters.
ModelProblem.reset>`; afterwards ``problem.commit(W)`` writes the last seed's global model back (a
peft model: merged into the base weights with a zero adapter product, B = 0), also after a
divergence or an interruption (the last accepted global model). Evaluating at W sets the base
weights to W_l with a zero adapter swapped in, then restores them, so the model is unchanged
during a run. Memory: every pending job holds its W_start and ΔW.

Randomness: one generator per source (``speed``, ``crash``, ``cohort``, ``init``, ``compression``,
``noise``; a model's dropout from ``model``).
"""

from __future__ import annotations

import heapq
import math
import warnings
from collections import deque
from dataclasses import dataclass

import pandas as pd
import torch

from .._validation import (
    ArgumentTypeError,
    check_byte_size,
    check_choice,
    check_int,
    check_real,
    check_seeds,
)
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
class AsyncFL(Config):
    """An (a)synchronous federated configuration; :meth:`run` simulates it on a virtual clock.

    Parameters
    ----------
    rule : ``"fedavg"`` (synchronous), ``"fedasync"`` or ``"fedbuff"`` (see the module docstring).
    gamma : the clients' local SGD step size γ.
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
    compressor : applied to each uploaded matrix, site by site (a
        :class:`~lorakit.compressors.Compressor` or a name; default the identity).
    rank : None (full deltas ΔW) or the LoRA rank r of the clients' adapters.
    lora_alpha : the LoRA α of the clients' adapters, scaling s = α/r (None: α = r, s = 1); on a
        peft model each site's own scaling is used and α, if given, must agree with it.
    estimator : the clients' oracle (:mod:`lorakit.local`): ``"gd"`` (exact local gradients),
        ``sgd(batch_size=b)`` (minibatches of the clients' rows) or ``sgd(sigma=σ)`` (additive
        Gaussian noise of variance σ², ``noise`` stream); ``sigma=`` is its deprecated shorthand.
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
        set_(self, "gamma", check_real("gamma", self.gamma, low=0.0, low_open=True))
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
        set_(self, "compressor", make_compressor(self.compressor))
        if self.rank is not None:
            set_(self, "rank", check_int("rank", self.rank, low=1))
        if self.lora_alpha is not None:
            alpha = check_real("lora_alpha", self.lora_alpha, low=0.0, low_open=True)
            set_(self, "lora_alpha", alpha)
            if self.rank is None:
                warnings.warn(
                    "lora_alpha does nothing with rank=None (the clients upload full deltas ΔW)",
                    UserWarning,
                    stacklevel=3,
                )
        set_(self, "estimator", local_estimator(self.estimator, self.sigma, owner="AsyncFL"))
        set_(self, "sigma", None)
        set_(self, "bytes_per_float", check_byte_size("bytes_per_float", self.bytes_per_float))
        set_(self, "bytes_per_index", check_byte_size("bytes_per_index", self.bytes_per_index))
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
        """FedAsync's server step for one arriving model x_new trained from a model τ updates old
        (Xie et al. 2019, Algorithm 1): x ← (1 − α_t)x + α_t x_new with α_t = α·s(τ), computed as
        W + α_t(x_new − W); W and x_new are trees (:mod:`lorakit.tree`)."""
        a_t = self.alpha * self.weight(tau)
        return W + a_t * (W_new - W)

    def aggregate(self, W, buffer: list):
        """FedBuff's server step for a full buffer of (τ_i, Δ_i) (Nguyen et al. 2022, Algorithm 1):
        W + η_s·(Σ_i s(τ_i)Δ_i)/K with K = len(buffer); synchronous FedAvg weighs every Δ_i by 1."""
        weights = [self.weight(tau) if self.rule == "fedbuff" else 1.0 for tau, _ in buffer]
        mean = sum(w * d for w, (_, d) in zip(weights, buffer, strict=True)) / len(buffer)
        return W + self.server_lr * mean

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
        """Simulate until ``updates`` server updates or virtual time ``time_budget`` (first reached).

        ``problem`` is a problem with clients: a
        :class:`~lorakit.problems.federated.FederatedProblem` or a split
        :class:`~lorakit.adapters.ModelProblem` (the global model is then every LoRA site's
        W = W0 + s·B·A; the module docstring lists the conventions). ``progress=True`` shows a
        ``tqdm.auto`` bar over the seeds and one over each seed's server updates.

        Returns the history, one row per server update and seed (row 0: the start; a run stopped
        by ``time_budget`` ends with a row at that time, see the module docstring): ``time``,
        ``update``, ``loss``, ``gap``, ``grad_norm_sq`` (‖∇f(W)‖²), ``staleness`` (mean over the
        update's contributions) and ``staleness_max``, ``applied`` (contributions), cumulative
        ``discarded``, ``crashed`` and ``bytes_up`` (every event processed up to the row).

        ``max_events``: a run whose estimated number of client jobs per seed
        (:meth:`estimated_events`) is above it is refused with a ``ValueError`` giving the
        estimate; raise it knowingly for a longer run. Ctrl-C raises :class:`Interrupted`, whose
        ``frame`` (and ``events``) hold what was simulated; a stop asked by the progress bar
        (:func:`lorakit.progress.stop_requested`) ends the run with the same rows, returned.

        With ``events=True`` also the frame of every job: ``client``, ``start``, ``finish``,
        ``version_started``, ``staleness``, ``applied``, ``discarded``, ``crashed``, ``bytes_up``.

        Divergence: a candidate global model that is not finite or whose loss is above
        ``blowup``·max(1, |f(W^0)|) (default 10³; a finite number > 1) is refused and stops the
        seed: a :class:`~lorakit.DivergenceError` whose frame keeps every finished seed's rows
        (``on_divergence="raise"``), or the rows so far and ``attrs["diverged"]`` (``"stop"``). A
        model keeps the global model of the update before.
        """
        check_problem_protocol(problem, clients=True)
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
        if self.concurrency is not None:
            check_int("concurrency", self.concurrency, low=1, high=problem.M)
        if self.cohort is not None:
            check_int("cohort", self.cohort, low=1, high=problem.M)
        if not isinstance(self.speed, str) and len(self.speed) != problem.M:
            raise ValueError(
                f"speed must give one time per client ({problem.M}), got {len(self.speed)}"
            )
        if self.rank is not None:
            check_int("rank", self.rank, low=1, high=min(min(shape) for shape in problem.shapes))
            site_scalings(problem, self.rank, self.lora_alpha)  # a peft rank or α that differs
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

        sims: list[Simulation] = []  # every seed's simulation so far (for an interruption's frame)

        def until_stopped():  # a stop asked by the progress bar ends the whole run
            for seed in seeds:
                if sims and sims[-1].stopped:
                    return
                yield seed

        def make_seed(seed):
            sims.append(Simulation(self, problem, seed, progress=progress))
            return sims[-1]

        def run(sim) -> list[dict]:
            try:
                sim.run(updates, time_budget)
            except KeyboardInterrupt:
                raise Interrupted(
                    f"{self.method} interrupted at virtual time {sim.time:g} (seed {sim.seed}, "
                    f"update {sim.version}): .frame holds the rows so far",
                    self.frame([r for s in sims for r in s.rows]),
                    pd.DataFrame([e for s in sims for e in s.events]) if events else None,
                ) from None
            return sim.rows

        frame, _ = run_seeds(
            progress_bar(until_stopped(), enabled=progress, total=len(seeds), desc=self.method),
            make_seed,
            run,
            self.frame,
            on_divergence=on_divergence,
            blowup=blowup,
        )
        evs = [e for sim in sims for e in sim.events]
        return (frame, pd.DataFrame(evs)) if events else frame


class Simulation:
    """One seeded simulation of an :class:`AsyncFL` configuration on ``problem``: the global model
    ``W`` (a tree), the version counter, the heap and the queues; :meth:`run` runs it."""

    blowup = BLOWUP  # the divergence threshold (set by the seed loop)

    def __init__(self, cfg: AsyncFL, problem, seed: int, *, progress: bool = False):
        self.cfg, self.p, self.seed = cfg, problem, check_int("seed", seed, low=0)
        self.streams = Streams(seed)
        self.local = Local(cfg.local_steps, cfg.gamma, estimator=cfg.estimator)
        self.scalings = None
        if cfg.rank is not None:
            self.scalings = site_scalings(problem, cfg.rank, cfg.lora_alpha)
        problem.reset()
        self.W = problem.start()
        self.version = 0
        self.time = 0.0
        self.heap: list = []
        self.seq = 0
        self.discarded = self.crashed = 0
        self.bytes_up = 0.0
        self.rows: list[dict] = []
        self.events: list[dict] = []
        self.progress, self.bar, self.stopped = progress, None, False
        with problem.seeded(self.streams):
            self.loss0 = self.loss = self.evaluate(self.W)

    # -- the global model ----------------------------------------------------------------------
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

    def compress(self, X: torch.Tensor) -> tuple[torch.Tensor, float]:
        """One uploaded matrix through the compressor (a LowRank at rank min(k, m, n)); its bytes."""
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
        delta, sent = [], 0.0
        for b, a, s in zip(leaves(B), leaves(A), self.scalings, strict=True):
            (b, sent_b), (a, sent_a) = self.compress(b), self.compress(a)
            delta.append(s * (b @ a))
            sent += sent_b + sent_a
        return tree_like(W_start, delta), sent

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
    def apply(self, W_new, stale: list[int]) -> None:
        """Replace the global model by a complete, finite candidate (else DivergenceError)."""
        loss = self.evaluate(W_new)
        step = self.version + 1
        if exploded(loss, self.loss0, self.blowup):
            raise DivergenceError(
                f"{self.cfg.method} diverged at server update {step} (seed {self.seed}): the "
                f"candidate model's loss is {loss:g}; the global model keeps update {step - 1}. "
                f"Lower gamma = {self.cfg.gamma:g}",
                step=step,
                seed=self.seed,
                frame=pd.DataFrame(self.rows),
            )
        self.W, self.loss = W_new, loss
        self.version = step
        self.log(stale)
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    def log(self, stale: list[int]) -> None:
        self.rows.append(self.row(stale))

    def log_end(self, time: float | None = None) -> None:
        """The last row of a run stopped by the budget (time = budget), interrupted or stopped:
        no update, the counters of every event processed so far."""
        if time is not None:
            self.time = time
        self.rows.append(self.row([]))

    def row(self, stale: list[int]) -> dict:
        p, loss = self.p, self.loss
        return {
            "seed": self.seed, "time": self.time, "update": self.version, "loss": loss,
            "gap": loss - p.f_star if p.f_star is not None else math.nan,
            "grad_norm_sq": self.grad_norm_sq(),
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
            self.apply(cfg.mix(self.W, W_start + delta, tau), [tau])
        else:
            buffer.append((tau, delta))
            if cfg.rule == "fedbuff" and len(buffer) == cfg.buffer:
                self.flush(buffer)

    def flush(self, buffer: list) -> None:
        W_new = self.cfg.aggregate(self.W, buffer)
        stale = [tau for tau, _ in buffer]
        buffer.clear()
        self.apply(W_new, stale)

    def done(self, updates) -> bool:
        return updates is not None and self.version >= updates

    def pop_batch(self, time_budget) -> list | None:
        """All jobs finishing at the next event time (None when the budget is spent, or when the
        progress bar asks the run to stop)."""
        if stop_requested(self.bar):
            self.stopped = True
            return None
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
        """Run to ``updates`` server updates or ``time_budget``; the last accepted global model is
        committed to the problem in the end, whatever happened (module docstring)."""
        desc = f"{self.cfg.method} seed {self.seed}"
        bar = progress_bar(enabled=self.progress, total=updates, desc=desc)
        with bar, self.p.seeded(self.streams):
            self.bar = bar
            try:
                self.log([])
                self.loop(updates, time_budget)
                if not self.done(updates):  # stopped by the budget: its end's state
                    self.log_end(None if self.stopped else time_budget)
            except DivergenceError as error:  # W is the last accepted (checked) global model
                error.append(restored_note("server update", self.version))
                raise
            except KeyboardInterrupt:
                self.log_end()
                raise
            finally:
                self.bar = None
                self.p.commit(self.W)

    def loop(self, updates, time_budget) -> None:
        cfg, M = self.cfg, self.p.M
        limit = cfg.concurrency if cfg.concurrency is not None else M
        if cfg.rule == "fedavg":
            self.run_sync(updates, time_budget, limit)
            return
        idle = deque(torch.randperm(M, generator=self.streams["cohort"]).tolist())
        buffer: list = []
        while not self.done(updates):
            while idle and len(self.heap) < limit:
                self.dispatch(idle.popleft())
            batch = self.pop_batch(time_budget)
            if batch is None:
                return
            for job in batch:
                if not self.done(updates):
                    self.arrive(job, buffer)
                idle.append(job[2])

    def run_sync(self, updates, time_budget, limit) -> None:
        """Synchronous FedAvg: each round's cohort starts from one model; the server waits."""
        cfg, M = self.cfg, self.p.M
        while not self.done(updates):
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
