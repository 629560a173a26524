"""Asynchronous FL on a peft model: AsyncFL (lorakit.asynchronous.clock) on a ModelProblem.

The float64 toy of ``peft_toys`` (fc1 8×6, fc2 3×8, 64 rows in 4 iid clients of 16), a matrix
problem with 4 clients for the clock and column comparisons, and the one-site toy written out as a
matrix problem (the one engine gives both the same trajectory).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from peft_toys import toy_problem

import lorakit as lk
from lorakit.asynchronous import AsyncFL
from lorakit.asynchronous.clock import Simulation
from lorakit.chain import DivergenceError
from lorakit.lowrank import lowrank
from lorakit.problems.base import MatrixProblem
from lorakit.problems.federated import FederatedProblem
from lorakit.rng import Streams
from lorakit.sketches import kaiming_uniform
from lorakit.tree import PerSite

M = 4
CLOCK = ["seed", "client", "start", "finish", "version_started", "staleness", "applied",
         "discarded", "crashed"]  # fmt: skip


@pytest.fixture(scope="module")
def toy():
    return toy_problem(clients=M)


@pytest.fixture(scope="module")
def one_site():
    return toy_problem(clients=M, target_modules=["fc1"])


@pytest.fixture(scope="module")
def matrix():
    return lk.problems.heterogeneous_quadratics(M, 5, 3, L=0.5, seed=0)


def client_loss(problem, W, client):
    """f_c with fc1's weight W, written out without peft (the hand oracle)."""
    fc1 = problem.sites[0].layer.get_base_layer()
    fc2 = problem.model.base_model.model.fc2
    rows = problem.clients[client]
    x, y = problem.data["x"][rows], problem.data["labels"][rows]
    logits = torch.tanh(x @ W.T + fc1.bias) @ fc2.weight.T + fc2.bias
    return torch.nn.functional.cross_entropy(logits, y)


def client_grad(problem, W, client):
    """∇_W f_c with fc1's weight W (the hand oracle, by autograd; also under no_grad)."""
    W = W.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        return torch.autograd.grad(client_loss(problem, W, client), W)[0]


@dataclass(eq=False)
class _ToyClient(MatrixProblem):
    """Client c of the one-site toy as a matrix problem: f_c of fc1's weight W (hand oracle)."""

    toy: object = None
    client: int = 0

    def loss(self, W):
        with torch.no_grad():
            return client_loss(self.toy, W, self.client)

    def grad(self, W, idx=None):
        return client_grad(self.toy, W, self.client)


def toy_as_matrix(toy) -> FederatedProblem:
    """The one-site toy's clients as a FederatedProblem over fc1's weight, from W0 = the site's W."""
    toy.reset()
    W0 = toy.sites[0].W().clone()
    m, n = W0.shape
    clients = [_ToyClient(m=m, n=n, W0=W0, toy=toy, client=c) for c in range(toy.M)]
    return FederatedProblem.from_clients(clients, W0=W0, name="toy as matrix")


def simulate(cfg, problem, updates, seed=0):
    sim = Simulation(cfg, problem, seed)
    sim.run(updates, None)
    return sim


def base_weights(problem):
    return [site.W0.clone() for site in problem.sites]


# -- exactness -----------------------------------------------------------------------------------
def test_sequential_fedasync_is_local_sgd_by_hand(one_site):
    """α = 1, one client at a time: each update is W ← W − η∇f_c(W) twice (local_steps = 2)."""
    cfg = AsyncFL("fedasync", 0.4, alpha=1.0, concurrency=1, local_steps=2, speed="exponential")
    one_site.reset()
    W = one_site.sites[0].W()
    sim = simulate(cfg, one_site, 3)
    for event in sim.events:
        assert event["staleness"] == 0
        for _ in range(2):
            W = W - 0.4 * client_grad(one_site, W, event["client"])
    torch.testing.assert_close(sim.W[0], W, rtol=0, atol=1e-12)


