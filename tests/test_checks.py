"""The registered checks behind `lorakit verify` (Foundation issue §3: identities and rates)."""

import pytest

from lorakit import checks


@pytest.mark.parametrize("name", sorted(checks.CHECKS))
def test_every_registered_check_holds_in_fast_mode(name):
    frame = checks.verify(fast=True, names=[name])
    row = frame.iloc[0]
    assert row.status != "violated", row.to_dict()


def test_identities_are_exact_and_chains_reach_f_star():
    frame = checks.verify(
        fast=True,
        names=[
            "bernoulli_p1_is_rac_left",
            "bernoulli_p0_is_rac_right",
            "page_q1_is_gd",
            "mvr_b1_is_sgd",
            "counterexample_rac_lora_converges",
            "counterexample_lora_stalls",
        ],
    ).set_index("check")
    for name in [
        "bernoulli_p1_is_rac_left",
        "bernoulli_p0_is_rac_right",
        "page_q1_is_gd",
        "mvr_b1_is_sgd",
    ]:
        assert frame.loc[name, "measured"] == 0.0  # bit-identical trajectories
    assert frame.loc["counterexample_rac_lora_converges", "measured"] < 1e-10
    # LoRA's gap is the best rank-1 gap, 0.2889 (RAC-LoRA spec §6), on every seed.
    assert frame.loc["counterexample_lora_stalls", "measured"] == pytest.approx(0.2889, abs=1e-3)


def test_status_separates_printed_and_corrected_forms():
    assert checks.Result(measured=2.0, bound=1.0).status == "violated"
    assert checks.Result(0.5, 1.0, ">=").status == "violated"
    assert checks.Result(0.5, 1.0, printed=0.7).status == "not separable"
    assert (
        checks.Result(0.8, 1.0, printed=0.7).status == "printed form violated but corrected holds"
    )
    # Monte Carlo slack: 1.05 with standard error 0.02 is within 3 standard errors of 1.
    assert checks.Result(1.05, 1.0, stderr=0.02).status == "holds"
    assert checks.Result(1.05, 1.0, "≈", stderr=0.01).status == "violated"


def test_unknown_paper_is_rejected():
    with pytest.raises(ValueError, match="names no registered paper: use one of"):
        checks.verify(paper="no such paper")
