"""Dᵀ(Dx − b) in one pass over D: the least-squares gradient on the CPU (issue 14 §2).

Torch forms the gradient of ½‖Dx − b‖² as two matrix-vector products, r = Dx − b and Dᵀr, and so
reads D twice. Both products are bound by memory bandwidth: at Bernoulli-LoRA's 64×64 regression
(§7.1) D is 1,000 × 4,096 float64, 32 MB, and at 256×256 it is 524 MB. :func:`normal_grad` reads
D once, four rows at a time: it forms their residuals rᵢ = dᵢᵀx − bᵢ in one sweep over the columns
and adds Σ rᵢ·dᵢ to the sum in a second sweep while the four rows are still in L2, which halves
the traffic; :func:`residuals` gives Dx − b (for the loss) in one pass too. The loops are compiled
by numba (:mod:`lorakit.problems._one_pass`). The sum is exact float64 arithmetic in another order
than BLAS's: it agrees with torch's two products to rounding (``tests/test_least_squares.py``).
The loop allows reassociation (SIMD) and fused multiply-add but keeps IEEE inf/NaN, which the
divergence guard relies on.

Threads: the rows are cut into a fixed number of blocks whose partial sums are added in block
order, so the pass gives the same bits on any number of threads. It runs on as many as torch
may use (``torch.get_num_threads()``; ``torch.set_num_threads(1)`` makes it serial), through
numba's OpenMP or TBB layer, and serially where numba has neither. Measured at 64×64 in float32
storage on the 2-core machine: 0.63 ms a pass on one thread, 0.31 ms on two, and no slower on two
than on one while another process keeps a core busy (0.68 against 0.70 ms). The threaded pass is
compiled in each process at its first use, about 2.5 s: numba's cache would keep it, but a cached
parallel function runs at one thread's speed (numba issue #8085).

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


@functools.cache
def _parallel():
    """The threaded pass, or None where numba's ``prange`` would not run on a thread-safe layer
    (OpenMP or TBB; its fallback, ``workqueue``, ran slower than one thread here and aborts on
    concurrent calls)."""
    import numba

    from ._one_pass import parallel

    parallel(np.zeros((8, 1)), np.zeros(1), np.zeros(8), True)  # compiles it, starts the threads
    return parallel if numba.threading_layer() in ("omp", "tbb") else None


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
    from ._one_pass import serial as kernel

    args = [t.detach().contiguous().numpy() for t in (D, x, b)]
    threads = torch.get_num_threads()  # torch's setting bounds the pass's threads too
    if threads > 1 and _parallel() is not None:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        kernel = _parallel()
    return tuple(map(torch.from_numpy, kernel(*args, gradient)))
