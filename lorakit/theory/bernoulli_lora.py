"""Bernoulli-LoRA's theorems (spec ``bernoulli_lora.md`` §5, errata §10), printed and corrected.

λ_min and λ_max are the probability-weighted eigenvalues λ^p_min = p·λ_min(E H_B) + (1 − p)·λ_min(E H_A)
and λ^p_max (Assumption 1); with Gaussian sketches both equal p·r/m + (1 − p)·r/n. In Theorem 10,
α_H is Assumption 10's constant E[H] = α_H·I, generalised to α_H = p·α_B + (1 − p)·α_A (spec §4,
[checked]); α_H = r/n for Gaussian sketches with m = n.

Where a theorem appears twice (main text and appendix), the registered number is the statement
whose formula is used, and the other is named in ``notes``:

* Theorem 2 = 11, Theorem 8 = 12, Theorem 5 = 17, Theorem 6 = 19 (identical statements);
* Theorem 13 (MVR) is the sharper appendix form of Theorem 3;
* Theorem 15 (PAGE) prints q·𝒢^0/T, a typo: its corrected form is main-text Theorem 4's 𝒢^0/(qT);
* Theorem 21 (EF21) is the sharper appendix form of Theorem 7, which follows from it;
* Theorem 10 is split into its constant-step bound (70), its optimal-step bound (71) and its
  Polyak-step bound (73).

For EF21, ``G0`` stands for Ĝ^0 = (1/M) Σ_l ‖G_l^0 − ∇f_l(W^0)‖².
"""

from __future__ import annotations

import sympy as sp

from .symbols import (
    A1,
    B1,
    C1,
    G0,
    L0,
    R0,
    Delta0,
    Delta_star,
    L,
    M,
    T,
    alpha_H,
    b,
    beta,
    gamma,
    lam_max,
    lam_min,
    mu,
    omega,
    q,
    sigma2,
)
from .theorem import Form, Theorem, register_theorem

__all__ = ["BERNOULLI_LORA_THEOREMS"]

PAPER = "Bernoulli-LoRA"
_A1, _A2, _A3, _A4, _A5, _A6 = (
    "1 (λ^p_min > 0)", "2 (f bounded below)", "3 (L-smooth)",
    "4 (expected smoothness A_1, B_1, C_1)", "5 (bounded variance σ²)", "6 (PL with μ)",
)  # fmt: skip
_A7, _A8, _A9, _A10, _A11 = (
    "7 (a minimiser W* exists)", "8 (convex)", "9 (L0-Lipschitz)",
    "10 (E[H] = α_H I; generalised to α_H = p α_B + (1 − p) α_A)", "11 (Δ* = f* − mean f_l*)",
)  # fmt: skip
_NC_AVG = "E‖∇f(W̃^T)‖², W̃^T uniform over W^0, …, W^{T−1}"
_PL_GAP = "E[f(W^T)] − f*"
_kappa = lam_max / lam_min
_r_kappa = r"\frac{\lambda^p_{\max}}{\lambda^p_{\min}}"
_s = sp.sqrt(1 - beta)  # EF21: √(1 − β)


def _check(key: str) -> str:
    return f"lorakit.checks.verify(names=['bernoulli_lora.{key}'])"


# --------------------------------------------------------------------------------------------
# GD (spec §5.2)
# --------------------------------------------------------------------------------------------
thm_1 = Theorem(
    PAPER,
    "Theorem 1",
    "GD, non-convex",
    lhs=_NC_AVG,
    assumptions=(_A1, _A2, _A3),
    printed=Form(
        2 * Delta0 / (gamma * lam_min * T),
        (sp.Le(gamma, 1 / L),),
        r"\mathbb E\|\nabla f(\widetilde W^T)\|_F^2\le\frac{2\Delta^0}{\gamma\lambda^p_{\min}T},"
        r"\quad 0<\gamma\le\tfrac1L",
    ),
    notes=("Key step (49): E[f(W^{t+1}) | W^t] ≤ f(W^t) − (γ/2)λ^p_min‖∇f(W^t)‖² for γ ≤ 1/L.",),
    check=_check("theorem_1"),
)

