"""Theorem checks: run the matching method on a problem with known constants and put the measured
left-hand side beside the corrected bound (and the printed one where an erratum changes it).

Each check is registered in :data:`lorakit.checks.CHECKS` under its theorem's key, so
``lorakit verify`` lists it. Measurements are means over seeds with their standard errors.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from ..checks import Result, register
from . import rac_lora  # noqa: F401  (registers the theorems)
from .identities import IDENTITIES
from .theorem import THEOREMS, Theorem

__all__ = ["average_grad_norm", "gap_at", "min_grad_norm", "scenario_result", "theorem_result"]


# --------------------------------------------------------------------------------------------
# Measurements on a results frame (one row per step and seed)
# --------------------------------------------------------------------------------------------
def _per_seed(frame: pd.DataFrame, column: str, steps) -> np.ndarray:
    rows = frame[frame.step.isin(steps)]
    return rows.pivot(index="seed", columns="step", values=column).to_numpy()


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    se = x.std(ddof=1) / math.sqrt(x.size) if x.size > 1 else 0.0
    return float(x.mean()), float(se)


def average_grad_norm(frame: pd.DataFrame, steps) -> tuple[float, float]:
    """E‖∇f(W̃)‖² for W̃ uniform over ``steps``: the per-seed average, then mean ± SE over seeds."""
    return _mean_se(_per_seed(frame, "grad_norm_sq", steps).mean(axis=1))


def min_grad_norm(frame: pd.DataFrame, steps) -> tuple[float, float]:
    """min_t E‖∇f(W^t)‖² over ``steps`` (SE of the mean at the minimising step)."""
    values = _per_seed(frame, "grad_norm_sq", steps)
    best = int(values.mean(axis=0).argmin())
    return _mean_se(values[:, best])


def gap_at(frame: pd.DataFrame, step: int) -> tuple[float, float]:
    """E[f(W^T)] − f* at ``step``: mean ± SE over seeds."""
    return _mean_se(_per_seed(frame, "gap", [step])[:, 0])


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


def scenario_result(key: str, fast: bool) -> Result:
    """The check of theorem ``key``: its scenario's run (:mod:`lorakit.theory.scenarios`, the one
    definition of each check's problem, method, γ, T, seeds, constants and measurement)."""
    from .scenarios import get_scenario  # late: scenarios imports this module's helpers

    return get_scenario(key).result(fast)


# --------------------------------------------------------------------------------------------
# RAC-LoRA (spec rac_lora.md §4–5); the runs are defined in lorakit.theory.scenarios
# --------------------------------------------------------------------------------------------
@register_theorem_check("rac_lora.theorem_5.3")
def _rac_5_3(fast: bool) -> Result:
    """Smooth non-convex Σφ(W − C), φ(x) = x²/(1+x²): L = 2, f* = 0 (spec §5 item 6)."""
    return scenario_result("rac_lora.theorem_5.3", fast)


@register_theorem_check("rac_lora.theorem_5.5")
def _rac_5_5(fast: bool) -> Result:
    """Tight case: ½‖W − W*‖² at γ = 1/L, E f(W^T) = (1 − r/m)^T Δ^0 exactly (spec §5 item 4)."""
    return scenario_result("rac_lora.theorem_5.5", fast)


@register_theorem_check("rac_lora.theorem_e.2")
def _rac_e2(fast: bool) -> Result:
    """Additive noise of variance σ²: (A_1, B_1, C_1) = (0, 1, σ²) (spec §5 item 9)."""
    return scenario_result("rac_lora.theorem_e.2", fast)


@register_theorem_check("rac_lora.theorem_e.3")
def _rac_e3(fast: bool) -> Result:
    """After many steps the noise floor γLσ²/(2μ) remains: the printed bound (no floor) fails."""
    return scenario_result("rac_lora.theorem_e.3", fast)


@register_theorem_check("rac_lora.theorem_d.2")
def _rac_d2(fast: bool) -> Result:
    """One reshuffled epoch per link (Corollary D.2.1 is σ² = 0)."""
    return scenario_result("rac_lora.theorem_d.2", fast)


@register_theorem_check("rac_lora.theorem_d.3")
def _rac_d3(fast: bool) -> Result:
    """μ = L = 1/4 makes the missing 1/μ a factor of 4 in the neighbourhood."""
    return scenario_result("rac_lora.theorem_d.3", fast)


from . import checks_bernoulli  # noqa: E402, F401


# --------------------------------------------------------------------------------------------
# The algebraic facts the proofs rely on, proved symbolically (lorakit.theory.identities)
# --------------------------------------------------------------------------------------------
def _register_identity(name: str, statement: str, source: str, prove) -> None:
    def check(fast: bool) -> Result:
        return Result(0.0 if prove() else 1.0, 0.0, "==", f"sympy proof; {source}")

    register(f"identity.{name}", source.split(" ")[0], statement)(check)


for _name, (_statement, _source, _prove) in IDENTITIES.items():
    _register_identity(_name, _statement, _source, _prove)
from . import checks_federated  # noqa: E402, F401

# isort: split
from . import checks_decentralized  # noqa: E402, F401

# isort: split
from . import checks_async  # noqa: E402, F401
