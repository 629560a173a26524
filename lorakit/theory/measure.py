"""Measurements for the theorem checks: per-seed values off a results frame (one row per step and
seed), their mean ± standard error, and the :class:`~lorakit.theory.registry.Result` of a measured
value against a theorem's bounds.

Shared by :mod:`lorakit.theory.scenarios` (each check's run, defined once) and the per-paper check
modules; it imports neither, so the layers stay a line (README "Architecture", principle 10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from ..estimators import Estimate, Estimator
from .constants import lambda_p
from .registry import Result, register
from .theorem import THEOREMS, Theorem

__all__ = [
    "OffsetInit",
    "average_grad_norm",
    "avg_loss_gap",
    "gap_at",
    "lam_p",
    "mean_se",
    "min_grad_norm",
    "per_seed",
    "register_theorem_check",
    "theorem_result",
    "weighted_grad_norm",
]


def per_seed(frame: pd.DataFrame, column: str, steps) -> np.ndarray:
    """``column`` at ``steps`` as a (seeds, steps) array."""
    rows = frame[frame.step.isin(steps)]
    return rows.pivot(index="seed", columns="step", values=column).to_numpy()


def mean_se(x: np.ndarray) -> tuple[float, float]:
    """The mean of ``x`` and its standard error (0 for a single value)."""
    se = x.std(ddof=1) / math.sqrt(x.size) if x.size > 1 else 0.0
    return float(x.mean()), float(se)


def average_grad_norm(frame: pd.DataFrame, steps) -> tuple[float, float]:
    """E‖∇f(W̃)‖² for W̃ uniform over ``steps``: the per-seed average, then mean ± SE over seeds."""
    return mean_se(per_seed(frame, "grad_norm_sq", steps).mean(axis=1))


def min_grad_norm(frame: pd.DataFrame, steps) -> tuple[float, float]:
    """min_t E‖∇f(W^t)‖² over ``steps`` (SE of the mean at the minimising step)."""
    values = per_seed(frame, "grad_norm_sq", steps)
    best = int(values.mean(axis=0).argmin())
    return mean_se(values[:, best])


def gap_at(frame: pd.DataFrame, step: int) -> tuple[float, float]:
    """E[f(W^T)] − f* at ``step``: mean ± SE over seeds."""
    return mean_se(per_seed(frame, "gap", [step])[:, 0])


def theorem_result(
    theorem: Theorem, measured: tuple[float, float], constants: dict, detail: str
) -> Result:
    """A :class:`Result` for ``measured`` (mean, SE) against the theorem's bounds at ``constants``.

    Raises if the run's step size violates the corrected step-size conditions: a check must run
    inside the theorem's hypotheses.
    """
    constants = theorem.select(constants)
    if not theorem.admissible("corrected", **constants):
        raise ValueError(f"{theorem.describe()}: the check's constants violate its step conditions")
    # The printed form's value at the run's constants, beside the corrected one, whether or not
    # its own (printed) conditions admit them: that is the comparison the erratum is about.
    printed = (
        theorem.bound("printed", outside="evaluate", **constants)
        if theorem.corrected is not None
        else None
    )
    if printed is not None and math.isnan(printed):
        printed = None
    result = Result(
        measured[0],
        theorem.bound("corrected", **constants),
        "<=",
        detail,
        printed=printed,
        stderr=measured[1],
    )
    if result.status == "not separable":
        note = "; this run does not separate the printed and corrected forms: both hold"
        result = replace(result, detail=detail + note)
    return result


def register_theorem_check(key: str):
    """Decorator: register ``fn(fast) -> Result`` as the check of theorem ``key``."""
    theorem = THEOREMS[key]
    return register(key, theorem.paper, f"{theorem.number}: {theorem.setting}")


def lam_p(m: int, n: int, r: int, p: float) -> float:
    """λ^p_min = λ^p_max = p·r/m + (1 − p)·r/n for Gaussian sketches (Assumption 1, Lemma 3)."""
    return float(lambda_p(p, r, m, n).min)


def weighted_grad_norm(frame: pd.DataFrame, T: int, growth: float) -> tuple[float, float]:
    """E‖∇f(W̃^T)‖² for W̃^T drawn from W^0..W^{T−1} with w_t ∝ (1 + growth)^{−t} (Thms 2, 5)."""
    values = per_seed(frame, "grad_norm_sq", range(T))
    w = (1.0 + growth) ** -np.arange(T, dtype=float)
    return mean_se(values @ (w / w.sum()))


def avg_loss_gap(frame: pd.DataFrame, T: int, f_star: float) -> tuple[float, float]:
    """E[f(W̄^T)] − f* with W̄^T = (1/T) Σ_{t<T} W^t (the ``loss_avg`` column; Theorem 10)."""
    return mean_se(per_seed(frame, "loss_avg", [T])[:, 0] - f_star)


@dataclass(frozen=True)
class OffsetInit(Estimator):
    """``base`` with G^0 = base's G^0 + ``offset``, so 𝒢^0 = ‖offset‖² when base starts exact.

    Only the initial estimate changes; the updates are base's (PAGE and MVR keep (G, W) as state).
    """

    base: Estimator
    offset: torch.Tensor
    name = "offset_init"

    def bind(self, problem):
        return OffsetInit(self.base.bind(problem), self.offset)

    def init(self, problem, W, streams):
        G = self.base.init(problem, W, streams).G + self.offset
        return Estimate(G, (G, W), False)

    def update(self, problem, W, state, streams):
        return self.base.update(problem, W, state, streams)

    def __str__(self):
        return f"{self.base}, G^0 = ∇f(W^0) + E"
