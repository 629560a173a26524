import numpy as np
import pytest
import torch

from lorakit.compressors import Payload
from lorakit.lowrank import LowRank, cur, paper_row_id, pca, qrcp, qrcp_paper_formula


def _rand(m, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=torch.float64)


def _low_rank_plus_noise(m, n, r, noise, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, r, generator=g, dtype=torch.float64)
    B = torch.randn(r, n, generator=g, dtype=torch.float64)
    return A @ B + noise * torch.randn(m, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(7, 5), (5, 7), (6, 6)])
def test_exact_at_full_rank(shape):
    X = _rand(*shape)
    k = min(shape)
    g = torch.Generator().manual_seed(1)
    results = [
        pca(X, k),
        pca(X, k, center=True),
        qrcp(X, k),
        cur(X, k, select="qrcp"),
        paper_row_id(X, k, generator=g),
    ]
    for a in results:  # min(m, n) generic columns/rows span everything
        assert a.rel_error < 1e-10, a.method
        torch.testing.assert_close(a.approx, X, rtol=0, atol=1e-10)
        assert a.approx.dtype == X.dtype and a.approx.shape == X.shape


def test_pca_eckart_young():
    X = _rand(9, 6, seed=3)
    s = torch.linalg.svdvals(X)
    for k in range(1, 7):
        a = pca(X, k)
        ey = float(torch.sqrt((s[k:] ** 2).sum()) / torch.linalg.norm(X))
        assert abs(a.rel_error - ey) < 1e-12
        err = float(torch.linalg.norm(X - a.approx) / torch.linalg.norm(X))
        assert abs(err - ey) < 1e-12
        assert a.floats_sent == k * (9 + 6)


def test_pca_energy_picks_smallest_k():
    X = _rand(10, 8, seed=4)
    s2 = torch.linalg.svdvals(X) ** 2
    cum = torch.cumsum(s2, 0) / s2.sum()
    for energy in [0.1, 0.5, 0.9, 0.99, 1.0]:
        k = pca(X, energy=energy).rank
        assert cum[k - 1] >= energy - 1e-12
        if k > 1:
            assert cum[k - 2] < energy
    assert pca(X, energy=1.0).rank == 8


def test_cur_all_columns_and_rows_is_exact():
    X = _rand(7, 5, seed=5)
    for select in ("leverage", "qrcp"):
        a = cur(X, 5, n_cols=5, n_rows=7, select=select, generator=torch.Generator().manual_seed(0))
        assert a.rel_error < 1e-10
        C, U, R = a.factors
        assert C.shape == (7, 5) and U.shape == (5, 7) and R.shape == (7, 5)


def test_qrcp_properties_and_paper_formula_fails():
    # Rows of very different norms so the pivots are far from the identity.
    X = (
        _rand(6, 8, seed=6)
        * torch.tensor([1.0, 10.0, 0.1, 5.0, 2.0, 30.0], dtype=torch.float64)[:, None]
    )
    full = qrcp(X, 6)
    torch.testing.assert_close(full.approx, X, rtol=0, atol=1e-10)
    assert qrcp_paper_formula(X, 6).rel_error > 0.5  # P^T X ≠ X
    # Rank-k error equals ‖R_22‖_F of X^T P = Q R.
    import scipy.linalg

    _, R, _ = scipy.linalg.qr(X.numpy().T, mode="economic", pivoting=True)
    for k in (2, 4):
        a = qrcp(X, k)
        r22 = np.linalg.norm(R[k:, k:]) / np.linalg.norm(X.numpy())
        assert abs(a.rel_error - r22) < 1e-12
        assert a.rel_error <= qrcp_paper_formula(X, k).rel_error
        assert a.rel_error >= pca(X, k).rel_error - 1e-12


def test_leverage_cur_close_to_pca_on_low_rank_plus_noise():
    # Tolerance: CUR error within 3x of the optimal (PCA) rank-4 error on rank-4 signal + 1e-3
    # noise. Leverage sampling oversamples to |J| = |I| = 2k (with exactly k it can be ~20x worse);
    # QRCP-pivot CUR uses exactly k.
    X = _low_rank_plus_noise(60, 40, 4, 1e-3, seed=7)
    best = pca(X, 4).rel_error
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        a = cur(X, 4, n_cols=8, n_rows=8, select="leverage", generator=g)
        assert best <= a.rel_error <= 3 * best
    assert cur(X, 4, select="qrcp").rel_error <= 3 * best
    a = paper_row_id(X, 4, generator=torch.Generator().manual_seed(0))
    assert "as in the paper" in a.method and a.rel_error >= best - 1e-12


