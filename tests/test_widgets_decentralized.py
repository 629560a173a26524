"""Notebook 05's frames, charts and app (lorakit.widgets.decentralized), in fast mode sizes."""

import altair as alt
import numpy as np
import pandas as pd
import pytest

from lorakit import widgets
from lorakit.decentralized import make_graph
from lorakit.widgets import decentralized as wd


def test_tv_frame_columns_and_worst_case():
    frame = widgets.tv_frame("ring", 10, 0.5, "uniform", t_max=30)
    assert {"t", "start", "tv", "worst"} <= set(frame.columns)
    assert set(frame["start"]) == {str(u) for u in range(10)} | {"worst"}
    worst = frame[frame["worst"]].set_index("t")["tv"]
    per_start = frame[~frame["worst"]].groupby("t")["tv"].max()
    np.testing.assert_allclose(worst.to_numpy(), per_start.to_numpy())
    assert frame.attrs["tau_mix"] == "10"  # lazy ring τ_mix(1/4) = 10 (spec §9.1)


def test_periodic_ring_never_mixes():
    frame = widgets.tv_frame("ring", 10, 0.0, "uniform", t_max=60)
    assert frame.attrs["tau_mix"] == "∞ (periodic)"
    assert "periodic" in frame.attrs["reason"]
    assert frame["tv"].min() >= 0.5 - 1e-12


def test_walk_frames_columns():
    runs = widgets.walk_frames("ring", 6, 0.5, "sizes", hops=30)
    assert {"hop", "node", "loss", "gap", "communicated_params"} <= set(runs.rw.columns)
    assert {"round", "loss", "mismatch", "communicated_params"} <= set(runs.gossip.columns)
    assert {"node", "visits", "frequency", "pi"} <= set(runs.visits.columns)
    assert runs.visits["visits"].sum() == 30
    np.testing.assert_allclose(runs.visits["pi"], np.arange(1, 7) / 21)
    assert not runs.rw.attrs["diverged"] and not runs.gossip.attrs["diverged"]
    only = widgets.walk_frames("complete", 5, 0.0, "uniform", methods="gossip_lora", hops=20)
    assert only.rw.empty and only.visits.empty and not only.gossip.empty


def test_visit_frequencies_approach_pi_on_complete_graph():
    runs = widgets.walk_frames("complete", 8, 0.0, "sizes", methods=("rw_lora",), hops=4000)
    gap = (runs.visits["frequency"] - runs.visits["pi"]).abs().max()
    assert gap < 0.03


def test_charts_build():
    runs = widgets.walk_frames("ring", 6, 0.5, "uniform", hops=20)
    tv = widgets.tv_frame("ring", 6, 0.5, "uniform")
    for chart in (
        widgets.tv_chart(tv),
        widgets.visits_chart(runs.visits),
        widgets.comm_chart(runs.rw, runs.gossip),
        widgets.mismatch_chart(runs.gossip),
    ):
        assert isinstance(chart, alt.TopLevelMixin)
        chart.to_dict()


@pytest.mark.parametrize("step", [0, 1, 7, 20])
def test_path_chart_shows_exactly_step_hops(step):
    runs = widgets.walk_frames("ring", 6, 0.5, "uniform", methods="rw_lora", hops=20)
    path = runs.rw.attrs["path"][0]
    chart = widgets.token_path_chart(runs.graph, path, step)
    nodes = chart.layer[-2].data
    assert nodes["visits"].sum() == step
    assert nodes.loc[nodes["holder"], "node"].tolist() == [path[step]]


