"""Projectors and sketch distributions (RAC-LoRA §5 items 1–3; Bernoulli-LoRA App. D, §6 items 1–2)."""

import math

import pytest
import torch

from lorakit import sketches as sk
from lorakit.rng import Streams

FAMILIES = [
    sk.gaussian(),
    sk.gaussian(scale=0.01),
    sk.haar(),
    sk.coordinate(),
    sk.kaiming_uniform(),
]


@pytest.mark.parametrize("side", ["left", "right"])
def test_projector_is_an_orthogonal_projector_onto_the_sketch(side, gen):
    shape = (7, 3) if side == "left" else (3, 9)
    X = torch.randn(*shape, generator=gen, dtype=torch.float64)
    H = sk.projector(X, side)
    d = shape[0] if side == "left" else shape[1]
    assert H.shape == (d, d)
    torch.testing.assert_close(H @ H, H, atol=1e-12, rtol=0)
    torch.testing.assert_close(H, H.T, atol=1e-12, rtol=0)
    assert float(torch.trace(H)) == pytest.approx(3, abs=1e-12)
    # H fixes the sketch: H_B B = B, A H_A = A.
    torch.testing.assert_close(H @ X if side == "left" else X @ H, X, atol=1e-12, rtol=0)
    # The closed form B(BᵀB)⁻¹Bᵀ, written independently.
    Xc = X if side == "left" else X.T
    torch.testing.assert_close(H, Xc @ torch.linalg.inv(Xc.T @ Xc) @ Xc.T, atol=1e-12, rtol=0)


def test_projector_is_scale_invariant_and_handles_rank_deficiency(gen):
    B = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(sk.projector(B), sk.projector(1e-3 * B), atol=1e-12, rtol=0)
    assert sk.projector(torch.zeros(6, 2, dtype=torch.float64)).abs().max() == 0  # pinv(0) = 0
    # Two equal columns: rank 1, so H is the rank-1 projector bbᵀ/‖b‖².
    b = B[:, :1]
    H = sk.projector(torch.cat([b, b], dim=1))
    torch.testing.assert_close(H, b @ b.T / (b.T @ b), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        sk.gram_pinv(torch.cat([b, b], 1)),
        torch.linalg.pinv(torch.cat([b, b], 1).T @ torch.cat([b, b], 1)),
        atol=1e-12,
        rtol=0,
    )


def test_project_matches_the_explicit_projector(gen):
    B = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    A = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    G = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(sk.project(B, G, "left"), sk.projector(B, "left") @ G)
    torch.testing.assert_close(sk.project(A, G, "right"), G @ sk.projector(A, "right"))


@pytest.mark.parametrize("family", FAMILIES, ids=str)
@pytest.mark.parametrize("side", ["left", "right"])
def test_expected_projector_is_r_over_d_identity(family, side):
    """E[H_B] = (r/m) I and E[H_A] = (r/n) I (Bernoulli-LoRA Lemmas 3, 6, 7; RAC-LoRA Remark 5.1).

    Entries of a projector lie in [−1, 1], so each entry of the mean of K projectors has standard
    error at most 1/√K; 6/√K is six standard errors for every entry.
    """
    m, n, r, K = 8, 12, 2, 8000
    shape = (m, r) if side == "left" else (r, n)
    d = m if side == "left" else n
    X = family.sample(shape, Streams(0)["sketch"], side=side, batch=(K,))
    assert X.shape == (K, *shape)
    EH = sk.projector(X, side).mean(0)
    assert (EH - (r / d) * torch.eye(d, dtype=EH.dtype)).abs().max() < 6 / math.sqrt(K)
    traces = torch.diagonal(sk.projector(X, side), dim1=-2, dim2=-1).sum(-1)
    torch.testing.assert_close(traces, torch.full((K,), float(r), dtype=traces.dtype))


def test_coordinate_sketch_projects_onto_the_chosen_coordinates():
    B = sk.coordinate().sample((6, 3), Streams(5)["sketch"])
    H = sk.projector(B)
    chosen = B.sum(1)
    assert sorted(chosen.tolist()) == [0, 0, 0, 1, 1, 1]
    torch.testing.assert_close(H, torch.diag(chosen))


