"""Federated problems and the federated estimators (Bernoulli-LoRA eq. (4), Algs. 7–9, Lemma 15,
Assumption 11; RAC-LoRA Assumption F.1). Closed forms are recomputed here with numpy/scipy."""

import math

import numpy as np
import pytest
import scipy.optimize
import torch

import lorakit as lk
from lorakit import compressors as cp
from lorakit import estimators as es
from lorakit import problems as pb
from lorakit.rng import Streams

F64 = torch.float64


def _W(problem, seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*batch, problem.m, problem.n, generator=g, dtype=F64)


def _data(problem):
    """(Λ_l, C_l) of every client as numpy arrays (M, m, n)."""
    lam = np.stack([c.curvature.numpy() for c in problem.clients])
    C = np.stack([c.W_star.numpy() for c in problem.clients])
    return lam, C


def _f_numpy(w, lam, C):
    W = w.reshape(lam.shape[1:])
    return float(np.mean(0.5 * np.sum(lam * (W - C) ** 2, axis=(1, 2))))


@pytest.fixture(params=["shared", "heterogeneous"])
def problem(request):
    return pb.heterogeneous_quadratics(
        5, 4, 3, L=3.0, mu=0.5, spread=0.8, curvature=request.param, seed=2
    )


# -- the problem -------------------------------------------------------------------------------


def test_grad_is_mean_of_client_grads_and_autograd(problem):
    W = _W(problem).requires_grad_(True)
    (auto,) = torch.autograd.grad(problem.loss(W), W)
    W = W.detach()
    cg = problem.client_grads(W)
    assert cg.shape == (problem.M, problem.m, problem.n)
    torch.testing.assert_close(problem.grad(W), cg.mean(dim=0), rtol=0, atol=0)
    torch.testing.assert_close(problem.grad(W), auto, rtol=1e-13, atol=1e-13)
    for l, client in enumerate(problem.clients):
        torch.testing.assert_close(cg[l], client.grad(W), rtol=1e-14, atol=1e-14)
        assert float(problem.client_losses(W)[l]) == pytest.approx(float(client.loss(W)))
    # Batched W: (B, m, n) → losses (B,), client grads (B, M, m, n).
    Wb = _W(problem, 1, (2,))
    assert problem.loss(Wb).shape == (2,)
    assert problem.client_grads(Wb).shape == (2, problem.M, problem.m, problem.n)
    torch.testing.assert_close(problem.grad(Wb)[1], problem.grad(Wb[1]))


@pytest.mark.parametrize("clients", [[1, 2, 3], [4, 0, 2]])  # a contiguous range, a gather
def test_local_grads_overwrite_writes_the_same_gradients_into_W(problem, clients):
    clients = torch.tensor(clients)
    W = _W(problem, 3, (3,))
    # Each client's own DiagonalQuadratic.grad at its own iterate.
    expected = torch.stack([problem.clients[l].grad(W[c]) for c, l in enumerate(clients.tolist())])
    kept = W.clone()
    torch.testing.assert_close(problem.local_grads(W, clients), expected, rtol=0, atol=0)
    torch.testing.assert_close(W, kept, rtol=0, atol=0)  # W is left as it was by default
    G = problem.local_grads(W, clients, overwrite=True)
    torch.testing.assert_close(G, expected, rtol=0, atol=0)
    assert G.data_ptr() == W.data_ptr()  # written into W: no (C, m, n) temporary


@pytest.mark.parametrize("curvature", ["shared", "heterogeneous"])
def test_client_losses_of_many_clients_in_groups(curvature):
    # 300 clients of 24×24 float64 (1.3 MiB): the loss of one W goes over several groups.
    problem = pb.heterogeneous_quadratics(300, 24, 24, L=2.0, mu=0.5, curvature=curvature, seed=1)
    W = _W(problem, 4)
    losses = problem.client_losses(W)
    own = torch.stack([client.loss(W) for client in problem.clients])
    torch.testing.assert_close(losses, own, rtol=1e-14, atol=0)
    # The same numbers as the one-pass form of a batched W.
    torch.testing.assert_close(losses, problem.client_losses(W[None])[0], rtol=0, atol=0)


