"""Notebook 01's exercises: each reference by an independent route, a wrong answer refused, hints
that do not give the answer away."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import lorakit as lk
import lorakit.exercises as ex
from lorakit.exercises import nb01


def test_01_1_constants_from_the_hessian():
    problem = lk.problems.counterexample()
    hessian = torch.autograd.functional.hessian(
        lambda x: problem.loss(x.reshape(3, 3)), problem.W0.reshape(9)
    )
    eig = torch.linalg.eigvalsh(hessian)
    assert ex.EXERCISES["01.1"].reference() == pytest.approx([float(eig.max()), float(eig.min())])
    assert ex.check("01.1", [20, 2])
    assert not ex.check("01.1", [10, 1])  # the paper's ½-convention


def test_01_2_bound_rate():
    assert ex.EXERCISES["01.2"].reference() == pytest.approx(1 - (1 / 20) * 2 * (1 / 3))
    assert ex.check("01.2", 29 / 30)
    assert not ex.check("01.2", 1 - 2 / 20)  # λ forgotten


def test_01_3_measured_rate_matches_the_slow_directions_expected_contraction():
    """Independent route: lk.run and scipy's linregress; and the expected contraction of
    e ← (I − γhH)e along the slow Hessian eigenvalue h = μ = 2, 1 − 2γhλ + γ²h²λ (H a projector
    with E[H] = λI, λ = 1/3), which the measurement should match within 1 %."""
    problem = lk.problems.counterexample()
    gaps = np.stack(
        [
            lk.run("rac_lora", problem, 150, seed, rank=1, gamma=1 / 20)["gap"].to_numpy()
            for seed in range(3)
        ]
    )
    fit = stats.linregress(np.arange(151), np.log(np.median(gaps, axis=0)))
    measured = ex.EXERCISES["01.3"].reference()
    assert measured == pytest.approx(np.exp(fit.slope), rel=1e-9)
    gamma, h, lam = 1 / 20, 2.0, 1 / 3
    assert measured == pytest.approx(1 - 2 * gamma * h * lam + gamma**2 * h**2 * lam, rel=0.01)
    assert measured < ex.EXERCISES["01.2"].reference()  # faster than the bound's factor
    assert ex.check("01.3", measured * 1.003)
    assert not ex.check("01.3", ex.EXERCISES["01.2"].reference())  # the bound is not the rate


def test_01_4_cola_threshold_by_a_grid_scan():
    grid = np.round(np.arange(0.50, 0.63, 0.01), 2)
    diverges = [nb01.cola_diverges(g) for g in grid]
    first = int(np.argmax(diverges))
    assert diverges[first] and not any(diverges[:first]) and first > 0
    reference = nb01.largest_converging_step()
    resolution = (nb01.BRACKET[1] - nb01.BRACKET[0]) / 2**nb01.BISECTIONS
    assert grid[first - 1] - resolution <= reference < grid[first]
    assert not nb01.cola_diverges(reference) and resolution < 0.01
    assert ex.check("01.4", reference) and ex.check("01.4", 0.97 * reference)
    assert not ex.check("01.4", 1.1 * reference)  # diverges
    assert not ex.check("01.4", 0.3)  # converges, but far from the largest


def test_01_5_is_an_open_question():
    assert ex.check("01.5", None).correct is None


@pytest.mark.parametrize(
    "key, answers",
    [("01.1", ["20", "2]"]), ("01.2", ["29/30", "0.96"]), ("01.3", ["0.93"]),
     ("01.4", ["0.5", "0.56"])],
)  # fmt: skip
def test_01_hints_do_not_give_the_answer(key, answers):
    hint = ex.EXERCISES[key].hint
    assert hint and not any(a in hint for a in answers)
