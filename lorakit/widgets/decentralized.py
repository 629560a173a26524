"""The app of notebook 05: random walks, mixing, and RW-LoRA against gossip Dec-LoRA.

:func:`tv_frame` gives the total-variation distance d_u(t) = ½‖P^t(u, ·) − π‖₁ of the
Metropolis–Hastings walk (optionally lazy) from every start u, with the worst case and
τ_mix(1/4) (spec ``rw_lora.md`` §2, §4.4, §9.1). :func:`walk_frames` runs RW-LoRA (Algorithm 1,
:class:`~lorakit.decentralized.RWLoRA`) and the gossip baseline
(:class:`~lorakit.decentralized.GossipLoRA`, spec §5) on heterogeneous quadratics, one node
objective per node. The charts draw the TV curves, the token's visit frequencies against π, the
loss against the communicated parameters, the gossip bilinear mismatch per round (spec §6) and a
node-link view of the token's path (:func:`token_path_chart`). :func:`random_walks_app` wires
them to controls (README "Architecture", principle 6: the notebook only calls these).
"""

from __future__ import annotations

import functools
import html
import math
import time
import warnings
from collections.abc import Iterable
from typing import NamedTuple

import altair as alt
import ipywidgets as widgets
import networkx as nx
import numpy as np
import pandas as pd

from .. import problems
from .._validation import check_choice, check_int, check_real
from ..decentralized import (
    GRAPHS,
    GossipLoRA,
    RWLoRA,
    lazy,
    make_graph,
    metropolis_hastings,
    mixing_time,
    pi_from_sizes,
    visit_frequencies,
)
from ..mode import by_mode
from ..viz import FLOOR, convergence_chart, output
from ._app import App

__all__ = [
    "METHOD_LABELS",
    "TREND",
    "WALK_GRAPHS",
    "WALK_METHODS",
    "WALK_PIS",
    "RandomWalkRuns",
    "comm_chart",
    "mismatch_chart",
    "random_walks_app",
    "token_path_chart",
    "tv_chart",
    "tv_frame",
    "visits_chart",
    "walk_frames",
    "walk_pi",
]

WALK_GRAPHS = tuple(GRAPHS)
WALK_METHODS = ("rw_lora", "gossip_lora")
#: What the charts, legends and status call each method (raw keys stay in the frames).
METHOD_LABELS = {"rw_lora": "RW-LoRA (one token)", "gossip_lora": "gossip Dec-LoRA"}
#: Hops in the running (geometric) mean drawn over RW-LoRA's loss: a constant-step walk reaches
#: a neighbourhood of f* and keeps moving in it, so the per-hop line alone hides the trend.
TREND = 25
X_SENT = "parameters sent (whole network)"
#: ``"uniform"`` or ``"sizes"``: π_v ∝ v + 1, standing in for unequal local data sizes.
WALK_PIS = ("uniform", "sizes")
MAX_NODES = 60
#: Quadratic nodes f_v(W) = ½‖W − C_v‖² with W ∈ ℝ^{m×n}, rank-r adapters (small: fast redraw).
SHAPE, RANK = (5, 4), 4
#: SGD step size: L = 1 nodes; 0.05 converges on every graph family for N in {4, 10, 30}
#: (0.3 diverges within 20 hops: the factorised quadratic is smooth only on bounded sets).
DEFAULT_LR = 0.05
HOPS, FAST_HOPS = 300, 80
EPS = 0.25
TRAIL = 5  # hops drawn as arrows in the path view
WIDTH, HEIGHT = 420, 260
MAX_ROWS = 4000  # rows of the TV chart (every t with a stride beyond)


# ---------------------------------------------------------------------------------------------
# chains
# ---------------------------------------------------------------------------------------------
def _check_kind_n(kind: str, N: int) -> tuple[str, int]:
    check_choice("kind", kind, WALK_GRAPHS)
    return kind, check_int("N", N, low=2, high=MAX_NODES)


