"""Markov-chain tools of lorakit.decentralized (RW-LoRA spec §2, §4.4, §5, §9).

The §9.1 numbers are "(computed)" values of the spec, reproduced here exactly (integers) or to the
digits printed there (floats); each assertion carries the source "RW-LoRA spec §9.1".
"""

import math

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import sympy
import torch

from lorakit import decentralized as dc
from lorakit.decentralized import (
    GRAPHS,
    as_graph,
    check_connected,
    complete_graph_tv_symbolic,
    is_periodic,
    lazy,
    levin_peres_bounds,
    make_graph,
    metropolis_hastings,
    metropolis_weights,
    mixing_time,
    period,
    pi_from_sizes,
    sparse_spectral_bounds,
    spectral,
    stationary_distribution,
    tv_distance_curve,
    uniform_weights,
    validate_chain,
)

EPS = (0.4, 0.25, 0.1, 0.05, 0.01)


def _taus(P, scale=1.0):
    return [mixing_time(P, scale * e).value for e in EPS]


def _brute_tau(P, eps, t_max=3000):
    d = tv_distance_curve(P, t_max)
    hits = np.flatnonzero(d[1:] <= eps * (1 + 1e-9))
    return int(hits[0]) + 1 if hits.size else math.inf


# ----------------------------------------------------------------------------------------------
# RW-LoRA spec §9.1: the paper's graphs, N = 10, uniform π


def test_ring_mh_is_the_periodic_simple_random_walk():
    P = metropolis_hastings(make_graph("ring", 10))
    # RW-LoRA spec §4.4/§9.1: MH on the ring is P_{u,u±1} = 1/2 with no self-loops.
    for u in range(10):
        assert P[u, (u + 1) % 10] == 0.5 and P[u, (u - 1) % 10] == 0.5
    assert np.all(np.diag(P) == 0.0)
    assert period(P) == 2 and is_periodic(P)
    # RW-LoRA spec §9.1: eigenvalues cos(2πk/10), including −1.
    spec = spectral(P)
    np.testing.assert_allclose(
        spec.eigenvalues, np.sort(np.cos(2 * np.pi * np.arange(10) / 10))[::-1], atol=1e-12
    )
    assert spec.absolute_gap == 0.0 and math.isinf(spec.t_rel)
    # RW-LoRA spec §9.1: τ_mix(ε) = ∞ for every ε < 1/2.
    for eps in (*EPS, 0.49):
        tau = mixing_time(P, eps)
        assert math.isinf(tau.value) and not tau.finite
        assert tau.reason.startswith("periodic (eigenvalue −1")
    # RW-LoRA spec §9.1: d(t) = 0.8, 0.7, 0.6, 0.575, 0.5375, 0.5, ... and never below 0.5.
    d = tv_distance_curve(P, 300)
    np.testing.assert_allclose(d[1:7], [0.8, 0.7, 0.6, 0.575, 0.5375, 0.5], atol=1e-12)
    assert d.min() >= 0.5 - 1e-12
    assert np.all(np.diff(d) <= 1e-12)
    assert mixing_time(P, 0.6).value == 3  # ε above the periodic floor 1/2 is reachable
    assert mixing_time(P, 0.5).value == 6  # d(6) = 1/2 exactly


def test_lazy_ring_table():
    L = lazy(metropolis_hastings(make_graph("ring", 10)))
    # RW-LoRA spec §9.1, lazy ring (I + P)/2.
    assert _taus(L) == [5, 10, 19, 26, 42]
    assert _taus(L, scale=1 / 10) == [28, 33, 42, 49, 65]  # τ_mix(π_min ε)
    spec = spectral(L)
    assert spec.absolute_gap == pytest.approx(0.09549, abs=5e-6)
    assert spec.t_rel == pytest.approx(10.472, abs=5e-4)
    assert spec.reversible and spec.lambda_star == pytest.approx(spec.lambda_2)
    # RW-LoRA spec §9.1, row "upper bound t_rel ln(1/(π_min · π_min ε))".
    raw = [spec.t_rel * math.log(1 / (0.1 * 0.1 * e)) for e in EPS]
    np.testing.assert_allclose(raw, [57.8, 62.7, 72.3, 79.6, 96.5], atol=0.05)
    assert period(L) == 1 and not is_periodic(L)


