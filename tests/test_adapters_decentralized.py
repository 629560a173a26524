"""RW-LoRA and gossip Dec-LoRA on a peft model (the engines of lorakit.decentralized).

The float64 toy of ``peft_toys`` (fc1 8×6, fc2 3×8, rank 2, 64 rows in 4 iid clients of 16) and a
matrix problem of the same N = 4 for the column and walk comparisons.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from peft_toys import toy_problem

import lorakit as lk
from lorakit.adapters import adapter_state, state_bytes
from lorakit.chain import DivergenceError
from lorakit.decentralized.gossip import GossipLoRA
from lorakit.decentralized.walk import RWLoRA

N = 4
RING, COMPLETE = nx.cycle_graph(N), nx.complete_graph(N)


@pytest.fixture(scope="module")
def toy():
    return toy_problem(clients=N)


@pytest.fixture(scope="module")
def one_site():
    """Only fc1 adapted: one site, for the hand-computed steps."""
    return toy_problem(clients=N, target_modules=["fc1"])


@pytest.fixture(scope="module")
def matrix():
    return lk.problems.heterogeneous_quadratics(N, 5, 3, L=0.5, seed=0)


def client_loss(problem, W, rows):
    """f on ``rows`` with fc1's weight replaced by W, written out (no peft): the hand oracle."""
    fc1 = problem.sites[0].layer.get_base_layer()
    fc2 = problem.model.base_model.model.fc2
    x, y = problem.data["x"][rows], problem.data["labels"][rows]
    logits = torch.tanh(x @ W.T + fc1.bias) @ fc2.weight.T + fc2.bias
    return torch.nn.functional.cross_entropy(logits, y)


def hand_step(problem, v, A, B, lr):
    """Eqs. (7)–(8): G = ∇_W f_v at W = W0 + s·B·A, then A −= η s BᵀG, B −= η s G Aᵀ."""
    s, W0 = problem.sites[0].scaling, problem.sites[0].W0
    W = (W0 + s * B @ A).requires_grad_(True)
    (G,) = torch.autograd.grad(client_loss(problem, W, problem.clients[v]), W)
    return A - lr * s * B.T @ G, B - lr * s * G @ A.T


def weighted_loss(problem, weights):
    return sum(w * problem.loss(client=v) for v, w in enumerate(weights))


# -- RW-LoRA -------------------------------------------------------------------------------------
def test_walk_hops_equal_hand_steps(one_site):
    sim = RWLoRA(rank=2, gamma=0.7, transition="lazy").simulator(one_site, RING, seed=3)
    A, B = sim.A[0].clone(), sim.B[0].clone()
    A0 = A.clone()
    for _ in range(3):  # hop 1 moves only B (B⁰ = 0); later hops move both factors
        v = sim.node
        record = sim.hop()
        if not record["lost"]:
            A, B = hand_step(one_site, v, A, B, 0.7)
        torch.testing.assert_close(sim.A[0], A, rtol=0, atol=1e-12)
        torch.testing.assert_close(sim.B[0], B, rtol=0, atol=1e-12)
    assert float(B.abs().max()) > 0.01 and float((A - A0).abs().max()) > 1e-4


def test_walk_same_seed_same_frame_and_columns_of_the_matrix_walk(toy, matrix):
    cfg = RWLoRA(rank=2, gamma=0.5, transition="lazy", estimator=lk.sgd(batch_size=8))
    a = cfg.run(toy, 12, seeds=[0, 1], graph=RING)
    b = cfg.run(toy, 12, seeds=[0, 1], graph=RING)
    pd.testing.assert_frame_equal(a, b)
    plain = RWLoRA(rank=2, gamma=0.5, transition="lazy")  # the quadratic nodes are not finite sums
    assert list(a.columns) == list(plain.run(matrix, 12, graph=RING).columns)
    assert a["gap"].isna().all() and (a["mismatch"] == 0).all()


