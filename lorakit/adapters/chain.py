"""The chain engine at model scale: every :class:`~lorakit.chain.Chain` on a peft model.

:meth:`Chain.run <lorakit.chain.Chain.run>` hands a :class:`~lorakit.adapters.ModelProblem` to
:class:`ModelChainRun`, which runs the matrix engine's algebra on every LoRA site l at once, with
G_l = ∇_{W_l} f (RAC-LoRA Algorithm 1; Bernoulli-LoRA Algorithm 1). Each link:

1. one coin flip, shared by every site (``chain.coin.flip(link, streams)``, as at matrix scale);
2. per site, in site order, a frozen factor from the link's own sketch stream
   (``streams.substream("sketch", link)``, :mod:`lorakit.rng`): B_S (m_l × r) for
   ``left``, A_S (r × n_l) for ``right`` (and the initial A of LoRA/COLA, with B = 0); the trained
   factor starts at zero, so the link starts from ΔW = 0. :meth:`Site.merge_and_restart
   <lorakit.adapters.Site.merge_and_restart>` merges the previous link's s·B·A into W0_l and writes
   the new factors into the peft layer;
3. ``steps_per_link`` inner steps, each applied to every site:

   ``projected``  W0_l ← W0_l − γ H_B G_l (or − γ G_l H_A); the adapter holds the sketch and a zero
                  trained factor, so the model computes W0_l (RAC-LoRA eqs. (3)–(4));
   ``factor``     Lemma 10 on the peft factor: A ← A − (γ/s_l)(B_SᵀB_S)^† B_Sᵀ G_l (or
                  B ← B − (γ/s_l) G_l A_Sᵀ(A_S A_Sᵀ)^†); the same iterates up to rounding;
   ``sgd/adamw``  a torch optimizer over the trained peft factors of every site, their gradients
                  from autograd (so LoRA dropout is handled); :func:`~lorakit.adapters.freeze` is
                  re-applied before every step and the optimizer holds only trained tensors.

Model-scale conventions
-----------------------
* Scaling: site l uses its own peft scaling s_l (α/r, or α/√r with rsLoRA). ``chain.alpha`` (the
  matrix convention s = α/r) may be left unset; if given it must give every site's s_l.
* Rank: ``chain.rank`` must equal every site's peft rank r and be ≤ min(m_l, n_l).
* Estimators: ``gd`` (every row of ``problem.data``, in chunks of ``eval_batch_size`` weighted by
  their size) and ``sgd(batch_size=b)`` (b rows drawn without replacement from the ``data`` stream
  each step; b = 1 by default) take one backward pass at the current weights. ``page``, ``mvr``
  (with ``batch_size``) and ``rr`` are the matrix estimators themselves, run on
  :class:`~lorakit.adapters.grads.SiteObjective` (the model as a function of its per-site weights,
  evaluated at the previous iterate where PAGE and MVR need it), so they draw the same samples as
  at matrix scale; the optimizers then get the factor gradients from G by the chain rule.
  ``sgd(sigma=…)`` (noise of a known variance) and the federated ``qgd``/``marina``/``ef21`` are
  matrix-scale only: ValueError.
* ``gamma="polyak"`` needs f*, which a model does not have: ValueError. The ``gap`` column is NaN.
* LoRA dropout (active, i.e. p > 0 in training mode) feeds dropout(x) to the adapter only, so
  ∂f/∂W0 is not the adapter's gradient: ``projected``/``factor`` and the estimators ``page``,
  ``mvr``, ``rr`` raise ValueError (``eval()`` the model or use ``lora_dropout=0``); ``sgd``/
  ``adamw`` with ``gd``/``sgd`` train through it.
* Randomness: the run's named streams (:class:`~lorakit.rng.Streams`) as at matrix scale; the
  model's own randomness (dropout) uses the global torch generator, seeded from the ``model``
  stream inside a forked RNG state, so the same seed gives the same numbers and the caller's global
  RNG is left as it was.
* Every seed starts from :meth:`ModelProblem.reset`. Afterwards the model holds the **last** seed's
  result W^T merged into its base weights, a zero adapter product (B = 0) and both factors marked
  trainable (peft's default).
* Divergence: an update with a NaN/inf entry is never written (all sites are checked before any is
  written) and the diverged step gets a row with NaN loss; a finite update whose loss explodes
  (:func:`~lorakit.divergence.exploded`, threshold ``blowup``) stops the run as at matrix scale.
  Either way the model is put back to its last good state (:class:`~lorakit.adapters.checkpoint.
  LastGood`): the state of the last logged step, taken before that step's link restart (with
  ``log_every=1`` the state before the diverged step), then merged as every run ends, so it equals
  the model a run of that many steps leaves.
"""