def test_lazy_ring_levin_peres_example():
    L = lazy(metropolis_hastings(make_graph("ring", 10)))
    # RW-LoRA spec §9.2.3: lazy ring with ε' = 0.01, 37.05 ≤ 42 ≤ 72.3.
    lower, upper = levin_peres_bounds(L, 0.01)
    tau = mixing_time(L, 0.01).value
    assert lower == pytest.approx(37.05, abs=0.01)  # 37.0552, printed truncated as 37.05
    t_rel = spectral(L).t_rel
    assert t_rel * math.log(1 / (0.01 * 0.1)) == pytest.approx(72.3, abs=0.05)
    assert upper == 73  # the ceiling of 72.34
    assert lower <= tau == 42 <= upper


def test_complete_graph_table():
    P = metropolis_hastings(make_graph("complete", 10))
    np.testing.assert_allclose(P, (np.ones((10, 10)) - np.eye(10)) / 9, atol=1e-15)
    # RW-LoRA spec §9.1: eigenvalues 1 and −1/9 (×9); d(t) = 0.9 · 9^(−t).
    spec = spectral(P)
    np.testing.assert_allclose(spec.eigenvalues, [1.0] + [-1 / 9] * 9, atol=1e-12)
    d = tv_distance_curve(P, 6)
    np.testing.assert_allclose(d[1:], 0.9 * 9.0 ** -np.arange(1, 7), rtol=1e-10)
    np.testing.assert_allclose(
        d[1:6], [0.1, 0.01111, 0.001235, 1.37e-4, 1.5e-5], rtol=2e-2
    )  # the digits the spec prints (two to four significant figures)
    # RW-LoRA spec §9.1, K_10.
    assert _taus(P) == [1, 1, 1, 2, 3]
    assert _taus(P, scale=1 / 10) == [2, 2, 3, 3, 4]
    # RW-LoRA spec §9.1: τ_mix(π_min ε) = ⌈1 + log_{N−1}(1/ε)⌉.
    assert _taus(P, scale=1 / 10) == [math.ceil(1 + math.log(1 / e, 9) - 1e-12) for e in EPS]
    # RW-LoRA spec §9.1: lazy K_10, t_rel = 1.8 and τ_mix(π_min ε) = 4, 5, 6, 7, 9.
    L = lazy(P)
    assert spectral(L).t_rel == pytest.approx(1.8, abs=1e-9)
    assert _taus(L, scale=1 / 10) == [4, 5, 6, 7, 9]
    # RW-LoRA spec §9.1: K_20 and K_50 have τ_mix(0.1 π_min) = 2.
    for N in (20, 50):
        assert mixing_time(metropolis_hastings(make_graph("complete", N)), 0.1 / N).value == 2


def test_odd_rings_are_aperiodic():
    P9 = metropolis_hastings(make_graph("ring", 9))
    spec = spectral(P9)
    # RW-LoRA spec §9.1: N = 9, λ_* = 0.9397, t_rel = 16.58, τ_mix(0.1/9) = 66.
    assert period(P9) == 1
    assert spec.lambda_star == pytest.approx(0.9397, abs=5e-5)
    assert spec.t_rel == pytest.approx(16.58, abs=5e-3)
    assert mixing_time(P9, 0.1 / 9).value == 66
    # RW-LoRA spec §9.1: N = 11, λ_* = 0.9595, τ_mix(0.1/11) = 103.
    P11 = metropolis_hastings(make_graph("ring", 11))
    assert spectral(P11).lambda_star == pytest.approx(0.9595, abs=5e-5)
    assert mixing_time(P11, 0.1 / 11).value == 103