def walk_pi(pi: str, N: int) -> np.ndarray:
    """The target π: uniform, or ``"sizes"`` — π_v ∝ v + 1 (``pi_from_sizes(1, …, N)``)."""
    check_choice("pi", pi, WALK_PIS)
    N = check_int("N", N, low=1)
    if pi == "uniform":
        return np.full(N, 1.0 / N)
    return pi_from_sizes(np.arange(1, N + 1))


@functools.lru_cache(maxsize=32)
def _graph(kind: str, N: int, seed: int) -> nx.Graph:
    return make_graph(kind, N, seed=seed)


def _chain(kind: str, N: int, laziness: float, pi: str, seed: int = 0):
    kind, N = _check_kind_n(kind, N)
    laziness = check_real("laziness", laziness, low=0.0, high=1.0, high_open=True)
    target = walk_pi(pi, N)
    G = _graph(kind, N, seed)
    P = np.asarray(metropolis_hastings(G, target), dtype=np.float64)
    if laziness > 0:
        P = np.asarray(lazy(P, laziness), dtype=np.float64)
    return G, P, target, laziness


def _tau_label(tau) -> str:
    if tau.finite:
        return str(int(tau.value))
    return "∞ (periodic)" if "periodic" in (tau.reason or "") else "∞"


def tv_frame(
    kind: str = "ring",
    N: int = 10,
    laziness: float = 0.5,
    pi: str = "uniform",
    t_max: int | None = None,
    *,
    eps: float = EPS,
    seed: int = 0,
) -> pd.DataFrame:
    """d_u(t) = ½‖P^t(u, ·) − π‖₁ for every start u and t = 0..t_max, plus the worst case.

    P is Metropolis–Hastings for π on ``make_graph(kind, N, seed=seed)``, made lazy
    (laziness·I + (1 − laziness)·P) when ``laziness`` > 0. Columns: ``t``, ``start`` (the node, or
    ``"worst"``), ``tv``, ``worst`` (True on the max over starts). ``t_max`` defaults to about
    2·τ_mix(ε) (at least 20, at most 300; 40 when τ is infinite). ``attrs``: ``tau`` (the
    :class:`~lorakit.decentralized.MixingTime`), ``tau_mix`` (its value as text: an int,
    ``"∞ (periodic)"`` or ``"∞"``), ``reason``, ``eps``, ``P``, ``pi``.
    """
    _, P, target, laziness = _chain(kind, N, laziness, pi, seed)
    eps = check_real("eps", eps, low=0.0, high=1.0, low_open=True, high_open=True)
    tau = mixing_time(P, eps, target, t_max=10_000)
    if t_max is None:
        t_max = int(min(max(2 * tau.value + 5, 20), 300)) if tau.finite else 40
    t_max = check_int("t_max", t_max, low=1)
    N = P.shape[0]
    tv = np.empty((t_max + 1, N))
    Q = np.eye(N)
    for t in range(t_max + 1):
        tv[t] = 0.5 * np.abs(Q - target).sum(axis=1)
        Q = Q @ P
    ts = np.repeat(np.arange(t_max + 1), N)
    frame = pd.DataFrame(
        {"t": ts, "start": np.tile(np.arange(N), t_max + 1).astype(str), "tv": tv.ravel()}
    )
    frame["worst"] = False
    worst = pd.DataFrame({"t": np.arange(t_max + 1), "start": "worst", "tv": tv.max(axis=1)})
    worst["worst"] = True
    frame = pd.concat([frame, worst], ignore_index=True)
    frame["kind"], frame["N"], frame["laziness"], frame["pi"] = kind, N, laziness, pi
    frame.attrs = {
        "tau": tau,
        "tau_mix": _tau_label(tau),
        "reason": tau.reason,
        "eps": eps,
        "P": P.tolist(),
        "pi": target.tolist(),
    }
    return frame


