"""Apps of notebooks 01 and 02: the RAC-LoRA counterexample and the Bernoulli-LoRA explorer."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import altair as alt
import ipywidgets as widgets
import numpy as np
import pandas as pd

from .. import estimators as est
from .. import problems
from .._validation import check_choice, check_int, check_real
from ..methods import METHODS, run
from ..mode import by_mode
from ..sketches import SKETCHES
from ..theory import lambda_p as lambda_p_of
from ..viz import convergence_chart, theory_rate_frame
from ._app import App, one_thread

COUNTEREXAMPLE_METHODS = ("lora", "asymm_lora", "cola", "rac_lora", "bernoulli_lora")
EXPLORER_SKETCHES = tuple(SKETCHES)
EXPLORER_ESTIMATORS = ("gd", "sgd", "page", "mvr")
GRAD_SERIES = "squared gradient norm ‖∇f(Wᵗ)‖² at iteration t"
AVG_SERIES = "its running mean over the first T iterates"
#: The methods' names as the papers write them, for legends and status lines.
METHOD_LABELS = {
    "lora": "LoRA",
    "asymm_lora": "AsymmLoRA",
    "cola": "COLA",
    "rac_lora": "RAC-LoRA",
    "bernoulli_lora": "Bernoulli-LoRA",
}
SKETCH_LABELS = {"gaussian": "Gaussian", "haar": "Haar", "coordinate": "coordinate",
                 "kaiming_uniform": "Kaiming-uniform"}  # fmt: skip
ESTIMATOR_LABELS = {"gd": "GD", "sgd": "SGD", "page": "PAGE", "mvr": "MVR"}
#: The explorer's γ·L when an estimator is picked: γL = 1 (Theorem 1's step) for GD and PAGE (whose
#: minibatch corrections here track the full gradient: same loss as GD). On linear_regression(8, 8)
#: minibatch SGD at γL = 1 makes no progress (f stays at 0.55 after 200 steps, from 0.556) and MVR
#: stalls at a noisy level; at γL = 0.1 both end within 0.004 of GD's f = 0.495 (3 seeds).
ESTIMATOR_STEP = {"gd": 1.0, "sgd": 0.1, "page": 1.0, "mvr": 0.1}
X_TITLE = "iteration t"


@functools.lru_cache(maxsize=1)
def _counterexample():
    return problems.counterexample()


@functools.lru_cache(maxsize=8)
def _linear_regression(m: int, n: int):
    # Building it pre-trains W0 with L-BFGS (up to ~1 s); every redraw reuses it.
    return problems.linear_regression(m, n)


# ---------------------------------------------------------------------------------------------
# Why LoRA fails: the counterexample
# ---------------------------------------------------------------------------------------------
def counterexample_frame(
    methods: Iterable[str] = COUNTEREXAMPLE_METHODS,
    rank: int = 1,
    step_factor: float = 1.0,
    seed: int = 0,
    steps: int | None = None,
    *,
    cola_steps_per_link: int = 1,
    p: float = 0.5,
) -> pd.DataFrame:
    """Each method on the RAC-LoRA counterexample (Eq. (2), Fig. 1) from W⁰ = 0; one tidy frame.

    γ = ``step_factor``/L with L = 20 (the Hessian of Eq. (2) as printed is 2M; the paper's
    "L = 10" is the ½-convention, so the paper's "γ = 1/L" is ``step_factor=2`` here). RAC-LoRA
    (left sketch), Bernoulli-LoRA (``p``) and AsymmLoRA take the projected step W ← W − γ H G;
    LoRA and COLA take plain gradient steps on both factors with learning rate γ (``sgd``), COLA
    merging and restarting every ``cola_steps_per_link`` steps. ``steps`` defaults to 300 (100 with
    ``LORAKIT_FAST=1``).

    Runs that blow up stop (``on_divergence="stop"``); the column ``diverged_at`` holds the step
    where a run stopped (NaN otherwise) and ``frame.attrs["diverged"]`` maps method → step.
    Extra columns: ``step_factor``.
    """
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(dict.fromkeys(methods))
    if not methods:
        raise ValueError(f"methods must name at least one of {list(COUNTEREXAMPLE_METHODS)}")
    for method in methods:
        check_choice("methods", method, METHODS)
    problem = _counterexample()
    rank = check_int("rank", rank, low=1, high=min(problem.m, problem.n))
    step_factor = check_real("step_factor", step_factor, low=0.0, low_open=True)
    seed = check_int("seed", seed, low=0)
    steps = check_int("steps", by_mode(steps, 300, 100), low=1)
    cola_steps_per_link = check_int("cola_steps_per_link", cola_steps_per_link, low=1)
    p = check_real("p", p, low=0.0, high=1.0)
    gamma = step_factor / problem.L
    config = {
        "lora": {"update": "sgd"},
        "cola": {"update": "sgd", "steps_per_link": cola_steps_per_link},
        "bernoulli_lora": {"p": p},
    }
    frames, diverged = [], {}
    for method in methods:
        with one_thread():
            frame = run(
                method,
                problem,
                steps,
                seed,
                rank=rank,
                gamma=gamma,
                on_divergence="stop",
                **config.get(method, {}),
            )
        stop = frame.attrs.get("diverged", {}).get(seed)
        frame["diverged_at"] = float("nan") if stop is None else float(stop)
        if stop is not None:
            diverged[method] = stop
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame["step_factor"] = step_factor
    frame.attrs = {"diverged": diverged, "problem": problem.name, "steps": steps}
    return frame


def final_values(frame: pd.DataFrame, y: str = "gap", by: str = "method") -> pd.DataFrame:
    """The last logged value of ``y`` per ``by`` group and seed: columns ``by``, seed, step, ``y``,
    ``diverged_at`` (NaN for runs that did not diverge)."""
    for col in (y, by, "seed", "step"):
        if col not in frame.columns:
            raise ValueError(f"{col!r} is not a column of the frame")
    last = frame.loc[frame.groupby([by, "seed"], sort=False)["step"].idxmax()]
    cols = [by, "seed", "step", y] + (["diverged_at"] if "diverged_at" in frame else [])
    out = last[cols].reset_index(drop=True)
    if "diverged_at" not in out:
        out["diverged_at"] = float("nan")
    return out


def _counterexample_status(frame: pd.DataFrame) -> str:
    """Per method: the final gap, or "diverged at step t" (and where it peaked when the gap rose
    above its start on the way: a transient blow-up that came back is not a plain final gap)."""
    steps = int(frame.attrs.get("steps", frame["step"].max()))
    start = frame.loc[frame["step"] == 0, "gap"]
    gap0 = float(start.iloc[0]) if len(start) else math.nan
    parts = []
    for row in final_values(frame).itertuples(index=False):
        name = METHOD_LABELS.get(row.method, row.method)
        if not math.isnan(row.diverged_at):
            parts.append(
                f"<b>{name}</b>: <span style='color:#c00'>diverged at step "
                f"{int(row.diverged_at)} (run stopped)</span>"
            )
            continue
        text = f"<b>{name}</b>: final f − f* = {row.gap:.2e}"
        run = frame[frame["method"] == row.method]
        peak = run.loc[run["gap"].idxmax()]
        if float(peak["gap"]) > 10 * gap0:
            text += (
                f" <span style='color:#c60'>(rose to {float(peak['gap']):.2e} at step "
                f"{int(peak['step'])} first)</span>"
            )
        parts.append(text)
    text = f"After {steps} iterations — " + " · ".join(parts)
    projected = [METHOD_LABELS[m] for m in ("asymm_lora", "rac_lora", "bernoulli_lora")
                 if m in set(frame["method"])]  # fmt: skip
    if int(frame["rank"].iloc[0]) == 3 and len(projected) > 1:
        text += (
            f" <br><i>At rank 3 a sketch spans all of ℝ³ (H = I), so {', '.join(projected)} "
            "are all gradient descent: their lines coincide.</i>"
        )
    return text


def _chart_frame(frame: pd.DataFrame, color: str, labels: dict | None = None) -> pd.DataFrame:
    """A copy of a run table for a chart: the iteration column titled in words and the ``color``
    column's values relabelled (axis titles and legends show words, not column names)."""
    out = frame.rename(columns={"step": X_TITLE})
    if labels:
        out[color] = out[color].map(lambda v: labels.get(v, v))
    return out


def _with_divergence_labels(chart: alt.LayerChart, frame: pd.DataFrame, color: str, y: str,
                            log: bool = True) -> alt.LayerChart:  # fmt: skip
    """Add a red text label "… diverged at step t" at the last drawn point of every diverged run
    (``convergence_chart`` draws a red cross there; the label says what the cross means)."""
    if "diverged_at" not in frame or frame["diverged_at"].isna().all():
        return chart
    runs = frame[frame["diverged_at"].notna() & np.isfinite(frame[y])]
    if log:
        runs = runs[runs[y] > 0]
    if runs.empty:
        return chart
    last = runs.loc[runs.groupby([color, "seed"])[X_TITLE].idxmax()]
    marks = pd.DataFrame(
        {
            X_TITLE: last[X_TITLE].to_numpy(),
            "value": last[y].to_numpy(dtype=float),
            "text": [
                f"{c} diverged at step {int(t)}"
                for c, t in zip(last[color], last["diverged_at"], strict=True)
            ],
        }
    )
    y_scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    # One layer per label, the highest point's label above it and each next one 16 px lower, so
    # runs that stop at nearby points stay readable.
    marks = marks.sort_values("value", ascending=False, kind="stable")
    for i in range(len(marks)):
        chart.layer.append(
            alt.Chart(marks.iloc[[i]])
            .mark_text(align="left", dx=8, dy=-8 + 16 * i, color="#c00", fontWeight="bold")
            .encode(
                x=alt.X(f"{X_TITLE}:Q"), y=alt.Y("value:Q", scale=y_scale), text=alt.Text("text:N")
            )
        )
    return chart


def counterexample_chart(frame: pd.DataFrame, theory: bool = True) -> alt.LayerChart:
    """f − f* against the iteration for every method of a :func:`counterexample_frame`.

    With ``theory`` and γ ≤ 1/L the PL rate (1 − γμλ)ᵗ·Δ⁰ of RAC-LoRA Theorem 5.5 /
    Bernoulli-LoRA Theorem 9 is drawn dashed, λ = λ^p = r/3 for m = n = 3 (any p). It bounds the
    *expected* gap of RAC-LoRA and Bernoulli-LoRA, not of LoRA, AsymmLoRA or COLA.
    """
    problem = _counterexample()
    sf = float(frame["step_factor"].iloc[0]) if "step_factor" in frame else float("nan")
    rank = int(frame["rank"].iloc[0])
    rate_frame = None
    projected = {"rac_lora", "bernoulli_lora"} & set(frame["method"])
    if theory and projected and sf <= 1.0:
        gamma = sf / problem.L
        lam = float(lambda_p_of(0.5, rank, problem.m, problem.n).min)  # r/3 for every p (m = n)
        delta0 = float(problem.loss(problem.W0)) - problem.f_star
        rate_frame = theory_rate_frame(
            int(frame["step"].max()),
            delta0,
            1 - gamma * problem.mu * lam,
            "bound on E[f − f*]: (1 − γμλᵖ)ᵗ·Δ⁰ (Thm 5.5 / Thm 9)",
        )
    data = _chart_frame(frame, "method", METHOD_LABELS)
    chart = convergence_chart(
        data,
        y="gap",
        x=X_TITLE,
        y_title="optimality gap f(Wᵗ) − f*",
        title=f"RAC-LoRA counterexample: rank {rank}, γ = {sf:g}/L (L = 20)",
        theory=rate_frame,
        series_styles=True,  # RAC-LoRA's line runs under Bernoulli-LoRA's (seed 1)
    )
    return _with_divergence_labels(chart, data, "method", "gap")


def _step_factor_slider(value: float, upper: float, style) -> widgets.FloatLogSlider:
    """γ·L on a log scale from 10⁻² to 10^upper (widened to include ``value``)."""
    log_sf = math.log10(value)
    return widgets.FloatLogSlider(
        value=value,
        base=10,
        min=min(-2, log_sf),
        max=max(upper, log_sf),
        step=0.05,
        description="γ·L",
        readout_format=".3g",
        continuous_update=False,
        style=style,
    )


def why_lora_fails_app(
    methods: Iterable[str] = COUNTEREXAMPLE_METHODS,
    rank: int = 1,
    step_factor: float = 1.0,
    seed: int = 0,
    steps: int | None = None,
) -> App:
    """Sliders for the methods, rank, step factor γ·L, COLA's K, seed and iterations, redrawing
    f − f* against the iteration on the counterexample (:func:`counterexample_frame`).

    Computes and draws once when built; returns an :class:`App` (an ``ipywidgets.VBox``).
    """
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    steps = check_int("steps", by_mode(steps, 300, 100), low=1)
    # Validate the initial values once, with the functions' own messages (one cheap step).
    counterexample_frame(methods, rank, step_factor, seed, 1)
    style = {"description_width": "initial"}
    controls = {
        "methods": widgets.SelectMultiple(
            options=COUNTEREXAMPLE_METHODS, value=tuple(methods), rows=5, description="methods"
        ),
        "rank": widgets.IntSlider(
            value=rank, min=1, max=3, description="rank r", continuous_update=False
        ),
        "step_factor": _step_factor_slider(step_factor, 0.6, style),
        "cola_steps_per_link": widgets.IntSlider(
            value=1, min=1, max=50, description="COLA K", continuous_update=False
        ),
        "seed": widgets.BoundedIntText(value=seed, min=0, max=10**6, description="seed"),
        "steps": widgets.IntSlider(
            value=steps,
            min=min(10, steps),
            max=max(2000, steps),
            step=10,
            description="iterations",
            continuous_update=False,
        ),
    }

    def compute(methods, rank, step_factor, seed, steps, cola_steps_per_link):
        frame = counterexample_frame(
            methods, rank, step_factor, seed, steps, cola_steps_per_link=cola_steps_per_link
        )
        return frame, [counterexample_chart(frame)], _counterexample_status(frame)

    return App(controls, compute, n_charts=1)


# ---------------------------------------------------------------------------------------------
# The Bernoulli-LoRA explorer
# ---------------------------------------------------------------------------------------------
def _make_estimator(name: str, q: float, b: float, batch_size: int):
    check_choice("estimator", name, EXPLORER_ESTIMATORS)
    if name == "gd":
        return est.gd()
    if name == "sgd":
        return est.sgd(batch_size=batch_size)
    if name == "page":
        return est.page(q, batch_size=batch_size)
    return est.mvr(b, batch_size=batch_size)


def explorer_frame(
    p: float = 0.5,
    rank: int = 2,
    sketch: str = "gaussian",
    estimator: str = "gd",
    step_factor: float = 1.0,
    steps: int | None = None,
    seeds: int | Iterable[int] | None = None,
    m: int = 8,
    n: int = 8,
    q: float = 0.1,
    b: float = 0.1,
    batch_size: int = 10,
) -> pd.DataFrame:
    """Bernoulli-LoRA on ``linear_regression(m, n)`` (Bernoulli-LoRA Sec. 7.1) with γ = step_factor/L.

    ``estimator`` is ``gd``, ``sgd`` (minibatches of ``batch_size``), ``page`` (full gradient with
    probability ``q``, else minibatch differences) or ``mvr`` (momentum ``b``, minibatches).
    ``seeds`` is a count (seeds 0, …, seeds − 1) or an iterable of seeds; ``steps`` and ``seeds``
    default to 200 and 3 (60 and 2 with ``LORAKIT_FAST=1``). Diverging seeds stop early
    (``frame.attrs["diverged"]``). Extra columns: ``step_factor``, ``lambda_p`` (λ^p =
    p·r/m + (1 − p)·r/n) and ``config`` (a label for charts).
    """
    p = check_real("p", p, low=0.0, high=1.0)
    m, n = check_int("m", m, low=1), check_int("n", n, low=1)
    rank = check_int("rank", rank, low=1, high=min(m, n))
    check_choice("sketch", sketch, EXPLORER_SKETCHES)
    step_factor = check_real("step_factor", step_factor, low=0.0, low_open=True)
    steps = check_int("steps", by_mode(steps, 200, 60), low=1)
    seeds = by_mode(seeds, 3, 2)
    if isinstance(seeds, Iterable):
        seeds = [check_int("seeds", s, low=0) for s in seeds]
        if not seeds:
            raise ValueError("seeds must name at least one seed")
    else:
        seeds = list(range(check_int("seeds", seeds, low=1)))
    estimator_obj = _make_estimator(estimator, q, b, batch_size)
    problem = _linear_regression(m, n)
    check_int("batch_size", batch_size, low=1, high=problem.n_samples)
    gamma = step_factor / problem.L
    with one_thread():
        frame = run(
            "bernoulli_lora",
            problem,
            steps,
            seeds,
            rank=rank,
            gamma=gamma,
            p=p,
            sketch=sketch,
            estimator=estimator_obj,
            on_divergence="stop",
        )
    diverged = dict(frame.attrs.get("diverged", {}))
    frame["diverged_at"] = frame["seed"].map(diverged).astype(float)
    frame["step_factor"] = step_factor
    frame["lambda_p"] = float(lambda_p_of(p, rank, m, n).min)
    frame["config"] = (
        f"p = {p:g}, rank {rank}, {SKETCH_LABELS.get(sketch, sketch)} sketch, "
        f"{ESTIMATOR_LABELS[estimator]}"
    )
    frame.attrs = {"diverged": diverged, "problem": problem.name, "m": m, "n": n}
    return frame


def _running_means(frame: pd.DataFrame) -> pd.DataFrame:
    """Per seed, (1/T)·Σ_{t<T} ‖∇f(W^t)‖² for T = 1, 2, …: columns seed, step (= T), running_avg."""
    out = []
    for seed, g in frame.sort_values("step").groupby("seed", sort=True):
        steps = g["step"].to_numpy()
        if not np.array_equal(steps, np.arange(len(steps))):
            raise ValueError(
                "explorer_theory needs every step logged (log_every=1) from step 0, "
                f"seed {seed} has steps {steps[:5].tolist()}…"
            )
        values = g["grad_norm_sq"].to_numpy(dtype=float)
        T = np.arange(1, len(values) + 1)
        out.append(pd.DataFrame({"seed": seed, "step": T, "running_avg": np.cumsum(values) / T}))
    return pd.concat(out, ignore_index=True)


def explorer_theory(
    frame: pd.DataFrame,
    problem,
    *,
    gamma: float | None = None,
    p: float | None = None,
    rank: int | None = None,
    lambda_p: float | None = None,
) -> pd.DataFrame:
    """Bernoulli-LoRA Theorem 1 (GD, smooth non-convex, 0 < γ ≤ 1/L) against the measured run.

    For T = 1, …, (last step + 1), one row with

    * ``running_avg`` — the measured (1/T)·Σ_{t<T} ‖∇f(W^t)‖², averaged over seeds (the theorem
      bounds its expectation, E‖∇f(W̃^T)‖² with W̃^T uniform on W⁰, …, W^{T−1});
      ``running_avg_min``/``running_avg_max`` over seeds;
    * ``bound`` = 2(f(W⁰) − f_low)/(γ λ^p T), with f_low = ``problem.f_lower`` (≤ f*, so this
      is Δ⁰ or larger and the bound stays valid when f* is unknown) and
      λ^p = p·r/m + (1 − p)·r/n (isotropic sketches, Bernoulli-LoRA §4);
    * ``lambda_p``, ``gamma``, ``label`` (which says when the run is outside the theorem: γ > 1/L
      or a stochastic estimator, for which Theorem 1 is shown for reference only).

    γ, p and r are read from ``frame`` unless given.
    """
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise ValueError("frame must be a non-empty run table")
    for col in ("seed", "step", "grad_norm_sq"):
        if col not in frame.columns:
            raise ValueError(f"frame lacks the column {col!r}")
    if gamma is None:
        gamma = float(frame["gamma"].dropna().iloc[0])
    gamma = check_real("gamma", gamma, low=0.0, low_open=True)
    if lambda_p is None:
        p = float(frame["p"].iloc[0]) if p is None else p
        p = check_real("p", p, low=0.0, high=1.0)
        rank = int(frame["rank"].iloc[0]) if rank is None else rank
        rank = check_int("rank", rank, low=1, high=min(problem.m, problem.n))
        lambda_p = float(lambda_p_of(p, rank, problem.m, problem.n).min)
    lambda_p = check_real("lambda_p", lambda_p, low=0.0, high=1.0, low_open=True)
    f_low = problem.f_lower if problem.f_lower is not None else problem.f_star
    if f_low is None:
        raise ValueError(f"problem {problem.name!r} has neither f_lower nor f_star")
    delta0 = float(problem.loss(problem.W0)) - f_low

    per_seed = _running_means(frame)
    agg = per_seed.groupby("step")["running_avg"].agg(["mean", "min", "max"]).reset_index()
    agg.columns = ["step", "running_avg", "running_avg_min", "running_avg_max"]
    agg["bound"] = 2 * delta0 / (gamma * lambda_p * agg["step"])
    agg["lambda_p"] = lambda_p
    agg["gamma"] = gamma
    label = "Theorem 1 bound on the running mean"
    if problem.L is not None and gamma > 1 / problem.L * (1 + 1e-12):
        label += " (γ > 1/L: outside Theorem 1)"
    estimators = set(frame["estimator"].astype(str)) if "estimator" in frame else {"gd"}
    if estimators != {"gd"}:
        label += " (a GD theorem, for reference)"
    agg["label"] = label
    return agg


def _gradient_series(frame: pd.DataFrame) -> pd.DataFrame:
    """‖∇f(W^t)‖² at x = t and its running mean at x = T, in long form (seed, step, series, value)."""
    grad = frame[["seed", "step", "grad_norm_sq"]].rename(columns={"grad_norm_sq": "value"})
    grad["series"] = GRAD_SERIES
    avg = _running_means(frame).rename(columns={"running_avg": "value"})
    avg["series"] = AVG_SERIES
    return pd.concat([grad, avg], ignore_index=True)


def explorer_charts(frame: pd.DataFrame, theory: pd.DataFrame) -> tuple:
    """The explorer's two charts: f(W^t), and ‖∇f‖² with its running mean under the Thm 1 bound."""
    # f* is unknown (non-convex), so the loss itself is drawn, on a linear axis.
    data = _chart_frame(frame, "config").rename(columns={"config": "configuration"})
    loss = convergence_chart(
        data,
        y="loss",
        color="configuration",
        x=X_TITLE,
        log=False,
        y_title="loss f(Wᵗ)",
        title="Loss f(Wᵗ) (median over seeds, band: min–max)",
    )
    loss = _with_divergence_labels(loss, data, "configuration", "loss", log=False)
    x_grad = "iteration t (T for the running mean)"
    series = _gradient_series(frame).rename(columns={"series": "quantity", "step": x_grad})
    theory_frame = theory[["step", "bound", "label"]].rename(columns={"bound": "value"})
    grad = convergence_chart(
        series,
        y="value",
        color="quantity",
        x=x_grad,
        y_title="squared gradient norm ‖∇f‖²",
        title="‖∇f(Wᵗ)‖² and its running mean under the Theorem 1 bound",
        theory=theory_frame,
    )
    return loss, grad


def _explorer_status(frame: pd.DataFrame, theory: pd.DataFrame) -> str:
    last = theory.iloc[-1]
    lam, gamma = float(last["lambda_p"]), float(last["gamma"])
    sf = float(frame["step_factor"].iloc[0])
    m, n = frame.attrs.get("m", "m"), frame.attrs.get("n", "n")
    p, r = float(frame["p"].iloc[0]), int(frame["rank"].iloc[0])
    T = int(last["step"])  # iterates W⁰, …, W^{T−1}: T − 1 steps
    text = (
        f"λᵖ = p·r/m + (1−p)·r/n = {p:g}·{r}/{m} + {1 - p:g}·{r}/{n} = {lam:.4g}; "
        f"γ = {sf:g}/L = {gamma:.3e}. After {T - 1} steps: running mean of ‖∇f‖² over the "
        f"{T} iterates W⁰…W^{T - 1} = {last['running_avg']:.3e} vs Theorem 1's bound "
        f"{last['bound']:.3e} (ratio {last['running_avg'] / last['bound']:.2g})."
    )
    diverged = frame.attrs.get("diverged", {})
    if diverged:
        where = ", ".join(f"seed {s} at step {t}" for s, t in sorted(diverged.items()))
        text += f" <span style='color:#c00'>Diverged (run stopped): {where}.</span>"
    sketch = str(frame["sketch"].iloc[0]) if "sketch" in frame else ""
    if sketch in ("gaussian", "haar"):
        text += (
            " <br><i>Gaussian and Haar sketches give the same numbers (to rounding) for a seed: "
            "the step uses only the projector H onto the sketch's span, and the Haar factor is "
            "an orthonormal basis of the same random span.</i>"
        )
    estimator = str(frame["estimator"].iloc[0]).split("(")[0] if "estimator" in frame else "gd"
    if estimator in ("sgd", "mvr") and sf > ESTIMATOR_STEP[estimator]:
        text += (
            f" <br><span style='color:#c60'>{ESTIMATOR_LABELS[estimator]}'s minibatch noise "
            f"dominates at γL = {sf:g}: try a smaller step, e.g. γL = "
            f"{ESTIMATOR_STEP[estimator]:g}.</span>"
        )
    return text


def bernoulli_explorer_app(
    p: float = 0.5,
    rank: int = 2,
    sketch: str = "gaussian",
    estimator: str = "gd",
    step_factor: float = 1.0,
    *,
    steps: int | None = None,
    seeds: int | None = None,
    m: int = 8,
    n: int = 8,
) -> App:
    """Sliders for p, rank, sketch family, estimator and γ·L redrawing Bernoulli-LoRA on
    ``linear_regression(m, n)``: the loss, and ‖∇f‖² with its running mean under the Theorem 1
    bound (:func:`explorer_frame`, :func:`explorer_theory`).

    Choosing an estimator sets γ·L to :data:`ESTIMATOR_STEP` (1 for GD and PAGE, 0.1 for the
    minibatch SGD, which makes no progress at γL = 1, and MVR, which stalls there); the status
    line suggests the smaller step when a larger one is chosen, and notes that Gaussian and
    Haar sketches give the same run.

    Computes and draws once when built; returns an :class:`App` (an ``ipywidgets.VBox``).
    """
    steps = check_int("steps", by_mode(steps, 200, 60), low=1)
    seeds = by_mode(seeds, 3, 2)
    # Validate the initial values with the functions' own messages (one cheap step).
    explorer_frame(p, rank, sketch, estimator, step_factor, 1, seeds, m, n)
    style = {"description_width": "initial"}
    controls = {
        "p": widgets.FloatSlider(
            value=p, min=0.0, max=1.0, step=0.05, description="p", continuous_update=False
        ),
        "rank": widgets.IntSlider(
            value=rank, min=1, max=min(m, n), description="rank r", continuous_update=False
        ),
        "sketch": widgets.Dropdown(options=EXPLORER_SKETCHES, value=sketch, description="sketch"),
        "estimator": widgets.Dropdown(
            options=EXPLORER_ESTIMATORS, value=estimator, description="estimator"
        ),
        "step_factor": _step_factor_slider(step_factor, 0.4, style),
    }

    def use_estimator_step(change):
        # Picking an estimator moves γ·L to a step at which it makes progress (ESTIMATOR_STEP);
        # the slider stays free to move afterwards. Registered before App's own observers, so
        # this one redraw already has the new step; App's redraw then reuses it (see compute).
        controls["step_factor"].value = ESTIMATOR_STEP[change["new"]]

    controls["estimator"].observe(use_estimator_step, names="value")
    last: dict = {}

    def compute(p, rank, sketch, estimator, step_factor):
        key = (p, rank, sketch, estimator, step_factor)
        if last.get("key") != key:
            frame = explorer_frame(p, rank, sketch, estimator, step_factor, steps, seeds, m, n)
            theory = explorer_theory(frame, _linear_regression(m, n))
            charts = list(explorer_charts(frame, theory))
            last.update(key=key, result=(frame, charts, _explorer_status(frame, theory)))
        return last["result"]

    return App(controls, compute, n_charts=2)
