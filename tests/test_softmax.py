"""Softmax regression (closed-form gradient, Böhning's smoothness bound, solved f*) and
scikit-learn's digits as a pooled and a federated problem."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lorakit
from lorakit import problems as pb
from lorakit.problems.softmax import SoftmaxRegression

F64 = torch.float64


def _small(N=40, m=4, n=5, reg=0.1, seed=0, solve=None):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, n, generator=g, dtype=F64)
    y = torch.randint(0, m, (N,), generator=g)
    return SoftmaxRegression(
        m=m, n=n, W0=torch.zeros(m, n, dtype=F64), X=X, y=y, reg=reg, solve=solve
    )


def _W(problem, batch=(), scale=1.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*batch, problem.m, problem.n, generator=g, dtype=F64)


def _reference_loss(problem, W, idx=None):
    """Mean of f_i = CE_i + (reg/2)‖W‖² via torch's own cross_entropy (an independent formula)."""
    X, y = problem.X, problem.y
    if idx is not None:
        X, y = X[idx], y[idx]
    return F.cross_entropy(X @ W.T, y) + 0.5 * problem.reg * W.square().sum()


@pytest.fixture(scope="module")
def digits():
    return pb.digits_softmax()


@pytest.fixture(scope="module")
def fed():
    return pb.federated_digits()  # 10 clients, Dirichlet α = 0.5, seed 0


# -- loss and gradients -----------------------------------------------------------------------


def test_loss_and_grad_match_autograd_batched():
    p = _small()
    Wb = _W(p, batch=(3, 2), scale=2.0)
    L, G = p.loss(Wb), p.grad(Wb)
    assert L.shape == (3, 2) and G.shape == (3, 2, p.m, p.n)
    for i in range(3):
        for j in range(2):
            W = Wb[i, j].clone().requires_grad_(True)
            ref = _reference_loss(p, W)
            (g,) = torch.autograd.grad(ref, W)
            torch.testing.assert_close(L[i, j], ref.detach(), rtol=1e-13, atol=1e-13)
            torch.testing.assert_close(G[i, j], g, rtol=1e-12, atol=1e-13)


def test_minibatch_grad_is_autograd_of_the_minibatch_mean():
    p = _small()
    idx = torch.tensor([3, 3, 0, 17, 39, 5])  # repeats count repeatedly
    Wb = _W(p, batch=(2,), scale=1.5)
    Gb = p.grad(Wb, idx)
    for i in range(2):
        W = Wb[i].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(_reference_loss(p, W, idx), W)
        torch.testing.assert_close(Gb[i], g, rtol=1e-12, atol=1e-13)
    # the mean of per-sample gradients over all samples is the full gradient
    per_sample = torch.stack([p.grad(Wb[0], torch.tensor([i])) for i in range(p.n_samples)])
    torch.testing.assert_close(per_sample.mean(0), p.grad(Wb[0]), rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match="idx entries must be in"):
        p.grad(Wb[0], torch.tensor([40]))


def test_bohning_bound_dominates_the_autograd_hessian():
    """L = λ_max(XᵀX)/(2N) + reg ≥ λ_max(∇²f(W)) at random points; μ = reg ≤ λ_min."""
    for seed, (m, N) in enumerate([(2, 30), (4, 40), (7, 25)]):
        p = _small(N=N, m=m, n=4, reg=0.05, seed=seed, solve=False)
        assert p.L == pytest.approx(p.lambda_max / 2 + p.reg) and p.mu == p.reg
        for scale in (0.0, 0.5, 3.0):
            W = _W(p, scale=scale, seed=seed + 10)
            H = torch.autograd.functional.hessian(lambda w, p=p: p.loss(w), W)
            eig = torch.linalg.eigvalsh(H.reshape(m * 4, m * 4))
            assert float(eig[-1]) <= p.L * (1 + 1e-12)
            assert float(eig[0]) >= p.mu * (1 - 1e-9)
    # at W = 0 the Hessian is (1/C)(I − 11ᵀ/C) ⊗ XᵀX/N: λ_max = lambda_max/C, within C/2 of the bound
    p = _small(m=4, reg=0.0, solve=False)
    H = torch.autograd.functional.hessian(p.loss, torch.zeros(4, 5, dtype=F64)).reshape(20, 20)
    assert float(torch.linalg.eigvalsh(H)[-1]) == pytest.approx(p.lambda_max / 4, rel=1e-10)


