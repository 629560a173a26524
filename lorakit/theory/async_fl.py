"""Async-FL's App. A bound and time formula (spec ``async_fl.md`` §5.5–5.6, §3.5, §8).

The paper ("Fully Asynchronous Federated Learning …") has **no** asynchronous rule: its theory is
synchronous FedAvg with partial participation (App. A eq. (1), copied from Cho et al. 2020) and τ is
the number of local SGD steps, not a staleness. The step size η is the kit's step symbol
``gamma``; t counts local SGD iterations (the virtual sequence w̄^(t)); m (``m_sel``) clients are
sampled per round; ρ̄ ≤ ρ̃ is the selection skew (1 for unbiased sampling); Γ (``Gamma_gap``) =
F* − Σ p_k F_k*; A_1 = F(w̄^(0)) − F*.

* ``async_fl.appendix_a_bound`` — F(w̄^(t)) − F* ≤ (L/μ)λ^t A_1 + x(1 − λ^t), λ = 1 − ημ(1 + 3ρ̄/8),
  x = 4L(ηC + D)/(μ(8 + 3ρ̄)), D = 2Γ(ρ̃ − ρ̄). Printed C = 32τ²G² + σ² + 6ρLΓ (ρ read as ρ̄);
  corrected: the derivation's A_4 term gives σ²/m (spec §5.4, §8 item 16), a tighter bound.
* ``async_fl.appendix_a_time_formula`` — the t at which that bound equals E. Printed (appendix):
  log_λ((E − x)/((L/μ)A_1 − 1)), from the slip x(1 − λ^t) → x − λ^t; corrected (the algebra fix,
  spec §5.6, §8 item 12): log_λ((E − x)/((L/μ)A_1 − x)). C and D enter as the symbols ``C`` and
  ``D_gap``.
* ``async_fl.section_3.4_stopping_rule`` — §3.4's rule t = log_λ((δ_g − x)/((L/μ)A_1 − x)) with the
  main-text λ = 1 − nμ(1 + 3ρ̄/8) (n = number of clients, symbol ``N``); corrected: the appendix
  λ = 1 − ημ(1 + 3ρ̄/8) the bound is derived with (spec §5.6, §8 item 11).
"""

from __future__ import annotations

import sympy as sp

from .symbols import (
    A1,
    G2,
    C,
    D_gap,
    E_target,
    Gamma_gap,
    L,
    N,
    gamma,
    m_sel,
    mu,
    rho_bar,
    rho_tilde,
    sigma2,
    t,
    tau,
)
from .theorem import Form, Theorem, register_theorem

__all__ = [
    "ASYNC_FL_THEOREMS",
    "C_corrected",
    "C_printed",
    "D",
    "bound_corrected",
    "bound_printed",
    "lam",
    "lam_main_text",
    "t_corrected",
    "t_printed",
    "x_of",
]

PAPER = "Async-FL"
eta = gamma  # the paper's step size η

B = 1 + sp.Rational(3, 8) * rho_bar
#: λ = 1 − ημB (appendix) and the main text's 1 − nμB (n = number of clients).
lam = 1 - eta * mu * B
lam_main_text = 1 - N * mu * B

#: C as printed (ρ read as ρ̄) and as the derivation gives it (σ²/m from A_4); D = 2Γ(ρ̃ − ρ̄).
C_printed = 32 * tau**2 * G2 + sigma2 + 6 * rho_bar * L * Gamma_gap
C_corrected = 32 * tau**2 * G2 + sigma2 / m_sel + 6 * rho_bar * L * Gamma_gap
D = 2 * Gamma_gap * (rho_tilde - rho_bar)


def x_of(c, d):
    """The error floor x = 4L(ηC + D)/(μ(8 + 3ρ̄)) = L(ηC + D)/(2μB)."""
    return 4 * L * (eta * c + d) / (mu * (8 + 3 * rho_bar))


def _bound(c):
    return (L / mu) * lam**t * A1 + x_of(c, D) * (1 - lam**t)


bound_printed = _bound(C_printed)
bound_corrected = _bound(C_corrected)

_x = x_of(C, D_gap)
t_printed = sp.log((E_target - _x) / ((L / mu) * A1 - 1)) / sp.log(lam)
t_corrected = sp.log((E_target - _x) / ((L / mu) * A1 - _x)) / sp.log(lam)
t_main_text = sp.log((E_target - _x) / ((L / mu) * A1 - _x)) / sp.log(lam_main_text)

_step = sp.Lt(gamma, 1 / (4 * L))
_domain = (sp.Lt(_x, E_target), sp.Le(E_target, (L / mu) * A1))

_ASSUMPTIONS = (
    "G (stated): E‖g_k(w_k, ξ_k)‖² ≤ G² for every k",
    "A1 (used, not stated): each F_k L-smooth",
    "A2 (used, not stated): each F_k μ-strongly convex (GPT-2 fine-tuning is not)",
    "A3 (used, not stated): unbiased stochastic gradients, independent across clients",
    "A4 (used, not stated): E‖g_k − ∇F_k‖² ≤ σ²",
    "constant step η < 1/(4L); selection skew ρ̄ ≤ ρ̃ (Definition 4), Γ ≥ 0 (Definition 3)",
)
_NO_ASYNC = (
    "The paper gives no asynchronous rule (no staleness, discount or mixing weight); this is "
    "synchronous FedAvg with partial participation, τ = local steps. lorakit's FedAsync/FedBuff "
    "(lorakit.asynchronous) are the standard rules, not the paper's."
)

