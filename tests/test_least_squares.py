"""The one-pass least-squares gradient (lorakit.problems.least_squares) against torch's two
matrix-vector products, on the data it is used for and on the cases where it must not be used."""

import math
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from lorakit import problems as pb
from lorakit.problems import least_squares as ls

M = N = 64  # Bernoulli-LoRA §7.1's size: D is 1,000 × 4,096 float64, above MIN_ENTRIES


@pytest.fixture(scope="module")
def problem():
    return pb.linear_regression(M, N, n_pretrain=200, n_finetune=1000, seed=3)


@pytest.fixture(scope="module")
def p32():
    """The same problem with its features rounded to float32 values."""
    return pb.linear_regression(
        M, N, n_pretrain=200, n_finetune=1000, seed=3, data_dtype=torch.float32
    )


def two_products(p, W):
    x = W.reshape(-1)
    g = (x @ p.D.T - p.b) @ p.D / p.D.shape[0] + p.reg * 2 * x / (1 + x.square()).square()
    return g.reshape(W.shape)


def two_products_loss(p, W):
    x = W.reshape(-1)
    return 0.5 * (x @ p.D.T - p.b).square().mean() + p.reg * (x.square() / (1 + x.square())).sum()


def test_the_regression_loss_reads_d_once_and_agrees_to_rounding(problem, p32):
    W = problem.W0 + 0.1 * torch.randn(
        M, N, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    x = W.reshape(-1)
    for rows in (1000, 998):  # blocks of four rows, and two rows left after them
        D, b = problem.D[:rows], problem.b[:rows]
        r = ls.residuals(D, x, b)
        assert torch.allclose(r, x @ D.T - b, rtol=0, atol=1e-12 * r.abs().max().item())
    ref = two_products_loss(problem, W)
    assert problem.loss(W).item() == pytest.approx(ref.item(), rel=1e-13)
    assert ls.residuals(ls.storage(p32.D), x, p32.b).equal(ls.residuals(p32.D, x, p32.b))
    assert p32.loss(W).item() == pytest.approx(two_products_loss(p32, W).item(), rel=1e-13)


def test_the_regression_gradient_takes_the_one_pass_kernel_and_agrees_to_rounding(problem):
    W = problem.W0 + 0.1 * torch.randn(
        M, N, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    assert ls.supports(problem.D, W.reshape(-1))
    g, ref = problem.grad(W), two_products(problem, W)
    # 1,000 products of terms up to ~1e2 summed in another order: float64 rounding, ~1e-14 here.
    assert torch.allclose(g, ref, rtol=0, atol=1e-11 * ref.abs().max().item())
    assert problem.grad(W).equal(g)  # deterministic


def test_the_pass_gives_the_same_bits_on_any_number_of_threads(p32):
    # The rows are cut into a fixed number of blocks whose partial sums are added in block order,
    # so torch's thread count (which bounds the pass's) changes the speed, never the numbers.
    W = p32.W0 + 0.1 * torch.randn(
        M, N, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    threads = torch.get_num_threads()
    try:
        runs = []
        for k in (1, 2, 1):
            torch.set_num_threads(k)
            runs.append((p32.grad(W), p32.loss(W), p32.grad(W, torch.arange(0, 1000, 3))))
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        assert all(a.equal(b) for a, b in zip(runs[0], run, strict=True))


@pytest.mark.parametrize("rows", [1, 3, 5, 17, 1001])
def test_every_row_is_summed_once_whatever_the_block_sizes(problem, rows):
    # Fewer rows than blocks of four (empty blocks), a remainder after the last four, and more.
    gen = torch.Generator().manual_seed(rows)
    D = torch.randn(rows, 64, dtype=torch.float64, generator=gen)
    x, b = (
        torch.randn(64, dtype=torch.float64, generator=gen),
        torch.randn(rows, dtype=torch.float64, generator=gen),
    )
    r = x @ D.T - b
    assert torch.allclose(ls.residuals(D, x, b), r, rtol=0, atol=1e-13 * r.abs().max().item())
    g = r @ D
    assert torch.allclose(ls.normal_grad(D, x, b), g, rtol=0, atol=1e-13 * g.abs().max().item())


def test_non_finite_iterates_stay_non_finite(problem):
    # The loop may reassociate sums but keeps IEEE inf/NaN: the divergence guard needs them.
    W = problem.W0.clone()
    W[3, 5] = math.inf
    assert not torch.isfinite(problem.grad(W)).all()
    W[3, 5] = math.nan
    assert torch.isnan(problem.grad(W)).any()


def test_where_the_kernel_applies(problem):
    x = problem.W0.reshape(-1)
    assert not ls.supports(problem.D.float(), x.float())  # float32
    assert not ls.supports(problem.D, torch.stack([x, x]))  # a batch of points
    assert not ls.supports(problem.D[:10], x)  # small enough for the caches
    assert not ls.supports(problem.D.T.contiguous().T, x)  # not row-major
    with torch.enable_grad():
        assert not ls.supports(problem.D, x.clone().requires_grad_())  # autograd needs a graph
    small = pb.linear_regression(8, 8, n_finetune=100)
    assert not ls.supports(small.D, small.W0.reshape(-1))
    # A large minibatch takes the kernel too: 334 rows, so the loop's last 334 % 4 = 2 rows are
    # the ones it takes one at a time after its blocks of four.
    idx = torch.arange(0, 1000, 3)
    x, D, b = problem.W0.reshape(-1), problem.D[idx], problem.b[idx]
    assert ls.supports(D, x) and len(idx) % 4 == 2
    g = problem.grad(problem.W0, idx)
    ref = ((x @ D.T - b) @ D / len(idx) + problem.reg * 2 * x / (1 + x.square()).square()).reshape(
        M, N
    )
    assert torch.allclose(g, ref, rtol=0, atol=1e-11 * ref.abs().max().item())


@pytest.mark.parametrize("threads", [1, 2])  # the serial pass, and the threaded one
def test_concurrent_callers_get_their_own_sums(problem, threads):
    xs = [
        torch.randn(M * N, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
        for s in range(6)
    ]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with ThreadPoolExecutor(3) as pool:
            got = list(pool.map(lambda x: ls.normal_grad(problem.D, x, problem.b), xs))
    finally:
        torch.set_num_threads(before)
    for x, g in zip(xs, got, strict=True):
        ref = (x @ problem.D.T - problem.b) @ problem.D
        assert torch.allclose(g, ref, rtol=0, atol=1e-11 * ref.abs().max().item())


def test_float32_data_are_read_in_float32_with_the_same_float64_sum(problem, p32, monkeypatch):
    # The rounding is to the nearest float32: a relative change of at most 2⁻²⁴ per entry.
    assert p32.D.dtype == torch.float64
    assert ((p32.D - problem.D).abs() <= 2**-24 * problem.D.abs()).all()
    assert (p32.D != problem.D).any()
    D = ls.storage(p32.D)
    assert D.dtype == torch.float32 and D.double().equal(p32.D)
    assert ls.storage(problem.D) is problem.D  # float64 values are never rounded
    assert ls.storage(p32.D[:10]).dtype == torch.float64  # small: read as it is
    read = []  # the dtype of the D that the problem's loss and gradient hand to the kernel
    for name in ("normal_grad", "residuals"):
        kernel = getattr(ls, name)
        monkeypatch.setattr(ls, name, lambda D, *a, k=kernel: read.append(D.dtype) or k(D, *a))
    p32.loss(p32.W0), p32.grad(p32.W0), problem.grad(problem.W0)
    assert read == [torch.float32, torch.float32, torch.float64]
    monkeypatch.undo()
    x, b = p32.W0.reshape(-1), p32.b
    # Widening float32 → float64 is exact: the same products, summed in the same order.
    assert ls.normal_grad(D, x, b).equal(ls.normal_grad(p32.D, x, b))
    ref = two_products(p32, p32.W0)
    assert torch.allclose(p32.grad(p32.W0), ref, rtol=0, atol=1e-11 * ref.abs().max().item())
    idx = torch.arange(0, 1000, 3)  # a minibatch reads its rows of the float32 copy
    ref = (x @ p32.D[idx].T - b[idx]) @ p32.D[idx] / len(idx)
    ref = (ref + p32.reg * 2 * x / (1 + x.square()).square()).reshape(M, N)
    assert torch.allclose(p32.grad(p32.W0, idx), ref, rtol=0, atol=1e-11 * ref.abs().max().item())


def test_data_dtype_names_its_allowed_values():
    with pytest.raises(ValueError, match=r"data_dtype must be one of \['torch.float32', 'torch.float64'\]"):  # fmt: skip
        pb.linear_regression(4, 4, data_dtype=torch.float16)