def test_paper_row_id_reproduces_sampled_rows_and_normal_equations():
    X = _rand(12, 9, seed=8)
    a = paper_row_id(X, 3, generator=torch.Generator().manual_seed(2))
    Z, R = a.factors
    assert Z.shape == (12, 3) and R.shape == (3, 9)
    torch.testing.assert_close(
        (X - a.approx) @ R.T, torch.zeros(12, 3, dtype=X.dtype), atol=1e-10, rtol=0
    )


def test_float32_and_dtype_kept():
    X = _rand(8, 6).float()
    a = qrcp(X, 3)
    assert a.approx.dtype == torch.float32 and all(f.dtype == torch.float32 for f in a.factors)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda X: pca(X, 0), "rank"),
        (lambda X: pca(X, 6), "rank"),
        (lambda X: qrcp(X, -1), "rank"),
        (lambda X: cur(X, 6), "rank"),
        (lambda X: paper_row_id(X, 0), "rank"),
        (lambda X: pca(X, energy=0.0), "energy"),
        (lambda X: pca(X, energy=1.5), "energy"),
        (lambda X: cur(X, 2, select="random"), "select"),
        (lambda X: cur(X, 2, n_cols=9), "n_cols"),
        (lambda X: LowRank("svd", 2), "method"),
        (lambda X: LowRank("pca", 0), "rank"),
    ],
)
def test_bad_arguments(call, name):
    with pytest.raises(ValueError, match=name):
        call(_rand(7, 5))


def test_payload_sizes():
    m, n, k = 30, 20, 4
    assert LowRank("pca", k).payload_shape(m, n) == Payload(k * (m + n), 0)
    assert LowRank("qrcp", k).payload_shape(m, n) == Payload(k * (m + n), 0)
    assert LowRank("paper_row_id", k).payload_shape(m, n) == Payload(k * (m + n), 0)
    assert LowRank("cur", k).payload_shape(m, n) == Payload(k * m + k * n + k * k, 0)
    assert LowRank("pca", k, shape=(m, n)).payload(m * n) == Payload(k * (m + n), 0)
    with pytest.raises(ValueError, match="shape"):
        LowRank("pca", k).payload(m * n)
    with pytest.raises(ValueError, match="d must"):
        LowRank("pca", k, shape=(m, n)).payload(7)
    # The payload matches the factors each method actually returns.
    X = _rand(m, n)
    g = torch.Generator().manual_seed(0)
    for method, fn in [("pca", pca), ("qrcp", qrcp)]:
        assert fn(X, k).floats_sent == LowRank(method, k).payload_shape(m, n).floats
    assert cur(X, k, generator=g).floats_sent == LowRank("cur", k).payload_shape(m, n).floats
    assert paper_row_id(X, k, generator=g).floats_sent == k * (m + n)


def test_compressor_batch_and_contraction():
    M, m, n, k = 4, 10, 6, 2
    X = torch.randn(M, m, n, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    for method in ("pca", "qrcp", "cur", "paper_row_id"):
        C = LowRank(method, k, shape=(m, n))
        assert not C.unbiased
        out = C(X, torch.Generator().manual_seed(1), batch_dims=1)
        assert out.shape == X.shape
        if method in ("pca", "qrcp"):  # deterministic: same as one call per message
            fn = pca if method == "pca" else qrcp
            for i in range(M):
                torch.testing.assert_close(out[i], fn(X[i], k).approx)
        if C.contractive and method != "paper_row_id":  # deterministic β
            beta = C.beta(m * n)
            err = ((out - X) ** 2).sum(dim=(1, 2))
            assert torch.all(err <= (1 - beta) * (X**2).sum(dim=(1, 2)) + 1e-12)
    assert LowRank("pca", k).beta_shape(m, n) == k / n
    assert not LowRank("cur", k).contractive
    # 1-D message → (d, 1); rank 1 is exact for PCA.
    v = torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(LowRank("pca", 1)(v, batch_dims=1), v)
