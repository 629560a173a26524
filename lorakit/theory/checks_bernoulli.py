"""Checks of Bernoulli-LoRA's theorems (spec ``bernoulli_lora.md`` §5, §6, §10): one per theorem of
:mod:`lorakit.theory.bernoulli_lora`, registered under the theorem's key.

Each check runs ``bernoulli_lora`` on a problem whose constants are known, inside the corrected
step-size conditions, and puts the measured left-hand side (mean ± SE over seeds) beside the
corrected bound and, where an erratum changes it, the printed one. Where the spec lists an
erratum, the run is designed so the numbers separate the two forms when that is possible:

============================  =======================================================  =========
theorem                       design                                                   separates
============================  =======================================================  =========
15 (PAGE, q·𝒢^0/T typo)       G^0 = ∇f(W^0) + E, W^0 = W* (Δ^0 = 0)                    yes
5 (Fed-QGD, missing L)        L = 10, W^0 = W* (Δ^0 = 0): floor ≈ γL²ωΔ*/M             yes
18 (Fed-QGD, missing Δ*)      the same run; Δ* ≈ 71 ≫ 1                                yes
10 optimal / Polyak (R_0²)    R_0 = 0.1 < 1: the printed R_0²L_0/√(αT) is smaller      yes
14 (MVR PL, factor 2)         the real floor lies below even the printed one           no
22 (EF21 PL, second cap)      the forms differ only in a cap: equal at admissible γ    no
============================  =======================================================  =========

Each run (problem, method, γ, T, seeds, constants, measurement) is defined once, as a
:class:`~lorakit.theory.scenarios.Scenario`; the checks here call it. Runs that two theorems share
(Fed-QGD 5/18, Fed-MARINA 6/20, Fed-EF21 21/22) are cached there, so the pair costs one run.
``fast`` mode uses fewer seeds.
"""

from __future__ import annotations

from dataclasses import replace

from . import bernoulli_lora  # noqa: F401  (registers the theorems)
from .measure import OffsetInit, avg_loss_gap, lam_p, register_theorem_check, weighted_grad_norm
from .registry import Result
from .scenarios import get_scenario, scenario_result
from .theorem import THEOREMS

__all__ = [
    "OffsetInit",
    "avg_loss_gap",
    "lam_p",
    "weighted_grad_norm",
]  # from lorakit.theory.measure


def _thm(key: str):
    return THEOREMS[f"bernoulli_lora.{key}"]


def _check(key: str):
    return register_theorem_check(f"bernoulli_lora.{key}")


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _explain(result: Result, why: str) -> Result:
    """Say in the detail why a run cannot separate the printed and corrected forms."""
    if result.status != "not separable":
        return result
    return replace(result, detail=f"{result.detail}; why: {why}")


def _result(key: str, fast: bool) -> Result:
    return scenario_result(f"bernoulli_lora.{key}", fast)


# --------------------------------------------------------------------------------------------
# GD: Theorems 1 and 9
# --------------------------------------------------------------------------------------------
@_check("theorem_1")
def _thm_1(fast: bool) -> Result:
    """Smooth non-convex Σφ(W − C), φ(x) = x²/(1 + x²): L = 2, f* = 0 (spec §6 item 7)."""
    return _result("theorem_1", fast)


@_check("theorem_9")
def _thm_9(fast: bool) -> Result:
    """Tight case: ½‖W − W*‖² at γ = 1/L gives E f(W^T) = (1 − λ^p)^T Δ^0 exactly (spec §5.2)."""
    return _result("theorem_9", fast)


# --------------------------------------------------------------------------------------------
# SGD: Theorems 2 and 8, additive noise (A_1, B_1, C_1) = (0, 1, σ²)
# --------------------------------------------------------------------------------------------
@_check("theorem_2")
def _thm_2(fast: bool) -> Result:
    """Smooth non-convex 6×8, additive noise σ = 1; A_1 = 0 makes the weights w_t uniform."""
    return _result("theorem_2", fast)


@_check("theorem_8")
def _thm_8(fast: bool) -> Result:
    """Anisotropic quadratic 6×8 (L = 1, μ = 0.5), additive noise σ = 1."""
    return _result("theorem_8", fast)


# --------------------------------------------------------------------------------------------
# MVR: Theorems 13 and 14 (additive noise σ²; G^0 = ∇f(W^0) + ξ, so E𝒢^0 = σ²)
# --------------------------------------------------------------------------------------------
@_check("theorem_13")
def _thm_13(fast: bool) -> Result:
    """Smooth non-convex 6×8, b = 0.2, at the step-size cap."""
    return _result("theorem_13", fast)


@_check("theorem_14")
def _thm_14(fast: bool) -> Result:
    """Not separable: on a quadratic the MVR error e^{t+1} = (1 − b)e^t + bξ is AR(1) with
    variance bσ²/(2 − b), and W follows −e/μ at best, so the floor is at most ≈ bσ²/(2(2 − b)μ):
    half the printed floor, a quarter of the corrected one. The factor-2 slips are in the proof."""
    result = _result("theorem_14", fast)
    return _explain(
        result,
        f"the measured floor is {result.measured / result.printed:.2f} × the printed one; on a "
        "quadratic W tracks −e/μ at best (e the AR(1) MVR error, of variance bσ²/(2 − b)), which "
        "gives ≈ bσ²/(2(2 − b)μ), half the printed floor: the factor-2 slips are in the proof, not "
        "in the dynamics",
    )


