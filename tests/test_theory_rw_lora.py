"""RW-LoRA theory (spec rw_lora.md §7–9): Theorem 1 as printed and as its proof establishes it,
the mixing-time facts, and their checks."""

import math

import pytest
import sympy as sp

from lorakit import checks
from lorakit.theory import THEOREMS, get_theorem
from lorakit.theory.rw_lora import (
    Gamma,
    bound_33,
    bound_corrected,
    bound_from_32,
    complete_graph_tau,
    eta_max,
)
from lorakit.theory.symbols import SYMBOLS

S = SYMBOLS
KEYS = {
    "rw_lora.theorem_1",
    "rw_lora.levin_peres_bounds",
    "rw_lora.complete_graph_tv_closed_form",
}

# a = 1, b = 2, c = 3, σ² = 0.5, ε = 0.1, L = 1, τ = 3, T = 100, η = 1/40, F_τ = 2, f_inf = 0
VALUES = dict(
    a=1.0,
    b=2.0,
    c=3.0,
    sigma2=0.5,
    epsilon=0.1,
    L=1.0,
    tau=3,
    tau_mix=3,
    T=100,
    gamma=1 / 40,
    F_tau=2.0,
    f_inf=0.0,
)


def test_registered_with_checks():
    assert {k for k, t in THEOREMS.items() if t.paper == "RW-LoRA"} == KEYS
    for key in KEYS:
        assert THEOREMS[key].check == f"lorakit.checks.verify(names=['{key}'])"
        assert key in checks.CHECKS


def test_printed_bound_33_by_hand():
    # a² + b² = 5, a⁴ + b⁴ = 17, c² = 9
    # Γ = 6·5·1·3·9 + 4·9·1·17 + 2·9·5 = 810 + 612 + 90 = 1512
    # (33) = ε²σ² + ηΓ + (8F_τ + 4·5·(0.5 + 9))/(ηT) = 0.005 + 1512/40 + (16 + 190)/2.5
    #      = 0.005 + 37.8 + 82.4 = 120.205
    thm = get_theorem("rw_lora.theorem_1")
    assert float(Gamma.subs({S[k]: v for k, v in VALUES.items()})) == pytest.approx(1512)
    assert thm.bound("printed", **VALUES) == pytest.approx(120.205, rel=1e-12)


def test_corrected_bound_by_hand():
    # telescoped (32): 8(F_τ − f_inf)/(ηT) + 4·5·9.5/η + 8ε²σ² + ηΓ
    #                = 16/2.5 + 190·40 + 0.04 + 37.8 = 6.4 + 7600 + 0.04 + 37.8 = 7644.24
    # corrected (the ½ of averaging (30)–(31) doubles it): 15288.48
    thm = get_theorem("rw_lora.theorem_1")
    subs = {S[k]: v for k, v in VALUES.items()}
    assert float(bound_from_32.subs(subs)) == pytest.approx(7644.24, rel=1e-12)
    assert thm.bound("corrected", **VALUES) == pytest.approx(15288.48, rel=1e-12)
    assert sp.simplify(bound_corrected - 2 * bound_from_32) == 0
    # f_inf enters the corrected form only: f_inf = 1 lowers it by 2·8·1/2.5 = 6.4
    assert thm.bound("corrected", **{**VALUES, "f_inf": 1.0}) == pytest.approx(15282.08)
    assert thm.bound("printed", **{**VALUES, "f_inf": 1.0}) == pytest.approx(120.205)


