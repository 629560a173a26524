"""Altair charts of lorakit's tidy run tables (README "Architecture", principle 6: notebooks draw
with these).

A run returns one row per logged step and seed (:meth:`lorakit.chain.Chain.run`); the helpers here
aggregate over seeds in pandas (median line, min–max band) and hand altair a small table, so a
chart of a few thousand rows builds in milliseconds and stays far below altair's row limit.

    frame = lk.run("rac_lora", problem, steps=300, seeds=range(5), rank=1, gamma=1 / problem.L)
    theory = theory_rate_frame(300, start=frame.gap[0], rate=1 - mu * lam / L, label="Thm 5.5")
    convergence_chart(frame, y="gap", theory=theory)
    save(chart, "figures/rac_lora.png")  # or .svg / .pdf, for slides

Importing this module enables lorakit's altair renderer (:mod:`lorakit._render`): charts draw
offline in JupyterLab 4 (the Vega-Lite mimetype, no CDN) and carry a static PNG for GitHub,
nbviewer, PDF export and static sites.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import altair as alt
import numpy as np
import pandas as pd

from . import _render
from ._render import FORMATS, output, save

__all__ = [
    "FLOOR",
    "FORMATS",
    "SERIES_DASHES",
    "SERIES_SHAPES",
    "convergence_chart",
    "divergence_layer",
    "marker_rows",
    "output",
    "save",
    "series_encodings",
    "theory_rate_frame",
]

_render.activate()

#: Smallest value drawn on a log axis: smaller positive values are clipped to it.
FLOOR = 1e-16
WIDTH, HEIGHT = 520, 300
#: At most this many distinct steps are drawn per chart (an even stride thins longer runs).
MAX_STEPS = 600
_DASHES = [[6, 4], [2, 2], [10, 3, 2, 3], [1, 4]]
LABEL_LIMIT = 340  # legend labels (px) before truncation
#: One stroke dash and one point shape per series (:func:`series_encodings`), so that lines which
#: coincide stay distinguishable (issue 12 §4: FlexLoRA on FSLoRA, RAC-LoRA under Bernoulli-LoRA).
SERIES_DASHES = ([1, 0], [8, 4], [2, 3], [10, 3, 2, 3], [4, 4], [14, 4], [2, 6], [6, 2, 2, 2])
SERIES_SHAPES = (
    "circle",
    "square",
    "triangle-up",
    "diamond",
    "cross",
    "triangle-down",
    "wedge",
    "stroke",
)
#: About this many point markers per line (:func:`marker_rows`).
MARKERS = 20


def theory_rate_frame(steps, start: float, rate: float, label: str) -> pd.DataFrame:
    """A theory curve start·rate^t as a table (step, value, label) for :func:`convergence_chart`.

    ``steps`` is a number of steps T (giving t = 0, …, T) or an iterable of steps. For example the
    PL rate (1 − γμλ^p)^t·Δ⁰ of Bernoulli-LoRA Theorem 9 is ``theory_rate_frame(T, Δ⁰, 1 − γμλ^p,
    "Thm 9")``.
    """
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        t = np.arange(int(steps) + 1)
    elif isinstance(steps, Iterable):
        t = np.asarray(list(steps), dtype=float)
    else:
        raise ValueError(f"steps must be an int or an iterable of steps, got {steps!r}")
    for name, value in (("start", start), ("rate", rate)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ValueError(f"{name} must be a real number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if rate < 0:
        raise ValueError(f"rate must be >= 0, got {rate:g}")
    return pd.DataFrame({"step": t, "value": float(start) * float(rate) ** t, "label": str(label)})


def convergence_chart(
    frame: pd.DataFrame,
    y: str = "gap",
    color: str = "method",
    log: bool = True,
    title: str | None = None,
    median_over_seeds: bool = True,
    theory: pd.DataFrame | None = None,
    *,
    x: str = "step",
    y_title: str | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
    series_styles: bool = False,
) -> alt.LayerChart:
    """Line chart of column ``y`` against ``x`` (default ``step``), one line per ``color`` group.

    With several seeds and ``median_over_seeds`` the line is the median over seeds and a band spans
    their min–max; otherwise one line per (group, seed). On a log axis (``log=True``) non-finite
    and non-positive values are dropped and positive ones are clipped at :data:`FLOOR` = 1e-16.
    ``theory`` is an optional table with columns ``step``, ``value``, ``label`` (see
    :func:`theory_rate_frame`) drawn as dashed black lines. If ``frame`` has a ``diverged_at``
    column (the step where a run stopped, NaN otherwise) the last drawn point of each diverged run
    is marked with a red cross. With ``series_styles`` every ``color`` group also gets its own
    stroke dash and point markers (:func:`series_encodings`, :func:`marker_rows`), so a line
    drawn under another (RAC-LoRA under Bernoulli-LoRA in notebook 01) stays visible.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    for name, col in (("x", x), ("y", y), ("color", color)):
        if col not in frame.columns:
            raise ValueError(f"{name}={col!r} is not a column of the frame: {list(frame.columns)}")
    has_seed = "seed" in frame.columns
    data = frame[[c for c in dict.fromkeys([color, x, y, "seed", "diverged_at"]) if c in frame]]
    data = data.copy()
    data[color] = data[color].astype(str)
    data[y] = pd.to_numeric(data[y], errors="coerce").astype(float)
    data = _clean(data, y, log)
    data = _thin(data, x, [color, "seed"] if "seed" in data else [color])
    y_title = y_title or y
    x_enc = alt.X(f"{x}:Q", title=x, scale=alt.Scale(nice=False))
    y_scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    y_axis = alt.Axis(format=".0e") if log else alt.Axis()
    y_enc = alt.Y("value:Q", title=y_title, scale=y_scale, axis=y_axis)
    c_enc = alt.Color(
        f"{color}:N",
        title=color,
        legend=alt.Legend(
            labelLimit=LABEL_LIMIT, symbolType="stroke", symbolStrokeWidth=3, symbolOpacity=1
        ),
    )
    if series_styles:
        names = list(dict.fromkeys(data[color]))
        series = series_encodings(color, names, color)
        c_enc = series["color"]

    if has_seed:
        seeds_per_group = data.groupby(color)["seed"].nunique()
        several = median_over_seeds and bool((seeds_per_group > 1).any())
    else:
        several = False
    layers = []
    if several:
        agg = (
            data.groupby([color, x])[y]
            .agg(value="median", low="min", high="max", seeds="count")
            .reset_index()
        )
        layers.append(
            alt.Chart(agg)
            .mark_area(opacity=0.2)
            .encode(
                x=x_enc,
                y=alt.Y("low:Q", scale=y_scale, title=y_title, axis=y_axis),
                y2=alt.Y2("high:Q"),
                color=c_enc,
            )
        )
        tooltip = [
            alt.Tooltip(f"{color}:N"),
            alt.Tooltip(f"{x}:Q"),
            alt.Tooltip("value:Q", title=f"median {y}", format=".3e"),
            alt.Tooltip("low:Q", title="min", format=".3e"),
            alt.Tooltip("high:Q", title="max", format=".3e"),
            alt.Tooltip("seeds:Q"),
        ]
        lines, enc = agg, {}
    else:
        lines = data.rename(columns={y: "value"})
        detail = ["seed:N"] if has_seed else []
        tooltip = [alt.Tooltip(f"{color}:N"), *(alt.Tooltip(d) for d in detail)]
        tooltip += [alt.Tooltip(f"{x}:Q"), alt.Tooltip("value:Q", title=y, format=".3e")]
        enc = {"detail": alt.Detail(detail[0])} if detail else {}
        lines = lines[[c for c in lines if c != "diverged_at"]]
    if not series_styles:
        line = alt.Chart(lines).mark_line()
        layers.append(line.encode(x=x_enc, y=y_enc, color=c_enc, tooltip=tooltip, **enc))
    else:
        # One layer per series, its dash a property of the mark: no dash scale to share with
        # the theory layer's, and the legend names each series by colour and marker.
        for i, name in enumerate(names):
            line = alt.Chart(lines).transform_filter(
                alt.FieldEqualPredicate(field=color, equal=name)
            )
            dash = SERIES_DASHES[i % len(SERIES_DASHES)]
            layers.append(
                line.mark_line(strokeDash=dash).encode(
                    x=x_enc, y=y_enc, color=c_enc, tooltip=tooltip, **enc
                )
            )
        layers.append(
            alt.Chart(marker_rows(lines, color, names))
            .mark_point(size=45, filled=False, strokeWidth=1.5, opacity=1)
            .encode(x=x_enc, y=y_enc, color=c_enc, shape=series["shape"], tooltip=tooltip)
        )

    marks = _divergence_marks(data, x, y, color)
    if marks is not None:
        layers.append(divergence_layer(marks, x_enc, y_enc, [f"{color}:N", "seed:N"]))

    if theory is not None:
        layers.append(_theory_layer(theory, x, x_enc, y_enc, log))

    chart = alt.layer(*layers).properties(width=width, height=height)
    if title:
        chart = chart.properties(title=title)
    return chart


