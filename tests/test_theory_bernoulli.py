"""Bernoulli-LoRA's theorems as data (lorakit.theory.bernoulli_lora) and their checks
(lorakit.theory.checks_bernoulli). Reference numbers: spec ``bernoulli_lora.md`` §5 and §5.9."""

import math

import pytest
import sympy as sp

from lorakit import checks
from lorakit.theory import THEOREMS
from lorakit.theory import bernoulli_lora as bl
from lorakit.theory.symbols import SYMBOLS

KEYS = [t.key for t in bl.BERNOULLI_LORA_THEOREMS]

# Spec §5.9, "Reference caps with L = 1 and λ_max = 1/64".
REF = dict(L=1.0, lam_max=1 / 64, lam_min=1 / 64)


def cap(key: str, which: str = "corrected", index: int = 0, **values) -> float:
    """The right-hand side of the ``index``-th step-size condition γ ≤ … of a theorem."""
    cond = THEOREMS[f"bernoulli_lora.{key}"].form(which).conditions[index]
    assert cond.lhs == SYMBOLS["gamma"] and cond.rel_op == "<="
    subs = {SYMBOLS[k]: v for k, v in {**REF, **values}.items()}
    return float(cond.rhs.subs(subs))


def test_registered_keys_and_check_calls():
    assert KEYS == [
        "bernoulli_lora.theorem_1", "bernoulli_lora.theorem_9", "bernoulli_lora.theorem_2",
        "bernoulli_lora.theorem_8", "bernoulli_lora.theorem_13", "bernoulli_lora.theorem_14",
        "bernoulli_lora.theorem_15", "bernoulli_lora.theorem_16", "bernoulli_lora.theorem_5",
        "bernoulli_lora.theorem_18", "bernoulli_lora.theorem_6", "bernoulli_lora.theorem_20",
        "bernoulli_lora.theorem_21", "bernoulli_lora.theorem_22",
        "bernoulli_lora.theorem_10_constant_step", "bernoulli_lora.theorem_10_optimal_step",
        "bernoulli_lora.theorem_10_polyak_step",
    ]  # fmt: skip
    for key in KEYS:
        thm = THEOREMS[key]
        assert thm.check == f"lorakit.checks.verify(names=['{key}'])"
        assert key in checks.CHECKS  # one check per theorem
        assert (thm.corrected is None) == (thm.erratum is None)


# -- spec §5.9: step-size caps -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("q", "nc", "pl"), [(0.01, 0.44569, 0.28674), (0.1, 0.72727, 0.57143), (0.5, 0.88889, 0.8)]
)
def test_page_caps(q, nc, pl):  # spec §5.9 table, PAGE rows
    assert cap("theorem_15", q=q) == pytest.approx(nc, abs=5e-6)
    assert cap("theorem_15", "printed", q=q) == cap("theorem_15", q=q)  # the typo is elsewhere
    assert cap("theorem_16", q=q) == pytest.approx(pl, abs=5e-6)


def test_marina_caps():  # spec §5.9 table, MARINA ω = 9, M = 10, q = 0.1
    assert cap("theorem_6", omega=9, M=10, q=0.1) == pytest.approx(0.73760, abs=5e-6)
    assert cap("theorem_20", omega=9, M=10, q=0.1) == pytest.approx(0.66528, abs=5e-6)


@pytest.mark.parametrize(("beta", "nc", "pl"), [(0.1, 0.30204, 0.23430), (0.5, 0.76818, 0.70088)])
def test_ef21_caps(beta, nc, pl):  # spec §5.9 table, EF21 rows
    assert cap("theorem_21", beta=beta) == pytest.approx(nc, abs=5e-6)
    for which in ("printed", "corrected"):  # the first PL cap is right in both forms
        assert cap("theorem_22", which, beta=beta) == pytest.approx(pl, abs=5e-6)


def test_ef21_second_pl_cap():  # spec §5.8 Theorem 22: β = 0.1 needs γμλ ≤ 0.0257, printed 0.974
    thm = THEOREMS["bernoulli_lora.theorem_22"]
    values = dict(mu=1.0, lam_min=1.0)
    assert cap("theorem_22", "corrected", 1, beta=0.1, **values) == pytest.approx(0.0257, abs=5e-5)
    assert cap("theorem_22", "printed", 1, beta=0.1, **values) == pytest.approx(0.974, abs=5e-4)
    v = dict(gamma=0.01, L=1.0, mu=1, lam_min=0.5, lam_max=0.5, T=7, beta=0.1, Delta0=1.0, G0=2.0)
    assert thm.bound("printed", **v) == thm.bound("corrected", **v)


