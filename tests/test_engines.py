"""The engine conformance table: every registered method × {matrix problem, one-site peft model,
multi-site peft model}, checking once the properties every engine shares.

Each engine is written once against the problem protocol (README "Architecture"), so:

* on every problem a run gives a frame with the method, the seed, the pattern's unit column and
  a finite loss, and the same seed gives the same frame;
* on a one-site peft model it gives the frame the same engine gives on the matrix problem of the
  same f (``peft_toys.toy_as_matrix``: fc1's weight as W, the loss written out without peft), to
  1e-10 in every numeric column;
* on a model the run leaves the model computing its committed result, and a rerun from
  ``reset()`` gives the same frame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from patterns import CASES, RANK, M
from peft_toys import toy_as_matrix, toy_problem

from lorakit.methods import REGISTRY

STEPS = 3
SCALES = ("matrix", "one-site", "multi-site")


def _problem(case, scale):
    if scale == "matrix":
        return case.matrix()
    targets = ["fc1"] if scale == "one-site" else ["fc1", "fc2"]
    return toy_problem(rank=RANK, clients=M, target_modules=targets)


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.select_dtypes(include=[np.number, bool])


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_run_gives_the_patterns_frame_and_repeats_exactly(case, scale):
    problem = _problem(case, scale)
    first = case.run(problem, STEPS, seeds=[0, 1])
    unit = REGISTRY[case.method].unit
    assert set(first["method"]) == {case.method} and set(first["seed"]) == {0, 1}
    assert unit in first.columns and first[unit].max() == STEPS
    assert np.isfinite(first["loss"]).all()
    again = case.run(problem, STEPS, seeds=[0, 1])
    pd.testing.assert_frame_equal(_numeric(first), _numeric(again), check_exact=True)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_one_site_model_runs_as_its_matrix_problem(case):
    model = _problem(case, "one-site")
    matrix = toy_as_matrix(model)
    on_model, on_matrix = case.run(model, STEPS), case.run(matrix, STEPS)
    left, right = _numeric(on_model), _numeric(on_matrix)
    assert list(left.columns) == list(right.columns)
    pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_model_is_left_computing_the_last_logged_result(case):
    model = _problem(case, "multi-site")
    frame = case.run(model, STEPS)
    last = frame.loc[frame[REGISTRY[case.method].unit].idxmax()]
    measured = model.loss() if case.pattern == "chain" else float(model.client_losses(
        model.start()).mean())  # fmt: skip
    assert measured == pytest.approx(float(last["loss"]), rel=1e-10)
