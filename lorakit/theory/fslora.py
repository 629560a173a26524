"""FSLoRA's theorems (Fang et al., *Federated Sketching LoRA*; spec ``fslora.md`` §4–5, §10, §12).

X = (B, A) with ‖X‖² = ‖B‖² + ‖A‖²; N devices, H local steps, device i trains a random k_i-subset
of the r rank-1 components with the sketch S ∈ 𝒮(r, k_i) (Definition 3.1). ρ_1 = (1/N) Σ_i r/k_i
and ρ_2 = (1/N) Σ_i (r/k_i)², so L̄ = ρ_1 L and L̃ = ρ_2 L (Theorem 4.4). σ_g², σ_s² are the data
and sketch variances (Assumption 4.2); c_h, σ_h² the gradient dissimilarity (Assumption 4.3, which
names it δ_h²); F_0 = f^S(X^0) − f*, f* a lower bound of f^S.
"""

from __future__ import annotations

import sympy as sp

from .symbols import (
    F0,
    H,
    L,
    N,
    T,
    X_norm2,
    c_h,
    gamma,
    k,
    r,
    rho1,
    rho2,
    sigma_g2,
    sigma_h2,
    sigma_s2,
)
from .theorem import Form, Theorem, register_theorem

__all__ = ["FSLORA_THEOREMS", "bound_6", "corollary_step"]

PAPER = "FSLoRA"
_A41, _A42, _A43 = (
    "4.1 (each f_i L-smooth in X = (B, A))",
    "4.2 (sketch variance σ_s², data variance σ_g²)",
    "4.3 (gradient dissimilarity c_h, σ_h² — printed δ_h²)",
)
_DEF31 = "Definition 3.1 (I uniform among the k-subsets of [r], S = (r/k)Σ_{j∈I} e_j e_jᵀ)"

lemma_D3 = Theorem(
    PAPER,
    "Lemma D.3",
    "random-k sketch, second moment",
    lhs="E_S‖XS‖² for a fixed X with r columns",
    assumptions=(_DEF31,),
    printed=Form(
        r / k * X_norm2,
        (),
        r"\|XS\|^2\le\frac{r^2}{k^2}\|X\|^2\ (8),\qquad \mathbb E_S\|XS\|^2\le\frac rk\|X\|^2\ (9)",
    ),
    notes=(
        "(9) holds with equality: E[S²] = (r/k)·I, so E‖XS‖² = (r/k)‖X‖² exactly (spec §5, §6 item 2).",
        "The proof calls x_j the columns of X but sums ‖Sᵀx_j‖², i.e. rows; harmless for diagonal S.",
    ),
    check="lorakit.checks.verify(names=['fslora.lemma_d.3'])",
)

prop_D4 = Theorem(
    PAPER,
    "Proposition D.4",
    "smoothness of the sketched objectives",
    lhs="λ_max of ∇²f̃_i(·; S), ∇²f_i^S and ∇²f^S (their smoothness constants)",
    assumptions=(_A41, _DEF31),
    printed=Form(
        rho1 * L,
        (),
        r"\tilde f_i(\cdot;\mathbf S):\ L\frac{r^2}{k_i^2},\quad f_i^{\mathcal S}:\ L\frac r{k_i},"
        r"\quad f^{\mathcal S}:\ \Big(\frac1N\sum_i\frac r{k_i}\Big)L=\rho_1L",
    ),
    notes=(
        "The registered bound is the third constant, ρ_1·L for f^S; the first two are L r²/k_i² "
        "and L r/k_i (ρ_1 with every k_i equal to k).",
        "The proof writes '=' for '≤' and proves the descent-lemma upper bound only; the Lipschitz "
        "claim still holds for C² f_i (spec §5, §10 item 19).",
        "All three are tight: f = ½‖B‖² + ½‖A‖² (L = 1) attains them.",
    ),
    check="lorakit.checks.verify(names=['fslora.proposition_d.4'])",
)