thm_bound = Theorem(
    PAPER,
    "Appendix A bound",
    "FedAvg with partial participation, τ local SGD steps, strongly convex",
    lhs="E F(w̄^(t)) − F*, t the local SGD iteration (w̄ the average of the sampled clients)",
    assumptions=_ASSUMPTIONS,
    printed=Form(
        bound_printed,
        (_step,),
        r"F(\bar w^{(t)})-F^*\le\frac L\mu\lambda^tA_1+x(1-\lambda^t),\ "
        r"\lambda=1-\eta\mu\big(1+\tfrac{3\bar\rho}8\big),\ x=\frac{4L(\eta C+D)}{\mu(8+3\bar\rho)},\ "
        r"C=32\tau^2G^2+\sigma^2+6\rho L\Gamma,\ D=2\Gamma(\tilde\rho-\bar\rho)",
    ),
    corrected=Form(
        bound_corrected,
        (_step,),
        r"\text{same, with }C=32\tau^2G^2+\frac{\sigma^2}m+6\bar\rho L\Gamma",
    ),
    erratum=(
        "the derivation's noise term A_4 is η²σ²/m, so C has σ²/m, not σ² (and ρ is ρ̄); the "
        "corrected floor is smaller by 4Lησ²(1 − 1/m)/(μ(8 + 3ρ̄)) · (1 − λ^t). The printed form is "
        "looser, so it still holds (spec §5.4, §8 item 16)"
    ),
    notes=(
        _NO_ASYNC,
        "The key recursion (spec §5.4) and the drift lemma (1/m)E Σ‖w̄ − w_k‖² ≤ 16η²τ²G² are "
        "not in the paper; the bound follows from them by unrolling with constant η.",
        "Bounded gradients and strong convexity are jointly inconsistent on unbounded domains; "
        "checks estimate G² along the trajectory.",
        "As t → ∞ the bound tends to x; with unbiased sampling ρ̄ = ρ̃ = 1, D = 0, x = 4LηC/(11μ).",
    ),
    check="lorakit.checks.verify(names=['async_fl.appendix_a_bound'])",
)

thm_time = Theorem(
    PAPER,
    "Appendix A time formula",
    "iteration at which the App. A bound reaches a target E",
    lhs="the real t with (L/μ)λ^t A_1 + x(1 − λ^t) = E (the bound is ≤ E for every later t)",
    assumptions=("the App. A bound with constant η", "x < E ≤ (L/μ)A_1, 0 < λ < 1"),
    printed=Form(
        t_printed,
        (_step, *_domain),
        r"t=\log_\lambda\Big(\frac{F(\bar w^{(t)})-F^*-x}{\frac L\mu A_1-1}\Big)",
    ),
    corrected=Form(
        t_corrected,
        (_step, *_domain),
        r"t=\log_\lambda\Big(\frac{E-x}{\frac L\mu A_1-x}\Big)",
    ),
    erratum=(
        "the appendix rewrites x(1 − λ^t) as x − λ^t; solving (L/μ)λ^tA_1 + x(1 − λ^t) = E gives the "
        "denominator (L/μ)A_1 − x, not (L/μ)A_1 − 1 (the error term is λ^t(1 − x): right only at "
        "x = 1; the main text has the right form) (spec §5.6, §8 item 12)"
    ),
    notes=(
        "t counts local SGD iterations, not communication rounds.",
        "The paper treats the bound's ≤ as =, so t is where the *upper bound* reaches E.",
    ),
    check="lorakit.checks.verify(names=['async_fl.appendix_a_time_formula'])",
)

thm_stop = Theorem(
    PAPER,
    "Section 3.4 stopping rule",
    "stop training when the App. A bound reaches the reconstruction error δ_g",
    lhs="the real t with (L/μ)λ^t A_1 + x(1 − λ^t) = δ_g, λ = 1 − ημ(1 + 3ρ̄/8)",
    assumptions=("the App. A bound with constant η", "x < δ_g ≤ (L/μ)A_1"),
    printed=Form(
        t_main_text,
        (_step, *_domain, sp.Lt(0, lam_main_text)),
        r"\lambda=1-n\mu\big(1+\tfrac{3\bar\rho}8\big),\ "
        r"t=\log_\lambda\Big(\frac{\delta_g-x}{\frac L\mu A_1-x}\Big);\ "
        r"\text{halt if }t\ge\text{current round}",
    ),
    corrected=Form(
        t_corrected,
        (_step, *_domain),
        r"\lambda=1-\eta\mu\big(1+\tfrac{3\bar\rho}8\big),\ "
        r"t=\log_\lambda\Big(\frac{\delta_g-x}{\frac L\mu A_1-x}\Big)",
    ),
    erratum=(
        "§3.4 (and §2.3) use λ = 1 − nμ(1 + 3ρ̄/8) with n the number of clients; the bound it "
        "inverts contracts by λ = 1 − ημ(1 + 3ρ̄/8) per local SGD step (spec §5.6, §8 item 11)"
    ),
    notes=(
        "Direction: §3.4 halts when t ≥ current round, §2.3 when the round reaches t (spec §8 "
        "item 10); the formula's t counts local iterations, the rule compares it with rounds.",
        "δ_g (a weight-space reconstruction error) stands in for F(w̄^(t)) − F*, unjustified.",
        "With n = 2 and μ = 1/L the main-text λ is positive only for L > 2(1 + 3ρ̄/8).",
    ),
    check="lorakit.checks.verify(names=['async_fl.section_3.4_stopping_rule'])",
)

ASYNC_FL_THEOREMS = tuple(register_theorem(th) for th in (thm_bound, thm_time, thm_stop))
