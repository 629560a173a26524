"""Tests for lorakit.problems: gradients against autograd, stated constants, validation."""

from __future__ import annotations

import math

import pytest
import torch

from lorakit.problems import (
    PROBLEMS,
    MatrixProblem,
    counterexample,
    frobenius_distance,
    l1_distance,
    linear_regression,
    logistic_regression,
    make_problem,
    quadratic,
    smooth_nonconvex,
)

F64 = torch.float64

# Small instances, built once (construction solves the pre-training problems).
FACTORIES = {
    "counterexample": lambda: counterexample(),
    "counterexample_half": lambda: counterexample(half=True),
    "quadratic_iso": lambda: quadratic(4, 3, L=2.0, seed=1),
    "quadratic_aniso": lambda: quadratic(4, 3, L=10.0, mu=0.5, seed=2),
    "linear_regression": lambda: linear_regression(4, 3, n_pretrain=200, n_finetune=50),
    "logistic_regression": lambda: logistic_regression(4, 5, n_samples=300, seed=3),
    "frobenius_distance": lambda: frobenius_distance(3, 4, seed=4),
    "l1_distance": lambda: l1_distance(3, 4, seed=5),
    "smooth_nonconvex": lambda: smooth_nonconvex(4, 3, seed=6),
}
_CACHE: dict[str, MatrixProblem] = {}


def get(key: str) -> MatrixProblem:
    if key not in _CACHE:
        _CACHE[key] = FACTORIES[key]()
    return _CACHE[key]


def rand_W(prob: MatrixProblem, *batch: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*batch, prob.m, prob.n, generator=gen, dtype=F64)


def autograd_grad(fn, W: torch.Tensor) -> torch.Tensor:
    W = W.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(W).sum(), W)
    return g


def hessian_eigs(prob: MatrixProblem, W: torch.Tensor) -> torch.Tensor:
    m, n = prob.m, prob.n
    H = torch.autograd.functional.hessian(lambda x: prob.loss(x.reshape(m, n)), W.reshape(-1))
    return torch.linalg.eigvalsh(H)


def close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# -- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(FACTORIES))
def test_grad_matches_autograd(key):
    prob = get(key)
    for seed in range(3):
        W = rand_W(prob, seed=seed)
        assert prob.loss(W).shape == ()
        close(prob.grad(W), autograd_grad(prob.loss, W))
    Wb = rand_W(prob, 3, seed=10)
    loss = prob.loss(Wb)
    assert loss.shape == (3,)
    close(loss, torch.stack([prob.loss(w) for w in Wb]))
    gb = prob.grad(Wb)
    assert gb.shape == Wb.shape
    close(gb, autograd_grad(prob.loss, Wb))
    # deeper batches broadcast too
    Wbb = rand_W(prob, 2, 3, seed=11)
    assert prob.loss(Wbb).shape == (2, 3)
    close(prob.grad(Wbb)[1], prob.grad(Wbb[1]))


def per_sample_losses(prob, W, idx):
    """f_i(W), i ∈ idx, written out independently of the problem classes."""
    x = W.reshape(*W.shape[:-2], prob.m * prob.n)
    if prob.name == "linear_regression":
        D, b = prob.D[idx], prob.b[idx]
        r = (x.unsqueeze(-2) * D).sum(-1) - b
        return 0.5 * r**2 + prob.reg * (x**2 / (1 + x**2)).sum(-1, keepdim=True)
    X, y = prob.X[idx], prob.y[idx]
    z = (x.unsqueeze(-2) * X).sum(-1)
    return torch.log1p(torch.exp(-y * z)) + 0.5 * prob.reg * (x**2).sum(-1, keepdim=True)


@pytest.mark.parametrize("key", ["linear_regression", "logistic_regression"])
def test_finite_sum_minibatch_grads(key):
    prob = get(key)
    N = prob.n_samples
    assert N == (prob.D if key == "linear_regression" else prob.X).shape[0]
    W = rand_W(prob, seed=1)
    Wb = rand_W(prob, 3, seed=2)
    for V in (W, Wb):
        close(prob.grad(V, torch.arange(N)), prob.grad(V))
        all_idx = torch.arange(N)
        close(prob.loss(V), per_sample_losses(prob, V, all_idx).mean(-1))
    idx = torch.tensor([0, 5, 5, N - 1, 7])  # repeats count repeatedly
    for V in (W, Wb):
        want = autograd_grad(lambda U: per_sample_losses(prob, U, idx).mean(-1), V)
        close(prob.grad(V, idx), want)
    close(prob.grad(W, [0, 5, 5, N - 1, 7]), prob.grad(W, idx))