thm_9 = Theorem(
    PAPER,
    "Theorem 9",
    "GD, PL",
    lhs=_PL_GAP,
    assumptions=(_A1, _A2, _A3, _A6),
    printed=Form(
        (1 - gamma * mu * lam_min) ** T * Delta0,
        (sp.Le(gamma, 1 / L),),
        r"\mathbb E[f(W^T)-f^*]\le(1-\gamma\mu\lambda^p_{\min})^T(f(W^0)-f^*),\quad 0<\gamma\le\tfrac1L",
    ),
    notes=("Tight on ½‖W − W*‖² at γ = 1/L with isotropic sketches (spec §5.2, §6 item 6).",),
    check=_check("theorem_9"),
)

# --------------------------------------------------------------------------------------------
# SGD (spec §5.3)
# --------------------------------------------------------------------------------------------
_sgd_caps = (sp.Le(gamma, 1 / sp.sqrt(L * A1 * lam_max * T)),
             sp.Le(gamma, lam_min / (L * B1 * lam_max)))  # fmt: skip
thm_2 = Theorem(
    PAPER,
    "Theorem 2",
    "SGD, non-convex",
    lhs="E‖∇f(W̃^T)‖², W̃^T drawn with weights w_t ∝ (1 + γ²LA_1λ^p_max)^{−t} (uniform if A_1 = 0)",
    assumptions=(_A2, _A3, _A4, "1 (used, not listed)"),
    printed=Form(
        6 * Delta0 / (gamma * lam_min * T) + gamma * L * C1 * _kappa,
        _sgd_caps,
        r"\mathbb E\|\nabla f(\widetilde W^T)\|_F^2\le\frac{6\Delta^0}{\gamma\lambda^p_{\min}T}"
        r"+\gamma LC_1"
        + _r_kappa
        + r",\quad\gamma\le\min\Big\{\frac1{\sqrt{LA_1\lambda^p_{\max}T}},"
        r"\frac1{LB_1}\Big(" + _r_kappa + r"\Big)^{-1}\Big\}",
    ),
    notes=(
        "Theorem 11 in the appendix is the same statement.",
        "The 6 is 2·3 with 3 ≥ e ≥ (1 + γ²LA_1λ^p_max)^T; A_1 = 0 lifts the first cap.",
    ),
    check=_check("theorem_2"),
)

thm_8 = Theorem(
    PAPER,
    "Theorem 8",
    "SGD, PL",
    lhs=_PL_GAP,
    assumptions=(_A2, _A3, _A4, _A6, "1 (used, not listed)"),
    printed=Form(
        (1 - gamma * mu * lam_min / 2) ** T * Delta0 + gamma * L * C1 / mu * _kappa,
        (
            sp.Le(gamma, mu * lam_min / (2 * L * A1 * lam_max)),
            sp.Le(gamma, 2 / (mu * lam_min)),
            sp.Le(gamma, lam_min / (L * B1 * lam_max)),
        ),
        r"\mathbb E[f(W^T)-f^*]\le\Big(1-\frac{\gamma\mu\lambda^p_{\min}}2\Big)^T\Delta^0"
        r"+\frac{\gamma LC_1}{\mu}" + _r_kappa,
    ),
    notes=("Theorem 12 in the appendix is the same statement; Table 1 drops the ½ in the rate.",),
    check=_check("theorem_8"),
)

# --------------------------------------------------------------------------------------------
# MVR (spec §5.4)
# --------------------------------------------------------------------------------------------
thm_13 = Theorem(
    PAPER,
    "Theorem 13",
    "MVR, non-convex",
    lhs=_NC_AVG,
    assumptions=(_A1, _A2, _A3, _A5),
    printed=Form(
        2 * Delta0 / (lam_min * gamma * T)
        + G0 / (b * (2 - b) * T) * _kappa
        + 2 * b * sigma2 / (2 - b) * _kappa,
        (sp.Le(gamma, 1 / (L * (1 + sp.sqrt(2 * lam_max * (1 - b) ** 2 / b)))),),
        r"\mathbb E\|\nabla f(\widetilde W^T)\|_F^2\le\frac{2\Delta^0}{\lambda^p_{\min}\gamma T}"
        r"+\frac{\mathcal G^0}{b(2-b)T}"
        + _r_kappa
        + r"+\frac{2b\sigma^2}{2-b}"
        + _r_kappa
        + r",\quad\gamma\le\frac1{L\big(1+\sqrt{2\lambda^p_{\max}(1-b)^2/b}\big)}",
    ),
    notes=(
        "Main-text Theorem 3 prints the middle term as 𝒢^0/(bT): looser, still valid.",
        "The proof halves the ‖W^{t+1} − W^t‖² coefficient from Lemma 13, so it needs "
        "γ ≤ 1/(L(1 + √(2(1−b)²λ_max/(b(2−b))))); the stated cap is stricter, so the statement "
        "holds as printed (spec §5.4).",
        "𝒢^0 = ‖G^0 − ∇f(W^0)‖²; with G^0 = ∇f_ξ(W^0) its expectation is σ².",
    ),
    check=_check("theorem_13"),
)