def test_bohning_bound_on_digits(digits):
    sub = SoftmaxRegression(
        m=10, n=64, W0=digits.W0, X=digits.X[:300], y=digits.y[:300], reg=digits.reg, solve=False
    )
    for W in (digits.W_star, _W(sub, scale=0.3)):
        H = torch.autograd.functional.hessian(sub.loss, W, vectorize=True).reshape(640, 640)
        assert float(torch.linalg.eigvalsh(H)[-1]) <= sub.L


# -- digits: the pooled problem --------------------------------------------------------------


def test_digits_solution(digits):
    assert (digits.m, digits.n, digits.n_samples) == (10, 64, 1797)
    assert digits.name == "digits_softmax" and digits.mu == digits.reg == 1e-3
    assert float(digits.loss(digits.W0)) == pytest.approx(math.log(10), rel=1e-14)
    assert float(digits.grad(digits.W_star).norm()) < 1e-6
    assert abs(float(digits.gap(digits.W_star))) < 1e-12
    assert 0 < digits.f_star < math.log(10) and digits.f_lower == digits.f_star
    assert float(digits.gap(_W(digits, scale=0.1))) > 0
    assert float(digits.accuracy(digits.W_star)) > 0.98
    # strong convexity: f(W) − f* ≥ (μ/2)‖W − W*‖²
    W = _W(digits, scale=0.2)
    assert float(digits.gap(W)) >= 0.5 * digits.mu * float((W - digits.W_star).square().sum())


def test_digits_options():
    p = pb.digits_softmax(test_fraction=0.2, seed=3, solve=False, standardize=False)
    assert p.f_star is None and p.W_star is None
    assert p.n_samples + p.X_test.shape[0] == 1797 and p.X_test.shape[1] == 64
    assert float(p.X.min()) >= 0.0 and float(p.X.max()) <= 1.0  # intensities / 16
    np.testing.assert_allclose(  # stratified: the class shares agree
        np.bincount(p.y.numpy()) / p.n_samples, np.bincount(p.y_test.numpy()) / 360, atol=0.01
    )
    assert float(p.accuracy(p.W0, "test")) == pytest.approx(
        float((p.y_test == 0).double().mean())  # argmax of all-zero logits is class 0
    )
    q = pb.digits_softmax(dtype=torch.float32, solve=False)
    assert q.loss(q.W0).dtype == torch.float32 and q.grad(q.W0).dtype == torch.float32
    with pytest.raises(ValueError, match="has no test split"):
        q.accuracy(q.W0, "test")


# -- federated digits ------------------------------------------------------------------------


def test_federated_digits_structure(fed):
    assert fed.name == "federated_digits" and fed.M == 10
    assert sum(c.n_samples for c in fed.clients) == 1797
    assert torch.equal(torch.cat(fed.partition).sort().values, torch.arange(1797))
    assert torch.equal(fed.labels, torch.as_tensor(pb.digits_softmax(solve=False).y))
    for c, part in zip(fed.clients, fed.partition, strict=True):
        assert torch.equal(c.y, fed.labels[part]) and torch.equal(c.W0, fed.W0)
    assert fed.scheme == "dirichlet" and fed.alpha == 0.5
    assert fed.L == max(c.L for c in fed.clients) and fed.mu == 1e-3
    assert fed.L_f <= fed.L
    assert fed.delta_star is not None and fed.delta_star >= 0


