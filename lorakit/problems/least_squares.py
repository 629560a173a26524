"""Dᵀ(Dx − b) in one pass over D: the least-squares gradient on the CPU (issue 14 §2).

Torch forms the gradient of ½‖Dx − b‖² as two matrix-vector products, r = Dx − b and Dᵀr, and so
reads D twice. Both products are bound by memory bandwidth: at Bernoulli-LoRA's 64×64 regression
(§7.1) D is 1,000 × 4,096 float64, 32 MB, and at 256×256 it is 524 MB. :func:`normal_grad` reads
D once, four rows at a time: it forms their residuals rᵢ = dᵢᵀx − bᵢ in one sweep over the columns
and adds Σ rᵢ·dᵢ to the sum in a second sweep while the four rows are still in L2, which halves
the traffic; :func:`residuals` gives Dx − b (for the loss) in one pass too. The loops are compiled
by numba and single-threaded: on the shared 2-core machine of ``tests/benchmarks/bench_chain.py``
a second thread halves the kernel's time when the other core is idle, but waits at the join
whenever the other core is busy, as NumPy's two-thread products do there. The
sum is exact float64 arithmetic in another order than BLAS's: it agrees with torch's two products
to rounding (``tests/test_least_squares.py``). The loop allows reassociation (SIMD) and fused
multiply-add but keeps IEEE inf/NaN, which the divergence guard relies on.

Data whose entries are all float32 values (``linear_regression(data_dtype=torch.float32)`` rounds
them so) are read from a float32 copy (:func:`storage`): half the bytes again, and the same sum,
because widening a float32 to float64 is exact and every product and sum is still float64. At
64×64 that is 16 MB a step, and the step beats NumPy's two products on 2 cores
(``tests/benchmarks/bench_chain.py``); float64 data that are not float32 values are never rounded.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["normal_grad", "residuals", "storage", "supports"]

#: Below this many entries D fits in the caches and torch's two products are as fast.
MIN_ENTRIES = 1 << 20


def _pass(D, x, b, gradient):
    """One pass over D, four rows per sweep (four sums in flight): the residuals r = Dx − b and,
    when ``gradient``, Σᵢ rᵢ·dᵢ = Dᵀr, added while the four rows are still in L2. Compiled by
    :func:`_compiled`; returns (r, Dᵀr or an empty array)."""
    n, d = D.shape
    r, g = np.empty(n), np.zeros(d if gradient else 0)
    for i in range(0, n - n % 4, 4):
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
    for i in range(n - n % 4, n):
        s = -b[i]
        for j in range(d):
            s += D[i, j] * x[j]
        r[i] = s
        if gradient:
            for j in range(d):
                g[j] += s * D[i, j]
    return r, g


@functools.cache
def _compiled():
    import numba  # on first use: it adds about half a second to ``import lorakit``

    return numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})(_pass)


def supports(D: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether :func:`normal_grad` applies: one float64 CPU point, a large contiguous D, no
    autograd (it computes a value, not a graph)."""
    return (  # size first: the small problems of the checks and notebooks stop there
        D.numel() >= MIN_ENTRIES
        and D.device.type == "cpu"
        and D.dtype == x.dtype == torch.float64
        and x.ndim == 1
        and D.is_contiguous()
        and not (torch.is_grad_enabled() and (D.requires_grad or x.requires_grad))
    )


def storage(D: torch.Tensor) -> torch.Tensor:
    """The copy of D that :func:`normal_grad` reads: D in float32 when D is a float64 matrix that
    :func:`supports` takes and whose every entry is a float32 value (so nothing is rounded), else
    D itself."""
    if (
        D.numel() >= MIN_ENTRIES
        and D.device.type == "cpu"
        and D.dtype == torch.float64
        and D.is_contiguous()
    ):
        D32 = D.float()
        if torch.equal(D32.double(), D):
            return D32
    return D


def normal_grad(D: torch.Tensor, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σᵢ (dᵢᵀx − bᵢ)·dᵢ = Dᵀ(Dx − b) in float64, reading D once (call only where
    :func:`supports` the float64 data; D may be their float32 :func:`storage`)."""
    return _run(D, x, b, gradient=True)[1]


def residuals(D: torch.Tensor, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dx − b in float64, one pass over D (for the loss; the same conditions as
    :func:`normal_grad`)."""
    return _run(D, x, b, gradient=False)[0]


def _run(D, x, b, gradient: bool) -> tuple[torch.Tensor, torch.Tensor]:
    args = (t.detach().contiguous().numpy() for t in (D, x, b))
    return tuple(map(torch.from_numpy, _compiled()(*args, gradient)))
