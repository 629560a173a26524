"""Exercises of notebook 06 (registered on import; see lorakit.exercises).

References are computed by lorakit when checked: the approximation errors of
:func:`lorakit.widgets.approximation_frame` (PCA, QRCP), a virtual-clock run of the three rules
(:func:`lorakit.widgets.async_frames`), FedAsync's staleness weight
(:func:`lorakit.asynchronous.clock.staleness_weight`) and Async-FL's corrected time formula
(:data:`lorakit.theory.async_fl.t_corrected`).
"""

from __future__ import annotations

from .registry import exercise

#: 06.1: the target relative error.
TARGET = 0.02
#: 06.2: server updates to reach, clients, straggler law, virtual time budget.
UPDATES, CLIENTS, STRAGGLERS, BUDGET = 30, 10, "heavy_tail", 40.0
#: 06.3: staleness τ of the arriving update (hinge with lorakit's a = 0.5, b = 4).
STALE = 8
#: 06.4: the values at which the time formula is evaluated.
#: (λ = 0.8625, x = 0.4 and (L/μ)A₁ = 2: close enough to 1 that the printed slip shows.)
TIME_VALUES = {
    "L": 1.0,
    "mu": 0.5,
    "gamma": 0.2,
    "rho_bar": 1.0,
    "A1": 1.0,
    "C": 2.75,
    "D_gap": 0.0,
    "E_target": 0.8,
}
#: 06.5: how close to PCA (the Eckart–Young optimum) QRCP must come, above the signal rank 5.
QRCP_SLACK, SIGNAL_RANK = 1.28, 5


def pca_rank_for(target: float = TARGET) -> int:
    """The smallest rank k at which PCA's relative error on the notebook's 40×30 matrix is below
    ``target`` (``approximation_frame()``)."""
    from ..widgets import approximation_frame

    frame = approximation_frame()
    pca = frame[frame["method"] == "pca"]
    return int(pca.loc[pca["rel_error"] < target, "rank"].min())


def first_to_updates(updates: int = UPDATES) -> str:
    """The rule ("fedavg", "fedasync" or "fedbuff") whose server first applies ``updates``
    updates (virtual time), under heavy-tailed stragglers with 10 clients."""
    from ..widgets import async_frames

    history, _ = async_frames(CLIENTS, STRAGGLERS, time_budget=BUDGET, seed=0)
    reach = history[history["update"] >= updates].groupby("rule")["time"].min()
    return str(reach.idxmin())


def fedasync_mixing_weight(tau: int = STALE) -> float:
    """FedAsync's effective mixing weight α·s(τ) for a τ-stale update, hinge s, lorakit's α."""
    from ..asynchronous.clock import AsyncFL, staleness_weight

    return AsyncFL("fedasync", 0.3, staleness="hinge").alpha * staleness_weight("hinge", tau)


def corrected_time(values: dict | None = None) -> float:
    """Async-FL's corrected t (the bound equals E) at ``values`` (default :data:`TIME_VALUES`)."""
    from ..theory import async_fl
    from ..theory import symbols as s

    values = TIME_VALUES if values is None else values
    subs = {getattr(s, name): value for name, value in values.items()}
    return float(async_fl.t_corrected.subs(subs))


def _qrcp_close(answer, reference) -> bool:
    from ..widgets import approximation_frame

    if isinstance(answer, bool) or (not isinstance(answer, int) and not float(answer).is_integer()):
        return False
    k = int(answer)
    frame = approximation_frame().pivot(index="rank", columns="method", values="rel_error")
    if k not in frame.index or k <= SIGNAL_RANK or k >= 30:  # full rank: every method is exact
        return False
    return bool(frame.loc[k, "qrcp"] <= QRCP_SLACK * frame.loc[k, "pca"])


exercise(
    "06.1",
    "the rank at which PCA's error falls below 2%",
    "compute",
    reference=pca_rank_for,
    compare="exact",
    hint=(
        "By Eckart–Young the rank-k PCA error is √(Σ_{i>k} σᵢ²)/√(Σ σᵢ²); compute the singular "
        "values of the notebook's matrix (or read approximation_frame()) and find the first k "
        "below the target. The answer is an int."
    ),
)
exercise(
    "06.2",
    "predict, then run: which rule applies 30 server updates first?",
    "predict",
    reference=first_to_updates,
    compare="exact",
    hint=(
        "Count what one server update costs each rule: a full round (wait for the slowest "
        "client), one arrival, or a buffer of K arrivals. Answer with a rule's key: "
        "'fedavg', 'fedasync' or 'fedbuff'."
    ),
)
exercise(
    "06.3",
    "FedAsync's mixing weight for a stale update",
    "compute",
    reference=fedasync_mixing_weight,
    rtol=1e-9,
    hint=(
        "α_t = α·s(τ): read α from AsyncFL's defaults and evaluate the hinge s(τ) "
        "(1 up to τ = b, then 1/(a(τ − b) + 1))."
    ),
)
exercise(
    "06.4",
    "solve Async-FL's bound for t (the printed formula has a slip)",
    "erratum",
    reference=corrected_time,
    rtol=1e-6,
    hint=(
        "Set (L/μ)λᵗA₁ + x(1 − λᵗ) = E and solve for λᵗ before taking log_λ; compare the "
        "denominator you get with the printed (L/μ)A₁ − 1."
    ),
)
exercise(
    "06.5",
    "a rank above the signal at which QRCP is within 28% of PCA",
    "configure",
    accept=_qrcp_close,
    hint=(
        "Pivot approximation_frame() to one column per method and look at qrcp / pca rank by "
        "rank above 5: the ratio first falls, then climbs. Answer with one int rank."
    ),
)
exercise("06.6", "what would an asynchronous Appendix A need?", "open")
