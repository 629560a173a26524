"""RAC-LoRA's theorems (Malinovsky et al.; spec ``rac_lora.md`` §4), printed and corrected.

λ_min = λ_min(E[H]) and λ_max = λ_max(E[H]) (Assumption 5.1); the printed
"1 − λ_max[E[I − H]]" equals λ_min exactly and is written that way here.
"""

from __future__ import annotations

import sympy as sp

from .symbols import (
    A1,
    B1,
    C1,
    C,
    Delta0,
    Delta_m_star,
    Delta_star,
    L,
    M,
    N,
    T,
    eta_tilde,
    gamma,
    lam_max,
    lam_min,
    mu,
    sigma2,
)
from .theorem import Form, Theorem, register_theorem

__all__ = ["RAC_LORA_THEOREMS"]

PAPER = "RAC-LoRA"
_A31, _A51, _A52, _A54 = (
    "3.1 (L-smooth)",
    "5.1 (λ_min(E[H]) > 0)",
    "5.2 (f bounded below; used, not listed)",
    "5.4 (PL with μ)",
)
_D = lam_min - lam_max / 4  # 1 − λ_max E[I − H] − ¼λ_max (D.2, D.3)
_s = (M - C) / (C * sp.Max(M - 1, 1))  # client-sampling variance factor (F.2, F.3)

thm_5_3 = Theorem(
    PAPER,
    "Theorem 5.3",
    "GD, non-convex",
    lhs="E‖∇f(W̃^T)‖², W̃^T uniform over W^0, …, W^{T−1}",
    assumptions=(_A31, _A51, _A52),
    printed=Form(
        2 * Delta0 / (lam_min * gamma * T),
        (sp.Le(gamma, 1 / L),),
        r"\mathbb E\|\nabla f(\widetilde W^T)\|^2 \le \frac{2(f(W^0)-f^*)}{\lambda^H_{\min}\gamma T},"
        r"\quad 0<\gamma\le \tfrac1L",
    ),
    notes=("The Appendix C.1 restatement prints 2f(W^0) − f*; the proof gives 2(f(W^0) − f*).",),
    check="lorakit.checks.verify(names=['rac_lora.theorem_5.3'])",
)

thm_5_5 = Theorem(
    PAPER,
    "Theorem 5.5",
    "GD, PL",
    lhs="E[f(W^T)] − f*",
    assumptions=(_A31, _A51, _A54),
    printed=Form(
        (1 - gamma * mu * lam_min) ** T * Delta0,
        (sp.Le(gamma, 1 / L),),
        r"\mathbb E f(W^T)-f^* \le (1-\gamma\mu\lambda^H_{\min})^T (f(W^0)-f^*),\quad 0<\gamma\le\tfrac1L",
    ),
    notes=("Tight on f = ½‖W − W*‖² at γ = 1/L with isotropic sketches (spec §5 item 4).",),
    check="lorakit.checks.verify(names=['rac_lora.theorem_5.5'])",
)

thm_D2 = Theorem(
    PAPER,
    "Theorem D.2",
    "random reshuffling, non-convex",
    lhs="E‖∇f(W̃^T)‖², W̃^T uniform over the link starts W^0, …, W^{T−1}",
    assumptions=(_A31, _A51, "D.1 (RR variance σ²)"),
    printed=Form(
        2 * Delta0 / (gamma * N * T * _D) + L**2 * gamma**2 * lam_max * N * sigma2 / _D,
        (sp.Le(gamma, 1 / (2 * L * N)),),
        r"\mathbb E\|\nabla f(\widetilde W^T)\|^2\le \frac{2}{\gamma NT}\frac{f(W^0)-f^*}{D}"
        r"+\frac{L^2\gamma^2\lambda^H_{\max}N\sigma^2}{D},\ D=1-\lambda_{\max}\mathbb E[I-H]-\tfrac14\lambda^H_{\max}",
    ),
    notes=(
        "Meaningful only when D = λ_min − λ_max/4 > 0, i.e. λ_max < 4λ_min (unstated).",
        "The inner step should read ∇f_{π_i}; Assumption D.1 sums to n instead of N.",
    ),
    check="lorakit.checks.verify(names=['rac_lora.theorem_d.2'])",
)

