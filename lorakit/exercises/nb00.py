"""Exercises of notebook 00 (registered on import; see lorakit.exercises).

The tour's quadratic is ``problems.quadratic(6, 8, L=1.0, mu=0.2, seed=0)`` with rank r = 2.
"""

from __future__ import annotations

from .registry import exercise

M, N, R = 6, 8, 2


def _tour_problem():
    from .. import problems

    return problems.quadratic(M, N, L=1.0, mu=0.2, seed=0)


def _coordinate_diagonal() -> float:
    from ..theory import exact_expected_projector

    return float(exact_expected_projector("coordinate", M, R)[0, 0])


def _rac_rate() -> float:
    from ..theory import lambda_p

    problem = _tour_problem()
    gamma = 1.0 / problem.L
    # RAC-LoRA's default trains A against a fresh left sketch: p = 1, λ = λ_min(E[H_B]).
    return 1.0 - gamma * problem.mu * float(lambda_p(1, R, M, N).min)


def _bound_iterations() -> int:
    from ..theory import get_theorem, lambda_p

    problem = _tour_problem()
    theorem = get_theorem("bernoulli_lora.theorem_9")
    values = {"Delta0": 1.0, "gamma": 1.0 / problem.L, "L": problem.L, "mu": problem.mu}
    values["lam_min"] = float(lambda_p(1, R, M, N).min)
    T = 1
    while theorem.bound(T=T, **values) > 1e-6:
        T += 1
    return T


def _rank_of_target() -> int:
    import torch

    problem = _tour_problem()
    return int(torch.linalg.matrix_rank(problem.W_star - problem.W0))


exercise(
    "00.1",
    "E[H_B] for a coordinate sketch, by hand",
    "compute",
    reference=_coordinate_diagonal,
    rtol=1e-3,
    hint="H_B = diag(1_S) keeps r of the m coordinates. In how many of the r-subsets of "
    "{1, …, m} does a given coordinate lie, out of how many subsets?",
)
exercise(
    "00.2",
    "RAC-LoRA's bound: the factor per step on the tour quadratic",
    "predict",
    reference=_rac_rate,
    rtol=1e-6,
    hint="The bound is (1 − γμλ)ᵗ·Δ⁰ with γ = 1/L. RAC-LoRA freezes a left sketch B_S, so λ is "
    "λ_min(E[H_B]); for an isotropic sketch E[H_B] is a multiple of the identity — which one?",
)
exercise(
    "00.3",
    "How many iterations the bound needs",
    "compute",
    reference=_bound_iterations,
    atol=1.0,
    rtol=0.0,
    hint="Solve ρᵀ ≤ 10⁻⁶ for the smallest integer T, with ρ the factor of exercise 00.2; "
    "take logarithms (both sides are negative) and round up.",
)
exercise(
    "00.4",
    "The smallest LoRA rank that can represent the optimum",
    "compute",
    reference=_rank_of_target,
    compare="exact",
    hint="A single LoRA reaches W⁰ + (α/r)BA, whose change has rank ≤ r. What is the rank of "
    "W* − W⁰ for this problem? (torch.linalg.matrix_rank)",
)
exercise("00.5", "When would you still use a single LoRA?", "open")