def test_complete_graph_symbolic_proof():
    holds, expr = complete_graph_tv_symbolic()
    assert holds is True
    names = {s.name: s for s in expr.free_symbols}
    assert set(names) == {"N", "t"}
    target = (names["N"] - 1) / names["N"] * (names["N"] - 1) ** (-names["t"])
    assert sympy.simplify(expr - target) == 0
    # the closed form against the numeric curve, N = 10 and N = 7
    for n_val in (10, 7):
        d = tv_distance_curve(metropolis_hastings(make_graph("complete", n_val)), 5)
        closed = [float(expr.subs({names["N"]: n_val, names["t"]: k})) for k in range(6)]
        np.testing.assert_allclose(d, closed, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Metropolis–Hastings, weights, validation


def _random_connected(seed, N=None):
    rng = np.random.default_rng(seed)
    N = N or int(rng.integers(6, 22))
    G = make_graph("erdos_renyi", N, seed=seed, p=0.35)
    pi = pi_from_sizes(rng.integers(1, 50, size=N))
    return G, pi


@pytest.mark.parametrize("seed", range(6))
def test_mh_with_nonuniform_pi_is_stationary_and_reversible(seed):
    G, pi = _random_connected(seed)
    P = metropolis_hastings(G, pi)
    validate_chain(P, G, pi, reversible=True)
    np.testing.assert_allclose(pi @ P, pi, atol=1e-14)
    F = pi[:, None] * P
    np.testing.assert_allclose(F, F.T, atol=1e-15)
    A = nx.to_numpy_array(G) > 0
    assert np.all(P[~(A | np.eye(len(pi), dtype=bool))] == 0)
    np.testing.assert_allclose(stationary_distribution(P), pi, atol=1e-12)
    # sparse output equals dense output
    np.testing.assert_array_equal(metropolis_hastings(G, pi, sparse=True).toarray(), P)


def test_mh_formula_on_a_star_and_sizes():
    N = 6
    P = metropolis_hastings(make_graph("star", N))
    # P_0v = min(1/d_0, 1/d_v) = 1/(N−1); leaves keep the rejected mass 1 − 1/(N−1).
    np.testing.assert_allclose(P[0, 1:], 1 / (N - 1))
    np.testing.assert_allclose(P[1:, 0], 1 / (N - 1))
    np.testing.assert_allclose(np.diag(P)[1:], 1 - 1 / (N - 1))
    assert P[0, 0] == 0.0
    pi = pi_from_sizes([5, 1, 1, 1, 1, 1])
    Q = metropolis_hastings(make_graph("star", N), pi)
    validate_chain(Q, pi=pi, reversible=True)
    np.testing.assert_allclose(pi_from_sizes(torch.tensor([1.0, 3.0])), [0.25, 0.75])


@pytest.mark.parametrize(
    ("kind", "kw"),
    [
        ("ring", {}),
        ("complete", {}),
        ("star", {}),
        ("grid", {}),
        ("erdos_renyi", {"p": 0.3}),
        ("stochastic_block", {"sizes": [6, 10], "p_in": 0.6, "p_out": 0.1}),
    ],
)
def test_metropolis_weights_are_symmetric_doubly_stochastic(kind, kw):
    G = make_graph(kind, 16, seed=3, **kw)
    W = metropolis_weights(G)
    np.testing.assert_allclose(W, W.T, atol=0)
    np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-14)
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-14)
    assert np.all(W >= 0) and np.all(np.diag(W) > 0)
    validate_chain(W, G, np.full(16, 1 / 16), reversible=True)
    assert period(W) == 1
    np.testing.assert_array_equal(metropolis_weights(G, sparse=True).toarray(), W)


def test_metropolis_weights_values_and_uniform_weights():
    # RW-LoRA spec §4.4: ring W_uu = 1/3; K_10 W_uv = W_uu = 1/10.
    W = metropolis_weights(make_graph("ring", 10))
    np.testing.assert_allclose(np.diag(W), 1 / 3)
    np.testing.assert_allclose(metropolis_weights(make_graph("complete", 10)), 0.1)
    # uniform 1/(d+1) weights: doubly stochastic on regular graphs only.
    U = uniform_weights(make_graph("torus", 16))
    np.testing.assert_allclose(U.sum(axis=0), 1.0)
    np.testing.assert_allclose(U, 0.2 * (U > 0))
    G = make_graph("star", 5)
    U = uniform_weights(G)
    np.testing.assert_allclose(U.sum(axis=1), 1.0)
    assert not np.allclose(U.sum(axis=0), 1.0)
    deg = np.array([d for _, d in sorted(G.degree)])
    np.testing.assert_allclose(stationary_distribution(U), (deg + 1) / (deg + 1).sum())


