"""Notebook 07's app: the chain and federated methods on the zoo's digits MLP (fast settings)."""

from __future__ import annotations

import math
import time

import pytest
import torch
from bars import StopAfter

import lorakit as lk
from lorakit import progress
from lorakit.widgets import transformers as tw

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    monkeypatch.setenv("LORAKIT_FAST", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_chain_frame_has_the_matrix_engine_columns_and_learns():
    history, messages = tw.transformers_frame("digits", "bernoulli_lora", rank=4, p=0.5, steps=20)
    matrix = lk.run("bernoulli_lora", lk.problems.quadratic(6, 4), 2, rank=2, gamma=0.1)
    assert set(matrix.columns) | {"kind", "model", "device"} == set(history.columns)
    assert (history["device"] == "cpu").all()
    assert messages is None
    assert history["step"].iloc[-1] == 20
    # Measured: 4.529 -> 0.853 with AdamW 1e-2, batch 32, K = 10 (seed 0).
    assert history["loss"].iloc[0] == pytest.approx(4.5287, abs=1e-3)
    assert history["loss"].iloc[-1] < 1.5


def test_chain_trained_entries_per_link_follow_the_side():
    history, _ = tw.transformers_frame("digits", "rac_lora", rank=4, steps=20)
    problem = tw.transformers_problem("digits", 4)
    # RAC-LoRA's default side is left: A (r × n) trains at every site.
    expected = sum(4 * site.shape[1] for site in problem.sites)
    assert (history["side"] == "left").all()
    assert (history["trained_params"] == expected).all()


def test_federated_frame_counts_the_slice_and_its_bytes():
    history, messages = tw.transformers_frame("digits", "fslora", rank=4, ratio=0.5, steps=3)
    problem = tw.transformers_problem("digits", 4, tw.NUM_CLIENTS)
    width = sum(site.shape[0] + site.shape[1] for site in problem.sites)  # Σ_l (m_l + n_l)
    assert (messages["k"] == 2).all()
    assert (messages["trainable"] == 2 * width).all()
    # Up: the slices, k(m + n) floats per module; down: the whole adapter, r(m + n) floats per
    # module, and the k indices of each module's I (4 bytes each).
    assert (messages["bytes_up"] == 4 * 2 * width).all()
    assert (messages["bytes_down"] == 4 * (4 * width + 2 * len(problem.sites))).all()
    assert len(messages) == 3 * tw.NUM_CLIENTS
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    fedit, _ = tw.transformers_frame("digits", "fedit", rank=4, ratio=0.5, steps=1)
    assert fedit["budgets"].iloc[0] == "4"


def test_bad_choices_name_the_argument():
    with pytest.raises(ValueError, match="model"):
        tw.transformers_frame("bert", "fslora")
    with pytest.raises(ValueError, match="method"):
        tw.transformers_frame("digits", "sgd")
    with pytest.raises(ValueError, match="ratio"):
        tw.transformers_frame("digits", "fslora", ratio=0.0)


def test_app_draws_once_then_runs_only_from_the_run_button():
    app = tw.transformers_app(steps=10)
    assert len(app.charts) == 3
    assert "bernoulli_lora" in app.status.value and "→" in app.status.value
    assert app.bar.value == app.bar.max == 10  # the progress bar of the first draw, full
    frame = app.frame
    app.controls["method"].value = "fslora"  # a control change does not train
    assert app.frame is frame and not app.running
    assert "press Run" in app.status.value
    app.run_button.click()
    app.wait()
    assert "MiB up" in app.status.value
    assert not math.isnan(app.redraw_seconds)
    assert app.frame["kind"].iloc[0] == "federated"
    assert not app.cancelled and not app.run_button.disabled and app.cancel_button.disabled


def test_model_or_method_change_resets_the_steps_per_model():
    app = tw.transformers_app(steps=7)
    app.controls["model"].value = "gpt2"
    assert app.controls["steps"].value == tw.SETTINGS["gpt2"]["steps"][1]  # fast mode: 6
    app.controls["method"].value = "fslora"
    assert app.controls["steps"].value == tw.SETTINGS["gpt2"]["rounds"][1]  # 2 rounds
    app.controls["model"].value = "digits"
    assert app.controls["steps"].value == tw.SETTINGS["digits"]["rounds"][1]
    assert tw.default_steps("minilm", "lora") == tw.SETTINGS["minilm"]["steps"][1]


def test_cancel_stops_the_run_and_keeps_its_rows():
    app = tw.transformers_app(steps=5)
    app.controls["steps"].value = 200
    app.run()
    # Bounded wait for the run to be under way (not a timing assertion).
    for _ in range(6000):
        if (app.bar.max == 200 and app.bar.value >= 5) or not app.running:
            break
        time.sleep(0.01)
    app.cancel()
    app.wait()
    last = int(app.frame["step"].iloc[-1])
    assert app.cancelled and "cancelled" in app.status.value
    assert 5 <= last < 200  # stopped early, at the step it had reached
    assert app.frame["step"].is_monotonic_increasing and app.frame["step"].iloc[0] == 0
    assert app.frame["loss"].notna().all()
    assert app.frame["loss"].iloc[-1] < app.frame["loss"].iloc[0]  # the steps run trained


def test_a_stopped_federated_run_keeps_its_rounds():
    with progress.report_progress(StopAfter):
        history, messages = tw.transformers_frame("digits", "fslora", steps=8)
    # log_every = max(1, 8 // LOG_POINTS) = 1: rounds 0..3 logged, then the stop.
    assert list(history["round"]) == [0, 1, 2, 3]
    assert sorted(messages["round"].unique()) == [1, 2, 3]
    assert history["mb_up"].iloc[-1] == pytest.approx(
        3 * messages[messages["round"] == 1]["bytes_up"].sum() / 2**20
    )


def test_a_stopped_chain_logs_the_step_it_reached():
    with progress.report_progress(StopAfter):
        history, _ = tw.transformers_frame("digits", "rac_lora", steps=40)
    # log_every = 40 // LOG_POINTS = 4: step 0 logged, stop before step 3, which is logged.
    assert list(history["step"]) == [0, 3]
    full, _ = tw.transformers_frame("digits", "rac_lora", steps=3)
    assert history["loss"].iloc[-1] == pytest.approx(full["loss"].iloc[-1], rel=1e-9)


def test_device_control_lists_cpu_and_the_run_uses_the_choice(monkeypatch):
    app = tw.transformers_app(steps=2)
    control = app.device
    assert "device" not in app.values  # where, not what: not in saved figures' names
    assert "cpu" in control.options
    assert control.value == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        assert app.frame["device"].iloc[0] == "cpu"
        with pytest.raises(ValueError, match="device"):
            tw.transformers_frame("digits", "lora", steps=1, device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert tw.devices() == ("cpu", "cuda") and tw.default_device() == "cuda"


def test_chain_bytes_chart_is_a_note_and_charts_speak_words():
    history, messages = tw.transformers_frame("digits", "lora", steps=2)
    charts = [c.to_dict() for c in tw.transformers_charts(history, messages)]
    assert "none (chain)" in charts[2]["title"]
    assert charts[1]["encoding"]["x"]["title"] == "chain link"
    assert charts[1]["encoding"]["color"]["title"] == "trained factor"
    history, messages = tw.transformers_frame("digits", "fslora", steps=1)
    charts = tw.transformers_charts(history, messages)
    assert set(charts[2].data["direction"]) == set(tw.DIRECTIONS.values())
    assert charts[2].to_dict()["encoding"]["y"]["title"] == "MiB sent so far (all clients)"
