"""Notebook 04's exercises: every reference against an independent route, a plausible wrong
answer refused, and hints that do not give the answer away."""

import math
from fractions import Fraction

import numpy as np
import pytest

import lorakit.exercises as ex
from lorakit import widgets
from lorakit.exercises import nb04


def test_notebook_04_has_mixed_kinds():
    keys = [k for k in ex.EXERCISES if k.startswith("04.")]
    assert 4 <= len(keys) <= 6
    kinds = {ex.EXERCISES[k].kind for k in keys}
    assert {"compute", "erratum", "configure", "open"} <= kinds


def test_04_1_second_moment():
    r, k = nb04.SECOND_MOMENT["r"], nb04.SECOND_MOMENT["k"]
    hand = Fraction(r, k) ** 2 * Fraction(k, r)  # (r/k)² · P(j ∈ I) = r/k
    assert ex.EXERCISES["04.1"].reference() == hand
    assert ex.check("04.1", "r/k".replace("r", str(r)).replace("k", str(k)))
    assert not ex.check("04.1", 1)  # E[S] = I, not E[S²]
    assert not ex.check("04.1", 16)  # (r/k)², a single draw's value


def test_04_2_sketch_variance():
    B, A, k = np.array(nb04.VARIANCE_B, float), np.array(nb04.VARIANCE_A, float), nb04.VARIANCE_K
    r = B.shape[1]
    assert k == 1
    # Independent route: the r equally likely sketches S = r·e_j e_jᵀ, in numpy.
    hand = np.mean([np.sum((r * np.outer(B[:, j], A[j]) - B @ A) ** 2) for j in range(r)])
    assert ex.EXERCISES["04.2"].reference() == pytest.approx(hand, rel=1e-12)
    assert ex.check("04.2", hand)
    assert not ex.check("04.2", np.sum((B @ A) ** 2))  # ‖BA‖²


def test_04_3_rhos():
    k, r = nb04.BUDGETS["k"], nb04.BUDGETS["r"]
    rho1 = sum(Fraction(r, ki) for ki in k) / len(k)
    rho2 = sum(Fraction(r, ki) ** 2 for ki in k) / len(k)
    assert ex.EXERCISES["04.3"].reference() == pytest.approx([float(rho1), float(rho2)], rel=1e-12)
    assert ex.check("04.3", [float(rho1), float(rho2)])
    mean_k = sum(k) / len(k)
    assert not ex.check("04.3", [r / mean_k, (r / mean_k) ** 2])  # r over the mean k


def test_04_4_printed_cap_factor():
    k, r = nb04.BUDGETS["k"], nb04.BUDGETS["r"]
    rho1 = np.mean([r / ki for ki in k])
    rho2 = np.mean([(r / ki) ** 2 for ki in k])
    H = nb04.STEP_CAP["H"]
    hand = math.sqrt(H * rho2 / rho1)  # the erratum: steps up to √(Hρ₂/ρ₁) times too large
    assert ex.EXERCISES["04.4"].reference() == pytest.approx(hand, rel=1e-12)
    assert ex.check("04.4", hand)
    assert not ex.check("04.4", math.sqrt(rho2 / rho1))  # without H
    assert not ex.check("04.4", 1 / hand)  # corrected over printed


def test_04_5_crossover_by_run():
    ref = ex.EXERCISES["04.5"].reference()
    assert 0.6 < ref < 0.8  # the notebook's reading of the 100-round chart
    # Independent route: step through FSLoRA's rounds and compare at the last FSLoRA round whose
    # upload does not exceed FedIT's: FedIT is ahead at the reference, not a round before.
    fedit, _ = widgets.federated_frame(("fedit",), rounds=40)
    fslora, _ = widgets.federated_frame(("fslora",), rounds=100)

    def fedit_ahead(mb):
        row = fedit[np.isclose(fedit["mb_up"], mb)].iloc[0]
        before = fslora[fslora["mb_up"] <= mb].iloc[-1]
        after = fslora[fslora["mb_up"] >= mb].iloc[0]
        return row["gap"] < min(before["gap"], after["gap"])

    step = float(fedit["mb_up"].diff().iloc[1])
    assert fedit_ahead(ref)
    assert not fedit_ahead(ref - step) or not fedit_ahead(ref - 2 * step)
    assert ex.check("04.5", ref + 0.05) and ex.check("04.5", ref - 0.05)
    assert not ex.check("04.5", 0.3) and not ex.check("04.5", 1.2)


def test_hints_do_not_give_the_answers():
    forbidden = {
        "04.1": ["= 4", "r/k ="],
        "04.2": ["242"],
        "04.3": ["3.83", "21.4", "23/6"],
        "04.4": ["3.34", "√(Hρ₂/ρ₁)"],
        "04.5": ["0.7", "0.6", "0.8"],
    }
    for key, words in forbidden.items():
        hint = ex.EXERCISES[key].hint
        assert hint and not any(w in hint for w in words), key


def test_open_question():
    result = ex.check("04.6", None)
    assert result.correct is None
