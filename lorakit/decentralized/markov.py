"""Markov-chain tools for random-walk and gossip learning (RW-LoRA spec §2, §4.4, §5, §9).

Transition matrices are row-stochastic: ``P[u, v] = Pr(v_{t+1} = v | v_t = u)`` and a distribution
is a row vector, ``π_{t+1} = π_t P`` (the paper's ``π_t = P^t π_0`` is the column convention, spec
§12.3). Every builder returns a dense ``numpy.ndarray`` (``sparse=True`` gives a SciPy CSR array).

Builders
    :func:`metropolis_hastings` (spec §4.4), :func:`lazy`, :func:`metropolis_weights` and
    :func:`uniform_weights` (gossip mixing matrices, spec §5), :func:`pi_from_sizes`.
Checks
    :func:`validate_chain`, :func:`stationary_distribution`, :func:`period`, :func:`is_periodic`.
Mixing
    :func:`tv_distance_curve` and the exact :func:`mixing_time` (spec §2: worst case over point-mass
    starts, ``τ_mix(ε) = min{t ≥ 1 : d(t) ≤ ε}``), :func:`spectral`, :func:`levin_peres_bounds`
    and :func:`sparse_spectral_bounds` (Levin, Peres & Wilmer, *Markov Chains and Mixing Times*,
    2nd ed., Thms 12.4 and 12.5), :func:`complete_graph_tv_symbolic` (spec §9.1, §9.2.4).

The §9.1 tables of the spec (ring, lazy ring, K_10, odd rings) are reproduced in
``tests/test_markov.py``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components, shortest_path

from .._validation import ArgumentTypeError, check_choice, check_int, check_real
from .graphs import adjacency, check_connected

if TYPE_CHECKING:
    import sympy

__all__ = [
    "DEFAULT_T_MAX",
    "MixingBounds",
    "MixingTime",
    "SparseSpectralBounds",
    "Spectrum",
    "SymbolicCheck",
    "complete_graph_tv_symbolic",
    "is_periodic",
    "lazy",
    "levin_peres_bounds",
    "metropolis_hastings",
    "metropolis_weights",
    "mixing_time",
    "period",
    "pi_from_sizes",
    "sparse_spectral_bounds",
    "spectral",
    "stationary_distribution",
    "tv_distance_curve",
    "uniform_weights",
    "validate_chain",
]

#: Default horizon of :func:`mixing_time`: 2^40 steps (about 40 squarings of P).
DEFAULT_T_MAX = 2**40
#: Tolerance for row sums, stationarity and detailed balance.
ATOL = 1e-10
#: ``d(t) ≤ ε·(1 + _TIE)`` counts as reached, so exact ties survive rounding (K_N: d(1) = 1/N).
_TIE = 1e-9
#: Gaps below this are treated as zero (eigenvalue 1 repeated or −1 present).
_GAP_TOL = 1e-10


# --------------------------------------------------------------------------------------------
# input conversion and validation


def _as_matrix(P, name: str = "P") -> np.ndarray:
    """A dense float64 square matrix from numpy, lists, torch or SciPy sparse input."""
    if sp.issparse(P):
        P = P.toarray()
    elif hasattr(P, "detach"):  # torch tensor
        P = P.detach().cpu().double().numpy()
    try:
        P = np.asarray(P, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ArgumentTypeError(
            f"{name} must be a square matrix of probabilities, got {P!r}"
        ) from err
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError(f"{name} must have finite entries")
    return P


def _check_stochastic(P: np.ndarray, atol: float = ATOL, name: str = "P") -> np.ndarray:
    neg = np.argwhere(P < -atol)
    if neg.size:
        u, v = neg[0]
        raise ValueError(f"{name} must be non-negative: {name}[{u}, {v}] = {P[u, v]:g}")
    sums = P.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > atol)
    if bad.size:
        u = int(bad[0])
        raise ValueError(
            f"{name} is not row-stochastic: row {u} sums to {sums[u]:.12g} "
            f"(every row must sum to 1 within {atol:g})"
        )
    return P


def _check_pi(pi, N: int, atol: float = ATOL) -> np.ndarray:
    """``pi`` as a float64 probability vector of length N with positive entries (spec §1: π_v > 0)."""
    if hasattr(pi, "detach"):
        pi = pi.detach().cpu().double().numpy()
    pi = np.asarray(pi, dtype=np.float64).reshape(-1)
    if pi.size != N:
        raise ValueError(f"pi must have one entry per node (length {N}), got length {pi.size}")
    if not np.all(np.isfinite(pi)):
        raise ValueError(
            "pi must be a probability vector (positive entries summing to 1): not finite"
        )
    bad = np.flatnonzero(pi <= 0)
    if bad.size:
        v = int(bad[0])
        raise ValueError(
            f"pi must be a probability vector (positive entries summing to 1): pi[{v}] = {pi[v]:g} "
            "(use pi_from_sizes(sizes) for weights that are not normalised)"
        )
    total = float(pi.sum())
    if abs(total - 1.0) > max(atol, 1e-12 * N):
        raise ValueError(
            f"pi must be a probability vector (positive entries summing to 1): it sums to "
            f"{total:.12g} (use pi_from_sizes(sizes) to normalise node weights)"
        )
    return pi


def pi_from_sizes(sizes) -> np.ndarray:
    """Target distribution ``π_v ∝ sizes[v]`` (e.g. local dataset sizes; spec §9.2.1).

    >>> pi_from_sizes([1, 3]).tolist()
    [0.25, 0.75]
    """
    if hasattr(sizes, "detach"):
        sizes = sizes.detach().cpu().double().numpy()
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1)
    if sizes.size == 0:
        raise ValueError("sizes must be non-empty")
    bad = np.flatnonzero(~np.isfinite(sizes) | (sizes <= 0))
    if bad.size:
        v = int(bad[0])
        raise ValueError(f"sizes must be positive and finite: sizes[{v}] = {sizes[v]:g}")
    return sizes / sizes.sum()


# --------------------------------------------------------------------------------------------
# builders


def _edges(G) -> tuple[sp.csr_array, np.ndarray, np.ndarray, np.ndarray]:
    """Adjacency, directed edge lists (both directions) and degrees of a connected graph."""
    A = adjacency(G)
    check_connected(A)
    coo = A.tocoo()
    deg = np.asarray(A.sum(axis=1)).reshape(-1).astype(np.float64)
    return A, coo.row.astype(np.int64), coo.col.astype(np.int64), deg


def _assemble(N: int, u, v, w, diag, sparse: bool):
    if sparse:
        rows = np.concatenate([u, np.arange(N)])
        cols = np.concatenate([v, np.arange(N)])
        vals = np.concatenate([w, diag])
        keep = vals != 0
        return sp.csr_array((vals[keep], (rows[keep], cols[keep])), shape=(N, N))
    P = np.zeros((N, N))
    P[u, v] = w
    P[np.arange(N), np.arange(N)] = diag
    return P


def metropolis_hastings(G, pi=None, *, sparse: bool = False):
    """Metropolis–Hastings walk on ``G`` with stationary distribution ``π`` (spec §4.4).

    Uniform-neighbour proposal (``d_u`` = degree without self-loop), acceptance
    ``min{1, π_v d_u / (π_u d_v)}``::

        P_uv = (1/d_u) · min{1, π_v d_u / (π_u d_v)}   for v ∈ N(u),
        P_uu = 1 − Σ_{w≠u} P_uw                        (the rejected mass),

    zero elsewhere. The diagonal is accumulated from the rejections, so it is exactly 0 when no
    proposal is ever rejected (uniform π on a regular graph): the ring walk is then the simple
    random walk ``P_{u,u±1} = 1/2``, periodic for even N (spec §9.1), and ``K_N`` gives
    ``(J − I)/(N − 1)``. The chain is reversible, ``π_u P_uv = π_v P_vu``.

    ``pi``: ``None`` (uniform) or a probability vector with positive entries, one per node; for
    node weights such as data sizes pass ``pi_from_sizes(sizes)``. ``G``: a networkx graph or an
    adjacency matrix; it must be connected.
    """
    A, u, v, deg = _edges(G)
    N = A.shape[0]
    pi = np.full(N, 1.0 / N) if pi is None else _check_pi(pi, N)
    ratio = (pi[v] * deg[u]) / (pi[u] * deg[v])
    w = np.minimum(1.0, ratio) / deg[u]
    rejected = np.maximum(0.0, 1.0 - ratio) / deg[u]
    diag = np.bincount(u, weights=rejected, minlength=N)
    if N == 1:
        diag = np.ones(1)
    return _assemble(N, u, v, w, diag, sparse)


def lazy(P, laziness: float = 0.5):
    """``laziness · I + (1 − laziness) · P``: the lazy chain (spec §4.4: ``(I + P)/2`` by default).

    Same stationary distribution; for laziness ≥ 1/2 every eigenvalue is ≥ 0, so the chain is
    aperiodic. A SciPy sparse ``P`` gives a sparse result, anything else a dense ndarray.
    ``laziness`` is in [0, 1): 1 gives the identity, a reducible chain that never moves.
    ``P`` must be row-stochastic.
    """
    laziness = check_real("laziness", laziness, low=0.0, high=1.0, high_open=True)
    if sp.issparse(P):
        P = sp.csr_array(P, dtype=np.float64)
        sums = np.asarray(P.sum(axis=1)).ravel()
        if (P.data < -ATOL).any() or (np.abs(sums - 1.0) > ATOL).any():
            raise ValueError(
                f"P must be row-stochastic (non-negative, rows summing to 1 within {ATOL:g})"
            )
        return (laziness * sp.eye_array(P.shape[0], format="csr") + (1.0 - laziness) * P).tocsr()
    P = _check_stochastic(_as_matrix(P))
    return laziness * np.eye(P.shape[0]) + (1.0 - laziness) * P


def metropolis_weights(G, *, sparse: bool = False):
    """Metropolis gossip weights ``W_uv = 1/(1 + max(d_u, d_v))`` on edges, the rest on the diagonal.

    Symmetric and doubly stochastic on every connected graph, with positive diagonal (aperiodic):
    the mixing matrix of the gossip Dec-LoRA baseline (spec §5; ring ``W_uu = 1/3``, ``K_10``
    ``W_uv = W_uu = 1/10``, spec §4.4).
    """
    A, u, v, deg = _edges(G)
    N = A.shape[0]
    w = 1.0 / (1.0 + np.maximum(deg[u], deg[v]))
    diag = 1.0 - np.bincount(u, weights=w, minlength=N)
    return _assemble(N, u, v, w, diag, sparse)


def uniform_weights(G, *, sparse: bool = False):
    """Uniform neighbourhood averaging ``W_uv = 1/(d_u + 1)`` for ``v ∈ N(u) ∪ {u}`` (spec §5).

    Row-stochastic, but doubly stochastic **only on regular graphs**: in general it is reversible
    with stationary distribution ``π_u ∝ d_u + 1``, so plain gossip with it converges to a
    degree-weighted average, not the mean. Use :func:`metropolis_weights` on irregular graphs.
    """
    A, u, v, deg = _edges(G)
    N = A.shape[0]
    w = 1.0 / (deg[u] + 1.0)
    diag = 1.0 / (deg + 1.0)
    return _assemble(N, u, v, w, diag, sparse)


# --------------------------------------------------------------------------------------------
# structure: closed classes, period, stationary distribution


class _Structure(NamedTuple):
    closed: list[np.ndarray]  # node indices of each closed communicating class
    periods: list[int]  # period of each closed class
    transient: np.ndarray  # nodes in no closed class
    support: sp.csr_array  # the support digraph {(u, v) : P_uv > 0}


def _class_period(S: sp.csr_array) -> int:
    """Period of a strongly connected support graph: gcd of ``level(u) + 1 − level(v)`` over edges.

    With BFS levels from any root, this gcd equals the gcd of all cycle lengths (the standard
    argument behind ``networkx.is_aperiodic``); a self-loop gives period 1 at once.
    """
    if np.any(S.diagonal()):
        return 1
    level = shortest_path(S, method="D", unweighted=True, indices=0)
    coo = S.tocoo()
    diff = np.abs(level[coo.row] + 1 - level[coo.col]).astype(np.int64)
    g = int(np.gcd.reduce(diff)) if diff.size else 0
    return g if g > 0 else 1


def _structure(P: np.ndarray) -> _Structure:
    support = sp.csr_array(P > 0)
    n_comp, labels = connected_components(support, directed=True, connection="strong")
    coo = support.tocoo()
    leaving = labels[coo.row] != labels[coo.col]
    is_open = np.zeros(n_comp, dtype=bool)
    is_open[labels[coo.row[leaving]]] = True
    closed, periods = [], []
    for c in np.flatnonzero(~is_open):
        idx = np.flatnonzero(labels == c)
        closed.append(idx)
        periods.append(_class_period(support[idx][:, idx]))
    in_closed = np.zeros(P.shape[0], dtype=bool)
    for idx in closed:
        in_closed[idx] = True
    return _Structure(closed, periods, np.flatnonzero(~in_closed), support)


def _stationary(P: np.ndarray, struct: _Structure) -> np.ndarray:
    if len(struct.closed) != 1:
        raise ValueError(
            f"P is reducible with {len(struct.closed)} closed classes, so its stationary "
            "distribution is not unique; pass pi explicitly"
        )
    idx = struct.closed[0]
    Q = P[np.ix_(idx, idx)]
    n = idx.size
    M = Q.T - np.eye(n)
    M[-1, :] = 1.0
    rhs = np.zeros(n)
    rhs[-1] = 1.0
    sol = np.linalg.solve(M, rhs)
    sol = np.clip(sol, 0.0, None)
    pi = np.zeros(P.shape[0])
    pi[idx] = sol / sol.sum()
    return pi


def stationary_distribution(P) -> np.ndarray:
    """The unique ``π`` with ``πP = π`` (zero on transient states); ValueError if not unique."""
    P = _check_stochastic(_as_matrix(P))
    return _stationary(P, _structure(P))


def period(P) -> int:
    """Period of the chain: the gcd of the cycle lengths of its support graph (combinatorial).

    Computed on the support digraph ``{(u, v) : P_uv > 0}`` with SciPy's graph routines (the
    BFS-level form of the gcd of cycle lengths, as in ``networkx.is_aperiodic``), so it needs no
    eigenvalues. For a chain with transient states it is the period of its single closed class;
    with several closed classes the period is defined per class and a ValueError is raised. For a
    reversible chain the period is 1 or 2, and 2 exactly when −1 is an eigenvalue (bipartite
    support; spec §9.1: the MH walk on an even ring).
    """
    P = _check_stochastic(_as_matrix(P))
    struct = _structure(P)
    if len(struct.closed) != 1:
        raise ValueError(
            f"P is reducible with {len(struct.closed)} closed classes; the period is defined per "
            "class"
        )
    return struct.periods[0]


def is_periodic(P) -> bool:
    """``period(P) > 1`` (combinatorial test, see :func:`period`)."""
    return period(P) > 1


def validate_chain(P, G=None, pi=None, *, reversible: bool | None = None, atol: float = ATOL):
    """Check a transition matrix and return it as a dense float64 ndarray.

    Checks, each with a ValueError naming the failure: square and finite; non-negative;
    row-stochastic (``|Σ_v P_uv − 1| ≤ atol``); support ⊆ edges of ``G`` ∪ diagonal (when ``G`` is
    given); ``pi`` a probability vector with positive entries and ``πP = π`` (when ``pi`` is
    given); detailed balance ``π_u P_uv = π_v P_vu`` when ``reversible=True`` (with the unique
    stationary distribution when ``pi`` is None). Spec §9.2.1.
    """
    atol = check_real("atol", atol, low=0.0)
    P = _check_stochastic(_as_matrix(P), atol)
    N = P.shape[0]
    if G is not None:
        A = adjacency(G)
        if A.shape[0] != N:
            raise ValueError(f"P has shape {P.shape} but the graph has {A.shape[0]} nodes")
        allowed = A.toarray().astype(bool) | np.eye(N, dtype=bool)
        off = np.argwhere((np.abs(P) > atol) & ~allowed)
        if off.size:
            u, v = off[0]
            raise ValueError(
                f"P puts mass off the graph: P[{u}, {v}] = {P[u, v]:g} but ({u}, {v}) is not an "
                "edge (support must lie in the edges and the diagonal)"
            )
    if pi is not None:
        pi = _check_pi(pi, N, atol)
        resid = pi @ P - pi
        v = int(np.argmax(np.abs(resid)))
        if abs(resid[v]) > atol:
            raise ValueError(
                f"pi is not stationary for P: (πP − π)[{v}] = {resid[v]:.3g} (tolerance {atol:g})"
            )
    if reversible:
        if pi is None:
            pi = stationary_distribution(P)
        F = pi[:, None] * P
        gap = np.abs(F - F.T)
        u, v = np.unravel_index(int(np.argmax(gap)), gap.shape)
        if gap[u, v] > atol:
            raise ValueError(
                f"P is not reversible with respect to pi: detailed balance fails at ({u}, {v}): "
                f"pi_u P_uv = {F[u, v]:.6g} but pi_v P_vu = {F[v, u]:.6g}"
            )
    return P


# --------------------------------------------------------------------------------------------
# total variation and exact mixing times


def _tv_rows(Q: np.ndarray, pi: np.ndarray) -> float:
    """``d = max_u ½‖Q(u, ·) − π‖₁``."""
    return 0.5 * float(np.abs(Q - pi).sum(axis=1).max())


def _chain_and_pi(P, pi, struct: _Structure | None = None):
    P = _check_stochastic(_as_matrix(P))
    struct = _structure(P) if struct is None else struct
    if pi is None:
        pi = _stationary(P, struct)
    else:
        pi = _check_pi(pi, P.shape[0])
        resid = np.abs(pi @ P - pi).max()
        if resid > 1e-8:
            raise ValueError(f"pi is not stationary for P: max |πP − π| = {resid:.3g}")
    return P, pi, struct


#: Relative tolerance of detailed balance for the spectral route of :func:`mixing_time`: MH chains
#: meet it to a few ulps; a looser match (the 1e-9 of ``spectral``) would perturb P^t visibly.
_DB_RTOL = 1e-11


def _detailed_balance(P: np.ndarray, pi: np.ndarray) -> bool:
    """``|π_u P_uv − π_v P_vu| ≤ 1e-11 · max(π_u P_uv, π_v P_vu)`` for every pair."""
    F = pi[:, None] * P
    return bool(np.all(np.abs(F - F.T) <= _DB_RTOL * np.maximum(F, F.T)))


def _reversible_pi(P: np.ndarray, struct: _Structure) -> np.ndarray | None:
    """π of an irreducible reversible chain from the ratios on a BFS tree, else None.

    Detailed balance gives ``π_v / π_u = P_uv / P_vu`` on every edge (Kolmogorov's criterion), so
    one tree fixes π in O(N²) without the O(N³) solve of :func:`_stationary`; the candidate is kept
    only if detailed balance then holds on every pair (which makes it stationary). A symmetric P
    gives exactly the uniform π.
    """
    if len(struct.closed) != 1 or struct.transient.size:
        return None
    order, pred = breadth_first_order(struct.support, 0, directed=True)
    child = order[1:]
    parent = pred[child]
    back = P[child, parent]
    if np.any(back <= 0):
        return None
    log_ratio = np.log(P[parent, child]) - np.log(back)
    log_pi = np.zeros(P.shape[0])
    for v, u, r in zip(child.tolist(), parent.tolist(), log_ratio.tolist(), strict=True):
        log_pi[v] = log_pi[u] + r  # BFS order: the parent is done before the child
    pi = np.exp(log_pi - log_pi.max())
    pi /= pi.sum()
    return pi if _detailed_balance(P, pi) else None


def tv_distance_curve(P, t_max: int, pi=None) -> np.ndarray:
    """``d(t) = max_u ½‖P^t(u, ·) − π‖₁`` for ``t = 0..t_max`` (spec §2, §9.1), every start.

    ``d`` is non-increasing. Costs ``t_max`` products ``P · P^{t−1}``, sparse when ``P`` is.
    """
    t_max = check_int("t_max", t_max, low=0)
    P, pi, _ = _chain_and_pi(P, pi)
    N = P.shape[0]
    step = sp.csr_array(P) if (N > 200 and np.count_nonzero(P) < 0.1 * N * N) else P
    out = np.empty(t_max + 1)
    Q = np.eye(N)
    out[0] = _tv_rows(Q, pi)
    for t in range(1, t_max + 1):
        Q = step @ Q
        out[t] = _tv_rows(Q, pi)
    return out


@dataclass(frozen=True)
class MixingTime:
    """``τ_mix(ε)``: ``value`` is an int, or ``math.inf`` with a ``reason``."""

    value: int | float
    eps: float
    reason: str | None = None

    @property
    def finite(self) -> bool:
        return not math.isinf(self.value)

    def __str__(self) -> str:
        if self.finite:
            return f"τ_mix({self.eps:g}) = {self.value}"
        return f"τ_mix({self.eps:g}) = ∞: {self.reason}"


def _periodic_reason(d: int) -> str:
    if d == 2:
        what = "eigenvalue −1, period 2: the support graph is bipartite"
    else:
        what = f"eigenvalues e^(2πik/{d}) on the unit circle, period {d}"
    return (
        f"periodic ({what}); a walk from one node sits on one cyclic class of π-mass 1/{d}, so "
        f"d(t) ≥ {1 - 1 / d:g} for every t (use lazy(P) or Metropolis weights)"
    )


#: Truncation budget of the spectral route: dropped modes move d(t) by at most this fraction of ε,
#: a thousandth of the tie tolerance ``_TIE``.
_TRUNC = 1e-3 * _TIE


def mixing_time(
    P, eps: float, pi=None, *, t_max: int | None = None, method: str = "auto"
) -> MixingTime:
    """Exact ``τ_mix(ε) = min{t ≥ 1 : d(t) ≤ ε}``, ``d(t) = max_u ½‖P^t(u, ·) − π‖₁`` (spec §2).

    TV distance is convex in the start, so the worst start is a point mass and ``d(t)`` is
    non-increasing: τ is found by bracketing and bisection on t, evaluating ``d(t)`` exactly (to
    rounding) at each probe. Ties within a relative 1e-9 count as reached (K_N has ``d(1) = 1/N``).

    ``method``:
        ``"spectral"`` (reversible chains, detailed balance with π to a relative 1e-11; Levin,
        Peres & Wilmer, *Markov Chains and Mixing Times*, 2nd ed., §12.1, Lemma 12.2): with
        ``D = diag(π)`` the matrix ``S = D^{1/2} P D^{−1/2}`` is symmetric, its unit eigenvector for
        λ_1 = 1 is ``√π``, and one ``eigh`` of ``S − √π√πᵀ = Σ_{i≥2} λ_i v_i v_iᵀ`` gives, for t ≥ 1,
        ``P^t − Π = D^{−1/2} (Σ_{i≥2} λ_i^t v_i v_iᵀ) D^{1/2}`` (``Π = 1πᵀ``). Removing the
        stationary mode before the eigendecomposition avoids the cancellation ``P^t − π`` and the
        drift of a computed ``1^t``. Modes with ``|λ_i|^t ≤ δ = 2·1e-12·ε·√π_min`` are dropped: for
        a dropped set T, row u of their sum has
        ``‖·‖₁ = π_u^{−1/2} Σ_w √π_w |Σ_{i∈T} λ_i^t v_i(u) v_i(w)|
        ≤ π_u^{−1/2} ‖√π‖₂ (Σ_{i∈T} λ_i^{2t} v_i(u)²)^{1/2} ≤ max_{i∈T} |λ_i|^t / √π_u``
        (Cauchy–Schwarz with ‖√π‖₂ = 1; V is orthogonal), so they move ``d(t)`` by at most ``1e-12·ε``, a
        thousandth of the tie tolerance. One probe then costs an ``N × k × N`` product with the k
        slow modes only. The bracket starts from Levin–Peres–Wilmer Theorems 12.5 and 12.4
        (``(t_rel − 1) ln(1/(2ε)) ≤ τ ≤ ⌈t_rel ln(1/(ε π_min))⌉``, t_rel from the same
        eigenvalues), both checked by evaluating ``d`` (a failed guess widens the bracket by
        doubling; with an eigenvalue ±1 left, t_rel = ∞ and it doubles from t = 1), then
        bisection: about ``2 + log₂(upper − lower)`` probes, all at t ≥ lower.
        ``"powers"`` (any chain): repeated squaring ``P, P², P⁴, ...`` until ``d(2^k) ≤ ε``, then
        binary lifting over the cached table ``P^{2^j}``: about ``2 log₂ τ`` dense products,
        memory ``O(N² log τ)``.
        ``"auto"`` (default): spectral when the chain is reversible, powers otherwise.

    Infinite, with a ``reason``, when the chain is periodic with period p and ``ε < 1 − 1/p``
    (the even-ring MH walk of spec §9.1), reducible with several closed classes and ``ε < 1/2``,
    or when ``d(t_max) > ε`` (default ``t_max = 2^40``). ``pi``: the stationary distribution
    (computed when None, in O(N²) for a reversible chain; checked when given).
    """
    eps = check_real("eps", eps, low=0.0, high=1.0, low_open=True, high_open=True)
    t_max = DEFAULT_T_MAX if t_max is None else check_int("t_max", t_max, low=1)
    check_choice("method", method, {"auto", "spectral", "powers"})
    P = _check_stochastic(_as_matrix(P))
    struct = _structure(P)
    n_closed = len(struct.closed)
    if n_closed > 1 and eps < 0.5:
        return MixingTime(
            math.inf,
            eps,
            f"reducible ({n_closed} closed classes): a walk never leaves the class it starts in, "
            f"so d(t) ≥ 1/2 for every t",
        )
    if n_closed == 1 and struct.periods[0] > 1 and eps < 1 - 1 / struct.periods[0]:
        return MixingTime(math.inf, eps, _periodic_reason(struct.periods[0]))
    reversible_pi = _reversible_pi(P, struct) if pi is None else None
    if reversible_pi is not None:
        pi, reversible = reversible_pi, True
    else:
        P, pi, _ = _chain_and_pi(P, pi, struct)
        reversible = bool(np.all(pi > 0)) and _detailed_balance(P, pi)
    if method == "spectral" and not reversible:
        raise ValueError(
            "method='spectral' needs a reversible chain with π > 0 (detailed balance "
            f"π_u P_uv = π_v P_vu to a relative {_DB_RTOL:g}); use method='powers' or 'auto'"
        )
    target = eps * (1.0 + _TIE)

    def not_reached(d_end: float) -> MixingTime:
        why = f"not reached by t_max = {t_max}: d(t_max) = {d_end:.3g} > eps = {eps:g}"
        if n_closed > 1:
            why = f"reducible ({n_closed} closed classes); " + why
        elif struct.periods[0] > 1:
            why = f"periodic (period {struct.periods[0]}); " + why
        else:
            why += " (eps may be below floating-point resolution)"
        return MixingTime(math.inf, eps, why)

    if reversible and method != "powers":
        return _tau_spectral(P, pi, eps, target, t_max, not_reached)
    return _tau_powers(P, pi, eps, target, t_max, not_reached)


def _tau_spectral(P, pi, eps, target, t_max, not_reached) -> MixingTime:
    """τ from the non-stationary modes of ``S = D^{1/2} P D^{−1/2}`` (see :func:`mixing_time`)."""
    root = np.sqrt(pi)
    S = root[:, None] * P / root[None, :]
    S = 0.5 * (S + S.T) - np.outer(root, root)  # symmetric to rounding; drop the mode λ_1 = 1
    lam, V = np.linalg.eigh(S)
    order = np.argsort(-np.abs(lam))  # slowest modes first: a probe keeps a prefix
    lam, V = lam[order], V[:, order]
    with np.errstate(divide="ignore"):
        log_abs = np.log(np.abs(lam))
    log_delta = math.log(2.0 * _TRUNC * eps * float(root.min()))
    cache: dict[int, float] = {}

    def d(t: int) -> float:
        if t not in cache:
            k = int(np.count_nonzero(t * log_abs > log_delta))  # modes with |λ_i|^t > δ
            if k == 0:
                cache[t] = 0.0
            else:
                Vk = V[:, :k]
                M = (Vk * lam[:k] ** t) @ Vk.T  # D^{1/2} (P^t − Π) D^{−1/2}, truncated
                cache[t] = 0.5 * float(((np.abs(M) @ root) / root).max())
        return cache[t]

    def reached(t: int) -> bool:
        return d(t) <= target

    lam_star = float(np.abs(lam[0]))
    if lam_star < 1.0 - _GAP_TOL:  # Levin–Peres–Wilmer Thms 12.5 / 12.4 as a first bracket
        lower, upper = _lp_bounds(1.0 / (1.0 - lam_star), eps, float(pi.min()))
    else:  # eigenvalue ±1 left (periodic or reducible): no bracket, plain doubling
        lower, upper = 0.0, math.inf
    guess = int(min(t_max, max(1.0, math.floor(lower))))
    if reached(guess):  # τ ≤ guess: only if the lower bound is tight; step down by doubling
        hi, step = guess, 1
        while True:
            lo = max(hi - step, 0)
            if lo == 0 or not reached(lo):
                break
            hi, step = lo, 2 * step
    else:
        lo = guess
        hi = int(min(t_max, max(lo + 1, upper))) if math.isfinite(upper) else min(t_max, 2 * lo)
        while not reached(hi):
            if hi == t_max:
                return not_reached(d(t_max))
            lo, hi = hi, min(t_max, 2 * hi)
    while hi - lo > 1:  # invariant: d(lo) > ε (or lo = 0), d(hi) ≤ ε
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reached(mid) else (mid, hi)
    return MixingTime(hi, eps)


def _tau_powers(P, pi, eps, target, t_max, not_reached) -> MixingTime:
    """τ by repeated squaring and binary lifting over ``P^{2^j}`` (see :func:`mixing_time`)."""
    table = [P]  # table[j] = P^(2^j)
    if _tv_rows(P, pi) <= target:
        return MixingTime(1, eps)
    lo, Q = 1, P  # invariant: Q = P^lo and d(lo) > eps
    hi = None
    while 2 * lo <= t_max:
        Q2 = Q @ Q
        table.append(Q2)
        if _tv_rows(Q2, pi) <= target:
            hi = 2 * lo
            break
        lo, Q = 2 * lo, Q2
    if hi is None:
        if lo == t_max:
            return not_reached(_tv_rows(Q, pi))
        R, rem, j = Q, t_max - lo, 0
        while rem:
            if rem & 1:
                R = R @ table[j]
            rem >>= 1
            j += 1
        d_end = _tv_rows(R, pi)
        if d_end > target:
            return not_reached(d_end)
        hi = t_max
    for j in range(len(table) - 2, -1, -1):  # binary lifting inside (lo, hi]
        step = 1 << j
        if lo + step < hi:
            cand = Q @ table[j]
            if _tv_rows(cand, pi) > target:
                Q, lo = cand, lo + step
    return MixingTime(lo + 1, eps)


# --------------------------------------------------------------------------------------------
# spectra and Levin–Peres bounds


@dataclass(frozen=True)
class Spectrum:
    """Eigen-summary of a chain (Levin–Peres–Wilmer §12.2).

    ``eigenvalues`` sorted decreasingly (real for reversible chains; for non-reversible chains
    complex, by decreasing modulus then real part); ``lambda_2`` the largest eigenvalue after one
    copy of 1 (real part for complex spectra); ``lambda_star = max_{i≥2} |λ_i|``;
    ``spectral_gap = 1 − λ_2``; ``absolute_gap = 1 − λ_*``; ``t_rel = 1/absolute_gap`` (inf when
    the absolute gap vanishes: periodic or reducible). Gaps below 1e-10 are set to 0.
    """

    eigenvalues: np.ndarray
    lambda_2: float
    lambda_star: float
    spectral_gap: float
    absolute_gap: float
    t_rel: float
    reversible: bool
    pi: np.ndarray | None = None


def _is_reversible(P: np.ndarray, pi: np.ndarray, atol: float = 1e-9) -> bool:
    F = pi[:, None] * P
    return bool(np.abs(F - F.T).max() <= atol)


def _gaps(lam2: float, lam_star: float) -> tuple[float, float, float]:
    gap = 1.0 - lam2
    agap = 1.0 - lam_star
    gap = 0.0 if gap < _GAP_TOL else gap
    agap = 0.0 if agap < _GAP_TOL else agap
    return gap, agap, (math.inf if agap == 0.0 else 1.0 / agap)


def spectral(P, pi=None) -> Spectrum:
    """Eigenvalues, spectral and absolute gaps and relaxation time of ``P``.

    Reversible chains (detailed balance with ``pi``, or with the unique stationary distribution
    when ``pi`` is None) are symmetrised, ``S = D^{1/2} P D^{−1/2}`` with ``D = diag(π)``, and
    diagonalised with ``eigh`` (real spectrum). Others use ``eigvals`` and are flagged
    ``reversible=False``; their ``t_rel`` does not bound the mixing time.
    """
    P = _check_stochastic(_as_matrix(P))
    struct = _structure(P)
    if pi is not None:
        pi = _check_pi(pi, P.shape[0])
    elif len(struct.closed) == 1 and struct.transient.size == 0:
        pi = _reversible_pi(P, struct)
        pi = _stationary(P, struct) if pi is None else pi
    if pi is not None and _is_reversible(P, pi):
        r = np.sqrt(pi)
        S = r[:, None] * P / r[None, :]
        lam = np.linalg.eigvalsh(0.5 * (S + S.T))[::-1]
        lam[0] = min(lam[0], 1.0)
        rest = lam[1:]
        lam2 = float(rest[0]) if rest.size else -math.inf
        lam_star = float(np.abs(rest).max()) if rest.size else 0.0
        gap, agap, t_rel = _gaps(lam2, lam_star)
        if not rest.size:
            gap, agap, t_rel = 1.0, 1.0, 1.0
        return Spectrum(lam, lam2, lam_star, gap, agap, t_rel, True, pi)
    lam = np.linalg.eigvals(P)
    order = np.lexsort((-lam.real, -np.round(np.abs(lam), 12)))
    lam = lam[order]
    top = int(np.argmin(np.abs(lam - 1.0)))
    rest = np.delete(lam, top)
    lam = np.concatenate([[lam[top]], rest])
    if np.abs(lam.imag).max() < 1e-12:
        lam = lam.real
    lam2 = float(rest.real.max()) if rest.size else -math.inf
    lam_star = float(np.abs(rest).max()) if rest.size else 0.0
    gap, agap, t_rel = _gaps(lam2, lam_star)
    return Spectrum(lam, lam2, lam_star, gap, agap, t_rel, False, pi)


class MixingBounds(NamedTuple):
    """``(lower, upper)`` on ``τ_mix(ε)``; unpacks as a pair."""

    lower: float
    upper: float


def _lp_bounds(t_rel: float, eps: float, pi_min: float) -> MixingBounds:
    log_low = math.log(1.0 / (2.0 * eps))
    if math.isinf(t_rel):
        lower = math.inf if log_low > 0 else 0.0
        return MixingBounds(lower, math.inf)
    lower = max(0.0, (t_rel - 1.0) * log_low)
    upper = float(math.ceil(t_rel * math.log(1.0 / (eps * pi_min))))
    return MixingBounds(lower, upper)


def levin_peres_bounds(P, eps: float, pi=None) -> MixingBounds:
    """``((t_rel − 1) ln(1/(2ε)), ⌈t_rel ln(1/(ε π_min))⌉)`` for a reversible chain.

    Levin, Peres & Wilmer, *Markov Chains and Mixing Times* (2nd ed.), Theorem 12.5 (lower) and
    Theorem 12.4 (upper), with ``t_rel = 1/(1 − λ_*)`` from the symmetrised matrix (spec §9.2.3;
    lazy ring, ε = 0.01: 37.05 ≤ 42 ≤ 72.3). The lower bound is clipped at 0 (ε ≥ 1/2). A
    periodic chain has ``t_rel = ∞`` and both bounds infinite (lower finite only for ε ≥ 1/2).
    """
    eps = check_real("eps", eps, low=0.0, high=1.0, low_open=True, high_open=True)
    spec = spectral(P, pi)
    if not spec.reversible:
        raise ValueError(
            "levin_peres_bounds needs a reversible chain: P does not satisfy detailed balance "
            "with respect to pi"
        )
    return _lp_bounds(spec.t_rel, eps, float(spec.pi.min()))


# --------------------------------------------------------------------------------------------
# sparse spectra (N up to ~10^5 and beyond)


@dataclass(frozen=True)
class SparseSpectralBounds:
    """Extreme eigenvalues of the symmetrised (lazy) MH matrix and the Levin–Peres bounds.

    ``lambda_2``, ``t_rel``, ``lower`` and ``upper`` are as in :class:`Spectrum` and
    :func:`levin_peres_bounds`. For ``laziness ≥ 1/2`` every eigenvalue is ≥ 0, so λ_min cannot be
    λ_*; it is then computed to an absolute accuracy of about 1e-3 only. ``method`` names the
    route taken (``"lanczos→shift-invert"`` when Lanczos did not converge).
    """

    N: int
    eps: float
    laziness: float
    lambda_2: float
    lambda_min: float
    lambda_star: float
    spectral_gap: float
    absolute_gap: float
    t_rel: float
    pi_min: float
    lower: float
    upper: float
    method: str


def _symmetric_mh(G, pi, laziness: float):
    """``S = l I + (1 − l) D^{1/2} P D^{−1/2}`` for the MH chain ``P`` of spec §4.4, sparse."""
    A, u, v, deg = _edges(G)
    N = A.shape[0]
    pi = np.full(N, 1.0 / N) if pi is None else _check_pi(pi, N)
    ratio = (pi[v] * deg[u]) / (pi[u] * deg[v])
    rejected = np.maximum(0.0, 1.0 - ratio) / deg[u]
    diag = np.bincount(u, weights=rejected, minlength=N)
    root = np.sqrt(pi)
    # sqrt(π_u/π_v) P_uv = min(sqrt(π_u/π_v)/d_u, sqrt(π_v/π_u)/d_v): symmetric by construction
    w = np.minimum(root[u] / (root[v] * deg[u]), root[v] / (root[u] * deg[v]))
    rows = np.concatenate([u, np.arange(N)])
    cols = np.concatenate([v, np.arange(N)])
    vals = np.concatenate([(1.0 - laziness) * w, laziness + (1.0 - laziness) * diag])
    S = sp.csr_array((vals, (rows, cols)), shape=(N, N))
    return S, pi, root, A


def _one_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _eccentricity(A: sp.csr_array) -> int:
    """Depth of a BFS from node 0 (a cheap proxy for the diameter)."""
    depth = shortest_path(A, method="D", directed=False, unweighted=True, indices=0)
    return int(depth.max())


def sparse_spectral_bounds(
    G,
    eps: float,
    laziness: float = 0.5,
    *,
    pi=None,
    method: str = "auto",
    tol: float = 1e-6,
) -> SparseSpectralBounds:
    """Levin–Peres bounds for the lazy MH walk on a large sparse graph (N = 10^5 in seconds).

    Builds the symmetrised matrix ``S = l·I + (1 − l)·D^{1/2} P D^{−1/2}`` of the MH chain ``P``
    (spec §4.4; ``D = diag(π)``, ``l = laziness``) in CSR form and finds its largest algebraic
    eigenvalue below 1 and its smallest algebraic eigenvalue with
    ``scipy.sparse.linalg.eigsh``: λ_2 on ``S − 2√π√πᵀ`` (the eigenvalue 1 is moved to −1), λ_min
    on ``S + I`` (so that ``tol`` is an absolute accuracy near λ_min ≈ 0). Then
    ``λ_* = max(|λ_2|, |λ_min|)``, ``t_rel = 1/(1 − λ_*)`` and the bounds of
    :func:`levin_peres_bounds`. ``G``: a networkx graph or a (sparse) adjacency matrix; ``pi``:
    the MH target (uniform by default); ``tol``: ARPACK's residual tolerance (eigenvalue errors
    are about its square). BLAS is held to one thread during ARPACK (its small vector operations
    run slower threaded).

    ``method``:
        ``"lanczos"``: plain Lanczos (``eigsh`` with ``which="LA"``/``"SA"``); fast on expanders
        and small-world graphs.
        ``"shift-invert"``: ``eigsh`` in shift-invert mode around ``1 + 1e-6`` (and just below the
        spectrum, ``2l − 1 − 1e-6``) with a sparse LU of ``S − σI``; fast on low-dimensional graphs
        (rings, grids, tori, random geometric graphs) whose tiny gaps stall Lanczos.
        ``"dense"``: ``eigvalsh`` of the dense matrix.
        ``"auto"`` (default): dense for N ≤ 2000; otherwise shift-invert when a BFS from node 0
        reaches depth > 2 log₂ N + 10 (a large-diameter, low-dimensional graph), else Lanczos,
        falling back to shift-invert if Lanczos does not converge.
    """
    eps = check_real("eps", eps, low=0.0, high=1.0, low_open=True, high_open=True)
    laziness = check_real("laziness", laziness, low=0.0, high=1.0)
    tol = check_real("tol", tol, low=0.0)
    check_choice("method", method, {"auto", "lanczos", "shift-invert", "dense"})
    S, pi, root, A = _symmetric_mh(G, pi, laziness)
    N = S.shape[0]
    if method == "auto":
        if N <= 2000:
            method = "dense"
        elif _eccentricity(A) > 2 * math.log2(N) + 10:
            method = "shift-invert"
        else:
            method = "lanczos"
    if method != "dense" and N < 20:
        raise ValueError(f"method {method!r} needs N ≥ 20 (got {N}); use method='dense'")

    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh, splu

    def lanczos(op, which: str, tol_: float) -> float:
        vals = eigsh(
            op, k=1, which=which, tol=tol_, ncv=min(N - 1, 32), maxiter=100, v0=v0,
            return_eigenvectors=False,
        )  # fmt: skip
        return float(vals[0])

    def shift_invert(sigma: float, k: int) -> np.ndarray:
        M = (S - sigma * sp.eye_array(N, format="csr")).tocsc()
        lu = splu(
            M,
            permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )
        op = LinearOperator((N, N), matvec=lu.solve, dtype=np.float64)
        vals = eigsh(S, k=k, sigma=sigma, OPinv=op, which="LM", tol=tol, return_eigenvectors=False)
        return np.sort(vals)

    v0 = np.random.default_rng(0).standard_normal(N)
    # ARPACK's tol is relative to |λ|; λ_min is found on S + I (spectrum in [0, 2]) so that it is
    # an absolute accuracy even when λ_min ≈ 0. For laziness ≥ 1/2 every eigenvalue is ≥ 2l − 1 ≥ 0
    # and λ_* = λ_2, so λ_min cannot change the bounds and 1e-3 is enough.
    tol_min = max(tol, 1e-3) if laziness >= 0.5 else tol
    if method == "dense":
        lam = np.linalg.eigvalsh(S.toarray())
        lam2, lam_min = (float(lam[-2]) if N > 1 else -math.inf), float(lam[0])
    else:
        with _one_thread():
            lam2 = lam_min = None
            if method == "lanczos":
                deflated = LinearOperator(
                    (N, N), matvec=lambda x: S @ x - 2.0 * root * (root @ x), dtype=np.float64
                )
                try:
                    lam2 = lanczos(deflated, "LA", tol)
                except ArpackNoConvergence:
                    method = "lanczos→shift-invert"
            if lam2 is None:
                lam2 = float(shift_invert(1.0 + 1e-6, 2)[0])
            if method == "lanczos" or laziness >= 0.5:
                shifted = LinearOperator((N, N), matvec=lambda x: S @ x + x, dtype=np.float64)
                try:
                    lam_min = lanczos(shifted, "SA", tol_min) - 1.0
                except ArpackNoConvergence:
                    pass
            if lam_min is None:
                lam_min = float(shift_invert(2.0 * laziness - 1.0 - 1e-6, 1)[0])
    lam_star = max(abs(lam2), abs(lam_min))
    gap, agap, t_rel = _gaps(lam2, lam_star)
    lower, upper = _lp_bounds(t_rel, eps, float(pi.min()))
    return SparseSpectralBounds(
        N, eps, laziness, lam2, lam_min, lam_star, gap, agap, t_rel, float(pi.min()), lower,
        upper, method,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# symbolic: the complete graph


class SymbolicCheck(NamedTuple):
    """``(holds, expression)``: whether the identity was proved, and the proved closed form."""

    holds: bool
    expression: sympy.Expr


def complete_graph_tv_symbolic() -> SymbolicCheck:
    """Prove ``d(t) = ((N − 1)/N)·(N − 1)^{−t}`` for the MH walk on ``K_N`` (spec §9.1, §9.2.4).

    Symbolically, for general N ≥ 2 and integer t ≥ 0:

    1. ``J = 11ᵀ`` satisfies ``J² = N J`` (``(J²)_ij = Σ_{k=1}^N 1 = N``), so ``Π = J/N`` is a
       projection, and ``P = (J − I)/(N − 1) = λ I + (1 − λ) Π`` with ``λ = −1/(N − 1)``.
    2. In the commutative algebra spanned by ``I`` and ``Π`` (``Π² = Π``), induction on t gives
       ``P^t = λ^t I + (1 − λ^t) Π = Π + λ^t (I − Π)``: the π-projection plus
       ``(−1/(N − 1))^t (I − J/N)``.
    3. Row u of ``P^t − 1πᵀ = λ^t (I − Π)`` is ``λ^t(1 − 1/N)`` at u and ``−λ^t/N`` at the N − 1
       other nodes, so ``½‖·‖₁ = ½|λ|^t (2(N − 1)/N) = ((N − 1)/N)(N − 1)^{−t}`` for every u.

    Each step is checked with ``sympy.simplify``; step 2 is also checked against explicit matrix
    powers for N = 2..6, t = 0..5. Returns ``(True, expression)``.
    """
    import sympy

    n = sympy.Symbol("n", integer=True, positive=True)  # n = N − 1 ≥ 1
    t = sympy.Symbol("t", integer=True, nonnegative=True)
    N = n + 1
    k = sympy.Symbol("k", integer=True, positive=True)
    lam = -1 / (N - 1)
    checks = []
    # 1. J² = N J entrywise, and the decomposition of P as a·I + c·J.
    checks.append(sympy.simplify(sympy.summation(1, (k, 1, N)) - N) == 0)
    a_P, c_P = -1 / (N - 1), 1 / (N - 1)  # (J − I)/(N − 1) = a_P I + c_P J
    checks.append(sympy.simplify(lam - a_P) == 0)
    checks.append(sympy.simplify((1 - lam) / N - c_P) == 0)

    # 2. Induction in the algebra {a I + b Π}: (a1, b1)(a2, b2) = (a1 a2, a1 b2 + b1 a2 + b1 b2).
    def mul(x, y):
        return (x[0] * y[0], x[0] * y[1] + x[1] * y[0] + x[1] * y[1])

    def power(s):
        return (lam**s, 1 - lam**s)

    checks.append(power(0) == (1, 0))
    stepped = mul(power(t), (lam, 1 - lam))
    target = power(t + 1)
    checks.append(
        all(sympy.simplify(sympy.expand(x - y)) == 0 for x, y in zip(stepped, target, strict=True))
    )
    for n_val in range(2, 7):  # explicit matrices, exact rationals
        J = sympy.ones(n_val, n_val)
        I = sympy.eye(n_val)
        Pm = (J - I) / (n_val - 1)
        for t_val in range(6):
            a, b = (x.subs({n: n_val - 1, t: t_val}) for x in power(t))
            checks.append((Pm**t_val - (a * I + b * J / n_val)).is_zero_matrix)
    # 3. Total variation of row u of λ^t (I − Π).
    tv = sympy.Rational(1, 2) * (
        sympy.Abs(lam**t * (1 - 1 / N)) + (N - 1) * sympy.Abs(-(lam**t) / N)
    )
    expression = (N - 1) / N * (N - 1) ** (-t)
    checks.append(sympy.simplify(tv - expression) == 0)
    Nsym = sympy.Symbol("N", integer=True, positive=True)
    return SymbolicCheck(bool(all(checks)), sympy.simplify(expression.subs(n, Nsym - 1)))
