"""Exercises of notebook 01 (registered on import; see lorakit.exercises).

All runs are on ``problems.counterexample()`` (RAC-LoRA Eq. (2)), seed 0 unless stated, 300
iterations, through :func:`lorakit.widgets.counterexample_frame`.
"""

from __future__ import annotations

import math

from .registry import exercise

#: The runs the exercises measure: 300 iterations whatever LORAKIT_FAST says.
STEPS = 300
#: 01.3: seeds and the fitted window (before the gap reaches rounding level).
FIT_SEEDS, FIT_STEPS = range(3), 150
#: 01.4: COLA's steps per link and the bisection's bracket (γL at which it converges, diverges).
COLA_K, BRACKET, BISECTIONS = 5, (0.1, 2.0), 8


def _constants():
    from .. import problems

    problem = problems.counterexample()
    return [float(problem.L), float(problem.mu)]


def _bound_rate() -> float:
    from .. import problems
    from ..theory import lambda_p

    problem = problems.counterexample()
    lam = float(lambda_p(1, 1, problem.m, problem.n).min)  # rank 1, left sketch: r/m
    return 1.0 - (1.0 / problem.L) * problem.mu * lam


def measured_rate(seeds=FIT_SEEDS, steps: int = FIT_STEPS) -> float:
    """RAC-LoRA's measured factor per step at rank 1, γ = 1/L: exp of the least-squares slope of
    log(median over seeds of f(Wᵗ) − f*) for t = 0, …, ``steps``."""
    import numpy as np
    import pandas as pd

    from ..widgets import counterexample_frame

    frame = pd.concat(
        [counterexample_frame(("rac_lora",), 1, 1.0, s, steps) for s in seeds], ignore_index=True
    )
    median = frame.groupby("step")["gap"].median()
    slope = np.polyfit(median.index.to_numpy(float), np.log(median.to_numpy(float)), 1)[0]
    return float(math.exp(slope))


def cola_diverges(step_factor: float, K: int = COLA_K) -> bool:
    """Whether COLA (rank 1, K steps per link, seed 0) blows up within 300 iterations."""
    from ..widgets import counterexample_frame

    frame = counterexample_frame(("cola",), 1, float(step_factor), 0, STEPS, cola_steps_per_link=K)
    return bool(frame.attrs["diverged"])


def largest_converging_step(K: int = COLA_K) -> float:
    """The γL where COLA with K steps per link starts to blow up, by bisection on BRACKET."""
    low, high = BRACKET
    if cola_diverges(low, K) or not cola_diverges(high, K):
        raise RuntimeError(f"the bracket {BRACKET} does not straddle COLA's divergence (K = {K})")
    for _ in range(BISECTIONS):
        mid = (low + high) / 2
        low, high = (low, mid) if cola_diverges(mid, K) else (mid, high)
    return low


def _accept_step(answer, reference) -> bool:
    # Any γL within 5 % below the threshold counts, provided COLA really converges there.
    answer = float(answer)
    return 0.95 * reference <= answer <= 1.05 * reference and not cola_diverges(answer)


exercise(
    "01.1",
    "The smoothness and PL constants of the function as printed",
    "erratum",
    reference=_constants,
    rtol=1e-9,
    hint="Differentiate f(x) = xᵀMx + bᵀx twice: mind the factor that xᵀMx brings, which the "
    "paper's constants leave out. Answer [L, μ].",
)
exercise(
    "01.2",
    "Predict RAC-LoRA's factor per step from λ_min and γμ",
    "predict",
    reference=_bound_rate,
    rtol=1e-6,
    hint="ρ = 1 − γμλ with γ = 1/L, μ from exercise 01.1 and λ = λ_min(E[H_B]) for a rank-1 "
    "left sketch of a 3×3 matrix.",
)
exercise(
    "01.3",
    "Measure RAC-LoRA's factor per step",
    "predict",
    reference=measured_rate,
    rtol=5e-3,
    hint="Run widgets.counterexample_frame(('rac_lora',), 1, 1.0, seed, 150) for seeds 0, 1, 2, "
    "take the median gap per step, fit a straight line to its logarithm (numpy.polyfit) and "
    "exponentiate the slope.",
)
exercise(
    "01.4",
    "The largest γL at which COLA with K = 5 still converges",
    "configure",
    accept=_accept_step,
    reference=largest_converging_step,
    hint="Vary step_factor in counterexample_frame(('cola',), 1, step_factor, 0, 300, "
    "cola_steps_per_link=5) and look at frame.attrs['diverged']; halve the interval between a "
    "converging and a diverging γL a few times.",
)
exercise("01.5", "What does the counterexample prove about COLA?", "open")
