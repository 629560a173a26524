"""Behaviour of the chain engine (issue: Foundation §3). Values are asserted with stated tolerances."""

import math

import numpy as np
import pytest
import torch

import lorakit as lk
from lorakit import problems as pb


def _gd_iterates(problem, gamma, steps):
    """Plain gradient descent, written independently of the engine."""
    W, out = problem.W0.clone(), []
    for _ in range(steps + 1):
        out.append(float(problem.loss(W)))
        W = W - gamma * problem.grad(W)
    return np.array(out)


@pytest.mark.parametrize(
    "method,kw",
    [
        ("rac_lora", {"side": "left"}),
        ("rac_lora", {"side": "right"}),
        ("bernoulli_lora", {"p": 0.5}),
        ("bernoulli_lora", {"p": 0.5, "update": "factor"}),
    ],
)
def test_full_rank_chain_is_gradient_descent(method, kw):
    """r = m = n makes H = I, so the chain is GD iterate by iterate (RAC-LoRA §5 item 12)."""
    problem = pb.logistic_regression(5, 5, n_samples=200)
    gamma = 1 / problem.L
    frame = lk.run(method, problem, 30, seeds=[0, 1], rank=5, gamma=gamma, **kw)
    expected = _gd_iterates(problem, gamma, 30)
    for _, g in frame.groupby("seed"):
        np.testing.assert_allclose(g.loss.to_numpy(), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("update,tol", [("projected", 2), ("factor", 1000)])
def test_full_rank_chain_is_gradient_descent_to_working_precision(dtype, update, tol):
    """r = m = n = 32 in float32 and float64: the loss trajectory equals hand-written GD within
    tol·eps·f0 (issue 11 §3). Measured: projected 0.17 (float32) and 0.33 (float64) eps·f0 (the
    Gram-eigh basis was off by 12,664·eps·f0 in float32); factor 102 and 241 eps·f0 (its trained
    factor is B_S^†G, accurate to κ(B_S)·eps)."""
    problem = pb.quadratic(32, 32, L=1.0, mu=0.1, seed=0, dtype=dtype)
    W, expected = problem.W0.clone(), []
    for _ in range(11):
        expected.append(float(problem.loss(W)))
        W = W - problem.grad(W)
    expected = np.array(expected)
    frame = lk.run("bernoulli_lora", problem, 10, seeds=[0, 1], rank=32, gamma=1.0, p=0.5,
                   update=update)  # fmt: skip
    assert set(frame.side) == {"left", "right"}
    bound = tol * torch.finfo(dtype).eps * expected[0]
    for _, g in frame.groupby("seed"):
        assert np.abs(g.loss.to_numpy() - expected).max() <= bound


def test_plain_sgd_on_the_factor_is_not_the_projection():
    """One SGD step from A = 0 moves W by −η(α/r)²·B Bᵀ G, not −γ H_B G (Bernoulli-LoRA §2.1 note)."""
    problem = pb.quadratic(6, 4, seed=3)
    B = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    chain = lk.make("rac_lora", 2, 0.1, side="left", sketch=lk.sketches.fixed(B), update="sgd")
    W1 = problem.W0 - 0.1 * B @ B.T @ problem.grad(problem.W0)
    frame = chain.run(problem, 1)
    assert frame.loss.iloc[1] == pytest.approx(float(problem.loss(W1)), rel=1e-12)
    H = lk.sketches.projector(B)
    W1_proj = problem.W0 - 0.1 * H @ problem.grad(problem.W0)
    assert abs(frame.loss.iloc[1] - float(problem.loss(W1_proj))) > 1e-3


@pytest.mark.parametrize(
    "m,n,r,p", [(8, 12, 2, 0.3), (10, 10, 3, 0.5), (6, 15, 1, 1.0), (12, 5, 2, 0.0)]
)
def test_one_step_contraction_is_one_minus_lambda_p(m, n, r, p):
    """On f = ½‖W − W*‖² with γ = 1, E[f(W⁺) | W] = (1 − λ^p) f(W), λ^p = p·r/m + (1 − p)·r/n
    (Bernoulli-LoRA Thm 9 is tight; spec §6 item 6). Every step's ratio has this conditional mean,
    so the ratios over steps and seeds form a martingale-difference sample; tolerance 4 standard
    errors."""
    problem = pb.quadratic(m, n, seed=1)
    frame = lk.run("bernoulli_lora", problem, 25, seeds=range(40), rank=r, gamma=1.0, p=p)
    ratios = frame.groupby("seed").loss.apply(lambda s: s.to_numpy()[1:] / s.to_numpy()[:-1])
    ratios = np.concatenate(ratios.to_list())
    lam = p * r / m + (1 - p) * r / n
    se = ratios.std(ddof=1) / math.sqrt(ratios.size)
    assert abs(ratios.mean() - (1 - lam)) <= 4 * se, (ratios.mean(), 1 - lam, se)


def test_lora_converges_to_the_best_rank_one_point():
    """LoRA's stall gap is the rank-1 constrained optimum, computed here by scipy independently."""
    from scipy.optimize import minimize

    problem = pb.counterexample()
    M = np.diag([10.0] + [1.0] * 8)

    def f(z):
        x = np.outer(z[:3], z[3:]).ravel()
        return x @ M @ x + x.sum()

    best = min(
        minimize(f, np.random.default_rng(s).normal(size=6), method="BFGS").fun for s in range(20)
    )
    frame = lk.run("lora", problem, 4000, seeds=0, rank=1, gamma=0.5 / problem.L, log_every=4000)
    assert frame.loss.iloc[-1] == pytest.approx(best, abs=1e-6)
    assert best - problem.f_star == pytest.approx(0.2889, abs=5e-5)  # spec rac_lora §6


def test_additive_noise_has_the_stated_variance():
    """sgd(sigma) gives E‖g − ∇f‖² = σ² (Assumption 5 with known σ)."""
    problem = pb.quadratic(4, 6, seed=0)
    est = lk.sgd(sigma=0.7).bind(problem)
    streams = lk.Streams(0)
    W = problem.W0
    dev = [
        float(((est.update(problem, W, None, streams).G - problem.grad(W)) ** 2).sum())
        for _ in range(4000)
    ]
    se = np.std(dev) / math.sqrt(len(dev))
    assert abs(np.mean(dev) - 0.49) < 4 * se


def test_same_seed_same_numbers_and_seeds_differ():
    problem = pb.quadratic(6, 6, seed=0)
    kw = dict(rank=2, gamma=0.5, p=0.5, estimator=lk.sgd(sigma=0.1))
    a = lk.run("bernoulli_lora", problem, 20, seeds=5, **kw)
    b = lk.run("bernoulli_lora", problem, 20, seeds=5, **kw)
    c = lk.run("bernoulli_lora", problem, 20, seeds=6, **kw)
    np.testing.assert_array_equal(a.loss.to_numpy(), b.loss.to_numpy())
    assert np.abs(a.loss.to_numpy() - c.loss.to_numpy()).max() > 1e-6


def test_changing_the_estimator_does_not_reshuffle_the_coins():
    problem = pb.linear_regression(5, 5, n_pretrain=200, n_finetune=80)
    kw = dict(rank=1, gamma=0.5 / problem.L, p=0.5, seeds=2)
    a = lk.run("bernoulli_lora", problem, 25, **kw)
    b = lk.run("bernoulli_lora", problem, 25, estimator=lk.sgd(batch_size=3), **kw)
    assert list(a.side) == list(b.side)


def test_results_table_columns_and_bookkeeping():
    problem = pb.quadratic(6, 9, seed=0)
    frame = lk.run("cola", problem, 12, seeds=[0, 1], rank=2, gamma=0.01, steps_per_link=4)
    for col in [
        "method",
        "seed",
        "step",
        "link",
        "side",
        "loss",
        "gap",
        "grad_norm_sq",
        "trained_params",
        "gamma",
        "rank",
        "p",
        "sketch",
        "estimator",
        "update",
    ]:
        assert col in frame.columns
    assert len(frame) == 2 * 13
    assert frame.groupby("seed").link.max().tolist() == [2, 2]  # 12 steps / 4 per link
    assert set(frame.trained_params) == {2 * (6 + 9)}
    left = lk.run("rac_lora", problem, 3, rank=2, gamma=0.5)
    right = lk.run("rac_lora", problem, 3, rank=2, gamma=0.5, side="right")
    assert set(left.trained_params) == {2 * 9} and set(right.trained_params) == {6 * 2}
    sparse = lk.run("rac_lora", problem, 10, rank=2, gamma=0.5, log_every=4)
    assert sparse.step.tolist() == [0, 4, 8, 10]


def test_nonsmooth_polyak_step_on_frobenius_distance_equals_unit_step_on_the_quadratic():
    """For f = ‖W − W*‖, the Polyak step γ_t = f/‖∂f‖² = ‖W − W*‖ makes W⁺ = W − H(W − W*), the
    γ = 1 projected step on ½‖W − W*‖² (Bernoulli-LoRA spec §6 item 11)."""
    nonsmooth = pb.frobenius_distance(6, 6, seed=2)
    smooth = pb.quadratic(6, 6, W_star=nonsmooth.W_star)
    a = lk.run("bernoulli_lora", nonsmooth, 30, seeds=1, rank=2, gamma="polyak", p=0.5)
    b = lk.run("bernoulli_lora", smooth, 30, seeds=1, rank=2, gamma=1.0, p=0.5)
    np.testing.assert_allclose(a.loss.to_numpy(), np.sqrt(2 * b.loss.to_numpy()), rtol=1e-9)
    assert "loss_avg" in a.columns and a.loss_avg.iloc[-1] < a.loss_avg.iloc[1]


def test_divergence_stops_with_the_step_and_a_hint():
    problem = pb.counterexample()
    with pytest.raises(lk.DivergenceError, match=r"diverged at step \d+.*exceeds 1/L") as info:
        lk.run("rac_lora", problem, 500, rank=1, gamma=10 / problem.L)
    err = info.value
    assert 0 < err.step < 500 and len(err.frame) == err.step + 1
    frame = lk.run(
        "rac_lora", problem, 500, seeds=[0, 1], rank=1, gamma=10 / problem.L, on_divergence="stop"
    )
    assert set(frame.attrs["diverged"]) == {0, 1}
    assert frame.groupby("seed").step.max().to_dict() == frame.attrs["diverged"]


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda P: lk.run("rac_lora", P, 5, rank=0, gamma=0.1), r"rank must be in \[1"),
        (lambda P: lk.run("rac_lora", P, 5, rank=4, gamma=0.1), r"rank must be in \[1, 3\]"),
        (
            lambda P: lk.run("bernoulli_lora", P, 5, rank=1, gamma=0.1, p=1.5),
            r"p must be in \[0, 1\]",
        ),
        (lambda P: lk.page(0.0), r"q must be in \(0, 1\]"),
        (lambda P: lk.page(1.5), r"q must be in \(0, 1\]"),
        (lambda P: lk.mvr(0.0), r"b must be in \(0, 1\]"),
        (lambda P: lk.mvr(-1), r"b must be in \(0, 1\]"),
        (lambda P: lk.run("rac_lora", P, 5, rank=1, gamma=0.0), r"gamma must be in \(0, inf\]"),
        (lambda P: lk.run("rac_lora", P, 5, rank=1, gamma=-1.0), r"gamma must be in"),
        (lambda P: lk.run("rac_lora", P, 0, rank=1, gamma=0.1), r"steps must be"),
        (
            lambda P: lk.run("lora", P, 5, rank=1, gamma=0.1, update="projected"),
            "one frozen factor",
        ),
        (lambda P: lk.run("nope", P, 5, rank=1, gamma=0.1), "method must be one of"),
        (lambda P: lk.run("rac_lora", P, 5, rank=1, gamma=0.1, side="up"), "side must be one of"),
        (
            lambda P: lk.run("rac_lora", P, 5, rank=1, gamma=0.1, update="adam"),
            "update must be one of",
        ),
        (
            lambda P: lk.run(
                "rac_lora", P, 5, rank=1, gamma=0.1, sketch=lk.sketches.fixed(torch.ones(4, 1))
            ),
            "shape",
        ),
        (
            lambda P: lk.run("rac_lora", P, 5, rank=1, gamma=0.1, estimator=lk.sgd()),
            "not a finite sum",
        ),
        (lambda P: lk.sgd(sigma=-1.0), "sigma must be"),
        (lambda P: lk.run("rac_lora", P, 5, rank=1, gamma="polyak", update="sgd"), "W-space"),
    ],
)
def test_bad_input_is_rejected_with_the_argument_and_range(call, match):
    with pytest.raises(ValueError, match=match):
        call(pb.counterexample())