_phi0_mvr = Delta0 + gamma * lam_max / (b * (2 - b)) * G0
thm_14 = Theorem(
    PAPER,
    "Theorem 14",
    "MVR, PL",
    lhs=_PL_GAP,
    assumptions=(_A1, _A2, _A3, _A5, _A6),
    printed=Form(
        (1 - gamma * mu * lam_min) ** T * _phi0_mvr + b * sigma2 / ((2 - b) * mu) * _kappa,
        (
            sp.Le(gamma, 1 / (L * (1 + sp.sqrt(2 * (1 - b) ** 2 / (b * (2 - b)) * lam_max)))),
            sp.Le(gamma, b / (2 * mu * lam_min)),
        ),
        r"\mathbb E[f(W^T)-f^*]\le(1-\gamma\mu\lambda^p_{\min})^T\Phi_0+\frac{b\sigma^2}{(2-b)\mu}"
        + _r_kappa
        + r",\ \gamma\le\min\Big\{\frac1{L\big(1+\sqrt{\frac{2(1-b)^2}{b(2-b)}\lambda^p_{\max}}"
        r"\big)},\frac b{2\mu\lambda^p_{\min}}\Big\}",
    ),
    corrected=Form(
        (1 - gamma * mu * lam_min) ** T * _phi0_mvr + 2 * b * sigma2 / ((2 - b) * mu) * _kappa,
        (
            sp.Le(gamma, 1 / (L * (1 + 2 * sp.sqrt((1 - b) ** 2 * lam_max / (b * (2 - b)))))),
            sp.Le(gamma, b / (2 * mu * lam_min)),
        ),
        r"\mathbb E[f(W^T)-f^*]\le(1-\gamma\mu\lambda^p_{\min})^T\Phi_0+\frac{2b\sigma^2}{(2-b)\mu}"
        + _r_kappa
        + r",\ \gamma\le\min\Big\{\frac1{L\big(1+2\sqrt{\frac{(1-b)^2}{b(2-b)}\lambda^p_{\max}}"
        r"\big)},\frac b{2\mu\lambda^p_{\min}}\Big\}",
    ),
    erratum=(
        "the proof takes half of Lemma 13's two terms: with c = γλ_max/(b(2−b)) they contribute "
        "2c(1−b)²L²‖ΔW‖² and 2cb²σ², so the cap needs 2√(…) and the noise floor is 2bσ²/((2−b)μ)·κ"
    ),
    notes=("Φ_0 = Δ^0 + γλ^p_max/(b(2−b))·𝒢^0 (Lyapunov function (115)).",),
    check=_check("theorem_14"),
)

# --------------------------------------------------------------------------------------------
# PAGE (spec §5.5)
# --------------------------------------------------------------------------------------------
_page_cap = sp.Le(gamma, 1 / (L * (1 + sp.sqrt((1 - q) / q * lam_max))))
_page_cap_latex = r",\quad\gamma\le\frac1{L\big(1+\sqrt{\frac{1-q}q\lambda^p_{\max}}\big)}"
thm_15 = Theorem(
    PAPER,
    "Theorem 15",
    "PAGE, non-convex",
    lhs=_NC_AVG,
    assumptions=(_A1, _A2, _A3, "each f_i L-smooth (Lemma 14; used, not stated)"),
    printed=Form(
        2 * Delta0 / (gamma * lam_min * T) + q * G0 / T * _kappa,
        (_page_cap,),
        r"\mathbb E\|\nabla f(\widetilde W^T)\|_F^2\le\frac{2\Delta^0}{\gamma\lambda^p_{\min}T}"
        r"+q\frac{\|G^0-\nabla f(W^0)\|_F^2}{T}" + _r_kappa + _page_cap_latex,
    ),
    corrected=Form(
        2 * Delta0 / (gamma * lam_min * T) + G0 / (q * T) * _kappa,
        (_page_cap,),
        r"\mathbb E\|\nabla f(\widetilde W^T)\|_F^2\le\frac{2\Delta^0}{\gamma\lambda^p_{\min}T}"
        r"+\frac{\mathcal G^0}{qT}" + _r_kappa + _page_cap_latex,
    ),
    erratum=(
        "(119) prints q·𝒢^0/T; the Lyapunov function (120), Φ = f − f* + γλ_max/(2q)·‖G − ∇f‖², "
        "gives 𝒢^0/(qT), as main-text Theorem 4 prints it"
    ),
    notes=(
        "Main-text Theorem 4 is this corrected form, printed correctly: it needs no correction.",
        "The step-size condition is exact: 1 − γL − γ²L²(1−q)λ_max/q ≥ 0.",
        "With G^0 = ∇f(W^0) (lorakit's PAGE default) 𝒢^0 = 0 and the two forms coincide.",
    ),
    check=_check("theorem_15"),
)