def test_mvr_caps():  # spec §5.9 table (MVR, b = 0.1) and §5.4 (b = 0.01)
    assert cap("theorem_13", b=0.1) == pytest.approx(0.66528, abs=5e-6)  # stated NC cap
    assert cap("theorem_14", "printed", b=0.1) == pytest.approx(0.73260, abs=5e-6)
    assert cap("theorem_14", "corrected", b=0.1) == pytest.approx(0.65955, abs=5e-6)
    assert cap("theorem_14", "printed", b=0.01) == pytest.approx(0.4463, abs=5e-5)
    assert cap("theorem_14", "corrected", b=0.01) == pytest.approx(0.3630, abs=5e-5)
    # The NC proof needs the 0.73260 cap, so the stated 0.66528 is conservative (spec §5.4).
    assert cap("theorem_13", b=0.1) < cap("theorem_14", "printed", b=0.1)


def test_step_cap_takes_the_minimum():
    thm = THEOREMS["bernoulli_lora.theorem_16"]
    # q/(2μλ_min) = 0.1/(2·10·0.5) = 0.01 binds below the 0.57143 of the first cap.
    assert thm.step_cap(L=1, lam_max=1 / 64, lam_min=0.5, mu=10, q=0.1) == pytest.approx(0.01)
    # A_1 = 0 lifts SGD's first cap (1/√(L A_1 λ_max T) is infinite).
    sgd = THEOREMS["bernoulli_lora.theorem_2"]
    assert sgd.step_cap(L=2, A1=0, B1=1, lam_max=0.3, lam_min=0.3, T=100) == pytest.approx(0.5)


# -- spec §5: bounds, errata -------------------------------------------------------------------
def test_theorem_10_optimal_step():  # spec §5.2 [checked]: both terms of (70) equal at γ*
    R0, L0, a, T = 0.7, 3.0, 0.25, 400
    opt, const = (THEOREMS[f"bernoulli_lora.theorem_10_{s}_step"] for s in ("optimal", "constant"))
    g = opt.step_cap(R0=R0, L0=L0, alpha_H=a, T=T)
    assert g == pytest.approx(R0 / (L0 * math.sqrt(a * T)))
    half = R0 * L0 / (2 * math.sqrt(a * T))
    assert R0**2 / (2 * g * a * T) == pytest.approx(half) == pytest.approx(g * L0**2 / 2)
    values = dict(R0=R0, L0=L0, alpha_H=a, T=T, gamma=g)
    assert const.bound(**values) == pytest.approx(opt.bound("corrected", **values)) == 2 * half
    assert opt.admissible("corrected", **values) and not opt.admissible("printed", **values)
    # Printed: γ* = √((R_0²)²/(TαL_0²)) = R_0²/(L_0√(αT)) and the bound R_0²L_0/√(αT).
    assert opt.step_cap("printed", R0=R0, L0=L0, alpha_H=a, T=T) == pytest.approx(R0 * g)
    with pytest.raises(ValueError, match=r"printed form.*claims nothing"):
        opt.bound("printed", **values)  # γ* (corrected) is not the printed γ*
    printed = opt.bound("printed", outside="evaluate", **values)
    assert printed == pytest.approx(R0 * opt.bound("corrected", **values))
    polyak = THEOREMS["bernoulli_lora.theorem_10_polyak_step"]
    no_step = polyak.select(values)  # the Polyak step has no γ
    assert set(values) - set(no_step) == {"gamma"}
    assert polyak.bound("corrected", **no_step) == pytest.approx(R0 * L0 / math.sqrt(a * T))
    assert polyak.bound("printed", **no_step) == pytest.approx(R0**2 * L0 / math.sqrt(a * T))


def test_theorem_10_symbolic():
    s = SYMBOLS
    const = THEOREMS["bernoulli_lora.theorem_10_constant_step"].printed.bound
    g_star = s["R0"] / (s["L0"] * sp.sqrt(s["alpha_H"] * s["T"]))
    value = sp.simplify(const.subs(s["gamma"], g_star))
    assert sp.simplify(value - s["R0"] * s["L0"] / sp.sqrt(s["alpha_H"] * s["T"])) == 0
    # γ* minimises (70).
    assert sp.simplify(sp.diff(const, s["gamma"]).subs(s["gamma"], g_star)) == 0


