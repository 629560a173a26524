"""The app of notebook 06: synchronous FedAvg against FedAsync and FedBuff on a virtual clock,
with a low-rank upload compressor (PCA, QRCP, CUR of the paper, spec async_fl.md §4).

The paper (spec async_fl.md §0) promises a "fully asynchronous" protocol but gives no asynchronous
rule: its experiment and theory are synchronous FedAvg. The asynchronous rules here are lorakit's
labelled extensions from the literature — FedAsync (Xie et al. 2019, staleness-weighted mixing)
and FedBuff (Nguyen et al. 2022, buffered aggregation) — run by :class:`lorakit.asynchronous.clock.
AsyncFL` on heterogeneous quadratics.

* :func:`async_frames` — the three rules on the same clients, stragglers and compressor:
  (history, events);
* :func:`approximation_frame` — relative error against rank of PCA, QRCP, CUR and the paper's
  row-ID method on a low-rank-plus-noise matrix (PCA is the Eckart–Young floor);
* :func:`async_charts` / :func:`staleness_chart` / :func:`approximation_chart` — the charts;
* :func:`async_app` — the controls (clients, straggler severity, staleness function,
  approximation method, rank).
"""

from __future__ import annotations

import functools
import html
import math
import warnings

import altair as alt
import ipywidgets as widgets
import pandas as pd
import torch

from .. import problems
from .._validation import check_choice, check_int, check_real
from ..asynchronous.clock import SPEEDS, STALENESS, AsyncFL
from ..lowrank import LowRank, cur, paper_row_id, pca, qrcp
from ..mode import by_mode
from ..viz import FLOOR, divergence_layer
from ._app import App

__all__ = [
    "APPROXIMATIONS",
    "APPROX_LABELS",
    "ASYNC_RULES",
    "EXACT",
    "SPARSE",
    "approximation_chart",
    "approximation_frame",
    "async_app",
    "async_charts",
    "async_frames",
    "staleness_chart",
]

#: The rules compared: synchronous FedAvg (the paper's experiment) and lorakit's asynchronous
#: extensions FedAsync and FedBuff (not in the paper, spec async_fl.md §0).
ASYNC_RULES = ("fedavg", "fedasync", "fedbuff")
SHORT = {"fedavg": "FedAvg", "fedasync": "FedAsync", "fedbuff": "FedBuff"}
RULE_LABELS = {
    "fedavg": "FedAvg (synchronous, the paper)",
    "fedasync": "FedAsync (lorakit extension)",
    "fedbuff": "FedBuff (lorakit extension)",
}
#: Upload compressors: none, or a rank-k approximation of each uploaded delta.
APPROXIMATIONS = ("identity", "pca", "qrcp", "cur")
#: The clients' model W ∈ ℝ^{8×6}: small, so each low-rank compression is cheap.
SHAPE = (8, 6)
#: Local SGD step size γ and steps per job. The clients are 1-smooth (L = 1), so γ = 0.3 with 2
#: local steps is stable for every rule, straggler law and compressor here (checked over
#: 2–50 clients); a divergence would still be caught and shown in the status line.
GAMMA, LOCAL_STEPS = 0.3, 2
TIME_BUDGET, FAST_TIME_BUDGET = 40.0, 20.0
MAX_CLIENTS = 100
APPROX_METHODS = ("pca", "qrcp", "cur", "paper_row_id")
#: The upload rank when none is given.
DEFAULT_RANK = 2
#: What the legends and controls call each approximation.
APPROX_LABELS = {
    "identity": "none (full update)",
    "pca": "PCA (truncated SVD)",
    "qrcp": "QRCP (corrected)",
    "cur": "CUR (QRCP pivots)",
    "paper_row_id": "paper's row ID (uniform rows)",
}
#: A relative error below this is an exact reconstruction (full rank: rounding, ~1e-16); the
#: error-against-rank chart leaves such points out so that ranks below full fill the log axis.
EXACT = 1e-10
#: A rule with at most this many server updates in the time budget gets a point per update (with
#: severe stragglers synchronous FedAvg finishes one or two rounds: a lone segment otherwise).
SPARSE = 60