# -- stated constants --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("half", "f_star", "L", "mu"),
    [
        # RAC-LoRA Sec. 3, Eq. (2): f = xᵀMx + bᵀx, M = diag(10, 1, …, 1), b = 1; f* = −¼bᵀM⁻¹b
        # = −2.025 (spec rac_lora.md §6; the paper's "L = 10" is for the ½ convention).
        (False, -2.025, 20.0, 2.0),
        (True, -4.05, 10.0, 1.0),
    ],
)
def test_counterexample_constants(half, f_star, L, mu):
    prob = get("counterexample_half" if half else "counterexample")
    assert (prob.m, prob.n, prob.name) == (3, 3, "counterexample")
    assert prob.f_star == f_star
    assert float(prob.loss(prob.W_star)) == pytest.approx(f_star, abs=1e-15)
    assert float(prob.gap(prob.W_star)) == 0.0
    assert torch.count_nonzero(prob.grad(prob.W_star)) == 0
    assert torch.equal(prob.W0, torch.zeros(3, 3, dtype=F64))
    x_star = torch.tensor([-0.05] + [-0.5] * 8, dtype=F64) * (2.0 if half else 1.0)
    close(prob.W_star, x_star.reshape(3, 3), tol=1e-15)
    # The literal Eq. (2) at random points, x = vec(W) row-major.
    Mdiag = torch.tensor([10.0] + [1.0] * 8, dtype=F64)
    W = rand_W(prob, 4, seed=3)
    x = W.reshape(4, 9)
    quad = (Mdiag * x * x).sum(-1)
    close(prob.loss(W), (0.5 if half else 1.0) * quad + x.sum(-1), tol=1e-12)
    eigs = hessian_eigs(prob, W[0])
    assert float(eigs.max()) == pytest.approx(L, abs=1e-12) and prob.L == L
    assert float(eigs.min()) == pytest.approx(mu, abs=1e-12) and prob.mu == mu


@pytest.mark.parametrize("key", ["quadratic_iso", "quadratic_aniso"])
def test_quadratic_constants(key):
    prob = get(key)
    eigs = hessian_eigs(prob, rand_W(prob, seed=1))
    assert float(eigs.max()) == pytest.approx(prob.L, abs=1e-12)
    assert float(eigs.min()) == pytest.approx(prob.mu, abs=1e-12)
    assert prob.f_star == 0.0 and float(prob.loss(prob.W_star)) == 0.0
    assert torch.equal(prob.W0, torch.zeros(prob.m, prob.n, dtype=F64))


def test_quadratic_spectrum_and_seeding():
    iso = get("quadratic_iso")
    assert iso.L == iso.mu == 2.0
    aniso = get("quadratic_aniso")
    lam = aniso.curvature
    assert (aniso.L, aniso.mu) == (10.0, 0.5)
    assert float(lam.max()) == 10.0 and float(lam.min()) == 0.5  # endpoints exactly
    assert len(torch.unique(lam)) == lam.numel()  # spread, not two-valued
    again = quadratic(4, 3, L=10.0, mu=0.5, seed=2)
    assert torch.equal(again.curvature, lam) and torch.equal(again.W_star, aniso.W_star)
    other = quadratic(4, 3, L=10.0, mu=0.5, seed=3)
    assert not torch.equal(other.curvature, lam)
    # Λ does not depend on whether W* is supplied; W* is used as given.
    Ws = torch.ones(4, 3)
    given = quadratic(4, 3, L=10.0, mu=0.5, seed=2, W_star=Ws)
    assert torch.equal(given.curvature, lam) and torch.equal(given.W_star, Ws.to(F64))
    f32 = quadratic(4, 3, L=10.0, mu=0.5, seed=2, dtype=torch.float32)
    assert f32.W0.dtype == f32.W_star.dtype == f32.curvature.dtype == torch.float32
    assert f32.loss(torch.zeros(4, 3)).dtype == torch.float32
    one = quadratic(1, 1, L=3.0)
    assert one.L == one.mu == 3.0


def test_logistic_constants():
    prob = get("logistic_regression")
    assert prob.mu == prob.reg == 0.1 and prob.name == "logistic_regression"
    assert float(prob.grad(prob.W_star).norm()) < 1e-8
    assert float(prob.gap(prob.W_star)) == pytest.approx(0.0, abs=1e-15)
    assert set(prob.y.unique().tolist()) == {-1.0, 1.0}
    X = prob.X
    assert prob.L == pytest.approx(float(torch.linalg.eigvalsh(X.T @ X)[-1]) / (4 * len(X)) + 0.1)
    assert float(prob.gap(prob.W0)) > 1e-3  # the pre-trained start is not the optimum
    for seed in range(3):
        W = rand_W(prob, seed=seed, scale=0.3)
        assert prob.f_star <= float(prob.loss(W))
        eigs = hessian_eigs(prob, W)
        assert float(eigs.max()) <= prob.L + 1e-12
        assert float(eigs.min()) >= prob.mu - 1e-12
    Wb = prob.W_star + 1e-5 * rand_W(prob, 5, seed=9)
    assert bool((prob.gap(Wb) > 0).all())


