"""Notebook 04's app (lorakit.widgets.federated): FSLoRA and its baselines on the same devices."""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd
import pytest

from lorakit import widgets
from lorakit.widgets import federated as fed

ALL = widgets.FEDERATED_APP_METHODS
SKETCHED = tuple(m for m in ALL if m != "fedit")


@pytest.fixture(scope="module")
def run():
    """Every method, 2 seeds, 6 rounds, the paper's mix (k_i/r ∈ {1/8, 1/4, 1/2, 3/4})."""
    return widgets.federated_frame(ALL, rounds=6, seeds=2)


# ---------------------------------------------------------------------------------------------
# federated_frame
# ---------------------------------------------------------------------------------------------
def test_frames_have_every_method_seed_and_round(run):
    history, messages = run
    assert list(dict.fromkeys(history["method"])) == list(ALL)
    for (method, seed), rows in history.groupby(["method", "seed"]):
        assert rows["round"].tolist() == list(range(7)), (method, seed)
    assert history["diverged_at"].isna().all() and history.attrs["diverged"] == {}
    assert {"gap", "mb_up", "rho1", "rho2", "lr", "dirichlet_alpha", "ratio_mix"} <= set(
        history.columns
    )
    assert np.isfinite(history["gap"]).all() and (history["gap"] > 0).all()
    # one message per method, seed, round and client (10 clients, full participation)
    counts = messages.groupby(["method", "seed"]).size()
    assert len(counts) == len(ALL) * 2 and (counts == 6 * 10).all()
    assert set(messages["round"]) == set(range(1, 7))


def test_methods_share_the_devices(run):
    """Same seed → same k_i for every sketching method (the seed's budget stream); FedIT k_i = r."""
    _, messages = run
    first = messages[messages["round"] == 1]
    expected = widgets.client_budgets("paper", 10, 8, seeds=2).set_index(["seed", "client"])["k"]
    for method in SKETCHED:
        k = first[first["method"] == method].set_index(["seed", "client"])["k"]
        pd.testing.assert_series_equal(k.sort_index(), expected.sort_index(), check_dtype=False)
    assert (first[first["method"] == "fedit"]["k"] == 8).all()
    # different seeds draw different devices here (seed 0 and 1 of the paper mix)
    assert expected.loc[0].tolist() != expected.loc[1].tolist()


def test_fslora_uploads_fewer_megabytes_than_fedit_by_the_mean_ratio(run):
    """Upload per client and round is k_i(m + n) floats (spec fslora.md §8): FSLoRA's total over
    the same rounds is FedIT's times mean k_i/r, the ratio computed here from the messages."""
    history, messages = run
    for seed in (0, 1):
        msgs = messages[(messages["method"] == "fslora") & (messages["seed"] == seed)]
        ratio = float((msgs["k"] / msgs["rank"]).mean())
        last = history[(history["seed"] == seed) & (history["round"] == 6)].set_index("method")
        assert 0 < ratio < 1
        assert last.loc["fslora", "mb_up"] < last.loc["fedit", "mb_up"]
        assert last.loc["fslora", "mb_up"] == pytest.approx(ratio * last.loc["fedit", "mb_up"])
        assert last.loc["fslora", "mean_ratio"] == pytest.approx(ratio)


def test_fedit_is_fslora_and_hetero_lora_at_full_rank():
    """k_i = r (ratio 1): S = I, so FSLoRA and HeteroLoRA follow FedIT's trajectory exactly."""
    history, _ = widgets.federated_frame(
        ("fslora", "fedit", "hetero_lora"), ratio_mix=1.0, rounds=4
    )
    loss = {m: g["loss"].to_numpy() for m, g in history.groupby("method")}
    np.testing.assert_array_equal(loss["fslora"], loss["fedit"])  # bit for bit (spec §6 item 8a)
    np.testing.assert_array_equal(loss["hetero_lora"], loss["fedit"])