# --------------------------------------------------------------------------------------------
# PAGE: Theorems 15 (= 4 corrected) and 16
# --------------------------------------------------------------------------------------------
@_check("theorem_15")
def _thm_15(fast: bool) -> Result:
    """W^0 = W* (Δ^0 = 0) and G^0 = ∇f(W^0) + E: only the 𝒢^0 term is left. The error E drives W
    away from W* until PAGE's first full gradient (≈ 1/q steps), so Σ_t ‖∇f(W^t)‖² is of order
    ‖E‖², far above the printed q‖E‖² and below the corrected ‖E‖²/q."""
    return _result("theorem_15", fast)


@_check("theorem_16")
def _thm_16(fast: bool) -> Result:
    """PAGE on a finite sum: M = 10 heterogeneous quadratics, single-component differences."""
    return _result("theorem_16", fast)


# --------------------------------------------------------------------------------------------
# Fed-QGD: Theorems 5 and 18, one run (shared through the scenarios' run cache).
# Lemma 15: A_1 = Lω/M, B_1 = 1, C_1 = 2LωΔ*/M.
# --------------------------------------------------------------------------------------------
@_check("theorem_5")
def _thm_5(fast: bool) -> Result:
    """Weights w_t ∝ (1 + γ²L²λ_max ω/M)^{−t} (Theorem 17); W^0 = W*, so only the floor is left."""
    return _result("theorem_5", fast)


@_check("theorem_18")
def _thm_18(fast: bool) -> Result:
    """The same run as Theorem 5: E f(W^T) − f* against a floor the printed form lacks Δ* in."""
    return _result("theorem_18", fast)


# --------------------------------------------------------------------------------------------
# Fed-MARINA: Theorems 6 and 20, one run (G_l^0 = ∇f_l(W^0), so 𝒢^0 = 0)
# --------------------------------------------------------------------------------------------
@_check("theorem_6")
def _thm_6(fast: bool) -> Result:
    return _result("theorem_6", fast)


@_check("theorem_20")
def _thm_20(fast: bool) -> Result:
    return _result("theorem_20", fast)


# --------------------------------------------------------------------------------------------
# Fed-EF21: Theorems 21 and 22, one run (G_l^0 = 0, so Ĝ^0 = mean_l ‖∇f_l(W^0)‖²)
# --------------------------------------------------------------------------------------------
@_check("theorem_21")
def _thm_21(fast: bool) -> Result:
    return _result("theorem_21", fast)


@_check("theorem_22")
def _thm_22(fast: bool) -> Result:
    """Not separable: the printed and corrected forms share the bound and differ in a step-size
    cap, and the check must run inside the corrected one. A second run at the printed cap (inside
    the gap between the caps) is reported in the detail: E f(W^T) − f* stays below the printed
    bound there too, because the real EF21 error contracts faster than the proof's Lyapunov bound."""
    result = _result("theorem_22", fast)
    scenario, thm = get_scenario("bernoulli_lora.theorem_22"), _thm("theorem_22")
    T = scenario.T
    constants = scenario.constants(scenario.reference_gamma(), T)
    gamma_gap = thm.step_cap("printed", **constants)
    gap_frame = scenario.frame(gamma_gap, T, scenario.check_seeds(fast))
    mean_gap = gap_frame.groupby("step").gap.mean()
    ratio = max(
        mean_gap[t] / thm.bound("printed", **{**constants, "gamma": gamma_gap, "T": t})
        for t in range(1, T + 1)
    )
    return _explain(
        result,
        "the forms differ only in the second step-size cap, so at any γ the corrected conditions "
        f"admit they give the same bound; a run at the printed cap γ = {_fmt(gamma_gap)} (between "
        f"the caps) stays below the printed bound too: max_t E[f(W^t) − f*]/bound = {ratio:.2f}",
    )


# --------------------------------------------------------------------------------------------
# Non-smooth convex (Algorithm 3): Theorem 10, m = n so α_H = r/n for every p
# --------------------------------------------------------------------------------------------
@_check("theorem_10_constant_step")
def _thm_10_constant(fast: bool) -> Result:
    """Σ|W − W*| from ‖W^0 − W*‖_F = 1 at γ = 0.05."""
    return _result("theorem_10_constant_step", fast)


@_check("theorem_10_optimal_step")
def _thm_10_optimal(fast: bool) -> Result:
    """R0 < 1: the printed R0²L0/√(αT) is below the corrected R0L0/√(αT); the run (at the
    corrected γ*) lands between them, about R0/(2√(αT)) from the approach phase."""
    return _result("theorem_10_optimal_step", fast)


@_check("theorem_10_polyak_step")
def _thm_10_polyak(fast: bool) -> Result:
    """R0 < 1 again; the Polyak step is scale-free, so E f(W̄^T) ∝ R0 while the printed bound ∝ R0²."""
    return _result("theorem_10_polyak_step", fast)