def test_spec_section_8_algebra():
    """Spec §8: at η = 1/(4L√T), (re-derived) − (33) = [16L(T−1)(a²+b²)(σ²+c²) + 7√T ε²σ²]/√T
    (f_inf = 0), and (33) = ε²σ² + [3/2(a²+b²)c²τ + c²(a⁴+b⁴) + c²(a²+b²)/(2L) + 32LF_τ
    + 16L(a²+b²)(σ²+c²)]/√T (item 6)."""
    a, b, c, s2, eps, L, T, tau, F = (
        S[k] for k in ("a", "b", "c", "sigma2", "epsilon", "L", "T", "tau", "F_tau")
    )
    at_cap = {S["gamma"]: eta_max, S["f_inf"]: 0}
    diff = (bound_from_32 - bound_33).subs(at_cap)
    spec = (
        16 * L * (T - 1) * (a**2 + b**2) * (s2 + c**2) + 7 * sp.sqrt(T) * eps**2 * s2
    ) / sp.sqrt(T)
    assert sp.simplify(diff - spec) == 0
    item6 = eps**2 * s2 + (
        sp.Rational(3, 2) * (a**2 + b**2) * c**2 * tau
        + c**2 * (a**4 + b**4)
        + c**2 * (a**2 + b**2) / (2 * L)
        + 32 * L * F
        + 16 * L * (a**2 + b**2) * (s2 + c**2)
    ) / sp.sqrt(T)
    assert sp.simplify(bound_33.subs(at_cap) - item6) == 0
    # §7.5: T ≥ τ² and η ≤ 1/(4L√T) give η/8 ≤ η/4 − η²Lτ/2, with equality at T = τ², η at the cap
    eta = S["gamma"]
    slack = (eta / 4 - eta**2 * L * tau / 2 - eta / 8).subs(eta, eta_max).subs(T, tau**2)
    assert sp.simplify(slack) == 0


def test_corrected_form_grows_like_sqrt_T_and_printed_decays():
    thm = get_theorem("rw_lora.theorem_1")

    def at(T, which):
        v = {**VALUES, "T": T, "gamma": 1 / (4 * math.sqrt(T))}
        assert thm.admissible(which, **v)
        return thm.bound(which, **v)

    T = 10_000
    # 8(a²+b²)(σ²+c²)/η = 8·5·9.5·4√T = 1520√T: 152 000 at T = 10⁴, 304 000 at 4·10⁴
    assert at(T, "corrected") == pytest.approx(
        2 * (8 * 2 * 4 / math.sqrt(T) + 190 * 4 * math.sqrt(T) + 0.04 + 1512 / (4 * math.sqrt(T)))
    )
    assert at(4 * T, "corrected") / at(T, "corrected") == pytest.approx(2.0, rel=1e-3)
    assert at(4 * T, "corrected") - at(T, "corrected") == pytest.approx(
        1520 * (200 - 100), rel=1e-3
    )
    # the printed (33) decays like 1/√T towards its floor ε²σ² = 0.005
    assert at(4 * T, "printed") < at(T, "printed")
    assert (at(4 * T, "printed") - 0.005) / (at(T, "printed") - 0.005) == pytest.approx(0.5)


def test_step_conditions():
    thm = get_theorem("rw_lora.theorem_1")
    assert thm.step_cap(**VALUES) == pytest.approx(1 / 40)  # 1/(4·1·√100)
    assert thm.admissible(**VALUES)
    assert not thm.admissible(**{**VALUES, "gamma": 0.03})  # above the cap
    assert not thm.admissible(**{**VALUES, "tau": 11, "tau_mix": 11})  # T = 100 < τ² = 121
    assert not thm.admissible(**{**VALUES, "epsilon": 0.5})
    # a periodic walk (τ_mix = ∞): no finite τ qualifies, the theorem is vacuous
    assert not thm.admissible(**{**VALUES, "tau": 10**6, "T": 10**12, "tau_mix": math.inf})


