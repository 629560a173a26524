"""RW-LoRA (RW-LoRA Algorithm 1; spec rw_lora.md §4, §9.2 items 6–7, 12, 14)."""

import itertools
import math
import warnings

import networkx as nx
import numpy as np
import pytest
import torch

import lorakit as lk
from lorakit.chain import DivergenceError
from lorakit.decentralized.walk import RWLoRA, token_path, visit_frequencies

M_NODES, m, n = 5, 6, 4


@pytest.fixture(scope="module")
def problem():
    return lk.problems.heterogeneous_quadratics(M_NODES, m, n, L=1.0, spread=1.0, seed=3)


@pytest.fixture(scope="module")
def tiny():
    """Small m, n for the long walks (visit frequencies)."""
    return lk.problems.heterogeneous_quadratics(M_NODES, 2, 2, L=1.0, spread=1.0, seed=1)


@pytest.fixture(scope="module")
def sized():
    """Finite-sum nodes of 4, 8, 12, 16 and 20 rows (for π ∝ sizes)."""
    base = lk.problems.linear_regression(2, 2, n_pretrain=60, n_finetune=60, seed=0)
    cuts = [0, 4, 12, 24, 40, 60]
    parts = [torch.arange(a, b) for a, b in itertools.pairwise(cuts)]
    return lk.problems.split(base, M_NODES, parts=parts)


def centre(problem, v):
    """C_v of node v's objective f_v(W) = ½‖W − C_v‖² (isotropic Λ = 1)."""
    return problem.clients[v].W_star


def hand_step(problem, v, A, B, lr, s):
    """Eqs. (7)–(8) written out: both gradients at the same W = W0 + s·BA, ∇f_v(W) = W − C_v."""
    G = problem.W0 + s * B @ A - centre(problem, v)
    return A - lr * s * B.T @ G, B - lr * s * G @ A.T


def replay(problem, path, A, B, lr, s=1.0):
    for v in path:
        A, B = hand_step(problem, v, A, B, lr, s)
    return A, B


def asymptotic_sd(P, pi, v, T):
    """Standard deviation of the empirical frequency of v over T steps of a stationary chain:
    σ² = 2⟨f̃, Z f̃⟩_π − ⟨f̃, f̃⟩_π with Z = (I − P + 1πᵀ)⁻¹, f̃ = 1_v − π_v (Markov-chain CLT)."""
    N = len(pi)
    f = (np.arange(N) == v).astype(float) - pi[v]
    Z = np.linalg.inv(np.eye(N) - P + np.outer(np.ones(N), pi))
    var = 2 * np.sum(pi * f * (Z @ f)) - np.sum(pi * f * f)
    return math.sqrt(max(var, 0.0) / T)


