"""Expected-projector constants and the sympy identities (RAC-LoRA Assumption 5.1, §5 items 1–3
and 13; Bernoulli-LoRA Assumption 1, Lemmas 1–9, §5.9, §6 items 1–3 and 9)."""

import dataclasses
import math
from fractions import Fraction

import pytest
import sympy
import torch

from lorakit import sketches as sk
from lorakit.theory import constants as tc
from lorakit.theory import identities as ti

D, R, SAMPLES = 16, 3, 4000


def _within(estimate, target: torch.Tensor, k: float = 6.0) -> bool:
    """Every entry of the MC mean within k standard errors of the target (plus rounding)."""
    return bool(((estimate.mean - target).abs() <= k * estimate.stderr + 1e-12).all())


def _tensor(matrix: sympy.Matrix) -> torch.Tensor:
    return torch.tensor([[float(v) for v in row] for row in matrix.tolist()], dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# Exact expected projectors
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d, r", [(6, 2), (5, 3), (4, 1), (7, 7), (8, 4)])
def test_coordinate_enumeration_is_r_over_d_identity(d, r):
    exact = tc.exact_expected_projector("coordinate", d, r, method="enumerate")
    assert exact == sympy.Rational(r, d) * sympy.eye(d)
    assert all(isinstance(v, sympy.Rational) for v in exact)
    assert tc.exact_expected_projector(sk.coordinate(), d, r) == exact  # auto enumerates
    assert tc.exact_expected_projector("coordinate", d, r, method="closed_form") == exact


def test_coordinate_closed_form_beyond_the_enumeration_limit():
    assert tc.exact_expected_projector("coordinate", 20, 3) == sympy.Rational(3, 20) * sympy.eye(20)
    with pytest.raises(ValueError, match=r"^d must be in"):
        tc.exact_expected_projector("coordinate", tc.ENUMERATION_MAX_D + 1, 2, method="enumerate")


def test_nonuniform_marginals_give_diag_pi():
    third = sympy.Rational(1, 3)
    pi = [third, third, third, 1, sympy.Rational(1, 2), sympy.Rational(1, 2)]
    exact = tc.exact_expected_projector("nonuniform_coordinate", 6, 3, marginals=pi)
    assert exact == sympy.diag(*pi)
    assert min(exact.eigenvals()) == third  # λ_min = min_i π_i
    # From the sketch itself: its stored (rounded) marginals are recovered as fractions.
    sketch = sk.nonuniform_coordinate([1 / 3, 1 / 3, 1 / 3, 1.0, 0.5, 0.5])
    assert tc.exact_expected_projector(sketch, 6, 3) == exact
    # Fractions and floats that print exactly are accepted.
    assert tc.exact_expected_projector(
        "nonuniform_coordinate", 4, 2, marginals=[Fraction(1, 4), 0.75, 0.5, 0.5]
    ) == sympy.diag(
        sympy.Rational(1, 4), sympy.Rational(3, 4), sympy.Rational(1, 2), sympy.Rational(1, 2)
    )
    # The sampler's inclusion probabilities agree with diag(π) by Monte Carlo.
    est = tc.expected_projector(sketch, 6, 3, samples=SAMPLES, device="cpu")
    assert _within(est, _tensor(exact))


@pytest.mark.parametrize("family", ["gaussian", "haar", "kaiming_uniform", "uniform"])
def test_invariant_families_are_isotropic(family):
    assert tc.exact_expected_projector(family, 7, 2) == sympy.Rational(2, 7) * sympy.eye(7)
    assert tc.exact_expected_projector(family, 7, 2, side="right") == sympy.Rational(
        2, 7
    ) * sympy.eye(7)


def test_point_mass_is_its_own_projector_with_lambda_min_zero():
    B = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [0.0, 0.0]])
    exact = tc.exact_expected_projector(sk.fixed(B), 4, 2)
    assert exact == exact.T and exact * exact == exact and exact.trace() == 2
    assert min(exact.eigenvals()) == 0  # r < d: Assumption 5.1 fails (AsymmLoRA)
    torch.testing.assert_close(
        _tensor(exact),
        sk.projector(B.double()),
        atol=1e-12,
        rtol=0,
    )
    # Right side: A (r×n) given in its own shape.
    A = sympy.Matrix([[1, 2, 3]])
    right = tc.exact_expected_projector("fixed", 3, 1, side="right", matrix=A)
    assert right == A.T * A / 14
    # The Monte Carlo estimate of a point mass is exact, with zero spread.
    est = tc.expected_projector(sk.fixed(B), 4, 2, samples=10, device="cpu")
    torch.testing.assert_close(est.mean, sk.projector(B.double()), atol=1e-12, rtol=0)
    assert float(est.stderr.max()) < 1e-7
    assert est.lambda_min == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize(
    "family", ["anisotropic_gaussian", sk.anisotropic_gaussian([1.0, 2.0, 3.0]), "custom"]
)
def test_no_closed_form_raises(family):
    with pytest.raises(ValueError, match="no closed-form"):
        tc.exact_expected_projector(family, 3, 1)


