"""The chain-of-LoRA engine: every single-node method of RAC-LoRA and Bernoulli-LoRA.

A chain is a sequence of links. In each link a *coin* picks the trained side, a *sketch* draws the
frozen factor, an *estimator* supplies G^t for each of the link's inner steps, and an *update*
moves the trained factor; the link's product is then merged into W and the factors restart
(Bernoulli-LoRA Algorithm 1; RAC-LoRA Algorithm 1)::

    W^{t+1} = W^t + (α/r)·B·A        (merge, then restart from a fresh sketch)

Updates
-------
``projected``  the step the theory analyses, in W-space: W ← W − γ H_B G or W − γ G H_A
               (RAC-LoRA eqs. (3)–(4); Bernoulli-LoRA eqs. (7)–(8)).
``factor``     the same step taken on the trained factor: its gradient preconditioned by the frozen
               factor's Gram pseudo-inverse, Â = −(γ r/α)(B_SᵀB_S)^† B_Sᵀ G (Lemma 10, eq. (30));
               it gives the ``projected`` iterates up to rounding.
``sgd``/``adamw``  a plain torch optimizer on the trained factor(s) with learning rate ``gamma``,
               as in the papers' neural-network experiments. *Outside the theory*: one SGD step from
               A = 0 moves W by −γ(α/r)² B_S B_Sᵀ G, which is not a projection.

LoRA and COLA train both factors, so only ``sgd``/``adamw`` apply to them.

Messages
--------
With a federated estimator (``qgd``, ``marina``, ``ef21``: Bernoulli-LoRA Algs. 7–9) step t is one
communication round: the M clients upload what forms G^t (counted by the estimator,
:attr:`lorakit.estimators.Estimate.bytes_up`) and the server broadcasts W^{t+1} to every client.
``broadcast="full"`` counts the dense W^{t+1}, m·n floats per client per step, as the algorithms
write it. W^{t+1} − W^t is rank r, so a broadcast of the link's sketch and trained factor (or,
for LoRA/COLA, both factors), r·(m + n) floats, would suffice; ``broadcast="factors"`` counts that.
Only the accounting changes: the iterates are the same either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from ._validation import (
    ArgumentTypeError,
    check_choice,
    check_int,
    check_problem,
    check_real,
    check_seeds,
)
from .coins import Coin, bernoulli
from .config import Config
from .divergence import BLOWUP, DivergenceError, check_blowup, exploded, run_seeds
from .estimators import Estimator, make_estimator
from .problems.base import MatrixProblem
from .progress import bar as progress_bar
from .rng import Streams
from .sketches import Sketch, apply_basis, gram_pinv, make_sketch, orthonormal_basis

__all__ = ["BROADCASTS", "UPDATES", "Chain", "DivergenceError", "exploded"]

UPDATES = ("projected", "factor", "sgd", "adamw")
BROADCASTS = ("full", "factors")
_OPTIMIZERS = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}


@dataclass(frozen=True)
class Chain(Config):
    """A chain-of-LoRA configuration; :meth:`run` executes it on a matrix or model problem.

    Parameters
    ----------
    rank : r, 1 ≤ r ≤ min(m, n) (checked against the problem at run time).
    gamma : step size. For ``projected``/``factor`` updates the W-space step γ of W⁺ = W − γ H G
        (the theory's; γ ≤ 1/L); ``"polyak"`` gives γ_t = (f(W^t) − f*)/‖∂f(W^t)‖² (Bernoulli-LoRA
        eq. (72)). For ``sgd``/``adamw`` the optimizer's learning rate on the factors.
    coin : which factor each link trains (:mod:`lorakit.coins`).
    sketch, sketch_right : distributions of B_S (left) and A_S (right); ``sketch_right`` defaults to
        ``sketch``. In LoRA/COLA ``sketch_right`` draws the initial A (B starts at zero).
    estimator : G^t (:mod:`lorakit.estimators`); its state runs across links.
    update : one of ``projected``, ``factor``, ``sgd``, ``adamw`` (module docstring).
    steps_per_link : inner steps per link (K); ``None`` puts every step in a single link with no
        restart (LoRA, AsymmLoRA).
    alpha : LoRA scaling α (the factor product is scaled by α/r); default α = r.
    optimizer_kwargs : extra arguments of the torch optimizer (``sgd``/``adamw``).
    method : the name written to the results table.
    broadcast : how the server's download of W^{t+1} is counted for federated estimators:
        ``"full"`` (m·n floats per client per step, Algs. 7–9) or ``"factors"`` (r·(m + n)
        floats: the low-rank update; module docstring "Messages"). Ignored otherwise.
    """

    rank: int
    gamma: float | str
    coin: Coin = field(default_factory=lambda: bernoulli(0.5))
    sketch: Sketch | str = "gaussian"
    sketch_right: Sketch | str | None = None
    estimator: Estimator | str = "gd"
    update: str = "projected"
    steps_per_link: int | None = 1
    alpha: float | None = None
    optimizer_kwargs: dict = field(default_factory=dict)
    method: str = "chain"
    broadcast: str = "full"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "rank", check_int("rank", self.rank, low=1))
        check_choice("broadcast", self.broadcast, BROADCASTS)
        if self.gamma != "polyak":
            set_(self, "gamma", check_real("gamma", self.gamma, low=0.0, low_open=True))
        check_choice("update", self.update, UPDATES)
        if self.steps_per_link is not None:
            set_(self, "steps_per_link", check_int("steps_per_link", self.steps_per_link, low=1))
        if self.alpha is not None:
            set_(self, "alpha", check_real("alpha", self.alpha, low=0.0, low_open=True))
        set_(self, "sketch", make_sketch(self.sketch))
        set_(self, "sketch_right", make_sketch(self.sketch_right or self.sketch))
        set_(self, "estimator", make_estimator(self.estimator))
        if not isinstance(self.coin, Coin):
            raise ArgumentTypeError(
                f"coin must be a lorakit.coins.Coin (e.g. lk.bernoulli(0.5), lk.always('left')), "
                f"got {self.coin!r}"
            )
        if self.coin.kind == "both" and self.update in ("projected", "factor"):
            raise ValueError(
                f"update={self.update!r} needs one frozen factor, but the coin trains both "
                "(LoRA, COLA): use update='sgd' or 'adamw'"
            )
        if self.gamma == "polyak" and self.update not in ("projected", "factor"):
            raise ValueError("gamma='polyak' is a W-space step: use update='projected' or 'factor'")

    # ------------------------------------------------------------------------------------------
    def describe(self) -> dict:
        """The configuration as table columns."""
        return {
            "method": self.method,
            "rank": self.rank,
            "p": self.coin.prob_left,
            "coin": str(self.coin),
            "sketch": str(self.sketch),
            "estimator": str(self.estimator),
            "update": self.update,
            "steps_per_link": self.steps_per_link,
        }

    def run(
        self,
        problem,
        steps: int,
        seeds=0,
        *,
        log_every: int = 1,
        on_divergence: str = "raise",
        blowup: float = BLOWUP,
        progress: bool = False,
    ) -> pd.DataFrame:
        """Run ``steps`` inner steps for each seed; a tidy frame, one row per logged step and seed.

        ``problem`` is a :class:`~lorakit.problems.base.MatrixProblem` or a
        :class:`~lorakit.adapters.ModelProblem` (a peft model and its data): the latter runs
        every site of the model with the same table (:mod:`lorakit.adapters.chain`, whose
        docstring lists the model-scale conventions and limits: each site's own peft scaling,
        estimators ``gd``, ``sgd``, ``page``, ``mvr``, ``rr`` on data (no noise of known variance,
        no federated estimators), no ``"polyak"``; every seed starts from
        ``problem.reset()`` and the model ends holding the last seed's merged W^T).
        ``progress=True`` shows a ``tqdm.auto`` bar over the seeds (matrix scale) or over the
        steps of each seed (model).

        Columns: the :meth:`describe` fields, ``seed``, ``step`` (0 is W^0), ``link``, ``side``,
        ``trained_params`` (entries of the trained factor(s) in that link), ``gamma`` (γ_t),
        ``loss``, ``gap`` (f − f*, NaN when f* is unknown), ``grad_norm_sq`` (‖∇f(W^t)‖²) and, for
        non-smooth problems, ``loss_avg`` = f(W̄^t) at the running average W̄^t (Theorem 10).

        Federated estimators (``qgd``, ``marina``, ``ef21``) add the messages of step t (module
        docstring "Messages"); the columns exist **only** for them (a frame of a single-node
        estimator has none of them): ``clients`` (M), ``bytes_up`` (the upload that formed G^t,
        summed over the clients), ``bytes_down`` (the broadcast of W^{t+1} to the M clients,
        ``broadcast``), ``bytes_up_client``/``bytes_down_client`` (one client's share; every
        client sends and receives the same amount in Algs. 7–9) and the cumulative ``mb_up``/
        ``mb_down`` (MiB = 2²⁰ bytes, summed over every step up to and including t, logged or
        not). Byte sizes are the estimator's ``bytes_per_float``/``bytes_per_index`` (4 and 4 by
        default). The last row (W^T, no step taken) has zero bytes and the final totals.

        A run whose loss is NaN, infinite or above ``blowup``·max(1, |f(W^0)|) (default 10³: a
        thousandfold rise; a finite number > 1, :mod:`lorakit.divergence`) stops: with
        ``on_divergence="raise"`` a :class:`DivergenceError` names the step and a hint, and its
        ``frame`` holds every finished seed's rows and the diverged seed's rows; with ``"stop"`` the
        rows up to that step are returned, ``frame.attrs["diverged"]`` maps each diverged seed to
        its step, and the next seeds run. At model scale a diverged seed leaves the model in its
        last good state: the state of the last logged step, the one before the diverged step when
        ``log_every=1`` (then merged, as every run ends).
        """
        steps = check_int("steps", steps, low=1)
        log_every = check_int("log_every", log_every, low=1)
        check_choice("on_divergence", on_divergence, ("raise", "stop"))
        blowup = check_blowup(blowup)
        seeds = check_seeds(seeds)
        if not _is_model_problem(problem):
            check_problem(
                problem,
                MatrixProblem,
                "a MatrixProblem (lorakit.problems) or a lorakit.adapters.ModelProblem",
            )
        if _is_model_problem(problem):  # the model-scale runner is imported only when used
            from .adapters.chain import ModelChainRun, check_model_chain

            check_model_chain(self, problem)
            make = lambda s: ModelChainRun(self, problem, s, progress=progress)  # noqa: E731
        else:
            check_int("rank", self.rank, low=1, high=min(problem.m, problem.n))
            if self.gamma == "polyak" and problem.f_star is None:
                raise ValueError(f"gamma='polyak' needs f*, which problem {problem.name!r} lacks")
            seeds = progress_bar(seeds, enabled=progress, desc=self.method)
            make = lambda s: _ChainRun(self, problem, s)  # noqa: E731

        def run(one) -> list[dict]:
            rows, failure = one.run(steps, log_every)
            if failure is not None:
                step, message = failure
                raise DivergenceError(message, step=step, seed=one.seed, frame=pd.DataFrame(rows))
            return rows

        frame, _ = run_seeds(
            seeds, make, run, self._frame, on_divergence=on_divergence, blowup=blowup
        )
        return frame

    def _frame(self, rows: list[dict]) -> pd.DataFrame:
        frame = pd.DataFrame(rows)
        for key, value in reversed(self.describe().items()):
            frame.insert(0, key, value)
        return frame


def _is_model_problem(problem) -> bool:
    from .adapters.problem import ModelProblem  # lazy: keeps ``import lorakit`` light

    return isinstance(problem, ModelProblem)


class _ChainRun:
    """The state of one seeded run: W (or W_base and the factors), the estimator, the link."""

    blowup = BLOWUP  # the divergence threshold (set by the seed loop)

    def __init__(self, chain: Chain, problem: MatrixProblem, seed: int):
        self.c, self.problem, self.seed = chain, problem, seed
        self.streams = Streams(seed)
        self.estimator = chain.estimator.bind(problem)
        self.scale = (chain.alpha if chain.alpha is not None else chain.rank) / chain.rank
        self.W = problem.W0.clone()  # merged weight W^t (projected: the iterate itself)
        self.B = self.A = self.basis = self.precond = self.opt = None
        self.side, self.link = None, -1
        self.f0 = float(problem.loss(self.W))
        self.W_sum = torch.zeros_like(self.W) if not problem.smooth else None
        # Message accounting (federated estimators only): this step's bytes and running totals.
        self.federated = bool(getattr(self.estimator, "federated", False))
        self.msg = (0, 0.0, 0.0)  # (clients, bytes_up, bytes_down) of the step being logged
        self.mb_up = self.mb_down = 0.0

    # -- links ---------------------------------------------------------------------------------
    def start_link(self):
        c, p, m, n, r = self.c, self.problem, self.problem.m, self.problem.n, self.c.rank
        self.merge()
        self.link += 1
        self.side = c.coin.flip(self.link, self.streams)
        # The link's own sketch stream: its draw never shifts with earlier links' sides (rng.py).
        gen, kw = (
            self.streams.substream("sketch", self.link),
            {"dtype": p.dtype, "device": p.device},
        )
        if self.side == "left":
            frozen = c.sketch.sample((m, r), gen, side="left", **kw)
            self.B, self.A = frozen, torch.zeros(r, n, **kw)
        else:  # right, or both: A from the right sketch, B = 0 (the LoRA initialisation)
            frozen = c.sketch_right.sample((r, n), gen, side="right", **kw)
            self.B, self.A = torch.zeros(m, r, **kw), frozen
        if c.update == "projected":
            self.basis = orthonormal_basis(frozen, self.side)
        elif c.update == "factor":
            self.precond = gram_pinv(frozen, self.side)
        else:
            # Trained factors become fresh leaf tensors (never views of a user's fixed sketch).
            if self.side in ("left", "both"):
                self.A = self.A.detach().clone().requires_grad_(True)
            if self.side in ("right", "both"):
                self.B = self.B.detach().clone().requires_grad_(True)
            trained = [t for t in (self.B, self.A) if t.requires_grad]
            self.opt = _OPTIMIZERS[c.update](trained, lr=c.gamma, **c.optimizer_kwargs)

    def merge(self):
        """W ← W + (α/r)·B·A, then the factors are dropped (the restart)."""
        if self.c.update != "projected" and self.B is not None:
            with torch.no_grad():
                self.W = self.W + self.scale * (self.B @ self.A)
        self.B = self.A = None

    @property
    def trained_params(self) -> int:
        m, n, r = self.problem.m, self.problem.n, self.c.rank
        return {"left": r * n, "right": m * r, "both": r * (m + n)}[self.side]

    def effective_W(self) -> torch.Tensor:
        if self.c.update == "projected":
            return self.W
        with torch.no_grad():
            return self.W + self.scale * (self.B @ self.A)

    # -- one inner step ------------------------------------------------------------------------
    def step(self, W: torch.Tensor, G: torch.Tensor, gamma: float):
        c, s = self.c, self.scale
        if c.update == "projected":
            self.W = W - gamma * apply_basis(self.basis, G, self.side)
        elif c.update == "factor":
            # Lemma 10: Â = −(γ/s)(BᵀB)^† Bᵀ G, B̂ = −(γ/s) G Aᵀ (AAᵀ)^†, accumulated over the link.
            if self.side == "left":
                self.A = self.A - (gamma / s) * (self.precond @ (self.B.mT @ G))
            else:
                self.B = self.B - (gamma / s) * ((G @ self.A.mT) @ self.precond)
        else:
            # Chain rule through W = W_base + s·B·A: ∇_A = s·BᵀG, ∇_B = s·G·Aᵀ (simultaneous).
            with torch.no_grad():
                grads = {"A": s * (self.B.mT @ G), "B": s * (G @ self.A.mT)}
                self.A.grad = grads["A"] if self.A.requires_grad else None
                self.B.grad = grads["B"] if self.B.requires_grad else None
            self.opt.step()

    def gamma_t(self, W: torch.Tensor, G: torch.Tensor) -> float:
        if self.c.gamma != "polyak":
            return self.c.gamma
        g2 = float((G * G).sum())
        return 0.0 if g2 == 0 else float(self.problem.loss(W) - self.problem.f_star) / g2

    # -- the loop ------------------------------------------------------------------------------
    def run(self, steps: int, log_every: int):
        K = self.c.steps_per_link
        rows: list[dict] = []
        estimate = None
        for t in range(steps):
            if self.link < 0 or (K is not None and t % K == 0):
                self.start_link()
            W = self.effective_W()
            if estimate is None:
                estimate = self.estimator.init(self.problem, W, self.streams)
            else:
                estimate = self.estimator.update(self.problem, W, estimate.state, self.streams)
            gamma = self.gamma_t(W, estimate.G)
            if self.federated:
                self.count_messages(estimate)
            if t % log_every == 0:
                failure = self.record(rows, t, W, estimate.G if estimate.exact else None, gamma)
                if failure:
                    return rows, failure
            if self.W_sum is not None:
                self.W_sum += W
            self.step(W, estimate.G, gamma)
        self.msg = (self.msg[0], 0.0, 0.0)  # W^T: no round left
        failure = self.record(rows, steps, self.effective_W(), None, math.nan)
        self.merge()
        return rows, failure

    def count_messages(self, estimate) -> None:
        """This step's upload (from the estimator) and broadcast of W^{t+1}, and the totals."""
        clients = estimate.clients or getattr(self.problem, "M", 0)
        bpf = getattr(self.estimator, "bytes_per_float", 4)
        m, n, r = self.problem.m, self.problem.n, self.c.rank
        floats = m * n if self.c.broadcast == "full" else r * (m + n)
        up, down = float(estimate.bytes_up), float(clients * floats * bpf)
        self.msg = (clients, up, down)
        self.mb_up += up / 2**20
        self.mb_down += down / 2**20

    def record(self, rows: list[dict], t: int, W, G, gamma: float) -> tuple[int, str] | None:
        """Log W^t; return (step, message) if the run has diverged."""
        rows.append(self.log(t, W, G, gamma))
        message = self.diverged(rows[-1])
        return (t, message) if message else None

    def log(self, t: int, W: torch.Tensor, G: torch.Tensor | None, gamma: float) -> dict:
        p = self.problem
        with torch.no_grad():
            loss = float(p.loss(W))
            if G is None:
                G = p.grad(W)
            row = {
                "seed": self.seed,
                "step": t,
                "link": self.link,
                "side": self.side,
                "trained_params": self.trained_params,
                "gamma": gamma,
                "loss": loss,
                "gap": float(p.gap(W)) if p.f_star is not None else math.nan,
                "grad_norm_sq": float((G * G).sum()),
            }
            if self.W_sum is not None:
                W_bar = self.W_sum / t if t > 0 else W
                row["loss_avg"] = float(p.loss(W_bar))
        if self.federated:
            clients, up, down = self.msg
            row.update(
                clients=clients,
                bytes_up=up,
                bytes_down=down,
                bytes_up_client=up / clients if clients else 0.0,
                bytes_down_client=down / clients if clients else 0.0,
                mb_up=self.mb_up,
                mb_down=self.mb_down,
            )
        return row

    def diverged(self, row: dict) -> str | None:
        loss = row["loss"]
        if not exploded(loss, self.f0, self.blowup):
            return None
        c, L = self.c, self.problem.L
        hint = "lower gamma"
        if isinstance(c.gamma, float) and L and c.update in ("projected", "factor"):
            if c.gamma > 1.0 / L:
                hint = (
                    f"gamma = {c.gamma:g} exceeds 1/L = {1.0 / L:g}; the theory needs gamma <= 1/L"
                )
        elif c.update in ("sgd", "adamw"):
            hint = f"lower the learning rate gamma = {c.gamma:g} of the {c.update} factor updates"
        return (
            f"{c.method} diverged at step {row['step']} (seed {self.seed}, loss = {loss:g}): {hint}"
        )
