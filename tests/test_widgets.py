"""The notebooks' apps and charts (lorakit.widgets, lorakit.viz): frames, theory overlays, errors."""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd
import pytest

from lorakit import viz, widgets
from lorakit.problems import counterexample
from lorakit.widgets import chains

ALL = widgets.COUNTEREXAMPLE_METHODS


# ---------------------------------------------------------------------------------------------
# counterexample_frame (RAC-LoRA Section 3, Eq. (2), Figure 1)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ce_frame():
    return widgets.counterexample_frame(ALL, rank=1, step_factor=1.0, seed=0, steps=300)


def test_counterexample_frame_has_every_method(ce_frame):
    assert set(ce_frame["method"]) == set(ALL)
    for method in ALL:
        rows = ce_frame[ce_frame["method"] == method]
        assert rows["step"].min() == 0 and rows["step"].max() == 300
    assert {"diverged_at", "step_factor", "gap"} <= set(ce_frame.columns)
    assert np.allclose(ce_frame["gamma"].dropna(), 1.0 / 20.0)  # γ = 1/L, L = 20 (Hessian 2M)


def test_counterexample_frame_subset_and_single_name():
    frame = widgets.counterexample_frame("rac_lora", steps=5)
    assert set(frame["method"]) == {"rac_lora"} and len(frame) == 6


def test_rac_lora_converges_linearly_on_the_counterexample(ce_frame):
    """RAC-LoRA spec §6: "RAC-LoRA converges linearly to the optimal solution".

    Two checks at γ = 1/L, r = 1, T = 300:
    * seed 0 lies below the PL rate (1 − γμλ)^T·Δ⁰ of RAC-LoRA Thm 5.5 (λ = r/3, μ = 2,
      L = 20: ≈ 7.6e-5). The theorem bounds the expectation; the margin per seed is > 10³.
    * the median over seeds 0–4 is below 1e-8. (Seed 0 alone ends at 1.7e-8: single seeds
      range over 2e-10 … 1.7e-8 at T = 300, so 1e-8 is asserted for the median, not each seed.)
    """
    rac = ce_frame[ce_frame["method"] == "rac_lora"]
    assert np.isfinite(rac["gap"]).all()
    assert math.isnan(rac["diverged_at"].iloc[0])
    problem = counterexample()
    delta0 = float(problem.loss(problem.W0)) - problem.f_star
    bound = (1 - (1 / problem.L) * problem.mu * (1 / 3)) ** 300 * delta0
    final = rac["gap"].iloc[-1]
    assert 0 <= final < bound
    gaps = [
        widgets.counterexample_frame(("rac_lora",), seed=s, steps=300)["gap"].iloc[-1]
        for s in range(5)
    ]
    assert np.median(gaps) < 1e-8


def test_lora_and_asymm_lora_stall_on_the_counterexample(ce_frame):
    """W* has rank 2, so rank-1 LoRA and AsymmLoRA stay far from f* (RAC-LoRA Fig. 1)."""
    final = widgets.final_values(ce_frame).set_index("method")["gap"]
    assert final["lora"] > 0.1
    assert final["asymm_lora"] > 0.1


def test_divergence_is_recorded():
    """γ = 2/L (the paper's "1/L" with its L = 10): COLA's plain factor steps blow up (seed 0)."""
    frame = widgets.counterexample_frame(("cola", "rac_lora"), step_factor=2.0, steps=300)
    cola = frame[frame["method"] == "cola"]
    assert frame.attrs["diverged"] == {"cola": int(cola["step"].max())}
    assert (cola["diverged_at"] == cola["step"].max()).all()
    assert frame[frame["method"] == "rac_lora"]["diverged_at"].isna().all()
    summary = chains._counterexample_status(frame)
    assert "COLA</b>: <span style='color:#c00'>diverged at step 5" in summary
    assert frame.attrs["diverged"] == {"cola": 5}


def _texts(chart) -> list[str]:
    """Every text mark's strings in a layered chart's spec (inline data)."""
    spec = chart.to_dict()
    out = []
    for layer in spec["layer"]:
        if layer.get("mark", {}).get("type") == "text":
            name = layer["data"]["name"]
            out += [row["text"] for row in spec["datasets"][name]]
    return out


