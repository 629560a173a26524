"""Mixing-time tools of lorakit.decentralized at scale (RW-LoRA spec §9.2.2–§9.2.3).

(i)  exact τ_mix(ε) (worst start, doubling + bisection over a cached power table) for lazy
     Metropolis–Hastings chains with N = 1,000 (random geometric and Watts–Strogatz graphs):
     target < 2 s per call on 2 cores;
(ii) Levin–Peres spectral bounds from ``sparse_spectral_bounds`` (eigsh on the symmetrised sparse
     MH matrix) with N = 100,000 (a 250 × 400 torus and a random 4-regular graph): target < 10 s
     per call on 2 cores. Graph construction (networkx) is timed and printed separately.

Run with ``.venv/bin/python -m pytest tests/benchmarks/bench_markov.py -o python_files='bench_*.py' -s -q``.
"""

import math
import time

import numpy as np
import pytest

from lorakit.decentralized import (
    lazy,
    levin_peres_bounds,
    make_graph,
    metropolis_hastings,
    mixing_time,
    sparse_spectral_bounds,
)

N_DENSE, N_SPARSE = 1_000, 100_000


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@pytest.mark.parametrize(("kind", "kw"), [("random_geometric", {}), ("watts_strogatz", {"k": 6})])
def test_exact_mixing_time_n1000(kind, kw):
    G = make_graph(kind, N_DENSE, seed=0, **kw)
    P = lazy(metropolis_hastings(G))
    pi = np.full(N_DENSE, 1.0 / N_DENSE)
    lines = [f"\nexact τ_mix, lazy MH on {kind}(N={N_DENSE}, {G.number_of_edges()} edges)"]
    for eps in (0.25, 0.1 / N_DENSE):  # τ_mix(ε) and Theorem 1's τ_mix(π_min ε)
        mixing_time(P, 0.4)  # warm-up (BLAS threads)
        tau, secs = _timed(lambda eps=eps: mixing_time(P, eps))
        t = tau.value
        d_at = 0.5 * np.abs(np.linalg.matrix_power(P, t) - pi).sum(axis=1).max()
        d_before = 0.5 * np.abs(np.linalg.matrix_power(P, t - 1) - pi).sum(axis=1).max()
        lower, upper = levin_peres_bounds(P, eps)
        lines.append(
            f"  eps = {eps:<8g} τ_mix = {t:>6}   {secs:6.3f} s (target < 2 s)   "
            f"d(τ−1) = {d_before:.4g} > eps ≥ d(τ) = {d_at:.4g}   "
            f"Levin–Peres [{lower:.1f}, {upper:.0f}]"
        )
        assert d_at <= eps * (1 + 1e-9) < d_before
        assert lower <= t <= upper
        assert secs < 2.0
    print("\n".join(lines))


@pytest.mark.parametrize("kind", ["torus", "random_regular"])
def test_sparse_spectral_bounds_n100000(kind):
    if kind == "torus":
        rows, cols = 250, 400
        G, t_graph = _timed(lambda: make_graph("torus", N_SPARSE, rows=rows, cols=cols))
    else:
        G, t_graph = _timed(lambda: make_graph("random_regular", N_SPARSE, seed=0, d=4))
    sb, secs = _timed(lambda: sparse_spectral_bounds(G, 0.01 / N_SPARSE))
    print(
        f"\nsparse spectral bounds, lazy MH on {kind}(N={N_SPARSE}): {secs:.2f} s (target < 10 s; "
        f"graph built in {t_graph:.2f} s) via {sb.method}\n"
        f"  λ_2 = {sb.lambda_2:.10f}  λ_min = {sb.lambda_min:.3g}  t_rel = {sb.t_rel:.6g}  "
        f"τ_mix(π_min·0.01) ∈ [{sb.lower:.4g}, {sb.upper:.4g}]"
    )
    if kind == "torus":
        # lazy MH on a 4-regular torus: P = A/4, λ_2 = 1/2 + (1 + cos(2π/cols))/4, λ_min = 0
        exact = 0.5 + 0.25 * (1.0 + math.cos(2 * math.pi / cols))
        assert sb.lambda_2 == pytest.approx(exact, abs=1e-10)
        assert sb.lambda_min == pytest.approx(0.0, abs=2e-3)
    else:
        # Friedman: λ_2(A) → 2√(d − 1) for random d-regular graphs, so λ_2 ≈ 1/2 + √3/4
        assert sb.lambda_2 == pytest.approx(0.5 + math.sqrt(3) / 4, abs=5e-3)
    assert sb.lower <= sb.upper
    assert secs < 10.0