def test_sgd_with_a_minibatch_and_noise_is_the_minibatch_gradient_plus_the_noise():
    """sgd(sigma=σ, batch_size=b): ∇f_idx(W) + ξ with idx from the ``data`` stream and ξ from
    ``noise``, each stream drawn as the one-part oracles draw it."""
    from lorakit.rng import Streams

    problem = pb.linear_regression(6, 5, n_pretrain=50, n_finetune=40)
    W = problem.W0 + 0.1
    both = lk.sgd(sigma=0.7, batch_size=8).bind(problem).update(problem, W, None, Streams(3)).G
    rows = lk.sgd(batch_size=8).bind(problem).update(problem, W, None, Streams(3)).G
    noisy = lk.sgd(sigma=0.7).bind(problem).update(problem, W, None, Streams(3)).G
    torch.testing.assert_close(both, rows + (noisy - problem.grad(W)), rtol=0, atol=1e-12)
    assert not torch.allclose(both, rows)


def test_minibatch_larger_than_the_data_is_rejected():
    problem = pb.linear_regression(4, 4, n_pretrain=100, n_finetune=20)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 20\]"):
        lk.run("rac_lora", problem, 3, rank=1, gamma=0.01, estimator=lk.sgd(batch_size=50))


def test_mismatched_problem_shapes_are_rejected():
    with pytest.raises(ValueError, match="W0 must have shape"):
        pb.quadratic(3, 4, W0=torch.zeros(4, 3, dtype=torch.float64))


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA; CPU runs the same code above"
)
def test_cuda_run_matches_cpu():
    cpu = pb.quadratic(6, 6, seed=0)
    gpu = pb.quadratic(6, 6, seed=0, device="cuda")
    a = lk.run("bernoulli_lora", cpu, 20, rank=2, gamma=0.5)
    b = lk.run("bernoulli_lora", gpu, 20, rank=2, gamma=0.5)
    np.testing.assert_allclose(a.loss.to_numpy(), b.loss.to_numpy(), rtol=1e-10)


def test_random_reshuffling_visits_every_component_once_per_epoch():
    """Over one epoch at a fixed W the RR gradients average to ∇f(W) exactly (RAC-LoRA eq. (7))."""
    problem = pb.heterogeneous_quadratics(5, 3, 4, spread=1.0, seed=0)
    est, streams = lk.rr().bind(problem), lk.Streams(0)
    W = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    state, grads = None, []
    for _ in range(2 * problem.n_samples):
        e = est.update(problem, W, state, streams)
        state = e.state
        grads.append(e.G)
    for epoch in (grads[:5], grads[5:]):
        torch.testing.assert_close(torch.stack(epoch).mean(0), problem.grad(W), atol=1e-12, rtol=0)
    assert not torch.equal(grads[0], grads[5]) or not torch.equal(grads[1], grads[6])
    with pytest.raises(ValueError, match="not a finite sum"):
        lk.rr().bind(pb.quadratic(2, 2))
