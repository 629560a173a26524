"""App of notebook 03: expected-projector spectra and theorem checks against their bounds."""

from __future__ import annotations

import functools
import html
import math
from fractions import Fraction

import altair as alt
import ipywidgets as widgets
import numpy as np
import pandas as pd

from .._validation import check_choice, check_int, check_real
from ..mode import fast_mode
from ..sketches import anisotropic_gaussian, make_sketch, nonuniform_coordinate
from ..theory import Theorem, exact_expected_projector, expected_projector, get_theorem, lambda_p
from ..theory.scenarios import SCENARIOS, get_scenario
from ..theory.scenarios import curve as scenario_curve
from ..viz import FLOOR, HEIGHT, LABEL_LIMIT, WIDTH
from ._app import App

# ---------------------------------------------------------------------------------------------
# Theory constants: the spectrum of E[H] and the theorems against their runs
# ---------------------------------------------------------------------------------------------
#: Sketch families of :func:`projector_eigen_frame` and :func:`theory_constants_app`. The two
#: non-isotropic ones are built for the factor's dimension d: ``anisotropic_gaussian`` with the
#: log-spaced row scales 10^(−1/2) … 10^(1/2) (one decade), ``nonuniform_coordinate`` with the
#: skewed marginals of :func:`nonuniform_marginals` (a linear ramp summing to r).
THEORY_SKETCHES = (
    "gaussian",
    "haar",
    "coordinate",
    "kaiming_uniform",
    "anisotropic_gaussian",
    "nonuniform_coordinate",
)
#: The Monte Carlo sample counts offered by :func:`theory_constants_app`.
THEORY_SAMPLES = (200, 500, 1000, 2000, 5000, 10_000, 20_000)
_ANISOTROPIC_DECADES = 1.0
_NONUNIFORM_SKEW = Fraction(4, 5)
_SIDE_LABELS = {"left": "E[H_B]", "right": "E[H_A]"}
_SIDE_WORDS = {"left": "Left sketch B", "right": "Right sketch A"}
#: The sketch families in words (dropdown labels and chart titles; the values stay the keys).
_SKETCH_WORDS = {
    "gaussian": "Gaussian",
    "haar": "Haar (random orthonormal)",
    "coordinate": "uniform coordinate sampling",
    "kaiming_uniform": "Kaiming uniform",
    "anisotropic_gaussian": "anisotropic Gaussian (row scales over one decade)",
    "nonuniform_coordinate": "non-uniform coordinate sampling (skewed marginals)",
}


def theorem_quantity(theorem) -> tuple[str, str]:
    """What a theorem bounds, in words: (a short axis title, a phrase for a subtitle).

    ``theorem`` is a key or a :class:`~lorakit.theory.Theorem`. The phrase replaces the TeX-like
    ``Theorem.lhs`` (``E‖∇f(W̃^T)‖², W̃^T uniform over W^0, …, W^{T−1}``) in titles.
    """
    thm = theorem if isinstance(theorem, Theorem) else get_theorem(theorem)
    lhs = thm.lhs
    grad = "the expected squared gradient norm ‖∇f‖²"
    if lhs.startswith("E[f(W^T)] − f*"):
        phrase = "the expected gap f − f* after T steps"
        if "link start" in lhs:
            phrase = "the expected gap f − f* after T links (at a link start)"
        return "expected gap f − f*", phrase
    if lhs.startswith("E[f(W̄^T)] − f(W*)"):
        return "expected gap f − f* of the average", (
            "the expected gap f − f* of the average of the first T iterates"
        )
    if lhs.startswith("min_{t<T}"):
        return "smallest expected ‖∇f‖²", f"the smallest of {grad} over the first T steps"
    if lhs.startswith("E‖∇f("):
        where = "link starts" if "link start" in lhs else "iterates"
        how = "with geometrically decaying weights" if "weights" in lhs else "uniformly"
        return "expected ‖∇f‖²", f"{grad} at one of the first T {where}, drawn {how}"
    return "left-hand side and bounds", lhs


