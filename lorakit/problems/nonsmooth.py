"""Non-smooth, Lipschitz test functions for Bernoulli-LoRA-GD in the non-smooth setting.

Bernoulli-LoRA (Hounie et al. 2025), Alg. 3 and Theorem 10 (Assumption 9: f is convex and
L0-Lipschitz); spec ``bernoulli_lora.md`` §6 item 11:

* :func:`frobenius_distance` — f(W) = ‖W − W*‖_F, L0 = 1;
* :func:`l1_distance` — f(W) = Σ_ij |W − W*|_ij, L0 = √(m·n) (Lipschitz w.r.t. ‖·‖_F).

Both have f* = 0 at W*. ``grad`` returns a subgradient (``smooth = False``, ``L = None``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._validation import check_choice, check_device, check_dtype, check_int
from ..rng import Streams
from .base import MatrixProblem
from .quadratics import check_W, matrix_arg

__all__ = ["DistanceProblem", "frobenius_distance", "l1_distance"]


@dataclass(eq=False)
class DistanceProblem(MatrixProblem):
    """f(W) = ‖W − W*‖ for ``norm`` ∈ {"fro", "l1"} (entrywise ℓ1); a subgradient in ``grad``."""

    norm: str = "fro"

    def __post_init__(self):
        super().__post_init__()
        check_choice("norm", self.norm, ("fro", "l1"))
        if self.W_star is None:
            raise ValueError("W_star is required for a DistanceProblem")
        self.smooth = False

    def loss(self, W: torch.Tensor) -> torch.Tensor:
        check_W(W, self.m, self.n)
        diff = W - self.W_star
        if self.norm == "l1":
            return diff.abs().sum(dim=(-2, -1))
        return diff.square().sum(dim=(-2, -1)).sqrt()

    def grad(self, W: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """sign(W − W*) for ℓ1; (W − W*)/‖W − W*‖_F for "fro", and 0 at W = W*."""
        self._check_idx(idx)
        check_W(W, self.m, self.n)
        diff = W - self.W_star
        if self.norm == "l1":
            return torch.sign(diff)
        norm = diff.square().sum(dim=(-2, -1), keepdim=True).sqrt()
        # Where the norm is 0, diff is 0 too, so dividing by 1 gives the subgradient 0.
        return diff / torch.where(norm > 0, norm, torch.ones_like(norm))


def _distance(norm, m, n, W_star, W0, seed, dtype, device) -> DistanceProblem:
    m = check_int("m", m, low=1)
    n = check_int("n", n, low=1)
    seed = check_int("seed", seed, low=0)
    dtype, device = check_dtype("dtype", dtype), check_device("device", device)
    device = torch.device(device)
    if W_star is None:
        W_star = torch.randn(m, n, generator=Streams(seed)["init"], dtype=torch.float64)
        W_star = W_star.to(dtype=dtype, device=device)
    else:
        W_star = matrix_arg("W_star", W_star, m, n, dtype, device)
    W0 = matrix_arg("W0", W0, m, n, dtype, device)
    return DistanceProblem(
        m=m,
        n=n,
        W0=W0,
        W_star=W_star,
        f_star=0.0,
        L0=1.0 if norm == "fro" else math.sqrt(m * n),
        smooth=False,
        norm=norm,
        name="frobenius_distance" if norm == "fro" else "l1_distance",
    )


def frobenius_distance(
    m: int,
    n: int,
    *,
    W_star: torch.Tensor | None = None,
    W0: torch.Tensor | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> DistanceProblem:
    """f(W) = ‖W − W*‖_F: convex, L0 = 1, f* = 0 (Bernoulli-LoRA Theorem 10; spec §6 item 11).

    Subgradient (W − W*)/‖W − W*‖_F, and 0 at W = W*. W* defaults to a standard-normal matrix
    from the ``"init"`` stream of ``Streams(seed)``; W0 to zeros.
    """
    return _distance("fro", m, n, W_star, W0, seed, dtype, device)


def l1_distance(
    m: int,
    n: int,
    *,
    W_star: torch.Tensor | None = None,
    W0: torch.Tensor | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> DistanceProblem:
    """f(W) = Σ_ij |W − W*|_ij: convex, L0 = √(m·n), f* = 0 (Bernoulli-LoRA Thm 10; §6 item 11).

    Subgradient sign(W − W*) (0 on ties). L0 = √(mn) is the Lipschitz constant with respect to
    the Frobenius norm, as Assumption 9 requires (‖sign(·)‖_F ≤ √(mn)). Defaults as in
    :func:`frobenius_distance`.
    """
    return _distance("l1", m, n, W_star, W0, seed, dtype, device)
