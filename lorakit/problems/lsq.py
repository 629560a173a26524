"""The least-squares gradient Dᵀ(Dx − b)/N of a finite sum, computed the cheap way for its size.

Bernoulli-LoRA's linear regression (§7.1; :class:`~lorakit.problems.LinearRegression`) spends
almost all of a GD step here: D is N×d with d = m·n (1,000 × 4,096 at 64×64), so each of the two
matrix-vector products reads N·d floats from memory and does one multiply-add per float read.
They are bound by memory traffic, not arithmetic, so the kernel is chosen to read less:

* **Gram** (d ≤ N): DᵀD/N and Dᵀb/N are formed once, and ∇ = (DᵀD/N)x − Dᵀb/N reads d² floats
  per call instead of 2·N·d. The Gram matrix is then no larger than D.
* **fused row blocks** (d > N, the benchmark's 64×64 and 256×256 with N = 1,000): the Gram matrix
  would be larger than D, so D is read once per call in blocks of rows small enough to stay in a
  core's L2 cache (``BLOCK_BYTES``): r_k = D_k x − b_k, then ∇ += D_kᵀ r_k while D_k is still in
  cache. The second product then costs a cache read, not a memory read (two memory passes become
  one).

On the CPU both run on NumPy's BLAS (OpenBLAS) through zero-copy views of the tensors: on the
benchmark machine (AMD EPYC, 2 cores) its dgemv was about 25% faster than the MKL dgemv behind
torch's ``mv`` (tests/benchmarks/bench_chain.py). Elsewhere (CUDA, or an ``x`` that requires
grad) the same formulas run in torch.

Every path is exact to float64 rounding: only the order of the sums changes, so the error stays
within the usual bound (d + N)·eps·(|D|ᵀ(|D||x| + |b|))/N of the direct formula (test:
tests/test_problems.py). The data stay in the problem's dtype (no float32 copy: that would change
the problem by 6e-8 relative, far above float64 rounding).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["BLOCK_BYTES", "LeastSquaresGradient"]

#: Bytes of one block of rows of D in the fused pass: a core's L2 cache on the benchmark machine
#: (1 MiB), so the second product of a block reads it from cache.
BLOCK_BYTES = 1 << 20


class LeastSquaresGradient:
    """x ↦ Dᵀ(Dx − b)/N for x of shape (..., d), by the Gram matrix (d ≤ N) or fused row blocks.

    ``D`` (N, d) and ``b`` (N,) are read, never copied on the CPU (a non-contiguous D is made
    contiguous once); the Gram matrix is formed at the first call. Module docstring for the
    choice and its exactness.
    """

    def __init__(self, D: torch.Tensor, b: torch.Tensor):
        self.D, self.b = D, b
        self.N, self.d = D.shape
        self.kind = "gram" if self.d <= self.N else "fused"
        self.numpy = D.device.type == "cpu" and D.dtype in (torch.float32, torch.float64)
        self._gram_np = self._gram_t = None
        if self.numpy:
            self._Dn = np.ascontiguousarray(D.detach().numpy())
            self._bn = b.detach().numpy()
            self.block = max(1, BLOCK_BYTES // (self.d * self._Dn.itemsize))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.numpy and not x.requires_grad and x.device.type == "cpu" and x.dtype == self.D.dtype:
            X = np.ascontiguousarray(x.detach().numpy().reshape(-1, self.d))
            G = self._gram_numpy(X) if self.kind == "gram" else self._fused_numpy(X)
            return torch.from_numpy(G).reshape(x.shape)
        if self.kind == "gram":
            gram, Dtb = self._gram_torch()
            return x @ gram - Dtb
        return ((x @ self.D.T - self.b) @ self.D) / self.N

    # -- CPU: NumPy's BLAS ---------------------------------------------------------------------
    def _fused_numpy(self, X: np.ndarray) -> np.ndarray:
        D, b, k = self._Dn, self._bn, self.block
        one = X.shape[0] == 1
        x = X[0] if one else X
        G = np.zeros_like(x)
        for s in range(0, self.N, k):
            Dk = D[s : s + k]
            r = x @ Dk.T  # one gemv (or a thin gemm for a batch of x)
            r -= b[s : s + k]
            G += r @ Dk  # Dk is still in cache
        G /= self.N
        return G[None] if one else G

    def _gram_numpy(self, X: np.ndarray) -> np.ndarray:
        if self._gram_np is None:
            D, b = self._Dn, self._bn
            self._gram_np = (D.T @ D / self.N, D.T @ b / self.N)
        gram, Dtb = self._gram_np
        G = X @ gram  # the Gram matrix is symmetric: X·G = (G·Xᵀ)ᵀ
        G -= Dtb
        return G

    # -- elsewhere: torch ----------------------------------------------------------------------
    def _gram_torch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._gram_t is None:
            D = self.D.detach()
            self._gram_t = (D.T @ D / self.N, D.T @ self.b.detach() / self.N)
        return self._gram_t