def test_minibatch_grad_over_clients(problem):
    W = _W(problem)
    idx = torch.tensor([4, 1, 1])
    expected = sum(problem.clients[int(i)].grad(W) for i in idx) / 3
    torch.testing.assert_close(problem.grad(W, idx), expected, rtol=1e-14, atol=1e-14)
    assert problem.n_samples == problem.M == 5


def test_optimum_and_delta_star_against_numpy_and_scipy(problem):
    lam, C = _data(problem)
    W_star = (lam * C).sum(axis=0) / lam.sum(axis=0)
    f_star = _f_numpy(W_star, lam, C)
    assert float(problem.grad(problem.W_star).abs().max()) < 1e-13
    np.testing.assert_allclose(problem.W_star.numpy(), W_star, rtol=1e-13, atol=1e-13)
    assert problem.f_star == pytest.approx(f_star, rel=1e-13)
    # f_l* = 0 (each client's minimum is its centre), so Δ* = f* − 0.
    np.testing.assert_array_equal(problem.client_f_star.numpy(), np.zeros(problem.M))
    assert problem.delta_star == pytest.approx(f_star, rel=1e-13)
    # An independent numerical minimisation agrees.
    res = scipy.optimize.minimize(
        _f_numpy,
        np.zeros(lam[0].size),
        args=(lam, C),
        jac=lambda w, lam, C: np.mean(lam * (w.reshape(lam.shape[1:]) - C), axis=0).ravel(),
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12},
    )
    assert res.fun == pytest.approx(problem.f_star, rel=1e-8)
    # Constants: every client L-smooth; f's own L_f and μ from the mean curvature.
    assert problem.L == 3.0
    assert problem.L_f == pytest.approx(lam.mean(axis=0).max())
    assert problem.mu == pytest.approx(lam.mean(axis=0).min())


def test_shared_curvature_closed_forms_and_sigma2():
    problem = pb.heterogeneous_quadratics(6, 3, 4, L=2.0, mu=0.25, spread=1.5, seed=5)
    lam, C = _data(problem)
    assert np.all(lam == lam[0])
    C_bar = C.mean(axis=0)
    f_star = np.mean([0.5 * np.sum(lam[0] * (C_bar - C[l]) ** 2) for l in range(6)])
    assert problem.f_star == pytest.approx(f_star, rel=1e-13)
    assert problem.delta_star == pytest.approx(f_star, rel=1e-13)
    np.testing.assert_allclose(problem.W_star.numpy(), C_bar, rtol=1e-13, atol=1e-13)
    for seed in range(3):  # σ² = (1/M) Σ_l ‖∇f_l(W) − ∇f(W)‖² at random W
        W = 3 * _W(problem, seed)
        dev = problem.client_grads(W) - problem.grad(W)
        direct = float((dev * dev).sum(dim=(-2, -1)).mean())
        assert problem.sigma2 == pytest.approx(direct, rel=1e-12)
    assert problem.mu == 0.25 and problem.L == problem.L_f == 2.0


def test_heterogeneous_curvature_has_no_constant_sigma2():
    problem = pb.heterogeneous_quadratics(3, 3, 3, mu=0.1, curvature="heterogeneous")
    assert problem.sigma2 is None
    lam, _ = _data(problem)
    assert not np.all(lam == lam[0])
    for client in problem.clients:  # both endpoints present in every client
        assert float(client.curvature.min()) == 0.1 and float(client.curvature.max()) == 1.0


def test_delta_m_star_readings(problem):
    """RAC-LoRA Asm. F.1 with one component per client: printed f* − f_m*, corrected 0."""
    printed = problem.delta_m_star()
    np.testing.assert_allclose(printed.numpy(), problem.f_star - np.zeros(problem.M))
    assert float(printed.mean()) == pytest.approx(problem.delta_star)
    np.testing.assert_array_equal(problem.delta_m_star("corrected").numpy(), np.zeros(problem.M))
    with pytest.raises(ValueError, match="reading must be one of"):
        problem.delta_m_star("other")