def tv_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """d_u(t) on a log axis, one thin line per start u, the worst case bold, ε dashed (every
    k-th t when the frame has more than 4000 rows)."""
    if not isinstance(frame, pd.DataFrame) or "tv" not in frame:
        raise ValueError("frame must be a tv_frame")
    data = frame[["t", "start", "tv", "worst"]].copy()
    data["tv"] = data["tv"].clip(lower=FLOOR)
    stride = math.ceil(len(data) / MAX_ROWS)  # altair embeds at most 5000 rows
    if stride > 1:
        t = data["t"]
        data = data[(t % stride == 0) | (t == t.max())]
    y = alt.Y("tv:Q", title="TV distance ½‖Pᵗ(u,·) − π‖₁", scale=alt.Scale(type="log"))
    x = alt.X("t:Q", title="t (hops)")
    starts = (
        alt.Chart(data[~data["worst"]])
        .mark_line(opacity=0.45, strokeWidth=1)
        .encode(
            x=x,
            y=y,
            color=alt.Color("start:N", legend=None),
            tooltip=[alt.Tooltip("start"), alt.Tooltip("t"), alt.Tooltip("tv")],
        )
    )
    worst = (
        alt.Chart(data[data["worst"]])
        .mark_line(color="black", strokeWidth=3)
        .encode(x=x, y=y, tooltip=[alt.Tooltip("t"), alt.Tooltip("tv")])
    )
    eps = frame.attrs.get("eps", EPS)
    rule = (
        alt.Chart(pd.DataFrame({"eps": [eps]}))
        .mark_rule(strokeDash=[6, 4], color="#c00")
        .encode(y=alt.Y("eps:Q"))
    )
    title = f"TV distance from every start (bold: worst); τ_mix({eps:g}) = "
    title += str(frame.attrs.get("tau_mix", "?"))
    return (starts + worst + rule).properties(width=WIDTH, height=HEIGHT, title=title)


# ---------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------
class RandomWalkRuns(NamedTuple):
    """What :func:`walk_frames` returns (empty frames for a method not run)."""

    rw: pd.DataFrame
    gossip: pd.DataFrame
    visits: pd.DataFrame
    graph: nx.Graph


@functools.lru_cache(maxsize=16)
def _problem(N: int):
    m, n = SHAPE
    return problems.heterogeneous_quadratics(N, m, n, L=1.0, spread=1.0, seed=0)


def _check_methods(methods) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    if not isinstance(methods, Iterable):
        raise ValueError(f"methods must name some of {list(WALK_METHODS)}, got {methods!r}")
    methods = tuple(dict.fromkeys(methods))
    if not methods:
        raise ValueError(f"methods must name at least one of {list(WALK_METHODS)}")
    for method in methods:
        check_choice("methods", method, WALK_METHODS)
    return methods