def _claim(thm: Theorem) -> str:
    if "PL" in thm.setting:
        return "linear rate of f − f*"
    if "non-smooth" in thm.setting:
        return "gap of the averaged iterate"
    return "gradient norm bound"


def theorem_label(theorem) -> str:
    """A dropdown label for a theorem: paper, number, setting and what it claims, and whether
    lorakit found an erratum, e.g. ``RAC-LoRA Theorem E.3 · SGD (right sketch), PL: linear rate
    of f − f* (erratum)``."""
    thm = theorem if isinstance(theorem, Theorem) else get_theorem(theorem)
    label = f"{thm.paper} {thm.number} · {thm.setting}: {_claim(thm)}"
    return label + (" (erratum)" if thm.erratum else "")


def theorem_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`lorakit.checks.verify`'s table for reading: one row per theorem check with the
    columns ``theorem``, ``measured ± SE``, ``relation``, ``corrected bound``, ``printed bound``
    and ``status``, as text. A check whose printed statement is right (no erratum) shows "—" as its printed
    bound instead of NaN."""
    need = {"paper", "claim", "measured", "stderr", "relation", "bound", "printed_bound", "status"}
    if not isinstance(table, pd.DataFrame) or not need <= set(table.columns):
        raise ValueError(f"table must be a lorakit.checks.verify table with columns {sorted(need)}")

    def num(value) -> str:
        return "—" if value is None or not np.isfinite(value) else f"{value:.4g}"

    def measured(row) -> str:
        if not np.isfinite(row.measured):
            return "—"
        se = f" ± {row.stderr:.2g}" if np.isfinite(row.stderr) and row.stderr > 0 else ""
        return f"{row.measured:.4g}{se}"

    rows = table.itertuples(index=False)
    return pd.DataFrame(
        [
            {
                "theorem": f"{row.paper} {row.claim}",
                "measured ± SE": measured(row),
                "relation": str(row.relation),
                "corrected bound": num(row.bound),
                "printed bound": num(row.printed_bound),
                "status": str(row.status),
            }
            for row in rows
        ],
        columns=[
            "theorem",
            "measured ± SE",
            "relation",
            "corrected bound",
            "printed bound",
            "status",
        ],
    )


def nonuniform_marginals(d: int, r: int) -> list[Fraction]:
    """Skewed inclusion probabilities π_i = (r/d)·(1 + s·(2i/(d − 1) − 1)), i = 0, …, d − 1.

    A linear ramp around r/d with skew s = min(4/5, d/r − 1), so 0 < π_i ≤ 1 and Σπ_i = r exactly
    (exact fractions, for :func:`lorakit.theory.exact_expected_projector`). λ_min(E[H]) = π_0 =
    (r/d)(1 − s): below r/d whenever r < d.
    """
    d = check_int("d", d, low=1)
    r = check_int("r", r, low=1, high=d)
    if d == 1:
        return [Fraction(1)]
    s = min(_NONUNIFORM_SKEW, Fraction(d, r) - 1)
    return [Fraction(r, d) * (1 + s * (Fraction(2 * i, d - 1) - 1)) for i in range(d)]


def _theory_sketch(family: str, d: int, r: int):
    """The sketch of ``family`` for dimension d and its exact E[H] (None without a closed form)."""
    if family == "anisotropic_gaussian":
        half = _ANISOTROPIC_DECADES / 2
        return anisotropic_gaussian(np.logspace(-half, half, d)), None
    if family == "nonuniform_coordinate":
        pi = nonuniform_marginals(d, r)
        exact = exact_expected_projector("nonuniform_coordinate", d, r, marginals=pi)
        return nonuniform_coordinate([float(v) for v in pi]), exact
    # Closed form (r/d)·I; the subset-by-subset enumeration of coordinate sampling is exact too
    # but costs C(d, r) subsets, so the live app uses the closed form.
    exact = exact_expected_projector(family, d, r, method="closed_form")
    return make_sketch(family), exact


def projector_eigen_frame(
    sketch: str = "gaussian",
    m: int = 16,
    n: int = 24,
    r: int = 2,
    p: float = 0.5,
    samples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """The eigenvalues of Monte Carlo estimates of E[H_B] (m×m) and E[H_A] (n×n), one row each.

    ``sketch`` is one of :data:`THEORY_SKETCHES`; E[H] is estimated from ``samples`` draws with
    :func:`lorakit.theory.expected_projector` (seed ``seed``) for a left sketch B_S (m×r) and a
    right sketch A_S (r×n) — RAC-LoRA Assumption 5.1, Bernoulli-LoRA Assumption 1. Columns:

    * ``side`` (left/right), ``matrix`` (E[H_B]/E[H_A]), ``d`` (m or n), ``i``, ``eigenvalue``
      (ascending);
    * ``exact`` — the i-th eigenvalue of the exact E[H] where
      :func:`~lorakit.theory.exact_expected_projector` has a closed form (NaN otherwise);
    * ``r_over_d`` — r/m or r/n, the isotropic value E[H] = (r/d)·I;
    * ``tolerance`` — σ·√d with σ the RMS entry-wise standard error of the estimate: the spectral
      size of the Monte Carlo noise (the extreme eigenvalues of the noisy mean sit about
      2σ√d outside the true ones);
    * ``lambda_min``, ``lambda_max`` — that side's measured extreme eigenvalues;
    * ``lambda_p_min``, ``lambda_p_max`` — Bernoulli-LoRA's λ^p = p·λ(E H_B) + (1 − p)·λ(E H_A)
      from the measured λ's (:func:`lorakit.theory.lambda_p`; the same on every row), and
      ``exact_lambda_p_min``/``exact_lambda_p_max`` from the exact E[H] (NaN without one).
    """
    check_choice("sketch", sketch, THEORY_SKETCHES)
    m = check_int("m", m, low=1, high=4096)
    n = check_int("n", n, low=1, high=4096)
    r = check_int("r", r, low=1, high=min(m, n))
    p = check_real("p", p, low=0.0, high=1.0)
    samples = check_int("samples", samples, low=2, high=10**7)
    seed = check_int("seed", seed, low=0)
    parts, ranges, exact_ranges = [], {}, {}
    for side, d in (("left", m), ("right", n)):
        sk, exact = _theory_sketch(sketch, d, r)
        est = expected_projector(sk, d, r, side=side, samples=samples, seed=seed)
        eig = est.eigenvalues.numpy()
        sigma = float(est.stderr.square().mean().sqrt())
        exact_eig = (
            np.sort([float(v) for v in exact.diagonal()])
            if exact is not None and exact.is_diagonal()
            else np.full(d, np.nan)
        )
        # Clamped to [0, 1] for λ^p: rounding can put an extreme eigenvalue just outside.
        ranges[side] = (min(max(est.lambda_min, 0.0), 1.0), min(max(est.lambda_max, 0.0), 1.0))
        exact_ranges[side] = None if exact is None else exact
        parts.append(
            pd.DataFrame(
                {
                    "side": side,
                    "matrix": _SIDE_LABELS[side],
                    "d": d,
                    "i": np.arange(d),
                    "eigenvalue": eig,
                    "exact": exact_eig,
                    "r_over_d": r / d,
                    "tolerance": sigma * math.sqrt(d),
                    "lambda_min": est.lambda_min,
                    "lambda_max": est.lambda_max,
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    lam = lambda_p(p, r, m, n, lam_B=ranges["left"], lam_A=ranges["right"])
    frame["lambda_p_min"], frame["lambda_p_max"] = float(lam.min), float(lam.max)
    if exact_ranges["left"] is not None and exact_ranges["right"] is not None:
        ex = lambda_p(p, r, m, n, lam_B=exact_ranges["left"], lam_A=exact_ranges["right"])
        frame["exact_lambda_p_min"], frame["exact_lambda_p_max"] = float(ex.min), float(ex.max)
    else:
        frame["exact_lambda_p_min"] = frame["exact_lambda_p_max"] = math.nan
    frame.attrs = {"sketch": sketch, "m": m, "n": n, "r": r, "p": p, "samples": samples}
    return frame


_REF_LABELS = (
    "r/d: isotropic E[H] = (r/d)·I",
    "exact eigenvalues (closed form)",
    "smallest and largest λᵖ (from the measured λ's)",
)
_REF_COLORS = ("#000000", "#2ca02c", "#ff7f0e")


def projector_eigen_chart(frame: pd.DataFrame) -> alt.VConcatChart:
    """Histograms of the eigenvalues of E[H_B] and E[H_A] from :func:`projector_eigen_frame`, one
    panel per side on a shared axis, with rules at r/m and r/n, the exact eigenvalues (where
    there is a closed form) and λ^p_min, λ^p_max."""
    need = {"side", "matrix", "d", "eigenvalue", "exact", "r_over_d", "lambda_p_min"}
    if not isinstance(frame, pd.DataFrame) or not need <= set(frame.columns):
        raise ValueError(f"frame must be a projector_eigen_frame table with columns {sorted(need)}")
    lam_p = (float(frame["lambda_p_min"].iloc[0]), float(frame["lambda_p_max"].iloc[0]))
    values = np.concatenate(
        [frame["eigenvalue"], frame["exact"].dropna(), frame["r_over_d"], lam_p]
    ).astype(float)
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo) if hi > lo else 0.02
    domain = [max(0.0, lo - pad), min(1.0, hi + pad)]
    edges = np.linspace(lo, hi, 41) if hi > lo else np.linspace(lo - pad, hi + pad, 41)
    x_scale = alt.Scale(domain=domain, nice=False, zero=False)
    color = alt.Color(
        "reference:N",
        title="reference",
        scale=alt.Scale(domain=list(_REF_LABELS), range=list(_REF_COLORS)),
        legend=alt.Legend(labelLimit=LABEL_LIMIT, symbolType="stroke"),
    )
    attrs = frame.attrs
    panels = []
    for side in ("left", "right"):
        rows = frame[frame["side"] == side]
        if rows.empty:
            continue
        d = int(rows["d"].iloc[0])
        counts, _ = np.histogram(rows["eigenvalue"], bins=edges)
        bars = pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "count": counts})
        bars = bars[bars["count"] > 0]
        refs = [(float(rows["r_over_d"].iloc[0]), _REF_LABELS[0])]
        refs += [(v, _REF_LABELS[1]) for v in np.unique(rows["exact"].dropna().round(12))]
        refs += [(lam_p[0], _REF_LABELS[2]), (lam_p[1], _REF_LABELS[2])]
        rules = pd.DataFrame(refs, columns=["value", "reference"])
        dim = "m" if side == "left" else "n"
        bar = (
            alt.Chart(bars)
            .mark_bar(color="#4c78a8", opacity=0.8)
            .encode(
                x=alt.X("lo:Q", bin="binned", title="eigenvalue", scale=x_scale),
                x2=alt.X2("hi:Q"),
                y=alt.Y(
                    "count:Q",
                    title="number of eigenvalues in the bin",
                    axis=alt.Axis(tickMinStep=1, format="d"),
                ),
                tooltip=[
                    alt.Tooltip("lo:Q", title="bin from", format=".4f"),
                    alt.Tooltip("hi:Q", title="bin to", format=".4f"),
                    alt.Tooltip("count:Q", title="eigenvalues in the bin"),
                ],
            )
        )
        rule = (
            alt.Chart(rules)
            .mark_rule(strokeWidth=2, opacity=0.8)
            .encode(
                x=alt.X("value:Q", scale=x_scale),
                color=color,
                strokeDash=alt.StrokeDashValue(
                    **alt.condition(
                        alt.datum.reference == _REF_LABELS[2], alt.value([6, 4]), alt.value([1, 0])
                    )
                ),
                tooltip=[alt.Tooltip("reference:N"), alt.Tooltip("value:Q", format=".4f")],
            )
        )
        title = f"{_SIDE_WORDS[side]}, {_SIDE_LABELS[side]} ({d}×{d}): its {d} eigenvalues "
        title += f"against r/{dim} = {float(rows['r_over_d'].iloc[0]):.4g}"
        panels.append(alt.layer(bar, rule).properties(width=WIDTH, height=130, title=title))
    chart = alt.vconcat(*panels).resolve_scale(x="shared", color="shared")
    head = f"{_SKETCH_WORDS.get(attrs.get('sketch'), attrs.get('sketch', ''))}: eigenvalues of E[H]"
    head += " estimated by Monte Carlo"
    if "samples" in attrs:
        head += f" ({attrs['samples']} samples, r = {attrs.get('r')}, p = {attrs.get('p')})"
    return chart.properties(title=head)


_CURVE_SERIES = ("measured (mean ± SE)", "corrected bound", "printed bound (erratum)")
_CURVE_COLORS = ("#1f77b4", "#000000", "#d62728")
_REGIONS = ("γ inside the corrected step conditions", "outside them: the bound is not claimed")
_CURVE_DECADES = 1e-12
_DIVERGED = "a seed diverged: no measurement from here on"


def _divergence_words(diverged: dict, seeds, unit: str = "step") -> str:
    """ "3 of 8 seeds diverged (the first at step 24)" from a seed → step map."""
    first = min(diverged.values())
    of = f" of {seeds}" if seeds else ""
    return (
        f"{len(diverged)}{of} seeds diverged (the first at {unit} {first}): lower the step factor"
    )


def _runs(mask: np.ndarray, Ts: np.ndarray) -> list[tuple[float, float, bool]]:
    """Maximal runs of equal ``mask`` along T as (T_lo − ½, T_hi + ½, value)."""
    out, start = [], 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            half_lo = (Ts[start] - Ts[start - 1]) / 2 if start > 0 else 0.5
            half_hi = (Ts[i] - Ts[i - 1]) / 2 if i < len(mask) else 0.5
            out.append((Ts[start] - half_lo, Ts[i - 1] + half_hi, bool(mask[start])))
            start = i
    return out


def theorem_curve_chart(curve_frame: pd.DataFrame, theorem) -> alt.LayerChart:
    """A :func:`lorakit.theory.scenarios.curve` table against T: the measured left-hand side with
    a ± SE band, the corrected bound (solid) and, where an erratum changes it, the printed bound
    (dashed, only where it differs), on a log axis; the background marks the T where γ satisfies
    the corrected step-size conditions (outside them the theorem claims nothing).

    ``theorem`` is the theorem's key or :class:`~lorakit.theory.Theorem`.
    """
    thm = theorem if isinstance(theorem, Theorem) else get_theorem(theorem)
    need = {"T", "measured", "stderr", "corrected", "printed", "admissible"}
    if not isinstance(curve_frame, pd.DataFrame) or not need <= set(curve_frame.columns):
        raise ValueError(f"curve_frame must be a scenario curve with columns {sorted(need)}")
    if curve_frame.empty:
        raise ValueError("curve_frame must have at least one row")
    c = curve_frame.sort_values("T")
    Ts = c["T"].to_numpy()
    differs = c["printed"].notna() & ~np.isclose(c["printed"], c["corrected"], rtol=1e-9, atol=0)
    series = [
        pd.DataFrame({"T": Ts, "value": c["measured"], "series": _CURVE_SERIES[0]}),
        pd.DataFrame({"T": Ts, "value": c["corrected"], "series": _CURVE_SERIES[1]}),
        pd.DataFrame(
            {"T": Ts[differs], "value": c["printed"][differs], "series": _CURVE_SERIES[2]}
        ),
    ]
    lines = pd.concat(series, ignore_index=True)
    lines = lines[np.isfinite(lines["value"]) & (lines["value"] > 0)]
    # A log axis spanning 30 decades hides everything: values more than 12 decades below the
    # largest (a gradient norm of 1e-28 at W^0 = W*, say) are left out.
    top = float(lines["value"].max()) if len(lines) else 1.0
    lines = lines[lines["value"] >= top * _CURVE_DECADES]
    floor = float(lines["value"].min()) / 10 if len(lines) else FLOOR
    band = pd.DataFrame(
        {
            "T": Ts,
            "low": np.maximum(c["measured"] - c["stderr"], floor),
            "high": np.maximum(c["measured"] + c["stderr"], floor),
        }
    ).dropna()
    shown = [name for name in _CURVE_SERIES if name in set(lines["series"])] or [_CURVE_SERIES[0]]
    dashes = {_CURVE_SERIES[0]: [1, 0], _CURVE_SERIES[1]: [1, 0], _CURVE_SERIES[2]: [6, 4]}
    colors = dict(zip(_CURVE_SERIES, _CURVE_COLORS, strict=True))
    y_title, quantity = theorem_quantity(thm)
    attrs = curve_frame.attrs
    unit = attrs.get("unit", "steps")
    x = alt.X("T:Q", title=f"T ({unit})", scale=alt.Scale(nice=False, zero=False))
    y_scale = alt.Scale(type="log")
    regions = pd.DataFrame(
        [
            (a, b, _REGIONS[0] if ok else _REGIONS[1])
            for a, b, ok in _runs(c["admissible"].to_numpy(), Ts)
        ],
        columns=["T0", "T1", "region"],
    )
    layers = [
        alt.Chart(regions)
        .mark_rect(opacity=0.12)
        .encode(
            x=alt.X("T0:Q", scale=alt.Scale(nice=False, zero=False), title=f"T ({unit})"),
            x2=alt.X2("T1:Q"),
            fill=alt.Fill(
                "region:N",
                title="step size",
                scale=alt.Scale(domain=list(_REGIONS), range=["#2ca02c", "#7f7f7f"]),
                legend=alt.Legend(labelLimit=LABEL_LIMIT),
            ),
            tooltip=[alt.Tooltip("region:N"), alt.Tooltip("T0:Q"), alt.Tooltip("T1:Q")],
        ),
        alt.Chart(band)
        .mark_area(opacity=0.25, color=_CURVE_COLORS[0])
        .encode(x=x, y=alt.Y("low:Q", scale=y_scale, title=y_title), y2=alt.Y2("high:Q")),
        alt.Chart(lines)
        .mark_line(point=alt.OverlayMarkDef(size=12), strokeWidth=2)
        .encode(
            x=x,
            y=alt.Y("value:Q", scale=y_scale, title=y_title, axis=alt.Axis(format=".0e")),
            color=alt.Color(
                "series:N",
                title="",
                scale=alt.Scale(domain=shown, range=[colors[k] for k in shown]),
                legend=alt.Legend(labelLimit=LABEL_LIMIT, symbolType="stroke"),
            ),
            strokeDash=alt.StrokeDash(
                "series:N",
                scale=alt.Scale(domain=shown, range=[dashes[k] for k in shown]),
                legend=None,
            ),
            tooltip=[
                alt.Tooltip("series:N"),
                alt.Tooltip("T:Q"),
                alt.Tooltip("value:Q", format=".4g"),
            ],
        ),
    ]
    diverged = attrs.get("diverged") or {}
    subtitle = [
        f"{quantity[0].upper()}{quantity[1:]}: mean ± SE over {attrs.get('seeds', '?')} seeds"
    ]
    if diverged:
        # Measurements stop at the first T past which a seed diverged (scenarios.curve): mark it.
        measured = c["measured"].to_numpy(dtype=float)
        stop = Ts[~np.isfinite(measured)]
        stop_T = float(stop.min()) if len(stop) else float(Ts[-1])
        layers.append(
            alt.Chart(pd.DataFrame({"T": [stop_T], "what": [_DIVERGED]}))
            .mark_rule(color="#d62728", strokeWidth=2, strokeDash=[2, 2])
            .encode(x=x, tooltip=[alt.Tooltip("what:N", title=""), alt.Tooltip("T:Q")])
        )
        subtitle.append(_divergence_words(diverged, attrs.get("seeds"), unit="step") + ".")
    factor = attrs.get("step_factor")
    gamma = attrs.get("gamma")
    step = (
        "Polyak step"
        if gamma == "polyak"
        else f"γ = {factor:g} × the check's step {attrs.get('gamma_label', '?')} = {gamma:.4g}"
        if factor is not None and gamma is not None
        else ""
    )
    title = alt.TitleParams(
        f"{thm.paper} {thm.number} ({thm.setting}){': ' + step if step else ''}",
        subtitle=subtitle,
    )
    return (
        alt.layer(*layers)
        .resolve_scale(color="independent")
        .properties(width=WIDTH, height=HEIGHT, title=title)
    )


@functools.lru_cache(maxsize=16)
def _eigen_cached(sketch, m, n, r, p, samples) -> pd.DataFrame:
    return projector_eigen_frame(sketch, m, n, r, p, samples)


@functools.lru_cache(maxsize=32)
def _curve_cached(key, step_factor, fast) -> pd.DataFrame:
    return scenario_curve(key, step_factor)


def _admissible_ranges(curve: pd.DataFrame) -> list[tuple[int, int]]:
    """The blocks of consecutive curve rows where γ is admissible, as (first T, last T)."""
    Ts, adm = curve["T"].to_numpy(), curve["admissible"].to_numpy()
    out, start = [], None
    for i, ok in enumerate(adm):
        if ok and start is None:
            start = i
        if start is not None and (not ok or i == len(adm) - 1):
            stop = i if ok else i - 1
            out.append((int(Ts[start]), int(Ts[stop])))
            start = None
    return out


def _constants_status(eigen: pd.DataFrame, curve: pd.DataFrame, key: str, polyak: bool) -> str:
    first = eigen.groupby("side").first()
    parts = [
        f"{_SIDE_LABELS[side]}: λ_min = {first.loc[side, 'lambda_min']:.4f}, "
        f"λ_max = {first.loc[side, 'lambda_max']:.4f} (r/{dim} = {first.loc[side, 'r_over_d']:.4f})"
        for side, dim in (("left", "m"), ("right", "n"))
    ]
    row = first.loc["left"]
    text = " · ".join(parts)
    text += f" · λᵖ_min = {row.lambda_p_min:.4f}, λᵖ_max = {row.lambda_p_max:.4f}"
    text += f" (p = {eigen.attrs['p']:g})"
    if not math.isnan(row.exact_lambda_p_min):
        text += f"; exact λᵖ_min = {row.exact_lambda_p_min:.4f}"
        text += f", λᵖ_max = {row.exact_lambda_p_max:.4f}"

    thm, c, last = get_theorem(key), curve.attrs, curve.iloc[-1]
    if polyak:
        step = "the Polyak step (no step factor: the slider does not apply)"
    else:
        step = f"γ = {c['step_factor']:g} × the check's step {c['gamma_label']} = {c['gamma']:.4g}"
    text += (
        f"<br><b>{thm.paper} {thm.number}</b> ({thm.setting}) on its check's own run "
        f"({html.escape(c['detail'])}) at {step}, {c['seeds']} seeds. At T = {int(last['T'])}: "
        f"measured {last['measured']:.3e} ± {last['stderr']:.1e} vs corrected bound "
        f"{last['corrected']:.3e}"
    )
    if not math.isnan(last["printed"]):
        text += f" (printed {last['printed']:.3e})"
    text += "."
    ranges = _admissible_ranges(curve)
    if curve["admissible"].all():
        text += " γ satisfies the corrected step-size conditions at every T."
    elif not ranges:
        text += (
            " <span style='color:#c00'>γ violates the corrected step-size conditions at every T: "
            "the theorem claims nothing here (the bounds are drawn for reference).</span>"
        )
    else:
        blocks = ", ".join(f"T = {a}" if a == b else f"T ∈ [{a}, {b}]" for a, b in ranges)
        text += (
            f" γ satisfies the corrected step-size conditions only for {blocks}; elsewhere the "
            "theorem claims nothing (the bounds are drawn for reference)."
        )
    if c.get("diverged"):
        words = _divergence_words(c["diverged"], c["seeds"])
        text += f" <span style='color:#c00'>{words} (red dotted line).</span>"
    erratum = html.escape(thm.erratum) if thm.erratum else "none: the printed statement holds."
    return text + f"<br><i>Erratum:</i> {erratum}"


def theory_constants_app(
    sketch: str = "gaussian",
    m: int = 16,
    n: int = 24,
    r: int = 2,
    p: float = 0.5,
    samples: int = 2000,
    theorem: str = "rac_lora.theorem_e.3",
    step_factor: float = 1.0,
) -> App:
    """Controls for the sketch family, m, n, r, p and the Monte Carlo sample count (the spectrum
    of E[H_B] and E[H_A], :func:`projector_eigen_chart`), and a theorem with a step factor (its
    check's run against the printed and corrected bounds, :func:`theorem_curve_chart`).

    The theorem chart runs the check's own problem and sketch (:mod:`lorakit.theory.scenarios`)
    at γ = step factor × the check's γ; the sketch controls drive the eigenvalue chart only.
    Computes and draws once when built; returns an :class:`App` (an ``ipywidgets.VBox``). Both
    parts are cached, so moving a control recomputes only the part it changes.
    """
    check_choice("theorem", theorem, SCENARIOS)
    step_factor = check_real("step_factor", step_factor, low=0.0, low_open=True)
    samples = check_int("samples", samples, low=2, high=10**7)
    projector_eigen_frame(sketch, m, n, r, p, 2)  # the initial values, with its own messages
    sample_options = tuple(sorted(set(THEORY_SAMPLES) | {samples}))
    log_sf = math.log10(step_factor)
    style = {"description_width": "initial"}
    controls = {
        "sketch": widgets.Dropdown(
            options=[(_SKETCH_WORDS[k], k) for k in THEORY_SKETCHES],
            value=sketch,
            description="sketch",
            layout=widgets.Layout(width="28em"),
        ),
        "m": widgets.IntSlider(
            value=m, min=1, max=max(64, m), description="m", continuous_update=False
        ),
        "n": widgets.IntSlider(
            value=n, min=1, max=max(64, n), description="n", continuous_update=False
        ),
        "r": widgets.IntSlider(
            value=r, min=1, max=max(16, r), description="rank r", continuous_update=False
        ),
        "p": widgets.FloatSlider(
            value=p, min=0.0, max=1.0, step=0.05, description="p", continuous_update=False
        ),
        "samples": widgets.SelectionSlider(
            options=sample_options,
            value=samples,
            description="MC samples",
            continuous_update=False,
            style=style,
        ),
        "theorem": widgets.Dropdown(
            options=[(theorem_label(key), key) for key in SCENARIOS],
            value=theorem,
            description="theorem",
            style=style,
            layout=widgets.Layout(width="44em"),
        ),
        "step_factor": widgets.FloatLogSlider(
            value=step_factor,
            base=10,
            min=min(-1.5, log_sf),
            max=max(0.7, log_sf),
            step=0.05,
            description="γ / γ_check",
            readout_format=".3g",
            continuous_update=False,
            style=style,
        ),
    }
    frames: dict = {}

    def compute(sketch, m, n, r, p, samples, theorem, step_factor):
        check_choice("theorem", theorem, SCENARIOS)
        eigen = _eigen_cached(sketch, m, n, r, p, samples)
        polyak = get_scenario(theorem).polyak
        curve = _curve_cached(theorem, 1.0 if polyak else float(step_factor), fast_mode())
        frames.update(eigen=eigen, curve=curve)
        charts = [projector_eigen_chart(eigen), theorem_curve_chart(curve, theorem)]
        return eigen, charts, _constants_status(eigen, curve, theorem, polyak)

    app = App(controls, compute, n_charts=2)
    app.frames = frames
    return app
