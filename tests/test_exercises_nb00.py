"""Notebook 00's exercises: each reference by an independent route, a wrong answer refused, hints
that do not give the answer away."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import lorakit.exercises as ex
from lorakit import problems


def _reference(key):
    return ex.EXERCISES[key].reference()


def test_00_1_coordinate_sketch_expected_projector_by_enumeration():
    # H_B = diag(1_S), S uniform among the C(6, 2) = 15 pairs: each index is in 5 of them.
    m, r = 6, 2
    diag = np.mean([np.isin(np.arange(m), s) for s in itertools.combinations(range(m), r)], 0)
    np.testing.assert_allclose(diag, 5 / 15)
    assert _reference("00.1") == pytest.approx(diag[0], rel=1e-12)
    assert ex.check("00.1", 1 / 3) and ex.check("00.1", 0.3333)
    assert not ex.check("00.1", 2 / 8)  # r/n: the wrong side


def test_00_2_and_00_3_the_bound_rate_and_its_iteration_count():
    problem = problems.quadratic(6, 8, L=1.0, mu=0.2, seed=0)
    assert (problem.L, problem.mu) == (1.0, 0.2)
    rho = 1 - 1.0 * 0.2 * 2 / 6  # 1 − γμ·r/m, γ = 1/L
    assert _reference("00.2") == pytest.approx(rho, rel=1e-12)
    assert ex.check("00.2", 14 / 15)
    assert not ex.check("00.2", 1 - 0.2 * 2 / 8)  # λ = r/n
    T = math.ceil(math.log(1e-6) / math.log(rho))
    assert T == 201 and _reference("00.3") == T
    assert ex.check("00.3", 201) and ex.check("00.3", 200)  # ±1 for rounding
    assert not ex.check("00.3", 100) and not ex.check("00.3", 30)


def test_00_4_rank_of_the_target():
    problem = problems.quadratic(6, 8, L=1.0, mu=0.2, seed=0)
    rank = np.linalg.matrix_rank((problem.W_star - problem.W0).numpy())
    assert rank == 6 and _reference("00.4") == rank
    assert ex.check("00.4", 6) and not ex.check("00.4", 2)


def test_00_5_is_an_open_question():
    assert ex.check("00.5", None).correct is None


@pytest.mark.parametrize(
    "key, answers",
    [("00.1", ["1/3", "0.33"]), ("00.2", ["0.93", "14/15"]), ("00.3", ["201", "200"]),
     ("00.4", ["6"])],
)  # fmt: skip
def test_00_hints_do_not_give_the_answer(key, answers):
    hint = ex.EXERCISES[key].hint
    assert hint and not any(a in hint for a in answers)
