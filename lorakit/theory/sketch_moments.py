"""Random-k sketches S ∈ 𝒮(r, k) by exact enumeration (FSLoRA Definition 3.1; spec fslora.md §6).

S = (r/k)·Σ_{j∈I} e_j e_jᵀ with I uniform among the C(r, k) k-subsets of [r]; s = diag(S). Every
expectation over S here is an exact average over all C(r, k) index sets, never a Monte Carlo
estimate. The closed forms (spec §2.5, §6 items 1–3):

* E[S] = I, E[SSᵀ] = E[S²] = (r/k)·I;
* E[s_j s_l] = r(k − 1)/(k(r − 1)) for j ≠ l, so Cov(s) = (r − k)/(k(r − 1))·(rI − 11ᵀ);
* E‖XS‖² = (r/k)‖X‖² (Lemma D.3 (9), with equality);
* E‖BSA − BA‖² = (r − k)/(k(r − 1))·(r Σ_j ‖b_j‖²‖a_j‖² − ‖BA‖²) (b_j the columns of B, a_j the
  rows of A), and for a squared loss f^S − f is half of it: a dropout-like implicit regulariser.

For r = 1 (so k = 1) or k = r the sketch is S = I and every variance is zero.

It also evaluates FSLoRA's sketched objective on a :class:`~lorakit.problems.FederatedProblem`
(:func:`sketched_gradients`: f^S, ∇_X f^S, the clients' ∇_X f_i^S and their sketch variances, by
enumeration), and the Hessian of a diagonal quadratic in the factors (X = (B, A)), from which the
FSLoRA checks estimate the smoothness constant L of Assumption 4.1 on the visited iterates.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction

import sympy as sp
import torch

from .._validation import check_int

__all__ = [
    "SketchedGradients",
    "closed_form_moments",
    "diagonals",
    "enumerated_moments",
    "expected_sketched_norm",
    "factor_hessian",
    "implicit_regulariser",
    "index_sets",
    "quadratic_smoothness",
    "sketch_variance",
    "sketch_variance_enumerated",
    "sketched_gradients",
]


def _check_rk(r: int, k: int) -> tuple[int, int]:
    r = check_int("r", r, low=1)
    return r, check_int("k", k, low=1, high=r)


def index_sets(r: int, k: int) -> list[tuple[int, ...]]:
    """All C(r, k) index sets I ⊆ {0, …, r − 1} with |I| = k, each equally likely."""
    r, k = _check_rk(r, k)
    return list(itertools.combinations(range(r), k))


def diagonals(r: int, k: int, *, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """(C(r, k), r): the diagonal s of S for every index set (r/k on I, 0 elsewhere)."""
    sets = index_sets(r, k)
    out = torch.zeros(len(sets), r, dtype=dtype, device=device)
    for row, I in enumerate(sets):
        out[row, list(I)] = r / k
    return out


def _cov_factor(r: int, k: int):
    """(r − k)/(k(r − 1)) as an exact rational (0 when S = I)."""
    return sp.Integer(0) if r == 1 else sp.Rational(r - k, k * (r - 1))


def enumerated_moments(r: int, k: int) -> dict[str, sp.Matrix]:
    """E[S], E[SSᵀ], E[ssᵀ] and Cov(s), exact (sympy rationals), averaged over all index sets."""
    sets = index_sets(r, k)
    c = sp.Rational(r, k)
    ES, ESS, Ess = sp.zeros(r, r), sp.zeros(r, r), sp.zeros(r, r)
    for I in sets:
        s = sp.Matrix([c if j in I else 0 for j in range(r)])
        S = sp.diag(*s)
        ES += S
        ESS += S * S.T
        Ess += s * s.T
    K = len(sets)
    ES, ESS, Ess = ES / K, ESS / K, Ess / K
    mean = sp.Matrix([ES[j, j] for j in range(r)])
    return {"E[S]": ES, "E[SS^T]": ESS, "E[ss^T]": Ess, "Cov(s)": Ess - mean * mean.T}


def closed_form_moments(r: int, k: int) -> dict[str, sp.Matrix]:
    """The same four moments from the closed forms (module docstring), exact."""
    r, k = _check_rk(r, k)
    I, ones = sp.eye(r), sp.ones(r, r)
    off = sp.Integer(1) if r == 1 else sp.Rational(r * (k - 1), k * (r - 1))
    Ess = off * ones + (sp.Rational(r, k) - off) * I
    return {
        "E[S]": I,
        "E[SS^T]": sp.Rational(r, k) * I,
        "E[ss^T]": Ess,
        "Cov(s)": _cov_factor(r, k) * (r * I - ones),
    }


def expected_sketched_norm(X, k: int, *, exact: bool = False):
    """E_S‖XS‖² for X with r columns, by enumeration over the index sets (Lemma D.3 (9)).

    ``exact=True`` averages in rational arithmetic (X must have integer or rational entries, e.g.
    a nested list or an integer tensor) and returns a :class:`fractions.Fraction`; otherwise a
    float computed in float64.
    """
    if exact:
        rows = [[Fraction(v) for v in row] for row in _as_rows(X)]
        r = len(rows[0])
        sets = index_sets(r, k)
        c2 = Fraction(r, k) ** 2
        total = sum(c2 * sum(row[j] ** 2 for row in rows for j in I) for I in sets)
        return total / len(sets)
    X = torch.as_tensor(X, dtype=torch.float64)
    s = diagonals(X.shape[-1], k)
    return float(((X.unsqueeze(0) * s[:, None, :]) ** 2).sum(dim=(-2, -1)).mean())


def _as_rows(X) -> list[list]:
    if isinstance(X, torch.Tensor):
        if X.is_floating_point():
            raise ValueError("exact=True needs integer or rational entries, got a float tensor")
        return X.tolist()
    return [list(row) for row in X]


def sketch_variance(B: torch.Tensor, A: torch.Tensor, k: int) -> float:
    """E‖BSA − BA‖² in closed form: (r − k)/(k(r − 1))·(r Σ_j ‖b_j‖²‖a_j‖² − ‖BA‖²)."""
    B, A = torch.as_tensor(B, dtype=torch.float64), torch.as_tensor(A, dtype=torch.float64)
    r = B.shape[-1]
    factor = float(_cov_factor(*_check_rk(r, k)))
    inner = r * float(((B * B).sum(0) * (A * A).sum(1)).sum()) - float((B @ A).square().sum())
    return factor * inner


def sketch_variance_enumerated(B: torch.Tensor, A: torch.Tensor, k: int) -> float:
    """E‖BSA − BA‖² as the average over all C(r, k) index sets."""
    B, A = torch.as_tensor(B, dtype=torch.float64), torch.as_tensor(A, dtype=torch.float64)
    s = diagonals(B.shape[-1], k)
    BSA = (B.unsqueeze(0) * s[:, None, :]) @ A
    return float((BSA - B @ A).square().sum(dim=(-2, -1)).mean())


def implicit_regulariser(B: torch.Tensor, A: torch.Tensor, k: int) -> float:
    """f^S − f for the squared loss ½‖W0 + BA − W*‖²: half of :func:`sketch_variance` (§2.5)."""
    return 0.5 * sketch_variance(B, A, k)


# --------------------------------------------------------------------------------------------
# FSLoRA's sketched objective on a federated problem, by enumeration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SketchedGradients:
    """f^S and its gradients at a batch of iterates X = (B, A), leading shape P.

    ``loss`` (P,) = f^S(X); ``grad`` (P, d) = ∇_X f^S(X) flattened as (vec B, vec A), d = r(m + n);
    ``client_grads`` (P, M, d) = ∇_X f_i^S(X); ``sketch_var`` (P, M) =
    E_S‖∇_X f̃_i(X; S) − ∇_X f_i^S(X)‖² (Assumption 4.2's σ_s² is its supremum).
    """

    loss: torch.Tensor
    grad: torch.Tensor
    client_grads: torch.Tensor
    sketch_var: torch.Tensor

    @property
    def grad_norm_sq(self) -> torch.Tensor:
        return (self.grad * self.grad).sum(-1)

    @property
    def heterogeneity(self) -> torch.Tensor:
        """(P, M): ‖∇f_i^S(X) − ∇f^S(X)‖² (Assumption 4.3 with c_h = 0 has σ_h² ≥ its maximum)."""
        return (self.client_grads - self.grad.unsqueeze(-2)).square().sum(-1)


def sketched_gradients(
    problem, W0: torch.Tensor, B: torch.Tensor, A: torch.Tensor, budgets, scale: float = 1.0
) -> SketchedGradients:
    """f^S(X) = (1/M) Σ_i E_{S∼𝒮(r,k_i)} f_i(W0 + s·BSA) and its X-gradients, exactly.

    ``problem`` is a :class:`~lorakit.problems.FederatedProblem` with M clients, ``budgets`` the
    k_i (an int or M ints), ``scale`` s = α/r. B is (P, m, r) or (m, r), A (P, r, n) or (r, n).
    Lemma 3.2: ∇_B f̃_i = s·G_S AᵀSᵀ and ∇_A f̃_i = s·SᵀBᵀG_S with G_S = ∇f_i(W0 + s·BSA).
    """
    squeeze = B.dim() == 2
    B, A = (B.unsqueeze(0), A.unsqueeze(0)) if squeeze else (B, A)
    P, m, r = B.shape
    n, M = A.shape[-1], problem.M
    k = torch.as_tensor(budgets).flatten()
    k = k.expand(M) if k.numel() == 1 else k
    if k.numel() != M:
        raise ValueError(f"budgets must give one k_i per client ({M}), got {k.numel()}")
    kw = {"dtype": B.dtype, "device": B.device}
    loss = torch.zeros(P, M, **kw)
    gB = torch.zeros(P, M, m, r, **kw)
    gA = torch.zeros(P, M, r, n, **kw)
    var = torch.zeros(P, M, **kw)
    for kk in sorted(set(k.tolist())):
        clients = (k == kk).nonzero().flatten()
        s = diagonals(r, int(kk), **kw)  # (K, r)
        BS = B.unsqueeze(1) * s[None, :, None, :]  # (P, K, m, r)
        W = W0 + scale * (BS @ A.unsqueeze(1))  # (P, K, m, n)
        G = problem.client_grads(W, clients.to(problem.device))  # (P, K, Mk, m, n)
        f = problem.client_losses(W)[..., clients.to(problem.device)]  # (P, K, Mk)
        tB = scale * (G @ A[:, None, None].mT) * s[None, :, None, None, :]  # (P, K, Mk, m, r)
        tA = scale * s[None, :, None, :, None] * (B[:, None, None].mT @ G)  # (P, K, Mk, r, n)
        mB, mA = tB.mean(1), tA.mean(1)
        loss[:, clients] = f.mean(1)
        gB[:, clients], gA[:, clients] = mB, mA
        dev = (tB - mB.unsqueeze(1)).square().sum((-2, -1)) + (tA - mA.unsqueeze(1)).square().sum(
            (-2, -1)
        )
        var[:, clients] = dev.mean(1)
    client_grads = torch.cat([gB.flatten(-2), gA.flatten(-2)], dim=-1)
    out = SketchedGradients(loss.mean(-1), client_grads.mean(-2), client_grads, var)
    if squeeze:
        out = SketchedGradients(*(t.squeeze(0) for t in (out.loss, out.grad, client_grads, var)))
    return out


def factor_hessian(
    curvature: torch.Tensor,
    residual: torch.Tensor,
    B: torch.Tensor,
    A: torch.Tensor,
    scale: float = 1.0,
) -> torch.Tensor:
    """The Hessian in (vec B, vec A) of g(B, A) = ½⟨Λ, (W0 + s·BA − C)²⟩ at (B, A).

    ``residual`` = W0 + s·BA − C (m×n), ``curvature`` = Λ (m×n); batched over leading dimensions.
    With R = W0 + s·BA − C: H_BB = s²·δ_kk' Σ_j Λ_kj A_pj A_qj, H_AA = s²·δ_ll' Σ_i Λ_il B_ip B_iq and
    H_{B_kp, A_ql} = s²·Λ_kl A_pl B_kq + s·δ_pq Λ_kl R_kl. Shape (..., r(m + n), r(m + n)).
    """
    m, r = B.shape[-2:]
    n = A.shape[-1]
    s = scale
    kw = {"dtype": B.dtype, "device": B.device}
    eye_m, eye_n, eye_r = (torch.eye(d, **kw) for d in (m, n, r))
    lam = curvature.expand(*residual.shape)
    # Index order: B entries (k, p), A entries (p, l); every block by broadcasting.
    HBB = torch.einsum("...kj,...pj,...qj->...kpq", lam, A, A)  # (…, m, r, r)
    HBB = s * s * HBB.unsqueeze(-2) * eye_m[:, None, :, None]  # (…, k, p, k', q)
    HAA = torch.einsum("...il,...ip,...iq->...plq", lam, B, B)  # (…, r, n, r)
    HAA = s * s * HAA.unsqueeze(-1) * eye_n[None, :, None, :]  # (…, p, l, q, l')
    lamA = lam.unsqueeze(-2) * A.unsqueeze(-3)  # (…, k, p, l) = Λ_kl A_pl
    HBA = s * s * lamA.unsqueeze(-2) * B[..., :, None, :, None]  # (…, k, p, q, l)
    HBA = HBA + s * (lam * residual)[..., :, None, None, :] * eye_r[:, :, None]
    dB, dA = m * r, r * n
    batch = HBB.shape[:-4]
    HBB = HBB.reshape(*batch, dB, dB)
    HAA = HAA.reshape(*batch, dA, dA)
    HBA = HBA.reshape(*batch, dB, dA)
    top = torch.cat([HBB, HBA], dim=-1)
    bottom = torch.cat([HBA.mT, HAA], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def quadratic_smoothness(
    problem,
    W0: torch.Tensor,
    B: torch.Tensor,
    A: torch.Tensor,
    budgets,
    scale: float = 1.0,
    *,
    exact: bool = False,
) -> float:
    """An empirical smoothness constant of the clients' factorised objectives on given iterates.

    FSLoRA Assumption 4.1 asks each f_i(X) = f_i(W0 + s·BA) to be L-smooth in X = (B, A), which a
    bilinear factorisation is only on bounded sets (spec fslora.md §10 item 18), and Proposition
    D.4's proof evaluates ∇²f_i at (BS, A). So this returns the maximum of ‖∇²f_i(P)‖₂ over the
    clients i and the points P = (BS, A), S = I and every S in the support of 𝒮(r, k_i), at the
    iterates (B, A) given as (P, m, r) and (P, r, n), for a federated problem of diagonal quadratics
    f_i(W) = ½⟨Λ_i, (W − C_i)²⟩ (each client a :class:`~lorakit.problems.DiagonalQuadratic`).

    ``exact=True`` takes the Hessians' eigenvalues (:func:`factor_hessian`); the default takes the
    upper bound ‖∇²g‖₂ ≤ s²·max Λ·(‖A‖₂² + ‖B‖₂²) + s·‖Λ∘R‖₂, R = W0 + s·BA − C (from
    g'' = s²⟨Λ, (UA + BV)²⟩ + 2s⟨Λ∘R, UV⟩ along a unit direction (U, V)), which is conservative
    and costs only spectral norms of the factors.
    """
    B = B if B.dim() == 3 else B.unsqueeze(0)
    A = A if A.dim() == 3 else A.unsqueeze(0)
    r = B.shape[-1]
    k = torch.as_tensor(budgets).flatten()
    k = k.expand(problem.M) if k.numel() == 1 else k
    best = 0.0
    norm2 = torch.linalg.matrix_norm
    for l, client in enumerate(problem.clients):
        s = torch.cat([torch.ones(1, r, dtype=B.dtype), diagonals(r, int(k[l]), dtype=B.dtype)])
        BS = B.unsqueeze(1) * s[None, :, None, :]  # (P, K+1, m, r)
        R = W0 + scale * (BS @ A.unsqueeze(1)) - client.W_star
        if exact:
            AS = A.unsqueeze(1).expand(-1, s.shape[0], -1, -1)
            H = factor_hessian(client.curvature, R, BS, AS, scale)
            value = float(torch.linalg.eigvalsh(H).abs().max())
        else:
            lam = client.curvature
            curv = float(lam.max()) * (
                norm2(A, ord=2).square().unsqueeze(1) + norm2(BS, ord=2).square()
            )
            value = float((scale * scale * curv + scale * norm2(lam * R, ord=2)).max())
        best = max(best, value)
    return best