def test_mixing_facts():
    lp = get_theorem("rw_lora.levin_peres_bounds")
    # lazy 10-ring: t_rel = 10.472, τ_mix(π_min ε) ≤ ⌈t_rel ln(1/(π_min² ε))⌉ = ⌈57.8⌉ at ε = 0.4
    t_rel = 1 / (1 - (1 + math.cos(2 * math.pi / 10)) / 2)
    assert t_rel == pytest.approx(10.472, abs=1e-3)
    assert lp.bound(t_rel=t_rel, epsilon=0.04, pi_min=0.1) == 58
    kn = get_theorem("rw_lora.complete_graph_tv_closed_form")
    assert [kn.bound(N=10, t=t) for t in (1, 2, 3)] == pytest.approx([0.1, 0.9 / 81, 0.9 / 729])
    assert kn.bound(N=2, t=5) == pytest.approx(0.5)  # K_2 is periodic
    taus = [
        int(complete_graph_tau.subs({S["N"]: 10, S["epsilon"]: e}))
        for e in (0.4, 0.25, 0.1, 0.05, 0.01)
    ]
    assert taus == [2, 2, 3, 3, 4]  # spec §9.1


# -- the checks ---------------------------------------------------------------------------------
NEW_CHECKS = sorted(k for k in checks.CHECKS if k.startswith("rw_lora."))


@pytest.fixture(scope="module")
def table():
    return checks.verify(fast=True, names=NEW_CHECKS).set_index("check")


def test_every_new_check_holds_in_fast_mode(table):
    assert set(NEW_CHECKS) == KEYS | {
        "rw_lora.theorem_1_complete",
        "rw_lora.ring_periodic",
        "rw_lora.lazy_ring_mixing",
    }
    for name, row in table.iterrows():
        assert row.status != "violated", (name, row.to_dict())
    # Their time is a benchmark (tests/benchmarks/bench_theory.py), not a unit-test assertion.


def test_periodic_ring_makes_theorem_1_vacuous(table):
    row = table.loc["rw_lora.ring_periodic"]
    assert math.isinf(row.measured) and row.status == "holds"
    assert "periodic" in row.detail and "bipartite" in row.detail
    assert "holds for no finite τ" in row.detail
    assert table.loc["rw_lora.lazy_ring_mixing", "measured"] == 0.0  # τ = 28, 33, 42, 49, 65


def test_theorem_1_runs(table):
    from lorakit.theory.checks_decentralized import theorem_1_run

    thm = get_theorem("rw_lora.theorem_1")
    for key, kind, tau in (
        ("rw_lora.theorem_1", "ring", 42),
        ("rw_lora.theorem_1_complete", "complete", 3),
    ):
        row = table.loc[key]
        # the printed (33) holds too: the run cannot separate the forms (spec §8 is a proof gap)
        assert row.status == "not separable"
        assert row.measured <= row.printed_bound <= row.bound
        run = theorem_1_run(kind, True)
        c = run.constants
        assert (c["tau"], c["T"]) == (tau, 1764) and c["gamma"] == pytest.approx(1 / 168)
        assert thm.admissible("printed", **c) and thm.admissible("corrected", **c)
        assert row.bound == pytest.approx(thm.bound("corrected", **c))
        # with the run's constants, quadrupling T (η = 1/(4L√T)) doubles the corrected bound's
        # dominant 32L√T(a²+b²)(σ²+c²) term, while the printed bound shrinks
        c4 = {**c, "T": 4 * c["T"], "gamma": c["gamma"] / 2}
        assert thm.bound("corrected", **c4) / thm.bound("corrected", **c) == pytest.approx(
            2, rel=0.01
        )
        assert thm.bound("printed", **c4) < thm.bound("printed", **c)
    # a faster-mixing walk: K_10's average squared factor gradient is below the lazy ring's
    assert (
        table.loc["rw_lora.theorem_1_complete", "measured"]
        < table.loc["rw_lora.theorem_1", "measured"]
    )


def test_mixing_checks(table):
    kn = table.loc["rw_lora.complete_graph_tv_closed_form"]
    assert kn.measured <= 1e-6 and "proved" in kn.detail and "equals" in kn.detail
    lp = table.loc["rw_lora.levin_peres_bounds"]
    assert 0 < lp.measured <= 1.0 and "agrees" in lp.detail
