"""Measured value, certified worst case (PEP) and bound against the step size γ (notebook 03).

One theorem family at a time (:data:`PEP_FAMILIES`): Bernoulli-LoRA GD on PL functions (Theorem 9,
one step), GD on smooth non-convex functions (Theorem 1, T = 2) and SGD on PL functions (Theorem
8, one step). The sketch is the finite-support coordinate sketch of a 2 × 3 matrix, rank 1, left
with probability p, so λ = p/2 + (1 − p)/3 moves with p; the run (:func:`lorakit.methods.run`
with ``sketch="coordinate"``) and the PEP (:mod:`lorakit.theory.pep_model`, one block per entry)
use the same sketch, γ, p and constants, so each γ reads measured ≤ certified ≤ bound.
"""

from __future__ import annotations

import functools
import math

import altair as alt
import ipywidgets as widgets
import numpy as np
import pandas as pd

from .. import problems as pb
from .._validation import check_choice, check_real
from ..estimators import sgd
from ..methods import run
from ..mode import fast_mode
from ..theory.pep_model import BlockSketch, FunctionClass, Initial, Measure, Method, solve_pep
from ..theory.theorem import get_theorem
from ..viz import HEIGHT, WIDTH
from ._app import App

__all__ = ["PEP_FAMILIES", "PEP_STEP_FACTORS", "pep_app", "pep_chart", "pep_frame"]

#: family → (theorem key, function class, T, noise σ); L = 1 (PL, μ = 0.1) or 2 (non-convex).
PEP_FAMILIES = {
    "GD, PL (Bernoulli-LoRA Theorem 9)": ("bernoulli_lora.theorem_9", "pl", 1, 0.0),
    "GD, non-convex (Bernoulli-LoRA Theorem 1)": ("bernoulli_lora.theorem_1", "smooth", 2, 0.0),
    "SGD, PL (Bernoulli-LoRA Theorem 8)": ("bernoulli_lora.theorem_8", "pl", 1, 0.5),
}
#: γ = factor / L on the chart's axis.
PEP_STEP_FACTORS = (0.2, 0.4, 0.6, 0.8, 1.0)
_M, _N, _MU = 2, 3, 0.1
_SERIES = ["measured (coordinate sketch)", "certified worst case (PEP)", "bound (corrected)"]


def _problem(kind: str):
    if kind == "pl":
        return pb.quadratic(_M, _N, L=1.0, mu=_MU, seed=0)  # μ-strongly convex, hence μ-PL
    return pb.smooth_nonconvex(_M, _N, seed=0)


@functools.lru_cache(maxsize=64)
def _point(family: str, p: float, factor: float, seeds: int) -> tuple[float, float, float, float]:
    """(measured, its standard error, certified, bound) at γ = factor/L."""
    key, kind, T, sigma = PEP_FAMILIES[family]
    problem = _problem(kind)
    L = float(problem.L)
    gamma = factor / L
    delta0 = float(problem.loss(problem.W0)) - problem.f_star
    options = {"estimator": sgd(sigma=sigma)} if sigma else {}
    frame = run("bernoulli_lora", problem, T if kind == "pl" else T - 1, seeds=list(range(seeds)),
                rank=1, p=p, gamma=gamma, sketch="coordinate", **options)  # fmt: skip
    if kind == "pl":
        values = frame[frame.step == T].gap.to_numpy()
    else:
        values = frame.groupby("seed").grad_norm_sq.mean().to_numpy()
    measured, se = float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))
    sketch = BlockSketch(_M, _N, 1, p)
    method = Method(sketch, gamma, "sgd" if sigma else "gd", clients=2 if sigma else 1)
    fclass = FunctionClass(kind, L, _MU if kind == "pl" else 0.0)
    measure = Measure("gap" if kind == "pl" else "avg_grad", T)
    certified = solve_pep(method, fclass, measure, Initial(Delta0=delta0, sigma2=sigma**2 or None))
    constants = dict(gamma=gamma, L=L, lam_min=sketch.lam, Delta0=delta0, T=T)
    if kind == "pl":
        constants["mu"] = _MU
    if sigma:
        constants.update(lam_max=sketch.lam, A1=0.0, B1=1.0, C1=sigma**2)
    thm = get_theorem(key)
    bound = thm.bound("corrected", outside="evaluate", **thm.select(constants))
    return measured, se, certified, bound