# --------------------------------------------------------------------------------------------
# Monte Carlo
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(
    "sketch", [sk.gaussian(), sk.haar(), sk.kaiming_uniform(), sk.coordinate()], ids=str
)
def test_mc_matches_r_over_d_identity(sketch, side):
    est = tc.expected_projector(sketch, D, R, side=side, samples=SAMPLES, device="cpu")
    assert est.mean.shape == est.stderr.shape == (D, D)
    assert est.samples == SAMPLES and est.d == D and est.side == side
    assert _within(est, R / D * torch.eye(D, dtype=torch.float64))
    assert float(est.mean.trace()) == pytest.approx(R, abs=1e-10)  # tr H = r for every draw
    assert torch.equal(est.eigenvalues, est.eigenvalues.sort().values)
    assert est.lambda_min == float(est.eigenvalues[0]) and est.lambda_max == float(
        est.eigenvalues[-1]
    )
    assert est.lambda_min < R / D < est.lambda_max  # noise spreads the spectrum around r/d
    assert est.lambda_max - est.lambda_min < 0.1


def test_anisotropic_gaussian_is_not_isotropic():
    scales = torch.logspace(-1, 1, D)  # 0.1 … 10
    est = tc.expected_projector(
        sk.anisotropic_gaussian(scales), D, R, samples=SAMPLES, device="cpu"
    )
    diag, se = est.mean.diagonal(), est.stderr.diagonal()
    # Rayleigh: λ_min ≤ min_i E[H]_ii and λ_max ≥ max_i E[H]_ii; both diagonal entries are more
    # than 6 standard errors away from r/d.
    assert est.lambda_min <= float(diag.min()) + 1e-12
    assert est.lambda_max >= float(diag.max()) - 1e-12
    assert float(diag[0] + 6 * se[0]) < R / D < float(diag[-1] - 6 * se[-1])
    assert est.lambda_min < R / D < est.lambda_max
    # Sign-flip invariance: E[H] is diagonal (off-diagonal entries vanish within the noise).
    off = est.mean - torch.diag(diag)
    assert bool((off.abs() <= 6 * est.stderr + 1e-12).all())
    assert est.condition > 4  # fails the RR condition λ_max < 4 λ_min (RAC-LoRA §4.3)
    # A zero scale keeps a coordinate out of every column space: λ_min = 0.
    zero = tc.expected_projector(
        sk.anisotropic_gaussian([0.0, 1.0, 1.0, 1.0]), 4, 2, samples=200, device="cpu"
    )
    assert zero.lambda_min == pytest.approx(0, abs=1e-12)


def test_mc_is_deterministic_and_handles_a_partial_chunk():
    kw = dict(side="right", samples=1001, chunk=300, device="cpu")
    a = tc.expected_projector("gaussian", 9, 2, seed=5, **kw)
    b = tc.expected_projector("gaussian", 9, 2, seed=5, **kw)
    c = tc.expected_projector("gaussian", 9, 2, seed=6, **kw)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.stderr, b.stderr)
    assert torch.equal(a.eigenvalues, b.eigenvalues)
    assert not torch.equal(a.mean, c.mean)
    assert float(a.mean.trace()) == pytest.approx(2, abs=1e-10)


