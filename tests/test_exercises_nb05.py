"""Notebook 05's exercises: every reference is right by an independent route, a plausible wrong
answer is refused, and no hint gives the answer away."""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

import lorakit.exercises as ex
from lorakit.decentralized import RWLoRA, make_graph
from lorakit.exercises import nb05
from lorakit.problems import heterogeneous_quadratics

KEYS = [f"05.{k}" for k in range(1, 7)]


def _ring(N: int, laziness: float) -> np.ndarray:
    """The lazy simple walk on the N-cycle, written out (MH with uniform π on a regular graph)."""
    shift = np.roll(np.eye(N), 1, axis=1)
    return laziness * np.eye(N) + (1 - laziness) * 0.5 * (shift + shift.T)


def _states_answer(hint: str, answer: str) -> bool:
    """True when ``answer`` appears in ``hint`` as a number of its own (not inside 1/4, 0.25…)."""
    return re.search(rf"(?<![\d./]){re.escape(answer)}(?![\d./])", hint) is not None


def test_the_notebook_has_five_checkable_exercises_of_mixed_kinds_and_one_open_question():
    assert [k for k in ex.EXERCISES if k.startswith("05.")] == KEYS
    kinds = [ex.EXERCISES[k].kind for k in KEYS]
    assert kinds.count("open") == 1 and len(set(kinds)) == 4
    assert ex.check("05.6", None).correct is None


def test_mixing_time_of_the_lazy_6_ring_by_matrix_powers():
    P, pi = _ring(6, 0.5), np.full(6, 1 / 6)
    Q, t = P.copy(), 1
    while 0.5 * np.abs(Q - pi).sum(axis=1).max() > 0.25:
        Q, t = Q @ P, t + 1
    assert nb05.lazy_ring_tau() == t == 4
    assert ex.check("05.1", t)
    assert not ex.check("05.1", t - 1)  # one power short: the worst row is still above 1/4
    assert not ex.check("05.1", 5)


def test_star_walk_is_stationary_at_degree_over_twice_the_edges():
    degrees = np.array([4, 1, 1, 1, 1])
    expected = degrees / degrees.sum()
    np.testing.assert_allclose(nb05.star_simple_walk_pi(), expected, rtol=1e-12)
    assert ex.check("05.2", expected.tolist())
    assert not ex.check("05.2", [0.2] * 5)  # uniform: what Metropolis–Hastings would give


def test_spectral_gap_of_the_lazy_10_ring_is_the_circulant_closed_form():
    gap = (1 - np.cos(2 * np.pi / 10)) / 2  # eigenvalues (1 + cos(2πj/N))/2
    assert nb05.lazy_ring_gap() == pytest.approx(gap, rel=1e-12)
    assert ex.check("05.3", gap)
    assert not ex.check("05.3", 1 - np.cos(2 * np.pi / 10))  # the non-lazy walk's gap


def test_plateau_ratio_by_running_rw_lora_directly():
    problem = heterogeneous_quadratics(10, 5, 4, L=1.0, spread=1.0, seed=0)
    graph = make_graph("ring", 10, seed=0)

    def plateau(lr):
        cfg = RWLoRA(
            rank=4, gamma=lr, transition="lazy", pi=np.full(10, 0.1), laziness=0.5, start=0
        )
        gap = cfg.run(problem, 300, 0, graph=graph)["gap"].to_numpy()[150:]
        return np.exp(np.log(gap).mean())

    ratio = plateau(0.025) / plateau(0.05)
    assert nb05.plateau_ratio() == pytest.approx(ratio, rel=1e-9)
    # the point of the exercise: neither ∝ η (½) nor ∝ η² (¼), and still a plateau (< 1)
    assert 0.6 < ratio < 0.9
    assert ex.check("05.4", ratio)
    assert not ex.check("05.4", 0.5) and not ex.check("05.4", 0.25)


def test_theorem_1_corrected_bound_grows_like_root_T_at_the_step_cap():
    T, eta, L, K, F, G, e2s2 = sp.symbols("T eta L K F Gamma e2s2", positive=True)
    # the corrected bound's terms: 16(F − f_inf)/(ηT) + 2K/η + 16ε²σ² + 2ηΓ, η = 1/(4L√T)
    bound = (16 * F / (eta * T) + 2 * K / eta + 16 * e2s2 + 2 * eta * G).subs(
        eta, 1 / (4 * L * sp.sqrt(T))
    )
    p = sp.limit(sp.log(bound) / sp.log(T), T, sp.oo)
    assert p == sp.Rational(1, 2) == nb05.theorem_1_growth()
    assert ex.check("05.5", 0.5)
    assert nb05.theorem_1_growth("bound_33") == 0  # the printed (33): a constant floor
    assert not ex.check("05.5", 0) and not ex.check("05.5", -0.5)


@pytest.mark.parametrize("key", KEYS[:5])
def test_hints_do_not_give_the_answer(key):
    exercise = ex.EXERCISES[key]
    reference = exercise.reference()
    values = np.atleast_1d(np.asarray(reference, dtype=float))
    hint = exercise.hint
    assert hint
    for value in values:
        forms = {f"{value:g}", f"{value:.2f}", f"{value:.3g}"}
        if float(value).is_integer():
            forms.add(str(int(value)))
        for form in forms:
            if form in ("1", "0"):  # too common to be a giveaway (e.g. "1 minus")
                continue
            assert not _states_answer(hint, form), (key, form)