def test_divergence_is_marked_on_the_chart_and_in_the_status():
    """Issue 12 §4 (01): at rank 3, γ = 1/L, LoRA and COLA blow up (seed 0, measured at steps 6
    and 5); the chart labels each stopped run and the status gives the step, not a final gap."""
    frame = widgets.counterexample_frame(ALL, rank=3, steps=60)
    assert frame.attrs["diverged"] == {"lora": 6, "cola": 5}
    texts = _texts(widgets.counterexample_chart(frame))
    assert sorted(texts) == ["COLA diverged at step 5", "LoRA diverged at step 6"]
    status = chains._counterexample_status(frame)
    assert "<b>COLA</b>: <span style='color:#c00'>diverged at step 5 (run stopped)" in status
    assert "<b>LoRA</b>: <span style='color:#c00'>diverged at step 6 (run stopped)" in status
    assert status.count("final f − f*") == 3  # AsymmLoRA, RAC-LoRA, Bernoulli-LoRA
    assert "their lines coincide" in status  # rank 3: H = I for every projected method
    ce = frame[frame["method"].isin(["asymm_lora", "rac_lora", "bernoulli_lora"])]
    spread = ce.groupby("step")["gap"].agg(lambda g: g.max() - g.min())
    assert (spread <= 1e-12 * ce["gap"].max()).all()
    assert status.startswith("After 60 iterations")  # the run asked for, not the last stop
    alone = chains._counterexample_status(widgets.counterexample_frame("cola", rank=3, steps=60))
    assert alone.startswith("After 60 iterations") and "diverged at step 5" in alone
    # Nothing diverged: no label layer.
    assert _texts(widgets.counterexample_chart(widgets.counterexample_frame(steps=20))) == []


def test_a_transient_rise_is_not_reported_as_a_plain_final_gap():
    """At rank 2 COLA's gap climbs far above its start (Δ⁰ = 2.025) before coming back below the
    divergence threshold; the status says so next to the final gap."""
    frame = widgets.counterexample_frame(("cola", "rac_lora"), rank=2, steps=100)
    assert not frame.attrs["diverged"]
    cola = frame[frame["method"] == "cola"]
    assert cola["gap"].max() > 100 * 2.025
    status = chains._counterexample_status(frame)
    assert "<b>COLA</b>: final f − f* =" in status and "rose to" in status
    assert status.count("rose to") == 1  # RAC-LoRA decreases: no note


def test_charts_title_axes_and_legends_in_words():
    """Issue 12 §4 (everywhere): no raw column names or method keys in titles and legends."""
    ce = widgets.counterexample_chart(widgets.counterexample_frame(steps=5)).to_dict()
    explorer = widgets.explorer_charts(
        f := widgets.explorer_frame(steps=5, seeds=2),
        widgets.explorer_theory(f, chains._linear_regression(8, 8)),
    )
    for spec in (ce, *(c.to_dict() for c in explorer)):
        titles = {
            str(enc.get("title", enc.get("field")))
            for layer in spec["layer"]
            for key, enc in layer["encoding"].items()
            if key in ("x", "y", "color") and isinstance(enc, dict)
        }
        assert titles and not any("_" in t or t in ("step", "config", "series") for t in titles)
    legend_values = {row["method"] for data in ce["datasets"].values() for row in data
                     if "method" in row}  # fmt: skip
    assert legend_values == {"LoRA", "AsymmLoRA", "COLA", "RAC-LoRA", "Bernoulli-LoRA"}


def test_counterexample_chart_draws_the_pl_rate_only_where_it_applies(ce_frame):
    """The dashed (1 − γμλ)ᵗΔ⁰ layer: for RAC-LoRA/Bernoulli-LoRA runs with γ ≤ 1/L only."""

    def dashed(frame):
        return any("strokeDash" in layer["encoding"] for layer in
                   widgets.counterexample_chart(frame).to_dict()["layer"])  # fmt: skip

    assert dashed(ce_frame)
    assert not dashed(widgets.counterexample_frame(("lora", "cola"), steps=5))
    assert not dashed(widgets.counterexample_frame(("rac_lora",), step_factor=2.0, steps=5))


