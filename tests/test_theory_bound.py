"""Theorem.bound / step_cap / admissible refuse what a theorem does not claim (issue 11 §3).

One rule for every registered theorem: a keyword the theorem does not take raises (listing those
it does); a value outside its symbol's domain raises (γ ≤ 0, T < 0, NaN, λ_min > 1, ...); ``bound``
at constants that break a condition of the form raises with the condition and the cap, unless
``outside="evaluate"`` asks for the expression's value anyway.
"""

import math

import pytest
import sympy as sp

from lorakit.theory import THEOREMS
from lorakit.theory.symbols import NAMES, SYMBOLS, UNIT_INTERVAL

KEYS = sorted(THEOREMS)

# Constants inside each theorem's corrected conditions: every symbol 0.5 (T = 100), γ half its
# cap, with these theorem-specific values where another condition needs them.
OVERRIDES = {
    "async_fl.appendix_a_time_formula": {"E_target": 0.5},
    "async_fl.section_3.4_stopping_rule": {"E_target": 0.5},
    "rac_lora.theorem_f.2": {"lam_min": 1.0, "eta_tilde": 0.4},
    "rac_lora.theorem_f.3": {"lam_min": 1.0, "eta_tilde": 0.4},
    "rw_lora.theorem_1": {"epsilon": 0.25},
    "rw_lora.complete_graph_tv_closed_form": {"N": 3.0},
}


def inside(key: str) -> dict:
    thm = THEOREMS[key]
    values = {name: 0.5 for name in thm.symbols}
    if "T" in values:
        values["T"] = 100.0
    values.update(OVERRIDES.get(key, {}))
    if "gamma" in values:
        cap = thm.step_cap(**{k: v for k, v in values.items() if k != "gamma"})
        # γ* of Theorem 10 (optimal step) is a condition γ = cap: take it exactly
        if math.isfinite(cap):
            values["gamma"] = cap if key.endswith("optimal_step") else cap / 2
    return values


def by_hand(expr, values: dict) -> float:
    """The sympy expression at the values, substituted here (not through Theorem)."""
    return float(sp.N(expr.subs({SYMBOLS[k]: sp.nsimplify(v) for k, v in values.items()})))


@pytest.mark.parametrize("key", KEYS)
def test_inside_the_conditions_the_bound_is_its_expression(key):
    thm, values = THEOREMS[key], inside(key)
    assert thm.admissible(**values)
    form = thm.form("corrected")
    value = thm.bound(**values)
    if form.bound is None:
        assert math.isnan(value)
    else:
        assert value == pytest.approx(by_hand(form.bound, values), rel=1e-9)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("method", ["bound", "step_cap", "admissible"])
def test_unknown_keyword_raises_listing_the_valid_names(key, method):
    thm = THEOREMS[key]
    with pytest.raises(ValueError, match="got unknown Gamma") as info:
        getattr(thm, method)(**{**inside(key), "Gamma": 0.1})
    for name in thm.symbols:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "key, name",
    [(key, name) for key in KEYS for name in THEOREMS[key].symbols],
)
def test_values_outside_the_domain_raise_naming_the_argument(key, name):
    thm, values = THEOREMS[key], inside(key)
    symbol = SYMBOLS[name]
    bad = [math.nan, "x"]
    if symbol.is_positive:
        bad += [0.0, -1.0, -5]
    elif symbol.is_nonnegative:
        bad += [-1.0, -math.inf]
    else:
        bad += [-math.inf]
    if name in UNIT_INTERVAL:
        bad += [1.5]
    for value in bad:
        with pytest.raises(ValueError, match=f"^{name} must be") as info:
            thm.bound(outside="evaluate", **{**values, name: value})
        message = str(info.value)
        assert ("> 0" in message or "≥ 0" in message or "(0, 1]" in message or "[0, 1]" in message
                or "real number" in message)  # fmt: skip
        with pytest.raises(ValueError, match=f"^{name} must be"):
            thm.admissible(**{**values, name: value})


def test_the_issue_examples():
    thm = THEOREMS["rac_lora.theorem_5.5"]
    good = dict(gamma=0.25, L=4.0, mu=1.0, lam_min=0.3, T=7, Delta0=2.0)
    assert thm.bound(**good) == pytest.approx(2.0 * (1 - 0.25 * 1.0 * 0.3) ** 7)
    with pytest.raises(ValueError, match=r"gamma <= 1/L fails: 0\.3 > 0\.25"):
        thm.bound(**{**good, "gamma": 0.3})
    with pytest.raises(ValueError, match=r"^gamma must be > 0, got -1"):
        thm.bound(**{**good, "gamma": -1})
    with pytest.raises(ValueError, match=r"^T must be > 0, got -5"):
        thm.bound(**{**good, "T": -5})
    with pytest.raises(ValueError, match="unknown Gamma"):
        thm.bound(**good, Gamma=0.1)
    with pytest.raises(ValueError, match="outside must be one of"):
        thm.bound(outside="ignore", **good)


GAMMA_CAPPED = [k for k in KEYS if "gamma" in THEOREMS[k].symbols and
                math.isfinite(THEOREMS[k].step_cap(**{n: v for n, v in inside(k).items()
                                                      if n != "gamma"}))]  # fmt: skip


@pytest.mark.parametrize("key", GAMMA_CAPPED)
def test_gamma_above_the_cap_is_refused_with_the_cap(key):
    thm, values = THEOREMS[key], inside(key)
    cap = thm.step_cap(**{k: v for k, v in values.items() if k != "gamma"})
    above = {**values, "gamma": 2 * cap}
    assert not thm.admissible(**above)
    with pytest.raises(ValueError, match="claims nothing at these constants") as info:
        thm.bound(**above)
    assert "gamma" in str(info.value) and f"{cap:g}" in str(info.value)
    assert "outside='evaluate'" in str(info.value)
    # asked for explicitly, the expression's value (the theorem claims nothing there)
    form = thm.form("corrected")
    assert thm.bound(outside="evaluate", **above) == pytest.approx(
        by_hand(form.bound, above), rel=1e-9
    )


def _cap_only_names(key: str) -> list[str]:
    """Constants the γ conditions use and the corrected bound does not (e.g. L in γ ≤ 1/L)."""
    form = THEOREMS[key].form("corrected")
    in_caps = {NAMES[s] for c in form.conditions if NAMES.get(c.lhs) == "gamma"
               for s in c.rhs.free_symbols}  # fmt: skip
    return sorted(in_caps - {NAMES[s] for s in form.bound.free_symbols})


CAP_ONLY = [k for k in GAMMA_CAPPED if _cap_only_names(k)]


@pytest.mark.parametrize("key", CAP_ONLY)
def test_a_condition_that_cannot_be_checked_is_named(key):
    thm, values = THEOREMS[key], inside(key)
    name = _cap_only_names(key)[0]
    missing = {k: v for k, v in values.items() if k != name}
    with pytest.raises(ValueError, match=f"needs {name} to check its condition"):
        thm.bound(**missing)
    assert thm.bound(outside="evaluate", **missing) == pytest.approx(
        by_hand(thm.form("corrected").bound, missing), rel=1e-9
    )


def test_every_theorem_is_covered():
    assert len(KEYS) == len(THEOREMS) > 30
    assert len(GAMMA_CAPPED) > 20 and len(CAP_ONLY) > 5
