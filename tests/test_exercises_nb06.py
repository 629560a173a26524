"""Notebook 06's exercises: every reference is right by an independent route, a plausible wrong
answer is refused, and no hint gives the answer away."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scipy.linalg
import torch

import lorakit.exercises as ex
from lorakit import widgets
from lorakit.exercises import nb06

KEYS = [f"06.{k}" for k in range(1, 7)]


def _matrix() -> np.ndarray:
    """approximation_frame()'s matrix, rebuilt: rank-5 standard normal product plus 0.1·noise."""
    gen = torch.Generator().manual_seed(0)
    U = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    V = torch.randn(5, 30, generator=gen, dtype=torch.float64)
    return (U @ V + 0.1 * torch.randn(40, 30, generator=gen, dtype=torch.float64)).numpy()


def test_the_notebook_has_five_checkable_exercises_of_mixed_kinds_and_one_open_question():
    assert [k for k in ex.EXERCISES if k.startswith("06.")] == KEYS
    kinds = [ex.EXERCISES[k].kind for k in KEYS]
    assert kinds.count("open") == 1 and len(set(kinds)) == 5
    assert ex.check("06.6", None).correct is None


def test_pca_rank_from_the_singular_values():
    s = np.linalg.svd(_matrix(), compute_uv=False)
    tail = np.sqrt(np.cumsum((s**2)[::-1])[::-1]) / np.linalg.norm(s)  # tail[k] = error at rank k
    k = int(np.argmax(tail < nb06.TARGET))
    assert nb06.pca_rank_for() == k == 13
    assert ex.check("06.1", k)
    assert not ex.check("06.1", 5)  # the signal rank: 3.5% error, above the 2% target
    assert not ex.check("06.1", k - 1)


def test_fedasync_applies_30_updates_first_and_fedavg_never_does():
    history, events = widgets.async_frames(10, "heavy_tail", time_budget=40.0, seed=0)
    updates = history.groupby("rule")["update"].max()
    assert updates["fedavg"] < nb06.UPDATES  # each round waits for a Pareto maximum
    # FedAsync's k-th update is its k-th applied arrival; FedBuff needs K = 4 arrivals per update
    applied = events[events["applied"].astype(bool)].sort_values("finish")
    t_async = applied.loc[applied["rule"] == "fedasync", "finish"].iloc[nb06.UPDATES - 1]
    t_buff = applied.loc[applied["rule"] == "fedbuff", "finish"].iloc[4 * nb06.UPDATES - 1]
    assert t_async < t_buff
    assert nb06.first_to_updates() == "fedasync"
    assert ex.check("06.2", "FedAsync ")  # case and spaces do not matter
    assert not ex.check("06.2", "fedbuff") and not ex.check("06.2", "fedavg")


def test_fedasync_weight_is_alpha_times_the_hinge():
    alpha, a, b, tau = 0.6, 0.5, 4.0, nb06.STALE
    weight = alpha / (a * (tau - b) + 1)
    assert nb06.fedasync_mixing_weight() == pytest.approx(weight, rel=1e-12) == pytest.approx(0.2)
    assert ex.check("06.3", weight)
    assert not ex.check("06.3", alpha)  # no staleness discount
    assert not ex.check("06.3", 1 / 3)  # s(τ) without α


def test_corrected_time_solves_the_bound_and_the_printed_one_does_not():
    v = nb06.TIME_VALUES
    B = 1 + 3 / 8 * v["rho_bar"]
    lam = 1 - v["gamma"] * v["mu"] * B
    x = v["L"] * (v["gamma"] * v["C"] + v["D_gap"]) / (2 * v["mu"] * B)
    head = v["L"] / v["mu"] * v["A1"]
    t = math.log((v["E_target"] - x) / (head - x)) / math.log(lam)
    bound = lambda s: head * lam**s + x * (1 - lam**s)  # noqa: E731
    assert bound(t) == pytest.approx(v["E_target"], rel=1e-12)
    assert nb06.corrected_time() == pytest.approx(t, rel=1e-12)
    printed = math.log((v["E_target"] - x) / (head - 1)) / math.log(lam)
    assert abs(bound(printed) - v["E_target"]) > 0.1  # the slip misses E by far here
    assert ex.check("06.4", t)
    assert not ex.check("06.4", printed)


def test_qrcp_goal_accepts_exactly_the_ranks_within_28_percent_above_the_signal():
    X = _matrix()
    s = np.linalg.svd(X, compute_uv=False)
    norm = np.linalg.norm(s)
    _, R, _ = scipy.linalg.qr(X.T, mode="economic", pivoting=True)
    good = []
    for k in range(6, 30):
        qrcp = np.linalg.norm(R[k:, k:]) / norm  # ‖R₂₂‖_F: the row-projection error
        pca = np.sqrt((s[k:] ** 2).sum()) / norm
        if qrcp <= nb06.QRCP_SLACK * pca:
            good.append(k)
    assert good == [7, 8, 9, 10]
    assert [k for k in range(1, 31) if ex.check("06.5", k)] == good
    assert not ex.check("06.5", 2)  # within 28% but below the signal rank
    assert not ex.check("06.5", 8.5) and not ex.check("06.5", True)


@pytest.mark.parametrize("key", ["06.1", "06.2", "06.3", "06.4"])
def test_hints_do_not_give_the_answer(key):
    exercise = ex.EXERCISES[key]
    reference = exercise.reference()
    hint = exercise.hint
    assert hint
    if isinstance(reference, str):
        assert key == "06.2"  # a choice: the hint lists every rule, so none stands out
        assert all(rule in hint for rule in ("'fedavg'", "'fedasync'", "'fedbuff'"))
        return
    forms = {f"{reference:g}", f"{reference:.2f}", f"{reference:.3g}"}
    if float(reference).is_integer():
        forms.add(str(int(reference)))
    for form in forms:
        assert not re.search(rf"(?<![\d./]){re.escape(form)}(?![\d./])", hint), (key, form)