def test_logistic_paper_defaults():
    prob = logistic_regression()
    assert (prob.m, prob.n, prob.n_samples, prob.reg) == (10, 10, 2000, 0.1)
    assert float(prob.grad(prob.W_star).norm()) <= 1e-12
    assert torch.equal(logistic_regression().X, prob.X)  # deterministic


def test_linear_regression_constants():
    prob = get("linear_regression")
    pre = prob.pretrain
    assert prob.name == "linear_regression" and prob.n_samples == 50 and pre.n_samples == 200
    assert prob.f_star is None and prob.mu is None and prob.f_lower == 0.0
    # W0 is the pre-trained point: ‖∇f̃(W0)‖² ≤ 1e-8 (Bernoulli-LoRA §7.1).
    assert float(pre.grad(prob.W0).square().sum()) <= 1e-8
    assert float(prob.W0.abs().max()) > 0
    # λ = λ_max(DᵀD/N) of each phase by default, and L = λ_max + 2λ.
    for p in (prob, pre):
        D = p.D
        lam = float(torch.linalg.eigvalsh(D.T @ D / D.shape[0])[-1])
        assert p.lambda_max == pytest.approx(lam, rel=1e-12)
        assert p.reg == p.lambda_max
        assert p.L == p.lambda_max + 2 * p.reg
    assert prob.pretrain_L == pre.L
    # fine-tune features: StandardScaler then 2z + 1; targets standardised.
    close(prob.D.mean(0), torch.ones(12, dtype=F64))
    close(prob.D.std(0, unbiased=False), 2 * torch.ones(12, dtype=F64))
    close(prob.b.mean(), torch.tensor(0.0, dtype=F64))
    close(prob.b.std(unbiased=False), torch.tensor(1.0, dtype=F64))
    # smoothness: attained at x = 0, an upper bound elsewhere; non-convex away from 0.
    eigs0 = hessian_eigs(prob, torch.zeros(4, 3, dtype=F64))
    assert float(eigs0.max()) == pytest.approx(prob.L, rel=1e-10)
    for seed in range(3):
        eigs = hessian_eigs(prob, rand_W(prob, seed=seed, scale=2.0))
        assert float(eigs.max()) <= prob.L * (1 + 1e-12)
    custom = linear_regression(4, 3, n_pretrain=200, n_finetune=50, reg=0.5)
    assert custom.reg == 0.5 and custom.L == custom.lambda_max + 1.0
    assert torch.equal(custom.W0, prob.W0)  # reg only changes the fine-tuning phase


def test_smooth_nonconvex_constants():
    prob = get("smooth_nonconvex")
    assert prob.L == 2.0 and prob.f_star == 0.0 and prob.mu is None and prob.smooth
    assert float(prob.loss(prob.W_star)) == 0.0
    assert torch.count_nonzero(prob.grad(prob.W_star)) == 0
    assert float(hessian_eigs(prob, prob.W_star).max()) == pytest.approx(2.0, abs=1e-12)
    for seed in range(3):
        eigs = hessian_eigs(prob, rand_W(prob, seed=seed, scale=2.0))
        assert float(eigs.max()) <= 2.0 + 1e-12
        assert float(prob.loss(rand_W(prob, seed=seed))) >= 0.0
    assert float(eigs.min()) < 0  # non-convex
    C = torch.arange(12.0).reshape(4, 3)
    assert torch.equal(smooth_nonconvex(4, 3, C=C).W_star, C.to(F64))


