"""Exercises of notebook 05 (registered on import; see lorakit.exercises).

References are computed by lorakit when checked: exact TV mixing times and spectra of the
Metropolis–Hastings walk (:mod:`lorakit.decentralized.markov`), a measured RW-LoRA run
(:func:`lorakit.widgets.walk_frames`) and Theorem 1's growth in T (:mod:`lorakit.theory.rw_lora`).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from .registry import exercise

#: 05.4: the walk, its horizon and the two step sizes compared.
PLATEAU_HOPS = 300
PLATEAU_LRS = (0.05, 0.025)


def lazy_ring_tau(N: int = 6, laziness: float = 0.5, eps: float = 0.25) -> int:
    """τ_mix(ε) of the lazy Metropolis–Hastings walk (uniform π) on the N-ring."""
    from ..decentralized import lazy, make_graph, metropolis_hastings, mixing_time

    P = lazy(metropolis_hastings(make_graph("ring", N)), laziness)
    return int(mixing_time(np.asarray(P, dtype=float), eps).value)


def star_simple_walk_pi(N: int = 5) -> np.ndarray:
    """The stationary distribution of the simple random walk (no accept/reject) on the N-star."""
    import networkx as nx

    from ..decentralized import make_graph, stationary_distribution

    A = nx.to_numpy_array(make_graph("star", N), nodelist=range(N))
    return stationary_distribution(A / A.sum(axis=1, keepdims=True))


def lazy_ring_gap(N: int = 10, laziness: float = 0.5) -> float:
    """The spectral gap 1 − λ₂ of the lazy Metropolis–Hastings walk on the N-ring."""
    from ..decentralized import lazy, make_graph, metropolis_hastings, spectral

    P = lazy(metropolis_hastings(make_graph("ring", N)), laziness)
    return float(spectral(np.asarray(P, dtype=float)).spectral_gap)


def plateau_ratio(hops: int = PLATEAU_HOPS, lrs: tuple = PLATEAU_LRS) -> float:
    """RW-LoRA on the lazy 10-ring: the geometric mean of f − f* over the last half of the hops
    at lrs[1], divided by the same at lrs[0]."""
    from ..widgets import walk_frames

    def plateau(lr: float) -> float:
        rw = walk_frames("ring", 10, 0.5, "uniform", ("rw_lora",), hops, 0, lr=lr).rw
        gap = rw["gap"].to_numpy()[hops // 2 :]
        return float(np.exp(np.log(gap).mean()))

    return plateau(lrs[1]) / plateau(lrs[0])


def theorem_1_growth(which: str = "bound_corrected") -> sp.Expr:
    """The power p with bound ~ T^p as T → ∞, at the step cap η = 1/(4L√T)."""
    from ..theory import rw_lora
    from ..theory.symbols import T, gamma

    bound = getattr(rw_lora, which).subs(gamma, rw_lora.eta_max)
    return sp.limit(sp.log(bound) / sp.log(T), T, sp.oo)


exercise(
    "05.1",
    "τ_mix(1/4) of the lazy 6-ring, by hand",
    "compute",
    reference=lazy_ring_tau,
    compare="exact",
    hint=(
        "Build P for the 6-ring (½ to stay, ¼ to each neighbour), take powers P^t and find the "
        "first t at which the worst row's ½‖P^t(u,·) − π‖₁ is ≤ 1/4; the answer is an int."
    ),
)
exercise(
    "05.2",
    "stationary distribution of the simple walk on a star",
    "compute",
    reference=star_simple_walk_pi,
    rtol=1e-9,
    atol=1e-12,
    hint=(
        "Without Metropolis–Hastings' accept/reject the walk is reversible with respect to a "
        "measure proportional to a simple property of each node; normalise it (5 numbers)."
    ),
)
exercise(
    "05.3",
    "spectral gap of the lazy 10-ring",
    "compute",
    reference=lazy_ring_gap,
    rtol=1e-9,
    hint=(
        "The simple walk on the N-cycle is a circulant matrix with eigenvalues cos(2πj/N); "
        "laziness ½ maps each eigenvalue λ to (1 + λ)/2. The gap is 1 minus the second largest."
    ),
)
exercise(
    "05.4",
    "predict, then run: does halving η halve RW-LoRA's plateau?",
    "predict",
    reference=plateau_ratio,
    rtol=1e-6,
    hint=(
        "Run walk_frames with methods=('rw_lora',) and hops=300 at lr=0.05 and lr=0.025; for "
        "each, average log(f − f*) over the last 150 hops and exponentiate; give the ratio "
        "(small step over large step)."
    ),
)
exercise(
    "05.5",
    "what Theorem 1's printed bound hides: growth in T",
    "erratum",
    reference=theorem_1_growth,
    rtol=1e-9,
    hint=(
        "In the corrected bound the constant 4(a²+b²)(σ²+c²) is divided by η, not ηT. "
        "Substitute η = 1/(4L√T) into every term and keep the one that grows fastest."
    ),
)
exercise("05.6", "what would make RW-LoRA converge, not stall?", "open")