def test_zero_spread_reproduces_quadratic():
    fed = pb.heterogeneous_quadratics(4, 5, 3, L=2.0, mu=0.5, spread=0.0, seed=3)
    single = pb.quadratic(5, 3, L=2.0, mu=0.5, seed=3)
    for client in fed.clients:
        assert torch.equal(client.curvature, single.curvature)
        assert torch.equal(client.W_star, single.W_star)
    torch.testing.assert_close(fed.W_star, single.W_star)
    assert fed.f_star == pytest.approx(0.0, abs=1e-25) and fed.sigma2 == 0.0
    W = _W(fed)
    torch.testing.assert_close(fed.loss(W), single.loss(W))


def test_generic_clients_loop():
    clients = [pb.smooth_nonconvex(3, 2, seed=s) for s in range(3)]
    fed = pb.FederatedProblem.from_clients(clients)
    W = _W(fed)
    torch.testing.assert_close(fed.grad(W), sum(c.grad(W) for c in clients) / 3)
    torch.testing.assert_close(fed.loss(W), sum(c.loss(W) for c in clients) / 3)
    assert fed.L == 2.0 and fed.f_star is None and fed.delta_star is None
    assert fed.client_grads(_W(fed, 1, (4,))).shape == (4, 3, 3, 2)
    with pytest.raises(ValueError, match="every client must have shape"):
        pb.FederatedProblem.from_clients([*clients, pb.smooth_nonconvex(2, 3)])


def test_registry_and_validation():
    prob = pb.make_problem("heterogeneous_quadratics", M=3, m=2, n=3)
    assert isinstance(prob, pb.FederatedProblem) and prob.name == "heterogeneous_quadratics"
    assert prob.W0.dtype == F64 and prob.M == 3
    with pytest.raises(ValueError, match="curvature must be one of"):
        pb.heterogeneous_quadratics(2, 2, 2, curvature="mixed")
    with pytest.raises(ValueError, match="needs mu"):
        pb.heterogeneous_quadratics(2, 2, 2, curvature="heterogeneous")
    with pytest.raises(ValueError, match=r"M must be in \[1, inf\]"):
        pb.heterogeneous_quadratics(0, 2, 2)
    with pytest.raises(ValueError, match=r"spread must be in \[0, inf\]"):
        pb.heterogeneous_quadratics(2, 2, 2, spread=-1.0)


# -- federated estimators ----------------------------------------------------------------------


def _run(problem, estimator, steps=25, seeds=(0, 1)):
    return lk.run(
        "bernoulli_lora", problem, steps, list(seeds), rank=2, gamma=0.3, p=0.5, estimator=estimator
    )


@pytest.mark.parametrize(
    "estimator",
    [es.ef21(cp.identity()), es.marina(1.0, cp.rand_k(3)), es.qgd(cp.identity())],
    ids=str,
)
def test_federated_estimators_reduce_to_gd_exactly(problem, estimator):
    gd = _run(problem, "gd")
    fed = _run(problem, estimator)
    np.testing.assert_array_equal(fed.loss.to_numpy(), gd.loss.to_numpy())


@pytest.mark.parametrize(
    "estimator",
    [es.marina(0.3, cp.identity()), es.ef21(cp.top_k(12))],  # d = 4·3 = 12: top_k(d) keeps all
    ids=str,
)
def test_lossless_recursions_track_gd(problem, estimator):
    """MARINA's G_l + (∇f_l − ∇f_l^prev) and EF21's G_l + C(∇f_l − G_l) equal ∇f_l when nothing
    is lost, so the trajectory is GD's up to rounding."""
    np.testing.assert_allclose(
        _run(problem, estimator).loss.to_numpy(), _run(problem, "gd").loss.to_numpy(), rtol=1e-12
    )