def test_counterexample_chart_gives_each_method_a_dash_and_a_marker(ce_frame):
    """RAC-LoRA's line runs under Bernoulli-LoRA's (issue 12, seed 1): every method is its own
    line layer with its own stroke dash, and a point layer marks each with its own shape."""
    layers = widgets.counterexample_chart(ce_frame).to_dict()["layer"]
    lines = [layer for layer in layers if "filter" in str(layer.get("transform", ""))]
    dashes = [str(layer["mark"]["strokeDash"]) for layer in lines]
    assert len(lines) == len(ALL) and len(set(dashes)) == len(ALL)
    (points,) = [layer for layer in layers if "shape" in layer["encoding"]]
    shape = points["encoding"]["shape"]["scale"]
    assert len(shape["domain"]) == len(ALL) and "RAC-LoRA" in shape["domain"]
    assert len(set(shape["range"])) == len(ALL)
    assert points["encoding"]["color"]["scale"]["domain"] == shape["domain"]  # one legend


# ---------------------------------------------------------------------------------------------
# explorer_frame / explorer_theory (Bernoulli-LoRA Sec. 7.1, Theorem 1)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("step_factor", [0.25, 1.0])
def test_theorem1_bound_holds_for_gd(p, step_factor):
    """Bernoulli-LoRA Thm 1: (1/T)Σ_{t<T}‖∇f(W^t)‖² ≤ 2Δ⁰/(γλ^pT) for γ ≤ 1/L.

    The theorem bounds the expectation; asserted here for every seed (``running_avg_max``) and
    every T with no tolerance. Observed margin ≥ 7× on these settings (m = 4, n = 8 so λ^p
    depends on p).
    """
    frame = widgets.explorer_frame(
        p=p, rank=2, estimator="gd", step_factor=step_factor, steps=120, seeds=3, m=4, n=8
    )
    problem = chains._linear_regression(4, 8)
    theory = widgets.explorer_theory(frame, problem)
    assert len(theory) == 121 and theory["step"].tolist() == list(range(1, 122))
    assert np.allclose(theory["lambda_p"], p * 2 / 4 + (1 - p) * 2 / 8)
    assert (theory["bound"] >= theory["running_avg_max"]).all()
    assert (theory["running_avg_max"] >= theory["running_avg"]).all()
    assert "outside" not in theory["label"].iloc[0]


def test_explorer_theory_matches_its_definition():
    frame = widgets.explorer_frame(steps=10, seeds=2)
    problem = chains._linear_regression(8, 8)
    theory = widgets.explorer_theory(frame, problem)
    seed0 = frame[frame["seed"] == 0]["grad_norm_sq"].to_numpy()
    seed1 = frame[frame["seed"] == 1]["grad_norm_sq"].to_numpy()
    T = 4
    expected = (seed0[:T].mean() + seed1[:T].mean()) / 2
    assert theory.loc[theory["step"] == T, "running_avg"].item() == pytest.approx(expected)
    delta0 = float(problem.loss(problem.W0)) - problem.f_lower
    gamma = 1.0 / problem.L
    bound = 2 * delta0 / (gamma * 0.25 * T)  # λ^p = r/8 = 0.25 for m = n = 8, r = 2
    assert theory.loc[theory["step"] == T, "bound"].item() == pytest.approx(bound)


def test_explorer_theory_labels_runs_outside_the_theorem():
    problem = chains._linear_regression(8, 8)
    big = widgets.explorer_theory(widgets.explorer_frame(step_factor=1.5, steps=5), problem)
    assert "γ > 1/L" in big["label"].iloc[0]
    sgd = widgets.explorer_theory(widgets.explorer_frame(estimator="sgd", steps=5), problem)
    assert "for reference" in sgd["label"].iloc[0]


@pytest.mark.parametrize("estimator", widgets.EXPLORER_ESTIMATORS)
def test_explorer_frame_estimators(estimator):
    frame = widgets.explorer_frame(estimator=estimator, steps=8, seeds=2)
    assert set(frame["seed"]) == {0, 1}
    assert frame["estimator"].iloc[0].startswith(estimator)
    assert np.isfinite(frame["loss"]).all()


def test_fast_mode(monkeypatch):
    monkeypatch.setenv("LORAKIT_FAST", "1")
    assert widgets.fast_mode()
    assert widgets.counterexample_frame(("rac_lora",))["step"].max() == 100
    frame = widgets.explorer_frame()
    assert frame["step"].max() == 60 and frame["seed"].nunique() == 2
    monkeypatch.setenv("LORAKIT_FAST", "0")
    assert not widgets.fast_mode()
    monkeypatch.delenv("LORAKIT_FAST")
    assert not widgets.fast_mode()


