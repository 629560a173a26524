"""Notebook 07's exercises: each reference is right by an independent route, a plausible wrong
answer is refused, and no hint gives the answer away."""

from __future__ import annotations

import pytest
import torch

from lorakit.exercises import EXERCISES, check, nb07

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

R = 4
SHAPES = nb07.TOY_SHAPES  # (m, n) per site


def test_the_toy_has_the_documented_sites():
    problem = nb07.toy_problem(R)
    assert [s.shape for s in problem.sites] == [torch.Size(s) for s in SHAPES]
    assert all(s.rank == R for s in problem.sites)


def test_07_1_adapter_counts_match_the_hand_formula():
    lora = sum(R * (m + n) for m, n in SHAPES)  # B is m × r, A is r × n
    left = sum(R * n for m, n in SHAPES)
    right = sum(m * R for m, n in SHAPES)
    assert (lora, left, right) == (208, 112, 96)
    assert check("07.1", [lora, left, right])
    assert not check("07.1", [lora, right, left])  # A and B swapped
    assert not check("07.1", [sum(m * n for m, n in SHAPES), left, right])  # the full W


def test_07_2_upload_is_k_columns_and_rows_of_float32():
    k = 2
    by_hand = 4 * k * sum(m + n for m, n in SHAPES)  # 4 bytes per float32 entry
    assert by_hand == 416
    assert check("07.2", by_hand)
    assert not check("07.2", 8 * k * sum(m + n for m, n in SHAPES))  # float64 assumed
    assert not check("07.2", 4 * 8 * sum(m + n for m, n in SHAPES))  # the whole rank-8 adapter


def test_07_3_merge_and_restart_keeps_the_function():
    measured = nb07.merge_restart_change()
    assert 0.0 <= measured < 1e-5  # rounding only: float32 logits of size ~1
    assert check("07.3", 0.0)
    assert not check("07.3", 1.0)  # "the adapter is reset, so the output changes"


def test_07_4_quarter_budget_is_r_over_four():
    fedit = nb07.fslora_upload_bytes(None)
    assert fedit == 4 * 8 * sum(m + n for m, n in SHAPES)  # r = 8 components, float32
    assert nb07.fslora_upload_bytes(2) * 4 == fedit  # linear in k
    assert check("07.4", 8 // 4)
    assert not check("07.4", 1)  # fits, but not the largest
    assert not check("07.4", 3)  # 3/8 > 1/4


def test_07_5_exact_name_test_matches_nothing():
    names = [n for n, _ in nb07.toy_problem(R).model.named_parameters()]
    b_names = [n for n in names if n.endswith("lora_B.default.weight")]
    assert len(b_names) == len(SHAPES)
    assert check("07.5", [0, len(b_names)])
    assert not check("07.5", [len(b_names), len(b_names)])  # believing the code's test works


def test_07_6_is_open_and_every_hint_hides_its_answer():
    assert check("07.6", None).correct is None
    assert {k for k in EXERCISES if k.startswith("07.")} == {f"07.{i}" for i in range(1, 7)}
    secrets = {"07.1": ["208", "112", "96"], "07.2": ["416"], "07.4": ["k = 2", "k=2"]}
    for key, words in secrets.items():
        assert not any(w in EXERCISES[key].hint for w in words), key