#: Bound (6) of Theorem 4.4, shared by both forms (they differ in the step-size condition).
bound_6 = (
    4 * F0 / (gamma * T * H)
    + 6 * gamma * rho1 * L / N * (sigma_g2 + sigma_s2)
    + 12 * gamma * rho2 * L / N * (sigma_g2 + sigma_s2 + 3 * sigma_h2)
)
_cap_N = sp.Le(gamma, 1 / (N * H**2 * L))
thm_4_4 = Theorem(
    PAPER,
    "Theorem 4.4",
    "FSLoRA, H local SGD steps, non-convex",
    lhs="(1/T) Σ_{t<T} E‖∇_X f^S(X^t)‖²",
    assumptions=(_A41, _A42, _A43),
    printed=Form(
        bound_6,
        (sp.Le(gamma, 1 / (6 * sp.sqrt((c_h + 1) * rho1 * L * L * H))), _cap_N),
        r"\frac1T\sum_{t<T}\mathbb E\|\nabla f^{\mathcal S}(X^t)\|^2\le\frac{4F_0}{\gamma TH}"
        r"+\frac{6\gamma\bar L}{N}(\sigma_g^2+\sigma_s^2)+\frac{12\gamma\tilde L}{N}(\sigma_g^2+\sigma_s^2+3\sigma_h^2),"
        r"\ \gamma\le\min\Big\{\frac1{6\sqrt{(c_h+1)\bar LLH}},\frac1{NH^2L}\Big\}",
    ),
    corrected=Form(
        bound_6,
        (sp.Le(gamma, 1 / (6 * H * L * sp.sqrt(rho2 * (c_h + 1)))), _cap_N),
        r"\text{bound (6) as printed, with }\gamma\le\min\Big\{\frac1{6HL\sqrt{\rho_2(c_h+1)}},\frac1{NH^2L}\Big\}",
    ),
    erratum=(
        "the proof's step (17) needs γ ≤ 1/(6HL√(ρ_2(c_h+1))) (ρ_2, H outside the root), which also "
        "implies its unstated γ ≤ 1/(3HL_s) and γ ≤ 1/(√18·HL); the printed 1/(6√((c_h+1)L̄LH)) "
        "admits steps up to √(Hρ_2/ρ_1) times larger (spec §10 item 14)"
    ),
    notes=(
        "L̄ = ρ_1L, L̃ = ρ_2L; f* is a lower bound of f^S (not of f).",
        "Assumption 4.3 names the constant δ_h²; the theorem and proof call it σ_h² (spec §10 item 13).",
        "For H > 1 the fixed S_i^t makes the sketch noise across local steps no martingale and the "
        "T_3 recursion drops a factor r²/k_i² (spec §10 items 15–17); for H = 1 both vanish.",
        "Assumption 4.1 fails globally for f_i(W0 + BA) (bilinear): it holds on bounded sets only "
        "(spec §10 item 18), so a check can only estimate L on the iterates it visits.",
    ),
    check="lorakit.checks.verify(names=['fslora.theorem_4.4'])",
)

#: Corollary 4.5's step size γ = √(N/(T H L̃)).
corollary_step = sp.sqrt(N / (T * H * rho2 * L))
_cor_bracket = (
    4 * F0 + 12 * sigma_g2 + 12 * sigma_s2 + 36 * sigma_h2 + 6 * rho1 / rho2 * (sigma_g2 + sigma_s2)
)
_T_N = sp.Ge(T, N**3 * H**3 * L / rho2)  # γ ≤ 1/(NH²L)
cor_4_5 = Theorem(
    PAPER,
    "Corollary 4.5",
    "FSLoRA at γ = √(N/(THL̃)), non-convex",
    lhs="(1/T) Σ_{t<T} E‖∇_X f^S(X^t)‖²",
    assumptions=(_A41, _A42, _A43),
    printed=Form(
        None,
        (_T_N, sp.Ge(T, 36 * N * (c_h + 1) * rho1 * L / rho2)),
        r"\frac1T\sum_{t<T}\mathbb E\|\nabla f^{\mathcal S}(X^t)\|^2\le\mathcal O\Big(\frac{F_0\sqrt{\tilde L}}{\sqrt{THN}}\Big)"
        r"+\mathcal O\Big(\frac{(\sigma_g^2+\sigma_s^2+\sigma_h^2)\sqrt{\tilde L}}{\sqrt{THN}}\Big),"
        r"\ \gamma=\sqrt{N/(TH\tilde L)},\ T\text{ large enough}",
    ),
    corrected=Form(
        sp.sqrt(rho2 * L / (T * H * N)) * _cor_bracket,
        (_T_N, sp.Ge(T, 36 * N * H * L * (c_h + 1))),
        r"\frac{\sqrt{\tilde L}}{\sqrt{THN}}\Big[4F_0+12\sigma_g^2+12\sigma_s^2+36\sigma_h^2"
        r"+6\frac{\rho_1}{\rho_2}(\sigma_g^2+\sigma_s^2)\Big],\ T\ge\max\Big\{\frac{N^3H^3L}{\rho_2},36NHL(c_h+1)\Big\}",
    ),
    erratum=(
        "the O(·) statement is not evaluable; substituting γ = √(N/(THL̃)) into (6) gives the "
        "bracket exactly (spec §12), and 'T large enough' for the corrected step condition of "
        "Theorem 4.4 is T ≥ max{N³H³L/ρ_2, 36NHL(c_h+1)} (the printed condition would give "
        "36N(c_h+1)ρ_1L/ρ_2, smaller by Hρ_2/ρ_1)"
    ),
    notes=(
        "The bracket is at most 4F_0 + 18(σ_g² + σ_s²) + 36σ_h² since ρ_1 ≤ ρ_2; with a uniform "
        "ratio q = k/r, √L̃ = √L/q, so halving the sketching ratio doubles the bound.",
    ),
    check="lorakit.checks.verify(names=['fslora.corollary_4.5'])",
)

FSLORA_THEOREMS = tuple(register_theorem(t) for t in (lemma_D3, prop_D4, thm_4_4, cor_4_5))