def test_default_device_and_cuda_agree_with_cpu():
    cpu = tc.expected_projector("haar", 12, 2, samples=300, seed=1, device="cpu")
    default = tc.expected_projector("haar", 12, 2, samples=300, seed=1)  # CUDA if available
    # The draws are the same on every device (CPU generators); only the arithmetic differs.
    torch.testing.assert_close(default.mean, cpu.mean, atol=1e-10, rtol=0)
    torch.testing.assert_close(default.stderr, cpu.stderr, atol=1e-8, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cpu = tc.expected_projector("gaussian", 200, 4, samples=500, seed=2, device="cpu")
    gpu = tc.expected_projector("gaussian", 200, 4, samples=500, seed=2, device="cuda")
    torch.testing.assert_close(gpu.mean, cpu.mean, atol=1e-10, rtol=0)
    torch.testing.assert_close(gpu.stderr, cpu.stderr, atol=1e-8, rtol=0)


def _same_draws(seed, d, r, counts):
    """The float32 draws expected_projector makes for ``seed``, chunk by chunk, in float64."""
    from lorakit.rng import Streams

    gen = Streams(seed)["sketch"]
    return torch.cat(
        [sk.gaussian().sample((d, r), gen, batch=(k,), dtype=torch.float32) for k in counts]
    ).double()


def test_mc_large_dimension_uses_several_tiles():
    """d > 128 tiles Σ H∘H; the standard errors must match a direct computation."""
    d, r, n = 300, 2, 40
    est = tc.expected_projector(
        "gaussian", d, r, samples=n, chunk=16, seed=3, device="cpu", pooled=False
    )
    H = sk.projector(_same_draws(3, d, r, (16, 16, 8)))  # the SVD projectors of the same draws
    torch.testing.assert_close(est.mean, H.mean(0), atol=1e-12, rtol=0)
    torch.testing.assert_close(est.stderr, H.std(0) / math.sqrt(n), atol=1e-9, rtol=1e-6)


def test_pooled_stderr_is_the_group_average_of_the_entrywise_variances():
    """An exchangeable sketch's variance is the mean of the entry-wise sample variances over the
    diagonal and over the off-diagonal entries, computed here from the SVD projectors."""
    d, r, n = 140, 3, 50
    est = tc.expected_projector("gaussian", d, r, samples=n, chunk=20, seed=4, device="cpu")
    H = sk.projector(_same_draws(4, d, r, (20, 20, 10)))
    torch.testing.assert_close(est.mean, H.mean(0), atol=1e-12, rtol=0)
    var = H.var(0)
    diag = var.diagonal().mean()
    off = (var.sum() - var.diagonal().sum()) / (d * (d - 1))
    expected = torch.full((d, d), float(off), dtype=torch.float64)
    expected.diagonal().fill_(float(diag))
    torch.testing.assert_close(est.stderr, (expected / n).sqrt(), atol=0, rtol=1e-8)
    # The two groups really differ (diagonal entries vary more), so pooling them would be wrong.
    assert float(diag) > 1.5 * float(off)


@pytest.mark.parametrize(
    "sketch",
    [sk.gaussian(), sk.anisotropic_gaussian([0.3, 0.5, 1.0, 1.0, 2.0, 3.0])],
    ids=["pooled", "entrywise"],
)
def test_reported_stderr_matches_the_spread_over_seeds(sketch):
    """The reported standard error of each entry is the standard deviation of that entry's
    estimate over 60 independent seeds. The spread over 60 seeds is itself known to about
    1/√(2·59) ≈ 9% (relative), so each entry must agree within 40% (over 4 of those standard
    deviations) and the root-mean-square ratio over the upper triangle within 8%."""
    d, r, n, seeds = 6, 2, 400, 60
    runs = [
        tc.expected_projector(sketch, d, r, samples=n, seed=s, device="cpu") for s in range(seeds)
    ]
    means = torch.stack([e.mean for e in runs])
    reported = torch.stack([e.stderr for e in runs]).mean(0)
    spread = means.std(0)
    ratio = (spread / reported)[tuple(torch.triu_indices(d, d))]
    assert bool(((ratio - 1).abs() <= 0.4).all()), ratio
    assert abs(float(ratio.square().mean().sqrt()) - 1) <= 0.08, ratio


@pytest.mark.parametrize("pooled", [True, False])
def test_rank_deficient_draws_take_the_svd_basis(pooled):
    """A rank-1 sketch fails the Cholesky basis (singular XᵀX); its SVD projector is used."""
    B = torch.tensor([[1.0, 2.0], [2.0, 4.0], [0.0, 0.0], [1.0, 2.0]])
    u = torch.tensor([1.0, 2.0, 0.0, 1.0], dtype=torch.float64) / math.sqrt(6)
    # Marked exchangeable only to send the point mass down the pooled path as well.
    fixed = dataclasses.replace(sk.fixed(B), exchangeable=pooled)
    est = tc.expected_projector(fixed, 4, 2, samples=10, device="cpu", pooled=pooled)
    torch.testing.assert_close(est.mean, torch.outer(u, u), atol=1e-12, rtol=0)
    assert float(est.mean.trace()) == pytest.approx(1, abs=1e-12)  # rank 1


def test_pooled_needs_an_exchangeable_sketch():
    with pytest.raises(ValueError, match="pooled=True needs an exchangeable sketch"):
        tc.expected_projector(sk.anisotropic_gaussian([1.0, 2.0]), 2, 1, pooled=True)
    with pytest.raises(ValueError, match="pooled must be True, False or None"):
        tc.expected_projector("gaussian", 2, 1, pooled=1)


# --------------------------------------------------------------------------------------------
# λ^p and the multi-layer rule
# --------------------------------------------------------------------------------------------
def test_lambda_p_mnist_layer_one():
    lam = tc.lambda_p(0.99, 1, 64, 784)
    assert lam.min == pytest.approx(0.0154815, abs=1e-6)  # Bernoulli-LoRA §6 item 3
    assert lam.min == lam.max  # isotropic
    exact = tc.lambda_p(sympy.Rational(99, 100), 1, 64, 784)
    assert exact.min == sympy.Rational(99, 100) / 64 + sympy.Rational(1, 100) / 784
    assert isinstance(exact.min, sympy.Rational)
    assert tc.lambda_p(1, 1, 64, 784).min == sympy.Rational(1, 64)
    assert tc.lambda_p(Fraction(1, 2), 2, 8, 12).min == sympy.Rational(1, 8) + sympy.Rational(1, 12)


def test_lambda_p_is_linear_in_p_and_flat_for_square_layers():
    lo, hi = tc.lambda_p(0, 2, 8, 12).min, tc.lambda_p(1, 2, 8, 12).min
    for k in range(11):
        p = sympy.Rational(k, 10)
        assert tc.lambda_p(p, 2, 8, 12).min == lo + p * (hi - lo)
    assert hi > lo  # m < n: p = 1 (left sketch) maximises λ^p
    assert len({tc.lambda_p(sympy.Rational(k, 7), 3, 10, 10).min for k in range(8)}) == 1
    assert tc.lambda_p(0.3, 3, 10, 10).min == pytest.approx(0.3)


def test_lambda_p_with_measured_or_given_spectra():
    est = tc.expected_projector(
        sk.anisotropic_gaussian(torch.logspace(-1, 1, 8)), 8, 2, samples=500, device="cpu"
    )
    lam = tc.lambda_p(0.5, 2, 8, 12, lam_B=est)
    assert lam.min == pytest.approx(0.5 * est.lambda_min + 0.5 * 2 / 12)
    assert lam.max == pytest.approx(0.5 * est.lambda_max + 0.5 * 2 / 12)
    pair = tc.lambda_p(sympy.Rational(1, 4), 1, 4, 4, lam_B=(0, 1), lam_A=sympy.Rational(1, 4))
    assert pair == (sympy.Rational(3, 16), sympy.Rational(7, 16))
    exact = tc.exact_expected_projector(
        "nonuniform_coordinate",
        3,
        1,
        marginals=[sympy.Rational(1, 2), sympy.Rational(1, 4), sympy.Rational(1, 4)],
    )
    assert tc.lambda_p(1, 1, 3, 5, lam_B=exact) == (sympy.Rational(1, 4), sympy.Rational(1, 2))


def test_multilayer_mnist_numbers():
    left = tc.mlp_layers_lambda([784, 64, 64, 5], 1, "left")
    right = tc.mlp_layers_lambda([784, 64, 64, 5], 1, "right")
    R_ = sympy.Rational
    assert left.per_layer == (R_(1, 64), R_(1, 64), R_(1, 5)) and left.min == R_(1, 64)
    assert right.per_layer == (R_(1, 784), R_(1, 64), R_(1, 64)) and right.min == R_(1, 784)
    assert left.max == R_(1, 5) and right.max == R_(1, 64)
    # The general rule on (r, d) pairs and (λ_min, λ_max) pairs.
    assert tc.multilayer_lambda([(1, 64), (1, 64), (1, 5)]) == (R_(1, 64), R_(1, 5))
    assert tc.multilayer_lambda([(1, 784), (0.1, 0.3)]) == (R_(1, 784), 0.3)
    assert tc.multilayer_lambda([tc.LambdaRange(R_(1, 3), R_(1, 2)), (1, 4)]) == (
        R_(1, 4),
        R_(1, 2),
    )
    assert tc.multilayer_lambda([(0, 1)]) == (0, 1)  # read as (λ_min, λ_max): r ≥ 1 for ranks


def test_multilayer_kind_lambda_reads_pairs_as_eigenvalues():
    with pytest.raises(ValueError, match="layers\\[0\\]"):
        tc.multilayer_lambda([(1, 2)], kind="lambda")  # λ_max = 2 > 1
    assert tc.multilayer_lambda([(0.5, 1)], kind="lambda") == (0.5, 1)


# --------------------------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ti.IDENTITIES))
def test_identity_verifies(name):
    statement, source, fn = ti.IDENTITIES[name]
    assert statement and source
    assert fn() is True


def test_verify_all_and_the_checks_can_fail():
    rows = ti.verify_all()
    assert [r[0] for r in rows] == list(ti.IDENTITIES)
    assert all(passed for *_, passed in rows)
    # The certifiers reject false claims.
    b = sympy.Symbol("b", real=True)
    u, v = sympy.symbols("u v", nonnegative=True)
    assert not ti._zero(b * (2 - b) + (1 - b) ** 2 - 2)
    assert not ti._nonneg(u - v)
    assert ti._nonneg(u * v / 2)


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(d=0), "d"),
        (dict(r=17), "r"),
        (dict(side="up"), "side"),
        (dict(samples=1), "samples"),
        (dict(seed=-1), "seed"),
        (dict(chunk=0), "chunk"),
        (dict(sketch="nope"), "sketch"),
        (dict(dtype=torch.int64), "dtype"),
    ],
)
def test_expected_projector_rejects_bad_arguments(kwargs, name):
    args = dict(sketch="gaussian", d=16, r=3, samples=10, device="cpu") | kwargs
    with pytest.raises(ValueError, match=rf"^{name} "):
        tc.expected_projector(**args)


