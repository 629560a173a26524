"""The sympy symbols shared by every theorem, named as in the papers.

All are positive reals except where a quantity may be zero (Δ^0, σ², A_1, B_1, C_1, 𝒢^0, Δ*).
"""

from __future__ import annotations

import sympy as sp

__all__ = ["NAMES", "SYMBOLS", "UNIT_INTERVAL", "domain"]

_pos = {"positive": True, "real": True}
_nonneg = {"nonnegative": True, "real": True}

L, mu, gamma, T, N, M, C = sp.symbols("L mu gamma T N M C", **_pos)
lam_min, lam_max = sp.symbols("lambda_min lambda_max", **_pos)
eta_tilde = sp.Symbol("eta_tilde", **_pos)  # Fed-RAC-LoRA server step η̃ = β·γ·N
Delta0, sigma2, A1, B1, C1 = sp.symbols("Delta0 sigma2 A1 B1 C1", **_nonneg)
G0, Delta_star, Delta_m_star = sp.symbols("G0 Delta_star Delta_m_star", **_nonneg)
q, b, beta = sp.symbols("q b beta", **_pos)  # PAGE, MVR momentum, EF21 contraction
omega = sp.Symbol("omega", **_nonneg)
R0, L0, alpha_H = sp.symbols(
    "R0 L0 alpha_H", **_pos
)  # non-smooth: ‖W^0 − W*‖, Lipschitz, E[H] = α_H I
# FSLoRA: local steps H, ρ_1 = mean r/k_i, ρ_2 = mean (r/k_i)², the rank r and a budget k, the
# heterogeneity constants c_h, σ_h² (Assumption 4.3), the sketch and data variances σ_s², σ_g²
# (Assumption 4.2), F_0 = f^S(X^0) − f*, and ‖X‖² (Lemma D.3).
H, rho1, rho2, r, k = sp.symbols("H rho1 rho2 r k", **_pos)
c_h, sigma_g2, sigma_s2, sigma_h2 = sp.symbols("c_h sigma_g2 sigma_s2 sigma_h2", **_nonneg)
F0, X_norm2 = sp.symbols("F0 X_norm2", **_nonneg)
# RW-LoRA (random walk): a bounds ‖A^(t)‖ (‖B^(t)‖ ≤ b reuses the symbol b), c² the stochastic
# gradients' second moment, σ² is sigma2, τ the lag (τ ≥ τ_mix(π_min ε)), ε the mixing accuracy,
# F_τ = E f(W^(τ)) and f_inf a lower bound of f; the step η is the kit's step symbol gamma. The
# mixing-time facts use t_rel = 1/(1 − λ*), π_min and the time t.
a, c, tau, tau_mix = sp.symbols("a c tau tau_mix", **_pos)
epsilon, t_rel, pi_min, t = sp.symbols("epsilon t_rel pi_min t", **_pos)
F_tau, f_inf = sp.symbols("F_tau f_inf", real=True)
# Async-FL (App. A, FedAvg with partial participation): m clients sampled per round, selection skew
# ρ̄ ≤ ρ̃, G² bounds E‖g_k‖², Γ_gap = F* − Σ p_k F_k* (the paper's Γ), D = 2Γ(ρ̃ − ρ̄), and the
# target E of the time formula (δ_g in the §3.4 stopping rule).
m_sel, rho_bar, rho_tilde = sp.symbols("m_sel rho_bar rho_tilde", **_pos)
G2, Gamma_gap, D_gap, E_target = sp.symbols("G2 Gamma_gap D_gap E_target", **_nonneg)

#: keyword name (as passed to ``Theorem.bound(**values)``) → symbol; sympy prints the symbol's
#: own name (λ_min as ``lambda_min``, η̃ as ``eta_tilde``, …).
SYMBOLS: dict[str, sp.Symbol] = {
    "L": L,
    "mu": mu,
    "gamma": gamma,
    "T": T,
    "N": N,
    "M": M,
    "C": C,
    "lam_min": lam_min,
    "lam_max": lam_max,
    "eta_tilde": eta_tilde,
    "Delta0": Delta0,
    "sigma2": sigma2,
    "A1": A1,
    "B1": B1,
    "C1": C1,
    "G0": G0,
    "Delta_star": Delta_star,
    "Delta_m_star": Delta_m_star,
    "q": q,
    "b": b,
    "beta": beta,
    "omega": omega,
    "R0": R0,
    "L0": L0,
    "alpha_H": alpha_H,
    "H": H,
    "rho1": rho1,
    "rho2": rho2,
    "r": r,
    "k": k,
    "c_h": c_h,
    "sigma_g2": sigma_g2,
    "sigma_s2": sigma_s2,
    "sigma_h2": sigma_h2,
    "F0": F0,
    "X_norm2": X_norm2,
    "a": a,
    "c": c,
    "tau": tau,
    "tau_mix": tau_mix,
    "epsilon": epsilon,
    "t_rel": t_rel,
    "pi_min": pi_min,
    "t": t,
    "F_tau": F_tau,
    "f_inf": f_inf,
    "m_sel": m_sel,
    "rho_bar": rho_bar,
    "rho_tilde": rho_tilde,
    "G2": G2,
    "Gamma_gap": Gamma_gap,
    "D_gap": D_gap,
    "E_target": E_target,
}
NAMES: dict[sp.Symbol, str] = {v: k for k, v in SYMBOLS.items()}

#: Keywords that are probabilities, eigenvalues of an expected projector or accuracies: in (0, 1].
UNIT_INTERVAL = frozenset({"lam_min", "lam_max", "alpha_H", "q", "beta", "pi_min", "epsilon"})


def domain(name: str) -> tuple[float | None, float | None, bool]:
    """(low, high, low_open) of a keyword's values: > 0 for a positive symbol, ≥ 0 for a
    non-negative one, any real for ``F_tau`` and ``f_inf``; the :data:`UNIT_INTERVAL` keywords
    are at most 1. Used by :meth:`lorakit.theory.Theorem.bound` to refuse values outside it."""
    symbol = SYMBOLS[name]
    high = 1.0 if name in UNIT_INTERVAL else None
    if symbol.is_positive:
        return 0.0, high, True
    if symbol.is_nonnegative:
        return 0.0, high, False
    return None, high, False
