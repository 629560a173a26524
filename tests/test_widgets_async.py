"""Notebook 06's app (lorakit.widgets.asynchronous): FedAvg vs FedAsync/FedBuff, PCA/QRCP/CUR."""

from __future__ import annotations

import math

import altair as alt
import pandas as pd
import pytest

from lorakit import widgets


@pytest.fixture(scope="module")
def run():
    return widgets.async_frames(stragglers="heavy_tail", time_budget=20.0)


def _half_gap_time(history: pd.DataFrame, rule: str) -> float:
    h = history[history["rule"] == rule]
    reach = h.loc[h["gap"] <= 0.5 * h["gap"].iloc[0], "time"]
    return float(reach.min()) if len(reach) else math.inf


def test_frames_have_rows_for_each_rule(run):
    history, events = run
    assert list(dict.fromkeys(history["rule"])) == list(widgets.ASYNC_RULES)
    assert set(events["rule"]) == set(widgets.ASYNC_RULES)
    for col in ("time", "update", "loss", "gap", "staleness", "diverged_at", "label"):
        assert col in history
    assert history["time"].max() <= 20.0
    assert history["diverged_at"].isna().all()
    # synchronous FedAvg applies only fresh updates; the asynchronous rules see stale ones
    applied = events[events["applied"].astype(bool)]
    assert (applied.loc[applied["rule"] == "fedavg", "staleness"] == 0).all()
    assert applied.loc[applied["rule"] == "fedasync", "staleness"].max() > 0


@pytest.mark.parametrize("seed", range(5))
def test_async_halves_the_gap_earlier_under_heavy_tailed_stragglers(seed):
    # Measured (seeds 0-4): FedAsync and FedBuff halve f - f* at t ≈ 0.7-1.2, FedAvg at
    # t ≈ 2-9 (seed 4: not within 20). Asserted with a factor-2 margin. (FedAvg often ends
    # lower: with a constant lr the stale heterogeneous updates leave the async rules a floor.)
    history, _ = widgets.async_frames(stragglers="heavy_tail", time_budget=20.0, seed=seed)
    sync = _half_gap_time(history, "fedavg")
    for rule in ("fedasync", "fedbuff"):
        assert _half_gap_time(history, rule) <= 0.5 * sync


@pytest.mark.parametrize("approximation", ["pca", "qrcp", "cur"])
def test_compressed_uploads_run(approximation):
    history, _ = widgets.async_frames(
        num_clients=4, approximation=approximation, rank=2, time_budget=5.0
    )
    assert history.attrs["approximation"] == approximation
    assert history["gap"].notna().all()


def test_pca_is_the_eckart_young_floor():
    frame = widgets.approximation_frame()
    assert set(frame["method"]) == {"pca", "qrcp", "cur", "paper_row_id"}
    wide = frame.pivot(index="rank", columns="method", values="rel_error")
    assert list(wide.index) == list(range(1, 31))
    for other in ("qrcp", "cur", "paper_row_id"):
        assert (wide["pca"] <= wide[other] + 1e-10).all(), other
    assert wide.loc[30].max() < 1e-8  # full rank: every method is exact


def test_app_builds_and_holds_charts():
    app = widgets.async_app(num_clients=4, time_budget=5.0)
    assert len(app.charts) == 3
    assert all(isinstance(c, (alt.TopLevelMixin)) for c in app.charts)
    assert set(app.frame["rule"]) == set(widgets.ASYNC_RULES)
    app.controls["approximation"].value = "qrcp"
    assert app.frame.attrs["approximation"] == "qrcp"
    assert all(out.outputs for out in app.outputs)
    for chart in app.charts:
        chart.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_clients": 0}, "num_clients"),
        ({"stragglers": "slow"}, "stragglers"),
        ({"staleness": "linear"}, "staleness"),
        ({"approximation": "svd"}, "approximation"),
        ({"rank": 7}, "rank"),
        ({"time_budget": -1.0}, "time_budget"),
    ],
)
def test_bad_inputs_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        widgets.async_frames(**kwargs)
    with pytest.raises(ValueError, match=name):
        widgets.async_app(**kwargs)


def test_approximation_frame_bad_rank_named():
    with pytest.raises(ValueError, match="ranks"):
        widgets.approximation_frame(m=5, n=4, ranks=[5])
