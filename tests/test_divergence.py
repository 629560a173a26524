"""Divergence, for every pattern at both scales (issue 11 §1): a diverged model-scale run leaves the
model in its last good state, ``on_divergence="raise"`` keeps the seeds that finished, and the
threshold ``blowup`` (default 10³) is where a user would call it divergence.

Each test iterates over ``tests/patterns.py``: ``Case.diverge_model`` makes the model-scale run take
good steps before it diverges (so its last good state is not the start), ``Case.one_seed_diverges``
makes one seed diverge while the other finishes.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from patterns import CASES
from peft_toys import toy_problem

import lorakit as lk
from lorakit.divergence import BLOWUP, exploded

#: the frame's step column and the word the error uses, per method
_STEP = {"chain": ("step", "step"), "federated": ("round", "round")}
_STEP.update(rw_lora=("hop", "hop"), gossip_lora=("round", "round"))
_STEP.update(asynchronous=("update", "server update"))


def _step(case) -> tuple[str, str]:
    return _STEP.get(case.method) or _STEP[case.pattern]


def _model_state(problem) -> tuple[dict, dict]:
    """Every tensor of the model's state dict (base weights, adapter factors, biases) and every
    parameter's requires_grad flag, copied here (not by lorakit's snapshot)."""
    model = problem.model
    values = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return values, {k: p.requires_grad for k, p in model.named_parameters()}


def _same(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    (va, fa), (vb, fb) = a, b
    return va.keys() == vb.keys() and fa == fb and all(torch.equal(va[k], vb[k]) for k in va)


def _problem(case, scale: str):
    return case.matrix() if scale == "matrix" else case.model()


# -- (a) a diverged model-scale run leaves the state before the diverged step ---------------------
@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_diverged_model_run_leaves_the_model_of_its_last_good_step(case):
    """The model after the DivergenceError equals, tensor for tensor and flag for flag, the model a
    run of only the good steps (same seed, same configuration) leaves; it is not the start."""
    problem = case.model()
    start = _model_state(problem)
    with pytest.raises(lk.DivergenceError) as info:
        case.run(problem, 8, **case.diverge_model)
    error, (column, unit) = info.value, _step(case)
    good = error.step - 1
    assert good >= 1, "the configuration must take a good step before it diverges"
    assert "diverged" in str(error) and f"restored to its state at {unit} {good}" in str(error)
    after = _model_state(problem)

    reference = case.model()
    case.run(reference, good, **case.diverge_model)  # the good steps alone: no divergence
    assert _same(after, _model_state(reference))
    assert not _same(after, start)
    for tensor in after[0].values():
        assert torch.isfinite(tensor).all()
    logged = error.frame.loc[error.frame[column] == good, "loss"]
    assert len(logged) == 1 and problem.loss() == pytest.approx(float(logged.iloc[0]), rel=1e-10)


def test_with_log_every_the_model_is_the_last_logged_step():
    """log_every = 3: the loss is checked at steps 0, 3, 6, …; a chain that diverges at a logged
    step returns to the previous logged one (the last state known to be good)."""
    kw = dict(rank=2, gamma=5.0, update="sgd")  # log_every=1 stops at step 5
    problem = toy_problem(rank=2)
    with pytest.raises(lk.DivergenceError) as info:
        lk.run("lora", problem, 12, log_every=3, **kw)
    step = info.value.step
    assert step % 3 == 0 and step >= 6
    assert f"restored to its state at step {step - 3}" in str(info.value)
    reference = toy_problem(rank=2)
    lk.run("lora", reference, step - 3, **kw)
    assert _same(_model_state(problem), _model_state(reference))


# -- (b) on_divergence="raise" keeps the seeds that finished --------------------------------------
@pytest.mark.parametrize("scale", ["matrix", "model"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_raise_keeps_every_finished_seed(case, scale):
    """Two seeds, the first finishes and the second diverges: the error's frame holds the first
    seed's rows, equal to a run of that seed alone, then the second's rows up to the diverged step;
    ``on_divergence="stop"`` returns the same rows."""
    split, steps = case.one_seed_diverges[scale], 6
    done, bad = split.finishes, 1 - split.finishes
    with pytest.raises(lk.DivergenceError) as info:
        case.run(_problem(case, scale), steps, seeds=[done, bad], **split.kwargs)
    error, (column, _) = info.value, _step(case)
    frame = error.frame
    assert error.seed == bad and frame["seed"].tolist() == sorted(
        frame["seed"], key=lambda s: s == bad
    )
    alone = case.run(_problem(case, scale), steps, seeds=done, **split.kwargs)
    assert alone.attrs["diverged"] == {} and alone[column].max() == steps
    pd.testing.assert_frame_equal(
        frame[frame["seed"] == done].reset_index(drop=True), alone, check_dtype=False
    )
    diverged = frame[frame["seed"] == bad]
    assert diverged[column].iloc[0] == 0 and diverged[column].max() <= error.step <= steps
    stopped = case.run(
        _problem(case, scale), steps, seeds=[done, bad], on_divergence="stop", **split.kwargs
    )
    assert stopped.attrs["diverged"] == {bad: error.step}
    pd.testing.assert_frame_equal(stopped, frame, check_dtype=False)


# -- (c) the threshold ------------------------------------------------------------------------------
def test_the_default_threshold_is_a_thousandfold_rise():
    assert BLOWUP == 1e3
    assert not exploded(4.5e3, 4.5) and exploded(4.6e3, 4.5)
    assert not exploded(1e3, 0.01) and exploded(1.1e3, 0.01)  # reference below 1: 10³ absolute
    assert exploded(math.nan, 1.0) and exploded(-math.inf, 1.0)
    assert not exploded(7.9e6, 4.5, blowup=1e12)  # the old threshold let this pass


def test_a_model_chain_whose_loss_rises_a_millionfold_has_diverged():
    """The peft toy under AsymmLoRA with γ = 10⁶: the loss goes from 1.25 to 10⁵–2·10⁶. The old
    threshold (10¹²·|f₀|, still reachable as blowup=1e12) returned it with ``diverged == {}``;
    the default stops at step 1 and restores the model."""
    kw = dict(rank=2, gamma=1e6)
    old = lk.run("asymm_lora", toy_problem(rank=2), 6, blowup=1e12, **kw)
    assert old.attrs["diverged"] == {}
    f0 = old["loss"].iloc[0]
    assert f0 == pytest.approx(1.2542827512601418, rel=1e-12)
    assert old["loss"].iloc[1:].min() > 1e4 * f0 and old["loss"].max() > 1e6 * f0
    problem = toy_problem(rank=2)
    with pytest.raises(lk.DivergenceError, match=r"diverged at step 1 .*state at step 0"):
        lk.run("asymm_lora", problem, 6, **kw)
    assert problem.loss() == pytest.approx(f0, rel=1e-12)
    stopped = lk.run("asymm_lora", toy_problem(rank=2), 6, on_divergence="stop", **kw)
    assert stopped.attrs["diverged"] == {0: 1} and stopped["step"].tolist() == [0, 1]


_BY_THRESHOLD = [
    pytest.param(case, scale, id=f"{case}-{scale}")
    for case in CASES
    for scale in ("matrix", "model")
    if case.one_seed_diverges[scale].by_threshold
]


@pytest.mark.parametrize("case,scale", _BY_THRESHOLD)
def test_blowup_decides_where_a_run_stops(case, scale):
    """The diverging seed of ``one_seed_diverges`` stops at that ``blowup`` and runs to the end with
    ``blowup=1e300``: every pattern passes the argument to its check."""
    split = case.one_seed_diverges[scale]
    bad = 1 - split.finishes
    with pytest.raises(lk.DivergenceError, match="diverged"):
        case.run(_problem(case, scale), 6, seeds=bad, **split.kwargs)
    frame = case.run(_problem(case, scale), 6, seeds=bad, **{**split.kwargs, "blowup": 1e300})
    assert frame.attrs["diverged"] == {} and frame["loss"].abs().max() > 1.5


@pytest.mark.parametrize("bad", [1.0, 0.5, -3.0, math.inf, math.nan, "10", True, None])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_blowup_is_validated(case, bad):
    with pytest.raises(ValueError, match=r"blowup must be"):
        case.run(case.matrix(), 2, blowup=bad)


def test_blowup_is_validated_at_model_scale():
    with pytest.raises(ValueError, match=r"blowup must be in \(1, inf\], got 1"):
        lk.run("rac_lora", toy_problem(rank=2), 2, rank=2, gamma=0.1, blowup=1)
