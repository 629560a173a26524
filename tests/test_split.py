"""lorakit.problems.split: the Foundation finite sums split across clients (Federated issue §1–§3)."""

import numpy as np
import pytest
import torch

import lorakit as lk
from lorakit import compressors as cp
from lorakit import problems as pb

F64 = torch.float64


@pytest.fixture(scope="module")
def logistic():
    return pb.logistic_regression(4, 5, n_samples=240, seed=3)


@pytest.fixture(scope="module")
def linear():
    return pb.linear_regression(4, 4, n_pretrain=200, n_finetune=60, seed=1)


@pytest.fixture(scope="module")
def softmax():
    X = torch.randn(90, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    y = torch.arange(90) % 3
    return pb.SoftmaxRegression(m=3, n=6, W0=torch.zeros(3, 6, dtype=F64), X=X, y=y, reg=0.05)


def _rows(problem):
    return (
        (problem.D, problem.b)
        if isinstance(problem, pb.LinearRegression)
        else (problem.X, problem.y)
    )


def _W(problem, seed=0):
    return 0.3 * torch.randn(
        problem.m, problem.n, generator=torch.Generator().manual_seed(seed), dtype=F64
    )


@pytest.mark.parametrize("name", ["linear", "logistic", "softmax"])
@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "quantity"])
def test_clients_partition_rows(name, scheme, request):
    problem = request.getfixturevalue(name)
    fed = pb.split(problem, 4, scheme, alpha=0.5, seed=1)
    assert isinstance(fed, pb.FederatedProblem) and fed.M == 4
    assert all(type(c) is type(problem) for c in fed.clients)
    rows, target = _rows(problem)
    idx = torch.cat(fed.partition)
    assert sorted(idx.tolist()) == list(range(rows.shape[0]))
    for client, part in zip(fed.clients, fed.partition, strict=True):
        c_rows, c_target = _rows(client)
        assert torch.equal(c_rows, rows[part]) and torch.equal(c_target, target[part])
        assert client.reg == problem.reg and torch.equal(client.W0, problem.W0)
    assert torch.equal(fed.W0, problem.W0)
    assert fed.L == pytest.approx(max(c.L for c in fed.clients))


