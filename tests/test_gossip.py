"""Gossip Dec-LoRA and the bilinear mismatch (spec rw_lora.md §5, §6, §9.2 items 13–14, §10.5)."""

import networkx as nx
import numpy as np
import pytest
import torch

import lorakit as lk
from lorakit.decentralized.gossip import (
    GossipLoRA,
    check_mixing,
    equal_weights,
    metropolis_matrix,
)
from lorakit.decentralized.graphs import make_graph
from lorakit.decentralized.markov import metropolis_weights, uniform_weights
from lorakit.decentralized.mismatch import (
    bilinear_mismatch,
    mismatch_identity_rhs,
    mismatch_norms,
    product_rank,
)
from lorakit.decentralized.walk import RWLoRA

N, m, n = 5, 6, 4


@pytest.fixture(scope="module")
def problem():
    return lk.problems.heterogeneous_quadratics(N, m, n, L=1.0, spread=1.0, seed=3)


def stacks(gen, K=N, mm=m, nn=n, r=2):
    B = torch.randn(K, mm, r, generator=gen, dtype=torch.float64)
    A = torch.randn(K, r, nn, generator=gen, dtype=torch.float64)
    return B, A


def is_doubly_stochastic(M, support=None):
    M = np.asarray(M)
    ok = (M >= -1e-15).all() and np.allclose(M, M.T, atol=1e-15)
    ok = ok and np.allclose(M.sum(0), 1, atol=1e-13) and np.allclose(M.sum(1), 1, atol=1e-13)
    if support is not None:
        off = ~np.asarray(support, dtype=bool) & ~np.eye(len(M), dtype=bool)
        ok = ok and bool((M[off] == 0).all())
    return bool(ok)


# --------------------------------------------------------------------------------------------
# The mismatch identity (spec §6)
# --------------------------------------------------------------------------------------------
def test_mismatch_identity_uniform_weighted_and_mixing_rows(gen):
    B, A = stacks(gen)
    w = torch.rand(N, generator=gen, dtype=torch.float64)
    w = w / w.sum()
    Mx = torch.as_tensor(metropolis_matrix(nx.to_numpy_array(nx.cycle_graph(N))))
    for weights in (None, w, Mx):
        lhs = bilinear_mismatch(B, A, weights)
        rhs = mismatch_identity_rhs(B, A, weights)
        assert float((lhs - rhs).abs().max()) <= 1e-12
        assert float(lhs.abs().max()) > 1e-3
    # Spelled out for uniform weights: Σ w_i B_i A_i − B̄Ā.
    direct = (B @ A).mean(0) - B.mean(0) @ A.mean(0)
    torch.testing.assert_close(bilinear_mismatch(B, A), direct, rtol=0, atol=1e-13)
    # Row k of a mixing matrix is node k's mismatch.
    row = bilinear_mismatch(B, A, Mx[2])
    torch.testing.assert_close(bilinear_mismatch(B, A, Mx)[2], row, rtol=0, atol=1e-13)
    assert mismatch_norms(B, A, Mx).shape == (N,)


def test_mismatch_vanishes_when_one_factor_is_shared(gen):
    B, A = stacks(gen)
    same_A = A[:1].expand_as(A)
    same_B = B[:1].expand_as(B)
    assert float(bilinear_mismatch(B, same_A).abs().max()) <= 1e-12
    assert float(bilinear_mismatch(same_B, A).abs().max()) <= 1e-12