@pytest.mark.parametrize("key", ["frobenius_distance", "l1_distance"])
def test_nonsmooth_constants(key):
    prob = get(key)
    m, n = prob.m, prob.n
    assert not prob.smooth and prob.L is None and prob.f_star == 0.0
    assert prob.L0 == (1.0 if key == "frobenius_distance" else math.sqrt(m * n))
    assert float(prob.loss(prob.W_star)) == 0.0
    assert torch.count_nonzero(prob.grad(prob.W_star)) == 0
    W, V = rand_W(prob, 20, seed=1), rand_W(prob, 20, seed=2)
    dist = (W - V).square().sum((-2, -1)).sqrt()
    assert bool(((prob.loss(W) - prob.loss(V)).abs() <= prob.L0 * dist + 1e-12).all())
    # the subgradient inequality f(V) ≥ f(W) + ⟨g(W), V − W⟩ (convexity)
    lin = prob.loss(W) + (prob.grad(W) * (V - W)).sum((-2, -1))
    assert bool((prob.loss(V) >= lin - 1e-12).all())
    # L0 is attained: along a sign pattern for ℓ1, along any direction for ‖·‖_F.
    S = torch.sign(rand_W(prob, seed=3))
    t = 0.7
    assert float(prob.loss(prob.W_star + t * S)) == pytest.approx(prob.L0 * t * math.sqrt(m * n))


# -- registry and validation -------------------------------------------------------------------


def test_registry():
    assert set(PROBLEMS) == {
        "counterexample",
        "quadratic",
        "linear_regression",
        "logistic_regression",
        "frobenius_distance",
        "l1_distance",
        "smooth_nonconvex",
        "heterogeneous_quadratics",
        "digits_softmax",
        "federated_digits",
    }
    small = {
        "counterexample": {},
        "quadratic": {"m": 2, "n": 3},
        "linear_regression": {"m": 2, "n": 2, "n_pretrain": 30, "n_finetune": 10},
        "logistic_regression": {"m": 2, "n": 2, "n_samples": 40},
        "frobenius_distance": {"m": 2, "n": 3},
        "l1_distance": {"m": 2, "n": 3},
        "smooth_nonconvex": {"m": 2, "n": 3},
    }
    for name, kwargs in small.items():
        prob = make_problem(name, **kwargs)
        assert isinstance(prob, MatrixProblem) and prob.name == name
        assert prob.W0.dtype == F64 and prob.W0.device.type == "cpu"
    with pytest.raises(ValueError, match=r"name must be one of .*counterexample"):
        make_problem("nope")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: quadratic(0, 3), "m must"),
        (lambda: quadratic(3, 0), "n must"),
        (lambda: quadratic(3, 3, L=0.0), "L must"),
        (lambda: quadratic(3, 3, L=1.0, mu=2.0), "mu must"),
        (lambda: quadratic(3, 3, mu=-1.0), "mu must"),
        (lambda: quadratic(1, 1, L=2.0, mu=1.0), "mu < L"),
        (lambda: quadratic(3, 3, W_star=torch.zeros(3, 2)), "W_star must have shape"),
        (lambda: quadratic(3, 3, W0=torch.zeros(2, 3, 3)), "W0 must have shape"),
        (lambda: quadratic(3, 3, seed=-1), "seed must"),
        (lambda: quadratic(3, 3, dtype=torch.int64), "dtype must"),
        (lambda: counterexample(W0=torch.zeros(9)), "W0 must have shape"),
        (lambda: counterexample(half="yes"), "half must"),
        (lambda: logistic_regression(n_samples=0), "n_samples must"),
        (lambda: logistic_regression(reg=0.0), "reg must"),
        (lambda: logistic_regression(m=0), "m must"),
        (lambda: linear_regression(reg=-1.0), "reg must"),
        (lambda: linear_regression(n_pretrain=1), "n_pretrain must"),
        (lambda: linear_regression(n_finetune=0), "n_finetune must"),
        (lambda: linear_regression(n=0), "n must"),
        (lambda: frobenius_distance(2, 2, W_star=torch.zeros(2, 3)), "W_star must have shape"),
        (lambda: l1_distance(0, 2), "m must"),
        (lambda: smooth_nonconvex(2, 2, C=torch.zeros(3, 3)), "C must have shape"),
        (lambda: smooth_nonconvex(2, 2, W0=[[1.0, 2.0]]), "W0 must have shape"),
    ],
)
def test_bad_construction(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_calls():
    quad = get("quadratic_iso")
    with pytest.raises(ValueError, match="idx must be None"):
        quad.grad(quad.W0, torch.tensor([0]))
    with pytest.raises(ValueError, match="W must have shape"):
        quad.loss(torch.zeros(3, 4, dtype=F64))
    with pytest.raises(ValueError, match="W must have shape"):
        get("l1_distance").grad(torch.zeros(12, dtype=F64))
    reg = get("logistic_regression")
    with pytest.raises(ValueError, match="idx entries must be in"):
        reg.grad(reg.W0, torch.tensor([0, reg.n_samples]))
    with pytest.raises(ValueError, match="idx must hold integer"):
        reg.grad(reg.W0, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="idx must be a non-empty 1-D"):
        get("linear_regression").grad(reg.W0[:4, :3], torch.zeros(0, dtype=torch.long))