def test_errata_change_the_numbers_as_the_spec_says():
    v = dict(gamma=0.02, L=10.0, mu=10.0, T=50, M=10, omega=1.0, lam_min=0.5, lam_max=0.5,
             Delta_star=70.0, Delta0=0.0)  # fmt: skip
    qgd_nc, qgd_pl = THEOREMS["bernoulli_lora.theorem_5"], THEOREMS["bernoulli_lora.theorem_18"]
    # Spec §10 item 8: one L missing; item 9: Δ* missing (Δ^0 = 0 leaves only the floor).
    nc = qgd_nc.select(v)  # the non-convex theorem takes no μ
    assert "mu" in v and "mu" not in nc
    assert qgd_nc.bound("corrected", **nc) == pytest.approx(v["L"] * qgd_nc.bound("printed", **nc))
    assert qgd_nc.bound("corrected", **nc) == pytest.approx(2 * 0.02 * 100 * 70 / 10)
    assert qgd_pl.bound("corrected", **v) == pytest.approx(70 * qgd_pl.bound("printed", **v))
    # Spec §10 item 10: the MVR PL floor doubles (Φ_0 → 0 as T → ∞).
    mvr_pl = THEOREMS["bernoulli_lora.theorem_14"]
    w = dict(gamma=0.01, L=1.0, mu=0.5, T=10**6, lam_min=0.5, lam_max=0.5, b=0.1, sigma2=1.0,
             G0=1.0, Delta0=1.0)  # fmt: skip
    assert mvr_pl.bound("corrected", **w) == pytest.approx(2 * mvr_pl.bound("printed", **w))
    assert mvr_pl.bound("corrected", **w) == pytest.approx(2 * 0.1 / (1.9 * 0.5))
    # Spec §10 item 7: q·𝒢^0/T printed, 𝒢^0/(qT) corrected (Δ^0 = 0).
    page_nc = THEOREMS["bernoulli_lora.theorem_15"]
    u = dict(gamma=0.1, L=1.0, T=20, lam_min=0.5, lam_max=0.5, q=0.2, G0=3.0, Delta0=0.0)
    assert page_nc.bound("printed", **u) == pytest.approx(0.2 * 3 / 20)
    assert page_nc.bound("corrected", **u) == pytest.approx(3 / (0.2 * 20))


def test_theorem_7_follows_from_theorem_21():  # spec §5.8: 1 − √(1−β) ≥ β/2
    for beta in (0.01, 0.1, 0.5, 0.9, 1.0):
        assert 1 / (1 - math.sqrt(1 - beta)) <= 2 / beta + 1e-12
    assert 1 / (1 - math.sqrt(0.9)) == pytest.approx(19.49, abs=5e-3)


def test_weighted_lambda():  # spec §6 item 3: MNIST layer 1, m = 64, n = 784, r = 1, p = 0.99
    from lorakit.theory.checks_bernoulli import lam_p

    assert lam_p(64, 784, 1, 0.99) == pytest.approx(0.0154815, abs=5e-8)
    assert lam_p(8, 8, 2, 0.1) == lam_p(8, 8, 2, 0.9) == 0.25  # m = n: independent of p


# -- the checks (fast mode) --------------------------------------------------------------------
SEPARATED = {
    "bernoulli_lora.theorem_15",  # PAGE q·𝒢^0/T typo
    "bernoulli_lora.theorem_5",  # Fed-QGD missing L
    "bernoulli_lora.theorem_18",  # Fed-QGD missing Δ*
    "bernoulli_lora.theorem_10_optimal_step",  # R_0² for R_0
    "bernoulli_lora.theorem_10_polyak_step",  # R_0² for R_0
}
NOT_SEPARABLE = {"bernoulli_lora.theorem_14", "bernoulli_lora.theorem_22"}


@pytest.fixture(scope="module")
def fast_frame():
    return checks.verify(fast=True, names=KEYS).set_index("check")


def test_every_bernoulli_check_holds_in_fast_mode(fast_frame):
    assert sorted(fast_frame.index) == sorted(KEYS)
    bad = fast_frame[fast_frame.status == "violated"]
    assert bad.empty, bad.to_dict("index")


def test_separable_errata_are_separated(fast_frame):
    status = fast_frame.status
    for key in SEPARATED:
        assert status[key] == "printed form violated but corrected holds", key
    for key in NOT_SEPARABLE:
        assert status[key] == "not separable", key
        assert "why:" in fast_frame.detail[key]
    for key in set(KEYS) - SEPARATED - NOT_SEPARABLE:
        assert status[key] == "holds", key


def test_theorem_9_is_attained(fast_frame):
    # ½‖W − W*‖² at γ = 1/L: E f(W^T) = (1 − λ^p)^T Δ^0 exactly (spec §5.2 [checked]).
    row = fast_frame.loc["bernoulli_lora.theorem_9"]
    assert abs(row.measured - row.bound) <= 4 * row.stderr