def test_mismatch_rejects_bad_weights(gen):
    B, A = stacks(gen)
    with pytest.raises(ValueError, match="sum to 1"):
        bilinear_mismatch(B, A, torch.ones(N))
    with pytest.raises(ValueError, match="non-negative"):
        bilinear_mismatch(B, A, torch.tensor([2.0, -1.0, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        bilinear_mismatch(B, A, torch.full((N + 1,), 1 / (N + 1)))
    with pytest.raises(ValueError, match="A_stack"):
        bilinear_mismatch(B, A[:-1])


def test_rank_of_averaged_products_is_min_Nr_m_n(gen):
    """Point (ii) of the paper: Σ_i B_i A_i leaves the rank-r family, generically rank min(Nr, m, n)."""
    for K, mm, nn, r in [(3, 10, 10, 2), (4, 8, 9, 3), (2, 12, 7, 2)]:
        B, A = stacks(gen, K, mm, nn, r)
        assert product_rank(B, A) == min(K * r, mm, nn)
        assert product_rank(B[:1], A[:1]) == r


# --------------------------------------------------------------------------------------------
# Gossip rounds
# --------------------------------------------------------------------------------------------
def test_complete_graph_uniform_round_is_local_steps_then_exact_averaging(problem):
    """M = J/N: one round = every node's local SGD steps, then the plain mean of the factors."""
    cfg = GossipLoRA(2, 0.1, mixing="uniform", local_steps=2)
    sim = cfg.simulator(problem, nx.complete_graph(N), seed=0)
    np.testing.assert_allclose(sim.M, np.full((N, N), 1 / N), atol=1e-15)
    sim.B = torch.randn(N, m, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    A0, B0 = sim.A.clone(), sim.B.clone()
    record = sim.round()
    As, Bs = [], []
    for i in range(N):
        A, B = A0[i], B0[i]
        for _ in range(2):
            G = problem.W0 + B @ A - problem.clients[i].W_star  # ∇f_i = W − C_i
            A, B = A - 0.1 * B.T @ G, B - 0.1 * G @ A.T
        As.append(A)
        Bs.append(B)
    A_bar, B_bar = torch.stack(As).mean(0), torch.stack(Bs).mean(0)
    for i in range(N):
        torch.testing.assert_close(sim.A[i], A_bar, rtol=0, atol=1e-13)
        torch.testing.assert_close(sim.B[i], B_bar, rtol=0, atol=1e-13)
    # With identical rows every node's mismatch is the global one.
    assert record["mismatch"] == pytest.approx(record["mismatch_global"], rel=1e-12)
    expected = torch.linalg.matrix_norm(bilinear_mismatch(torch.stack(Bs), torch.stack(As)))
    assert record["mismatch_global"] == pytest.approx(float(expected), rel=1e-12)
    row = sim.log(record)
    assert row["node_loss_mean"] == pytest.approx(row["loss"], rel=1e-12)  # consensus reached
    assert row["consensus"] == pytest.approx(0.0, abs=1e-24)


def test_all_nodes_start_identical_and_the_first_round_has_no_mismatch(problem):
    """B = 0 at the start, so A gets no gradient in round 1: all A_i stay equal and 𝓜 = 0."""
    h = GossipLoRA(2, 0.1).run(problem, 6, graph=nx.cycle_graph(N))
    assert h.mismatch.iloc[1] <= 1e-12 and h.mismatch_global.iloc[1] <= 1e-12
    assert (h.mismatch.iloc[2:] > 1e-4).all() and (h.mismatch_global.iloc[2:] > 1e-4).all()
    assert h.loss.iloc[0] == h.node_loss_mean.iloc[0] == h.local_loss_mean.iloc[0]
    assert (h.consensus.iloc[2:] > 0).all()


def test_mismatch_is_zero_when_all_nodes_are_identical():
    same = lk.problems.heterogeneous_quadratics(N, m, n, spread=0.0, seed=3)
    h = GossipLoRA(2, 0.1, local_steps=2).run(same, 8, graph=nx.cycle_graph(N))
    assert (h.mismatch <= 1e-12).all() and (h.mismatch_global <= 1e-12).all()
    assert (h.consensus <= 1e-28).all()  # mixing equal factors: rounding only


def test_mismatch_against_rw_lora_on_heterogeneous_nodes(problem):
    """RW-LoRA's single token has no mismatch; gossip pays one after its local steps."""
    G = nx.cycle_graph(N)
    gossip = GossipLoRA(2, 0.1).run(problem, 10, graph=G)
    walk = RWLoRA(2, 0.1, transition="lazy").run(problem, 10, graph=G)
    assert (walk.mismatch == 0).all() and gossip.mismatch.iloc[-1] > 1e-3


@pytest.mark.filterwarnings("ignore:the walk is periodic")
@pytest.mark.parametrize(
    ("graph", "degree_sum"), [(nx.cycle_graph(10), 20), (nx.complete_graph(10), 90)]
)
def test_communication_per_round_is_sum_of_degrees_times_one_adapter(graph, degree_sum):
    """Spec §10.5's exact-degree counts: per round Σ_i deg_i adapters (ring 2N, complete N(N−1)),
    N local updates; RW-LoRA sends one adapter and makes one update per hop."""
    problem = lk.problems.heterogeneous_quadratics(10, 3, 5, seed=0)
    adapter = 2 * (3 + 5)
    h = GossipLoRA(2, 0.05).run(problem, 3, graph=graph)
    np.testing.assert_array_equal(h.communicated_params, h["round"] * degree_sum * adapter)
    np.testing.assert_array_equal(h.bytes, h.communicated_params * 4)
    np.testing.assert_array_equal(h.local_updates, h["round"] * 10)
    walk = RWLoRA(2, 0.05, transition="mh").run(problem, 3, graph=graph)
    ratio = h.communicated_params.iloc[-1] / walk.communicated_params.iloc[-1]
    assert ratio == degree_sum  # 10× the node count × degree: 20 (ring), 90 (complete)
    assert h.local_updates.iloc[-1] / walk.local_updates.iloc[-1] == 10
    # The paper's layer sizes (RoBERTa-base q, v at r = 16): 589,824 floats per adapter.
    assert 12 * 2 * 16 * (768 + 768) * degree_sum in (11_796_480, 53_084_160)


@pytest.mark.parametrize(
    ("graph", "r", "d"),
    [(nx.cycle_graph(5), 2, 12), (nx.path_graph(3), 2, 10)],
    ids=["ring5", "path3"],
)
def test_rank_of_summed_node_products_in_a_gossip_run(graph, r, d):
    """spec §6 (ii) on a real run. The factors the nodes mix (after their local steps) are generic:
    rank(Σ_i B_i A_i) = min(N r, m, n). After mixing, Σ_i B_i A_i = [B](MᵀM ⊗ I)[A], so the rank is
    min(r·rank(M), m, n): N r on the 5-ring (M invertible), but 2r on the 3-path, whose Metropolis
    matrix [[2/3, 1/3, 0], [1/3, 1/3, 1/3], [0, 1/3, 2/3]] is singular. Each node stays rank ≤ r."""
    N = graph.number_of_nodes()
    big = lk.problems.heterogeneous_quadratics(N, d, d, spread=1.0, seed=0)
    sim = GossipLoRA(r, 0.1).simulator(big, graph, seed=0)
    for _ in range(3):
        sim.round()
    A_half, B_half, _ = sim.local_steps()
    assert product_rank(B_half, A_half) == min(N * r, d)
    sim.round()
    rank_M = int(np.linalg.matrix_rank(sim.M))
    assert product_rank(sim.B, sim.A) == min(r * rank_M, d)
    assert (rank_M == N) == (graph.number_of_edges() == 5)
    for i in range(N):
        assert int(torch.linalg.matrix_rank(sim.B[i] @ sim.A[i])) <= r


# --------------------------------------------------------------------------------------------
# Mixing matrices and dropped links
# --------------------------------------------------------------------------------------------
def test_mixing_matrices_match_markov_on_the_whole_graph():
    """Metropolis weights as lorakit.decentralized.markov builds them; the equal weights are its
    uniform 1/(d + 1) weights on regular graphs and stay doubly stochastic on irregular ones."""
    for G in (make_graph("star", 6), make_graph("erdos_renyi", 8, seed=1), make_graph("ring", 7)):
        adj = nx.to_numpy_array(G, nodelist=range(G.number_of_nodes()))
        np.testing.assert_allclose(metropolis_matrix(adj), metropolis_weights(G), atol=1e-15)
        assert is_doubly_stochastic(equal_weights(adj), adj)
    for G in (make_graph("ring", 6), make_graph("torus", 9), make_graph("complete", 5)):
        adj = nx.to_numpy_array(G, nodelist=range(G.number_of_nodes()))
        np.testing.assert_allclose(equal_weights(adj), uniform_weights(G), atol=1e-15)


@pytest.mark.parametrize("mixing", ["metropolis", "uniform", "custom"])
def test_dropped_links_keep_mixing_doubly_stochastic(mixing):
    G = nx.erdos_renyi_graph(8, 0.5, seed=4)
    assert nx.is_connected(G)
    adj = nx.to_numpy_array(G, nodelist=range(8)) > 0
    problem = lk.problems.heterogeneous_quadratics(8, 3, 3, seed=0)
    kind = equal_weights(adj) if mixing == "custom" else mixing
    sim = GossipLoRA(1, 0.05, mixing=kind, link_failure=0.4).simulator(problem, G, seed=0)
    dropped_any = False
    for _ in range(30):
        M, dropped = sim.mixing()
        dropped_any |= bool(dropped.any())
        assert (dropped == dropped.T).all() and not (dropped & ~adj).any()
        assert is_doubly_stochastic(M, adj & ~dropped)  # nothing on a dropped link
    assert dropped_any
    # The node average of the factors is preserved by a round's mixing.
    sim.B = torch.randn(8, 3, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    A_half, B_half, _ = sim.local_steps()
    record = sim.round()
    assert record["dropped_links"] > 0
    torch.testing.assert_close(sim.A.mean(0), A_half.mean(0), rtol=0, atol=1e-13)
    torch.testing.assert_close(sim.B.mean(0), B_half.mean(0), rtol=0, atol=1e-13)


def test_dropped_links_carry_nothing(problem):
    G = nx.complete_graph(N)
    h, msgs = GossipLoRA(2, 0.05, link_failure=0.3).run(problem, 12, graph=G, messages=True)
    per_round = msgs.groupby("round").params.sum().cumsum()
    np.testing.assert_array_equal(h.communicated_params.iloc[1:], per_round.to_numpy())
    assert (msgs[msgs.dropped].params == 0).all() and msgs.dropped.any()
    links = msgs[~msgs.dropped].groupby("round").size() // 2
    np.testing.assert_array_equal(h.links.iloc[1:], links.reindex(range(1, 13), fill_value=0))
    assert (h.links + h.dropped_links == 10).all()


def test_adamw_state_stays_on_the_nodes(problem):
    h = GossipLoRA(2, 0.01, optimizer="adamw").run(problem, 5, graph=nx.cycle_graph(N))
    assert h.communicated_params.iloc[-1] == 5 * 2 * N * 2 * (m + n)
    assert np.isfinite(h.loss).all() and h.loss.iloc[-1] < h.loss.iloc[0]


def test_gossip_on_identical_nodes_matches_rw_lora_on_the_same_objective():
    """With identical nodes every gossip node runs the same SGD as RW-LoRA's token (mixing
    identical factors changes nothing), from the same init stream."""
    same = lk.problems.heterogeneous_quadratics(N, m, n, spread=0.0, seed=3)
    g = GossipLoRA(2, 0.1).run(same, 10, seeds=4, graph=nx.cycle_graph(N))
    w = RWLoRA(2, 0.1, transition="lazy").run(same, 10, seeds=4, graph=nx.cycle_graph(N))
    np.testing.assert_allclose(g.loss.to_numpy(), w.loss.to_numpy(), rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gamma": 0.0}, "gamma"),
        ({"rank": 0}, "rank"),
        ({"link_failure": -0.5}, "link_failure"),
        ({"link_failure": 1.1}, "link_failure"),
        ({"mixing": "max"}, "mixing"),
        ({"mixing": np.full((N, N), 0.5)}, "doubly stochastic"),
        ({"mixing": np.array([[0.5, 0.5], [0.0, 1.0]])}, "symmetric"),
        ({"local_steps": 0}, "local_steps"),
    ],
)
def test_bad_configuration_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GossipLoRA(**{"rank": 2, "gamma": 0.1, **kwargs})


def test_bad_run_input_is_named(problem):
    cfg = GossipLoRA(2, 0.1)
    with pytest.raises(ValueError, match="rank"):
        GossipLoRA(5, 0.1).run(problem, 2, graph=nx.complete_graph(N))
    with pytest.raises(ValueError, match="nodes"):
        cfg.run(problem, 2, graph=nx.cycle_graph(N + 2))
    with pytest.raises(ValueError, match="connected"):
        cfg.run(problem, 2, graph=nx.union(nx.path_graph(2), nx.path_graph(range(2, 5))))
    with pytest.raises(ValueError, match="not a link"):
        GossipLoRA(2, 0.1, mixing=np.full((N, N), 1 / N)).run(problem, 2, graph=nx.cycle_graph(N))
    with pytest.raises(ValueError, match="rounds"):
        cfg.run(problem, 0, graph=nx.cycle_graph(N))
    with pytest.raises(ValueError, match="doubly"):
        check_mixing(np.eye(N) * 0.5)