# ---------------------------------------------------------------------------------------------
# apps
# ---------------------------------------------------------------------------------------------
def _has_chart(app, n):
    assert len(app.charts) == n
    for chart, out in zip(app.charts, app.outputs, strict=True):
        assert isinstance(chart, alt.TopLevelMixin)
        chart.to_dict()  # a valid Vega-Lite spec
        assert len(out.outputs) == 1 and out.outputs[0]["data"]


def test_why_lora_fails_app_builds_and_redraws():
    app = widgets.why_lora_fails_app(steps=40)
    _has_chart(app, 1)
    assert set(app.frame["method"]) == set(ALL)
    assert "f − f*" in app.status.value
    app.controls["rank"].value = 2
    assert set(app.frame["rank"]) == {2}
    app.controls["methods"].value = ("rac_lora",)
    assert set(app.frame["method"]) == {"rac_lora"}
    # An empty selection is reported in the status line; the last chart stays.
    app.controls["methods"].value = ()
    assert "methods" in app.status.value and set(app.frame["method"]) == {"rac_lora"}


def test_matrix_runs_use_one_thread_and_restore_the_setting():
    import torch

    seen = []
    before = torch.get_num_threads()
    with chains.one_thread():
        seen.append(torch.get_num_threads())
    widgets.explorer_frame(sketch="haar", steps=3, seeds=1)
    assert seen == [1] and torch.get_num_threads() == before


def test_explorer_status_counts_steps_not_iterates():
    """Issue 12 §4 (02): 30 steps log W⁰…W³⁰, 31 iterates; the status said "After T = 31"."""
    frame = widgets.explorer_frame(steps=30, seeds=1)
    status = chains._explorer_status(
        frame, widgets.explorer_theory(frame, chains._linear_regression(8, 8))
    )
    assert "After 30 steps" in status and "31 iterates" in status and "T = 31" not in status


def test_gaussian_and_haar_sketches_give_the_same_run_and_the_app_says_why():
    """H depends only on the sketch's span (Bernoulli-LoRA Lemma 10): a Haar factor spans the
    same random subspace as the Gaussian draw it comes from, so the runs agree to rounding."""
    runs = {s: widgets.explorer_frame(sketch=s, steps=20, seeds=1) for s in ("gaussian", "haar")}
    np.testing.assert_allclose(runs["haar"]["loss"], runs["gaussian"]["loss"], rtol=1e-12)
    coordinate = widgets.explorer_frame(sketch="coordinate", steps=20, seeds=1)
    assert np.abs(coordinate["loss"].to_numpy() - runs["haar"]["loss"].to_numpy()).max() > 1e-6
    problem = chains._linear_regression(8, 8)
    for sketch, frame in {**runs, "coordinate": coordinate}.items():
        status = chains._explorer_status(frame, widgets.explorer_theory(frame, problem))
        assert ("Gaussian and Haar sketches give the same numbers" in status) == (
            sketch != "coordinate"
        )


def test_explorer_suggests_a_smaller_step_for_sgd():
    """Issue 12 §4 (02): minibatch SGD at γL = 1 makes no progress; picking SGD moves γL to
    ESTIMATOR_STEP["sgd"] = 0.1, where it does, and γL = 1 gets a hint in the status."""
    problem = chains._linear_regression(8, 8)

    def mean_final_loss(step_factor):
        frame = widgets.explorer_frame(estimator="sgd", step_factor=step_factor, steps=200, seeds=2)
        return frame[frame["step"] == 200]["loss"].mean(), frame

    gd = widgets.explorer_frame(steps=200, seeds=1)
    loss0, best = float(problem.loss(problem.W0)), gd["loss"].iloc[-1]
    big, big_frame = mean_final_loss(1.0)
    small, _ = mean_final_loss(chains.ESTIMATOR_STEP["sgd"])
    assert big > loss0 - 0.2 * (loss0 - best)  # little or no progress at γL = 1
    assert small < loss0 - 0.7 * (loss0 - best)  # most of GD's decrease at γL = 0.1
    status = chains._explorer_status(big_frame, widgets.explorer_theory(big_frame, problem))
    assert "try a smaller step, e.g. γL = 0.1" in status
    app = widgets.bernoulli_explorer_app(steps=10, seeds=1)
    app.controls["estimator"].value = "sgd"
    assert app.controls["step_factor"].value == 0.1 and app.frame["step_factor"].iloc[0] == 0.1
    assert "smaller step" not in app.status.value
    app.controls["estimator"].value = "gd"
    assert app.controls["step_factor"].value == 1.0