def test_nonuniform_coordinate_has_the_requested_marginals():
    """E[H] = diag(π) and exactly r distinct coordinates per draw (systematic sampling)."""
    pi = [0.9, 0.5, 0.3, 0.2, 0.1]  # sums to r = 2
    family = sk.nonuniform_coordinate(pi)
    K = 20000
    X = family.sample((5, 2), Streams(1)["sketch"], batch=(K,))
    assert bool((X.sum(-2) == 1).all()) and bool((X.sum(-1).amax(-1) <= 1).all())
    freq = X.sum(-1).mean(0)
    se = torch.sqrt(torch.tensor(pi) * (1 - torch.tensor(pi)) / K)
    assert bool(((freq - torch.tensor(pi, dtype=freq.dtype)).abs() <= 5 * se + 1e-12).all())
    with pytest.raises(ValueError, match="sum to the rank"):
        sk.nonuniform_coordinate([0.5, 0.3])
    with pytest.raises(ValueError, match="marginals"):
        sk.nonuniform_coordinate([1.5, 0.5])


def test_kaiming_uniform_bound_matches_torch_init():
    """peft initialises lora_A with kaiming_uniform_(a=√5): bound 1/√fan_in for an (r, n) weight."""
    A = sk.kaiming_uniform().sample((4, 50), Streams(0)["sketch"], side="right", batch=(200,))
    ref = torch.empty(4, 50)
    torch.nn.init.kaiming_uniform_(ref, a=math.sqrt(5))
    bound = 1 / math.sqrt(50)
    assert float(A.abs().max()) <= bound and float(A.abs().max()) > 0.99 * bound
    assert float(ref.abs().max()) <= bound + 1e-7