@pytest.mark.parametrize(
    "args, kwargs, name",
    [
        ((1.5, 1, 4, 4), {}, "p"),
        ((-0.1, 1, 4, 4), {}, "p"),
        ((sympy.Rational(3, 2), 1, 4, 4), {}, "p"),
        ((0.5, 0, 4, 4), {}, "r"),
        ((0.5, 5, 4, 8), {}, "r"),
        ((0.5, 1, 0, 4), {}, "m"),
        ((0.5, 1, 4, 2.5), {}, "n"),
        ((0.5, 1, 4, 4), {"lam_B": (0.5, 0.2)}, "lam_B"),
        ((0.5, 1, 4, 4), {"lam_A": 1.5}, "lam_A"),
    ],
)
def test_lambda_p_rejects_bad_arguments(args, kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} "):
        tc.lambda_p(*args, **kwargs)


def test_other_functions_reject_bad_arguments():
    with pytest.raises(ValueError, match=r"^scales "):
        sk.anisotropic_gaussian([])
    with pytest.raises(ValueError, match=r"^scales "):
        sk.anisotropic_gaussian([1.0, -1.0])
    with pytest.raises(ValueError, match="scales"):
        sk.anisotropic_gaussian([1.0, 2.0]).sample((3, 1), torch.Generator())
    with pytest.raises(ValueError, match=r"^family "):
        tc.exact_expected_projector(3, 4, 1)
    with pytest.raises(ValueError, match=r"^method "):
        tc.exact_expected_projector("coordinate", 4, 1, method="guess")
    with pytest.raises(ValueError, match=r"^r "):
        tc.exact_expected_projector("gaussian", 4, 5)
    with pytest.raises(ValueError, match=r"^marginals "):
        tc.exact_expected_projector("nonuniform_coordinate", 3, 1, marginals=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"^marginals "):
        tc.exact_expected_projector("nonuniform_coordinate", 3, 1)
    with pytest.raises(ValueError, match=r"^matrix "):
        tc.exact_expected_projector("fixed", 3, 1, matrix=[[1, 2]])
    with pytest.raises(ValueError, match=r"^matrix "):
        tc.exact_expected_projector("fixed", 3, 1)
    with pytest.raises(ValueError, match=r"^r "):
        tc.mlp_layers_lambda([784, 64, 5], 6, "left")
    with pytest.raises(ValueError, match=r"^side "):
        tc.mlp_layers_lambda([784, 64, 5], 1, "up")
    with pytest.raises(ValueError, match=r"^dims "):
        tc.mlp_layers_lambda([784], 1, "left")
    with pytest.raises(ValueError, match=r"^layers "):
        tc.multilayer_lambda([])
    with pytest.raises(ValueError, match=r"^kind "):
        tc.multilayer_lambda([(1, 2)], kind="x")