def pep_frame(family: str, p: float = 0.5, seeds: int | None = None) -> pd.DataFrame:
    """Measured (mean over ``seeds`` runs), certified worst case and corrected bound at each γ of
    :data:`PEP_STEP_FACTORS` for one :data:`PEP_FAMILIES` entry (columns gamma, measured, stderr,
    certified, bound). Needs the pep extra (PEPit, cvxpy)."""
    check_choice("family", family, PEP_FAMILIES)
    p = check_real("p", p, low=0.0, high=1.0)
    seeds = seeds if seeds is not None else (40 if fast_mode() else 400)
    kind = PEP_FAMILIES[family][1]
    L = float(_problem(kind).L)
    rows = [
        {"gamma": f / L, **dict(zip(("measured", "stderr", "certified", "bound"),
                                    _point(family, round(p, 6), f, seeds), strict=True))}
        for f in PEP_STEP_FACTORS
    ]  # fmt: skip
    return pd.DataFrame(rows)


def pep_chart(frame: pd.DataFrame, gamma: float | None = None) -> alt.LayerChart:
    """The three series of :func:`pep_frame` against γ (the measured one with a ± 3 SE band),
    and a rule at ``gamma``."""
    long = pd.concat(
        [pd.DataFrame({"gamma": frame.gamma, "value": frame[c], "series": s})
         for c, s in zip(("measured", "certified", "bound"), _SERIES, strict=True)]
    )  # fmt: skip
    color = alt.Color("series:N", sort=_SERIES, scale=alt.Scale(domain=_SERIES,
                      range=["#1f77b4", "#d62728", "#000000"]), title=None)  # fmt: skip
    lines = (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("gamma:Q", title="step size γ"),
            y=alt.Y("value:Q", title="left-hand side"),
            color=color,
            tooltip=["series", "gamma", alt.Tooltip("value", format=".4g")],
        )
    )
    band_frame = frame.assign(
        low=frame.measured - 3 * frame.stderr, high=frame.measured + 3 * frame.stderr
    )
    band = alt.Chart(band_frame).mark_area(opacity=0.2).encode(x="gamma:Q", y="low:Q", y2="high:Q")
    layers = [band, lines]
    if gamma is not None:
        layers.append(alt.Chart(pd.DataFrame({"gamma": [gamma]})).mark_rule(strokeDash=[4, 4])
                      .encode(x="gamma:Q"))  # fmt: skip
    return alt.layer(*layers).properties(width=WIDTH, height=HEIGHT)


def pep_app(family: str = next(iter(PEP_FAMILIES)), p: float = 0.5, step: float = 1.0) -> App:
    """Controls for the theorem family, p and the step factor (γ = factor/L); the chart of
    :func:`pep_chart` and a status line with the three numbers at the chosen γ."""
    check_choice("family", family, PEP_FAMILIES)
    controls = {
        "family": widgets.Dropdown(options=list(PEP_FAMILIES), value=family,
                                   description="theorem", layout=widgets.Layout(width="30em")),
        "p": widgets.FloatSlider(value=p, min=0.0, max=1.0, step=0.1, description="p",
                                 continuous_update=False),
        "step": widgets.SelectionSlider(options=PEP_STEP_FACTORS, value=step,
                                        description="γ·L", continuous_update=False),
    }  # fmt: skip

    def compute(family, p, step):
        frame = pep_frame(family, p)
        row = frame.iloc[int(np.argmin(abs(np.array(PEP_STEP_FACTORS) - step)))]
        lam = p / 2 + (1 - p) / 3
        status = (
            f"λ = p/2 + (1 − p)/3 = {lam:.4f}; at γ = {row.gamma:.3g}: measured "
            f"{row.measured:.4g} ± {row.stderr:.1g} ≤ certified worst case {row.certified:.4g} ≤ "
            f"bound {row.bound:.4g} ({100 * (row.bound / row.certified - 1):.0f}% above the worst "
            "case)"
        )
        return frame, [pep_chart(frame, float(row.gamma))], status

    return App(controls, compute)
