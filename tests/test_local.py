"""The shared local trainer (lorakit.local) at both scales, checked against the update written out
by hand from the problems' W-space gradients (RW-LoRA eqs. (7)–(8), (12))."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from peft_toys import toy_problem

import lorakit as lk
from lorakit.local import Local, factor_grads, init_adapter, train
from lorakit.rng import Streams
from lorakit.tree import PerSite, leaves, tree_map


def _quadratics():
    return lk.problems.heterogeneous_quadratics(5, 6, 4, seed=1)


def _by_hand(problem, W0, B, A, s, client, gamma, steps):
    """Plain simultaneous gradient steps on (B, A) from ∇_W f_c by the chain rule."""
    for _ in range(steps):
        W = tree_map(lambda w, b, a, si: w + si * (b @ a), W0, B, A, problem.tree(s))
        G = problem.grad(W, client=client) if problem.M > 1 and not problem.batched else (
            problem.clients[client].grad(W)
        )  # fmt: skip
        B, A = (
            tree_map(lambda b, g, a, si: b - gamma * si * (g @ a.mT), B, G, A, problem.tree(s)),
            tree_map(lambda a, b, g, si: a - gamma * si * (b.mT @ g), A, B, G, problem.tree(s)),
        )
    return B, A


@pytest.mark.parametrize("scale", ["matrix", "model"])
def test_sgd_steps_are_the_simultaneous_factor_update(scale):
    problem = _quadratics() if scale == "matrix" else toy_problem(rank=2, clients=4)
    s = (0.5,) * len(problem.shapes)
    B, A = init_adapter(problem, 2, torch.Generator().manual_seed(0))
    B = tree_map(lambda b: b + 0.1, B)  # a non-zero B, so both factors move
    W0 = problem.start()
    local = Local(steps=3, gamma=0.05)
    newB, newA, state = train(problem, W0, B, A, s, 2, local, Streams(0))
    refB, refA = _by_hand(problem, W0, B, A, s, 2, 0.05, 3)
    for x, y in zip(leaves(newB) + leaves(newA), leaves(refB) + leaves(refA), strict=True):
        assert torch.allclose(x, y, atol=1e-12, rtol=0)
    assert state is None and float(leaves(B)[0][0, 0]) == pytest.approx(0.1)  # inputs kept


def test_a_stack_of_clients_equals_client_by_client():
    problem = _quadratics()
    s, C = (1.0,), torch.tensor([4, 0, 2])
    gen = torch.Generator().manual_seed(3)
    B = torch.randn(3, 6, 2, generator=gen, dtype=torch.float64)
    A = torch.randn(3, 2, 4, generator=gen, dtype=torch.float64)
    local = Local(estimator=lk.sgd(sigma=0.3))
    gB, gA = factor_grads(problem, problem.W0, B, A, s, C, local, Streams(5))
    problem.batched = False  # the loop every model takes
    lB, lA = factor_grads(problem, problem.W0, B, A, s, C, local, Streams(5))
    assert torch.allclose(gB, lB, atol=1e-12) and torch.allclose(gA, lA, atol=1e-12)


def test_noise_has_the_stated_variance():
    problem = _quadratics()
    B = torch.zeros(6, 2, dtype=torch.float64)
    A = torch.eye(2, 4, dtype=torch.float64)  # ∇_B = s·G·Aᵀ: the noise's first two columns
    local = Local(estimator=lk.sgd(sigma=2.0))
    clean, _ = factor_grads(problem, problem.W0, B, A, (1.0,), 0, Local(), Streams(0))
    draws = torch.stack(
        [
            factor_grads(problem, problem.W0, B, A, (1.0,), 0, local, Streams(k))[0] - clean
            for k in range(400)
        ]
    )
    # entries N(0, σ²/D), D = 6·4 = 24: variance 4/24
    assert float(draws.var()) == pytest.approx(4.0 / 24, rel=0.1)


def test_adamw_state_travels_as_a_state_dict():
    problem = _quadratics()
    B, A = init_adapter(problem, 2, torch.Generator().manual_seed(0))
    local = Local(steps=2, gamma=0.01, optimizer="adamw")
    one = train(problem, problem.W0, B, A, (1.0,), 1, local, Streams(0))
    two = train(problem, problem.W0, one[0], one[1], (1.0,), 1, local, Streams(0), state=one[2])
    four = train(problem, problem.W0, B, A, (1.0,), 1, Local(4, 0.01, "adamw"), Streams(0))
    assert int(two[2]["state"][0]["step"]) == 4
    assert torch.allclose(two[0], four[0], atol=1e-14) and torch.allclose(
        two[1], four[1], atol=1e-14
    )


def test_init_adapter_draws_per_site_in_site_order():
    model = toy_problem(rank=2)
    B, A = init_adapter(model, 2, torch.Generator().manual_seed(7), init="gaussian")
    assert isinstance(B, PerSite) and [tuple(a.shape) for a in A] == [(2, 6), (2, 8)]
    assert all(float(b.abs().max()) == 0.0 for b in B)
    gen = torch.Generator().manual_seed(7)
    first = torch.randn(6, 2, generator=gen, dtype=torch.float64).T * 0.5  # a right sketch: Aᵀ
    assert torch.allclose(A[0], first)


def test_local_refuses_bad_settings():
    with pytest.raises(ValueError, match="local_steps"):
        Local(steps=0)
    with pytest.raises(ValueError, match="gamma"):
        Local(gamma=0.0)
    with pytest.raises(ValueError, match="optimizer"):
        Local(optimizer="adam")
    with pytest.raises(ValueError, match="estimator must be 'gd' or 'sgd'"):
        Local(estimator=lk.page(0.5))
    with pytest.raises(ValueError, match="estimator must be 'gd' or 'sgd'"):
        Local(estimator="mvr")
    with pytest.raises(ValueError, match="optimizer_kwargs apply to optimizer='adamw' only"):
        Local(optimizer_kwargs={"eps": 1e-8})


# -- the estimator axis in every pattern ----------------------------------------------------------
LOCAL_METHODS = sorted(
    name
    for name, m in lk.REGISTRY.items()
    if m.pattern != "chain" and name != "fed_rac_lora"  # Fed-RAC: Algorithm 2's reshuffled epoch
)


@pytest.fixture(scope="module")
def toy_clients():
    return toy_problem(rank=2, clients=4)


def _local_run(method, problem, **kw):
    options = (
        {"graph": nx.complete_graph(4)} if lk.REGISTRY[method].pattern == "decentralized" else {}
    )
    steps = 4 if lk.REGISTRY[method].pattern != "asynchronous" else 6
    return lk.run(method, problem, steps, rank=2, gamma=0.1, **options, **kw)


@pytest.mark.parametrize("method", LOCAL_METHODS)
def test_every_pattern_takes_an_estimator(method, toy_clients):
    """estimator=lk.sgd(batch_size=4) changes the run (minibatches of 4 of a client's 16 rows),
    is named in the frame, and the run repeats exactly; the deprecated ``batch_size=`` shorthand,
    where a pattern had it, gives the same frame with a DeprecationWarning."""
    gd = _local_run(method, toy_clients)
    sgd = _local_run(method, toy_clients, estimator=lk.sgd(batch_size=4))
    assert (gd.estimator == "gd").all() and (sgd.estimator == "sgd(batch=4)").all()
    assert not np.allclose(gd.loss.iloc[1:], sgd.loss.iloc[1:], rtol=1e-6)
    again = _local_run(method, toy_clients, estimator=lk.sgd(batch_size=4))
    pd.testing.assert_frame_equal(sgd, again, check_exact=True)
    with pytest.raises(ValueError, match="estimator must be 'gd' or 'sgd'"):
        _local_run(method, toy_clients, estimator=lk.page(0.5))
    if lk.REGISTRY[method].pattern != "asynchronous":  # AsyncFL had sigma= only
        with pytest.warns(DeprecationWarning, match="estimator=lk.sgd"):
            old = _local_run(method, toy_clients, batch_size=4)
        pd.testing.assert_frame_equal(sgd, old, check_exact=True)