def test_adapter_job_is_the_matrix_rule_by_hand(one_site):
    """rank=r: B = 0, A Kaiming from the ``init`` stream; one step gives ΔW = −η G AᵀA."""
    cfg = AsyncFL("fedasync", 0.3, alpha=1.0, concurrency=1, rank=2)
    one_site.reset()
    W0 = one_site.sites[0].W()
    sim = simulate(cfg, one_site, 1, seed=7)
    A = kaiming_uniform().sample((2, 6), Streams(7)["init"], side="right", dtype=torch.float64)
    G = client_grad(one_site, W0, sim.events[0]["client"])
    torch.testing.assert_close(sim.W[0], W0 - 0.3 * G @ A.T @ A, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("rule", ["fedasync", "fedbuff", "fedavg"])
def test_one_engine_on_a_one_site_model_follows_the_matrix_problem(rule, rank):
    """The one engine on a one-site peft model and on the matrix problem of the same f (its
    clients' losses of fc1's weight, written out) gives the same trajectory to 1e-10: clock,
    crashes, noise, the adapter's init and its scaling s = α/r = 2 (peft's lora_alpha = 4 on the
    model, AsyncFL's on the matrix), PCA uploads and bytes."""
    toy = toy_problem(clients=M, target_modules=["fc1"], lora_alpha=4)
    matrix = toy_as_matrix(toy)
    cfg = AsyncFL(rule, 0.3, rank=rank, lora_alpha=None if rank is None else 4, buffer=2,
                  local_steps=2, concurrency=3, crash=0.2, estimator=lk.sgd(sigma=0.05), speed="heavy_tail",
                  compressor=lowrank("pca", 2))  # fmt: skip
    ours, ours_events = cfg.run(toy, 5, seeds=[0, 1], events=True)
    reference, events = cfg.run(matrix, 5, seeds=[0, 1], events=True)
    pd.testing.assert_frame_equal(ours_events, events)
    pd.testing.assert_frame_equal(
        ours.drop(columns="gap"), reference.drop(columns="gap"), check_exact=False, rtol=1e-10
    )
    assert ours["loss"].iloc[-1] < ours["loss"].iloc[0]
    # the last seed's global model is committed: the model computes the matrix run's last loss
    assert sum(toy.loss(client=c) for c in range(M)) / M == pytest.approx(
        reference["loss"].iloc[-1], rel=1e-10
    )


def test_fedasync_alpha_zero_leaves_the_model_unchanged(toy):
    """α = 0 is outside the configuration's range (0, 1] (ValueError); set past the check, the
    mixing rule W ← W + 0·(…) keeps W exactly."""
    with pytest.raises(ValueError, match="alpha"):
        AsyncFL("fedasync", 0.5, alpha=0.0)
    cfg = AsyncFL("fedasync", 0.5, local_steps=2)
    object.__setattr__(cfg, "alpha", 0.0)
    before = base_weights(toy)
    frame = cfg.run(toy, 6)
    assert frame["loss"].nunique() == 1 and frame["applied"].iloc[1:].eq(1).all()
    for site, W in zip(toy.sites, before, strict=True):  # write-back merges W = W0
        assert torch.equal(site.W0, W)


def test_pca_at_full_rank_leaves_the_update_unchanged(toy):
    """k = 8 ≥ every site's min(m, n) (6 and 3): rank k_l = min(k, m_l, n_l) is full."""
    plain = AsyncFL("fedbuff", 0.5, buffer=2, local_steps=2).run(toy, 6)
    pca = AsyncFL("fedbuff", 0.5, buffer=2, local_steps=2, compressor=lowrank("pca", 8)).run(toy, 6)
    pd.testing.assert_series_equal(plain["loss"], pca["loss"], rtol=1e-10, atol=0)
    per_upload = 4 * (6 * (8 + 6) + 3 * (3 + 8))  # k_l(m_l + n_l) floats, 4 bytes each
    assert pca["bytes_up"].iloc[-1] / per_upload == plain["bytes_up"].iloc[-1] / (4 * (48 + 24))


@pytest.mark.parametrize(
    "method, floats",
    [("pca", 2 * 14 + 2 * 11), ("qrcp", 2 * 14 + 2 * 11), ("cur", (16 + 12 + 4) + (6 + 16 + 4))],
)
def test_lowrank_bytes_per_site(toy, method, floats):
    cfg = AsyncFL("fedasync", 0.5, concurrency=1, compressor=lowrank(method, 2))
    frame, events = cfg.run(toy, 3, events=True)
    assert events["bytes_up"].tolist() == [4.0 * floats] * len(events)
    assert frame["loss"].iloc[-1] < frame["loss"].iloc[0]


# -- tables and the clock ------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["fedasync", "fedbuff", "fedavg"])
@pytest.mark.parametrize("rank", [None, 2])
def test_same_seed_same_frame_columns_and_clock_of_the_matrix_run(toy, matrix, rule, rank):
    cfg = AsyncFL(rule, 0.2, buffer=2, concurrency=3, cohort=3 if rule == "fedavg" else None,
                  crash=0.2, max_staleness=1, speed="heavy_tail", rank=rank)  # fmt: skip
    a, events = cfg.run(toy, 4, seeds=[0, 1], events=True)
    b = cfg.run(toy, 4, seeds=[0, 1])
    pd.testing.assert_frame_equal(a, b)
    mat, mat_events = cfg.run(matrix, 4, seeds=[0, 1], events=True)
    assert list(a.columns) == list(mat.columns)
    assert list(events.columns) == list(mat_events.columns)
    # the clock (speeds, crashes, cohorts) does not depend on the problem
    pd.testing.assert_frame_equal(events[CLOCK], mat_events[CLOCK])
    assert a["time"].tolist() == mat["time"].tolist()
    assert a["gap"].isna().all() and events["crashed"].any()
    assert rule == "fedavg" or events["discarded"].any()


@pytest.mark.parametrize("rule, margin", [("fedasync", 0.1), ("fedbuff", 0.2), ("fedavg", 0.2)])
def test_rules_lower_the_loss_and_write_the_global_model(toy, rule, margin):
    frame = AsyncFL(rule, 0.5, buffer=2, local_steps=2).run(toy, 20)
    first, last = frame["loss"].iloc[0], frame["loss"].iloc[-1]
    assert last < first - margin  # measured: 1.254 → 1.137 / 1.009 / 1.000
    # merged into the base weights with B = 0: the model computes the global model
    assert sum(toy.loss(client=c) for c in range(M)) / M == pytest.approx(last, rel=1e-12)
    assert all(float(site.B.detach().abs().max()) == 0.0 for site in toy.sites)


def test_adapter_clients_lower_the_loss(toy):
    frame = AsyncFL("fedasync", 0.5, local_steps=3, rank=2, estimator=lk.sgd(sigma=0.01)).run(
        toy, 15
    )
    assert frame["loss"].iloc[-1] < frame["loss"].iloc[0] - 0.02  # measured: 1.254 → 1.21


# -- divergence ----------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [1e300, 1e308])  # an exploding loss; an overflow to inf/NaN
def test_divergence_keeps_the_global_model(toy, gamma):
    toy.reset()
    before = base_weights(toy)
    with pytest.raises(DivergenceError, match="keeps update 0") as info:
        AsyncFL("fedasync", gamma, local_steps=2).run(toy, 3)
    assert info.value.step == 1 and len(info.value.frame) == 1
    for site, W in zip(toy.sites, before, strict=True):
        assert torch.isfinite(site.W0).all() and torch.equal(site.W0, W)


def test_non_finite_candidate_is_rejected_whole(toy):
    """One site's update is NaN: no site is written (the candidate is checked before use)."""
    sim = Simulation(AsyncFL("fedasync", 0.1), toy, 0)
    old = sim.W
    bad = PerSite([old[0] + 1.0, old[1] * float("nan")])
    with pytest.raises(DivergenceError):
        sim.apply(bad, [0])
    assert sim.W is old and sim.version == 0


# -- options -------------------------------------------------------------------------------------
def test_options_that_do_not_map_raise(toy):
    with pytest.raises(ValueError, match="rank"):
        AsyncFL("fedasync", 0.1, rank=4).run(toy, 2)  # fc2 is 3×8: r ≤ 3
    with pytest.raises(ValueError, match="no clients"):
        AsyncFL("fedasync", 0.1).run(toy_problem(), 2)
    with pytest.raises(ValueError, match="progress"):
        AsyncFL("fedasync", 0.1).run(toy, 2, progress=1)
    with pytest.raises(ValueError, match="speed must give one time per client"):
        AsyncFL("fedasync", 0.1, speed=(1.0, 2.0)).run(toy, 2)


def test_progress_bars(toy, matrix, capsys):
    AsyncFL("fedasync", 0.1).run(toy, 3, progress=True)
    AsyncFL("fedasync", 0.1).run(matrix, 3, seeds=[0, 1], progress=True)
    err = capsys.readouterr().err
    assert "fedasync seed 0" in err and "3/3" in err  # model scale: the server updates
    assert "2/2" in err  # matrix scale: the seeds