@pytest.mark.parametrize("name", ["linear", "logistic", "softmax"])
def test_loss_is_mean_of_client_losses_and_pooled_for_equal_iid(name, request):
    problem = request.getfixturevalue(name)
    M = {"linear": 4, "logistic": 4, "softmax": 3}[name]  # divides N = 60, 240, 90
    fed = pb.split(problem, M, "iid", seed=2)
    assert {p.numel() for p in fed.partition} == {problem.n_samples // M}
    W = _W(problem, 1)
    client = torch.stack([c.loss(W) for c in fed.clients])
    torch.testing.assert_close(fed.loss(W), client.mean())
    torch.testing.assert_close(fed.loss(W), problem.loss(W), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fed.grad(W), problem.grad(W), rtol=1e-10, atol=1e-12)
    if problem.f_star is not None:
        assert fed.f_star == pytest.approx(problem.f_star, rel=1e-10)


def test_quantity_skew_is_not_the_pooled_loss(logistic):
    fed = pb.split(logistic, 4, "quantity", alpha=0.3, seed=0)
    sizes = [p.numel() for p in fed.partition]
    assert len(set(sizes)) > 1
    W = _W(logistic, 2)
    rows_loss = torch.nn.functional.softplus(-logistic.y * (logistic.X @ W.reshape(-1)))
    weights = torch.cat([torch.full((s,), 1.0 / (4 * s), dtype=F64) for s in sizes])
    order = torch.cat(fed.partition)
    expected = (weights * rows_loss[order]).sum() + 0.5 * logistic.reg * W.square().sum()
    torch.testing.assert_close(fed.loss(W), expected)
    assert abs(float(fed.loss(W) - logistic.loss(W))) > 1e-6


@pytest.mark.parametrize("name", ["linear", "logistic", "softmax"])
def test_grads_match_autograd(name, request):
    problem = request.getfixturevalue(name)
    fed = pb.split(problem, 3, "dirichlet", alpha=0.5, seed=4)
    W = _W(problem, 3).requires_grad_(True)
    (g,) = torch.autograd.grad(fed.loss(W), W)
    torch.testing.assert_close(fed.grad(W.detach()), g)
    cg = fed.client_grads(W.detach())
    for l, c in enumerate(fed.clients):
        (gl,) = torch.autograd.grad(c.loss(W), W)
        torch.testing.assert_close(cg[l], gl)


def test_strongly_convex_optimum(logistic, softmax):
    for problem in (logistic, softmax):
        fed = pb.split(problem, 3, "dirichlet", alpha=0.3, seed=5)
        assert fed.mu == problem.reg
        assert float(fed.grad(fed.W_star).norm()) < 1e-9
        assert fed.f_star == pytest.approx(float(fed.loss(fed.W_star)), abs=1e-12)
        for c in fed.clients:
            assert float(c.grad(c.W_star).norm()) < 1e-9
        assert fed.delta_star >= -1e-12
        assert fed.L_f <= fed.L + 1e-12
        # f* really is the minimum: random perturbations only increase f.
        for s in range(3):
            assert float(fed.loss(fed.W_star + 1e-3 * _W(problem, s))) > fed.f_star


def test_linear_regression_has_no_f_star(linear):
    fed = pb.split(linear, 4, "quantity", alpha=1.0, seed=0)
    assert fed.f_star is None and fed.f_lower == 0.0 and fed.mu is None
    for c in fed.clients:
        assert c.L == pytest.approx(c.lambda_max + 2 * c.reg)
        lam = float(torch.linalg.eigvalsh(c.D.T @ c.D / c.D.shape[0])[-1])
        assert c.lambda_max == pytest.approx(lam)


def test_dirichlet_logistic_is_label_skewed(logistic):
    overall = float((logistic.y > 0).double().mean())

    def spread(fed):
        fracs = [float((c.y > 0).double().mean()) for c in fed.clients]
        return max(abs(f - overall) for f in fracs)

    skewed = pb.split(logistic, 5, "dirichlet", alpha=0.1, seed=0, solve=False)
    iid = pb.split(logistic, 5, "iid", seed=0, solve=False)
    assert spread(skewed) > 0.3 > 0.2 > spread(iid)
    assert torch.equal(skewed.labels, (logistic.y > 0).long())


def test_linear_regression_labels_are_target_quantiles(linear):
    fed = pb.split(linear, 3, "dirichlet", alpha=0.1, seed=0, bins=4)
    labels = fed.labels
    assert np.bincount(labels.numpy()).tolist() == [15, 15, 15, 15]
    b = linear.b
    for k in range(3):  # bins are ordered by b
        assert float(b[labels == k].max()) <= float(b[labels == k + 1].min())


def test_given_labels_and_parts(logistic):
    parts = [torch.arange(0, 100), torch.arange(100, 240)]
    fed = pb.split(logistic, 7, parts=parts, solve=False)
    assert fed.M == 2 and fed.scheme == "given"
    assert torch.equal(fed.clients[0].X, logistic.X[:100])
    with pytest.raises(ValueError, match="one entry per row"):
        pb.split(logistic, 2, "dirichlet", labels=[0, 1])
    with pytest.raises(ValueError, match="finite-sum"):
        pb.split(pb.quadratic(m=3, n=3), 2)


def test_same_seed_same_split(logistic):
    a = pb.split(logistic, 4, "dirichlet", seed=7, solve=False)
    b = pb.split(logistic, 4, "dirichlet", seed=7, solve=False)
    assert all(torch.equal(x, y) for x, y in zip(a.partition, b.partition, strict=True))


def test_split_runs_with_qgd(logistic):
    fed = pb.split(logistic, 4, "dirichlet", alpha=0.5, seed=0)
    est = lk.qgd(cp.rand_k(5))
    frame = lk.run(
        "bernoulli_lora", fed, 40, seeds=[0, 1], rank=1, gamma=0.5 / fed.L, estimator=est
    )
    assert len(frame) == 2 * 41
    assert np.isfinite(frame.loss).all()
    last = frame[frame.step == 40]
    assert (last.gap < frame[frame.step == 0].gap.iloc[0]).all()
    assert (frame.bytes_up[frame.step < 40] == 4 * (5 + 5) * 4).all()
