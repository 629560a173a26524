"""RW-LoRA's Theorem 1 (Chen et al.; spec ``rw_lora.md`` §7–8) and the mixing-time facts it rests
on (spec §9.1–9.2), printed and corrected.

The step size η of Algorithm 1 is the kit's step symbol ``gamma`` (so :meth:`Theorem.step_cap`
reads the condition η ≤ 1/(4L√T)); a and b bound ‖A^(t)‖ and ‖B^(t)‖ (Frobenius), c² the second
moment of the stochastic gradients, σ² (``sigma2``) their variance about ∇f, τ the lag with
τ ≥ τ_mix(π_min ε), F_τ = E f(W^(τ)) and f_inf a lower bound of f.

* ``rw_lora.theorem_1`` — printed: the explicit bound (33) with its Γ, under η ≤ 1/(4L√T),
  T ≥ τ², τ ≥ τ_mix(π_min ε), ε < ½ (the Õ form (9) is not evaluable). Corrected: what the
  proof's (30)–(31) establish when telescoped (spec §8): the A-side term of (25) is O(1), not
  O(η), so 4(a²+b²)(σ²+c²) is divided by η, not ηT — at η = 1/(4L√T) an O(√T) term — and the
  ε², f_inf and averaging slips are repaired (every constant of the spec's §8 display doubles).
* ``rw_lora.levin_peres_bounds`` — τ_mix(ε) ≤ ⌈t_rel ln(1/(ε π_min))⌉ (and, in the notes and the
  check, ≥ (t_rel − 1) ln(1/(2ε))) for reversible, irreducible, aperiodic chains.
* ``rw_lora.complete_graph_tv_closed_form`` — Metropolis–Hastings on K_N with uniform π:
  d(t) = ((N − 1)/N)(N − 1)^(−t), with equality.
"""

from __future__ import annotations

import sympy as sp

from .symbols import (
    F_tau,
    L,
    N,
    T,
    a,
    b,
    c,
    epsilon,
    f_inf,
    gamma,
    pi_min,
    sigma2,
    t,
    t_rel,
    tau,
    tau_mix,
)
from .theorem import Form, Theorem, register_theorem

__all__ = [
    "RW_LORA_THEOREMS",
    "Gamma",
    "bound_33",
    "bound_corrected",
    "bound_from_32",
    "complete_graph_tau",
    "complete_graph_tv",
    "eta_max",
    "levin_peres_lower",
    "levin_peres_upper",
]

PAPER = "RW-LoRA"
eta = gamma  # the paper's step size η

#: Γ of (33): 8× the η² coefficient of (32).
Gamma = 6 * (a**2 + b**2) * L * tau * c**2 + 4 * c**2 * L * (a**4 + b**4) + 2 * c**2 * (a**2 + b**2)
_K = 4 * (a**2 + b**2) * (sigma2 + c**2)  # 8·C_0 of (32), C_0 = (a²+b²)(σ²+c²)/2

#: (33) as printed: ε²σ² + ηΓ + (8E f(W^(τ)) + 4(a²+b²)(σ²+c²))/(ηT).
bound_33 = epsilon**2 * sigma2 + eta * Gamma + (8 * F_tau + _K) / (eta * T)

#: The telescoped (32) as printed (descent coefficient η/8; spec §8's display): the O(1) term
#: 4(a²+b²)(σ²+c²) is divided by η, not ηT, ε²σ² gains the factor 8, and f_inf appears.
bound_from_32 = 8 * (F_tau - f_inf) / (eta * T) + _K / eta + 8 * epsilon**2 * sigma2 + eta * Gamma

#: What (30)–(31) establish: (32) is their *average*, so its descent term is halved (η/16, spec §8
#: item 4) and every constant of ``bound_from_32`` doubles.
bound_corrected = 2 * bound_from_32

#: The step cap η ≤ 1/(4L√T) (the bound needs η = Θ(1/(L√T)), so checks run at the cap).
eta_max = 1 / (4 * L * sp.sqrt(T))

_conditions = (
    sp.Le(gamma, eta_max),
    sp.Ge(T, tau**2),
    sp.Ge(tau, tau_mix),
    sp.Lt(epsilon, sp.Rational(1, 2)),
)