thm_D3 = Theorem(
    PAPER,
    "Theorem D.3",
    "random reshuffling, PL",
    lhs="E[f(W^T)] − f* (W^T at a link start)",
    assumptions=(_A31, _A51, _A54, "D.1 (RR variance σ²)"),
    printed=Form(
        (1 - gamma * N * mu * _D) ** T * Delta0 + L**2 * gamma**2 * lam_max * N * sigma2 / (2 * _D),
        (sp.Le(gamma, 1 / (2 * N * L)),),
        r"\mathbb E f(W^T)-f^*\le(1-\gamma N\mu D)^T\Delta^0+\frac{L^2\gamma^2\lambda^{H_B}_{\max}N\sigma^2}{2D}",
    ),
    corrected=Form(
        (1 - gamma * N * mu * _D) ** T * Delta0
        + L**2 * gamma**2 * lam_max * N * sigma2 / (2 * mu * _D),
        (sp.Le(gamma, 1 / (2 * N * L)),),
        r"\mathbb E f(W^T)-f^*\le(1-\gamma N\mu D)^T\Delta^0+\frac{L^2\gamma^2\lambda^{H_B}_{\max}N\sigma^2}{2\mu D}",
    ),
    erratum="the neighbourhood lacks 1/μ: unrolling the proof's recursion (8) divides by γNμD",
    check="lorakit.checks.verify(names=['rac_lora.theorem_d.3'])",
)

thm_E2 = Theorem(
    PAPER,
    "Theorem E.2",
    "SGD (right sketch), non-convex",
    lhs="min_{t<T} E‖∇f(W^t)‖²",
    assumptions=(
        _A31,
        _A51,
        "E.1 (expected smoothness A_1, B_1, C_1)",
        "unbiased g independent of H (used, not stated)",
    ),
    printed=Form(
        6 * Delta0 / (lam_min * gamma * T) + L * C1 * gamma * lam_max / lam_min,
        (
            sp.Le(gamma, 1 / sp.sqrt(L * A1 * lam_max * T)),
            sp.Le(gamma, lam_min / (L * B1 * lam_max)),
        ),
        r"\min_t\mathbb E\|\nabla f(W^t)\|^2\le\frac{6(f(W^0)-f^*)}{\lambda^{H_A}_{\min}\gamma T}"
        r"+LC_1\gamma\frac{\lambda^{H_A}_{\max}}{\lambda^{H_A}_{\min}}",
    ),
    notes=("The 6 is 2·3 with 3 ≥ e bounding (1 + Lγ²A_1λ_max)^T.",),
    check="lorakit.checks.verify(names=['rac_lora.theorem_e.2'])",
)

thm_E3 = Theorem(
    PAPER,
    "Theorem E.3",
    "SGD (right sketch), PL",
    lhs="E[f(W^T)] − f*",
    assumptions=(_A31, _A51, _A54, "E.1 (expected smoothness A_1, B_1, C_1)"),
    printed=Form(
        (1 - gamma * mu * lam_min) ** T * Delta0,
        (
            sp.Le(gamma, mu * lam_min / (2 * A1 * L * lam_max)),
            sp.Le(gamma, lam_min / (L * B1 * lam_max)),
        ),
        r"\mathbb E f(W^T)-f^*\le(1-\gamma\mu\lambda^H_{\min})^T(f(W^0)-f^*)",
    ),
    corrected=Form(
        (1 - gamma * mu * lam_min) ** T * Delta0 + gamma * L * lam_max * C1 / (2 * mu * lam_min),
        (
            sp.Le(gamma, mu * lam_min / (2 * A1 * L * lam_max)),
            sp.Le(gamma, lam_min / (2 * L * B1 * lam_max)),
        ),
        r"\mathbb E f(W^T)-f^*\le(1-\gamma\mu\lambda^{H_A}_{\min})^T\Delta^0"
        r"+\gamma\frac{L}{2\mu\lambda^{H_A}_{\min}}\lambda^{H_A}_{\max}C_1",
    ),
    erratum=(
        "the statement drops the C_1 neighbourhood its own proof ends with, and the proof's "
        "'≥ 3/4' step needs half the stated B_1 cap"
    ),
    check="lorakit.checks.verify(names=['rac_lora.theorem_e.3'])",
)