def test_fixed_and_custom_sketches():
    M = torch.arange(6.0, dtype=torch.float64).reshape(3, 2)
    torch.testing.assert_close(sk.fixed(M).sample((3, 2)), M)
    torch.testing.assert_close(sk.fixed(M.T).sample((2, 3), side="right"), M.T)
    with pytest.raises(ValueError, match="fixed sketch matrix"):
        sk.fixed(M).sample((4, 2))

    def sampler(shape, generator):
        return torch.ones(shape)

    torch.testing.assert_close(
        sk.custom(sampler).sample((2, 5), side="right"), torch.ones(2, 5, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="shape"):
        sk.custom(lambda shape, g: torch.ones(3, 3)).sample((4, 2))
    with pytest.raises(ValueError, match="sketch must be one of"):
        sk.make_sketch("gausian")
    with pytest.raises(ValueError, match="scale"):
        sk.gaussian(scale=0)


# -- the basis is orthonormal to working precision (issue 11 §3) ----------------------------------
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("side,shape", [("left", (64, 64)), ("right", (64, 64)), ("left", (64, 60)),
                                        ("right", (60, 64))])  # fmt: skip
def test_basis_is_orthonormal_near_full_rank(dtype, side, shape):
    """A Gaussian sketch at (or near) r = d keeps every column, QᵀQ = I within 2·eps·r, and
    H = QQᵀ is symmetric, idempotent and fixes the sketch within 2·eps·d (relative to the sketch's
    size). Measured over seeds 0–19: at most 0.33·eps·r and 0.19·eps·d; the former Gram-matrix
    eigen-decomposition kept 63 of 64 columns in float32 with |QᵀQ − I| = 2e-3."""
    eps = torch.finfo(dtype).eps
    for seed in range(5):
        X = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
        Q = sk.orthonormal_basis(X, side)
        r = min(shape)
        assert Q.shape[-1] == r and Q.dtype == dtype
        assert int((Q.abs().amax(-2) > 0).sum()) == r  # no column dropped
        assert (Q.T @ Q - torch.eye(r, dtype=dtype)).abs().max() <= 2 * eps * r
        H = sk.projector(X, side)
        d = H.shape[0]
        assert (H @ H - H).abs().max() <= 2 * eps * d
        assert (H - H.T).abs().max() <= 2 * eps * d
        Xc = X if side == "left" else X.T
        assert (H @ Xc - Xc).abs().max() <= 2 * eps * d * Xc.abs().max()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ill_conditioned_full_rank_sketch_keeps_its_rank(dtype):
    """Singular values 1 … 1e-4 (condition 1e4, so the Gram matrix's 1e8 is past float32's 1/eps):
    all 4 columns kept, QᵀQ = I within 2·eps·r, and H fixes the sketch within 10·eps·d·max|X|."""
    eps, gen = torch.finfo(dtype).eps, torch.Generator().manual_seed(3)
    U = torch.linalg.qr(torch.randn(20, 4, generator=gen, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64)).Q
    X = (U * torch.tensor([1.0, 1e-2, 1e-3, 1e-4], dtype=torch.float64) @ V.T).to(dtype)
    Q = sk.orthonormal_basis(X)
    assert int((Q.abs().amax(-2) > 0).sum()) == 4
    assert (Q.T @ Q - torch.eye(4, dtype=dtype)).abs().max() <= 2 * eps * 4
    assert (sk.projector(X) @ X - X).abs().max() <= 10 * eps * 20 * X.abs().max()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rank", [0, 1, 3])
def test_rank_deficient_sketch_gives_the_projector_of_its_rank(dtype, rank):
    """B = U Vᵀ of rank k in R^{10×5}: trace H = k, exactly k non-zero basis columns, H is the
    projector onto col(U) (within 10·eps·d), and (BᵀB)^† matches a float64 pinv of the Gram (within
    1e-3 of its largest entry in float32, 1e-8 in float64)."""
    eps, gen = torch.finfo(dtype).eps, torch.Generator().manual_seed(rank)
    U = torch.randn(10, rank, generator=gen, dtype=torch.float64)
    B = (U @ torch.randn(rank, 5, generator=gen, dtype=torch.float64)).to(dtype)
    Q = sk.orthonormal_basis(B)
    assert int((Q.abs().amax(-2) > 0).sum()) == rank
    H = sk.projector(B)
    assert float(torch.trace(H)) == pytest.approx(rank, abs=100 * eps)
    Uq = torch.linalg.qr(U).Q.to(dtype)
    assert (H - Uq @ Uq.T).abs().max() <= 10 * eps * 10
    if rank:
        # Reference: float64 pinv of the Gram, cut at 1e-6·λ_max (B's rounding to ``dtype``
        # leaves eigenvalues ~ (eps·‖B‖)², which the cut removes; the true ones are ≥ 1e-2·λ_max).
        Bd = B.double()
        expected = torch.linalg.pinv(Bd.T @ Bd, hermitian=True, rtol=1e-6)
        rtol = 1e-3 if dtype == torch.float32 else 1e-8
        scale = expected.abs().max()
        assert (sk.gram_pinv(B).double() - expected).abs().max() <= rtol * scale


def test_batched_basis_equals_one_at_a_time(gen):
    X = torch.randn(7, 9, 3, generator=gen, dtype=torch.float64)
    X[2] = 0.0  # a zero sketch inside the batch: H = 0 there
    for side, Xs in (("left", X), ("right", X.mT)):
        H = sk.projector(Xs, side)
        for k in range(7):
            torch.testing.assert_close(H[k], sk.projector(Xs[k], side), atol=1e-14, rtol=0)
        assert H[2].abs().max() == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("side", ["left", "right"])
def test_cholesky_basis_is_certified_and_spans_the_sketch(dtype, side):
    """A batch of Gaussian 64×4 sketches passes the certificate (QᵀQ = I within 2·eps·r), and QQᵀ
    equals the SVD projector within 8·eps·r, as orthonormal_basis's does."""
    eps, r = torch.finfo(dtype).eps, 4
    gen = torch.Generator().manual_seed(7)
    X = torch.randn(50, 64, r, generator=gen, dtype=dtype)
    X = X if side == "left" else X.mT
    Q, gram, ok = sk.cholesky_basis(X, side)
    assert bool(ok.all())
    assert (gram - torch.eye(r, dtype=dtype)).abs().max() <= 2 * eps * r
    U = torch.linalg.svd(X if side == "left" else X.mT, full_matrices=False).U
    assert (Q @ Q.mT - U @ U.mT).abs().max() <= 8 * eps * r
    Qo = sk.orthonormal_basis(X, side)
    assert (Qo @ Qo.mT - U @ U.mT).abs().max() <= 8 * eps * r


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_uncertified_draws_take_the_svd_basis(dtype):
    """In a batch, a rank-1 draw fails both certificates (Cholesky's and the QR's) and gets the
    SVD's basis (one non-zero column), a Gaussian draw passes both, and a condition-1e4 draw gets
    either, with the SVD basis's guarantees: QᵀQ = I within 2·eps·r and H fixes the sketch within
    10·eps·d·max|X|."""
    eps, gen = torch.finfo(dtype).eps, torch.Generator().manual_seed(5)
    U = torch.linalg.qr(torch.randn(20, 4, generator=gen, dtype=torch.float64)).Q
    ill = U * torch.tensor([1.0, 1e-2, 1e-3, 1e-4], dtype=torch.float64)
    rank1 = torch.randn(20, 1, generator=gen, dtype=torch.float64) * torch.ones(1, 4)
    good = torch.randn(20, 4, generator=gen, dtype=torch.float64)
    X = torch.stack([rank1, ill, good]).to(dtype)
    _, _, ok = sk.cholesky_basis(X)
    assert not bool(ok[0]) and bool(ok[2])
    Q = sk.orthonormal_basis(X)
    assert int((Q[0].abs().amax(-2) > 0).sum()) == 1
    for k in (1, 2):
        assert (Q[k].T @ Q[k] - torch.eye(4, dtype=dtype)).abs().max() <= 2 * eps * 4
        H = Q[k] @ Q[k].T
        assert (H @ X[k] - X[k]).abs().max() <= 10 * eps * 20 * X[k].abs().max()
    assert torch.equal(Q[2], torch.linalg.qr(X[2]).Q)  # the Gaussian draw keeps its QR basis


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_one_sketch_is_certified_as_a_batch_would_be(dtype):
    """One sketch of rank ≤ 8 has its QR certificate ‖R‖_F·‖R⁻¹‖_F·d·eps < 1 checked in Python
    floats, a batch with torch: the QR basis is kept exactly when a float64 reference of the
    certificate (torch.linalg.cond) passes, and one sketch gets the basis its batch of one gets.
    Conditions a factor of ten or more either side of 1/(d·eps), singular and non-finite R too."""
    eps, gen, d = torch.finfo(dtype).eps, torch.Generator().manual_seed(11), 32
    limit = 1 / (d * eps)
    cases = [torch.randn(d, r, generator=gen, dtype=torch.float64) for r in range(1, 9)]
    for r, c in ((2, limit / 10), (4, limit * 10), (8, limit / 100), (3, limit * 1e3)):
        U = torch.linalg.qr(torch.randn(d, r, generator=gen, dtype=torch.float64)).Q
        V = torch.linalg.qr(torch.randn(r, r, generator=gen, dtype=torch.float64)).Q
        cases.append(U * torch.logspace(0, -math.log10(c), r, dtype=torch.float64) @ V.T)
    zero_column = torch.randn(d, 4, generator=gen, dtype=torch.float64)
    zero_column[:, 2] = 0
    cases.append(zero_column)
    kept = []
    for X in [X.to(dtype) for X in cases]:
        Q = sk.orthonormal_basis(X)
        assert torch.equal(Q, sk.orthonormal_basis(X[None])[0])
        R = torch.linalg.qr(X).R.double()
        reference = float(torch.linalg.cond(R, "fro")) < limit
        assert torch.equal(Q, torch.linalg.qr(X).Q) == reference
        kept.append(reference)
    assert kept == [True] * 8 + [True, False, True, False, False]  # each case is what it claims
    X = torch.randn(d, 4, generator=gen, dtype=dtype)
    X[0, 0] = math.inf  # never certified: the SVD's basis (no non-null singular value left)
    assert torch.equal(sk.orthonormal_basis(X), sk.orthonormal_basis(X[None])[0])
    assert sk.orthonormal_basis(X).abs().max() == 0
    X[0, 0] = math.nan  # never certified: the SVD refuses it, one or in a batch
    for Xs in (X, X[None]):
        with pytest.raises(torch.linalg.LinAlgError, match="non-finite"):
            sk.orthonormal_basis(Xs)
