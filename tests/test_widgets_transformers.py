"""Notebook 07's app: the chain and federated methods on the zoo's digits MLP (fast settings)."""

from __future__ import annotations

import math

import pytest

import lorakit as lk
from lorakit.widgets import transformers as tw

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    monkeypatch.setenv("LORAKIT_FAST", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_chain_frame_has_the_matrix_engine_columns_and_learns():
    history, messages = tw.transformers_frame("digits", "bernoulli_lora", rank=4, p=0.5, steps=20)
    matrix = lk.run("bernoulli_lora", lk.problems.quadratic(6, 4), 2, rank=2, gamma=0.1)
    assert set(matrix.columns) | {"kind", "model"} == set(history.columns)
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


def test_app_draws_three_charts_and_shows_progress():
    app = tw.transformers_app(steps=10)
    assert len(app.charts) == 3
    assert "bernoulli_lora" in app.status.value and "→" in app.status.value
    assert app.progress in app.children  # where the tqdm bars appear in a kernel
    app.controls["method"].value = "fslora"
    assert "MiB up" in app.status.value
    assert not math.isnan(app.redraw_seconds)
    assert app.frame["kind"].iloc[0] == "federated"
