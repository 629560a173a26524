"""The compiled pass of :mod:`lorakit.problems.least_squares` (imported on first use: numba adds
about half a second to ``import lorakit``).

:func:`one_pass` splits the rows of D into ``CHUNKS`` blocks, each with its own partial Dᵀr, and
adds the partials in block order: the sums are the same float64 numbers whether the blocks run on
one thread (:data:`serial`) or on several (:data:`parallel`, numba's ``prange``).
"""

import numba
import numpy as np

#: Row blocks of one pass. Fixed, so that the order of every sum, and hence the result to the last
#: bit, does not depend on the number of threads; threads beyond four would idle.
CHUNKS = 4

# Reassociation (SIMD) and fused multiply-add, but IEEE inf/NaN kept: the divergence guard needs them.
_FLAGS = {"nogil": True, "fastmath": {"reassoc", "contract"}}


@numba.njit(inline="always", **_FLAGS)
def _rows(D, x, b, r, g, lo, hi, gradient):
    """Rows lo..hi − 1: r_i = d_iᵀx − b_i, and Σ r_i·d_i added to g when ``gradient``. Four rows
    per sweep: their residuals in one sweep over the columns (four sums in flight), then their
    share of Dᵀr in a second sweep while the four rows are still in L2."""
    d = D.shape[1]
    end = hi - (hi - lo) % 4
    for i in range(lo, end, 4):
        d0, d1, d2, d3 = D[i], D[i + 1], D[i + 2], D[i + 3]
        r0, r1, r2, r3 = -b[i], -b[i + 1], -b[i + 2], -b[i + 3]
        for j in range(d):
            r0 += d0[j] * x[j]
            r1 += d1[j] * x[j]
            r2 += d2[j] * x[j]
            r3 += d3[j] * x[j]
        r[i], r[i + 1], r[i + 2], r[i + 3] = r0, r1, r2, r3
        if gradient:
            for j in range(d):
                g[j] += r0 * d0[j] + r1 * d1[j] + r2 * d2[j] + r3 * d3[j]
    for i in range(end, hi):
        s = -b[i]
        for j in range(d):
            s += D[i, j] * x[j]
        r[i] = s
        if gradient:
            for j in range(d):
                g[j] += s * D[i, j]


def one_pass(D, x, b, gradient):
    """(r = Dx − b, Dᵀr or an empty array), reading each row of D once: ``CHUNKS`` blocks of rows
    (whole fours but the last), their partial sums added in block order."""
    n, d = D.shape
    r = np.empty(n)
    parts = np.zeros((CHUNKS, d if gradient else 0))
    for c in numba.prange(CHUNKS):
        lo = n // 4 * c // CHUNKS * 4
        hi = n if c == CHUNKS - 1 else n // 4 * (c + 1) // CHUNKS * 4
        _rows(D, x, b, r, parts[c], lo, hi, gradient)
    total = np.zeros(d if gradient else 0)
    for c in range(CHUNKS):
        total += parts[c]
    return r, total


serial = numba.njit(cache=True, **_FLAGS)(one_pass)
# Not cached: a cached parallel function runs at one thread's speed (numba issue #8085, measured
# here too), so a process compiles it at its first threaded pass, about 2.5 s.
parallel = numba.njit(parallel=True, **_FLAGS)(one_pass)