@pytest.mark.parametrize("mix", [*widgets.RATIO_MIXES, 0.125])
def test_nothing_diverges_at_the_default_learning_rate(mix):
    """The default γ = 0.1 on the digits: every method, every mix, 30 rounds, H = 2 (default)."""
    history, _ = widgets.federated_frame(ALL, ratio_mix=mix, rounds=30)
    assert history.attrs["diverged"] == {}
    last = history.groupby("method")["gap"].last()
    first = history.groupby("method")["gap"].first()
    assert np.isfinite(last).all()
    assert (last < first).all()  # every method makes progress


@pytest.mark.parametrize("mix", ["paper", "heavy tail"])
def test_default_learning_rate_is_stable_up_to_five_local_steps(mix):
    history, _ = widgets.federated_frame(
        ("fslora", "fslora_topk"), ratio_mix=mix, local_steps=5, rounds=30
    )
    assert history.attrs["diverged"] == {}


def test_a_diverging_setting_is_reported_not_raised():
    """γ = 1: FSLoRA's k_i = 1 clients blow up; FedIT (k_i = r) survives. No exception."""
    history, messages = widgets.federated_frame(("fslora", "fedit"), lr=1.0, rounds=20)
    assert set(history.attrs["diverged"]) == {"fslora"}
    message = history.attrs["diverged"]["fslora"][0]
    assert "fslora diverged in round" in message and "lr" in message
    fs = history[history["method"] == "fslora"]
    assert fs["diverged_at"].notna().all() and fs["round"].max() < 20
    assert history[history["method"] == "fedit"]["diverged_at"].isna().all()
    # The diverged run keeps the messages of the rounds it completed.
    assert set(messages["method"]) == {"fedit", "fslora"}
    assert messages[messages["method"] == "fslora"]["round"].max() <= fs["diverged_at"].max()
    status = fed._federated_status(history)
    assert "diverged in round" in status and "FedIT" in status
    widgets.federated_charts(history, messages)[0].to_dict()  # the red cross draws

    app = widgets.federated_app(methods=("fslora", "fedit"), lr=1.0, rounds=20)
    assert "diverged" in app.status.value and len(app.charts) == 3


def test_quadratics_problem():
    history, _ = widgets.federated_frame(("fslora", "fedit"), rounds=5, problem="quadratics")
    assert history.attrs["problem"] != "federated_digits"
    assert np.isfinite(history["gap"]).all() and history["dirichlet_alpha"].isna().all()
    assert history.attrs["diverged"] == {}


# ---------------------------------------------------------------------------------------------
# budgets
# ---------------------------------------------------------------------------------------------
def test_federated_budget_mixes():
    assert widgets.federated_budget("paper").values == (0.125, 0.25, 0.5, 0.75)
    assert widgets.federated_budget("code").values == (0.125, 0.25, 0.5)
    assert widgets.federated_budget("uniform").kind == "uniform"
    assert widgets.federated_budget("heavy tail").kind == "heavy_tail"
    k = widgets.client_budgets(0.5, num_clients=7, rank=8)
    assert (k["k"] == 4).all() and (k["ratio"] == 0.5).all() and len(k) == 7
    paper = widgets.client_budgets("paper", num_clients=200, rank=8, seeds=1)
    assert set(paper["k"]) == {1, 2, 4, 6}


def test_budget_chart_from_messages_budgets_and_sequences(run):
    _, messages = run
    for data, kw in (
        (messages, {}),
        (widgets.client_budgets("paper", 10, 8), {}),
        ([1, 2, 2, 8], {"rank": 8}),
    ):
        chart = widgets.budget_chart(data, **kw)
        assert isinstance(chart, alt.Chart)
        spec = chart.to_dict()
        values = spec["datasets"][next(iter(spec["datasets"]))]
        assert [v["k"] for v in values] == list(range(1, 9))  # every k from 1 to r, zeros too
        assert "ρ₁" in spec["title"]
    # the messages: seed 0 of the first sketching method, first round only → 10 clients
    values = widgets.budget_chart(messages[messages["seed"] == 0]).to_dict()
    counts = sum(v["clients"] for v in next(iter(values["datasets"].values())))
    assert counts == 10


