"""Notebook 03's exercises: every reference against an independent route, a plausible wrong
answer refused, and hints that do not give the answer away."""

import math
from fractions import Fraction

import pytest
import sympy as sp

import lorakit.exercises as ex
from lorakit.exercises import nb03
from lorakit.theory.scenarios import get_scenario


def test_notebook_03_has_mixed_kinds():
    keys = [k for k in ex.EXERCISES if k.startswith("03.")]
    assert 4 <= len(keys) <= 6
    kinds = {ex.EXERCISES[k].kind for k in keys}
    assert {"compute", "predict", "erratum", "open"} <= kinds


def test_03_1_coordinate_formula():
    # Independent route: coordinate i lies in C(d−1, r−1) of the C(d, r) subsets.
    ref = ex.EXERCISES["03.1"].reference()
    for (d, r), value in ref.items():
        assert value == sp.Rational(math.comb(d - 1, r - 1), math.comb(d, r))
    assert ex.check("03.1", "r/d")
    d, r = sp.symbols("d r", positive=True)  # the student's own symbols, with assumptions
    assert ex.check("03.1", r / d)
    assert ex.check("03.1", "binomial(d - 1, r - 1) / binomial(d, r)")  # equivalent form passes
    for wrong in ("1/d", "r/d**2", "(r - 1)/(d - 1)", "r/(d + 1)"):
        assert not ex.check("03.1", wrong), wrong
    assert not ex.check("03.1", "m/n")  # a foreign symbol: a readable refusal, not a crash


def test_03_2_lambda_p():
    p, r, m, n = (Fraction(1, 4), 2, 16, 24)
    hand = p * Fraction(r, m) + (1 - p) * Fraction(r, n)  # = 3/32
    assert ex.EXERCISES["03.2"].reference() == sp.Rational(hand.numerator, hand.denominator)
    assert ex.check("03.2", "3/32") and ex.check("03.2", sp.Rational(3, 32))
    swapped = p * Fraction(r, n) + (1 - p) * Fraction(r, m)  # sides confused
    assert not ex.check("03.2", str(swapped))
    assert not ex.check("03.2", "1/12")


def test_03_3_nonuniform_lambda_min():
    # The docstring's ramp: s = min(4/5, d/r − 1) = 4/5, π_0 = (r/d)(1 − s) = 1/20.
    d, r = nb03.NONUNIFORM["d"], nb03.NONUNIFORM["r"]
    s = min(Fraction(4, 5), Fraction(d, r) - 1)
    hand = Fraction(r, d) * (1 - s)
    assert ex.EXERCISES["03.3"].reference() == sp.Rational(hand.numerator, hand.denominator)
    assert ex.check("03.3", "1/20")
    assert not ex.check("03.3", "1/4")  # r/d: the isotropic value


def test_03_4_measured_ends_above_the_printed_bound():
    # Independent route: the registered check of Theorem E.3 (its own run) says the printed
    # form is violated, i.e. the measured gap sits above the printed bound.
    import lorakit.checks

    table = lorakit.checks.verify(fast=True, names=[nb03.E3])
    assert "printed form violated" in table["status"].iloc[0]
    assert ex.EXERCISES["03.4"].reference() == "above"
    assert ex.check("03.4", "above") and ex.check("03.4", " Above ")
    assert not ex.check("03.4", "below")


def test_03_5_missing_neighbourhood():
    sc = get_scenario(nb03.E3)
    c = sc.constants(sc.gamma(1.0), 1)
    hand = c["gamma"] * c["L"] * c["lam_max"] * c["C1"] / (2 * c["mu"] * c["lam_min"])
    assert ex.EXERCISES["03.5"].reference() == pytest.approx(hand, rel=1e-12)
    assert ex.check("03.5", hand)
    assert not ex.check("03.5", hand * c["mu"] * 2)  # without the 1/(2μ)
    assert not ex.check("03.5", 0.0)  # the printed form's limit


def test_hints_do_not_give_the_answers():
    forbidden = {"03.1": ["r/d", "r / d"], "03.2": ["3/32"], "03.3": ["1/20", "0.05"]}
    forbidden["03.4"] = []  # the hint names both choices; it must not say which
    forbidden["03.5"] = ["0.25", "γLλ_max", "C_1/(2"]
    for key, words in forbidden.items():
        hint = ex.EXERCISES[key].hint
        assert hint and not any(w in hint for w in words), key
    assert "'above' or 'below'" in ex.EXERCISES["03.4"].hint


def test_open_question():
    result = ex.check("03.6", None)
    assert result.correct is None and "discussion" in result.message
