"""Mixing-time tools of lorakit.decentralized at scale (RW-LoRA spec §9.2.2–§9.2.3).

(i)  exact τ_mix(ε) (worst start) for lazy Metropolis–Hastings chains with N = 1,000 (random
     geometric and Watts–Strogatz graphs). The chains are reversible, so lorakit's
     ``mixing_time`` takes its spectral route: one ``eigh`` of the symmetrised matrix with the
     stationary mode removed, then d(t) from the slow modes only (those with |λ|^t above a bound
     that keeps the error under 1e-12·ε), at the t of a bracket from the Levin–Peres bounds and a
     bisection. The alternative is the route a numpy user would take for a reversible chain (one
     ``eigh`` of the symmetric P, then P^t = U Λ^t Uᵀ with all N modes for each t of a doubling
     and bisection from t = 1): both timed interleaved (``timing.compare``, 5 repeats), the same
     τ, and the target numpy eigh / lorakit ≥ 1.5 on the ratio of medians. (Scanning t = 1, 2, ...
     as the definition reads costs τ products: 5,000 for the random geometric graph at ε = 1e-4.)
(ii) Levin–Peres spectral bounds from ``sparse_spectral_bounds`` (eigsh on the symmetrised sparse
     MH matrix) with N = 100,000 (a 250 × 400 torus and a random 4-regular graph). No alternative
     finishes in comparable time (networkx's ``algebraic_connectivity`` ran for over ten minutes
     on the random 4-regular graph), so the target is absolute: median < 10 s on the machine's
     cores (printed), timed interleaved with building the graph with networkx for scale.

Run with ``make bench``.
"""

import math
import os

import numpy as np
import pytest
from timing import compare, record

from lorakit.decentralized import (
    lazy,
    levin_peres_bounds,
    make_graph,
    metropolis_hastings,
    mixing_time,
    sparse_spectral_bounds,
)

N_DENSE, N_SPARSE, REPEATS = 1_000, 100_000, 5
TIE = 1e-9  # mixing_time counts d(t) within a relative 1e-9 of ε as reached


def _tv(Q, pi) -> float:
    """d = max_u ½‖Q(u, ·) − π‖₁"""
    return 0.5 * float(np.abs(Q - pi).sum(axis=1).max())


def _tau_by_eigh(P, eps: float) -> int:
    """τ_mix(ε) of a symmetric chain (uniform π) from one eigendecomposition P = U Λ Uᵀ: d(t) from
    U Λ^t Uᵀ (one product per t), t found by the same doubling and bisection."""
    lam, U = np.linalg.eigh(P)
    pi = np.full(len(P), 1.0 / len(P))

    def reached(t):
        return _tv((U * lam**t) @ U.T, pi) <= eps * (1 + TIE)

    hi = 1
    while not reached(hi):
        hi *= 2
    lo = hi // 2  # d(lo) > ε, or lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reached(mid) else (mid, hi)
    return hi


def _time_both(P, eps):
    """lorakit's mixing_time and the eigh route timed interleaved; (timings, τ of each)."""
    taus = {}
    t = compare(
        {
            "lorakit mixing_time": lambda: taus.__setitem__("lorakit", mixing_time(P, eps).value),
            "numpy eigh + bisection": lambda: taus.__setitem__("eigh", _tau_by_eigh(P, eps)),
        },
        repeats=REPEATS,
    )
    return t, taus


@pytest.mark.parametrize(("kind", "kw"), [("random_geometric", {}), ("watts_strogatz", {"k": 6})])
def test_exact_mixing_time_n1000(kind, kw):
    G = make_graph(kind, N_DENSE, seed=0, **kw)
    P = lazy(metropolis_hastings(G))
    # uniform π: the MH chain is symmetric (to rounding), as _tau_by_eigh needs
    np.testing.assert_allclose(P, P.T, rtol=0, atol=1e-15)
    pi = np.full(N_DENSE, 1.0 / N_DENSE)
    print(
        f"\nexact τ_mix, lazy MH on {kind}(N={N_DENSE}, {G.number_of_edges()} edges); "
        f"{os.cpu_count()} CPU cores"
    )
    passed = []
    for eps in (0.25, 0.1 / N_DENSE):  # τ_mix(ε) and Theorem 1's τ_mix(π_min ε)
        t, taus = _time_both(P, eps)
        tau = taus["lorakit"]
        d_at = _tv(np.linalg.matrix_power(P, tau), pi)
        d_before = _tv(np.linalg.matrix_power(P, tau - 1), pi)
        lower, upper = levin_peres_bounds(P, eps)
        ratio = t.ratio("numpy eigh + bisection", "lorakit mixing_time")
        print(
            f" eps = {eps:g}: τ_mix = {tau} (eigh: {taus['eigh']})   d(τ−1) = {d_before:.4g} > eps "
            f"≥ d(τ) = {d_at:.4g}   Levin–Peres [{lower:.1f}, {upper:.0f}]\n{t.table(1.0, 's')}\n"
            f"  eigh / lorakit (ratio of medians) = {ratio:.2f} (target ≥ 1.5)"
        )
        assert d_at <= eps * (1 + TIE) < d_before
        assert lower <= tau <= upper
        assert taus["eigh"] == tau
        figure = f"exact τ_mix(ε={eps:g}), N={N_DENSE} {kind}: numpy eigh / lorakit"
        passed.append(record("bench_markov", figure, ratio, "×", ">= 1.5", ratio >= 1.5))
    assert all(passed)


@pytest.mark.parametrize("kind", ["torus", "random_regular"])
def test_sparse_spectral_bounds_n100000(kind):
    rows, cols = 250, 400
    out = {}

    def build():
        if kind == "torus":
            out["G"] = make_graph("torus", N_SPARSE, rows=rows, cols=cols)
        else:
            out["G"] = make_graph("random_regular", N_SPARSE, seed=0, d=4)

    def bounds():
        out["sb"] = sparse_spectral_bounds(out["G"], 0.01 / N_SPARSE)

    build()
    # no warm-up call: each costs seconds, and the median of 5 absorbs a slower first call
    t = compare({"build the graph (networkx)": build, "sparse_spectral_bounds": bounds}, repeats=REPEATS, warmup=0)  # fmt: skip
    sb, secs = out["sb"], t["sparse_spectral_bounds"].median
    print(
        f"\nsparse spectral bounds, lazy MH on {kind}(N={N_SPARSE}) via {sb.method}; "
        f"{os.cpu_count()} CPU cores\n{t.table(1.0, 's')}\n"
        f"  median {secs:.2f} s (target < 10 s on {os.cpu_count()} cores; "
        f"{t.ratio('sparse_spectral_bounds', 'build the graph (networkx)'):.2f}× building the graph)\n"
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
    figure = f"sparse spectral bounds, N={N_SPARSE} {kind}: median time"
    assert record("bench_markov", figure, secs, "s", "< 10", secs < 10.0)