thm_16 = Theorem(
    PAPER,
    "Theorem 16",
    "PAGE, PL",
    lhs=_PL_GAP,
    assumptions=(_A1, _A2, _A3, _A6, "each f_i L-smooth (Lemma 14)"),
    printed=Form(
        (1 - gamma * mu * lam_min) ** T * (Delta0 + gamma * lam_max / q * G0),
        (
            sp.Le(gamma, 1 / (L * (1 + 2 * sp.sqrt((1 - q) / q * lam_max)))),
            sp.Le(gamma, q / (2 * mu * lam_min)),
        ),
        r"\mathbb E[f(W^T)-f^*]\le(1-\gamma\mu\lambda^p_{\min})^T\Big(\Delta^0+\frac{\gamma\lambda^p_{\max}}q"
        r"\mathcal G^0\Big),\ \gamma\le\min\Big\{\frac1{L\big(1+2\sqrt{\frac{1-q}q\lambda^p_{\max}}\big)},"
        r"\frac q{2\mu\lambda^p_{\min}}\Big\}",
    ),
    notes=("The proof needs only 1/(L(1 + √(2(1−q)λ_max/q))); the stated cap is stricter.",),
    check=_check("theorem_16"),
)

# --------------------------------------------------------------------------------------------
# Fed-QGD (spec §5.6): Lemma 15 gives A_1 = Lω/M, B_1 = 1, C_1 = 2LωΔ*/M
# --------------------------------------------------------------------------------------------
_qgd_caps = (sp.Le(gamma, 1 / (L * sp.sqrt(omega / M * lam_max * T))),
             sp.Le(gamma, lam_min / (L * lam_max)))  # fmt: skip
_qgd_caps_latex = (
    r",\ \gamma\le\min\Big\{\frac1{L\sqrt{\frac\omega M\lambda^p_{\max}T}},\frac1L\Big("
    + _r_kappa
    + r"\Big)^{-1}\Big\}"
)
thm_5 = Theorem(
    PAPER,
    "Theorem 5",
    "Fed-QGD, non-convex",
    lhs="E‖∇f(W̃^T)‖², W̃^T drawn with weights w_t ∝ (1 + γ²L²λ^p_max ω/M)^{−t}",
    assumptions=(_A1, _A2, _A3, _A11, "each f_l L-smooth (Lemma 15)"),
    printed=Form(
        6 * Delta0 / (gamma * lam_min * T) + 2 * gamma * L * omega * Delta_star / M * _kappa,
        _qgd_caps,
        r"\mathbb E\|\nabla f(\widetilde W^T)\|_F^2\le\frac{6\Delta^0}{\gamma\lambda^p_{\min}T}"
        r"+\frac{2\gamma L\omega\Delta^*}M" + _r_kappa + _qgd_caps_latex,
    ),
    corrected=Form(
        6 * Delta0 / (gamma * lam_min * T) + 2 * gamma * L**2 * omega * Delta_star / M * _kappa,
        _qgd_caps,
        r"\mathbb E\|\nabla f(\widetilde W^T)\|_F^2\le\frac{6\Delta^0}{\gamma\lambda^p_{\min}T}"
        r"+\frac{2\gamma L^2\omega\Delta^*}M" + _r_kappa + _qgd_caps_latex,
    ),
    erratum=(
        "one L is missing: Theorem 2 with Lemma 15's C_1 = 2LωΔ*/M gives γLC_1 = 2γL²ωΔ*/M "
        "(Table 1 inherits the error)"
    ),
    notes=("Theorem 17 in the appendix is the same statement (it omits Assumption 11).",),
    check=_check("theorem_5"),
)