def test_app_builds_and_steps(monkeypatch):
    monkeypatch.setenv("LORAKIT_FAST", "1")
    app = widgets.random_walks_app(N=6)
    assert len(app.charts) == 4 and app.frame is not None
    assert "τ_mix" in app.status.value
    assert app.path["chart"] is not None
    app.step_slider.value = 3
    assert app.path["chart"].layer[-2].data["visits"].sum() == 3
    app.controls["laziness"].value = 0.0  # periodic ring: the warning reaches the status
    assert "periodic" in app.status.value
    app.controls["methods"].value = ("gossip_lora",)
    assert len(app.charts) == 4


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: widgets.tv_frame("hexagon", 10), "kind"),
        (lambda: widgets.tv_frame("ring", 1), "N"),
        (lambda: widgets.tv_frame("ring", 10, 1.0), "laziness"),
        (lambda: widgets.tv_frame("ring", 10, 0.5, "zipf"), "pi"),
        (lambda: widgets.walk_frames(methods=("sgd",)), "methods"),
        (lambda: widgets.walk_frames(methods=()), "methods"),
        (lambda: widgets.walk_frames(hops=0), "hops"),
        (lambda: widgets.walk_frames(lr=-1.0), "lr"),
        (lambda: widgets.token_path_chart(make_graph("ring", 4), [0, 1], 5), "step"),
        (lambda: widgets.random_walks_app(N=500), "N"),
    ],
)
def test_bad_inputs_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_tv_chart_of_a_large_graph_stays_under_altairs_row_limit():
    frame = widgets.tv_frame("ring", 60, 0.5, "uniform")
    assert len(frame) > 5000
    widgets.tv_chart(frame).to_dict()


def _layer_rows(chart, i: int) -> list[dict]:
    """The rows altair embeds for layer ``i`` of a layered chart."""
    spec = chart.to_dict()
    data = spec["layer"][i].get("data") or spec["data"]
    return spec["datasets"][data["name"]]


def test_comm_chart_draws_the_running_mean_of_the_walk_and_names_things_in_words():
    runs = widgets.walk_frames("ring", 10, 0.5, "uniform", hops=80)
    chart = widgets.comm_chart(runs.rw, runs.gossip, trend=25)
    spec = chart.to_dict()
    x = wd.X_SENT
    assert spec["layer"][0]["encoding"]["x"]["title"] == x == "parameters sent (whole network)"
    assert spec["layer"][0]["mark"]["opacity"] < 1  # the per-hop line, faint
    bold = pd.DataFrame(_layer_rows(chart, len(spec["layer"]) - 1))
    assert set(bold["method"]) == {"RW-LoRA (one token)", "gossip Dec-LoRA"}
    walk = bold[bold["method"] == "RW-LoRA (one token)"]["value"].to_numpy()
    gap = runs.rw["gap"].to_numpy()
    # the trend at hop t is the geometric mean of f − f* over hops t−24..t (fewer at the start)
    for t in (0, 10, 24, 50, 80):
        window = gap[max(0, t - 24) : t + 1]
        assert walk[t] == pytest.approx(np.exp(np.log(window).mean()), rel=1e-12)
    # gossip is drawn as it is (one point per round, no smoothing)
    gossip = bold[bold["method"] == "gossip Dec-LoRA"]["value"].to_numpy()
    np.testing.assert_allclose(gossip, runs.gossip["gap"].to_numpy(), rtol=1e-12)
    # trend=0: just the per-hop lines
    assert len(widgets.comm_chart(runs.rw, runs.gossip, trend=0).to_dict()["layer"]) == 1
    with pytest.raises(ValueError, match="trend"):
        widgets.comm_chart(runs.rw, runs.gossip, trend=-1)


def test_a_diverged_walk_is_marked_in_the_chart_and_the_status():
    # lr = 3 blows the factorised quadratic up within a few hops (DEFAULT_LR = 0.05 does not)
    runs = widgets.walk_frames("ring", 10, 0.5, "uniform", hops=40, lr=3.0)
    stopped = runs.rw.attrs["diverged"][0]
    assert (runs.rw["diverged_at"] == stopped).all()
    chart = widgets.comm_chart(runs.rw, runs.gossip)
    spec = chart.to_dict()
    marks = [i for i, layer in enumerate(spec["layer"]) if layer["mark"].get("shape") == "cross"]
    assert len(marks) == 1
    crosses = pd.DataFrame(_layer_rows(chart, marks[0]))
    assert set(crosses["method"]) == {"RW-LoRA (one token)", "gossip Dec-LoRA"}
    tv = widgets.tv_frame("ring", 10, 0.5)
    status = wd._status(tv, runs)
    assert f"diverged at step {stopped} (seed 0)" in status
    fine = widgets.walk_frames("ring", 10, 0.5, "uniform", hops=40)
    assert fine.rw["diverged_at"].isna().all()