_A1, _A2, _A3, _A4, _A5 = (
    "1 (submultiplicative norm; the proof needs Frobenius: transposes and inner products)",
    "2 (each f_v L-smooth in W)",
    "3 (unbiased stochastic gradients, E‖∇f̃_v(W)‖² ≤ c²)",
    "4 (E‖∇f̃_v(W) − ∇f(W)‖² ≤ σ² for every v: mini-batch noise and heterogeneity)",
    "5 (‖A^(t)‖ ≤ a, ‖B^(t)‖ ≤ b for all t — the proof uses t ≤ T + τ)",
)
_F = "f ≥ f_inf (used, not listed: (33) writes 8E f(W^(τ)), i.e. f ≥ 0)"
_MIX = "the walk mixes: τ_mix(π_min ε) < ∞ (irreducible and aperiodic P)"

thm_1 = Theorem(
    PAPER,
    "Theorem 1",
    "RW-LoRA (SGD along a Markov random walk), non-convex",
    lhs="(1/T) Σ_{t=0}^{T−1} (E‖∇_A f(W^(t))‖² + E‖∇_B f(W^(t))‖²), f = E_{v∼π} f_v",
    assumptions=(_A1, _A2, _A3, _A4, _A5, _F, _MIX),
    printed=Form(
        bound_33,
        _conditions,
        r"\frac1T\sum_{t=0}^{T-1}\big(\mathbb E\|\nabla_Af(W^{(t)})\|^2+\mathbb E\|\nabla_Bf(W^{(t)})\|^2\big)"
        r"\le\epsilon^2\sigma^2+\eta\Gamma+\frac{8\mathbb E f(W^{(\tau)})+4(a^2+b^2)(\sigma^2+c^2)}{\eta T},"
        r"\ \Gamma=6(a^2+b^2)L\tau c^2+4c^2L(a^4+b^4)+2c^2(a^2+b^2),"
        r"\ \tau\ge\tau_{\rm mix}(\pi_{\min}\epsilon),\ T\ge\tau^2,\ \eta\le\frac1{4L\sqrt T}\quad(33)",
    ),
    corrected=Form(
        bound_corrected,
        _conditions,
        r"\frac1T\sum_{t=0}^{T-1}G_t\le\frac{16(\mathbb E f(W^{(\tau)})-f_{\inf})}{\eta T}"
        r"+\frac{8(a^2+b^2)(\sigma^2+c^2)}{\eta}+16\epsilon^2\sigma^2+2\eta\Gamma",
    ),
    erratum=(
        "the proof does not establish (33) or (9): the A-side bound (25) is O(1), not O(η), so "
        "telescoping leaves 4(a²+b²)(σ²+c²)/η, not /(ηT) — at η = 1/(4L√T) a term "
        "16L√T(a²+b²)(σ²+c²) that grows with T; repaired, with ε²σ² → 8ε²σ², the missing f_inf, and "
        "the ½ from averaging (30)–(31) (all constants double), the proof gives 16(F_τ − f_inf)/(ηT) "
        "+ 8(a²+b²)(σ²+c²)/η + 16ε²σ² + 2ηΓ (spec §8)"
    ),
    notes=(
        "(9) states Õ(ε² + Lτ/√T + Lτ/T); it hides a, b, c, σ, F_τ and logarithms. At "
        "η = 1/(4L√T), (33) is ε²σ² + [3/2(a²+b²)c²τ + c²(a⁴+b⁴) + c²(a²+b²)/(2L) + 32LF_τ + "
        "16L(a²+b²)(σ²+c²)]/√T: no literal Lτ/√T product, and no Lτ/T term (spec §8 item 6).",
        "(9) sums t = 1..T, (33) sums t = 0..T−1; telescoping uses iterates up to T + τ while "
        "Algorithm 1 stops at T (spec §12 item 13).",
        "Lemma 2's last term needs a fourth moment (E‖∇f̃‖⁴), not c⁴; Lemma 6's constant 3σ² is "
        "2σ²; the E f(W^(τ)) bound misuses Cauchy–Schwarz (spec §7.3, §7.5).",
        "The text's stationarity measure is first-moment, E‖∇_A f‖ + E‖∇_B f‖; the theorem bounds "
        "second moments.",
        "Remark 1 gives irreducibility only: Metropolis–Hastings with uniform π on the paper's "
        "10-node ring is the simple random walk, periodic, so τ_mix = ∞ and the theorem is vacuous "
        "there (spec §9.1).",
    ),
    check="lorakit.checks.verify(names=['rw_lora.theorem_1'])",
)