_qgd_pl_caps = (sp.Le(gamma, mu / (2 * L**2 * omega / M) * lam_min / lam_max),
                sp.Le(gamma, 2 / (mu * lam_min)), sp.Le(gamma, lam_min / (L * lam_max)))  # fmt: skip
_qgd_pl_rate = (1 - gamma * mu * lam_min / 2) ** T * Delta0
thm_18 = Theorem(
    PAPER,
    "Theorem 18",
    "Fed-QGD, PL",
    lhs=_PL_GAP,
    assumptions=(_A1, _A2, _A3, _A6, "11 (Δ*; used, not listed)"),
    printed=Form(
        _qgd_pl_rate + 2 * gamma * L**2 / mu * omega / M * _kappa,
        _qgd_pl_caps,
        r"\mathbb E[f(W^T)-f^*]\le\Big(1-\tfrac12\gamma\mu\lambda^p_{\min}\Big)^T\Delta^0"
        r"+\frac{2\gamma L^2}\mu\cdot\frac\omega M" + _r_kappa,
    ),
    corrected=Form(
        _qgd_pl_rate + 2 * gamma * L**2 * omega * Delta_star / (mu * M) * _kappa,
        _qgd_pl_caps,
        r"\mathbb E[f(W^T)-f^*]\le\Big(1-\tfrac12\gamma\mu\lambda^p_{\min}\Big)^T\Delta^0"
        r"+\frac{2\gamma L^2\omega\Delta^*}{\mu M}" + _r_kappa,
    ),
    erratum=(
        "the neighbourhood lacks Δ*: Theorem 12 with Lemma 15's C_1 = 2LωΔ*/M gives "
        "2γL²ωΔ*/(μM)·κ (Table 1 also lacks it)"
    ),
    check=_check("theorem_18"),
)

# --------------------------------------------------------------------------------------------
# Fed-MARINA (spec §5.7)
# --------------------------------------------------------------------------------------------
thm_6 = Theorem(
    PAPER,
    "Theorem 6",
    "Fed-MARINA, non-convex",
    lhs=_NC_AVG,
    assumptions=(_A1, _A2, _A3, "each f_l L-smooth; one shared coin (Lemma 16)"),
    printed=Form(
        2 * Delta0 / (gamma * lam_min * T) + G0 / (q * T) * _kappa,
        (sp.Le(gamma, 1 / (L * (1 + sp.sqrt(lam_max * (1 - q) / q * omega / M)))),),
        r"\mathbb E\|\nabla f(\widetilde W^T)\|_F^2\le\frac{2\Delta^0}{\gamma\lambda^p_{\min}T}"
        r"+\frac{\mathcal G^0}{qT}"
        + _r_kappa
        + r",\quad\gamma\le\frac1{L\big(1+\sqrt{\lambda^p_{\max}\frac{1-q}q\cdot\frac\omega M}\big)}",
    ),
    notes=(
        "Theorem 19 in the appendix is the same statement; the step-size condition is exact.",
        "𝒢^0 = ‖G^0 − ∇f(W^0)‖², 0 with G_l^0 = ∇f_l(W^0) (lorakit's MARINA).",
    ),
    check=_check("theorem_6"),
)

thm_20 = Theorem(
    PAPER,
    "Theorem 20",
    "Fed-MARINA, PL",
    lhs=_PL_GAP,
    assumptions=(_A1, _A2, _A3, _A6, "each f_l L-smooth; one shared coin (Lemma 16)"),
    printed=Form(
        (1 - gamma * mu * lam_min) ** T * (Delta0 + gamma * lam_max / q * G0),
        (
            sp.Le(gamma, 1 / (L * (1 + sp.sqrt(2 * lam_max * (1 - q) / q * omega / M)))),
            sp.Le(gamma, q / (2 * mu * lam_min)),
        ),
        r"\mathbb E[f(W^T)-f^*]\le(1-\gamma\mu\lambda^p_{\min})^T\Phi_0,\ "
        r"\gamma\le\min\Big\{\frac1{L\big(1+\sqrt{2\lambda^p_{\max}\frac{1-q}q\cdot\frac\omega M}\big)},"
        r"\frac q{2\mu\lambda^p_{\min}}\Big\}",
    ),
    notes=(
        "Φ_0 = Δ^0 + γλ^p_max/q·𝒢^0.",
        "The proof cites Lemma 14 where it means Lemma 16.",
    ),
    check=_check("theorem_20"),
)

