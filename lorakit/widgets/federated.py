"""The app of notebook 04: FSLoRA and its baselines on federated softmax regression.

:func:`federated_frame` runs FSLoRA (FSLoRA Algorithm 1) and the baselines of the same engine
(:func:`lorakit.federated.make_federated`: FedIT, HeteroLoRA, FSLoRA + top-k, FlexLoRA,
FedStackLoRA) on the digits split among clients by a Dirichlet label skew, every method with the
same seeds and hence the same devices (the k_i are drawn once per run from the seed's ``budget``
stream). :func:`federated_charts` draws the loss against the round and against the cumulative
uploaded megabytes, :func:`budget_chart` the per-client sketching ratios k_i/r, and
:func:`federated_app` wires them to sliders (README "Architecture", principle 6: the notebook only
calls these).
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Iterable
from numbers import Real

import altair as alt
import ipywidgets as widgets
import numpy as np
import pandas as pd
import torch

from .. import problems
from .._validation import check_choice, check_int, check_real
from ..federated import budgets as bud
from ..federated import make_federated
from ..mode import by_mode
from ..viz import FLOOR, HEIGHT, WIDTH, divergence_layer, marker_rows, series_encodings
from ._app import App

__all__ = [
    "FEDERATED_APP_METHODS",
    "FEDERATED_PROBLEMS",
    "RATIO_MIXES",
    "budget_chart",
    "client_budgets",
    "federated_app",
    "federated_budget",
    "federated_charts",
    "federated_frame",
    "log_domain",
    "method_label",
]

#: The methods the app runs: every FederatedLoRA configuration of :func:`make_federated`
#: (Fed-RAC-LoRA has no budgets and a W-space step; notebook 05 covers it).
FEDERATED_APP_METHODS = (
    "fslora",
    "fedit",
    "hetero_lora",
    "fslora_topk",
    "flex_lora",
    "fedstack_lora",
)
DEFAULT_METHODS = ("fslora", "fedit", "hetero_lora", "flex_lora", "fedstack_lora")
#: Named sketching-ratio mixes (a single ratio in (0, 1] or a Budget is accepted too).
RATIO_MIXES = ("paper", "code", "uniform", "heavy tail")
FEDERATED_PROBLEMS = ("digits", "quadratics")
#: Default client learning rate γ per problem, the same for every method. Digits: 0.1 is the
#: largest of 0.05, 0.1, 0.15, 0.2 at which no method diverges for any mix with H ≤ 5 local steps
#: (at 0.15 FSLoRA with H = 5 does: its k_i = 1 clients are (r/k_i)² = 64 times as steep,
#: FSLoRA Prop. D.4). Quadratics: 0.003 of 0.003, 0.01, 0.02 (at 0.01 FSLoRA diverges with H = 5:
#: the factorised quadratic is smooth only on bounded sets, spec fslora.md §10 item 18).
DEFAULT_LR = {"digits": 0.1, "quadratics": 0.003}
ROUNDS, FAST_ROUNDS = 30, 10
MAX_CLIENTS = 200
QUADRATIC_SHAPE = (10, 64)  # the digits' W ∈ ℝ^{10×64}, so bytes per message match
MB_COL = "uploaded MB (all clients)"


# ---------------------------------------------------------------------------------------------
# problems and budgets
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _digits(num_clients: int, alpha: float):
    # f* of the federated objective is solved once per split (~0.15 s); the clients' own f_l*
    # are not needed here.
    return problems.federated_digits(num_clients, "dirichlet", alpha, solve_clients=False)


@functools.lru_cache(maxsize=16)
def _quadratics(num_clients: int):
    m, n = QUADRATIC_SHAPE
    return problems.heterogeneous_quadratics(num_clients, m, n, L=1.0, spread=1.0, seed=0)


def _problem(problem: str, num_clients: int, alpha: float):
    if problem == "digits":
        return _digits(num_clients, alpha)
    return _quadratics(num_clients)


def federated_budget(ratio_mix="paper") -> bud.Budget:
    """The :class:`~lorakit.federated.budgets.Budget` of a sketching-ratio mix.

    * ``"paper"`` — k_i/r uniform on {1/8, 1/4, 1/2, 3/4} (FSLoRA §5, spec fslora.md §3);
    * ``"code"`` — k_i/r uniform on {1/8, 1/4, 1/2} (the authors' code, spec §10 item 4);
    * ``"uniform"`` — k_i uniform on {1, …, r}; ``"heavy tail"`` — most k_i near 1, a few large
      (the later code's distributions, spec §11);
    * a ratio q in (0, 1] — every client trains round(q·r) components (q = 1: FedIT);
    * a :class:`~lorakit.federated.budgets.Budget`, used as is.

    k_i = round(ratio·r) is clipped to [1, r].
    """
    if isinstance(ratio_mix, bud.Budget):
        return ratio_mix
    if isinstance(ratio_mix, str):
        if ratio_mix not in RATIO_MIXES:
            raise ValueError(
                f"ratio_mix must be one of {list(RATIO_MIXES)}, a ratio in (0, 1] or a Budget, "
                f"got {ratio_mix!r}"
            )
        if ratio_mix == "paper":
            return bud.mix((0.125, 0.25, 0.5, 0.75))
        if ratio_mix == "code":
            return bud.mix((0.125, 0.25, 0.5))
        if ratio_mix == "uniform":
            return bud.uniform(1)
        return bud.heavy_tail(1)
    if isinstance(ratio_mix, Real) and not isinstance(ratio_mix, bool):
        q = check_real("ratio_mix", ratio_mix, low=0.0, high=1.0, low_open=True)
        return bud.mix((q,))
    raise ValueError(
        f"ratio_mix must be one of {list(RATIO_MIXES)}, a ratio in (0, 1] or a Budget, "
        f"got {ratio_mix!r}"
    )


def _seed_list(seeds) -> list[int]:
    if isinstance(seeds, Iterable) and not isinstance(seeds, str):
        out = [check_int("seeds", s, low=0) for s in seeds]
        if not out:
            raise ValueError("seeds must name at least one seed")
        return list(dict.fromkeys(out))
    return list(range(check_int("seeds", seeds, low=1)))


def client_budgets(ratio_mix="paper", num_clients: int = 10, rank: int = 8, seeds=1):
    """The k_i every sketching method of a run draws: columns seed, client, k, rank, ratio = k/r.

    A run with seed s draws its k_i once (:meth:`FederatedLoRA.client_budgets`), so every method
    run with seed s sees the same devices; FedIT ignores the budgets (k_i = r). ``seeds`` is a count or an iterable.
    """
    budget = federated_budget(ratio_mix)
    num_clients = check_int("num_clients", num_clients, low=1, high=MAX_CLIENTS)
    rank = check_int("rank", rank, low=1)
    cfg = make_federated("fslora", rank, 1.0, budgets=budget)
    frames = []
    for seed in _seed_list(seeds):
        k = cfg.client_budgets(num_clients, seed)
        frames.append(pd.DataFrame({"seed": seed, "client": range(num_clients), "k": k.numpy()}))
    out = pd.concat(frames, ignore_index=True)
    out["rank"] = rank
    out["ratio"] = out["k"] / rank
    return out


# ---------------------------------------------------------------------------------------------
# the frame
# ---------------------------------------------------------------------------------------------
def _check_methods(methods) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(dict.fromkeys(methods))
    if not methods:
        raise ValueError(f"methods must name at least one of {list(FEDERATED_APP_METHODS)}")
    for method in methods:
        check_choice("methods", method, FEDERATED_APP_METHODS)
    return methods


def federated_frame(
    methods: Iterable[str] = DEFAULT_METHODS,
    num_clients: int = 10,
    ratio_mix="paper",
    alpha: float = 0.5,
    local_steps: int = 2,
    rounds: int | None = None,
    rank: int = 8,
    lr: float | None = None,
    seeds=1,
    problem: str = "digits",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each method for ``rounds`` server rounds on the same devices: (history, messages).

    The problem is ``federated_digits(num_clients, "dirichlet", alpha)`` (softmax regression on
    the digits, 10 × 64, label skew Dir(α); f* solved, so ``gap`` = f − f* is exact) or, with
    ``problem="quadratics"``, ``heterogeneous_quadratics(num_clients, 10, 64)`` (α unused).
    The sketching methods draw k_i from ``ratio_mix`` (:func:`federated_budget`) with the same
    seeds, hence the same k_i (:func:`client_budgets`); FedIT trains k_i = r. Every method takes H
    = ``local_steps`` plain SGD steps with learning rate ``lr`` (default :data:`DEFAULT_LR`), full
    participation, plain server averaging, rank-``rank`` adapter with α = r.
    ``rounds`` defaults to 30 (10 with ``LORAKIT_FAST=1``); ``seeds`` is a count or an iterable.

    A run that diverges keeps the rounds and messages logged before it stopped (the engine's
    ``on_divergence="stop"``): ``diverged_at`` holds the round (NaN otherwise) and
    ``history.attrs["diverged"]`` maps method → {seed: message}.

    history: one row per method, seed and round (0, …, rounds): the engine's columns (``round``,
    ``loss``, ``gap``, ``grad_norm_sq``, ``bytes_up``/``bytes_down`` of the round, cumulative
    ``mb_up``/``mb_down``, ``rho1``, ``rho2``, ``mean_ratio`` of the run's k_i, …) and
    ``diverged_at``, ``lr``, ``num_clients``, ``dirichlet_alpha`` (NaN for the quadratics),
    ``ratio_mix``. messages: one row per
    method, seed, round and client (``k``, ``bytes_up``, ``bytes_down``, ``dropped``, ``rank``).
    ``history.attrs`` also holds ``k`` (seed → list of the sketching methods' k_i), ``rank``,
    ``lr``, ``problem``, ``budget``.
    """
    methods = _check_methods(methods)
    num_clients = check_int("num_clients", num_clients, low=1, high=MAX_CLIENTS)
    alpha = check_real("alpha", alpha, low=0.0, low_open=True)
    local_steps = check_int("local_steps", local_steps, low=1)
    rounds = check_int("rounds", by_mode(rounds, ROUNDS, FAST_ROUNDS), low=1)
    check_choice("problem", problem, FEDERATED_PROBLEMS)
    rank = check_int("rank", rank, low=1, high=min(QUADRATIC_SHAPE))
    lr = check_real("lr", DEFAULT_LR[problem] if lr is None else lr, low=0.0, low_open=True)
    seeds = _seed_list(seeds)
    budget = federated_budget(ratio_mix)
    ks = client_budgets(budget, num_clients, rank, seeds)
    prob = _problem(problem, num_clients, alpha)

    histories, messages, diverged = [], [], {}
    for method in methods:
        config = {"local_steps": local_steps}
        if method != "fedit":  # FedIT trains the full rank: k_i = r
            config["budgets"] = budget
        cfg = make_federated(method, rank, lr, **config)
        for seed in seeds:
            hist, msgs = cfg.run(prob, rounds, seed, messages=True, on_divergence="stop")
            stopped = hist.attrs["diverged"].get(seed)
            hist["diverged_at"] = math.nan if stopped is None else float(stopped)
            if stopped is not None:
                diverged.setdefault(method, {})[seed] = (
                    f"{method} diverged in round {stopped} (seed {seed}): lower lr = {lr:g}"
                )
            histories.append(hist)
            if not msgs.empty:
                msgs.insert(0, "method", method)
                msgs["rank"] = rank
                messages.append(msgs)
    history = pd.concat(histories, ignore_index=True)
    history["lr"] = lr
    history["num_clients"] = num_clients
    history["dirichlet_alpha"] = alpha if problem == "digits" else math.nan
    history["ratio_mix"] = str(ratio_mix)
    msg_cols = ["method", "seed", "round", "client", "k", "bytes_up", "bytes_down", "dropped"]
    messages = (
        pd.concat(messages, ignore_index=True)
        if messages
        else pd.DataFrame(columns=[*msg_cols, "rank"])
    )
    history.attrs = {
        "diverged": diverged,
        "k": {int(s): g["k"].tolist() for s, g in ks.groupby("seed")},
        "rank": rank,
        "lr": lr,
        "problem": prob.name,
        "budget": str(budget),
    }
    return history, messages


# ---------------------------------------------------------------------------------------------
# charts
# ---------------------------------------------------------------------------------------------
def _y_column(history: pd.DataFrame) -> str:
    gap = pd.to_numeric(history.get("gap"), errors="coerce") if "gap" in history else None
    return "gap" if gap is not None and bool(np.isfinite(gap).any()) else "loss"


#: The methods in words (legends, status line); frames keep the keys of :func:`make_federated`.
METHOD_LABELS = {
    "fslora": "FSLoRA",
    "fedit": "FedIT",
    "hetero_lora": "HeteroLoRA",
    "fslora_topk": "FSLoRA + top-k",
    "flex_lora": "FlexLoRA",
    "fedstack_lora": "FedStackLoRA",
}
_X_TITLES = {"round": "server round", MB_COL: MB_COL}


def method_label(name: str) -> str:
    """``"fslora (paper mix)"`` → ``"FSLoRA (paper mix)"``: the method key in words, the rest
    kept (the longest matching key wins, so ``fslora_topk`` is not read as ``fslora``)."""
    name = str(name)
    for key in sorted(METHOD_LABELS, key=len, reverse=True):
        if name == key or name.startswith(key + " "):
            return METHOD_LABELS[key] + name[len(key) :]
    return name


def log_domain(values) -> list[float]:
    """A log-axis domain fitted to the positive finite ``values``: [min, max] widened by 5 % of
    its width in log space (a factor 1.1 at least when min = max), so data in 0.7–2.2 gets
    that range and not Vega's nice 0.1–10."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return [FLOOR, 1.0]
    lo, hi = float(v.min()), float(v.max())
    pad = max((hi / lo) ** 0.05, 1.1) if hi > lo else 1.1
    return [lo / pad, hi * pad]


def _loss_chart(data: pd.DataFrame, x: str, y: str, y_title: str, title: str, per_seed: bool):
    """One line per method (median over seeds with a min–max band, or one line per seed), each
    with its own dash and point shape, on a log axis fitted to the data; red crosses where a run
    diverged."""
    data = data[[c for c in ("method", "seed", x, y, "diverged_at") if c in data]].copy()
    data[y] = pd.to_numeric(data[y], errors="coerce").astype(float)
    data = data[np.isfinite(data[y]) & (data[y] > 0)]
    data[y] = data[y].clip(lower=FLOOR)
    if "seed" not in data:
        data["seed"] = 0
    data["method"] = data["method"].map(method_label)
    names = list(dict.fromkeys(data["method"]))
    several = not per_seed and bool((data.groupby("method")["seed"].nunique() > 1).any())
    if several:
        lines = (
            data.groupby(["method", x], sort=False)[y]
            .agg(value="median", low="min", high="max")
            .reset_index()
        )
    else:
        lines = data.rename(columns={y: "value"})
    domain = log_domain(np.concatenate([data[y].to_numpy(), lines["value"].to_numpy()]))
    decades = math.log10(domain[1] / domain[0])
    axis = alt.Axis(format=".0e") if decades > 2 else alt.Axis(format=".3~g")
    y_scale = alt.Scale(type="log", domain=domain, nice=False)
    x_enc = alt.X(f"{x}:Q", title=_X_TITLES.get(x, x), scale=alt.Scale(nice=False))
    y_enc = alt.Y("value:Q", title=y_title, scale=y_scale, axis=axis)
    series = series_encodings("method", names, "method")
    color, dash, shape = series["color"], series["strokeDash"], series["shape"]
    tooltip = [alt.Tooltip("method:N"), alt.Tooltip(f"{x}:Q", title=_X_TITLES.get(x, x))]
    tooltip.append(alt.Tooltip("value:Q", title=y_title, format=".4g"))
    layers = []
    if several:
        layers.append(
            alt.Chart(lines)
            .mark_area(opacity=0.15)
            .encode(
                x=x_enc,
                y=alt.Y("low:Q", scale=y_scale, title=y_title),
                y2=alt.Y2("high:Q"),
                color=color,
            )
        )
    marks = data[data["diverged_at"].notna()] if "diverged_at" in data else data.iloc[:0]
    if not marks.empty:
        marks = marks.loc[marks.groupby(["method", "seed"])[x].idxmax()].rename(
            columns={y: "value"}
        )
        layers.append(divergence_layer(marks, x_enc, y_enc, ["method:N", "seed:N"], "round"))
    enc = {} if several else {"detail": alt.Detail("seed:N")}
    layers.append(
        alt.Chart(lines)
        .mark_line(strokeWidth=2)
        .encode(x=x_enc, y=y_enc, color=color, strokeDash=dash, tooltip=tooltip, **enc)
    )
    layers.append(
        alt.Chart(marker_rows(lines, "method", names))
        .mark_point(size=45, filled=False, strokeWidth=1.5, opacity=1)
        .encode(x=x_enc, y=y_enc, color=color, shape=shape, tooltip=tooltip)
    )
    if not marks.empty:
        title = alt.TitleParams(title, subtitle="red cross: a run diverged and stopped there")
    return alt.layer(*layers).properties(width=WIDTH, height=HEIGHT, title=title)


def federated_charts(history: pd.DataFrame, messages: pd.DataFrame | None = None) -> tuple:
    """f − f* (or the loss when f* is unknown) against the server round and against the
    cumulative megabytes uploaded by all clients, one line per method (median and min–max band
    over seeds against the round; one line per seed against the megabytes, since the k_i and so
    the bytes differ between seeds). Each method has its own colour, dash and point shape, so
    lines that coincide (FlexLoRA on FSLoRA with every k_i/r = 1/2) stay visible; the log axis
    is fitted to the data (:func:`log_domain`); a red cross marks where a run diverged.

    ``messages`` is accepted for symmetry with :func:`federated_frame`'s return value and unused:
    the history already holds the cumulative bytes.
    """
    if not isinstance(history, pd.DataFrame) or history.empty:
        raise ValueError("history must be a non-empty frame from federated_frame")
    for col in ("method", "round", "mb_up", "loss"):
        if col not in history.columns:
            raise ValueError(f"history lacks the column {col!r}")
    y = _y_column(history)
    y_title = "f(W) − f*" if y == "gap" else "f(W)"
    several = "seed" in history and history["seed"].nunique() > 1
    frame = history.rename(columns={"mb_up": MB_COL})
    per_round = _loss_chart(
        frame, "round", y, y_title, f"{y_title} against the server round", per_seed=False
    )
    per_mb = _loss_chart(
        frame, MB_COL, y, y_title, f"{y_title} against the megabytes uploaded", per_seed=several
    )
    return per_round, per_mb


def _budget_table(data, rank) -> tuple[pd.DataFrame, int]:
    if isinstance(data, pd.DataFrame):
        if "k" not in data.columns:
            raise ValueError("data must have a column 'k' (a messages or client_budgets frame)")
        frame = data
        if "method" in frame.columns:
            sketched = frame[frame["method"] != "fedit"]
            frame = sketched if not sketched.empty else frame
            frame = frame[frame["method"] == frame["method"].iloc[0]] if not frame.empty else frame
        if "round" in frame.columns and not frame.empty:
            frame = frame[frame["round"] == frame["round"].min()]
        if rank is None:
            if "rank" not in frame.columns or frame.empty:
                raise ValueError("rank is needed when data has no 'rank' column")
            rank = int(frame["rank"].iloc[0])
        k = frame["k"].to_numpy()
    else:
        if isinstance(data, torch.Tensor):
            data = data.cpu().numpy()
        try:
            k = np.asarray(list(data) if not isinstance(data, np.ndarray) else data)
        except TypeError as error:
            raise ValueError(
                f"data must be a frame with a column 'k' or a sequence of k_i, got {data!r}"
            ) from error
        if rank is None:
            raise ValueError("rank is needed when data is a sequence of k_i")
    if k.size == 0:
        raise ValueError("data holds no budgets k_i")
    if k.dtype.kind not in "iu":
        if k.dtype.kind != "f" or not np.all(k == np.round(k)):
            raise ValueError(f"the budgets k_i must be integers, got {k[:5]!r}")
        k = k.astype(np.int64)
    rank = check_int("rank", int(rank), low=1)
    if int(k.min()) < 1 or int(k.max()) > rank:
        raise ValueError(f"the budgets k_i must be in [1, {rank}], got [{k.min()}, {k.max()}]")
    return pd.DataFrame({"k": k.astype(np.int64)}), rank


def budget_chart(data, rank: int | None = None, title: str | None = None) -> alt.Chart:
    """Histogram of the sketching ratios k_i/r: how many clients train each share of the rank.

    ``data`` is a messages frame of :func:`federated_frame` (the first round of the first
    sketching method is used: all of them share the devices; FedIT's k_i = r only if it is alone),
    a :func:`client_budgets` frame (all its seeds are counted), or a sequence of k_i with
    ``rank``. The title gives ρ_1 = mean r/k_i and ρ_2 = mean (r/k_i)² (FSLoRA Theorem 4.4:
    L̄ = ρ_1·L, L̃ = ρ_2·L).
    """
    table, rank = _budget_table(data, rank)
    summary = bud.describe(torch.tensor(table["k"].to_numpy()), rank)
    counts = table["k"].value_counts().reindex(range(1, rank + 1), fill_value=0)
    bars = pd.DataFrame({"k": counts.index, "clients": counts.to_numpy()})
    bars["k_i/r"] = [f"{k}/{rank} = {k / rank:.3g}" for k in bars["k"]]
    order = bars["k_i/r"].tolist()
    title = title or (
        f"Sketching ratios k_i/r ({len(table)} clients): ρ₁ = {summary['rho1']:.3g}, "
        f"ρ₂ = {summary['rho2']:.3g}, mean k_i/r = {summary['mean_ratio']:.3g}"
    )
    return (
        alt.Chart(bars)
        .mark_bar()
        .encode(
            x=alt.X("k_i/r:O", sort=order, title="k_i / r", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("clients:Q", title="clients", axis=alt.Axis(tickMinStep=1)),
            tooltip=[alt.Tooltip("k_i/r:O"), alt.Tooltip("k:Q"), alt.Tooltip("clients:Q")],
        )
        .properties(width=520, height=180, title=title)
    )


# ---------------------------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------------------------
def _federated_status(history: pd.DataFrame) -> str:
    y = _y_column(history)
    label = "f − f*" if y == "gap" else "f"
    parts = []
    diverged = history.attrs.get("diverged", {})
    for method, rows in history.groupby("method", sort=False):
        last = rows.loc[rows.groupby("seed")["round"].idxmax()]
        mb = float(last["mb_up"].median())
        if method in diverged:
            where = ", ".join(
                f"round {int(r)} (seed {int(s)})"
                for s, r in last[["seed", "diverged_at"]].dropna().itertuples(index=False)
            )
            parts.append(
                f"<b>{method_label(method)}</b>: <span style='color:#c00'>diverged in {where}</span>, "
                f"{mb:.3g} MB up"
            )
        else:
            parts.append(
                f"<b>{method_label(method)}</b>: {label} = {float(last[y].median()):.3e}, "
                f"{mb:.3g} MB up"
            )
    rank = history.attrs.get("rank")
    ks = history.attrs.get("k", {})
    budget = ""
    if ks and rank:
        seed = min(ks)
        d = bud.describe(torch.as_tensor(ks[seed]), rank)
        budget = (
            f"<br>Budgets ({history.attrs.get('budget', '')}, seed {seed}): ρ₁ = mean r/k_i = "
            f"{d['rho1']:.3g}, ρ₂ = mean (r/k_i)² = {d['rho2']:.3g}, mean k_i/r = "
            f"{d['mean_ratio']:.3g} (FSLoRA Thm 4.4: L̄ = ρ₁L, L̃ = ρ₂L; FedIT: k_i = r = {rank})"
        )
    lr = history.attrs.get("lr")
    head = f"After {int(history['round'].max())} rounds, γ = {lr:g}: " if lr else ""
    text = head + " · ".join(parts) + budget
    if diverged:  # the engine's message for the first diverged run says why and what to do
        first = next(iter(next(iter(diverged.values())).values()))
        text += f"<br><span style='color:#c00'>{html.escape(first)}</span>"
    return text


def federated_app(
    methods: Iterable[str] = DEFAULT_METHODS,
    num_clients: int = 10,
    ratio_mix="paper",
    alpha: float = 0.5,
    local_steps: int = 2,
    rounds: int | None = None,
    *,
    rank: int = 8,
    lr: float | None = None,
    seeds=1,
    problem: str = "digits",
) -> App:
    """Sliders for the number of clients, the sketching-ratio mix, the Dirichlet α (log), the
    local steps H, the methods and the rounds, redrawing :func:`federated_frame`: the gap against
    the round and against the uploaded megabytes (:func:`federated_charts`) and the clients'
    k_i/r (:func:`budget_chart`). The status line gives each method's final gap and megabytes
    uploaded (a diverged run in red) and ρ_1, ρ_2 of the budgets.

    Computes and draws once when built; returns an :class:`App` (an ``ipywidgets.VBox``).
    """
    methods = _check_methods(methods)
    rounds = check_int("rounds", by_mode(rounds, ROUNDS, FAST_ROUNDS), low=1)
    mixes = [
        ("paper: k_i/r ∈ {1/8, 1/4, 1/2, 3/4}", "paper"),
        ("code: k_i/r ∈ {1/8, 1/4, 1/2}", "code"),
        ("uniform: k_i ∈ {1, …, r}", "uniform"),
        ("heavy tail: most k_i = 1", "heavy tail"),
        ("all k_i/r = 1/8", 0.125),
        ("all k_i/r = 1/4", 0.25),
        ("all k_i/r = 1/2", 0.5),
        ("all k_i/r = 1 (FedIT)", 1.0),
    ]
    if not any(value == ratio_mix for _, value in mixes):
        federated_budget(ratio_mix)  # a bad value raises, naming ratio_mix
        mixes.append((str(ratio_mix), ratio_mix))
    num_clients = check_int("num_clients", num_clients, low=1, high=MAX_CLIENTS)
    alpha = check_real("alpha", alpha, low=0.0, low_open=True)
    local_steps = check_int("local_steps", local_steps, low=1)
    log_alpha = math.log10(alpha)
    style = {"description_width": "initial"}
    controls = {
        "num_clients": widgets.IntSlider(
            value=num_clients,
            min=min(2, num_clients),
            max=max(50, num_clients),
            description="clients N",
            continuous_update=False,
            style=style,
        ),
        "ratio_mix": widgets.Dropdown(
            options=mixes, value=ratio_mix, description="k_i/r mix", style=style
        ),
        "alpha": widgets.FloatLogSlider(
            value=alpha,
            base=10,
            min=min(-2, log_alpha),
            max=max(2, log_alpha),
            step=0.1,
            description="Dirichlet α",
            readout_format=".3g",
            continuous_update=False,
            style=style,
        ),
        "local_steps": widgets.IntSlider(
            value=local_steps,
            min=1,
            max=max(10, local_steps),
            description="local steps H",
            continuous_update=False,
            style=style,
        ),
        "rounds": widgets.IntSlider(
            value=rounds,
            min=min(5, rounds),
            max=max(200, rounds),
            step=5,
            description="rounds T",
            continuous_update=False,
            style=style,
        ),
        "methods": widgets.SelectMultiple(
            options=[(METHOD_LABELS[k], k) for k in FEDERATED_APP_METHODS],
            value=methods,
            rows=6,
            description="methods",
        ),
    }

    def compute(methods, num_clients, ratio_mix, alpha, local_steps, rounds):
        history, messages = federated_frame(
            methods, num_clients, ratio_mix, alpha, local_steps, rounds, rank, lr, seeds, problem
        )
        k = client_budgets(ratio_mix, num_clients, rank, _seed_list(seeds)[:1])
        charts = [*federated_charts(history, messages), budget_chart(k)]
        return history, charts, _federated_status(history)

    return App(controls, compute, n_charts=3)