def test_bernoulli_explorer_app_builds_and_redraws():
    app = widgets.bernoulli_explorer_app(steps=30, seeds=2)
    _has_chart(app, 2)
    assert "λᵖ" in app.status.value
    app.controls["estimator"].value = "page"
    assert app.frame["estimator"].iloc[0].startswith("page")
    app.controls["p"].value = 1.0
    assert app.frame["p"].iloc[0] == 1.0


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"rank": 0},
        {"rank": 4},
        {"step_factor": 0.0},
        {"step_factor": -1.0},
        {"steps": 0},
        {"seed": -1},
        {"methods": ()},
        {"methods": ("nope",)},
        {"cola_steps_per_link": 0},
    ],
)
def test_counterexample_frame_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        widgets.counterexample_frame(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p": 1.5},
        {"rank": 0},
        {"rank": 9},
        {"sketch": "bogus"},
        {"estimator": "adam"},
        {"step_factor": 0.0},
        {"seeds": 0},
        {"seeds": []},
        {"batch_size": 0},
        {"batch_size": 101},
        {"q": 0.0, "estimator": "page"},
    ],
)
def test_explorer_frame_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        widgets.explorer_frame(steps=2, **kwargs)


def test_apps_reject_bad_input():
    with pytest.raises(ValueError, match="rank"):
        widgets.why_lora_fails_app(rank=0)
    with pytest.raises(ValueError, match="step_factor"):
        widgets.why_lora_fails_app(step_factor=0.0)
    with pytest.raises(ValueError, match="rank"):
        widgets.bernoulli_explorer_app(rank=0)
    with pytest.raises(ValueError, match="p"):
        widgets.bernoulli_explorer_app(p=2.0)


def test_explorer_theory_rejects_thinned_logs():
    frame = widgets.explorer_frame(steps=6, seeds=1)
    with pytest.raises(ValueError, match="log_every"):
        widgets.explorer_theory(frame[frame["step"] % 2 == 0], chains._linear_regression(8, 8))


# ---------------------------------------------------------------------------------------------
# viz
# ---------------------------------------------------------------------------------------------
def test_theory_rate_frame():
    th = viz.theory_rate_frame(3, start=2.0, rate=0.5, label="x")
    assert th["step"].tolist() == [0, 1, 2, 3]
    assert th["value"].tolist() == [2.0, 1.0, 0.5, 0.25]
    assert set(th["label"]) == {"x"}
    with pytest.raises(ValueError):
        viz.theory_rate_frame(3, start=1.0, rate=-0.5, label="x")


def test_convergence_chart_log_scale_drops_nonpositive_and_clips():
    frame = pd.DataFrame(
        {
            "method": ["a"] * 5,
            "seed": [0] * 5,
            "step": range(5),
            "gap": [1.0, 1e-20, 0.0, -1e-17, math.inf],
        }
    )
    chart = viz.convergence_chart(frame)
    spec = chart.to_dict()
    values = [v["value"] for v in spec["datasets"][next(iter(spec["datasets"]))]]
    assert values == [1.0, viz.FLOOR]
    assert spec["width"] == 520 and spec["height"] == 300


def test_convergence_chart_median_band_and_theory():
    rows = [
        {"method": "m", "seed": s, "step": t, "gap": (s + 1) * 0.5**t}
        for s in range(3)
        for t in range(4)
    ]
    theory = viz.theory_rate_frame(3, 1.0, 0.5, "rate")
    spec = viz.convergence_chart(pd.DataFrame(rows), theory=theory, title="t").to_dict()
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["area", "line", "line"]
    datasets = list(spec["datasets"].values())
    agg = next(d for d in datasets if "low" in d[0])
    assert agg[0]["value"] == 2.0 and agg[0]["low"] == 1.0 and agg[0]["high"] == 3.0
    assert agg[0]["seeds"] == 3


def test_convergence_chart_thins_long_runs():
    frame = pd.DataFrame({"method": "m", "seed": 0, "step": range(5000), "gap": 1.0})
    spec = viz.convergence_chart(frame).to_dict()
    data = next(iter(spec["datasets"].values()))
    assert len(data) <= viz.MAX_STEPS + 1 and data[-1]["step"] == 4999


def test_convergence_chart_rejects_missing_columns():
    with pytest.raises(ValueError, match="gap"):
        viz.convergence_chart(pd.DataFrame({"method": ["a"], "step": [0]}))