# --------------------------------------------------------------------------------------------
# Fed-EF21 (spec §5.8); G0 means Ĝ^0 = (1/M) Σ_l ‖G_l^0 − ∇f_l(W^0)‖²
# --------------------------------------------------------------------------------------------
thm_21 = Theorem(
    PAPER,
    "Theorem 21",
    "Fed-EF21, non-convex",
    lhs=_NC_AVG,
    assumptions=(_A1, _A2, _A3, "each f_l L-smooth (Lemma 17)"),
    printed=Form(
        2 * Delta0 / (gamma * lam_min * T) + G0 / ((1 - _s) * T) * _kappa,
        (sp.Le(gamma, 1 / (L * (1 + sp.sqrt(lam_max * (1 - beta)) / (1 - _s)))),),
        r"\mathbb E\|\nabla f(\widetilde W^T)\|_F^2\le\frac{2\Delta^0}{\gamma\lambda^p_{\min}T}"
        r"+\frac{\hat{\mathcal G}^0}{(1-\sqrt{1-\beta})T}"
        + _r_kappa
        + r",\quad\gamma\le\frac1{L\Big(1+\frac{\sqrt{\lambda^p_{\max}(1-\beta)}}{1-\sqrt{1-\beta}}\Big)}",
    ),
    notes=(
        "Main-text Theorem 7 prints 2Ĝ^0/(βT)·κ; it follows, since 1 − √(1−β) ≥ β/2.",
        "(139) writes 𝒢^0 for Ĝ^0; the step-size condition is exact.",
    ),
    check=_check("theorem_21"),
)

_phi0_ef21 = Delta0 + gamma * lam_max / (1 - _s) * G0
_ef21_cap = sp.Le(gamma, 1 / (L * (1 + sp.sqrt(2 * lam_max * (1 - beta)) / (1 - _s))))
_ef21_pl_latex = (
    r"\mathbb E[f(W^T)-f^*]\le(1-\gamma\mu\lambda^p_{\min})^T\Phi_0,\ \gamma\le\min\Big\{"
    r"\frac1{L\Big(1+\frac{\sqrt{2\lambda^p_{\max}(1-\beta)}}{1-\sqrt{1-\beta}}\Big)},"
)
thm_22 = Theorem(
    PAPER,
    "Theorem 22",
    "Fed-EF21, PL",
    lhs=_PL_GAP,
    assumptions=(_A1, _A2, _A3, _A6, "each f_l L-smooth (Lemma 17)"),
    printed=Form(
        (1 - gamma * mu * lam_min) ** T * _phi0_ef21,
        (_ef21_cap, sp.Le(gamma, (1 + _s) / (2 * mu * lam_min))),
        _ef21_pl_latex + r"\frac{1+\sqrt{1-\beta}}{2\mu\lambda^p_{\min}}\Big\}",
    ),
    corrected=Form(
        (1 - gamma * mu * lam_min) ** T * _phi0_ef21,
        (_ef21_cap, sp.Le(gamma, (1 - _s) / (2 * mu * lam_min))),
        _ef21_pl_latex + r"\frac{1-\sqrt{1-\beta}}{2\mu\lambda^p_{\min}}\Big\}",
    ),
    erratum=(
        "the second cap is too large: after the PL step the Ĝ coefficient is (1 + √(1−β))/2·c, "
        "and contraction at 1 − γμλ_min needs γ ≤ (1 − √(1−β))/(2μλ_min)"
    ),
    notes=(
        "Φ_0 = Δ^0 + γλ^p_max/(1 − √(1−β))·Ĝ^0.",
        "The two forms differ only in a step-size cap: at a γ both admit they give the same bound.",
    ),
    check=_check("theorem_22"),
)