def test_lazy():
    P = metropolis_hastings(make_graph("ring", 6))
    np.testing.assert_allclose(lazy(P, 0.25), 0.25 * np.eye(6) + 0.75 * P)
    S = lazy(sp.csr_array(P))
    assert sp.issparse(S)
    np.testing.assert_allclose(S.toarray(), lazy(P))
    np.testing.assert_allclose(lazy(torch.tensor(P)), lazy(P))
    with pytest.raises(ValueError, match=r"laziness must be in \[0, 1\)"):
        lazy(P, 1.5)
    # laziness = 1 is the identity: a reducible chain that never moves (issue 11 §4).
    with pytest.raises(ValueError, match=r"laziness must be in \[0, 1\), got 1"):
        lazy(P, 1.0)
    with pytest.raises(ValueError, match="row-stochastic"):
        lazy(np.ones((3, 3)), 0.5)
    with pytest.raises(ValueError, match="row-stochastic"):
        lazy(sp.csr_array(np.ones((3, 3))), 0.5)


# ----------------------------------------------------------------------------------------------
# exact mixing times: the doubling/bisection search against a linear scan


@pytest.mark.parametrize("seed", range(8))
def test_mixing_time_matches_linear_scan(seed):
    rng = np.random.default_rng(seed)
    N = int(rng.integers(3, 15))
    if seed % 2:  # a dense non-reversible chain
        P = rng.random((N, N)) ** 4
        P /= P.sum(axis=1, keepdims=True)
    else:
        G, pi = _random_connected(seed, N)
        P = lazy(metropolis_hastings(G, pi), 0.3)
    for eps in (0.45, 0.2, 0.05, 1e-3, 1e-6):
        assert mixing_time(P, eps).value == _brute_tau(P, eps), (seed, eps)


def _lazy_srw(G):
    """½(I + D⁻¹A): the lazy simple random walk, reversible with π_u = d_u / 2|E| (non-uniform)."""
    A = nx.to_numpy_array(G, nodelist=range(G.number_of_nodes()))
    deg = A.sum(axis=1)
    return 0.5 * (np.eye(len(A)) + A / deg[:, None]), deg / deg.sum()


def _reversible_table():
    """(name, P, π) with π known in closed form (not computed by the code under test)."""
    out = []
    for name, G in [
        ("ring", make_graph("ring", 24)),
        ("torus", make_graph("torus", 36, rows=6, cols=6)),
        ("random_geometric", make_graph("random_geometric", 60, seed=3)),
        ("watts_strogatz", make_graph("watts_strogatz", 60, seed=4, k=4, p=0.2)),
    ]:
        N = G.number_of_nodes()
        out.append((f"lazy MH {name}", lazy(metropolis_hastings(G)), np.full(N, 1.0 / N)))
    G, pi = _random_connected(7, 18)
    out.append(("lazy MH, π ∝ data sizes", lazy(metropolis_hastings(G, pi), 0.3), pi))
    P, pi = _lazy_srw(nx.lollipop_graph(6, 9))  # degrees 1, 2, 5 and 6
    out.append(("lazy SRW on a lollipop", P, pi))
    out.append(("MH on K_12", metropolis_hastings(make_graph("complete", 12)), np.full(12, 1 / 12)))
    return [pytest.param(*row, id=row[0]) for row in out]


def _d_brute(P, pi, t):
    return 0.5 * np.abs(np.linalg.matrix_power(P, t) - pi).sum(axis=1).max()