from __future__ import annotations

import math

import torch

from .._validation import check_int
from ..chain import _OPTIMIZERS, Chain
from ..divergence import BLOWUP, exploded
from ..estimators import GD, MVR, PAGE, RR, SGD
from ..progress import bar as progress_bar
from ..progress import stop_requested
from ..rng import Streams
from ..sketches import apply_basis, gram_pinv, orthonormal_basis
from .checkpoint import LastGood, site_state
from .grads import (
    PerSite,
    SiteObjective,
    backward,
    chunks,
    dropout_active,
    finite,
    full_batches,
    model_rng,
)
from .problem import ModelProblem
from .sites import Site, freeze

__all__ = ["ModelChainRun", "check_model_chain"]

#: The estimators available at model scale.
MODEL_ESTIMATORS = (
    "gd",
    "sgd(batch_size=b)",
    "page(q, batch_size=b)",
    "mvr(b, batch_size=b)",
    "rr",
)
#: The matrix estimators run on the model's per-site weights (module docstring).
_GENERAL = (PAGE, MVR, RR)


# -- validation ----------------------------------------------------------------------------------
def check_model_chain(chain: Chain, problem: ModelProblem) -> int | None:
    """Check ``chain`` against the model's sites; return the minibatch size (None for ``gd``)."""
    if chain.gamma == "polyak":
        raise ValueError(
            "gamma='polyak' needs f*, which a model problem does not have: give a number"
        )
    for site in problem.sites:
        _check_site(chain, site)
    return _batch_size(chain, problem)


def _check_site(chain: Chain, site: Site) -> None:
    (m, n), r = site.shape, chain.rank
    if r > min(m, n):
        raise ValueError(
            f"rank = {r} exceeds min(m, n) = {min(m, n)} of site {site.name} ({m}×{n})"
        )
    if site.rank != r:
        raise ValueError(
            f"the chain's rank = {r} differs from the peft adapter rank r = {site.rank} of site "
            f"{site.name}: use rank={site.rank} or build the adapter with LoraConfig(r={r})"
        )
    if chain.alpha is not None and not math.isclose(chain.alpha / r, site.scaling, rel_tol=1e-9):
        raise ValueError(
            f"alpha = {chain.alpha:g} gives the scaling alpha/r = {chain.alpha / r:g}, but site "
            f"{site.name} has the peft scaling s = {site.scaling:g}: leave alpha unset (each "
            "site's own scaling is used) or set lora_alpha in the LoraConfig"
        )
    if (chain.update in ("projected", "factor") or _general(chain)) and dropout_active(site):
        what = f"estimator {chain.estimator}" if _general(chain) else f"update={chain.update!r}"
        raise ValueError(
            f"{what} needs ∂f/∂W0 = ∂f/∂W, but site {site.name} applies LoRA "
            "dropout to the adapter path only: call model.eval(), use lora_dropout=0, or use "
            "update='sgd'/'adamw'"
        )


def _general(chain: Chain) -> bool:
    """True for the estimators run on :class:`SiteObjective` (PAGE, MVR, RR)."""
    est = chain.estimator
    return type(est) in _GENERAL and getattr(getattr(est, "oracle", None), "sigma", None) is None


def _batch_size(chain: Chain, problem: ModelProblem) -> int | None:
    est = chain.estimator
    if type(est) is GD or _general(chain):
        return None
    if type(est) is SGD and est.oracle.sigma is None:
        b = est.oracle.batch_size or 1
        return check_int("batch_size", b, low=1, high=problem.n_samples)
    raise ValueError(
        f"estimator {str(est)!r} is not available at model scale; available: "
        f"{', '.join(MODEL_ESTIMATORS)}"
    )