# --------------------------------------------------------------------------------------------
# Non-smooth convex, Algorithm 3 (spec §5.2, Theorem 10)
# --------------------------------------------------------------------------------------------
_NS_LHS = "E[f(W̄^T)] − f(W*), W̄^T = (1/T) Σ_{t<T} W^t"
_NS_ASSUMPTIONS = (_A1, _A7, _A8, _A9, _A10)
thm_10_constant = Theorem(
    PAPER,
    "Theorem 10 (constant step)",
    "GD, convex non-smooth, constant step",
    lhs=_NS_LHS,
    assumptions=_NS_ASSUMPTIONS,
    printed=Form(
        R0**2 / (2 * gamma * alpha_H * T) + gamma * L0**2 / 2,
        (),
        r"\mathbb E[f(\bar W^T)-f(W^*)]\le\frac{R_0^2}{2\gamma\alpha T}+\frac{\gamma L_0^2}2\quad(70)",
    ),
    notes=("R_0 = ‖W^0 − W*‖_F; α is Assumption 10's constant (α_H here, not the LoRA scale).",),
    check=_check("theorem_10_constant_step"),
)

_gamma_star_printed = sp.sqrt(R0**4 / (T * alpha_H * L0**2))
_gamma_star = R0 / (L0 * sp.sqrt(alpha_H * T))
thm_10_optimal = Theorem(
    PAPER,
    "Theorem 10 (optimal step)",
    "GD, convex non-smooth, optimal constant step",
    lhs=_NS_LHS,
    assumptions=_NS_ASSUMPTIONS,
    printed=Form(
        R0**2 * L0 / sp.sqrt(alpha_H * T),
        (sp.Le(gamma, _gamma_star_printed), sp.Ge(gamma, _gamma_star_printed)),
        r"\gamma_*=\sqrt{\frac{(R_0^2)^2}{T\alpha L_0^2}}:\ \mathbb E[f(\bar W^T)-f(W^*)]"
        r"\le\frac{R_0^2L_0}{\sqrt{\alpha T}}\quad(71)",
    ),
    corrected=Form(
        R0 * L0 / sp.sqrt(alpha_H * T),
        (sp.Le(gamma, _gamma_star), sp.Ge(gamma, _gamma_star)),
        r"\gamma_*=\frac{R_0}{L_0\sqrt{\alpha T}}:\ \mathbb E[f(\bar W^T)-f(W^*)]"
        r"\le\frac{R_0L_0}{\sqrt{\alpha T}}",
    ),
    erratum=(
        "typos: γ* has (R_0²)² for R_0² and the bound R_0² for R_0; (70) at γ* = R_0/(L_0√(αT)) "
        "gives R_0²/(2γ*αT) = γ*L_0²/2 = R_0L_0/(2√(αT)), as the proof's (96)–(97) say"
    ),
    notes=("The conditions γ ≤ γ* and γ ≥ γ* encode γ = γ*.",),
    check=_check("theorem_10_optimal_step"),
)

thm_10_polyak = Theorem(
    PAPER,
    "Theorem 10 (Polyak step)",
    "GD, convex non-smooth, Polyak step",
    lhs=_NS_LHS,
    assumptions=_NS_ASSUMPTIONS,
    printed=Form(
        R0**2 * L0 / sp.sqrt(alpha_H * T),
        (),
        r"\gamma_t=\frac{f(W^t)-f(W^*)}{\|\partial f(W^t)\|_F^2}:\ \mathbb E[f(\bar W^T)-f(W^*)]"
        r"\le\frac{R_0^2L_0}{\sqrt{\alpha T}}\quad(73)",
    ),
    corrected=Form(
        R0 * L0 / sp.sqrt(alpha_H * T),
        (),
        r"\gamma_t=\frac{f(W^t)-f(W^*)}{\|\partial f(W^t)\|_F^2}:\ \mathbb E[f(\bar W^T)-f(W^*)]"
        r"\le\frac{R_0L_0}{\sqrt{\alpha T}}",
    ),
    erratum=(
        "typo R_0² for R_0: the proof's (99)–(101) (Σ_t α E(f − f*)² ≤ L_0²R_0², then Jensen and "
        "Cauchy–Schwarz) give R_0L_0/√(αT)"
    ),
    check=_check("theorem_10_polyak_step"),
)

BERNOULLI_LORA_THEOREMS = tuple(
    register_theorem(t)
    for t in (
        thm_1, thm_9, thm_2, thm_8, thm_13, thm_14, thm_15, thm_16, thm_5, thm_18, thm_6, thm_20,
        thm_21, thm_22, thm_10_constant, thm_10_optimal, thm_10_polyak,
    )
)  # fmt: skip