_F2_printed_den = 1 - lam_min  # the printed λ_max E[I − H]
thm_F2 = Theorem(
    PAPER,
    "Theorem F.2",
    "Fed-RAC-LoRA with RR local steps, non-convex",
    lhs="min_{t<T} E‖∇f(W^t)‖²",
    assumptions=(_A31, _A51, "F.1 (Δ*, Δ_m*)"),
    printed=Form(
        4
        * (1 + 4 * eta_tilde * L**3 * gamma**2 * N**2 + 2 * L**2 * eta_tilde**2 * _s) ** T
        * Delta0
        / (_F2_printed_den * eta_tilde * T)
        + 8 * gamma**2 * N * L**3 / _F2_printed_den * (Delta_m_star + N * Delta_star)
        + 8 * L**2 * eta_tilde / _F2_printed_den * _s * Delta_star,
        (sp.Le(gamma * N, eta_tilde), sp.Le(eta_tilde, (1 - lam_min) / (4 * L))),
        r"\min_t\mathbb E\|\nabla f(W^t)\|^2\le\frac{4(1+4\tilde\eta L^3\gamma^2N^2+2L^2\tilde\eta^2 s)^T}"
        r"{\lambda_{\max}[\mathbb E(I-H)]\tilde\eta T}\Delta^0+\dots",
    ),
    corrected=Form(
        4
        * (1 + 4 * eta_tilde * L**3 * gamma**2 * N**2 + 2 * L**2 * eta_tilde**2 * _s) ** T
        * Delta0
        / (lam_min * eta_tilde * T)
        + 8 * gamma**2 * N * L**3 / lam_min * (Delta_m_star + N * Delta_star)
        + 8 * L**2 * eta_tilde / lam_min * _s * Delta_star,
        (
            sp.Le(gamma * N, eta_tilde),
            sp.Le(eta_tilde, lam_min / (4 * L)),
            sp.Le(gamma, 1 / (4 * N * L)),
        ),
        r"\text{as printed with }\lambda_{\max}\mathbb E[I-H]\to\lambda^H_{\min}"
        r"\text{ and }\tilde\eta\le\lambda^H_{\min}/(4L)",
    ),
    erratum=(
        "the proof's descent coefficient is (η̃/4)·λ_min, so every denominator λ_max E[I − H] "
        "(= 1 − λ_min, which would improve as the rank shrinks) must be λ_min, and η̃ ≤ λ_min/(4L)"
    ),
    notes=("η̃ = β·γ·N for Algorithm 2 with server step β (spec §2.8).",),
    check="lorakit.checks.verify(names=['rac_lora.theorem_f.2'])",
)

_F3_D = lam_min - 3 * L * eta_tilde
_F3_rho = 1 - eta_tilde * mu * _F3_D + 2 * L**2 * eta_tilde**2 * _s
thm_F3 = Theorem(
    PAPER,
    "Theorem F.3",
    "Fed-RAC-LoRA with RR local steps, PL",
    lhs="E[f(W^T)] − f*",
    assumptions=(_A31, _A51, _A54, "F.1 (Δ*, Δ_m*)"),
    printed=Form(
        None,
        (sp.Le(gamma * N, eta_tilde), sp.Le(eta_tilde, (1 - lam_min) / (4 * L))),
        r"\mathbb E[f(W^{t+1})-f^*]\le\Delta^0(1-\tilde\eta\mu(1-\lambda_{\max}\mathbb E[I-H]-3L\tilde\eta))^T"
        r"+\dots+\frac{L\tilde\eta^2 s}{\dots}(2L(f(W^t)-f^*)+2L\Delta^*)",
    ),
    corrected=Form(
        _F3_rho**T * Delta0
        + (
            eta_tilde
            * L**2
            * (2 * gamma**2 * N**2 * L * Delta_star + 2 * gamma**2 * N * L * Delta_m_star)
            + 2 * L**2 * eta_tilde**2 * _s * Delta_star
        )
        / (1 - _F3_rho),
        (
            sp.Le(gamma * N, eta_tilde),
            sp.Le(eta_tilde, lam_min / (4 * L)),
            sp.Le(gamma, 1 / (4 * N * L)),
            sp.Lt(_F3_rho, 1),
        ),
        r"\mathbb E f(W^T)-f^*\le\rho^T\Delta^0+\frac{\tilde\eta L^2(2\gamma^2N^2L\Delta^*+2\gamma^2NL\Delta_m^*)"
        r"+2L^2\tilde\eta^2 s\Delta^*}{1-\rho},\ \rho=1-\tilde\eta\mu(\lambda_{\min}-3L\tilde\eta)+2L^2\tilde\eta^2 s",
    ),
    erratum=(
        "the printed bound mixes indices (t+1 on the left, power T on the right) and keeps the "
        "non-constant f(W^t) − f* in its last term; lorakit absorbs that term into the contraction ρ"
    ),
    check="lorakit.checks.verify(names=['rac_lora.theorem_f.3'])",
)

RAC_LORA_THEOREMS = tuple(
    register_theorem(t) for t in (thm_5_3, thm_5_5, thm_D2, thm_D3, thm_E2, thm_E3, thm_F2, thm_F3)
)
