"""FSLoRA theory (spec fslora.md §5, §6, §10, §12): sketch moments by enumeration, the theorems as
sympy objects, and their checks."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
import torch

from lorakit import checks
from lorakit.problems import heterogeneous_quadratics
from lorakit.theory import THEOREMS, get_theorem
from lorakit.theory import sketch_moments as sm
from lorakit.theory.fslora import bound_6, corollary_step
from lorakit.theory.symbols import SYMBOLS

S = SYMBOLS


# -- sketch moments (spec §6 items 1–3) ---------------------------------------------------------
@pytest.mark.parametrize("r, k", [(8, 3), (5, 5), (1, 1), (6, 1), (4, 2), (7, 6)])
def test_enumerated_moments_equal_the_closed_forms(r, k):
    enumerated, closed = sm.enumerated_moments(r, k), sm.closed_form_moments(r, k)
    assert len(sm.index_sets(r, k)) == math.comb(r, k)
    for key in ("E[S]", "E[SS^T]", "E[ss^T]", "Cov(s)"):
        assert (enumerated[key] - closed[key]).is_zero_matrix, key
    assert enumerated["E[S]"] == sp.eye(r)
    assert enumerated["E[SS^T]"] == sp.Rational(r, k) * sp.eye(r)


def test_spec_values_for_r8_k3():
    """Spec §6 item 1: 56 index sets, diagonal 8/3, off-diagonal r(k−1)/(k(r−1)) = 0.761905."""
    moments = sm.enumerated_moments(8, 3)
    assert moments["E[SS^T]"][0, 0] == sp.Rational(8, 3)
    assert moments["E[ss^T]"][0, 1] == sp.Rational(16, 21)
    assert float(moments["E[ss^T]"][0, 1]) == pytest.approx(0.761905, abs=1e-6)
    ones = sp.ones(8, 8)
    assert moments["Cov(s)"] == sp.Rational(5, 21) * (8 * sp.eye(8) - ones)


def test_lemma_d3_holds_with_equality():
    """Spec §12: X = default_rng(0).standard_normal((5, 8)), k = 3: E‖XS‖² = (8/3)‖X‖² (isclose)."""
    X = np.random.default_rng(0).standard_normal((5, 8))
    assert np.isclose(sm.expected_sketched_norm(X, 3), 8 / 3 * np.linalg.norm(X) ** 2)
    worst = max(np.linalg.norm(X * s.numpy()) ** 2 for s in sm.diagonals(8, 3))
    assert worst <= (8 / 3) ** 2 * np.linalg.norm(X) ** 2  # (8)
    Xi = [[1, -2, 3], [4, 5, -6]]  # exact rational arithmetic
    assert sm.expected_sketched_norm(Xi, 2, exact=True) == Fraction(3, 2) * 91


def test_sketch_variance_closed_form_and_the_spec_value():
    """Spec §6 item 3 / §12: 358.8444 "both ways" — the draw that reproduces it is the spec's
    rng = np.random.default_rng(0); X = rng.standard_normal((5, 8)); then B (6×8), A (8×4)."""
    rng = np.random.default_rng(0)
    rng.standard_normal((5, 8))
    B, A = rng.standard_normal((6, 8)), rng.standard_normal((8, 4))
    closed, enumerated = sm.sketch_variance(B, A, 3), sm.sketch_variance_enumerated(B, A, 3)
    assert closed == pytest.approx(enumerated, rel=1e-13)
    assert closed == pytest.approx(358.8444, abs=5e-5)
    for r, k in [(8, 1), (8, 8), (5, 2), (1, 1)]:
        b, a = B[:, :r], A[:r]
        assert sm.sketch_variance(b, a, k) == pytest.approx(
            sm.sketch_variance_enumerated(b, a, k), rel=1e-12, abs=1e-12
        )
    assert sm.sketch_variance(B, A, 8) == 0.0


def test_implicit_regulariser_is_half_the_sketch_variance():
    """For ℓ = ½‖W0 + BA − W*‖²: f^S − f = ½·E‖BSA − BA‖² (spec §2.5)."""
    gen = torch.Generator().manual_seed(2)
    B, A = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in ((5, 6), (6, 3)))
    W0, Wstar = (torch.randn(5, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    s = sm.diagonals(6, 2)
    fS = (0.5 * (W0 + (B * s[:, None, :]) @ A - Wstar).square().sum((-2, -1))).mean()
    f = 0.5 * (W0 + B @ A - Wstar).square().sum()
    assert float(fS - f) == pytest.approx(sm.implicit_regulariser(B, A, 2), rel=1e-12)


# -- the sketched objective and the factorised Hessian ------------------------------------------
def _small():
    problem = heterogeneous_quadratics(3, 3, 4, L=2.0, mu=0.5, curvature="heterogeneous", seed=1)
    gen = torch.Generator().manual_seed(0)
    B = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    A = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    W0 = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    return problem, W0, B, A


def test_sketched_gradients_match_autograd():
    problem, W0, B, A = _small()
    ks, s = [1, 2, 2], 0.7

    def f_S(B, A):
        total = 0.0
        for client, k in zip(problem.clients, ks, strict=True):
            sets = list(itertools.combinations(range(2), k))
            for I in sets:
                sv = torch.zeros(2, dtype=torch.float64)
                sv[list(I)] = 2 / k
                total = total + client.loss(W0 + s * (B * sv) @ A) / len(sets)
        return total / len(ks)

    Bg, Ag = B.clone().requires_grad_(True), A.clone().requires_grad_(True)
    value = f_S(Bg, Ag)
    gB, gA = torch.autograd.grad(value, (Bg, Ag))
    value = value.detach()
    out = sm.sketched_gradients(problem, W0, B, A, ks, s)
    assert float(out.loss) == pytest.approx(float(value), rel=1e-13)
    torch.testing.assert_close(out.grad, torch.cat([gB.flatten(), gA.flatten()]))
    batched = sm.sketched_gradients(
        problem, W0, torch.stack([B, 2 * B]), torch.stack([A, A]), ks, s
    )
    torch.testing.assert_close(batched.grad[0], out.grad)
    assert batched.sketch_var.shape == batched.heterogeneity.shape == (2, 3)
    assert float(out.sketch_var[0]) > 0 and float(out.sketch_var[2]) == 0  # k = 1 noisy, k = r not


def test_factor_hessian_matches_autograd_and_the_bound_dominates():
    problem, W0, B, A = _small()
    client, s = problem.clients[0], 0.7

    def g(x):
        Bx, Ax = x[:6].reshape(3, 2), x[6:].reshape(2, 4)
        return client.loss(W0 + s * Bx @ Ax)

    x = torch.cat([B.flatten(), A.flatten()])
    expected = torch.autograd.functional.hessian(g, x)
    got = sm.factor_hessian(client.curvature, W0 + s * B @ A - client.W_star, B, A, s)
    torch.testing.assert_close(got, expected)
    exact = sm.quadratic_smoothness(problem, W0, B, A, [1, 2, 2], s, exact=True)
    bound = sm.quadratic_smoothness(problem, W0, B, A, [1, 2, 2], s)
    assert exact <= bound <= 3 * exact


# -- the theorems as sympy objects (spec §10 item 14, §12) --------------------------------------
def test_registered_with_cards_and_checks():
    keys = {k for k, t in THEOREMS.items() if t.paper == "FSLoRA"}
    assert keys == {
        "fslora.lemma_d.3",
        "fslora.proposition_d.4",
        "fslora.theorem_4.4",
        "fslora.corollary_4.5",
    }
    for key in keys:
        assert THEOREMS[key].check == f"lorakit.checks.verify(names=['{key}'])"
        assert key in checks.CHECKS


def test_corollary_substitution_reproduces_the_spec_bracket():
    g, F0, sg, ss, sh = S["gamma"], S["F0"], S["sigma_g2"], S["sigma_s2"], S["sigma_h2"]
    L, N, T, H, r1, r2 = S["L"], S["N"], S["T"], S["H"], S["rho1"], S["rho2"]
    scale = sp.sqrt(r2 * L / (T * H * N))
    bracket = sp.expand(sp.simplify(bound_6.subs(g, corollary_step) / scale))
    assert (
        sp.simplify(bracket - (4 * F0 + 12 * sg + 12 * ss + 36 * sh + 6 * r1 * (sg + ss) / r2)) == 0
    )
    cor = get_theorem("fslora.corollary_4.5")
    assert sp.simplify(cor.corrected.bound - bound_6.subs(g, corollary_step)) == 0
    assert cor.printed.bound is None and math.isnan(cor.bound("printed"))


def test_t_thresholds_and_step_algebra():
    g, L, N, T, H = S["gamma"], S["L"], S["N"], S["T"], S["H"]
    r2, ch = S["rho2"], S["c_h"]
    cap = 1 / (6 * H * L * sp.sqrt(r2 * (ch + 1)))
    assert sp.solve(sp.Eq(corollary_step, 1 / (N * H**2 * L)), T) == [H**3 * L * N**3 / r2]
    assert sp.solve(sp.Eq(corollary_step, cap), T) == [36 * H * L * N * (ch + 1)]
    thresholds = [c.rhs for c in get_theorem("fslora.corollary_4.5").corrected.conditions]
    assert thresholds == [N**3 * H**3 * L / r2, 36 * N * H * L * (ch + 1)]
    # Proof step (17): γH/2 − 9ρ_2(c_h+1)γ³H³L² = γH/4, and 1 − 9γ²L²H² = ½.
    eq17 = sp.solve(sp.Eq(g * H / 2 - 9 * r2 * (ch + 1) * g**3 * H**3 * L**2, g * H / 4), g)
    assert [sp.simplify(x - cap) for x in eq17] == [0]
    assert sp.solve(sp.Eq(1 - 9 * g**2 * L**2 * H**2, sp.Rational(1, 2)), g) == [
        sp.sqrt(2) / (6 * H * L)
    ]
    t = get_theorem("fslora.theorem_4.4")
    assert sp.simplify(t.corrected.conditions[0].rhs - cap) == 0


@pytest.mark.parametrize("ks", [(1, 2, 4), (2, 2, 2, 2), (8, 8), (1, 8)])
def test_corrected_cap_implies_the_proofs_unstated_caps_and_printed_is_looser(ks):
    """Spec §6 item 6: the corrected cap gives γ ≤ 1/(3HLρ_1) and γ ≤ √2/(6HL); the printed cap
    is √(Hρ_2/ρ_1) times the corrected one (equal only when every k_i = r and H = 1)."""
    r, L = 8, 3.0
    rho1, rho2 = np.mean([r / k for k in ks]), np.mean([(r / k) ** 2 for k in ks])
    t = get_theorem("fslora.theorem_4.4")
    for H in (1, 4):
        v = dict(L=L, H=H, rho1=rho1, rho2=rho2, c_h=0.5)
        # the first condition of each form: the (c_h, ρ) cap; the second, 1/(NH²L), is shared
        corrected, printed = (
            float(t.form(which).conditions[0].rhs.subs({S[k]: x for k, x in v.items()}))
            for which in ("corrected", "printed")
        )
        assert corrected <= 1 / (3 * H * L * rho1) and corrected <= math.sqrt(2) / (6 * H * L)
        assert printed / corrected == pytest.approx(math.sqrt(H * rho2 / rho1))
        assert t.form("printed").conditions[1] == t.form("corrected").conditions[1]


def test_lemma_and_proposition_bounds():
    assert get_theorem("fslora.lemma_d.3").bound(r=8, k=3, X_norm2=3.0) == pytest.approx(8.0)
    assert get_theorem("fslora.proposition_d.4").bound(rho1=2.5, L=2.0) == pytest.approx(5.0)


# -- the checks ---------------------------------------------------------------------------------
NEW_CHECKS = [
    k for k in checks.CHECKS if k.startswith("fslora.") or k.startswith("rac_lora.theorem_f.")
]


@pytest.fixture(scope="module")
def table():
    return checks.verify(fast=True, names=NEW_CHECKS).set_index("check")


def test_every_new_check_holds_in_fast_mode(table):
    assert len(table) == 8
    for name, row in table.iterrows():
        assert row.status != "violated", (name, row.to_dict())


def test_check_outcomes(table):
    assert (
        table.loc["rac_lora.theorem_f.2", "status"] == "printed form violated but corrected holds"
    )
    assert table.loc["rac_lora.theorem_f.3", "printed_bound"] is None or math.isnan(
        table.loc["rac_lora.theorem_f.3", "printed_bound"]
    )
    lemma = table.loc["fslora.lemma_d.3"]
    assert lemma.measured == lemma.bound and lemma.relation == "=="
    assert table.loc["fslora.proposition_d.4", "measured"] == 1.0  # tight
    assert table.loc["fslora.theorem_4.4", "status"] == "not separable"
    assert "printed cap" in table.loc["fslora.theorem_4.4_printed_step", "detail"]