@pytest.mark.parametrize(("name", "P", "pi"), _reversible_table())
def test_spectral_and_powers_routes_agree_on_reversible_chains(name, P, pi):
    N = len(P)
    eps_list = [0.25, 0.01, 0.1 / N]
    if name.startswith("MH on K_"):
        eps_list.append(1.0 / N)  # the exact tie d(1) = 1/N (spec §9.1)
    for eps in eps_list:
        tau = {m: mixing_time(P, eps, method=m).value for m in ("auto", "spectral", "powers")}
        assert tau["spectral"] == tau["powers"] == tau["auto"], (name, eps, tau)
        assert mixing_time(P, eps, pi, method="spectral").value == tau["spectral"], (name, eps)
        t = tau["spectral"]
        # independent check: d(τ − 1) > ε ≥ d(τ) from numpy's matrix powers and the closed-form π
        # (ties within the documented relative 1e-9 count as reached)
        assert _d_brute(P, pi, t) <= eps * (1 + 1e-9), (name, eps, t)
        assert t == 1 or _d_brute(P, pi, t - 1) > eps, (name, eps, t)
    if name.startswith("MH on K_"):
        assert mixing_time(P, 1.0 / N, method="spectral").value == 1
        assert mixing_time(P, 0.1 / N, method="spectral").value == 2  # spec §9.1


def test_mixing_time_method_argument():
    P = lazy(metropolis_hastings(make_graph("ring", 10)))
    with pytest.raises(ValueError, match=r"method must be one of \['auto', 'powers', 'spectral'\]"):
        mixing_time(P, 0.1, method="eigh")
    rng = np.random.default_rng(0)
    R = rng.random((5, 5))
    R /= R.sum(axis=1, keepdims=True)  # not reversible
    with pytest.raises(ValueError, match="method='spectral' needs a reversible chain"):
        mixing_time(R, 0.1, method="spectral")
    assert mixing_time(R, 0.1).value == mixing_time(R, 0.1, method="powers").value
    # transient states (π_0 = 0) have no symmetrisation D^{1/2} P D^{−1/2}
    T = np.array([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5]])
    with pytest.raises(ValueError, match="method='spectral' needs a reversible chain with π > 0"):
        mixing_time(T, 0.01, method="spectral")
    # periodic: eigenvalue −1 is never truncated; ε above the floor 1/2 is reached at 3 (spec §9.1)
    ring = metropolis_hastings(make_graph("ring", 10))
    assert mixing_time(ring, 0.6, method="spectral").value == 3
    assert mixing_time(ring, 0.5, method="spectral").value == 6  # d(6) = 1/2 exactly
    # t_max on the spectral route (lazy ring: τ_mix(0.01) = 42, spec §9.1)
    assert mixing_time(P, 0.01, t_max=42, method="spectral").value == 42
    assert math.isinf(mixing_time(P, 0.01, t_max=41, method="spectral").value)