def walk_frames(
    kind: str = "ring",
    N: int = 10,
    laziness: float = 0.5,
    pi: str = "uniform",
    methods: Iterable[str] = WALK_METHODS,
    hops: int | None = None,
    seed: int = 0,
    *,
    lr: float = DEFAULT_LR,
    rounds: int | None = None,
) -> RandomWalkRuns:
    """RW-LoRA and gossip Dec-LoRA on ``heterogeneous_quadratics(N, 5, 4)``, rank 4, SGD (η = 0.05).

    RW-LoRA: ``hops`` hops (default 300; 80 with ``LORAKIT_FAST=1``) of a Metropolis–Hastings
    walk for π (lazy when ``laziness`` > 0) from node 0; its objective is f = Σ_v π_v f_v.
    Gossip: ``rounds`` rounds (default max(20, hops // N): about the same number of local
    updates) with Metropolis weights; its objective is the uniform average (π is a walk's
    choice). A diverging run keeps the rows logged before it stopped and is listed in
    ``attrs["diverged"]`` (the app's status says where). Returns :class:`RandomWalkRuns`
    (rw, gossip, visits, graph): ``visits`` is :func:`~lorakit.decentralized.visit_frequencies`
    of the walk (node, visits, frequency, pi). Periodic-walk warnings go to
    ``rw.attrs["warning"]``.
    """
    kind, N = _check_kind_n(kind, N)
    laziness = check_real("laziness", laziness, low=0.0, high=1.0, high_open=True)
    target = walk_pi(pi, N)
    methods = _check_methods(methods)
    hops = check_int("hops", by_mode(hops, HOPS, FAST_HOPS), low=1)
    seed = check_int("seed", seed, low=0)
    lr = check_real("lr", lr, low=0.0, low_open=True)
    rounds = check_int("rounds", rounds if rounds is not None else max(20, hops // N), low=1)
    G = _graph(kind, N, seed)
    prob = _problem(N)
    rw = gossip = visits = pd.DataFrame()
    if "rw_lora" in methods:
        cfg = RWLoRA(
            rank=RANK,
            gamma=lr,
            transition="lazy" if laziness > 0 else "mh",
            pi=target,
            laziness=laziness,
            start=0,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rw = cfg.run(prob, hops, seed, graph=G, on_divergence="stop")
        rw.attrs["warning"] = "; ".join(str(w.message) for w in caught)
        visits = visit_frequencies(rw)
        visits = visits[visits["seed"] == seed].reset_index(drop=True)
    if "gossip_lora" in methods:
        gossip = GossipLoRA(rank=RANK, gamma=lr).run(
            prob, rounds, seed, graph=G, on_divergence="stop"
        )
    for frame in (rw, gossip):
        _mark_divergence(frame)
    return RandomWalkRuns(rw, gossip, visits, G)


def _mark_divergence(frame: pd.DataFrame) -> None:
    """Add ``diverged_at`` (the step where a seed's run stopped, NaN otherwise) from
    ``attrs["diverged"]``, so :func:`~lorakit.viz.convergence_chart` marks it with a red cross."""
    if frame.empty:
        return
    stopped = frame.attrs.get("diverged") or {}
    frame["diverged_at"] = frame["seed"].map(lambda s: float(stopped.get(s, math.nan)))


# ---------------------------------------------------------------------------------------------
# charts of the runs
# ---------------------------------------------------------------------------------------------
def visits_chart(visits: pd.DataFrame) -> alt.LayerChart:
    """The walk's visit frequency per node (bars) against π (red ticks and points)."""
    if not isinstance(visits, pd.DataFrame) or "frequency" not in visits:
        raise ValueError("visits must be a visit_frequencies frame (walk_frames(...).visits)")
    data = visits[["node", "visits", "frequency", "pi"]].copy()
    x = alt.X("node:O", title="node", axis=alt.Axis(labelAngle=0))
    bars = (
        alt.Chart(data)
        .mark_bar(opacity=0.7)
        .encode(
            x=x,
            y=alt.Y("frequency:Q", title="share of hops"),
            tooltip=[alt.Tooltip(c) for c in data],
        )
    )
    target = (
        alt.Chart(data).mark_tick(color="#c00", thickness=2, size=14).encode(x=x, y=alt.Y("pi:Q"))
    )
    total = int(data["visits"].sum())
    title = f"Visit frequencies over {total} hops (bars) against π (red)"
    return (bars + target).properties(width=WIDTH, height=HEIGHT, title=title)


def _y(frame: pd.DataFrame) -> str:
    gap = pd.to_numeric(frame.get("gap"), errors="coerce") if "gap" in frame else None
    return "gap" if gap is not None and bool(np.isfinite(gap).any()) else "loss"


def comm_chart(rw: pd.DataFrame, gossip: pd.DataFrame, *, trend: int = TREND) -> alt.LayerChart:
    """Loss gap against the cumulative communicated parameters, one line per method.

    Methods are named by :data:`METHOD_LABELS` (a ``method`` value that is not a key, e.g.
    ``"RW-LoRA, laziness 0"``, is kept as it is). Every line of ``rw`` (the walks) also gets a
    bold running geometric mean over ``trend`` hops (0: none): a constant step size η makes the
    walk reach a neighbourhood of f* and move around in it, not converge, and the per-hop line
    swings by an order of magnitude. A diverged run ends in a red cross (``diverged_at``).
    """
    trend = check_int("trend", trend, low=0)
    walks = rw if isinstance(rw, pd.DataFrame) and not rw.empty else None
    frames = [f for f in (walks, gossip) if isinstance(f, pd.DataFrame) and not f.empty]
    if not frames:
        raise ValueError("rw and gossip are both empty: run at least one method")
    cols = ["method", "seed", "communicated_params", "loss", "gap", "diverged_at"]
    data = pd.concat([f[[c for c in cols if c in f]] for f in frames], ignore_index=True)
    data["method"] = data["method"].map(lambda m: METHOD_LABELS.get(m, m))
    data = data.rename(columns={"communicated_params": X_SENT})
    y = _y(data)
    y_title = "f − f*" if y == "gap" else "f"
    chart = convergence_chart(
        data,
        y=y,
        x=X_SENT,
        y_title=y_title,
        median_over_seeds=False,
        title="Loss against the parameters sent (whole network)",
        width=WIDTH,
        height=HEIGHT,
    )
    if walks is None or trend == 0:
        return chart
    # walks: their running mean; gossip (monotone, one point per round): itself, drawn bold too
    mean = pd.concat(
        [
            _running_mean(data.iloc[: len(walks)], y, trend),
            _running_mean(data.iloc[len(walks) :], y, 1),
        ],
        ignore_index=True,
    )
    if mean.empty:
        return chart
    faint = chart.layer[0].mark_line(opacity=0.35, strokeWidth=1)
    if faint.data is alt.Undefined:  # alt.layer hoists a single layer's data to the top
        faint.data = chart.data
    bold = (
        alt.Chart(mean)
        .mark_line(strokeWidth=3)
        .encode(
            x=alt.X(f"{X_SENT}:Q", title=X_SENT),
            y=alt.Y(
                "value:Q", title=y_title, scale=alt.Scale(type="log"), axis=alt.Axis(format=".0e")
            ),
            color=alt.Color("method:N"),
            tooltip=[
                alt.Tooltip("method"),
                alt.Tooltip(f"{X_SENT}:Q"),
                alt.Tooltip("value:Q", title=f"running mean of {y_title}", format=".3g"),
            ],
        )
    )
    subtitle = (
        f"RW-LoRA thin: every hop; bold: running geometric mean over {trend} hops (the trend)"
    )
    return alt.layer(faint, *chart.layer[1:], bold).properties(
        width=WIDTH,
        height=HEIGHT,
        title=alt.Title("Loss against the parameters sent (whole network)", subtitle=subtitle),
    )


def _running_mean(data: pd.DataFrame, y: str, window: int) -> pd.DataFrame:
    """exp of the running mean of log ``y`` over ``window`` rows, per (method, seed): the trend
    of a loss drawn on a log axis (an arithmetic mean would follow the largest swings)."""
    data = data[np.isfinite(data[y]) & (data[y] > 0)].copy()
    logs = np.log(data[y].clip(lower=FLOOR))
    data["value"] = np.exp(
        logs.groupby([data["method"], data["seed"]]).transform(
            lambda v: v.rolling(window, min_periods=1).mean()
        )
    )
    return data[["method", "seed", X_SENT, "value"]]


def mismatch_chart(gossip: pd.DataFrame) -> alt.Chart:
    """The gossip bilinear mismatch max_i ‖Σ_j M_ij B_jA_j − B̄_iĀ_i‖_F per round (RW-LoRA: 0)."""
    if not isinstance(gossip, pd.DataFrame) or gossip.empty:
        note = pd.DataFrame({"text": ["gossip not run: RW-LoRA's single token has no mismatch"]})
        return (
            alt.Chart(note)
            .mark_text(size=13)
            .encode(text=alt.Text("text:N"))
            .properties(width=WIDTH, height=HEIGHT, title="Bilinear mismatch")
        )
    data = gossip[["round", "mismatch"]].copy()
    data["mismatch"] = pd.to_numeric(data["mismatch"], errors="coerce")
    data = data[np.isfinite(data["mismatch"]) & (data["mismatch"] > 0)]
    data["mismatch"] = data["mismatch"].clip(lower=FLOOR)
    return (
        alt.Chart(data)
        .mark_line(point=True, color="#e45756")
        .encode(
            x=alt.X("round:Q", title="gossip round"),
            y=alt.Y(
                "mismatch:Q", title="largest node mismatch ‖ℳ_i‖_F", scale=alt.Scale(type="log")
            ),
            tooltip=[alt.Tooltip("round"), alt.Tooltip("mismatch")],
        )
        .properties(
            width=WIDTH, height=HEIGHT, title="Gossip bilinear mismatch per round (RW-LoRA: 0)"
        )
    )


def _layout(G: nx.Graph) -> dict:
    kind = G.graph.get("kind")
    if kind in ("ring", "complete"):
        return nx.circular_layout(G)
    if kind in ("grid", "torus"):
        return nx.kamada_kawai_layout(G)
    return nx.spring_layout(G, seed=0)


def token_path_chart(
    graph: nx.Graph, path, step: int, *, trail: int = TRAIL, pos: dict | None = None
) -> alt.LayerChart:
    """Node-link view of the token's walk after ``step`` hops.

    Edges are grey rules; each node is a point sized by the updates it has run, i.e. its visits
    among the holders v_0, …, v_{step−1} (so the visits add up to ``step``); the current holder
    v_step is red; the last ``trail`` hops are orange lines (darker = more recent) with an arrow
    head at their end. Layout: circular for rings and complete graphs, else a seeded spring
    layout (or ``pos``).
    """
    if not isinstance(graph, nx.Graph):
        raise ValueError(f"graph must be a networkx Graph, got {type(graph).__name__}")
    path = [int(v) for v in path]
    if not path:
        raise ValueError("path must hold at least the start node")
    step = check_int("step", step, low=0, high=len(path) - 1)
    trail = check_int("trail", trail, low=0)
    pos = pos or _layout(graph)
    xy = {v: (float(p[0]), float(p[1])) for v, p in pos.items()}
    edges = pd.DataFrame(
        [{"x": xy[u][0], "y": xy[u][1], "x2": xy[v][0], "y2": xy[v][1]} for u, v in graph.edges]
    )
    N = graph.number_of_nodes()
    counts = np.bincount(np.asarray(path[:step], dtype=int), minlength=N)
    holder = path[step]
    nodes = pd.DataFrame(
        {
            "node": list(range(N)),
            "x": [xy[v][0] for v in range(N)],
            "y": [xy[v][1] for v in range(N)],
            "visits": counts[:N],
            "holder": [v == holder for v in range(N)],
        }
    )
    hops = [
        {
            "hop": t,
            "x": xy[path[t - 1]][0],
            "y": xy[path[t - 1]][1],
            "x2": xy[path[t]][0],
            "y2": xy[path[t]][1],
            "age": step - t,
        }
        for t in range(max(1, step - trail + 1), step + 1)
        if path[t] != path[t - 1]
    ]
    hops = pd.DataFrame(hops, columns=["hop", "x", "y", "x2", "y2", "age"])
    hops["angle"] = np.degrees(np.arctan2(hops["x2"] - hops["x"], hops["y2"] - hops["y"]))
    hops["mx"] = 0.75 * hops["x2"] + 0.25 * hops["x"]
    hops["my"] = 0.75 * hops["y2"] + 0.25 * hops["y"]
    axis = {"axis": None, "scale": alt.Scale(zero=False, nice=False)}
    X, Y = alt.X("x:Q", **axis), alt.Y("y:Q", **axis)
    layers = [
        alt.Chart(edges)
        .mark_rule(color="#bbb")
        .encode(x=X, y=Y, x2=alt.X2("x2:Q"), y2=alt.Y2("y2:Q")),
    ]
    if not hops.empty:
        opacity = alt.Opacity(
            "age:Q", scale=alt.Scale(domain=[0, max(trail, 1)], range=[1.0, 0.25]), legend=None
        )
        layers.append(
            alt.Chart(hops)
            .mark_rule(color="#f58518", strokeWidth=3)
            .encode(
                x=X,
                y=Y,
                x2=alt.X2("x2:Q"),
                y2=alt.Y2("y2:Q"),
                opacity=opacity,
                tooltip=[alt.Tooltip("hop")],
            )
        )
        layers.append(
            alt.Chart(hops)
            .mark_point(shape="triangle", filled=True, size=90, color="#f58518")
            .encode(
                x=alt.X("mx:Q", **axis),
                y=alt.Y("my:Q", **axis),
                angle=alt.Angle("angle:Q", scale=None),
                opacity=opacity,
            )
        )
    size_max = max(int(counts.max()), 1)
    layers.append(
        alt.Chart(nodes)
        .mark_circle(opacity=0.9, stroke="black", strokeWidth=0.5)
        .encode(
            x=X,
            y=Y,
            size=alt.Size(
                "visits:Q",
                scale=alt.Scale(domain=[0, size_max], range=[60, 900]),
                legend=None,
            ),
            color=alt.ColorValue(
                **alt.condition("datum.holder", alt.value("#c00"), alt.value("#4c78a8"))
            ),
            tooltip=[alt.Tooltip("node"), alt.Tooltip("visits"), alt.Tooltip("holder")],
        )
    )
    layers.append(
        alt.Chart(nodes)
        .mark_text(color="white", fontSize=10)
        .encode(x=X, y=Y, text=alt.Text("node:N"))
    )
    title = f"Token after {step} hops: at node {holder} (red); last {trail} hops in orange"
    return alt.layer(*layers).properties(width=360, height=320, title=title)


# ---------------------------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------------------------
def _status(tv: pd.DataFrame, runs: RandomWalkRuns) -> str:
    tau = tv.attrs["tau"]
    parts = [f"τ_mix({tau.eps:g}) = {tv.attrs['tau_mix']}"]
    if not tau.finite and tau.reason:
        parts[0] += f": {html.escape(tau.reason)}"
    for frame in (runs.rw, runs.gossip):
        if frame.empty:
            continue
        method = METHOD_LABELS[frame["method"].iloc[0]]
        last = frame.iloc[-1]
        y = _y(frame)
        text = (
            f"<b>{method}</b>: {'f − f*' if y == 'gap' else 'f'} = {float(last[y]):.3e} after "
            f"{int(last['communicated_params']):,} parameters sent"
        )
        if frame.attrs.get("diverged"):
            where = ", ".join(f"step {t} (seed {s})" for s, t in frame.attrs["diverged"].items())
            text += f" <span style='color:#c00'>diverged at {where}: lower lr</span>"
        parts.append(text)
    if not runs.gossip.empty:
        parts.append(f"max gossip mismatch {float(runs.gossip['mismatch'].max()):.3g}")
    out = " · ".join(parts)
    warning = runs.rw.attrs.get("warning") if not runs.rw.empty else ""
    if warning:
        out += f"<br><span style='color:#c00'>{html.escape(warning)}</span>"
    return out


def random_walks_app(
    kind: str = "ring",
    N: int = 10,
    laziness: float = 0.5,
    pi: str = "uniform",
    methods: Iterable[str] = WALK_METHODS,
    hops: int | None = None,
    seed: int = 0,
) -> App:
    """Controls for the graph family, N, laziness, π and the methods, redrawing
    :func:`tv_chart`, :func:`visits_chart`, :func:`comm_chart` and :func:`mismatch_chart`; a
    step slider below redraws only :func:`token_path_chart` (no recomputation).

    Computes and draws once when built; returns an :class:`App` with extra attributes
    ``step_slider``, ``path_output`` and ``path`` (a dict: ``chart``, ``seconds``, ``graph``,
    ``path``).
    """
    kind, N = _check_kind_n(kind, N)
    laziness = check_real("laziness", laziness, low=0.0, high=1.0, high_open=True)
    check_choice("pi", pi, WALK_PIS)
    methods = _check_methods(methods)
    hops = check_int("hops", by_mode(hops, HOPS, FAST_HOPS), low=1)
    style = {"description_width": "initial"}
    controls = {
        "kind": widgets.Dropdown(options=WALK_GRAPHS, value=kind, description="graph"),
        "N": widgets.IntSlider(
            value=N, min=2, max=MAX_NODES, description="nodes N", continuous_update=False
        ),
        "laziness": widgets.FloatSlider(
            value=laziness,
            min=0.0,
            max=0.95,
            step=0.05,
            description="laziness",
            continuous_update=False,
            style=style,
        ),
        "pi": widgets.Dropdown(
            options=[("uniform π", "uniform"), ("π ∝ sizes (v + 1)", "sizes")],
            value=pi,
            description="target π",
        ),
        "methods": widgets.SelectMultiple(
            options=[(METHOD_LABELS[m], m) for m in WALK_METHODS],
            value=methods,
            rows=2,
            description="methods",
        ),
    }
    step = widgets.IntSlider(value=hops, min=0, max=hops, description="path step", style=style)
    path_out = widgets.Output()
    state: dict = {"chart": None, "seconds": math.nan, "graph": None, "path": [0]}

    def draw_path(_=None) -> None:
        start = time.perf_counter()
        value = min(step.value, len(state["path"]) - 1)
        chart = token_path_chart(state["graph"], state["path"], value, pos=state["pos"])
        # the schema check once, on the first draw (as App.redraw does)
        spec = chart.to_dict(validate=state["chart"] is None)
        path_out.outputs = (output(spec, static=False),)
        state["chart"], state["seconds"] = chart, time.perf_counter() - start

    def compute(kind, N, laziness, pi, methods):
        tv = tv_frame(kind, N, laziness, pi, seed=seed)
        runs = walk_frames(kind, N, laziness, pi, methods, hops, seed)
        charts = [tv_chart(tv)]
        if runs.rw.empty:
            charts.append(
                alt.Chart(pd.DataFrame({"t": ["RW-LoRA not run: no visits"]}))
                .mark_text(size=13)
                .encode(text=alt.Text("t:N"))
                .properties(width=WIDTH, height=HEIGHT)
            )
        else:
            charts.append(visits_chart(runs.visits))
        charts += [comm_chart(runs.rw, runs.gossip), mismatch_chart(runs.gossip)]
        path = runs.rw.attrs["path"][seed] if not runs.rw.empty else [0]
        state.update(graph=runs.graph, path=path, pos=_layout(runs.graph))
        with step.hold_trait_notifications():
            step.max = len(path) - 1
            step.value = len(path) - 1
        draw_path()
        return runs, charts, _status(tv, runs)

    app = App(controls, compute, n_charts=4)
    grid = widgets.GridBox(
        app.outputs, layout=widgets.Layout(grid_template_columns="repeat(2, auto)")
    )
    app.children = (app.children[0], app.save_bar, app.status, grid, step, path_out)
    step.observe(draw_path, names="value")
    app.step_slider, app.path_output, app.path = step, path_out, state
    return app