@functools.lru_cache(maxsize=16)
def _quadratics(num_clients: int):
    m, n = SHAPE
    return problems.heterogeneous_quadratics(num_clients, m, n, L=1.0, spread=1.0, seed=0)


def _compressor(approximation: str, rank: int | None):
    check_choice("approximation", approximation, APPROXIMATIONS)
    if rank is not None:
        rank = check_int("rank", rank, low=1, high=min(SHAPE))
    if approximation == "identity":
        if rank is not None:
            warnings.warn(
                f"rank={rank} does nothing with approximation='identity': uploads are not "
                "approximated (pick 'pca', 'qrcp' or 'cur', or leave rank=None)",
                UserWarning,
                stacklevel=3,
            )
        return None
    # CUR samples by leverage scores from the run's ``compression`` stream
    return LowRank(approximation, DEFAULT_RANK if rank is None else rank, shape=SHAPE)


def async_frames(
    num_clients: int = 10,
    stragglers: str = "heavy_tail",
    staleness: str = "polynomial",
    approximation: str = "identity",
    rank: int | None = None,
    time_budget: float | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """FedAvg, FedAsync and FedBuff on ``heterogeneous_quadratics(num_clients, 8, 6)`` until
    virtual time ``time_budget`` (default 40; 20 with ``LORAKIT_FAST=1``): (history, events).

    Every rule has the same clients, the same compute-time law ``stragglers`` (``"uniform"``
    U[0.5, 1.5], ``"exponential"`` Exp(1), ``"heavy_tail"`` Pareto(1.5), mean 1 per local step),
    the same seed, γ = 0.3 and 2 local steps; FedAsync (α = 0.6) and FedBuff (K = 4) weight a
    τ-stale update by the ``staleness`` function s(τ). Each uploaded delta passes through
    ``approximation`` at ``rank`` (``LowRank(method, rank, shape=(8, 6))``, default rank 2;
    ``"identity"``: none, and a ``rank`` given with it warns that it does nothing).

    history: the engine's rows (``time``, ``update``, ``loss``, ``gap``, ``staleness``, …) plus
    ``rule``, ``label``, ``diverged_at`` (the update where a run stopped, NaN otherwise).
    events: one row per client job (``staleness``, ``applied``, …) plus ``rule``, ``label``.
    ``history.attrs["diverged"]`` maps rule → message.
    """
    num_clients = check_int("num_clients", num_clients, low=1, high=MAX_CLIENTS)
    check_choice("stragglers", stragglers, SPEEDS)
    check_choice("staleness", staleness, STALENESS)
    compressor = _compressor(approximation, rank)
    budget = by_mode(time_budget, TIME_BUDGET, FAST_TIME_BUDGET)
    budget = check_real("time_budget", budget, low=0.0, low_open=True)
    seed = check_int("seed", seed, low=0)
    prob = _quadratics(num_clients)
    extra = {} if compressor is None else {"compressor": compressor}
    histories, events, diverged = [], [], {}
    for rule in ASYNC_RULES:
        cfg = AsyncFL(
            rule, GAMMA, local_steps=LOCAL_STEPS, staleness=staleness, speed=stragglers, **extra
        )
        hist, evs = cfg.run(prob, seeds=seed, time_budget=budget, events=True, on_divergence="stop")
        stopped = hist.attrs["diverged"].get(seed)
        hist["diverged_at"] = math.nan if stopped is None else float(stopped)
        if stopped is not None:
            diverged[rule] = f"{SHORT[rule]} diverged at update {stopped}: lower the step size"
        for frame in (hist, evs):
            frame["rule"] = rule
            frame["label"] = RULE_LABELS[rule]
        histories.append(hist)
        events.append(evs)
    history = pd.concat(histories, ignore_index=True)
    history["diverged_at"] = history["diverged_at"].astype(float)
    history.attrs = {
        "diverged": diverged,
        "approximation": approximation,
        "rank": None if compressor is None else compressor.rank,
        "stragglers": stragglers,
        "staleness": staleness,
        "time_budget": budget,
    }
    return history, pd.concat(events, ignore_index=True)


@functools.lru_cache(maxsize=8)
def _approximation_frame(m, n, ranks, true_rank, noise, seed):
    gen = torch.Generator().manual_seed(seed)
    U = torch.randn(m, true_rank, generator=gen, dtype=torch.float64)
    V = torch.randn(true_rank, n, generator=gen, dtype=torch.float64)
    X = U @ V + noise * torch.randn(m, n, generator=gen, dtype=torch.float64)
    rows = []
    for k in ranks:
        rows.append(("pca", k, pca(X, k).rel_error))
        rows.append(("qrcp", k, qrcp(X, k).rel_error))
        rows.append(("cur", k, cur(X, k, select="qrcp").rel_error))
        g = torch.Generator().manual_seed(seed + k)
        rows.append(("paper_row_id", k, paper_row_id(X, k, generator=g).rel_error))
    return pd.DataFrame(rows, columns=["method", "rank", "rel_error"])


def approximation_frame(m: int = 40, n: int = 30, ranks=range(1, 31), seed: int = 0):
    """Relative error ‖X − X̂‖_F/‖X‖_F against rank k for PCA (Eckart–Young, the optimum), QRCP
    (corrected row-based), CUR (QRCP-pivot selection of k columns and k rows) and the paper's
    row-ID method (uniform rows), on X = U V + 0.1·noise with U V of rank 5 (standard normal).

    Columns ``method``, ``rank``, ``rel_error``; ``attrs["shape"]`` = (m, n). Cached per
    arguments.
    """
    m = check_int("m", m, low=1)
    n = check_int("n", n, low=1)
    ranks = tuple(check_int("ranks", k, low=1, high=min(m, n)) for k in ranks)
    if not ranks:
        raise ValueError("ranks must name at least one rank")
    seed = check_int("seed", seed, low=0)
    frame = _approximation_frame(m, n, ranks, min(5, m, n), 0.1, seed).copy()
    frame.attrs = {"shape": (m, n)}
    return frame


# ---------------------------------------------------------------------------------------------
# charts
# ---------------------------------------------------------------------------------------------
def async_charts(history: pd.DataFrame) -> alt.LayerChart:
    """f − f* (log) against virtual wall-clock time, one line per rule.

    The server's model, hence f − f*, only changes when an update is applied, so each line is a
    step function (``step-after``), carried to the end of the time budget. A rule with at most
    :data:`SPARSE` updates also gets a point per update: under severe stragglers synchronous
    FedAvg finishes only a round or two (each waits for its slowest client), which a plain line
    would draw as one slanted segment. A diverged rule (``diverged_at`` set) ends in a red cross.
    """
    if not isinstance(history, pd.DataFrame) or not {"time", "gap", "label"} <= set(history):
        raise ValueError("history must be async_frames(...)[0] (columns time, gap, label)")
    cols = ["label", "time", "update", "gap", "diverged_at"]
    data = history[[c for c in cols if c in history]].copy()
    data["gap"] = pd.to_numeric(data["gap"], errors="coerce").astype(float)
    data = data[data["gap"].map(math.isfinite) & (data["gap"] > 0)]
    data["gap"] = data["gap"].clip(lower=FLOOR)
    if "diverged_at" not in data:
        data["diverged_at"] = math.nan
    budget = history.attrs.get("time_budget")
    ends = []
    for _, run in data.groupby("label", sort=False):
        last = run.iloc[-1]
        if budget is not None and pd.isna(last["diverged_at"]) and last["time"] < budget:
            ends.append(last.to_frame().T.assign(time=float(budget)))
    lines = pd.concat([data, *ends], ignore_index=True)
    lines["time"] = lines["time"].astype(float)
    lines["gap"] = lines["gap"].astype(float)
    updates = data.groupby("label", sort=False)["update"].transform("max")
    # a point where each update lands (the engine also logs a last row at the budget's end)
    points = data[(updates <= SPARSE) & (data["update"] > 0)].drop_duplicates(["label", "update"])
    x = alt.X("time:Q", title="virtual wall-clock time", scale=alt.Scale(nice=False))
    y = alt.Y("gap:Q", title="f(W) − f*", scale=alt.Scale(type="log"), axis=alt.Axis(format=".0e"))
    color = alt.Color("label:N", title="rule", legend=alt.Legend(labelLimit=340))
    tooltip = [
        alt.Tooltip("label"),
        alt.Tooltip("update"),
        alt.Tooltip("time:Q", format=".2f"),
        alt.Tooltip("gap:Q", format=".3g"),
    ]
    layers = [
        alt.Chart(lines)
        .mark_line(interpolate="step-after")
        .encode(x=x, y=y, color=color, tooltip=tooltip),
        alt.Chart(points)
        .mark_point(filled=True, size=50)
        .encode(x=x, y=y, color=color, tooltip=tooltip),
    ]
    diverged = data[data["diverged_at"].notna()].groupby("label", sort=False).tail(1)
    if not diverged.empty:
        layers.append(divergence_layer(diverged, x, y, ["label"], "update"))
    subtitle = ["steps: the model changes only when the server applies an update"]
    if not points.empty:
        subtitle.append(
            "dots: every update of a rule with few (FedAvg waits for its slowest client)"
        )
    return alt.layer(*layers).properties(
        width=520,
        height=300,
        title=alt.Title("loss against virtual wall-clock time", subtitle=subtitle),
    )


def staleness_chart(events: pd.DataFrame) -> alt.Chart:
    """Histogram of the staleness τ of every update the server applied, per asynchronous rule
    (FedAvg's updates all have τ = 0)."""
    data = events[(events["rule"] != "fedavg") & events["applied"].astype(bool)]
    counts = data.groupby(["label", "staleness"]).size().reset_index(name="updates")
    return (
        alt.Chart(counts, title="staleness of applied updates")
        .mark_bar()
        .encode(
            x=alt.X("staleness:O", title="staleness τ (server versions)"),
            xOffset=alt.XOffset("label:N"),
            y=alt.Y("updates:Q", title="applied updates"),
            color=alt.Color("label:N", title="rule"),
            tooltip=[alt.Tooltip("label"), alt.Tooltip("staleness"), alt.Tooltip("updates")],
        )
        .properties(width=420, height=220)
    )


def approximation_chart(frame: pd.DataFrame, highlight: str | None = None, rank=None):
    """Relative error (log) against rank per method; a rule at the chosen ``rank``.

    Exact reconstructions (relative error below :data:`EXACT`, i.e. rank = full rank, where every
    method returns X up to rounding, ~1e-16) are left out and named in the subtitle: on a log
    axis they would stretch it to 1e-16 and squeeze every other rank into its top.
    """
    if not isinstance(frame, pd.DataFrame) or not {"method", "rank", "rel_error"} <= set(frame):
        raise ValueError("frame must be an approximation_frame (columns method, rank, rel_error)")
    data = frame.copy()
    exact = data["rel_error"] < EXACT
    left_out = sorted(int(k) for k in data.loc[exact, "rank"].unique())
    data = data[~exact]
    data["label"] = data["method"].map(lambda m: APPROX_LABELS.get(m, m))
    subtitle = "PCA is the Eckart–Young floor: no rank-k method lies below it"
    if left_out:
        ranks = ", ".join(map(str, left_out))
        subtitle += f"; rank {ranks} left out: exact there (error ≈ 1e-16, rounding)"
    base = alt.Chart(data, title=alt.Title("approximation error against rank", subtitle=subtitle))
    # channel objects rather than shorthand strings or condition dicts: altair parses each of
    # those through its whole schema (~15 ms apiece, on every redraw)
    width = alt.StrokeWidthValue(
        **alt.condition(alt.datum.method == (highlight or ""), alt.value(3.5), alt.value(1.5))
    )
    lines = base.mark_line(point=True).encode(
        x=alt.X("rank:Q", title="rank k"),
        y=alt.Y(
            "rel_error:Q", title="relative error ‖X − X̂‖_F / ‖X‖_F", scale=alt.Scale(type="log")
        ),
        color=alt.Color("label:N", title="approximation", legend=alt.Legend(labelLimit=340)),
        strokeWidth=width,
        tooltip=[
            alt.Tooltip("label"),
            alt.Tooltip("rank"),
            alt.Tooltip("rel_error:Q", format=".3g"),
        ],
    )
    layers = [lines]
    if rank is not None:
        layers.append(
            alt.Chart(pd.DataFrame({"rank": [rank]}))
            .mark_rule(strokeDash=[4, 4], color="gray")
            .encode(x=alt.X("rank:Q"))
        )
    return alt.layer(*layers).properties(width=420, height=220)


def _status(history: pd.DataFrame, events: pd.DataFrame) -> str:
    parts = []
    start = float(history["gap"].iloc[0])
    for rule in ASYNC_RULES:
        h = history[history["rule"] == rule]
        reach = h.loc[h["gap"] <= 0.5 * start, "time"]
        t50 = f"{reach.min():.1f}" if len(reach) else "never"
        ev = events[(events["rule"] == rule) & events["applied"].astype(bool)]
        text = (
            f"<b>{SHORT[rule]}</b>: final f − f* {h['gap'].iloc[-1]:.3g} after {int(h['update'].max())} "
            f"updates, half gap at t = {t50}, mean τ {ev['staleness'].mean():.2f}"
        )
        if rule in history.attrs.get("diverged", {}):
            text = f"<span style='color:#c00'>{html.escape(history.attrs['diverged'][rule])}</span>"
        parts.append(text)
    return "; ".join(parts)


def async_app(
    num_clients: int = 10,
    stragglers: str = "heavy_tail",
    staleness: str = "polynomial",
    approximation: str = "identity",
    rank: int = 2,
    time_budget: float | None = None,
    seed: int = 0,
) -> App:
    """Controls for the clients, the straggler severity, the staleness function, the upload
    approximation and its rank, redrawing :func:`async_frames` (gap against virtual time,
    staleness histogram) and :func:`approximation_frame` (error against rank, cached; the chosen
    method and rank highlighted). The rank slider is disabled while the approximation is
    ``"identity"`` (nothing to truncate), and the status says so. Computes and draws once when
    built; returns an :class:`App`.
    """
    num_clients = check_int("num_clients", num_clients, low=1, high=MAX_CLIENTS)
    check_choice("stragglers", stragglers, SPEEDS)
    check_choice("staleness", staleness, STALENESS)
    check_choice("approximation", approximation, APPROXIMATIONS)
    rank = check_int("rank", rank, low=1, high=min(SHAPE))  # the slider keeps it while disabled
    budget = by_mode(time_budget, TIME_BUDGET, FAST_TIME_BUDGET)
    budget = check_real("time_budget", budget, low=0.0, low_open=True)
    seed = check_int("seed", seed, low=0)
    style = {"description_width": "initial"}
    controls = {
        "num_clients": widgets.IntSlider(
            value=num_clients,
            min=min(2, num_clients),
            max=max(50, num_clients),
            description="clients",
            continuous_update=False,
            style=style,
        ),
        "stragglers": widgets.Dropdown(
            options=[
                ("mild: U[0.5, 1.5]", "uniform"),
                ("moderate: Exp(1)", "exponential"),
                ("severe: Pareto(1.5)", "heavy_tail"),
            ],
            value=stragglers,
            description="stragglers",
            style=style,
        ),
        "staleness": widgets.Dropdown(
            options=list(STALENESS), value=staleness, description="staleness s(τ)", style=style
        ),
        "approximation": widgets.Dropdown(
            options=[(APPROX_LABELS[a], a) for a in APPROXIMATIONS],
            value=approximation,
            description="upload approximation",
            style=style,
        ),
        "rank": widgets.IntSlider(
            value=rank,
            min=1,
            max=min(SHAPE),
            description="rank k",
            continuous_update=False,
            disabled=approximation == "identity",
            style=style,
        ),
    }
    approx = approximation_frame(seed=seed)

    def compute(num_clients, stragglers, staleness, approximation, rank):
        identity = approximation == "identity"
        history, events = async_frames(
            num_clients,
            stragglers,
            staleness,
            approximation,
            None if identity else rank,
            budget,
            seed,
        )
        charts = [
            async_charts(history),
            staleness_chart(events),
            approximation_chart(
                approx, None if approximation == "identity" else approximation, rank
            ),
        ]
        # the rank only acts on a rank-k approximation: off (and said so) while uploads are full
        controls["rank"].disabled = approximation == "identity"
        status = _status(history, events)
        if approximation == "identity":
            status += (
                "<br><i>rank k is off: uploads are not approximated (pick PCA, QRCP or CUR)</i>"
            )
        return history, charts, status

    return App(controls, compute, n_charts=3)
