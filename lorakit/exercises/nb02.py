"""Exercises of notebook 02 (registered on import; see lorakit.exercises)."""

from __future__ import annotations

from .registry import exercise

M, N, R = 4, 16, 2
#: 02.5: the step factors compared for minibatch SGD and the run (steps, seeds).
SGD_STEPS = (1.0, 0.1, 0.01)
SGD_RUN = {"steps": 200, "seeds": 2}


def _coordinate_lambda_A() -> float:
    import sympy as sp

    from ..theory import exact_expected_projector

    EH = exact_expected_projector("coordinate", N, R, side="right")
    return float(min(sp.Matrix(EH).eigenvals()))


def _lambda_quarter() -> float:
    import sympy as sp

    from ..theory import lambda_p

    return float(lambda_p(sp.Rational(1, 4), R, M, N).min)


def _theorem1_bound(p: float) -> float:
    from ..theory import get_theorem, lambda_p

    theorem = get_theorem("bernoulli_lora.theorem_1")
    lam = float(lambda_p(p, R, M, N).min)
    return theorem.bound(Delta0=1.0, gamma=1.0, L=1.0, T=100, lam_min=lam)


def _best_p() -> float:
    grid = [i / 100 for i in range(101)]
    return min(grid, key=_theorem1_bound)


def _bound_ratio() -> float:
    return _theorem1_bound(0.0) / _theorem1_bound(1.0)


def _best_sgd_step() -> float:
    from ..widgets import explorer_frame

    def final_loss(step_factor):
        frame = explorer_frame(estimator="sgd", step_factor=step_factor, **SGD_RUN)
        return float(frame[frame["step"] == frame["step"].max()]["loss"].mean())

    return min(SGD_STEPS, key=final_loss)


exercise(
    "02.1",
    "λ_min(E[H_A]) for a coordinate sketch, by hand",
    "compute",
    reference=_coordinate_lambda_A,
    rtol=1e-3,
    hint="A right coordinate sketch keeps r of the n columns: H_A = diag(1_S). Count the "
    "r-subsets of {1, …, n} that contain a given index.",
)
exercise(
    "02.2",
    "λ^p for p = 1/4",
    "compute",
    reference=_lambda_quarter,
    rtol=1e-6,
    hint="λ^p = p·λ_min(E[H_B]) + (1 − p)·λ_min(E[H_A]); here m = 4, n = 16, r = 2.",
)
exercise(
    "02.3",
    "The p that minimises Theorem 1's bound for m = 4, n = 16",
    "configure",
    reference=_best_p,
    atol=1e-9,
    rtol=0.0,
    hint="The bound is 2Δ⁰/(γλᵖT): it is smallest where λᵖ is largest. How does λᵖ depend on p?",
)
exercise(
    "02.4",
    "How much smaller the bound is at that p than at the other end",
    "predict",
    reference=_bound_ratio,
    rtol=1e-6,
    hint="Divide the bound at one end of [0, 1] by the bound at the other: only λᵖ changes.",
)
exercise(
    "02.5",
    "A step at which minibatch SGD makes progress",
    "configure",
    reference=_best_sgd_step,
    atol=1e-12,
    rtol=0.0,
    hint="Run widgets.explorer_frame(estimator='sgd', step_factor=…, steps=200, seeds=2) for "
    "each candidate and compare the mean loss at the last step over the seeds.",
)
exercise("02.6", "Why does SGD's gradient norm stop falling?", "open")