#: Levin–Peres (Theorems 12.4 and 12.5, 2nd ed.): for a reversible, irreducible, aperiodic chain
#: with absolute spectral gap γ* and t_rel = 1/γ*.
levin_peres_upper = sp.ceiling(t_rel * sp.log(1 / (epsilon * pi_min)))
levin_peres_lower = (t_rel - 1) * sp.log(1 / (2 * epsilon))

lp = Theorem(
    PAPER,
    "Levin–Peres bounds",
    "mixing time of a reversible chain (used for τ in Theorem 1)",
    lhs="τ_mix(ε) = min{t ≥ 1 : max_u ‖P^t(u,·) − π‖_TV ≤ ε}",
    assumptions=(
        "P reversible with respect to π (π_u P_uv = π_v P_vu)",
        "P irreducible and aperiodic",
        "t_rel = 1/(1 − λ*), λ* = max_{i≥2} |λ_i(P)|",
    ),
    printed=Form(
        levin_peres_upper,
        (),
        r"(t_{\rm rel}-1)\ln\frac1{2\epsilon}\le\tau_{\rm mix}(\epsilon)\le"
        r"\Big\lceil t_{\rm rel}\ln\frac1{\epsilon\pi_{\min}}\Big\rceil",
    ),
    notes=(
        "The registered bound is the upper one; the lower one, (t_rel − 1) ln(1/(2ε)), is "
        "``levin_peres_lower`` and is checked with it.",
        "Theorem 1 needs τ_mix(π_min ε), whose upper bound is ⌈t_rel ln(1/(π_min² ε))⌉: the lazy "
        "10-ring gives 57.8, 62.7, 72.3, 79.6, 96.5 for ε = 0.4 … 0.01 against τ = 28 … 65.",
    ),
    check="lorakit.checks.verify(names=['rw_lora.levin_peres_bounds'])",
)

#: d(t) for Metropolis–Hastings on K_N with uniform π (P = (J − I)/(N − 1)).
complete_graph_tv = (N - 1) / N * (N - 1) ** (-t)
#: τ_mix(π_min ε) on K_N: the first t ≥ 1 with (N − 1)^(1−t) ≤ ε.
complete_graph_tau = sp.Max(1, sp.ceiling(1 + sp.log(1 / epsilon) / sp.log(N - 1)))

kn = Theorem(
    PAPER,
    "Complete-graph TV closed form",
    "Metropolis–Hastings walk on K_N, uniform π",
    lhs="d(t) = max_u ‖P^t(u,·) − π‖_TV with P = (J − I)/(N − 1); holds with equality",
    assumptions=("N ≥ 2", "uniform π, no self-loops"),
    printed=Form(
        complete_graph_tv,
        (sp.Ge(N, 2),),
        r"d(t)=\frac{N-1}N(N-1)^{-t},\qquad \tau_{\rm mix}(\pi_{\min}\epsilon)="
        r"\big\lceil1+\log_{N-1}(1/\epsilon)\big\rceil",
    ),
    notes=(
        "P^t = J/N + s^t(I − J/N) with s = −1/(N − 1) (eigenvalues 1 and s, N − 1 times), so "
        "P^t(u,·) − π = s^t(e_u − 1/N) and d(t) = |s|^t (N − 1)/N; for N = 10, d(t) = 0.9·9^(−t).",
        "Hence τ_mix(π_min ε) = ⌈1 + log_{N−1}(1/ε)⌉ (``complete_graph_tau``): 2, 2, 3, 3, 4 on "
        "K_10 for ε = 0.4, 0.25, 0.1, 0.05, 0.01.",
        "At N = 2 it gives d(t) = ½ for every t, correctly: K_2 is periodic and never mixes.",
    ),
    check="lorakit.checks.verify(names=['rw_lora.complete_graph_tv_closed_form'])",
)

RW_LORA_THEOREMS = tuple(register_theorem(x) for x in (thm_1, lp, kn))
