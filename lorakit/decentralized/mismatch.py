"""The bilinear mismatch of factor-wise averaging (RW-LoRA §I point (i); spec ``rw_lora.md`` §6).

Averaging LoRA factors is not averaging the adapters they form: for weights w_i ≥ 0 with
Σ_i w_i = 1, Ā = Σ_i w_i A_i and B̄ = Σ_i w_i B_i,

    𝓜(w) = Σ_i w_i B_i A_i − B̄ Ā = Σ_i w_i (B_i − B̄)(A_i − Ā),

a weighted cross-covariance of the factors (the paper writes Σ_i B_i A_i ≠ (Σ_i B_i)(Σ_i A_i),
without the 1/N factors). It vanishes when all A_i are equal or all B_i are equal, so RW-LoRA,
which keeps a single (A, B), has 𝓜 ≡ 0; gossip Dec-LoRA mixes node i's neighbours' factors with
the row M_i· of its mixing matrix and pays 𝓜_i = Σ_j M_ij B_j A_j − (Σ_j M_ij B_j)(Σ_j M_ij A_j).

Point (ii) of the paper: rank(Σ_i B_i A_i) ≤ min(N r, m, n), generically with equality, so
averaging the products instead of the factors leaves the rank-r family; :func:`product_rank`
measures it.

Shapes: B_stack (…, N, m, r), A_stack (…, N, r, n); ``weights`` (N,) gives one m×n matrix,
(K, N) — a mixing matrix's rows — gives K of them, (K, m, n).
"""

from __future__ import annotations

import torch

__all__ = ["bilinear_mismatch", "mismatch_identity_rhs", "mismatch_norms", "product_rank"]


def _check(B_stack: torch.Tensor, A_stack: torch.Tensor, weights) -> torch.Tensor:
    if not isinstance(B_stack, torch.Tensor) or not isinstance(A_stack, torch.Tensor):
        raise ValueError("B_stack and A_stack must be torch tensors")
    if B_stack.dim() < 3 or A_stack.dim() < 3:
        raise ValueError(
            f"B_stack must be (…, N, m, r) and A_stack (…, N, r, n), got shapes "
            f"{tuple(B_stack.shape)} and {tuple(A_stack.shape)}"
        )
    N, r = B_stack.shape[-3], B_stack.shape[-1]
    if A_stack.shape[-3] != N or A_stack.shape[-2] != r:
        raise ValueError(
            f"A_stack must be (…, {N}, {r}, n) to match B_stack {tuple(B_stack.shape)}, got "
            f"{tuple(A_stack.shape)}"
        )
    if weights is None:
        return torch.full((N,), 1.0 / N, dtype=B_stack.dtype, device=B_stack.device)
    w = torch.as_tensor(weights, dtype=B_stack.dtype, device=B_stack.device)
    if w.dim() not in (1, 2) or w.shape[-1] != N:
        raise ValueError(
            f"weights must have shape (N,) or (K, N) with N = {N}, got {tuple(w.shape)}"
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("weights must be finite and non-negative")
    sums = w.sum(dim=-1)
    if not bool(torch.allclose(sums, torch.ones_like(sums), rtol=0.0, atol=1e-9)):
        raise ValueError(f"weights (each row) must sum to 1, got sums {sums.tolist()}")
    return w


def _weighted(w: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Σ_j w_j X_j over the node axis (…, N, p, q): (…, p, q) for w (N,), (…, K, p, q) for (K, N)."""
    if w.dim() == 1:
        return torch.einsum("j,...jpq->...pq", w, X)
    return torch.einsum("kj,...jpq->...kpq", w, X)


def bilinear_mismatch(B_stack: torch.Tensor, A_stack: torch.Tensor, weights=None) -> torch.Tensor:
    """𝓜(w) = Σ_i w_i B_i A_i − B̄ Ā (module docstring); ``weights`` None means uniform 1/N.

    With a mixing matrix M (K × N rows) as ``weights``, row k gives node k's mismatch
    Σ_j M_kj B_j A_j − (Σ_j M_kj B_j)(Σ_j M_kj A_j), shape (…, K, m, n).
    """
    w = _check(B_stack, A_stack, weights)
    products = B_stack @ A_stack
    return _weighted(w, products) - _weighted(w, B_stack) @ _weighted(w, A_stack)


def mismatch_identity_rhs(
    B_stack: torch.Tensor, A_stack: torch.Tensor, weights=None
) -> torch.Tensor:
    """Σ_i w_i (B_i − B̄)(A_i − Ā): the right-hand side of the mismatch identity (spec §6)."""
    w = _check(B_stack, A_stack, weights)
    B_bar, A_bar = _weighted(w, B_stack), _weighted(w, A_stack)
    if w.dim() == 1:
        dB, dA = B_stack - B_bar.unsqueeze(-3), A_stack - A_bar.unsqueeze(-3)
        return _weighted(w, dB @ dA)
    # Row k centres every node's factors at its own weighted means: (…, K, N, ·, ·).
    dB = B_stack.unsqueeze(-4) - B_bar.unsqueeze(-3)
    dA = A_stack.unsqueeze(-4) - A_bar.unsqueeze(-3)
    return torch.einsum("kj,...kjpq->...kpq", w, dB @ dA)


def mismatch_norms(B_stack: torch.Tensor, A_stack: torch.Tensor, weights=None) -> torch.Tensor:
    """‖𝓜‖_F: a scalar for weights (N,), one norm per row for a mixing matrix (K, N)."""
    return torch.linalg.matrix_norm(bilinear_mismatch(B_stack, A_stack, weights))


def product_rank(
    B_stack: torch.Tensor, A_stack: torch.Tensor, weights=None, *, rtol: float | None = None
) -> int:
    """rank(Σ_i w_i B_i A_i) (numerical, ``torch.linalg.matrix_rank``): ≤ min(N r, m, n) (§6 (ii))."""
    w = _check(B_stack, A_stack, weights)
    if w.dim() != 1 or B_stack.dim() != 3:
        raise ValueError("product_rank takes one stack (N, m, r), (N, r, n) and weights (N,)")
    return int(torch.linalg.matrix_rank(_weighted(w, B_stack @ A_stack), rtol=rtol))
