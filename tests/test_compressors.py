"""Message compressors (Bernoulli-LoRA Defs. 2–3; spec §6 item 12).

Expected constants are written out here from the standard formulas, never read from the
compressor's own ``omega``/``beta``. Monte Carlo tolerances are 5 standard errors.
"""

import math

import numpy as np
import pytest
import torch

from lorakit import compressors as cp

F64 = torch.float64
N_MC = 20_000


def _x(shape=(3, 4), seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _draws(comp, x, n=N_MC, seed=1):
    """n independent compressions of x, as an (n, *x.shape) tensor (one batched call)."""
    X = x.expand(n, *x.shape)
    return comp(X, torch.Generator().manual_seed(seed), batch_dims=1)


def _assert_mean_within(samples: torch.Tensor, target, n_se=5.0):
    """Each coordinate's sample mean is within n_se standard errors of target."""
    mean = samples.mean(dim=0)
    se = samples.std(dim=0) / math.sqrt(samples.shape[0])
    target = torch.as_tensor(target, dtype=samples.dtype).expand_as(mean)
    err = (mean - target).abs()
    # Coordinates with zero variance must match exactly (up to rounding).
    assert bool((err <= n_se * se + 1e-12 * (1 + target.abs())).all()), (mean, target, se)


def _sq_err(Q, x):
    return ((Q - x) ** 2).flatten(1).sum(dim=1)


# -- unbiased compressors (Def. 2) -------------------------------------------------------------


@pytest.mark.parametrize("comp", [cp.rand_k(1), cp.rand_k(5), cp.natural(), cp.qsgd(1), cp.qsgd(3)])
def test_unbiased(comp):
    """E Q(x) = x, coordinate-wise within 5 SE."""
    x = _x()
    _assert_mean_within(_draws(comp, x), x)


@pytest.mark.parametrize("k", [1, 4, 11])
def test_rand_k_variance_is_exactly_d_over_k_minus_one(k):
    """E‖Q(x) − x‖² = (d/k − 1)‖x‖² for rand-k: each entry is kept w.p. k/d and scaled by d/k."""
    x = _x()
    d = x.numel()
    Q = _draws(cp.rand_k(k), x)
    expected = (d / k - 1) * float((x * x).sum())
    _assert_mean_within(_sq_err(Q, x), expected)
    # Exactly k entries survive in every draw, each scaled by d/k.
    nz = Q.flatten(1) != 0
    assert bool((nz.sum(dim=1) == k).all())
    assert torch.allclose(Q.flatten(1)[nz], (x.flatten() * d / k).expand(N_MC, d)[nz])


def test_natural_variance():
    """Natural compression: per entry Var = (2^{a+1} − |x|)(|x| − 2^a) for 2^a ≤ |x| < 2^{a+1},
    and that is at most |x|²/8, so ω = 1/8."""
    x = _x((12,))
    a = torch.floor(torch.log2(x.abs()))
    low = 2.0**a
    exact = float(((2 * low - x.abs()) * (x.abs() - low)).sum())
    assert exact <= float((x * x).sum()) / 8
    Q = _draws(cp.natural(), x)
    _assert_mean_within(_sq_err(Q, x), exact)
    # Every output is ± a power of two bracketing the input.
    out = Q.abs()
    assert bool(((out == low) | (out == 2 * low)).all())
    assert bool((torch.sign(Q) == torch.sign(x)).all())


def test_natural_keeps_powers_of_two_and_zero():
    x = torch.tensor([0.0, 1.0, -0.25, 8.0, -1024.0], dtype=F64)
    assert torch.equal(cp.natural()(x, torch.Generator().manual_seed(0)), x)


@pytest.mark.parametrize("s", [1, 2, 5])
def test_qsgd_variance(s):
    """QSGD: Var Q(x)_i = (‖x‖/s)² p_i(1 − p_i), p_i = frac(s|x_i|/‖x‖), and the total is at
    most min(d/s², √d/s)‖x‖²."""
    x = _x()
    d = x.numel()
    norm2 = float((x * x).sum())
    level = s * x.abs() / math.sqrt(norm2)
    p = level - torch.floor(level)
    exact = float((norm2 / s**2 * p * (1 - p)).sum())
    omega = min(d / s**2, math.sqrt(d) / s)
    assert exact <= omega * norm2
    Q = _draws(cp.qsgd(s), x)
    _assert_mean_within(_sq_err(Q, x), exact)
    # Outputs are ‖x‖·sign(x_i)·ℓ/s with integer levels ℓ ∈ [0, s].
    levels = Q.abs() * s / math.sqrt(norm2)
    assert torch.allclose(levels, torch.round(levels), atol=1e-9)
    assert bool((levels <= s + 1e-9).all())


def test_qsgd_maps_zero_to_zero():
    z = torch.zeros(2, 3, 4, dtype=F64)
    assert torch.equal(cp.qsgd(2)(z, torch.Generator().manual_seed(0), batch_dims=1), z)


# -- contractive compressors (Def. 3) ----------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 12])
def test_top_k_deterministic_contraction(k):
    """Top-k keeps the k largest magnitudes: ‖C(x) − x‖² = mass of the d − k smallest entries,
    which is at most (1 − k/d)‖x‖²."""
    x = _x()
    d = x.numel()
    out = cp.top_k(k)(x)
    flat = x.flatten()
    order = torch.argsort(flat.abs(), descending=True)
    expected = torch.zeros(d, dtype=F64)
    expected[order[:k]] = flat[order[:k]]
    assert torch.equal(out.flatten(), expected)
    err = float(((out - x) ** 2).sum())
    assert err == pytest.approx(float((flat[order[k:]] ** 2).sum()), abs=1e-15)
    assert err <= (1 - k / d) * float((x * x).sum()) + 1e-15


@pytest.mark.parametrize("k", [1, 6])
def test_scaled_rand_k_contraction_is_exact(k):
    """Rand-k without rescaling: E‖C(x) − x‖² = (1 − k/d)‖x‖² (β = k/d), by MC within 5 SE."""
    x = _x()
    d = x.numel()
    C = _draws(cp.scaled_rand_k(k), x)
    _assert_mean_within(_sq_err(C, x), (1 - k / d) * float((x * x).sum()))
    kept = C.flatten(1) != 0
    assert bool((kept.sum(dim=1) == k).all())
    assert torch.equal(C.flatten(1)[kept], x.flatten().expand(N_MC, d)[kept])


# -- constants, payloads, validation -----------------------------------------------------------


def test_constants_match_the_formulas():
    d = 30
    assert cp.identity().omega(d) == 0.0 and cp.identity().beta(d) == 1.0
    assert cp.rand_k(6).omega(d) == pytest.approx(30 / 6 - 1)
    assert cp.scaled_rand_k(6).beta(d) == pytest.approx(6 / 30)
    assert cp.top_k(6).beta(d) == pytest.approx(6 / 30)
    assert cp.natural().omega(d) == 0.125
    assert cp.qsgd(2).omega(d) == pytest.approx(min(30 / 4, math.sqrt(30) / 2))
    assert cp.qsgd(10).omega(d) == pytest.approx(min(30 / 100, math.sqrt(30) / 10))
    for comp in (cp.rand_k(2), cp.natural(), cp.qsgd(1)):
        assert comp.unbiased and not comp.contractive
        with pytest.raises(ValueError, match="not a contractive"):
            comp.beta(d)
    for comp in (cp.top_k(2), cp.scaled_rand_k(2)):
        assert comp.contractive and not comp.unbiased
        with pytest.raises(ValueError, match="not an unbiased"):
            comp.omega(d)


def test_payloads():
    d = 20
    assert cp.identity().payload(d) == (20, 0)
    assert cp.rand_k(3).payload(d) == (3, 3)
    assert cp.scaled_rand_k(3).payload(d) == (3, 3)
    assert cp.top_k(3).payload(d) == (3, 3)
    assert cp.natural().payload(d) == (20, 0)
    assert cp.qsgd(4).payload(d) == (1, 20)
    assert cp.top_k(3).payload(d).floats == 3


@pytest.mark.parametrize("make", [cp.rand_k, cp.scaled_rand_k, cp.top_k])
def test_k_out_of_range(make):
    x = _x()  # d = 12
    with pytest.raises(ValueError, match=r"k must be in \[1, 12\], got 13"):
        make(13)(x, torch.Generator())
    with pytest.raises(ValueError, match=r"k must be in \[1, 12\], got 13"):
        make(13).payload(12)
    with pytest.raises(ValueError, match=r"k must be in \[1, inf\], got 0"):
        make(0)
    with pytest.raises(ValueError, match="k must be an integer"):
        make(2.5)
    make(12)(x, torch.Generator())  # k = d is allowed


def test_qsgd_levels_validated():
    with pytest.raises(ValueError, match=r"s must be in \[1, inf\], got 0"):
        cp.qsgd(0)


def test_registry_and_strings():
    assert cp.make_compressor("rand_k", k=2) == cp.rand_k(2)
    assert cp.make_compressor(cp.natural()) == cp.natural()
    assert str(cp.qsgd(3)) == "qsgd(s=3)" and str(cp.top_k(2)) == "top_k(k=2)"
    with pytest.raises(ValueError, match="compressor must be one of"):
        cp.make_compressor("sign")


def test_batched_messages_are_independent_and_reproducible():
    """batch_dims=1 compresses each client's message separately (k entries each), any shape."""
    X = _x((5, 3, 4))
    out = cp.rand_k(2)(X, torch.Generator().manual_seed(7), batch_dims=1)
    assert out.shape == X.shape
    assert torch.equal((out != 0).flatten(1).sum(dim=1), torch.full((5,), 2))
    again = cp.rand_k(2)(X, torch.Generator().manual_seed(7), batch_dims=1)
    assert torch.equal(out, again)
    whole = cp.rand_k(2)(X, torch.Generator().manual_seed(7))  # one message of 60 entries
    assert int((whole != 0).sum()) == 2
    v = _x((7,))
    assert cp.top_k(3)(v).shape == (7,)
    assert cp.identity()(X) is X
    np.testing.assert_array_equal(cp.top_k(12)(X, batch_dims=1).numpy(), X.numpy())


def test_float32_input():
    x = _x().to(torch.float32)
    for comp in (cp.rand_k(3), cp.natural(), cp.qsgd(2), cp.top_k(2), cp.scaled_rand_k(2)):
        out = comp(x, torch.Generator().manual_seed(0))
        assert out.dtype == torch.float32 and out.shape == x.shape
