"""RAC-LoRA theorems as data (spec rac_lora.md §4–5) and their checks."""

import math

import pytest

from lorakit import checks
from lorakit.theory import THEOREMS, get_theorem


def test_every_theorem_has_its_parts():
    for key, t in THEOREMS.items():
        assert key == t.key and t.paper and t.number and t.lhs and t.assumptions
        assert t.printed.latex
        if t.corrected is not None:
            assert t.erratum, f"{key} has a corrected form but no erratum line"


def test_gd_bounds_match_the_closed_forms():
    t53, t55 = get_theorem("rac_lora.theorem_5.3"), get_theorem("rac_lora.theorem_5.5")
    # Spec §4.1: at γ = 1/L with an isotropic left sketch the bound is 2 L m Δ0 / (r T).
    L, m, r, T, D0 = 2.0, 10, 3, 50, 4.0
    assert t53.bound(gamma=1 / L, L=L, lam_min=r / m, T=T, Delta0=D0) == pytest.approx(
        2 * L * m * D0 / (r * T)
    )
    v55 = dict(gamma=0.5, L=2.0, mu=1.0, lam_min=0.3, T=7, Delta0=2.0)
    assert t55.bound(**v55) == pytest.approx(2 * 0.85**7)
    assert t55.step_cap(L=4.0) == 0.25
    assert t55.admissible(gamma=0.25, L=4.0) and not t55.admissible(gamma=0.3, L=4.0)


def test_rr_denominator_is_three_quarters_r_over_d_for_isotropic_sketches():
    """D = 1 − λ_max E[I − H] − λ_max/4 = (3/4)(r/d) when E[H] = (r/d) I (spec §5 item 8)."""
    t = get_theorem("rac_lora.theorem_d.2")
    lam, L, N, T, D0 = 0.2, 1.0, 5, 10, 1.0
    gamma = 1 / (2 * L * N)
    expected = 2 * D0 / (gamma * N * T * 0.75 * lam)  # σ² = 0 (Corollary D.2.1)
    assert t.bound(gamma=gamma, L=L, N=N, T=T, Delta0=D0, lam_min=lam, lam_max=lam, sigma2=0) == (
        pytest.approx(expected)
    )


def test_d3_erratum_is_the_missing_one_over_mu():
    t = get_theorem("rac_lora.theorem_d.3")
    v = dict(
        gamma=0.05, L=1.0, N=5, mu=0.25, T=10_000, Delta0=1.0, lam_min=0.5, lam_max=0.5, sigma2=2.0
    )
    assert t.bound("corrected", **v) == pytest.approx(t.bound("printed", **v) / 0.25, rel=1e-9)


def test_e2_cap_with_zero_a1_is_only_the_b1_cap():
    t = get_theorem("rac_lora.theorem_e.2")
    v = dict(L=2.0, A1=0.0, B1=1.0, lam_min=0.25, lam_max=0.5, T=10)
    assert t.step_cap(**v) == pytest.approx(0.25)  # 1/(L·B1·λmax/λmin)


def test_f2_printed_denominator_improves_as_rank_shrinks_corrected_does_not():
    """Spec §4.7 (i): λ_max E[I − H] = 1 − λ_min in the printed denominators is nonsensical."""
    t = get_theorem("rac_lora.theorem_f.2")
    v = dict(L=1.0, gamma=1e-3, N=10, eta_tilde=0.01, M=10, C=5, T=100, Delta0=1.0,
             Delta_star=0.1, Delta_m_star=0.1)  # fmt: skip
    printed = [t.bound("printed", lam_min=lam, **v) for lam in (0.1, 0.5, 0.9)]
    corrected = [t.bound("corrected", lam_min=lam, **v) for lam in (0.1, 0.5, 0.9)]
    assert printed[0] < printed[1] < printed[2]
    assert corrected[0] > corrected[1] > corrected[2]
    assert math.isnan(get_theorem("rac_lora.theorem_f.3").bound("printed"))


def test_missing_constants_and_bad_keys_are_named():
    with pytest.raises(ValueError, match="needs values for Delta0"):
        get_theorem("rac_lora.theorem_5.3").bound(gamma=1.0, lam_min=0.5, T=3)
    with pytest.raises(ValueError, match="key must be one of"):
        get_theorem("rac_lora.theorem_9.9")


@pytest.mark.parametrize("key", [k for k in checks.CHECKS if k.startswith("rac_lora.")])
def test_rac_lora_checks(key):
    row = checks.verify(fast=True, names=[key]).iloc[0]
    assert row.status != "violated", row.to_dict()
    if key == "rac_lora.theorem_5.5":  # tight: the measured gap is the bound within MC error
        assert abs(row.measured / row.bound - 1) < 0.05
    if key == "rac_lora.theorem_e.3":  # the printed form drops the noise floor
        assert row.status == "printed form violated but corrected holds"