# --------------------------------------------------------------------------------------------
# The update
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [None, 6.0])
def test_one_hop_is_the_simultaneous_sgd_step_at_the_visited_node(problem, alpha):
    cfg = RWLoRA(3, 0.05, alpha=alpha)
    s = (alpha or 3) / 3
    sim = cfg.simulator(problem, nx.complete_graph(M_NODES), seed=2)
    sim.B = torch.randn(m, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    A0, B0, v = sim.A.clone(), sim.B.clone(), sim.node
    sim.hop()
    A1, B1 = hand_step(problem, v, A0, B0, 0.05, s)
    torch.testing.assert_close(sim.A, A1, rtol=0, atol=1e-14)
    torch.testing.assert_close(sim.B, B1, rtol=0, atol=1e-14)
    # The same gradients by autograd on f_v(W0 + s·BA): eq. (12).
    A, B = A0.clone().requires_grad_(), B0.clone().requires_grad_()
    problem.clients[v].loss(problem.W0 + s * B @ A).backward()
    torch.testing.assert_close(A0 - 0.05 * A.grad, A1, rtol=0, atol=1e-13)
    torch.testing.assert_close(B0 - 0.05 * B.grad, B1, rtol=0, atol=1e-13)


def test_first_hop_moves_only_B_and_starts_from_W0(problem):
    """B^(0) = 0: W^(0) = W0 and ∇_A = Bᵀ∇f = 0 in the first step (spec §4.3 note)."""
    sim = RWLoRA(2, 0.1).simulator(problem, nx.complete_graph(M_NODES), seed=0)
    A0 = sim.A.clone()
    assert bool((sim.B == 0).all())
    sim.hop()
    assert torch.equal(sim.A, A0) and float(sim.B.abs().max()) > 0


def test_local_steps_repeat_the_step_at_the_same_node(problem):
    sim = RWLoRA(2, 0.05, local_steps=3).simulator(problem, nx.cycle_graph(M_NODES), seed=4)
    A, B, v = sim.A.clone(), sim.B.clone(), sim.node
    record = sim.hop()
    assert record["node"] == v
    A, B = replay(problem, [v, v, v], A, B, 0.05)
    torch.testing.assert_close(sim.A, A, rtol=0, atol=1e-14)
    torch.testing.assert_close(sim.B, B, rtol=0, atol=1e-14)


def test_the_token_moves_only_by_the_visited_nodes_gradients(problem):
    """Replaying eqs. (7)–(8) along the recorded walk reproduces every logged loss."""
    cfg, G = RWLoRA(2, 0.08), nx.erdos_renyi_graph(M_NODES, 0.6, seed=1)
    h = cfg.run(problem, 40, seeds=5, graph=G)
    path = h.attrs["path"][5]
    assert path[:-1] == h.node.tolist()[1:] and path[0] == h.node.iloc[0]
    A = cfg.simulator(problem, G, seed=5).A
    B = torch.zeros(m, 2, dtype=torch.float64)
    for t in range(1, 41):
        A, B = hand_step(problem, path[t - 1], A, B, 0.08, 1.0)
        loss = float(problem.loss(problem.W0 + B @ A))
        assert math.isclose(h.loss.iloc[t], loss, rel_tol=1e-12)
    # Every hop follows an edge of G or stays put (MH's self-weight on an irregular graph).
    for u, v in itertools.pairwise(path):
        assert u == v or G.has_edge(u, v)


def test_adamw_token_matches_torch_adamw(problem):
    """optimizer="adamw": the token's step is torch.optim.AdamW's on (A, B), state travelling."""
    cfg = RWLoRA(2, 0.01, optimizer="adamw", optimizer_kwargs={"weight_decay": 0.05})
    sim = cfg.simulator(problem, nx.complete_graph(M_NODES), seed=1)
    A = sim.A.clone().requires_grad_()
    B = sim.B.clone().requires_grad_()
    opt = torch.optim.AdamW([A, B], lr=0.01, weight_decay=0.05)
    for _ in range(4):
        v = sim.node
        sim.hop()
        opt.zero_grad()
        problem.clients[v].loss(problem.W0 + B @ A).backward()
        opt.step()
        torch.testing.assert_close(sim.A, A.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(sim.B, B.detach(), rtol=1e-12, atol=1e-14)
    assert int(sim.state["state"][0]["step"]) == 4  # the optimizer's state_dict


def test_loss_and_gap_use_the_pi_weighted_objective(problem):
    pi = np.array([1.0, 2.0, 3.0, 4.0, 5.0]) / 15
    h = RWLoRA(2, 0.05, pi=pi).run(problem, 30, graph=nx.complete_graph(M_NODES), log_every=10)
    # f_v = ½‖W − C_v‖²: min_W Σ π_v f_v is at W* = Σ π_v C_v.
    C = torch.stack([centre(problem, v) for v in range(M_NODES)])
    w = torch.tensor(pi)
    W_star = (w[:, None, None] * C).sum(0)
    f_star = float((w * problem.client_losses(W_star)).sum())
    np.testing.assert_allclose((h.loss - h.gap).to_numpy(), f_star, rtol=1e-12)
    assert (h.gap > 0).all()
    assert h.attrs["pi"] == pytest.approx(pi.tolist())
    W0 = problem.W0
    assert h.loss.iloc[0] == pytest.approx(float((w * problem.client_losses(W0)).sum()), rel=1e-13)


# --------------------------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("graph", "pi"),
    [
        (nx.complete_graph(M_NODES), None),
        (nx.complete_graph(M_NODES), "sizes"),
        (nx.star_graph(M_NODES - 1), "sizes"),
    ],
    ids=["complete-uniform", "complete-sizes", "star-sizes"],
)
def test_visit_frequencies_approach_pi(tiny, sized, graph, pi):
    """Ergodic theorem (spec §9.2 item 6): within 5 Markov-CLT standard deviations of π."""
    problem = tiny if pi is None else sized
    T = 12_000
    cfg = RWLoRA(1, 1e-3, pi=pi, start="stationary")
    h = cfg.run(problem, T, seeds=[0, 1] if pi is None else 0, graph=graph, log_every=T)
    P, target = cfg.transition_matrix(problem, graph)
    np.testing.assert_array_equal(target, h.attrs["pi"])
    if pi == "sizes":
        np.testing.assert_allclose(target, np.array([4, 8, 12, 16, 20]) / 60)
    np.testing.assert_allclose(target @ P, target, atol=1e-12)
    freq = visit_frequencies(h)
    assert set(freq.columns) >= {"seed", "node", "visits", "frequency", "pi"}
    assert (freq.groupby("seed").visits.sum() == T).all()
    for row in freq.itertuples():
        sd = asymptotic_sd(P, target, row.node, T)
        assert abs(row.frequency - row.pi) <= 5 * sd, (row, sd)


def test_visit_frequencies_from_the_node_column(problem):
    """Without attrs (e.g. after a concat) the logged ``node`` column gives the same counts."""
    h = RWLoRA(2, 0.05).run(problem, 50, seeds=[0, 1], graph=nx.cycle_graph(M_NODES))
    a = visit_frequencies(h)
    plain = h.copy()
    plain.attrs = {}
    b = visit_frequencies(plain)
    np.testing.assert_array_equal(a.visits.to_numpy(), b.visits.to_numpy())
    path = token_path(h, seed=1)
    assert path.hop.tolist() == list(range(51)) and path.node.tolist() == h.attrs["path"][1]


def test_start_options(problem):
    G = nx.complete_graph(M_NODES)
    assert RWLoRA(2, 0.1).simulator(problem, G).node == 0
    assert RWLoRA(2, 0.1, start=3).simulator(problem, G).node == 3
    starts = {RWLoRA(2, 0.1, start="uniform").simulator(problem, G, seed=s).node for s in range(40)}
    assert starts == set(range(M_NODES))


def test_periodic_walk_warns_and_lazy_does_not(problem):
    ring = nx.cycle_graph(4)
    p4 = lk.problems.heterogeneous_quadratics(4, 3, 3, seed=0)
    with pytest.warns(UserWarning, match="periodic"):
        RWLoRA(1, 0.05).run(p4, 5, graph=ring)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = RWLoRA(1, 0.05, transition="lazy").run(p4, 200, graph=ring, messages=True)[1]
    assert (h.src == h.dst).mean() == pytest.approx(0.5, abs=0.12)  # (I + P)/2 stays half the time


# --------------------------------------------------------------------------------------------
# Communication (spec §4.5, §10.5)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("N", [4, 12])
def test_communication_per_hop_is_one_adapter_independent_of_N(N):
    problem = lk.problems.heterogeneous_quadratics(N, m, n, seed=0)
    h = RWLoRA(2, 0.05).run(problem, 25, graph=nx.complete_graph(N))
    adapter = 2 * (m + n)
    np.testing.assert_array_equal(h.communicated_params, h.hop * adapter)
    np.testing.assert_array_equal(h.bytes, h.hop * adapter * 4)
    np.testing.assert_array_equal(h.local_updates, h.hop)
    np.testing.assert_array_equal(h.transfers, h.hop)
    assert (h.mismatch == 0).all()


def test_optimizer_state_travels_only_when_it_is_on_the_token(problem):
    G, adapter = nx.complete_graph(M_NODES), 2 * (m + n)
    token = RWLoRA(2, 0.01, optimizer="adamw").run(problem, 10, graph=G)
    node = RWLoRA(2, 0.01, optimizer="adamw", optimizer_state="node").run(problem, 10, graph=G)
    assert token.communicated_params.iloc[-1] == 10 * (3 * adapter + 1)
    assert node.communicated_params.iloc[-1] == 10 * adapter
    assert RWLoRA(2, 0.01, local_steps=4).run(problem, 10, graph=G).local_updates.iloc[-1] == 40


# --------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------
def test_node_failure_skips_down_nodes_and_loses_no_work(problem):
    G = nx.erdos_renyi_graph(M_NODES, 0.7, seed=2)
    cfg = RWLoRA(2, 0.05, node_failure=0.4)
    h, msgs = cfg.run(problem, 120, seeds=7, graph=G, messages=True)
    for msg in msgs.itertuples():
        assert msg.dst not in msg.down  # never lands on a down node
        if msg.skipped >= 0:
            assert msg.skipped in msg.down and msg.dst != msg.skipped
    skipped = int(msgs.skipped.ge(0).sum())
    assert skipped > 5 and h.skipped_nodes.iloc[-1] == skipped
    assert h.lost_hops.iloc[-1] == 0 and h.local_updates.iloc[-1] == 120
    # Nothing but skipped destinations is lost: the token is exactly eqs. (7)–(8) along its path.
    path = h.attrs["path"][7]
    A, B = replay(
        problem,
        path[:-1],
        cfg.simulator(problem, G, seed=7).A,
        torch.zeros(m, 2, dtype=torch.float64),
        0.05,
    )
    assert h.loss.iloc[-1] == pytest.approx(float(problem.loss(problem.W0 + B @ A)), rel=1e-12)
    # Same walk stream: identical to the run without failures up to the first skipped hop.
    base = RWLoRA(2, 0.05).run(problem, 120, seeds=7, graph=G)
    first = int(msgs.hop[msgs.skipped >= 0].iloc[0])
    assert base.attrs["path"][7][:first] == path[:first]
    np.testing.assert_array_equal(base.loss.iloc[: first + 1], h.loss.iloc[: first + 1])
    assert base.attrs["path"][7][first] != path[first]


def test_token_loss_resumes_from_the_previous_copy(problem):
    cfg = RWLoRA(2, 0.05, token_loss=0.3)
    sim = cfg.simulator(problem, nx.complete_graph(M_NODES), seed=3)
    lost = 0
    for _ in range(60):
        A, B, u = sim.A.clone(), sim.B.clone(), sim.node
        record = sim.hop()
        if record["lost"]:
            lost += 1
            # The lost hop's update is discarded: the sender's copy, bit for bit, at the sender.
            assert torch.equal(sim.A, A) and torch.equal(sim.B, B) and sim.node == u
        else:
            assert sim.node == record["to"]
            A1, B1 = hand_step(problem, u, A, B, 0.05, 1.0)
            torch.testing.assert_close(sim.A, A1, rtol=0, atol=1e-14)
            torch.testing.assert_close(sim.B, B1, rtol=0, atol=1e-14)
    assert 8 <= lost <= 30 and sim.lost_hops == lost
    # In the history: a lost hop leaves the loss exactly where it was; its bytes still count.
    h = cfg.run(problem, 60, seeds=3, graph=nx.complete_graph(M_NODES))
    gone = h.index[h.lost]
    assert len(gone) == lost
    np.testing.assert_array_equal(h.loss[gone].to_numpy(), h.loss[gone - 1].to_numpy())
    assert h.communicated_params.iloc[-1] == 60 * 2 * (m + n) and h.local_updates.iloc[-1] == 60


def test_seeds_are_reproducible_and_distinct(problem):
    cfg, G = (
        RWLoRA(2, 0.05, estimator=lk.sgd(sigma=0.5), start="uniform"),
        nx.complete_graph(M_NODES),
    )
    a = cfg.run(problem, 30, seeds=[0, 1], graph=G)
    b = cfg.run(problem, 30, seeds=[0, 1], graph=G)
    np.testing.assert_array_equal(a.loss.to_numpy(), b.loss.to_numpy())
    assert a.attrs["path"][0] != a.attrs["path"][1]
    assert list(a.columns[:6]) == [
        "method",
        "rank",
        "transition",
        "optimizer",
        "estimator",
        "local_steps",
    ]


def test_divergence_stops_before_a_bad_state_is_kept(problem):
    cfg, G = RWLoRA(2, 5.0, init_std=2.0), nx.complete_graph(M_NODES)
    with pytest.raises(DivergenceError, match="gamma") as err:
        cfg.run(problem, 500, graph=G)
    assert np.isfinite(err.value.frame.loss).all() and "method" in err.value.frame
    h = cfg.run(problem, 500, seeds=[0, 1], graph=G, on_divergence="stop")
    assert set(h.attrs["diverged"]) == {0, 1} and np.isfinite(h.loss).all()


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": -1.0}, "gamma"),
        ({"rank": 0}, "rank"),
        ({"node_failure": -0.1}, "node_failure"),
        ({"node_failure": 1.5}, "node_failure"),
        ({"token_loss": 2.0}, "token_loss"),
        ({"laziness": 1.0}, "laziness"),
        ({"transition": "walk"}, "transition"),
        ({"transition": np.full((5, 5), 0.3)}, "row-stochastic"),
        ({"pi": [1, -1, 1, 1, 1]}, "pi"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"optimizer_kwargs": {"momentum": 0.9}}, "optimizer_kwargs"),
        ({"transition": "metropolis", "pi": "sizes"}, "metropolis"),
    ],
)
def test_bad_configuration_is_named(kwargs, match):
    args = {"rank": 2, "gamma": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        RWLoRA(**args)


def test_bad_run_input_is_named(problem):
    cfg = RWLoRA(2, 0.1)
    with pytest.raises(ValueError, match="rank"):
        RWLoRA(5, 0.1).run(problem, 3, graph=nx.complete_graph(M_NODES))  # r > min(m, n) = 4
    with pytest.raises(ValueError, match="nodes"):
        cfg.run(problem, 3, graph=nx.complete_graph(M_NODES + 1))
    disconnected = nx.union(nx.complete_graph(3), nx.complete_graph(range(3, 5)))
    with pytest.raises(ValueError, match="connected"):
        cfg.run(problem, 3, graph=disconnected)
    with pytest.raises(ValueError, match="start"):
        RWLoRA(2, 0.1, start=M_NODES).run(problem, 3, graph=nx.complete_graph(M_NODES))
    with pytest.raises(ValueError, match="hops"):
        cfg.run(problem, 0, graph=nx.complete_graph(M_NODES))
    with pytest.raises(ValueError, match="sizes"):
        RWLoRA(2, 0.1, pi="sizes").run(problem, 3, graph=nx.complete_graph(M_NODES))
    with pytest.raises(ValueError, match="FederatedProblem"):
        cfg.run(problem.clients[0], 3, graph=nx.complete_graph(M_NODES))
    ring_only = np.roll(np.eye(M_NODES), 1, axis=1)  # a cycle 0→1→…: not on the path graph
    with pytest.raises(ValueError, match="edge"):
        RWLoRA(2, 0.1, transition=ring_only).run(problem, 3, graph=nx.path_graph(M_NODES))
