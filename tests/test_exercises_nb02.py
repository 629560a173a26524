"""Notebook 02's exercises: each reference by an independent route, a wrong answer refused, hints
that do not give the answer away."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import optimize

import lorakit.exercises as ex
from lorakit import widgets
from lorakit.exercises import nb02


def _reference(key):
    return ex.EXERCISES[key].reference()


def test_02_1_coordinate_sketch_by_enumeration():
    n, r = 16, 2
    diag = np.mean([np.isin(np.arange(n), s) for s in itertools.combinations(range(n), r)], 0)
    assert _reference("02.1") == pytest.approx(diag.min(), rel=1e-12) == 2 / 16
    assert ex.check("02.1", 1 / 8) and not ex.check("02.1", 2 / 4)


def test_02_2_lambda_p():
    assert _reference("02.2") == pytest.approx(0.25 * 2 / 4 + 0.75 * 2 / 16, rel=1e-12)
    assert ex.check("02.2", 7 / 32)
    assert not ex.check("02.2", 0.75 * 2 / 4 + 0.25 * 2 / 16)  # p on the wrong side


def test_02_3_and_02_4_best_p_and_the_bound_ratio():
    def bound(p):  # 2Δ⁰/(γλᵖT) with Δ⁰ = γ = 1, T = 100
        return 2 / ((p * 2 / 4 + (1 - p) * 2 / 16) * 100)

    best = optimize.minimize_scalar(bound, bounds=(0, 1), method="bounded").x
    assert best == pytest.approx(1.0, abs=1e-4) and _reference("02.3") == 1.0
    assert ex.check("02.3", 1) and not ex.check("02.3", 0.0) and not ex.check("02.3", 0.5)
    assert _reference("02.4") == pytest.approx(bound(0) / bound(1), rel=1e-12)
    assert _reference("02.4") == pytest.approx(16 / 4)
    assert ex.check("02.4", 4) and not ex.check("02.4", 0.25)


def test_02_5_sgd_step():
    """The reference step lowers SGD's loss much more than γL = 1 (which barely moves it)."""
    best = _reference("02.5")
    assert best in nb02.SGD_STEPS

    def final(step_factor):
        frame = widgets.explorer_frame(estimator="sgd", step_factor=step_factor, **nb02.SGD_RUN)
        return frame[frame["step"] == frame["step"].max()]["loss"].mean()

    loss0 = widgets.explorer_frame(steps=1, seeds=1)["loss"].iloc[0]
    assert final(best) < final(1.0) and loss0 - final(best) > 3 * (loss0 - final(1.0))
    assert ex.check("02.5", best) and not ex.check("02.5", 1.0)


def test_02_6_is_an_open_question():
    assert ex.check("02.6", None).correct is None


@pytest.mark.parametrize(
    "key, answers",
    [("02.1", ["1/8", "0.125"]), ("02.2", ["7/32", "0.21"]), ("02.3", ["p = 1", "p=1"]),
     ("02.4", ["4 ", "four"]), ("02.5", ["0.1"])],
)  # fmt: skip
def test_02_hints_do_not_give_the_answer(key, answers):
    hint = ex.EXERCISES[key].hint
    assert hint and not any(a in hint for a in answers)
