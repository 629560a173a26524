"""Dᵀ(Dx − b) in one pass over D: the least-squares gradient on the CPU (issue 14 §2).

Torch forms the gradient of ½‖Dx − b‖² as two matrix-vector products, r = Dx − b and Dᵀr, and so
reads D twice. Both products are bound by memory bandwidth: at Bernoulli-LoRA's 64×64 regression
(§7.1) D is 1,000 × 4,096 float64, 32 MB, and at 256×256 it is 524 MB. :func:`normal_grad` reads
each row dᵢ once: it forms rᵢ = dᵢᵀx − bᵢ and adds rᵢ·dᵢ to the sum while the row is still in L1,
which halves the traffic. The rows are split into one contiguous block per torch thread, each
block summed by a compiled loop (numba) that releases the GIL, and the blocks' sums are added in
block order, so the result is deterministic for a given thread count. The sum is exact float64
arithmetic in another order than BLAS's: it agrees with torch's two products to rounding
(``tests/test_problems.py``). The loop allows reassociation (SIMD) and fused multiply-add but
keeps IEEE inf/NaN, which the divergence guard relies on.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["normal_grad", "supports"]

#: Below this many entries D fits in the caches and torch's two products are as fast.
MIN_ENTRIES = 1 << 20


def _rows(D, x, b, lo, hi):
    """Σ_{lo ≤ i < hi} (dᵢᵀx − bᵢ)·dᵢ, compiled by :func:`_compiled`."""
    g = np.zeros(D.shape[1])
    for i in range(lo, hi):
        row = D[i]
        r = -b[i]
        for j in range(row.shape[0]):
            r += row[j] * x[j]
        for j in range(row.shape[0]):
            g[j] += r * row[j]
    return g


@functools.cache
def _compiled():
    import numba  # on first use: it adds about half a second to ``import lorakit``

    return numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})(_rows)


_pool: tuple[int, int, ThreadPoolExecutor] | None = None


def _executor(workers: int) -> ThreadPoolExecutor:
    # One pool per process and thread count: a pool inherited through fork has no threads.
    global _pool
    if _pool is None or _pool[:2] != (os.getpid(), workers):
        _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="lorakit"))
    return _pool[2]


def supports(D: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether :func:`normal_grad` applies: one float64 CPU point, a large contiguous D, no
    autograd (it computes a value, not a graph)."""
    return (
        D.device.type == "cpu"
        and D.dtype == x.dtype == torch.float64
        and x.ndim == 1
        and D.is_contiguous()
        and D.numel() >= MIN_ENTRIES
        and not (torch.is_grad_enabled() and (D.requires_grad or x.requires_grad))
    )


def normal_grad(D: torch.Tensor, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σᵢ (dᵢᵀx − bᵢ)·dᵢ = Dᵀ(Dx − b), reading D once (call only where :func:`supports`)."""
    Dn, xn = D.detach().numpy(), x.detach().contiguous().numpy()
    bn = b.detach().contiguous().numpy()
    workers = max(1, min(torch.get_num_threads(), D.shape[0]))
    cuts = np.linspace(0, D.shape[0], workers + 1).astype(np.int64)
    rows = _compiled()
    parts = _executor(workers).map(lambda k: rows(Dn, xn, bn, cuts[k], cuts[k + 1]), range(workers))
    return torch.from_numpy(sum(parts))