@pytest.mark.parametrize(
    ("data", "kw", "name"),
    [
        ([1, 2, 3], {}, "rank"),
        ([0, 2], {"rank": 8}, "k_i"),
        ([1, 9], {"rank": 8}, "k_i"),
        (pd.DataFrame({"x": [1]}), {}, "'k'"),
        ([], {"rank": 8}, "budgets"),
    ],
)
def test_budget_chart_bad_inputs(data, kw, name):
    with pytest.raises(ValueError, match=name):
        widgets.budget_chart(data, **kw)


# ---------------------------------------------------------------------------------------------
# charts and the app
# ---------------------------------------------------------------------------------------------
def test_federated_charts_against_round_and_megabytes(run):
    history, messages = run
    per_round, per_mb = widgets.federated_charts(history, messages)
    for chart, x in ((per_round, "round"), (per_mb, fed.MB_COL)):
        spec = chart.to_dict()
        enc = spec["layer"][-1]["encoding"]
        assert enc["x"]["field"] == x and enc["y"]["scale"]["type"] == "log"
        assert enc["color"]["field"] == "method"
    with pytest.raises(ValueError, match="history"):
        widgets.federated_charts(pd.DataFrame())


def test_app_builds_redraws_and_holds_charts():
    app = widgets.federated_app(rounds=5)
    assert len(app.charts) == 3 and all(len(out.outputs) == 1 for out in app.outputs)
    assert set(app.frame["method"]) == set(fed.DEFAULT_METHODS)
    assert "ρ₁" in app.status.value and "MB up" in app.status.value
    assert math.isfinite(app.redraw_seconds)
    app.controls["methods"].value = ("fslora",)
    assert set(app.frame["method"]) == {"fslora"}
    app.controls["ratio_mix"].value = 1.0
    assert (app.frame["rho1"] == 1.0).all()
    app.controls["local_steps"].value = 1
    assert (app.frame["local_steps"] == 1).all()
    before = app.frame
    app.controls["methods"].value = ()  # a bad value: reported in the status line, charts kept
    assert "methods" in app.status.value and app.frame is before


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"methods": ("nope",)}, "methods"),
        ({"methods": ()}, "methods"),
        ({"methods": ("fed_rac_lora",)}, "methods"),
        ({"num_clients": 0}, "num_clients"),
        ({"num_clients": 2.5}, "num_clients"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"local_steps": 0}, "local_steps"),
        ({"rounds": 0}, "rounds"),
        ({"rank": 0}, "rank"),
        ({"rank": 11}, "rank"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"seeds": 0}, "seeds"),
        ({"seeds": []}, "seeds"),
        ({"problem": "mnist"}, "problem"),
        ({"ratio_mix": "bogus"}, "ratio_mix"),
        ({"ratio_mix": 1.5}, "ratio_mix"),
        ({"ratio_mix": 0}, "ratio_mix"),
        ({"ratio_mix": None}, "ratio_mix"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        widgets.federated_frame(**{"rounds": 2, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"ratio_mix": "bogus"}, "ratio_mix"),
        ({"alpha": 0.0}, "alpha"),
        ({"methods": ()}, "methods"),
    ],
)
def test_app_bad_inputs_raise_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        widgets.federated_app(**{"rounds": 2, **kwargs})


# ---------------------------------------------------------------------------------------------
# issue 12 §4: readable legends, overlapping lines, fitted log axes
# ---------------------------------------------------------------------------------------------
def _line_layer(chart):
    return chart.to_dict()["layer"][-1]