def test_ef21_zero_init_first_step_does_not_move(problem):
    frame = _run(problem, es.ef21(cp.top_k(3), init="zero"), steps=3, seeds=[0])
    assert frame.loss.iloc[1] == frame.loss.iloc[0]
    assert frame.loss.iloc[3] < frame.loss.iloc[0]


def _qgd_draws(problem, comp, W, n, seed):
    """n independent draws of QGD's G^t at W (Alg. 7), in one batched compressor call.

    The estimator's ``update`` is checked to be exactly this computation on the same stream."""
    grads = problem.client_grads(W)
    G = es.qgd(comp).update(problem, W, None, Streams(seed)).G
    direct = comp(grads, Streams(seed)["compression"], batch_dims=1).mean(dim=0)
    torch.testing.assert_close(G, direct, rtol=0, atol=0)
    stack = grads.expand(n, *grads.shape)
    return comp(stack, Streams(seed + 1)["compression"], batch_dims=2).mean(dim=1)


def test_qgd_is_unbiased(problem):
    """E G = ∇f at fixed W over compression draws (Alg. 7), coordinate-wise within 5 SE."""
    W, n = _W(problem), 20_000
    Gs = _qgd_draws(problem, cp.rand_k(2), W, n, seed=0)
    mean, se = Gs.mean(dim=0), Gs.std(dim=0) / math.sqrt(n)
    assert bool(((mean - problem.grad(W)).abs() <= 5 * se).all())


@pytest.mark.parametrize(
    "comp,omega",
    [
        (cp.rand_k(3), 12 / 3 - 1),
        (cp.qsgd(2), min(12 / 4, math.sqrt(12) / 2)),
        (cp.natural(), 1 / 8),
    ],
    ids=str,
)
def test_lemma_15_second_moment_bound(problem, comp, omega):
    """E‖G‖² ≤ 2(Lω/M)(f − f*) + ‖∇f‖² + 2LωΔ*/M (Bernoulli-LoRA Lemma 15; spec §6 item 13), at
    random W. For rand-k the exact value ‖∇f‖² + (ω/M²) Σ_l ‖∇f_l‖² is also matched."""
    L, M, n = problem.L, problem.M, 20_000
    for seed in range(3):
        W = _W(problem, seed)
        sq = (_qgd_draws(problem, comp, W, n, seed) ** 2).sum(dim=(-2, -1))
        mean, se = float(sq.mean()), float(sq.std()) / math.sqrt(n)
        gf = problem.grad(W)
        bound = (
            2 * L * omega / M * (float(problem.loss(W)) - problem.f_star)
            + float((gf * gf).sum())
            + 2 * L * omega * problem.delta_star / M
        )
        assert mean <= bound + 5 * se
        if isinstance(comp, cp.RandK):
            cg = problem.client_grads(W)
            exact = float((gf * gf).sum()) + omega / M**2 * float((cg * cg).sum())
            assert abs(mean - exact) <= 5 * se


def test_federated_estimators_validate():
    single = pb.quadratic(4, 3)
    with pytest.raises(ValueError, match=r"needs a FederatedProblem.*'quadratic'"):
        _run(single, es.qgd(cp.identity()))
    with pytest.raises(ValueError, match="needs an unbiased compressor"):
        es.qgd(cp.top_k(2))
    with pytest.raises(ValueError, match="needs an unbiased compressor"):
        es.marina(0.5, cp.scaled_rand_k(2))
    with pytest.raises(ValueError, match="needs a contractive compressor"):
        es.ef21(cp.rand_k(2))
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\]"):
        es.marina(0.0, cp.identity())
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\]"):
        es.marina(1.5, cp.identity())
    with pytest.raises(ValueError, match="init must be one of"):
        es.ef21(cp.identity(), init="random")
    est = es.make_estimator("marina", q=0.5, compressor="natural")
    assert str(est) == "marina(q=0.5, natural)"
    fed = pb.heterogeneous_quadratics(3, 4, 3)
    with pytest.raises(ValueError, match=r"k must be in \[1, 12\], got 20"):
        _run(fed, es.qgd(cp.rand_k(20)))
