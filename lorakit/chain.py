"""The chain-of-LoRA engine: every single-node method of RAC-LoRA and Bernoulli-LoRA, at both scales.

In each link a *coin* picks the trained side, a *sketch* draws the frozen factor, an *estimator*
gives G^t for each of the link's inner steps and an *update* moves the trained factor; the link's
product is then merged and the factors restart (RAC-LoRA and Bernoulli-LoRA Algorithm 1)::

    W^{t+1} = W^t + (α/r)·B·A

Updates: ``projected`` is the step the theory analyses, W ← W − γ H_B G or W − γ G H_A (RAC-LoRA
eqs. (3)–(4); Bernoulli-LoRA eqs. (7)–(8)); ``factor`` takes it on the trained factor,
Â = −(γ r/α)(B_SᵀB_S)^† B_Sᵀ G (Lemma 10, eq. (30)), the same iterates up to rounding;
``sgd``/``adamw`` are a torch optimizer on the trained factor(s) with learning rate ``gamma``, as in
the papers' experiments but *outside the theory* (one SGD step from A = 0 moves W by
−γ(α/r)² B_S B_Sᵀ G, not a projection). LoRA and COLA train both factors: ``sgd``/``adamw`` only.

Scales: written once against :mod:`lorakit.problems.protocol` (README "Architecture"), W is a tree
(:mod:`lorakit.tree`), one matrix per site, and G_l = ∇_{W_l} f. Each link flips one coin for every
site and draws the frozen factors in site order (:func:`link_factors`); the problem fixes the
scalings and rank (:func:`~lorakit.problems.protocol.site_scalings`). ``sgd``/``adamw`` take
∇_A = s·BᵀG, ∇_B = s·G·Aᵀ from G^t, except where LoRA dropout makes ∂f/∂W0 ≠ ∂f/∂W
(``problem.adapter_dropout``): ``gd``/``sgd`` then take them by autograd through peft
(:func:`lorakit.local.factor_grads`), and the W-space updates and ``page``/``mvr``/``rr`` are
refused. A seed ends with ``problem.commit`` of its W^T (a model: merged base weights, B = 0).

Messages: with a federated estimator (``qgd``, ``marina``, ``ef21``: Bernoulli-LoRA Algs. 7–9, on a
FederatedProblem) a step is a round: the M clients upload what forms G^t
(:attr:`lorakit.estimators.Estimate.bytes_up`) and the server broadcasts W^{t+1} to each, counted
dense (``broadcast="full"``: m·n floats, as the algorithms write it) or as the rank-r update's
factors (``"factors"``: r·(m + n) floats); only the accounting changes, not the iterates. Only
these runs have the columns ``clients`` (M), ``bytes_up``/``bytes_down`` (step t's, over the
clients), ``bytes_up_client``/``bytes_down_client`` (one client's share) and the cumulative
``mb_up``/``mb_down`` (MiB = 2²⁰ bytes, every step up to t, logged or not), at the estimator's
``bytes_per_float``/``bytes_per_index``; the last row (W^T) has zero bytes and the totals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from ._validation import ArgumentTypeError, check_choice, check_int, check_real
from .coins import Coin, bernoulli
from .config import Config
from .divergence import BLOWUP, DivergenceError, check_run, exploded, restored_note, run_seeds
from .estimators import GD, SGD, Estimator, make_estimator
from .local import OPTIMIZERS, Local, factor_grads
from .problems.protocol import check_problem_protocol, site_scalings
from .progress import bar as progress_bar
from .progress import stop_requested
from .rng import Streams
from .sketches import Sketch, apply_basis, gram_pinv, make_sketch, orthonormal_basis
from .tree import finite, leaves, sq_norm, tree_map

__all__ = ["BROADCASTS", "UPDATES", "Chain", "DivergenceError", "link_factors"]

UPDATES = ("projected", "factor", "sgd", "adamw")
BROADCASTS = ("full", "factors")


@dataclass(frozen=True)
class Chain(Config):
    """A chain-of-LoRA configuration; :meth:`run` executes it on a matrix or model problem.

    Parameters
    ----------
    rank : r, 1 ≤ r ≤ min(m, n) (checked against the problem at run time).
    gamma : the W-space step γ of ``projected``/``factor`` (the theory's γ ≤ 1/L), or ``"polyak"``:
        γ_t = (f(W^t) − f*)/‖∂f(W^t)‖² (Bernoulli-LoRA eq. (72); needs f*); for ``sgd``/``adamw``
        the optimizer's learning rate on the factors.
    coin : which factor each link trains (:mod:`lorakit.coins`).
    sketch, sketch_right : distributions of B_S and A_S (``sketch_right``: ``sketch`` by default;
        it draws LoRA/COLA's initial A).
    estimator : G^t (:mod:`lorakit.estimators`); its state runs across links.
    update : ``projected``, ``factor``, ``sgd`` or ``adamw`` (module docstring).
    steps_per_link : inner steps per link (K); ``None``: one link, no restart (LoRA, AsymmLoRA).
    alpha : LoRA scaling α (the product is scaled by α/r); default α = r.
    optimizer_kwargs : extra arguments of the torch optimizer (``sgd``/``adamw``).
    method : the name written to the results table.
    broadcast : ``"full"`` or ``"factors"``: how a federated estimator's broadcast of W^{t+1} is
        counted (module docstring "Messages").
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

        ``problem``: a :class:`~lorakit.problems.base.MatrixProblem` or a
        :class:`~lorakit.adapters.ModelProblem` (every site with the same table). ``progress``: a
        bar per seed (:func:`lorakit.progress.bar`; a stop ends the run with a row for its step).

        Columns: the :meth:`describe` fields, ``seed``, ``step`` (0 is W^0), ``link``, ``side``,
        ``trained_params`` (entries of the trained factor(s) in that link, over every site),
        ``gamma`` (γ_t), ``loss`` (a model's: the mean over every row), ``gap`` (f − f*, NaN when
        f* is unknown), ``grad_norm_sq`` (Σ_l ‖∇_{W_l} f(W^t)‖²) and, for non-smooth problems,
        ``loss_avg`` = f(W̄^t) at the running average W̄^t (Theorem 10).
        Federated estimators add the message columns (module docstring "Messages").

        Divergence (:mod:`lorakit.divergence`): a logged loss that is not finite or above
        ``blowup``·max(1, |f(W^0)|) raises a :class:`DivergenceError`, or with
        ``on_divergence="stop"`` ends that seed (``frame.attrs["diverged"]``: seed → step). A
        non-finite update is never committed: a model keeps W of the last logged step that passed.
        """
        steps, seeds, log_every, blowup = check_run(
            "steps", steps, seeds, log_every, on_divergence, blowup, progress=progress
        )
        check_problem_protocol(problem)
        scalings, estimator = self._check(problem)
        make = lambda s: _ChainRun(self, problem, s, estimator, scalings, progress)  # noqa: E731
        run = lambda one: one.run(steps, log_every)  # noqa: E731
        kw = {"on_divergence": on_divergence, "blowup": blowup}
        return run_seeds(seeds, make, run, self.frame, **kw)[0]

    def _check(self, problem) -> tuple[tuple[float, ...], Estimator]:
        """The sites' scalings and the estimator bound to ``problem``, or a ValueError."""
        if problem.ranks is None:  # any rank fits a site: it must fit every site
            check_int("rank", self.rank, low=1, high=min(min(shape) for shape in problem.shapes))
        scalings = site_scalings(problem, self.rank, self.alpha)
        if self.gamma == "polyak" and problem.f_star is None:
            raise ValueError(f"gamma='polyak' needs f*, which problem {problem.name!r} lacks")
        estimator = self.estimator.bind(problem)
        general = not isinstance(self.estimator, (GD, SGD))  # G^t at more than one point
        site = problem.adapter_dropout
        if site is not None and (general or self.update in ("projected", "factor")):
            what = f"estimator {self.estimator}" if general else f"update={self.update!r}"
            raise ValueError(
                f"{what} needs ∂f/∂W0 = ∂f/∂W, but site {site} applies LoRA dropout to the "
                "adapter path only: call model.eval(), use lora_dropout=0, or use "
                "update='sgd'/'adamw'"
            )
        return scalings, estimator


def link_factors(chain: Chain, link: int, streams: Streams, shapes, dtype, device):
    """(side, [B_l], [A_l]): link ``link``'s side (the ``coin`` stream) and starting factors.

    Per site in site order, from the link's own stream ``streams.substream("sketch", link)``:
    ``left`` draws B_S (m×r) with A = 0, ``right`` draws A_S (r×n) with B = 0, ``both`` (LoRA,
    COLA) draws A from the right sketch with B = 0, peft's initialisation. So ΔW = 0 at the start.
    """
    r, side = chain.rank, chain.coin.flip(link, streams)
    # The link's own sketch stream: its draw never shifts with earlier links' sides (rng.py).
    gen, kw = streams.substream("sketch", link), {"dtype": dtype, "device": device}
    if side == "left":
        Bs = [chain.sketch.sample((m, r), gen, side="left", **kw) for m, _ in shapes]
        return side, Bs, [torch.zeros(r, n, **kw) for _, n in shapes]
    # right, or both: A from the right sketch, B = 0 (the LoRA initialisation)
    As = [chain.sketch_right.sample((r, n), gen, side="right", **kw) for _, n in shapes]
    return side, [torch.zeros(m, r, **kw) for m, _ in shapes], As


class _ChainRun:
    """One seeded run: W (the base W under ``factor``/``sgd``/``adamw``), the link's B and A."""

    def __init__(self, chain: Chain, problem, seed: int, estimator, scalings, progress: bool):
        self.c, self.problem, self.seed, self.progress = chain, problem, seed, progress
        self.streams = Streams(seed)
        self.estimator, self.scalings = estimator, scalings
        self.s = problem.tree(scalings)  # s_l per site (a float for a matrix problem)
        self.B = self.A = self.basis = self.precond = self.opt = None
        self.side, self.link = None, -1
        # LoRA dropout: the optimizers' factor gradients by autograd (module docstring "Scales").
        dropout = chain.update in OPTIMIZERS and problem.adapter_dropout is not None
        self.local = Local(estimator=estimator) if dropout else None
        # Message accounting (federated estimators only): this step's bytes and running totals.
        self.federated = estimator.federated
        self.msg = (0, 0.0, 0.0)  # (clients, bytes_up, bytes_down) of the step being logged
        self.mb_up = self.mb_down = 0.0

    # -- links ---------------------------------------------------------------------------------
    def start_link(self):
        c, p = self.c, self.problem
        if self.B is not None:  # merge the link's product, W ← W + s·B·A, and restart
            self.W = self.effective_W()
        self.link += 1
        self.side, Bs, As = link_factors(c, self.link, self.streams, p.shapes, p.dtype, p.device)
        self.B, self.A = p.tree(Bs), p.tree(As)
        frozen = self.B if self.side == "left" else self.A
        if c.update == "projected":
            self.basis = tree_map(lambda X: orthonormal_basis(X, self.side), frozen)
        elif c.update == "factor":
            self.precond = tree_map(lambda X: gram_pinv(X, self.side), frozen)
        else:
            # Trained factors become fresh leaf tensors (never views of a user's fixed sketch).
            leaf = lambda t: tree_map(lambda x: x.detach().clone().requires_grad_(True), t)  # noqa: E731
            if self.side in ("left", "both"):
                self.A = leaf(self.A)
            if self.side in ("right", "both"):
                self.B = leaf(self.B)
            trained = [x for x in leaves(self.B) + leaves(self.A) if x.requires_grad]
            self.opt = OPTIMIZERS[c.update](trained, lr=c.gamma, **c.optimizer_kwargs)

    @property
    def trained_params(self) -> int:
        r = self.c.rank
        return sum(
            {"left": r * n, "right": m * r, "both": r * (m + n)}[self.side]
            for m, n in self.problem.shapes
        )

    def effective_W(self):
        if self.c.update == "projected":
            return self.W
        with torch.no_grad():
            return tree_map(lambda w, b, a, s: w + s * (b @ a), self.W, self.B, self.A, self.s)

    # -- one inner step ------------------------------------------------------------------------
    def estimate(self, W, previous):
        """G^t at W (None under LoRA dropout, where only the factors' gradients are taken); for
        ``sgd``/``adamw`` the trained factors' ``.grad`` (module docstring "Scales")."""
        p, streams = self.problem, self.streams
        if self.local is not None:
            gB, gA = factor_grads(
                p, self.W, self.B, self.A, self.scalings, None, self.local, streams
            )
            for x, g in zip(leaves(self.B) + leaves(self.A), leaves(gB) + leaves(gA), strict=True):
                x.grad = g if x.requires_grad else None
            return None
        if previous is None:
            estimate = self.estimator.init(p, W, streams)
        else:
            estimate = self.estimator.update(p, W, previous.state, streams)
        if self.opt is not None:
            # Chain rule through W = W_base + s·B·A: ∇_A = s·BᵀG, ∇_B = s·G·Aᵀ (simultaneous).
            with torch.no_grad():
                sites = leaves(self.B), leaves(self.A), leaves(estimate.G), self.scalings
                for B, A, G, s in zip(*sites, strict=True):
                    A.grad = s * (B.mT @ G) if A.requires_grad else None
                    B.grad = s * (G @ A.mT) if B.requires_grad else None
        return estimate

    def step(self, W, G, gamma: float) -> None:
        """One step on every site."""
        c, side = self.c, self.side
        if c.update == "projected":
            self.W = W - gamma * tree_map(lambda Q, g: apply_basis(Q, g, side), self.basis, G)
        elif c.update == "factor":
            # Lemma 10: Â = −(γ/s)(BᵀB)^† Bᵀ G, B̂ = −(γ/s) G Aᵀ (AAᵀ)^†, accumulated over the link.
            if side == "left":
                step = lambda A, B, P, g, s: A - (gamma / s) * (P @ (B.mT @ g))  # noqa: E731
                self.A = tree_map(step, self.A, self.B, self.precond, G, self.s)
            else:
                step = lambda B, A, P, g, s: B - (gamma / s) * ((g @ A.mT) @ P)  # noqa: E731
                self.B = tree_map(step, self.B, self.A, self.precond, G, self.s)
        else:
            self.opt.step()

    def gamma_t(self, W, G) -> float:
        if self.c.gamma != "polyak":
            return self.c.gamma
        g2 = sq_norm(G)
        return 0.0 if g2 == 0 else float(self.problem.loss(W) - self.problem.f_star) / g2

    # -- the loop ------------------------------------------------------------------------------
    def run(self, steps: int, log_every: int) -> list[dict]:
        """Reset the problem, run ``steps`` steps and commit the last logged W that passed (W^T,
        or the last good W before a DivergenceError); the rows."""
        p = self.problem
        p.reset()
        desc = f"{self.c.method} seed {self.seed}"
        bar = progress_bar(enabled=self.progress, total=steps, desc=desc)
        with p.seeded(self.streams), bar:
            self.W = p.start()  # merged weight W^t (projected: the iterate itself)
            self.f0 = float(p.loss(self.W))
            self.W_sum = None if getattr(p, "smooth", True) else tree_map(torch.zeros_like, self.W)
            self.good = (0, self.W)  # the last logged (step, W) whose loss passed
            try:
                rows = self.loop(steps, log_every, bar)
            except DivergenceError:
                p.commit(self.good[1])
                raise
        p.commit(self.good[1])
        return rows

    def loop(self, steps: int, log_every: int, bar) -> list[dict]:
        K = self.c.steps_per_link
        rows: list[dict] = []
        estimate = None
        for t in range(steps):
            if stop_requested(bar):  # cancelled (report_progress): log where the run stands
                steps = t
                break
            if self.link < 0 or (K is not None and t % K == 0):
                self.start_link()
            W = self.effective_W()
            estimate = self.estimate(W, estimate)
            G = None if estimate is None else estimate.G
            gamma = self.gamma_t(W, G)
            if self.federated:
                self.count_messages(estimate)
            if t % log_every == 0:
                exact = estimate is not None and estimate.exact
                self.record(rows, t, W, G if exact else None, gamma)
                bar.set_postfix(loss=f"{rows[-1]['loss']:.4g}", refresh=False)
            if self.W_sum is not None:
                self.W_sum += W
            self.step(W, G, gamma)
            bar.update()
        self.msg = (self.msg[0], 0.0, 0.0)  # W^T: no round left
        self.record(rows, steps, self.effective_W(), None, math.nan)
        return rows

    def count_messages(self, estimate) -> None:
        """This step's upload (from the estimator) and broadcast of W^{t+1}, and the totals."""
        clients = estimate.clients or self.problem.M
        bpf = getattr(self.estimator, "bytes_per_float", 4)
        r, full = self.c.rank, self.c.broadcast == "full"
        floats = sum(m * n if full else r * (m + n) for m, n in self.problem.shapes)
        up, down = float(estimate.bytes_up), float(clients * floats * bpf)
        self.msg = (clients, up, down)
        self.mb_up += up / 2**20
        self.mb_down += down / 2**20

    def log(self, t: int, W, G, gamma: float) -> dict:
        """The row of W^t."""
        p = self.problem
        row = {
            "seed": self.seed,
            "step": t,
            "link": self.link,
            "side": self.side,
            "trained_params": self.trained_params,
            "gamma": gamma,
        }
        with torch.no_grad():
            loss, G = p.loss(W), p.grad(W) if G is None else G
            row["loss"] = float(loss)
            row["gap"] = float(loss - p.f_star) if p.f_star is not None else math.nan
            row["grad_norm_sq"] = sq_norm(G)
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

    def record(self, rows: list[dict], t: int, W, G, gamma: float) -> None:
        """Log W^t; a DivergenceError if it diverged, else W^t is the last good W."""
        rows.append(self.log(t, W, G, gamma))
        loss = rows[-1]["loss"]
        if exploded(loss, self.f0, self.blowup):
            message = self.message(t, W, loss)
            raise DivergenceError(message, step=t, seed=self.seed, frame=pd.DataFrame(rows))
        self.good = (t, W)

    def message(self, t: int, W, loss: float) -> str:
        """The error's text: what diverged, a hint and, for a model, where it was put back."""
        c, p, good = self.c, self.problem, self.good[0]
        what = f"loss = {loss:g}"
        if not math.isfinite(loss) and not finite(W):  # checked only here: no per-step cost
            steps = f"step {t - 1}" if t - 1 == good else f"a step in {good}..{t - 1}"
            what = f"the update of {steps} is not finite and was not written"
        L = getattr(p, "L", None)
        hint = "lower gamma"
        if c.update in OPTIMIZERS:
            hint = f"lower the learning rate gamma = {c.gamma:g} of the {c.update} factor updates"
        elif isinstance(c.gamma, float) and L and c.gamma > 1.0 / L:
            hint = f"gamma = {c.gamma:g} exceeds 1/L = {1.0 / L:g}; the theory needs gamma <= 1/L"
        elif isinstance(c.gamma, float) and L is None and getattr(p, "smooth", True):
            hint = (
                f"lower gamma = {c.gamma:g} (the theory needs gamma <= 1/L; L is unknown for "
                f"problem {p.name!r})"
            )
        note = restored_note("step", good) if p.stateful else ""
        return f"{c.method} diverged at step {t} (seed {self.seed}, {what}): {hint}{note}"