def test_walk_visits_the_matrix_walks_nodes(toy, matrix):
    """The walk, failure and loss streams do not depend on the problem: same seed, same path."""
    cfg = RWLoRA(
        rank=2, gamma=0.1, transition="lazy", start="uniform", node_failure=0.3, token_loss=0.2
    )
    model, model_msgs = cfg.run(toy, 40, seeds=[0, 5], graph=RING, messages=True)
    mat, mat_msgs = cfg.run(matrix, 40, seeds=[0, 5], graph=RING, messages=True)
    assert model.attrs["path"] == mat.attrs["path"]
    assert model.attrs["pi"] == mat.attrs["pi"]
    keep = ["seed", "hop", "src", "dst", "lost", "skipped", "down"]
    pd.testing.assert_frame_equal(model_msgs[keep], mat_msgs[keep])
    assert model["lost_hops"].max() > 0 and model["skipped_nodes"].max() > 0


def test_walk_transfer_is_the_peft_adapter_state(toy):
    floats = state_bytes(adapter_state(toy.model), 1)  # Σ_l r(m_l + n_l) = 2·14 + 2·11
    assert floats == 50
    frame = RWLoRA(rank=2, gamma=0.1, transition="metropolis").run(toy, 10, graph=COMPLETE)
    last = frame.iloc[-1]
    assert last["communicated_params"] == 50 * last["transfers"]
    assert last["bytes"] == 4 * last["communicated_params"]
    adamw = RWLoRA(rank=2, gamma=0.01, optimizer="adamw", transition="metropolis")
    last = adamw.run(toy, 10, graph=COMPLETE).iloc[-1]
    assert last["communicated_params"] == (3 * 50 + 1) * last["transfers"]


def test_walk_lowers_the_loss_and_leaves_the_token_in_the_model(toy):
    cfg = RWLoRA(rank=2, gamma=0.5, transition="lazy")
    frame = cfg.run(toy, 60, seeds=0, graph=RING)
    first, last = frame["loss"].iloc[0], frame["loss"].iloc[-1]
    assert last < first - 0.15  # measured: 1.254 → 1.030
    # the model holds the final token: its π-weighted loss is the last row's
    assert weighted_loss(toy, frame.attrs["pi"]) == pytest.approx(last, rel=1e-12)
    toy.reset()
    assert toy.loss() == pytest.approx(first, rel=1e-12)


def test_walk_adamw_minibatch_noise_lowers_the_loss(toy):
    cfg = RWLoRA(
        rank=2,
        gamma=0.05,
        optimizer="adamw",
        estimator=lk.sgd(sigma=0.1, batch_size=8),
        transition="lazy",
    )
    frame = cfg.run(toy, 60, seeds=0, graph=RING)
    assert frame["loss"].iloc[-1] < frame["loss"].iloc[0] - 0.1  # measured: 1.254 → 1.02


def test_walk_pi_sizes_is_the_sample_mean(toy):
    cfg = RWLoRA(rank=2, gamma=0.3, transition="lazy", pi="sizes")
    frame = cfg.run(toy, 5, graph=RING)
    assert frame.attrs["pi"] == [0.25] * N  # iid split: 16 rows each
    assert frame["loss"].iloc[-1] == pytest.approx(toy.loss(), rel=1e-12)


def test_walk_divergence_keeps_the_last_good_token(toy):
    cfg = RWLoRA(rank=2, gamma=1e9, transition="lazy")
    with pytest.raises(DivergenceError) as info:
        cfg.run(toy, 5, graph=RING)
    assert info.value.step == 1 and len(info.value.frame) == 1
    for site in toy.sites:  # the model holds token 0: A⁰, B = 0
        assert torch.isfinite(site.A).all() and float(site.B.detach().abs().max()) == 0.0
    assert info.value.frame["loss"].iloc[-1] == pytest.approx(toy.loss(), rel=1e-12)


# -- gossip --------------------------------------------------------------------------------------
def test_gossip_complete_graph_equal_weights_averages_exactly(toy):
    cfg = GossipLoRA(rank=2, gamma=0.5, mixing="uniform", local_steps=2)
    sim = cfg.simulator(toy, COMPLETE, seed=0)
    A, B, _ = sim.local_steps()  # deterministic (full client data, no noise)
    assert max(float((a - a.mean(0)).abs().max()) for a in (*A, *B)) > 1e-3  # nodes differ
    record = sim.round()
    for new, old in zip((*sim.A, *sim.B), (*A, *B), strict=True):
        for i in range(N):
            torch.testing.assert_close(new[i], old.mean(0), rtol=0, atol=1e-12)
    assert sim.log(record)["consensus"] < 1e-24
    assert record["mismatch"] > 0  # averaging factors is not averaging products