def test_legends_and_axes_are_in_words(run):
    history, messages = run
    per_round, per_mb = widgets.federated_charts(history, messages)
    for chart, x_title in ((per_round, "server round"), (per_mb, fed.MB_COL)):
        layer = _line_layer(chart)
        enc = layer["encoding"]
        assert enc["x"]["title"] == x_title and enc["y"]["title"] == "f(W) − f*"
        names = enc["color"]["scale"]["domain"]
        assert names == [fed.METHOD_LABELS[m] for m in ALL]  # FSLoRA, FedIT, …, not fslora
    assert fed.method_label("fslora_topk") == "FSLoRA + top-k"
    assert fed.method_label("fslora (k_i/r = 1/2)") == "FSLoRA (k_i/r = 1/2)"
    assert fed.method_label("something else") == "something else"
    app = widgets.federated_app(methods=("fslora", "flex_lora"), rounds=5)
    assert "<b>FSLoRA</b>" in app.status.value and "<b>FlexLoRA</b>" in app.status.value
    labels = dict(app.controls["methods"].options)
    assert labels["FedStackLoRA"] == "fedstack_lora"  # readable labels, values stay the keys


def test_coinciding_lines_differ_in_dash_and_shape():
    """With every k_i/r = 1/2 FlexLoRA lies on FSLoRA (issue 12 §4): each method has its own
    colour, dash and point shape, so a line drawn under another still shows."""
    history, _ = widgets.federated_frame(("fslora", "flex_lora", "fedit"), ratio_mix=0.5, rounds=4)
    for chart in widgets.federated_charts(history):
        spec = chart.to_dict()
        line, points = spec["layer"][-2]["encoding"], spec["layer"][-1]["encoding"]
        domain = points["color"]["scale"]["domain"]
        assert domain == ["FSLoRA", "FlexLoRA", "FedIT"] == line["color"]["scale"]["domain"]
        assert line["strokeDash"]["scale"]["domain"] == domain
        assert points["shape"]["scale"]["domain"] == domain
        enc = {"strokeDash": line["strokeDash"], "shape": points["shape"]}
        pairs = {
            (str(d), s)
            for d, s in zip(
                enc["strokeDash"]["scale"]["range"], enc["shape"]["scale"]["range"], strict=True
            )
        }
        assert (
            len(pairs) == len(domain)
            and len(set(map(str, enc["strokeDash"]["scale"]["range"]))) == 3
        )


def test_log_axis_is_fitted_to_the_data(run):
    """Data in 0.7–2.2 gets an axis near 0.7–2.2, not Vega's nice 0.1–10."""
    lo, hi = fed.log_domain([0.7, 1.3, 2.2])
    assert 0.6 < lo < 0.7 and 2.2 < hi < 2.5
    lo, hi = fed.log_domain([1e-3, 1e3, -1.0, math.nan])  # non-positive, non-finite dropped
    assert lo == pytest.approx(1e-3 / 10**0.3) and hi == pytest.approx(1e3 * 10**0.3)
    history, _ = run
    for chart in widgets.federated_charts(history):
        y = _line_layer(chart)["encoding"]["y"]
        assert y["scale"]["type"] == "log" and y["scale"]["nice"] is False
        gap = history["gap"]
        low, high = y["scale"]["domain"]
        assert low <= gap.min() and high >= gap.max()
        assert high / low < (gap.max() / gap.min()) * 1.3  # within ~5 % per side in log space


def test_divergence_is_marked_in_both_charts():
    history, _ = widgets.federated_frame(("fslora", "fedit"), lr=1.0, rounds=8)
    assert set(history.attrs["diverged"]) == {"fslora"}
    for chart in widgets.federated_charts(history):
        spec = chart.to_dict()
        assert spec["title"]["subtitle"] == "red cross: a run diverged and stopped there"
        crosses = [layer for layer in spec["layer"] if layer["mark"].get("shape") == "cross"]
        assert len(crosses) == 1 and crosses[0]["mark"]["color"] == "red"
    calm, _ = widgets.federated_frame(("fedit",), rounds=3)
    assert "subtitle" not in str(widgets.federated_charts(calm)[0].to_dict()["title"])