def test_federated_loss_is_the_mean_of_client_losses(fed):
    W = _W(fed, batch=(3,), scale=0.2)
    clients = torch.stack([c.loss(W) for c in fed.clients], dim=-1)
    torch.testing.assert_close(fed.loss(W), clients.mean(-1), rtol=1e-14, atol=0)
    # ... which is not the pooled loss: client sizes differ under Dirichlet skew
    pooled = pb.digits_softmax(solve=False)
    assert float((fed.loss(W) - pooled.loss(W)).abs().max()) > 1e-4


def test_federated_solution_is_that_of_the_uniform_client_mean(fed):
    assert float(fed.grad(fed.W_star).norm()) < 1e-6
    assert abs(float(fed.gap(fed.W_star))) < 1e-12
    for c in fed.clients:
        assert float(c.grad(c.W_star).norm()) < 1e-6


def test_fslora_on_federated_digits_reduces_the_loss(fed):
    # lr = 0.5: stable with r/k = 2 sketches (lr = 2 diverges within 15 rounds on this problem).
    method = lorakit.federated.make_federated(
        "fslora", 4, 0.5, budgets=2, estimator=lorakit.sgd(batch_size=16)
    )
    frame = method.run(fed, 30)
    loss = frame["loss"].to_numpy()
    assert np.isfinite(loss).all()
    assert loss[0] == pytest.approx(math.log(10))
    assert loss[-1] < 0.7 * loss[0]
    assert (frame["gap"] > 0).all()


def test_federated_digits_options_and_registry():
    p = pb.make_problem("federated_digits", num_clients=3, scheme="iid", solve_clients=False)
    assert p.name == "federated_digits" and p.M == 3 and p.client_f_star is None
    assert sorted(c.n_samples for c in p.clients) == [599, 599, 599]
    parts = [torch.arange(0, 1000), torch.arange(1000, 1797)]
    q = pb.federated_digits(parts=parts, solve_clients=False, dtype=torch.float32)
    assert q.M == 2 and q.scheme == "given" and q.W0.dtype == torch.float32
    assert float(q.grad(q.W_star.double().float()).norm()) < 1e-4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, r"alpha must be in \(0, inf\]"),
        ({"num_clients": 1798}, r"num_clients must be in \[1, 1797\]"),
        ({"scheme": "shards"}, "scheme must be one of"),
        ({"reg": 0.0}, r"reg must be in \(0, inf\]"),
        ({"parts": [torch.arange(1797), torch.tensor([], dtype=torch.long)]}, "client 1 is empty"),
        ({"W0": torch.zeros(64, 10)}, r"W0 must have shape \(10, 64\)"),
    ],
)
def test_federated_digits_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pb.federated_digits(**{"solve_clients": False, **kwargs})


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pb.digits_softmax(reg=-1.0), "reg must"),
        (lambda: pb.digits_softmax(test_fraction=0.001), "test_fraction must be 0 or hold out"),
        (lambda: pb.digits_softmax(test_fraction=0.95), "test_fraction must be in"),
        (lambda: pb.digits_softmax(standardize="yes"), "standardize must be True or False"),
        (lambda: _small(m=1), "at least 2"),
        (lambda: _small(reg=0.0, solve=True), "solve=True needs reg > 0"),
        (
            lambda: SoftmaxRegression(
                m=3, n=2, W0=torch.zeros(3, 2, dtype=F64), X=torch.zeros(4, 2, dtype=F64),
                y=torch.tensor([0, 1, 2, 3]),
            ),
            r"y entries must be in \[0, 2\]",
        ),
        (
            lambda: SoftmaxRegression(
                m=3, n=2, W0=torch.zeros(3, 2, dtype=F64), X=torch.zeros(4, 3, dtype=F64),
                y=torch.tensor([0, 1, 2, 0]),
            ),
            "X must be a tensor of shape",
        ),
        (
            lambda: SoftmaxRegression(
                m=3, n=2, W0=torch.zeros(3, 2, dtype=F64), X=torch.zeros(4, 2, dtype=F64),
                y=torch.tensor([0.0, 1.0, 2.0, 0.0]),
            ),
            "y must hold integer class labels",
        ),
    ],
)  # fmt: skip
def test_bad_construction(call, match):
    with pytest.raises(ValueError, match=match):
        call()