def test_gossip_same_seed_same_frame_and_columns_of_the_matrix_gossip(toy, matrix):
    cfg = GossipLoRA(
        rank=2, gamma=0.05, optimizer="adamw", estimator=lk.sgd(sigma=0.1), link_failure=0.3
    )
    a = cfg.run(toy, 8, seeds=[0, 1], graph=RING)
    pd.testing.assert_frame_equal(a, cfg.run(toy, 8, seeds=[0, 1], graph=RING))
    mat = cfg.run(matrix, 8, seeds=[0, 1], graph=RING)
    assert list(a.columns) == list(mat.columns)
    # the link failures come from the ``links`` stream only: the same links drop
    assert a["dropped_links"].tolist() == mat["dropped_links"].tolist()
    assert a["communicated_params"].iloc[-1] > 0 and a["gap"].isna().all()


def test_gossip_lowers_the_loss_and_writes_the_average_adapter(toy):
    frame = GossipLoRA(rank=2, gamma=0.5).run(toy, 20, graph=RING)
    assert frame["loss"].iloc[-1] < frame["loss"].iloc[0] - 0.15  # measured: 1.254 → 1.063
    assert frame["consensus"].iloc[-1] > 0
    assert np.mean([toy.loss(client=v) for v in range(N)]) == pytest.approx(frame["loss"].iloc[-1])
    # every round sends Σ_i deg_i = 8 adapters of 50 floats on the ring
    assert frame["communicated_params"].iloc[-1] == 20 * 8 * 50


def test_gossip_minibatch_adamw_lowers_the_loss(toy):
    frame = GossipLoRA(rank=2, gamma=0.05, optimizer="adamw", estimator=lk.sgd(batch_size=8)).run(
        toy, 20, graph=RING
    )
    assert frame["loss"].iloc[-1] < frame["loss"].iloc[0] - 0.1  # measured: 1.254 → 1.08


def test_gossip_divergence_raises_before_the_nodes_change(toy):
    with pytest.raises(DivergenceError, match="round 1"):
        GossipLoRA(rank=2, gamma=1e9).run(toy, 3, graph=RING)
    for site in toy.sites:
        assert torch.isfinite(site.A).all() and float(site.B.detach().abs().max()) == 0.0


# -- options -------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [RWLoRA, GossipLoRA])
def test_options_that_do_not_map_raise(make, toy):
    with pytest.raises(ValueError, match="rank = 3 differs from the peft adapter rank"):
        make(rank=3, gamma=0.1).run(toy, 2, graph=RING)
    with pytest.raises(ValueError, match="alpha = 4"):
        make(rank=2, gamma=0.1, alpha=4.0).run(toy, 2, graph=RING)
    with pytest.raises(ValueError, match="no clients"):
        make(rank=2, gamma=0.1).run(toy_problem(), 2, graph=nx.empty_graph(1))
    with pytest.raises(ValueError, match="progress"):
        make(rank=2, gamma=0.1).run(toy, 2, graph=RING, progress="yes")
    with pytest.raises(ValueError, match="graph has 3 nodes"):
        make(rank=2, gamma=0.1).run(toy, 2, graph=nx.cycle_graph(3))


def test_progress_bars(toy, matrix, capsys):
    RWLoRA(rank=2, gamma=0.1).run(toy, 3, graph=COMPLETE, progress=True)
    GossipLoRA(rank=2, gamma=0.1).run(toy, 2, graph=COMPLETE, progress=True)
    RWLoRA(rank=2, gamma=0.1).run(matrix, 3, seeds=[0, 1], graph=COMPLETE, progress=True)
    err = capsys.readouterr().err
    assert "rw_lora seed 0" in err and "gossip_lora seed 0" in err and "seed" in err
