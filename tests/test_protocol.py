"""The problem protocol (lorakit.problems.protocol) at both scales: a matrix problem is a one-site
problem, a peft model an N-site one, and the two agree where they describe the same function.

The model here is a one-site peft toy whose f is known in closed form through its weight, so
every protocol member is checked against an independent autograd computation on plain tensors.
"""

from __future__ import annotations

import pytest
import torch
from peft_toys import toy_problem

import lorakit as lk
from lorakit.problems.protocol import Problem, check_problem_protocol, site_scalings
from lorakit.rng import Streams
from lorakit.tree import PerSite, finite, leaves, sq_norm, tree_like, tree_map


def _matrix():
    return lk.problems.heterogeneous_quadratics(4, 6, 5, seed=0)


def test_both_scales_implement_the_protocol():
    model = toy_problem(rank=2, clients=4)
    for problem in (_matrix(), model):
        assert isinstance(problem, Problem)
        assert check_problem_protocol(problem, clients=True) is problem
    assert _matrix().shapes == ((6, 5),) and _matrix().ranks is None
    assert model.shapes == ((8, 6), (3, 8)) and model.ranks == (2, 2)


def test_protocol_refuses_what_is_not_a_problem_and_a_missing_split():
    with pytest.raises(TypeError, match="lorakit problem"):
        check_problem_protocol(torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"split\(M\)"):
        check_problem_protocol(toy_problem(rank=2), clients=True)


def test_site_scalings_apply_alpha_over_r_once_and_check_the_model():
    assert site_scalings(_matrix(), 2, None) == (1.0,)
    assert site_scalings(_matrix(), 2, 8.0) == (4.0,)
    model = toy_problem(rank=2, lora_alpha=6)  # peft: s = 6/2 = 3 at every site
    assert site_scalings(model, 2, None) == (3.0, 3.0)
    assert site_scalings(model, 2, 6.0) == (3.0, 3.0)
    with pytest.raises(ValueError, match="peft scaling s = 3"):
        site_scalings(model, 2, 4.0)
    with pytest.raises(ValueError, match="peft adapter rank r = 2"):
        site_scalings(model, 1, None)
    with pytest.raises(ValueError, match=r"exceeds min\(m, n\) = 5"):
        site_scalings(_matrix(), 6, None)


def test_tree_helpers_treat_a_tensor_as_one_site():
    x, y = torch.ones(2, 3), torch.full((2, 3), 2.0)
    assert leaves(x) == [x] and tree_like(x, [y]) is y
    assert torch.equal(tree_map(torch.add, x, y), x + y)
    t = PerSite([x, y])
    assert [z.tolist() for z in tree_map(torch.mul, t, t)] == [(x * x).tolist(), (y * y).tolist()]
    assert sq_norm(t) == pytest.approx(6 * 1.0 + 6 * 4.0, abs=0)
    assert sq_norm(-t) == sq_norm(t) and finite(t)
    assert not finite(PerSite([x, y * float("nan")]))


def test_matrix_factor_grads_are_the_chain_rule():
    p = _matrix()
    W0 = p.start()
    gen = torch.Generator().manual_seed(0)
    B = torch.randn(6, 2, generator=gen, dtype=W0.dtype)
    A = torch.randn(2, 5, generator=gen, dtype=W0.dtype)
    Bv, Av = B.clone().requires_grad_(), A.clone().requires_grad_()
    p.clients[1].loss(W0 + 0.5 * Bv @ Av).backward()
    gB, gA = p.factor_grads(W0, B, A, (0.5,), client=1)
    assert torch.allclose(gB, Bv.grad, atol=1e-12) and torch.allclose(gA, Av.grad, atol=1e-12)


@pytest.fixture(scope="module")
def model():
    return toy_problem(rank=2, clients=4, samples=64)


def _reference_loss(model, W: PerSite, rows: torch.Tensor):
    """The toy's mean loss on ``rows`` as a plain function of the per-site weights."""
    from lorakit.adapters.grads import at_weights

    with at_weights(model.sites, W), torch.no_grad():
        return float(model.objective(model.batch(rows)))


def test_model_grad_is_the_gradient_of_the_loss(model):
    W = model.start()
    G = model.grad(W)
    eps, l, (i, j) = 1e-6, 1, (2, 4)
    up = PerSite(w.clone() for w in W)
    up[l][i, j] += eps
    down = PerSite(w.clone() for w in W)
    down[l][i, j] -= eps
    fd = (model.loss(up) - model.loss(down)) / (2 * eps)
    assert G[l][i, j].item() == pytest.approx(fd, rel=1e-6, abs=1e-9)
    assert model.loss(W) == pytest.approx(model.loss(), rel=1e-12)


def test_model_client_losses_and_local_grads(model):
    W = model.start()
    losses = model.client_losses(W)
    for c in range(4):
        assert losses[c].item() == pytest.approx(
            _reference_loss(model, W, model.indices(c)), rel=1e-12
        )
    stack = PerSite(torch.stack([w, 2 * w]) for w in W)
    G = model.local_grads(stack, torch.tensor([3, 0]))
    for c, (client, scale) in enumerate(((3, 1.0), (0, 2.0))):
        ref = model.grad(W * scale, client=client)
        assert all(torch.allclose(g[c], r, atol=1e-14) for g, r in zip(G, ref, strict=True))


def test_model_factor_grads_match_the_chain_rule_without_dropout(model):
    W0 = model.start()
    gen = torch.Generator().manual_seed(1)
    B = PerSite(torch.randn(m, 2, generator=gen, dtype=torch.float64) for m, _ in model.shapes)
    A = PerSite(torch.randn(2, n, generator=gen, dtype=torch.float64) for _, n in model.shapes)
    s = (0.5, 2.0)
    gB, gA = model.factor_grads(W0, B, A, s, client=2)
    W = PerSite(w + si * (b @ a) for w, si, b, a in zip(W0, s, B, A, strict=True))
    G = model.grad(W, client=2)
    for l in range(2):
        assert torch.allclose(gB[l], s[l] * G[l] @ A[l].T, atol=1e-12)
        assert torch.allclose(gA[l], s[l] * B[l].T @ G[l], atol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(model.start(), W0, strict=True))  # unchanged


def test_model_commit_writes_weights_and_factors(model):
    W = model.start() * 1.5
    model.commit(W)
    assert all(torch.allclose(a, b) for a, b in zip(model.start(), W, strict=True))
    assert all(float(site.B.detach().abs().max()) == 0.0 for site in model.sites)
    model.reset()


def test_seeded_draws_the_models_randomness_from_the_run(model):
    with model.seeded(Streams(3)):
        first = torch.rand(3)
    with model.seeded(Streams(3)):
        again = torch.rand(3)
    assert torch.equal(first, again)