def series_encodings(field: str, names: list, title: str) -> dict:
    """Colour, stroke dash and point shape of the series ``field`` (values ``names``, in legend
    order), one legend for the three: every series gets its own dash (:data:`SERIES_DASHES`) and
    marker (:data:`SERIES_SHAPES`) besides its colour, so a line hidden under another shows
    through its dashes and markers. Returns ``{"color", "strokeDash", "shape"}`` encodings."""
    legend = alt.Legend(labelLimit=LABEL_LIMIT, symbolStrokeWidth=2, symbolSize=60)
    kinds = {"color": (alt.Color, None), "strokeDash": (alt.StrokeDash, SERIES_DASHES),
             "shape": (alt.Shape, SERIES_SHAPES)}  # fmt: skip
    out = {}
    for channel, (kind, styles) in kinds.items():
        scale = alt.Scale(domain=list(names))
        if styles is not None:
            scale = alt.Scale(
                domain=list(names), range=[styles[i % len(styles)] for i in range(len(names))]
            )
        out[channel] = kind(f"{field}:N", title=title, scale=scale, legend=legend)
    return out


def marker_rows(lines: pd.DataFrame, field: str, names: list) -> pd.DataFrame:
    """About :data:`MARKERS` rows of every line of ``lines`` (one line per ``field`` value and
    seed, its rows in drawing order), staggered between the series ``names`` so that the markers
    of lines that coincide fall side by side rather than on top of each other."""
    if lines.empty:
        return lines
    groups = [field, "seed"] if "seed" in lines else [field]
    order = lines.groupby(groups, sort=False).cumcount()
    stride = max(1, math.ceil(int(order.max()) / MARKERS))
    phase = lines[field].map({name: i * stride // len(names) for i, name in enumerate(names)})
    return lines[(order + phase) % stride == 0]


def divergence_layer(marks: pd.DataFrame, x, y, fields: list, unit: str = "step") -> alt.Chart:
    """The red cross every app draws where a run diverged and stopped: one point per row of
    ``marks`` (its ``diverged_at`` column in the tooltip, "diverged at ``unit``"), at the
    encodings ``x``, ``y``, with ``fields`` (e.g. ``["method:N", "seed:N"]``) in the tooltip."""
    tooltip = [_channel(alt.Tooltip, f) for f in fields]
    tooltip.append(alt.Tooltip("diverged_at:Q", title=f"diverged at {unit}"))
    return (
        alt.Chart(marks)
        .mark_point(shape="cross", size=120, filled=True, color="red")
        .encode(x=x, y=y, tooltip=tooltip)
    )


# ---------------------------------------------------------------------------------------------
def _channel(kind, field):
    """``field`` as the channel ``kind`` (e.g. alt.Tooltip): a shorthand string given to
    ``encode`` makes altair build its schema table, about 15 ms a string, on every redraw."""
    return field if isinstance(field, alt.SchemaBase) else kind(field)


def _clean(data: pd.DataFrame, col: str, log: bool) -> pd.DataFrame:
    """Drop non-finite values; on a log axis also non-positive ones, and clip at FLOOR."""
    values = data[col]
    keep = np.isfinite(values)
    if log:
        keep &= values > 0
    data = data[keep].copy()
    if log:
        data[col] = data[col].clip(lower=FLOOR)
    return data


def _thin(data: pd.DataFrame, x: str, runs: list[str], max_steps: int = MAX_STEPS) -> pd.DataFrame:
    """Keep at most ``max_steps`` distinct x values (an even stride, first and last kept) and the
    last point of every run (grouped by ``runs``), so a diverged run's end is still drawn."""
    xs = np.sort(data[x].unique())
    if len(xs) <= max_steps:
        return data
    idx = np.unique(np.linspace(0, len(xs) - 1, max_steps).round().astype(int))
    last = data.groupby(runs)[x].transform("max")
    return data[data[x].isin(xs[idx]) | (data[x] == last)]


def _divergence_marks(data: pd.DataFrame, x: str, y: str, color: str) -> pd.DataFrame | None:
    if "diverged_at" not in data.columns or "seed" not in data.columns:
        return None
    diverged = data[data["diverged_at"].notna()]
    if diverged.empty:
        return None
    idx = diverged.groupby([color, "seed"])[x].idxmax()
    marks = diverged.loc[idx, [color, "seed", x, y, "diverged_at"]]
    return marks.rename(columns={y: "value"})


def _theory_layer(theory: pd.DataFrame, x: str, x_enc, y_enc, log: bool) -> alt.Chart:
    if not isinstance(theory, pd.DataFrame):
        raise ValueError(f"theory must be a DataFrame, got {type(theory).__name__}")
    missing = {"step", "value", "label"} - set(theory.columns)
    if missing:
        raise ValueError(f"theory needs the columns step, value, label; missing {sorted(missing)}")
    th = theory[["step", "value", "label"]].copy()
    th["value"] = pd.to_numeric(th["value"], errors="coerce").astype(float)
    th = _thin(_clean(th, "value", log), "step", ["label"]).rename(columns={"step": x})
    labels = list(dict.fromkeys(th["label"]))
    return (
        alt.Chart(th)
        .mark_line(color="black", strokeWidth=1.5)
        .encode(
            x=x_enc,
            y=y_enc,
            strokeDash=alt.StrokeDash(
                "label:N",
                title="theory",
                scale=alt.Scale(domain=labels, range=_DASHES),
                legend=alt.Legend(labelLimit=LABEL_LIMIT),
            ),
            tooltip=[
                alt.Tooltip("label:N", title="theory"),
                alt.Tooltip(f"{x}:Q"),
                alt.Tooltip("value:Q", format=".3e"),
            ],
        )
    )
