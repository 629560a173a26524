"""Exercises of notebook 03 (registered on import; see :mod:`lorakit.exercises`).

Every reference is computed by lorakit when :func:`~lorakit.exercises.check` runs: the exact
expected projectors by enumeration (:func:`lorakit.theory.exact_expected_projector`), λ^p
(:func:`lorakit.theory.lambda_p`), the registered forms of RAC-LoRA Theorem E.3 evaluated at its
check's constants, and the check's own run (:func:`lorakit.theory.scenarios.curve`).
"""

from __future__ import annotations

import sympy as sp

from .registry import exercise

#: (d, r) pairs at which a formula for E[H] of uniform coordinate sampling is tested.
COORDINATE_SIZES = ((5, 2), (6, 3), (7, 1), (8, 4))
LAMBDA_P = {"p": sp.Rational(1, 4), "r": 2, "m": 16, "n": 24}
NONUNIFORM = {"d": 8, "r": 2}
E3 = "rac_lora.theorem_e.3"


def _coordinate_reference() -> dict:
    """E[H]_{00} of uniform coordinate sampling by enumerating all C(d, r) subsets."""
    from ..theory import exact_expected_projector

    return {
        (d, r): exact_expected_projector("coordinate", d, r, method="enumerate")[0, 0]
        for d, r in COORDINATE_SIZES
    }


def _formula_matches(answer, reference: dict) -> bool:
    """The answer, a formula in d and r, equals E[H]_{ii} at every tested (d, r)."""
    expr = sp.sympify(answer)
    names = {s.name for s in expr.free_symbols}
    if not names <= {"d", "r"}:
        raise ValueError(f"the formula may use only d and r, got {sorted(names)}")
    for (d, r), value in reference.items():
        subs = {s: {"d": d, "r": r}[s.name] for s in expr.free_symbols}
        if sp.simplify(expr.subs(subs) - value) != 0:
            return False
    return True


exercise(
    "03.1",
    "E[H] of uniform coordinate sampling, as a formula in d and r",
    "compute",
    reference=_coordinate_reference,
    accept=_formula_matches,
    hint="H = diag(1_S): E[H]_ii is the probability that coordinate i is in S. Count the "
    "r-subsets of the d coordinates that contain i, and divide by the number of all r-subsets.",
)


def _lambda_p_min():
    from ..theory import lambda_p

    c = LAMBDA_P
    return lambda_p(c["p"], c["r"], c["m"], c["n"]).min


exercise(
    "03.2",
    "λᵖ_min for Gaussian sketches with p = 1/4, r = 2, m = 16, n = 24",
    "compute",
    reference=_lambda_p_min,
    compare="symbolic",
    hint="p is the probability of a LEFT sketch B_S (m×r), whose E[H_B] is m×m; E[H_A] is n×n. "
    "Weight each side's r/d by its probability.",
)


def _nonuniform_lambda_min():
    from ..theory import exact_expected_projector
    from ..widgets import nonuniform_marginals

    d, r = NONUNIFORM["d"], NONUNIFORM["r"]
    exact = exact_expected_projector(
        "nonuniform_coordinate", d, r, marginals=nonuniform_marginals(d, r)
    )
    assert exact.is_diagonal()  # E[H] = diag(π): its eigenvalues are the diagonal
    return min(exact.diagonal())


exercise(
    "03.3",
    "λ_min(E[H]) of the app's non-uniform coordinate sketch for d = 8, r = 2",
    "compute",
    reference=_nonuniform_lambda_min,
    compare="symbolic",
    hint="E[H] = diag(π), so λ_min is the smallest marginal. Read the ramp in "
    "lorakit.widgets.nonuniform_marginals' docstring: which s applies for d = 8, r = 2?",
)


def _e3_position() -> str:
    """Where the measured E[f(W^T)] − f* ends, at the last T of Theorem E.3's check run."""
    from ..theory.scenarios import curve

    last = curve(E3, 1.0).iloc[-1]
    return "above" if last["measured"] > last["printed"] else "below"


exercise(
    "03.4",
    "Predict, then run: does SGD end above or below Theorem E.3's printed bound?",
    "predict",
    reference=_e3_position,
    compare="exact",
    hint="The printed bound (1 − γμλ_min)^T Δ⁰ goes to 0. Does SGD with a constant step and "
    "gradient noise go to 0 too? Answer 'above' or 'below'.",
)


def _e3_neighbourhood() -> float:
    """lim_{T→∞} of the corrected bound minus the printed one, at the check's constants."""
    from ..theory import get_theorem
    from ..theory.scenarios import get_scenario
    from ..theory.symbols import NAMES

    thm, scenario = get_theorem(E3), get_scenario(E3)
    constants = scenario.constants(scenario.gamma(1.0), 1)
    missing = thm.corrected.bound - thm.printed.bound
    return float(missing.subs({s: constants[NAMES[s]] for s in missing.free_symbols}))


exercise(
    "03.5",
    "What RAC-LoRA Theorem E.3's printed bound leaves out, at its check's constants",
    "erratum",
    reference=_e3_neighbourhood,
    rtol=1e-9,
    hint="Unroll the proof's one-step recursion Δ^{t+1} ≤ (1 − γμλ_min)Δ^t + c: the constant c "
    "adds up to a geometric series. Its sum is the term the printed statement drops.",
)

exercise(
    "03.6",
    "Why randomise the side at all, if every bound prefers p ∈ {0, 1}?",
    "open",
)