def test_mixing_time_t_max_and_reasons():
    L = lazy(metropolis_hastings(make_graph("ring", 10)))
    assert mixing_time(L, 0.01, t_max=42).value == 42
    assert mixing_time(L, 0.01, t_max=100).value == 42
    for t_max in (41, 30, 32, 1):
        tau = mixing_time(L, 0.01, t_max=t_max)
        assert math.isinf(tau.value)
        assert tau.reason.startswith(f"not reached by t_max = {t_max}")
    assert "∞" in str(mixing_time(L, 0.01, t_max=5)) and str(mixing_time(L, 0.01)).endswith("42")
    # reducible: two disjoint rings
    P = np.zeros((6, 6))
    P[:3, :3] = lazy(metropolis_hastings(make_graph("complete", 3)))
    P[3:, 3:] = P[:3, :3]
    tau = mixing_time(P, 0.1)
    assert math.isinf(tau.value) and tau.reason.startswith("reducible")
    with pytest.raises(ValueError, match="reducible"):
        stationary_distribution(P)
    with pytest.raises(ValueError, match="reducible"):
        period(P)
    # period 3: a directed 3-cycle
    C = np.roll(np.eye(3), 1, axis=1)
    assert period(C) == 3
    tau = mixing_time(C, 0.5)
    assert math.isinf(tau.value) and "period 3" in tau.reason
    # transient states: the walk leaves node 0 at once and π = (0, 1/2, 1/2)
    T = np.array([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(stationary_distribution(T), [0, 0.5, 0.5])
    assert mixing_time(T, 0.01).value == 1


def test_tv_curve_sparse_path_and_monotone():
    G = make_graph("watts_strogatz", 300, seed=2, k=4, p=0.1)
    P = lazy(metropolis_hastings(G))
    d = tv_distance_curve(P, 150)
    assert d[0] == pytest.approx(1 - 1 / 300)
    assert np.all(np.diff(d) <= 1e-12)
    Q = np.eye(300)
    for _ in range(40):
        Q = Q @ P
    assert d[40] == pytest.approx(0.5 * np.abs(Q - 1 / 300).sum(axis=1).max(), rel=1e-10)
    tau = mixing_time(P, 0.25).value
    assert d[tau] <= 0.25 < d[tau - 1]


# ----------------------------------------------------------------------------------------------
# spectra and Levin–Peres bounds


@pytest.mark.parametrize("seed", range(10))
def test_levin_peres_bounds_hold_on_random_graphs_with_nonuniform_pi(seed):
    G, pi = _random_connected(100 + seed)
    for P in (metropolis_hastings(G, pi), lazy(metropolis_hastings(G, pi))):
        for eps in (0.4, 0.1, 0.01, 1e-3 * pi.min()):
            lower, upper = levin_peres_bounds(P, eps, pi)
            tau = mixing_time(P, eps, pi).value
            assert lower <= tau <= upper, (seed, eps, lower, tau, upper)


def test_spectral_on_non_reversible_chain_and_lp_refusal():
    rng = np.random.default_rng(0)
    P = rng.random((6, 6))
    P /= P.sum(axis=1, keepdims=True)
    spec = spectral(P)
    assert not spec.reversible
    assert spec.eigenvalues[0] == pytest.approx(1.0)
    np.testing.assert_allclose(
        np.sort_complex(spec.eigenvalues), np.sort_complex(np.linalg.eigvals(P))
    )
    assert spec.lambda_star == pytest.approx(np.sort(np.abs(np.linalg.eigvals(P)))[-2])
    with pytest.raises(ValueError, match="reversible"):
        levin_peres_bounds(P, 0.1)


@pytest.mark.parametrize(
    ("kind", "N", "kw", "laziness", "weighted"),
    [
        ("torus", 400, {}, 0.5, False),
        ("ring", 301, {}, 0.0, False),
        ("erdos_renyi", 300, {"p": 0.03}, 0.5, True),
        ("watts_strogatz", 400, {"k": 4, "p": 0.2}, 0.2, True),
    ],
)
def test_sparse_spectral_bounds_match_dense(kind, N, kw, laziness, weighted):
    G = make_graph(kind, N, seed=1, **kw)
    pi = pi_from_sizes(np.random.default_rng(1).integers(1, 10, N)) if weighted else None
    P = lazy(metropolis_hastings(G, pi), laziness)
    dense = spectral(P, pi)
    pi_min = dense.pi.min()
    for method in ("dense", "lanczos", "shift-invert", "auto"):
        sb = sparse_spectral_bounds(G, 0.01, laziness=laziness, pi=pi, method=method)
        assert sb.lambda_2 == pytest.approx(dense.lambda_2, abs=1e-9), method
        lam_min_tol = 2e-3 if laziness >= 0.5 and method != "dense" else 1e-8
        assert sb.lambda_min == pytest.approx(dense.eigenvalues[-1], abs=lam_min_tol), method
        assert sb.t_rel == pytest.approx(dense.t_rel, rel=1e-6), method
        assert sb.pi_min == pytest.approx(pi_min)
        assert (sb.lower, sb.upper) == pytest.approx(levin_peres_bounds(P, 0.01, pi), rel=1e-6)
    assert sparse_spectral_bounds(G, 0.01, laziness=laziness, pi=pi).method == "dense"


def test_sparse_spectral_bounds_periodic_ring():
    sb = sparse_spectral_bounds(make_graph("ring", 100), 0.1, laziness=0.0, method="shift-invert")
    assert sb.lambda_min == pytest.approx(-1.0, abs=1e-9)
    assert math.isinf(sb.t_rel) and math.isinf(sb.lower) and math.isinf(sb.upper)
    A = nx.to_scipy_sparse_array(make_graph("torus", 64))  # an adjacency works as well as a graph
    assert sparse_spectral_bounds(A, 0.1).t_rel == pytest.approx(
        spectral(lazy(metropolis_hastings(make_graph("torus", 64)))).t_rel
    )


# ----------------------------------------------------------------------------------------------
# graphs


@pytest.mark.parametrize("kind", sorted(GRAPHS))
def test_every_graph_kind_is_connected_and_relabelled(kind):
    N = 36 if kind != "random_regular" else 30
    G = make_graph(kind, N, seed=5)
    assert sorted(G) == list(range(N))
    assert nx.is_connected(G)
    assert G.graph["kind"] == kind and G.graph["draws"] >= 1
    H = make_graph(kind, N, seed=5)
    assert sorted(G.edges) == sorted(H.edges)
    check_connected(G)


def test_graph_shapes():
    assert all(d == 4 for _, d in make_graph("torus", 20, rows=4, cols=5).degree)
    assert make_graph("grid", 12, rows=3).number_of_edges() == 3 * 3 + 2 * 4
    T = make_graph("grid", 9, periodic=True)
    assert all(d == 4 for _, d in T.degree) and T.nodes[4]["coord"] == (1, 1)
    S = make_graph("stochastic_block", 12, sizes=[4, 8], p_in=0.9, p_out=0.2)
    assert [S.nodes[v]["block"] for v in range(12)] == [0] * 4 + [1] * 8
    assert "pos" in make_graph("random_geometric", 50, seed=1).nodes[0]
    assert all(d == 3 for _, d in make_graph("random_regular", 20).degree)


def test_random_graphs_are_redrawn_until_connected():
    redrawn = None
    for seed in range(40):
        G = make_graph("erdos_renyi", 30, seed=seed, p=0.12)
        if G.graph["draws"] > 1:
            redrawn = seed
            break
    assert redrawn is not None
    assert nx.is_connected(G)
    assert sorted(make_graph("erdos_renyi", 30, seed=redrawn, p=0.12).edges) == sorted(G.edges)


def test_as_graph_inputs():
    ring = make_graph("ring", 5)
    A = nx.to_numpy_array(ring)
    for adj in (A, sp.csr_array(A), torch.tensor(A), A + np.eye(5)):
        H = as_graph(adj)
        assert sorted(H) == list(range(5)) and sorted(H.edges) == sorted(ring.edges)
    named = nx.relabel_nodes(ring, {i: f"node{i}" for i in range(5)})
    H = as_graph(named)
    assert sorted(H) == list(range(5)) and H.nodes[0]["label"] == "node0"
    np.testing.assert_array_equal(metropolis_hastings(named), metropolis_hastings(ring))


# ----------------------------------------------------------------------------------------------
# every bad input is named


def _two_triangles():
    return nx.disjoint_union(nx.complete_graph(3), nx.complete_graph(3))


def test_disconnected_graphs_are_rejected():
    G = _two_triangles()
    for fn in (check_connected, metropolis_hastings, metropolis_weights, uniform_weights):
        with pytest.raises(ValueError, match=r"graph must be connected: .*2 components"):
            fn(G)
    with pytest.raises(ValueError, match=r"graph must be connected: .*2 components"):
        sparse_spectral_bounds(G, 0.1)
    with pytest.raises(ValueError, match=r"graph must be connected: .*components after 25 draw"):
        make_graph("erdos_renyi", 20, seed=0, p=0.0)


@pytest.mark.parametrize(
    ("pi", "message"),
    [
        ([0.5, 0.5, 0.0, 0.0, 0.0, 0.0], r"pi must be a probability vector .*pi\[2\] = 0"),
        ([0.5, 0.5, -0.2, 0.1, 0.05, 0.05], r"pi must be a probability vector .*pi\[2\] = -0.2"),
        ([0.2] * 6, r"pi must be a probability vector .*sums to 1.2"),
        ([0.5, 0.5], r"pi must have one entry per node \(length 6\)"),
    ],
)
def test_bad_pi(pi, message):
    G = _two_triangles()
    G.add_edge(0, 3)
    with pytest.raises(ValueError, match=message):
        metropolis_hastings(G, pi)
    P = metropolis_hastings(G)
    with pytest.raises(ValueError, match=message):
        validate_chain(P, pi=pi)
    with pytest.raises(ValueError, match=message):
        mixing_time(P, 0.1, pi)


def test_bad_chains():
    P = lazy(metropolis_hastings(make_graph("ring", 5)))
    bad = P.copy()
    bad[3, 3] -= 0.1
    for fn in (
        validate_chain,
        spectral,
        period,
        stationary_distribution,
        lambda M: mixing_time(M, 0.1),
    ):
        with pytest.raises(ValueError, match=r"P is not row-stochastic: row 3 sums to 0\.9"):
            fn(bad)
    neg = P.copy()
    neg[0, 0], neg[0, 2] = P[0, 0] + 0.1, -0.1
    with pytest.raises(ValueError, match=r"P must be non-negative: P\[0, 2\] = -0\.1"):
        validate_chain(neg)
    with pytest.raises(ValueError, match="square matrix"):
        validate_chain(np.ones((2, 3)) / 3)
    off = np.full((5, 5), 0.2)
    with pytest.raises(ValueError, match=r"P puts mass off the graph: P\[0, 2\]"):
        validate_chain(off, make_graph("ring", 5))
    with pytest.raises(ValueError, match="P has shape"):
        validate_chain(P, make_graph("ring", 6))
    C = np.roll(np.eye(3), 1, axis=1)
    with pytest.raises(ValueError, match="pi is not stationary"):
        validate_chain(C, pi=[0.5, 0.25, 0.25])
    rng = np.random.default_rng(0)
    R = rng.random((4, 4))
    R /= R.sum(axis=1, keepdims=True)
    validate_chain(R)
    with pytest.raises(ValueError, match="P is not reversible with respect to pi"):
        validate_chain(R, reversible=True)
    assert isinstance(validate_chain(torch.tensor(P)), np.ndarray)


@pytest.mark.parametrize("eps", [0.0, 1.0, 1.5, -0.1])
def test_eps_must_be_in_open_unit_interval(eps):
    P = lazy(metropolis_hastings(make_graph("ring", 5)))
    for fn in (
        lambda: mixing_time(P, eps),
        lambda: levin_peres_bounds(P, eps),
        lambda: sparse_spectral_bounds(make_graph("ring", 5), eps),
    ):
        with pytest.raises(ValueError, match=r"eps must be in \(0, 1\)"):
            fn()


def test_bad_graph_requests():
    with pytest.raises(ValueError, match="kind must be one of"):
        make_graph("hypercube", 8)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['radius'\] for kind 'ring'"):
        make_graph("ring", 8, radius=0.2)
    with pytest.raises(ValueError, match="N must be a perfect square"):
        make_graph("grid", 10)
    with pytest.raises(ValueError, match="rows·cols must equal N = 10"):
        make_graph("torus", 10, rows=3, cols=4)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        make_graph("erdos_renyi", 10, p=2.0)
    with pytest.raises(ValueError, match="sizes must sum to N = 10"):
        make_graph("stochastic_block", 10, sizes=[3, 3])
    with pytest.raises(ValueError, match=r"N must be in \[3, inf\] for a ring"):
        make_graph("ring", 2)
    with pytest.raises(ValueError, match="adjacency must be symmetric"):
        as_graph(np.triu(np.ones((3, 3)), 1))
    with pytest.raises(ValueError, match="graph must be undirected"):
        as_graph(nx.DiGraph([(0, 1)]))
    with pytest.raises(ValueError, match=r"sizes must be positive and finite: sizes\[1\] = 0"):
        pi_from_sizes([3, 0])
    with pytest.raises(ValueError, match="method must be one of"):
        sparse_spectral_bounds(make_graph("ring", 5), 0.1, method="arnoldi")


def test_package_exports():
    for name in dc.__all__:
        assert hasattr(dc, name), name
    assert len(set(dc.__all__)) == len(dc.__all__)
