"""The one-pass least-squares gradient (lorakit.problems.least_squares) against torch's two
matrix-vector products, on the data it is used for and on the cases where it must not be used."""

import math
import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from lorakit import problems as pb
from lorakit.problems import least_squares as ls

M = N = 64  # Bernoulli-LoRA §7.1's size: D is 1,000 × 4,096 float64, above MIN_ENTRIES


@pytest.fixture(scope="module")
def problem():
    return pb.linear_regression(M, N, n_pretrain=200, n_finetune=1000, seed=3)


def two_products(p, W):
    x = W.reshape(-1)
    g = (x @ p.D.T - p.b) @ p.D / p.D.shape[0] + p.reg * 2 * x / (1 + x.square()).square()
    return g.reshape(W.shape)


def test_the_regression_gradient_takes_the_one_pass_kernel_and_agrees_to_rounding(problem):
    W = problem.W0 + 0.1 * torch.randn(
        M, N, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    assert ls.supports(problem.D, W.reshape(-1))
    g, ref = problem.grad(W), two_products(problem, W)
    # 1,000 products of terms up to ~1e2 summed in another order: float64 rounding, ~1e-14 here.
    assert torch.allclose(g, ref, rtol=0, atol=1e-11 * ref.abs().max().item())
    assert problem.grad(W).equal(g)  # deterministic for a given thread count


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_row_counted_once_whatever_the_thread_count(problem, threads):
    D, b = problem.D, problem.b
    x = torch.randn(M * N, dtype=torch.float64, generator=torch.Generator().manual_seed(threads))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = ls.normal_grad(D, x, b)
    finally:
        torch.set_num_threads(before)
    ref = (x @ D.T - b) @ D
    assert torch.allclose(g, ref, rtol=0, atol=1e-11 * ref.abs().max().item())


def test_non_finite_iterates_stay_non_finite(problem):
    # The loop may reassociate sums but keeps IEEE inf/NaN: the divergence guard needs them.
    W = problem.W0.clone()
    W[3, 5] = math.inf
    assert not torch.isfinite(problem.grad(W)).all()
    W[3, 5] = math.nan
    assert torch.isnan(problem.grad(W)).any()


def test_the_torch_path_where_the_kernel_does_not_apply(problem):
    x = problem.W0.reshape(-1)
    assert not ls.supports(problem.D.float(), x.float())  # float32
    assert not ls.supports(problem.D, torch.stack([x, x]))  # a batch of points
    assert not ls.supports(problem.D[:10], x)  # small enough for the caches
    assert not ls.supports(problem.D.T.contiguous().T, x)  # not row-major
    with torch.enable_grad():
        assert not ls.supports(problem.D, x.clone().requires_grad_())  # autograd needs a graph
    small = pb.linear_regression(8, 8, n_finetune=100)
    assert not ls.supports(small.D, small.W0.reshape(-1))
    # A minibatch gathers rows and so takes the kernel only when it is large; either way the same.
    idx = torch.arange(0, 1000, 3)
    g = problem.grad(problem.W0, idx)
    x, D, b = problem.W0.reshape(-1), problem.D[idx], problem.b[idx]
    ref = ((x @ D.T - b) @ D / len(idx) + problem.reg * 2 * x / (1 + x.square()).square()).reshape(
        M, N
    )
    assert torch.allclose(g, ref, rtol=0, atol=1e-11 * ref.abs().max().item())


def test_concurrent_callers_get_their_own_sums(problem):
    xs = [
        torch.randn(M * N, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
        for s in range(6)
    ]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda x: ls.normal_grad(problem.D, x, problem.b), xs))
    for x, g in zip(xs, got, strict=True):
        ref = (x @ problem.D.T - problem.b) @ problem.D
        assert torch.allclose(g, ref, rtol=0, atol=1e-11 * ref.abs().max().item())


def _grad_norm(p):
    return float(p.grad(p.W0).norm())


def test_a_forked_process_starts_its_own_threads(problem):
    expected = _grad_norm(problem)  # creates this process's pool before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_grad_norm, (problem,)) == pytest.approx(expected, rel=1e-12)
