"""The least-squares gradient Dᵀ(Dx − b)/N of a finite sum, computed the cheap way for its size.

Bernoulli-LoRA's linear regression (§7.1, App. J.1; :class:`~lorakit.problems.LinearRegression`)
spends almost all of a GD step here: D is N×d with d = m·n (1,000 × 4,096 at 64×64, 1,000 × 65,536
at 256×256), and the two matrix-vector products of the direct form each read all N·d floats of D
for one multiply-add per float. They are bound by memory traffic, so the kernel reads less:

* **Gram** (d ≤ N, e.g. the paper's 64×64 with its 10,000 fine-tuning samples): DᵀD/N and Dᵀb/N
  are formed once, and ∇ = (DᵀD/N)x − Dᵀb/N reads d² floats per call instead of 2·N·d.
* **fused row blocks** (d > N, the benchmark's 64×64 and 256×256 with N = 1,000, where the Gram
  matrix would be larger than D): D is read once per call, in blocks of rows of ``BLOCK_BYTES``:
  r_k = D_k x − b_k, then ∇ += D_kᵀ r_k while D_k is still in cache, so the second product reads
  the cache, not memory (two memory passes become one).

On the CPU both run on NumPy's BLAS through zero-copy views of the tensors, one BLAS thread per
worker (threadpoolctl) and the rows split between ``torch.get_num_threads()`` workers; the second
product adds D_kᵀ r_k into the gradient in place (``gemv`` with β = 1 on the column-major D_kᵀ:
no copy of the block, no temporary of length d). Measured interleaved (tests/benchmarks/timing.py,
medians of 5–7) on the 2-core benchmark machine while other jobs ran, 2 threads: at 1,000 × 4,096
the direct form took 30 ms per gradient on OpenBLAS's own two threads (they spin while the other
core is busy), 10.5 ms on one, torch's two-pass ``mv`` 6.6 ms, one fused pass on one thread 4.2 ms,
and this kernel 3.0 ms against 16.0 ms for the direct form in the same run; at 300 × 65,536 17.8 ms
against 19.8 ms (the direct form's two passes then run at memory speed on both cores). Float32
data with float64 accumulation took about 36% of the float64 time (2.0 against 5.5 ms, one
thread) but changes the problem itself, every entry of D by up to 2⁻²⁴ ≈ 6e-8 relative: far above
float64 rounding and the 1e-12 to which the chain's iterates are checked, so it is not used and
the data stay in the problem's dtype. Elsewhere (CUDA, an ``x`` that requires grad, a dtype
NumPy lacks, a problem below ``MIN_ELEMENTS``) the same formulas run in torch.

Every path is exact to rounding in the problem's dtype: only the order of the sums changes, so
the error stays within the usual bound (d + N)·eps·|D|ᵀ(|D||x| + |b|)/N of the direct formula
(tests/test_problems.py).
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import torch
from scipy.linalg import blas
from threadpoolctl import ThreadpoolController

__all__ = ["BLOCK_BYTES", "CORES", "MIN_ELEMENTS", "LeastSquaresGradient"]

#: Bytes of one block of rows of D in the fused pass: a core's L2 cache (1 MiB on the benchmark
#: machine) and its share of L3, so the second product of a block reads it from cache. Of 0.5, 1,
#: 2 and 4 MiB, 2 MiB was fastest on the benchmark machine (within the noise of 1 MiB).
BLOCK_BYTES = 2 << 20
#: Elements of D (or of the Gram matrix) from which the NumPy kernels and a second worker pay:
#: below, a call costs microseconds and torch's direct formulas run.
MIN_ELEMENTS = 1 << 18
#: The machine's cores (os.cpu_count() costs tens of microseconds per call on some systems).
CORES = os.cpu_count() or 1


@cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=CORES, thread_name_prefix="lorakit-lsq")


class LeastSquaresGradient:
    """x ↦ Dᵀ(Dx − b)/N for x of shape (..., d), by the Gram matrix (d ≤ N) or fused row blocks.

    ``D`` (N, d) and ``b`` (N,) are read, never copied on the CPU (a non-contiguous D is made
    contiguous once); the Gram matrix is formed at the first call. Module docstring for the
    choice, its measurements and its exactness.
    """

    def __init__(self, D: torch.Tensor, b: torch.Tensor):
        self.D, self.b = D, b
        self.N, self.d = D.shape
        self.kind = "gram" if self.d <= self.N else "fused"
        self.elements = self.d * (self.d if self.kind == "gram" else self.N)
        self.numpy = (
            D.device.type == "cpu"
            and D.dtype in (torch.float32, torch.float64)
            and self.elements >= MIN_ELEMENTS
        )
        self._gram_np = self._gram_t = None
        if self.numpy:
            self._Dn = np.ascontiguousarray(D.detach().numpy())
            self._bn = b.detach().numpy()
            self.block = max(1, BLOCK_BYTES // (self.d * self._Dn.itemsize))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.numpy
            and not x.requires_grad
            and x.device.type == "cpu"
            and x.dtype == self.D.dtype
        ):
            X = np.ascontiguousarray(x.detach().numpy().reshape(-1, self.d))
            rows = self.N if self.kind == "fused" else self.d
            parts = _split(rows, self.block if self.kind == "fused" else 1, _workers(rows, self))
            work = self._fused_part if self.kind == "fused" else self._gram_part
            with _controller().limit(limits=1, user_api="blas"):
                if len(parts) == 1:
                    G = work(X, *parts[0])
                elif self.kind == "fused":
                    G = sum(_pool().map(lambda p: work(X, *p), parts))
                else:
                    G = np.concatenate(list(_pool().map(lambda p: work(X, *p), parts)), axis=1)
            if self.kind == "fused":
                G /= self.N
            return torch.from_numpy(G).reshape(x.shape)
        if self.kind == "gram":
            gram, Dtb = self._gram_torch()
            return x @ gram - Dtb
        return ((x @ self.D.T - self.b) @ self.D) / self.N

    # -- CPU: NumPy's BLAS, one thread per worker -----------------------------------------------
    def _fused_part(self, X: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Σ_k D_kᵀ(D_k x − b_k) over the row blocks of [start, stop) (not yet divided by N)."""
        D, b, k = self._Dn, self._bn, self.block
        G = np.zeros_like(X)
        if X.shape[0] == 1:  # gemv with β = 1 adds D_kᵀ r_k into G in place: no temporary of d
            gemv = blas.get_blas_funcs("gemv", (D,))
            x, g = X[0], G[0]
            for s in range(start, stop, k):
                Dk = D[s : min(s + k, stop)]
                r = Dk @ x
                r -= b[s : min(s + k, stop)]
                # Dkᵀ is column-major: BLAS reads it in place (trans=1 on Dk would copy it)
                gemv(1.0, Dk.T, r, beta=1.0, y=g, overwrite_y=True)  # Dk is in cache
            return G
        tmp = np.empty_like(X)
        for s in range(start, stop, k):
            Dk = D[s : min(s + k, stop)]
            r = X @ Dk.T  # a thin gemm for a batch of x
            r -= b[s : min(s + k, stop)]
            np.matmul(r, Dk, out=tmp)  # Dk is still in cache
            G += tmp
        return G

    def _gram_part(self, X: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Columns [start, stop) of X·(DᵀD/N) − Dᵀb/N (the Gram matrix is symmetric)."""
        if self._gram_np is None:
            D, b = self._Dn, self._bn
            self._gram_np = (D.T @ D / self.N, D.T @ b / self.N)
        gram, Dtb = self._gram_np
        G = X @ gram[:, start:stop]
        G -= Dtb[start:stop]
        return G

    # -- elsewhere: torch ------------------------------------------------------------------------
    def _gram_torch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._gram_t is None:
            D = self.D.detach()
            self._gram_t = (D.T @ D / self.N, D.T @ self.b.detach() / self.N)
        return self._gram_t


def _workers(rows: int, kernel: LeastSquaresGradient) -> int:
    """torch's intra-op thread count (the user's parallelism; 1 in the unit tests), with at least
    MIN_ELEMENTS elements of work per worker."""
    most = max(1, kernel.elements // MIN_ELEMENTS)
    return max(1, min(torch.get_num_threads(), CORES, rows, most))


def _split(rows: int, align: int, workers: int) -> list[tuple[int, int]]:
    """[0, rows) in ``workers`` contiguous parts whose starts are multiples of ``align``."""
    blocks = -(-rows // align)
    cuts = [min(rows, (blocks * i // workers) * align) for i in range(workers + 1)]
    return [(a, z) for a, z in itertools.pairwise(cuts) if z > a]
