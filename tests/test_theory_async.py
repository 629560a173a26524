"""Async-FL App. A statements: hand-computed values, the erratum's exact size, and the checks."""

import math

import pytest

from lorakit.checks import CHECKS
from lorakit.theory import THEOREMS
from lorakit.theory import checks as _checks  # noqa: F401  (registers the checks)

BOUND = "async_fl.appendix_a_bound"
TIME = "async_fl.appendix_a_time_formula"
STOP = "async_fl.section_3.4_stopping_rule"

REF = dict(
    L=1.0, mu=0.5, gamma=0.1, rho_bar=1.0, rho_tilde=1.0, tau=2, G2=1.0, sigma2=2.0, m_sel=4,
    Gamma_gap=0.5, A1=1.0, t=10,
)  # fmt: skip
WORKED = dict(L=10.0, mu=0.1, gamma=0.01, rho_bar=1.0, C=0.1, D_gap=0.0, A1=2.0, E_target=0.5)


def test_registered():
    assert {BOUND, TIME, STOP} <= set(THEOREMS)
    assert all(THEOREMS[k].paper == "Async-FL" for k in (BOUND, TIME, STOP))


def test_bound_hand_computed():
    # λ = 1 − 0.1·0.5·(1 + 3/8) = 0.93125; D = 2·0.5·(1 − 1) = 0
    lam = 1 - 0.1 * 0.5 * 1.375
    assert lam == pytest.approx(0.93125)
    # printed C = 32·4·1 + 2 + 6·1·1·0.5 = 133; corrected C = 128 + 2/4 + 3 = 131.5
    # x = 4·1·(0.1·C)/(0.5·11): printed 53.2/5.5, corrected 52.6/5.5
    lt = 0.93125**10
    printed = 2.0 * lt * 1.0 + (53.2 / 5.5) * (1 - lt)
    corrected = 2.0 * lt * 1.0 + (52.6 / 5.5) * (1 - lt)
    th = THEOREMS[BOUND]
    assert th.bound("printed", **REF) == pytest.approx(printed, rel=1e-12)
    assert th.bound("corrected", **REF) == pytest.approx(corrected, rel=1e-12)
    assert printed == pytest.approx(5.909047898, rel=1e-9)


def test_bound_erratum_is_sigma2_over_m_term():
    # printed − corrected = 4Lησ²(1 − 1/m)/(μ(8 + 3ρ̄)) · (1 − λ^t), for several constants
    th = THEOREMS[BOUND]
    for extra in ({}, {"m_sel": 1}, {"m_sel": 10, "t": 37, "sigma2": 3.0, "rho_tilde": 2.0}):
        v = {**REF, **extra}
        lam = 1 - v["gamma"] * v["mu"] * (1 + 3 * v["rho_bar"] / 8)
        term = (
            4 * v["L"] * v["gamma"] * v["sigma2"] * (1 - 1 / v["m_sel"])
            / (v["mu"] * (8 + 3 * v["rho_bar"])) * (1 - lam ** v["t"])
        )  # fmt: skip
        diff = th.bound("printed", **v) - th.bound("corrected", **v)
        assert diff == pytest.approx(term, rel=1e-10, abs=1e-14)
    assert th.admissible(**REF) and not th.admissible(**{**REF, "gamma": 0.25})


def test_time_formula_hand_computed():
    # spec §5.9 row 1: λ = 1 − 0.01·0.1·1.375 = 0.998625, x = 4·10·0.001/(0.1·11) = 0.0363636…
    lam, x = 0.998625, 0.04 / 1.1
    corrected = math.log((0.5 - x) / (200 - x)) / math.log(lam)
    printed = math.log((0.5 - x) / (200 - 1)) / math.log(lam)
    th = THEOREMS[TIME]
    assert th.bound("corrected", **WORKED) == pytest.approx(corrected, rel=1e-12)
    assert th.bound("printed", **WORKED) == pytest.approx(printed, rel=1e-12)
    assert corrected == pytest.approx(4409.1770, abs=1e-4)
    assert printed == pytest.approx(4405.6662, abs=1e-4)
    # the corrected t puts the bound exactly at E; the printed one misses by λ^t(1 − x)·(…)
    lt = lam**corrected
    assert 100 * lt * 2 + x * (1 - lt) == pytest.approx(0.5, rel=1e-10)
    # the erratum: the denominators differ by exactly 1 − x, so t shifts by log_λ of their ratio
    shift = math.log((200 - 1) / (200 - x)) / math.log(lam)
    assert th.bound("corrected", **WORKED) - th.bound("printed", **WORKED) == pytest.approx(shift)
    # at x = 1 the two forms coincide (C chosen so that x = 1: 4·10·0.01·C/1.1 = 1)
    at_one = {**WORKED, "C": 1.1 / 0.4, "E_target": 2.0}
    assert th.bound("printed", **at_one) == pytest.approx(th.bound("corrected", **at_one))


def test_stopping_rule_main_text_lambda():
    # main-text λ = 1 − 2·0.1·1.375 = 0.725 (spec §5.9 item 5)
    x = 0.04 / 1.1
    printed = math.log((0.5 - x) / (200 - x)) / math.log(0.725)
    th = THEOREMS[STOP]
    assert th.bound("printed", N=2, **WORKED) == pytest.approx(printed, rel=1e-12)
    assert th.bound("corrected", N=2, **WORKED) == pytest.approx(4409.1770, abs=1e-4)


@pytest.mark.parametrize("key", [BOUND, TIME, STOP])
def test_checks_not_violated_fast(key):
    result = CHECKS[key].run(True)
    assert result.status != "violated", result.detail


def test_check_statuses():
    assert CHECKS[BOUND].run(True).status == "not separable"
    for key in (TIME, STOP):
        assert CHECKS[key].run(True).status == "printed form violated but corrected holds"
