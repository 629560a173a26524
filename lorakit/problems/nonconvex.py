"""A smooth non-convex test function with known L and f*.

RAC-LoRA (Malinovsky et al. 2024), Theorem 5.3 check; spec ``rac_lora.md`` §5 item 6:

    f(W) = Σ_ij φ(W_ij − C_ij),    φ(u) = u²/(1 + u²),

φ'(u) = 2u/(1 + u²)², φ''(u) = (2 − 6u²)/(1 + u²)³ ∈ [−1/2, 2] (Bernoulli-LoRA spec §7), so f is
L-smooth with L = 2 (attained at W = C), non-convex (|u| > 1/√3), f* = 0 at W* = C, and no PL
constant (∇f → 0 as |u| → ∞ while f → m·n).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validation import check_device, check_dtype, check_int
from ..rng import Streams
from .base import MatrixProblem
from .quadratics import check_W, matrix_arg

__all__ = ["SmoothNonconvex", "smooth_nonconvex"]


@dataclass(eq=False)
class SmoothNonconvex(MatrixProblem):
    """f(W) = Σ_ij φ(W − C)_ij with φ(u) = u²/(1+u²); the centre C is ``W_star``."""

    def __post_init__(self):
        super().__post_init__()
        if self.W_star is None:
            raise ValueError("W_star (the centre C) is required for SmoothNonconvex")

    def loss(self, W: torch.Tensor) -> torch.Tensor:
        check_W(W, self.m, self.n)
        u2 = (W - self.W_star).square()
        return (u2 / (1 + u2)).sum(dim=(-2, -1))

    def grad(self, W: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        self._check_idx(idx)
        check_W(W, self.m, self.n)
        u = W - self.W_star
        return 2 * u / (1 + u.square()).square()


def smooth_nonconvex(
    m: int,
    n: int,
    *,
    C: torch.Tensor | None = None,
    W0: torch.Tensor | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> SmoothNonconvex:
    """f(W) = Σ_ij (W − C)²_ij / (1 + (W − C)²_ij): L = 2, f* = 0, μ = None (RAC-LoRA §5 item 6).

    C (= W*) defaults to a standard-normal matrix from the ``"init"`` stream of ``Streams(seed)``;
    W0 to zeros.
    """
    m = check_int("m", m, low=1)
    n = check_int("n", n, low=1)
    seed = check_int("seed", seed, low=0)
    dtype, device = check_dtype("dtype", dtype), check_device("device", device)
    device = torch.device(device)
    if C is None:
        C = torch.randn(m, n, generator=Streams(seed)["init"], dtype=torch.float64)
        C = C.to(dtype=dtype, device=device)
    else:
        C = matrix_arg("C", C, m, n, dtype, device)
    W0 = matrix_arg("W0", W0, m, n, dtype, device)
    return SmoothNonconvex(
        m=m, n=n, W0=W0, W_star=C, L=2.0, f_star=0.0, f_lower=0.0, name="smooth_nonconvex"
    )