# -- one seeded run ------------------------------------------------------------------------------
class ModelChainRun:
    """One seed of a chain on a model: the matrix engine's :class:`~lorakit.chain._ChainRun`
    interface (``run(steps, log_every) -> (rows, failure)``) over every site of the model."""

    blowup = BLOWUP  # the divergence threshold (set by the seed loop)

    def __init__(self, chain: Chain, problem: ModelProblem, seed: int, *, progress: bool = False):
        self.c, self.problem, self.seed, self.progress = chain, problem, seed, progress
        self.sites = problem.sites
        self.batch_size = check_model_chain(chain, problem)
        self.streams = Streams(seed)
        self.side, self.link = None, -1
        self.bases = self.precond = self.opt = None
        self.objective = self.estimator = self.estimate_state = None
        if _general(chain):  # PAGE, MVR, RR: the matrix estimators on the per-site weights
            self.objective = SiteObjective(problem)
            self.estimator = chain.estimator.bind(self.objective)

    @property
    def plain(self) -> bool:
        """True for the torch-optimizer updates (``sgd``/``adamw``)."""
        return self.c.update in _OPTIMIZERS

    # -- links -----------------------------------------------------------------------------------
    def start_link(self) -> None:
        """Flip the shared coin, draw each site's frozen factor, merge and restart every site."""
        c = self.c
        self.link += 1
        self.side = c.coin.flip(self.link, self.streams)
        gen = self.streams.substream(
            "sketch", self.link
        )  # the link's own stream, as at matrix scale
        frozen = []
        for site in self.sites:
            (m, n), r = site.shape, c.rank
            kw = {"dtype": site.B.dtype, "device": site.B.device}
            if self.side == "left":
                X = c.sketch.sample((m, r), gen, side="left", **kw)
                site.merge_and_restart(X, torch.zeros(r, n, **kw))
            else:  # right, or both: A from the right sketch, B = 0 (the LoRA initialisation)
                X = c.sketch_right.sample((r, n), gen, side="right", **kw)
                site.merge_and_restart(torch.zeros(m, r, **kw), X)
            frozen.append(X)
        if c.update == "projected":
            self.bases = [orthonormal_basis(X, self.side) for X in frozen]
        elif c.update == "factor":
            self.precond = [gram_pinv(X, self.side) for X in frozen]
        else:
            trained = freeze(self.sites, self.side)
            self.opt = _OPTIMIZERS[c.update](trained, lr=c.gamma, **c.optimizer_kwargs)

    def finish(self) -> None:
        """Merge the last link (W0 ← W0 + s·B·A, B = 0) and mark both factors trainable.

        After a divergence whose merge would overflow, the factors are left unmerged.
        """
        if finite(site.W() for site in self.sites):
            for site in self.sites:
                site.merge()
        freeze(self.sites, "both")

    # -- one inner step --------------------------------------------------------------------------
    def estimate(self, want_G: bool) -> tuple[list | None, bool]:
        """G^t for every site (None if not needed) and whether it is the exact full gradient.

        For ``sgd``/``adamw`` the same backward pass fills the trained factors' gradients.
        """
        if self.estimator is not None:
            return self._general_estimate()
        p = self.problem
        if self.batch_size is None:
            batches = full_batches(p)
        else:
            batches = chunks(p.sample(self.streams["data"], self.batch_size), p.eval_batch_size)
        exact = self.batch_size is None
        # The W-space updates always need G; the optimizers only to log an exact one.
        need_G = not self.plain or (want_G and exact)
        return backward(p, batches, self.side if self.plain else "none", need_G), exact

    def _general_estimate(self) -> tuple[list, bool]:
        """G^t from the matrix estimator at W^t (and W^{t-1} where it needs it); for the
        optimizers, the trained factors' gradients by the chain rule ∇_A = s·BᵀG, ∇_B = s·G·Aᵀ."""
        W = PerSite(site.W() for site in self.sites)
        est, obj, streams = self.estimator, self.objective, self.streams
        if self.estimate_state is None:
            estimate = est.init(obj, W, streams)
        else:
            estimate = est.update(obj, W, self.estimate_state, streams)
        self.estimate_state, G = estimate.state, list(estimate.G)
        if self.plain:
            freeze(self.sites, self.side)
            with torch.no_grad():
                for site, g in zip(self.sites, G, strict=True):
                    B, A, s = site.B, site.A, site.scaling
                    A.grad = s * (B.detach().mT @ g) if A.requires_grad else None
                    B.grad = s * (g @ A.detach().mT) if B.requires_grad else None
        return G, estimate.exact

    def step(self, G: list | None) -> bool:
        """One step on every site; False (nothing written) if any site's update is not finite."""
        if self.plain:
            return self._optimizer_step()
        if self.c.update == "projected":  # RAC-LoRA eqs. (3)–(4): W0 ← W0 − γ H G
            new = [
                self._projected_step(*args) for args in zip(self.sites, self.bases, G, strict=True)
            ]
        else:  # Lemma 10: the preconditioned step on the trained factor
            new = [
                self._factor_step(*args) for args in zip(self.sites, self.precond, G, strict=True)
            ]
        if not finite(new):  # check every site before writing any
            return False
        trained = "W0" if self.c.update == "projected" else "A" if self.side == "left" else "B"
        for site, X in zip(self.sites, new, strict=True):
            if trained == "W0":
                site.W0 = X
            else:
                site.set_factors(**{trained: X})
        return True

    def _projected_step(self, site: Site, Q: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """W0 − γ H_B G (left) or W0 − γ G H_A (right), H = QQᵀ."""
        return site.W0 - self.c.gamma * apply_basis(Q, G, self.side)

    def _factor_step(self, site: Site, P: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """Â = A − (γ/s)(BᵀB)^† Bᵀ G (left) or B̂ = B − (γ/s) G Aᵀ(AAᵀ)^† (right)."""
        B, A, s, gamma = site.B.detach(), site.A.detach(), site.scaling, self.c.gamma
        if self.side == "left":
            return A - (gamma / s) * (P @ (B.mT @ G))
        return B - (gamma / s) * ((G @ A.mT) @ P)

    def _optimizer_step(self) -> bool:
        """``sgd``/``adamw`` on the trained factors (gradients set by :meth:`estimate`)."""
        trained = freeze(self.sites, self.side)  # guard: peft's set_adapter re-enables factors
        before = [t.detach().clone() for t in trained]
        self.opt.step()
        if finite(trained):
            return True
        with torch.no_grad():  # undo: a non-finite update is never left in the model
            for t, old in zip(trained, before, strict=True):
                t.copy_(old)
        return False

    # -- the loop --------------------------------------------------------------------------------
    def run(self, steps: int, log_every: int):
        """Reset the model, run ``steps`` inner steps, merge; (rows, failure or None)."""
        self.problem.reset()
        bar = progress_bar(
            enabled=self.progress, total=steps, desc=f"{self.c.method} seed {self.seed}"
        )
        with model_rng(self.streams, self.problem.device), bar:
            try:
                self.f0 = self.problem.loss()
                return self._loop(steps, log_every, bar)
            finally:
                self.finish()

    def _loop(self, steps: int, log_every: int, bar):
        K, gamma = self.c.steps_per_link, self.c.gamma
        rows: list[dict] = []
        good = LastGood(self.sites)  # W^0; then each logged W^t, taken before its link restart
        for t in range(steps):
            if stop_requested(bar):  # cancelled (report_progress): log where the run stands
                steps = t
                break
            logged = t % log_every == 0
            state = site_state(self.sites) if logged and t > 0 else None
            if self.link < 0 or (K is not None and t % K == 0):
                self.start_link()
            G, exact = self.estimate(want_G=logged)
            if logged:
                failure = self.record(rows, t, G if exact else None, gamma)
                if failure:
                    return rows, (failure[0], failure[1] + good.restore())
                if state is not None:
                    good.keep(t, state)
                bar.set_postfix(loss=f"{rows[-1]['loss']:.4g}", refresh=False)
            if not self.step(G):
                rows.append(self.row(t + 1, gamma, math.nan, math.nan))
                return rows, (t + 1, self.message(t + 1, None) + good.restore())
            bar.update()
        failure = self.record(rows, steps, None, math.nan)
        if failure:
            failure = (failure[0], failure[1] + good.restore())
        return rows, failure

    # -- the table -------------------------------------------------------------------------------
    def row(self, t: int, gamma: float, loss: float, grad_norm_sq: float) -> dict:
        return {
            "seed": self.seed,
            "step": t,
            "link": self.link,
            "side": self.side,
            "trained_params": self.problem.trainable_params(self.side),
            "gamma": gamma,
            "loss": loss,
            "gap": math.nan,  # f* is unknown for a model
            "grad_norm_sq": grad_norm_sq,
        }

    def record(self, rows: list[dict], t: int, G: list | None, gamma: float):
        """Log W^t (full-data loss and Σ_l ‖G_l‖²); (step, message) if the loss exploded."""
        loss = self.problem.loss()
        if G is None:
            G = backward(self.problem, full_batches(self.problem), "none", True)
        rows.append(self.row(t, gamma, loss, sum(float((g * g).sum()) for g in G)))
        return (t, self.message(t, loss)) if exploded(loss, self.f0, self.blowup) else None

    def message(self, t: int, loss: float | None) -> str:
        c = self.c
        if c.update in _OPTIMIZERS:
            hint = f"lower the learning rate gamma = {c.gamma:g} of the {c.update} factor updates"
        else:
            hint = (
                f"lower gamma = {c.gamma:g} (the theory needs gamma <= 1/L; L is unknown for a "
                "model)"
            )
        what = (
            f"loss = {loss:g}"
            if loss is not None
            else f"the update of step {t - 1} is not finite and was not written"
        )
        return f"{c.method} diverged at step {t} (seed {self.seed}, {what}): {hint}"
