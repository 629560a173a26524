"""Low-rank matrix approximations of the async-FL paper (spec ``async_fl.md`` §4) and compressors.

Every function takes an m×n torch tensor X and returns an :class:`Approximation`: the
reconstruction X̂ (same dtype and device as X), the factors a sender would actually put on the
wire, the rank, a ``method`` label and the relative error ‖X − X̂‖_F/‖X‖_F. Work is done in
float64 (numpy/scipy on the CPU); the approximation is cast back to X's dtype and device, and
``rel_error`` is the float64 value. X must be a floating-point tensor with data (an integer or
boolean X is refused, since X̂ cast back to it would be silently rounded; so is a meta tensor).

=====================  =====================================================  =====================
function               X̂                                                      factors sent
=====================  =====================================================  =====================
``pca``                truncated SVD U_k S_k V_kᵀ (Eckart–Young optimal)       U_k S_k, V_kᵀ
``qrcp``               Xᵀ P = Q R (row-based, §4.2); X̂ = P R_kᵀ Q_kᵀ          Q_k, R_k Pᵀ
``qrcp_paper_formula`` R_kᵀ Q_kᵀ as printed in the paper — **wrong**: it       (teaching only)
                       approximates Pᵀ X (rows permuted), see spec §4.2
``cur``                C U R with C = X[:, J], R = X[I, :], U = C⁺ X R⁺       C, U, R
``paper_row_id``       Z R with R = X[I, :] (I uniform, no replacement),      Z, R
                       Z = X R⁺ (least squares) — the paper's "CUR" (§4.3)
=====================  =====================================================  =====================

Notes (kit choices, spec §4 and §9):

* PCA: the paper only writes down the SVD of the centred matrix; the kit's default is the plain
  truncated SVD (``center=False``), whose error is the Eckart–Young value √(Σ_{i>k} σ_i²).
  ``center=True`` follows spec §4.1's proposed reconstruction (column means + rank-k SVD of the
  centred matrix) and also sends the n column means.
* QRCP: the paper's printed reconstruction omits the permutation; :func:`qrcp` applies it. The
  factor R_k Pᵀ is sent dense (k·m floats), so no pivot indices are needed on the wire (sending the
  trapezoidal R_k instead would save k(k − 1)/2 floats but cost the m-entry permutation).
* CUR: only the three factors are needed to rebuild C U R, so no indices are counted.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from ._validation import (
    ArgumentTypeError,
    check_choice,
    check_device_match,
    check_generator,
    check_int,
    check_real,
)
from .compressors import Compressor, Payload

__all__ = [
    "LOWRANK_METHODS",
    "Approximation",
    "LowRank",
    "cur",
    "lowrank",
    "paper_row_id",
    "pca",
    "qrcp",
    "qrcp_paper_formula",
]


@dataclass(frozen=True)
class Approximation:
    """A low-rank approximation X̂ of X and what it costs to send."""

    approx: torch.Tensor  # X̂, same shape/dtype/device as X
    factors: tuple  # the tensors actually sent (X̂ is rebuilt from them alone)
    rank: int
    method: str
    rel_error: float  # ‖X − X̂‖_F / ‖X‖_F (0 if X = X̂ = 0)

    @property
    def floats_sent(self) -> int:
        return sum(int(f.numel()) for f in self.factors)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _as_matrix(X) -> np.ndarray:
    if not isinstance(X, torch.Tensor):
        raise ValueError(f"X must be a torch.Tensor, got {type(X)}")
    if X.dim() != 2:
        raise ValueError(f"X must be a 2-D (m, n) tensor, got shape {tuple(X.shape)}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X must be non-empty, got shape {tuple(X.shape)}")
    if X.is_complex():
        raise ValueError("X must be real")
    if not X.dtype.is_floating_point:
        # The result comes back in X's dtype: an integer X would get a silently rounded X̂.
        raise ArgumentTypeError(
            f"X must be a floating-point tensor (X̂ is returned in X's dtype), got {X.dtype}: "
            "convert it first, e.g. X.double()"
        )
    check_device_match(X.device, X=X)  # a meta X has no values to approximate
    A = X.detach().to("cpu", torch.float64).numpy()
    if not np.all(np.isfinite(A)):
        raise ValueError("X must have finite entries")
    return A


def _check_rank(rank, m: int, n: int, name: str = "rank") -> int:
    return check_int(name, rank, low=1, high=min(m, n))


def _finish(X: torch.Tensor, A: np.ndarray, Ahat: np.ndarray, factors, rank, method):
    norm = float(np.linalg.norm(A))
    err = float(np.linalg.norm(A - Ahat))
    rel = err / norm if norm > 0 else (0.0 if err == 0 else math.inf)

    def back(a):
        return torch.as_tensor(np.ascontiguousarray(a)).to(device=X.device, dtype=X.dtype)

    return Approximation(back(Ahat), tuple(back(f) for f in factors), int(rank), method, rel)


def _pinv(a: np.ndarray) -> np.ndarray:
    return np.linalg.pinv(a)


# --------------------------------------------------------------------------------------------
# the approximations
# --------------------------------------------------------------------------------------------
def pca(X: torch.Tensor, rank: int | None = None, *, energy: float | None = None, center=False):
    """Truncated SVD at ``rank`` k, or at the smallest k with Σ_{i≤k} σ_i² ≥ energy·Σ_i σ_i².

    Exactly one of ``rank`` (in [1, min(m, n)]) and ``energy`` (in (0, 1]) must be given. The
    error is the Eckart–Young optimum √(Σ_{i>k} σ_i²) (of the centred matrix if ``center``).
    Factors sent: U_k S_k (m×k) and V_kᵀ (k×n), plus the n column means if ``center``.
    """
    A = _as_matrix(X)
    m, n = A.shape
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank and energy")
    mean = A.mean(axis=0, keepdims=True) if center else np.zeros((1, n))
    U, s, Vt = _svd(A - mean)
    if rank is not None:
        k = _check_rank(rank, m, n)
    else:
        energy = check_real("energy", energy, low=0.0, high=1.0, low_open=True)
        total = float(np.sum(s**2))
        if total == 0.0:
            k = 1
        else:
            cum = np.cumsum(s**2) / total
            k = int(np.searchsorted(cum, energy * (1.0 - 1e-12))) + 1
            k = min(k, min(m, n))
    Ahat, (US, Vk) = _truncate(U, s, Vt, k)
    Ahat = mean + Ahat
    factors = (US, Vk, mean[0]) if center else (US, Vk)
    return _finish(X, A, Ahat, factors, k, "pca (centred)" if center else "pca")


@functools.cache
def _gesdd(m: int, n: int):
    """LAPACK's gesdd for float64 and its optimal workspace for an m×n matrix: the routine and
    workspace ``scipy.linalg.svd`` looks up on every call, looked up once per shape."""
    gesdd, query = scipy.linalg.get_lapack_funcs(
        ("gesdd", "gesdd_lwork"), (np.empty((m, n)),), ilp64="preferred"
    )
    work, info = query(m, n, compute_uv=1, full_matrices=0)
    if info != 0:
        raise ValueError(f"LAPACK gesdd's workspace query failed (info {info})")
    return gesdd, int(work.real)


def _svd(A: np.ndarray):
    """Thin SVD U, s, Vᵀ of a finite float64 A (finiteness is checked once by the caller): the
    LAPACK call ``scipy.linalg.svd(A, full_matrices=False)`` makes, so the same numbers, without
    its per-call checks and look-ups (a third of the time of an 8×6 SVD, measured)."""
    gesdd, lwork = _gesdd(*A.shape)
    U, s, Vt, info = gesdd(A, compute_uv=1, lwork=lwork, full_matrices=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"SVD did not converge (LAPACK gesdd info {info})")
    return U, s, Vt


def _truncate(U, s, Vt, k: int):
    """U_k S_k V_kᵀ and its factors (U_k S_k, V_kᵀ)."""
    US, Vk = U[:, :k] * s[:k], Vt[:k]
    return US @ Vk, (US, Vk)


def _pca(A: np.ndarray, k: int, generator=None):
    return _truncate(*_svd(A), k)


def _qr_rows(A: np.ndarray):
    """Spec §4.2 "row-based" QRCP: Aᵀ P = Q R, i.e. Aᵀ[:, piv] = Q R (columns of Aᵀ = rows of A)."""
    Q, R, piv = scipy.linalg.qr(A.T, mode="economic", pivoting=True, check_finite=False)
    return Q, R, piv


def qrcp(X: torch.Tensor, rank: int):
    """Row-based QRCP (spec §4.2, corrected): Xᵀ P = Q R and X̂ = P R_kᵀ Q_kᵀ.

    Pivoted QR (Businger–Golub, LAPACK geqp3 via ``scipy.linalg.qr(pivoting=True)``) of Xᵀ picks the
    k rows of X of largest residual norm; X̂ projects every row of X onto their span, so the
    error is ‖R_22‖_F. The permutation is undone: with Xᵀ[:, piv] = Q R, X̂[piv] = R_kᵀ Q_kᵀ.
    Factors sent: Q_k (n×k) and R_k Pᵀ (k×m, dense, columns back in X's row order).
    """
    A = _as_matrix(X)
    m, n = A.shape
    k = _check_rank(rank, m, n)
    Ahat, factors = _qrcp(A, k)
    return _finish(X, A, Ahat, factors, k, "qrcp")


def _qrcp(A: np.ndarray, k: int, generator=None):
    Q, R, piv = _qr_rows(A)
    Qk, Rk = Q[:, :k], R[:k]
    RkPt = np.empty_like(Rk)
    RkPt[:, piv] = Rk  # (R_k Pᵀ)[:, piv[j]] = R_k[:, j]
    return (Qk @ RkPt).T, (Qk, RkPt)  # X̂ = P R_kᵀ Q_kᵀ


def qrcp_paper_formula(X: torch.Tensor, rank: int):
    """The paper's printed QRCP reconstruction G_approx,k = (R^(k))ᵀ (Q^(k))ᵀ — WRONG (spec §4.2).

    It omits Pᵀ, so it approximates Pᵀ X (X with its rows permuted by the pivots), not X: it is
    wrong even at full rank whenever the pivoting is not the identity. For teaching only; use
    :func:`qrcp`. ``factors`` holds Q_k and R_k as printed.
    """
    A = _as_matrix(X)
    m, n = A.shape
    k = _check_rank(rank, m, n)
    Q, R, _ = _qr_rows(A)
    Qk, Rk = Q[:, :k], R[:k]
    Ahat = Rk.T @ Qk.T
    return _finish(X, A, Ahat, (Qk, Rk), k, "qrcp (paper's printed formula, no P: wrong)")


def _leverage(V: np.ndarray, k: int) -> np.ndarray:
    """Leverage scores π_j = (1/k) Σ_{ξ≤k} (v_j^ξ)² from the top-k singular vectors (columns of V)."""
    p = np.sum(V[:, :k] ** 2, axis=1) / k
    return p / p.sum()


def _sample(p: np.ndarray, c: int, generator) -> np.ndarray:
    """c indices without replacement, probabilities ∝ p (float64 draws from ``generator``)."""
    w = torch.as_tensor(p, dtype=torch.float64)
    w = torch.where(w > 0, w, torch.full_like(w, 1e-300))  # allow c > #nonzero scores
    return np.sort(torch.multinomial(w, c, replacement=False, generator=generator).numpy())


def cur(
    X: torch.Tensor,
    rank: int,
    *,
    n_cols: int | None = None,
    n_rows: int | None = None,
    select: str = "leverage",
    generator: torch.Generator | None = None,
):
    """CUR (spec §4.3 [ext], "proper CUR"): C = X[:, J], R = X[I, :], U = C⁺ X R⁺, X̂ = C U R.

    |J| = ``n_cols`` and |I| = ``n_rows`` (default ``rank``; in [1, n] and [1, m]).
    ``select="leverage"``: J and I sampled without replacement with probabilities ∝ the rank-k
    leverage scores of the top-k right / left singular vectors (Mahoney & Drineas 2009), draws
    from ``generator``. ``select="qrcp"``: J = the first |J| column pivots of QRCP of X, I = the
    first |I| pivots of QRCP of Xᵀ (deterministic). With all columns and rows, X̂ = X X⁺ X = X.
    Factors sent: C (m×|J|), U (|J|×|I|), R (|I|×n).
    """
    A = _as_matrix(X)
    m, n = A.shape
    k = _check_rank(rank, m, n)
    check_choice("select", select, ("leverage", "qrcp"))
    check_generator("generator", generator)
    c = k if n_cols is None else check_int("n_cols", n_cols, low=1, high=n)
    r = k if n_rows is None else check_int("n_rows", n_rows, low=1, high=m)
    Ahat, factors = _cur(A, k, generator, c, r, select)
    return _finish(X, A, Ahat, factors, k, f"cur ({select})")


def _cur(A: np.ndarray, k: int, generator=None, c=None, r=None, select="leverage"):
    c, r = k if c is None else c, k if r is None else r
    if select == "leverage":
        U_, _, Vt = _svd(A)
        J = _sample(_leverage(Vt.T, k), c, generator)
        I = _sample(_leverage(U_, k), r, generator)
    else:
        J = np.sort(scipy.linalg.qr(A, mode="r", pivoting=True, check_finite=False)[1][:c])
        I = np.sort(scipy.linalg.qr(A.T, mode="r", pivoting=True, check_finite=False)[1][:r])
    C, R = A[:, J], A[I, :]
    Ucore = _pinv(C) @ A @ _pinv(R)
    return C @ Ucore @ R, (C, Ucore, R)


def paper_row_id(X: torch.Tensor, rank: int, *, generator: torch.Generator | None = None):
    """The paper's own "CUR" / Row ID method, as in the paper (spec §4.3): R = X[I, :] with k rows
    drawn uniformly without replacement (from ``generator``), Z = argmin ‖X − Z R‖_F = X R⁺, X̂ = Z R.

    X̂ projects every row onto the span of the sampled rows (those are reproduced exactly), so the
    error is at least the Eckart–Young value. Factors sent: Z (m×k) and R (k×n).
    """
    A = _as_matrix(X)
    m, n = A.shape
    k = _check_rank(rank, m, n)
    Ahat, factors = _row_id(A, k, check_generator("generator", generator))
    return _finish(X, A, Ahat, factors, k, "paper_row_id (as in the paper: uniform rows + lstsq)")


def _row_id(A: np.ndarray, k: int, generator=None):
    I = np.sort(torch.randperm(A.shape[0], generator=generator)[:k].numpy())
    R = A[I, :]
    Z = np.linalg.lstsq(R.T, A.T, rcond=None)[0].T  # Zᵀ = (Rᵀ)⁺ Xᵀ
    return Z @ R, (Z, R)


LOWRANK_METHODS = {"pca": pca, "qrcp": qrcp, "cur": cur, "paper_row_id": paper_row_id}
#: X̂ and its factors from a finite float64 numpy matrix at rank k: what each method of
#: :data:`LOWRANK_METHODS` computes after its checks, and what :class:`LowRank` calls per message.
_APPROXIMATE = {"pca": _pca, "qrcp": _qrcp, "cur": _cur, "paper_row_id": _row_id}


# --------------------------------------------------------------------------------------------
# as an upload compressor
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LowRank(Compressor):
    """A low-rank approximation used as a message compressor (interface of ``lorakit.compressors``).

    Each message (the dimensions after ``batch_dims``) is reshaped to (first dimension, rest) —
    the spec's "first dimension is the row space"; a 1-D message of d entries becomes (d, 1) —
    approximated at ``rank`` and reshaped back. Batched messages are approximated one by one; the
    random methods (``cur`` with leverage sampling, ``paper_row_id``) draw from ``generator``.

    Not unbiased. Contractive (Def. 3) with a constant this kit can state, for an m×n message:

    * ``pca``: β = k/min(m, n) (the top k of the r ≤ min(m, n) squared singular values carry at
      least a k/r share of ‖X‖_F²);
    * ``qrcp``: β = k/m (each greedy pivot step removes at least the average residual row norm²,
      so ‖X − X̂‖² ≤ Π_{j<k}(1 − 1/(m − j))‖X‖² = (1 − k/m)‖X‖²);
    * ``paper_row_id``: β = k/m in expectation (each row is sampled, hence reproduced, with
      probability k/m, and projection never increases a row's norm).

    ``cur`` satisfies only ‖X − C U R‖ ≤ ‖X‖ (two orthogonal projections); no β > 0 is claimed,
    so it is marked non-contractive.

    Bytes: ``payload(d)`` only gets d, so it needs the message shape: pass ``shape=(m, n)`` at
    construction (then ``payload(d)`` checks d = m·n), or call ``payload_shape(m, n)``. Counts
    (floats, indices): pca k(m + n); qrcp k(m + n) (Q_k and the dense R_k Pᵀ, no indices);
    cur with |J| = |I| = k: k·m + k·n + k²; paper_row_id k(m + n); all with 0 indices.
    """

    method: str
    rank: int
    shape: tuple | None = None

    unbiased = False

    def __post_init__(self):
        check_choice("method", self.method, tuple(LOWRANK_METHODS))
        object.__setattr__(self, "rank", check_int("rank", self.rank, low=1))
        if self.shape is not None:
            if len(self.shape) != 2:
                raise ValueError(f"shape must be (m, n), got {self.shape!r}")
            m = check_int("shape[0]", self.shape[0], low=1)
            n = check_int("shape[1]", self.shape[1], low=1)
            _check_rank(self.rank, m, n)
            object.__setattr__(self, "shape", (m, n))

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"lowrank_{self.method}"

    @property
    def contractive(self) -> bool:  # type: ignore[override]
        return self.method != "cur"

    def __str__(self):
        return f"lowrank(method={self.method!r}, rank={self.rank})"

    # -- byte accounting -----------------------------------------------------------------------
    def payload_shape(self, m: int, n: int) -> Payload:
        """(floats, indices) for one m×n message."""
        m, n = check_int("m", m, low=1), check_int("n", n, low=1)
        k = _check_rank(self.rank, m, n)
        if self.method == "cur":
            return Payload(k * m + k * n + k * k, 0)
        return Payload(k * (m + n), 0)

    def _shape_for(self, d: int) -> tuple[int, int]:
        d = check_int("d", d, low=1)
        if self.shape is None:
            raise ValueError(
                "LowRank.payload(d) needs the message shape: construct with shape=(m, n) "
                "or call payload_shape(m, n)"
            )
        if self.shape[0] * self.shape[1] != d:
            raise ValueError(f"d must equal m*n = {self.shape[0] * self.shape[1]}, got {d}")
        return self.shape

    def payload(self, d: int) -> Payload:
        return self.payload_shape(*self._shape_for(d))

    def beta_shape(self, m: int, n: int) -> float:
        """β of Def. 3 for an m×n message (see the class docstring)."""
        m, n = check_int("m", m, low=1), check_int("n", n, low=1)
        k = _check_rank(self.rank, m, n)
        if self.method == "pca":
            return k / min(m, n)
        if self.method in ("qrcp", "paper_row_id"):
            return k / m
        return super().beta(m * n)

    def beta(self, d: int) -> float:
        return self.beta_shape(*self._shape_for(d))

    # -- compression ---------------------------------------------------------------------------
    def __call__(self, X, generator=None, batch_dims=0):
        if not isinstance(X, torch.Tensor):
            raise ValueError(f"X must be a torch.Tensor, got {type(X)}")
        batch_dims = check_int("batch_dims", batch_dims, low=0, high=X.dim() - 1)
        msg = X.shape[batch_dims:]
        m = msg[0]
        n = math.prod(msg[1:]) if len(msg) > 1 else 1
        _check_rank(self.rank, m, n)
        if self.method in ("cur", "paper_row_id"):
            check_generator("generator", generator)
        # The whole stack is checked and moved to float64 numpy once, and each message gets only
        # its X̂ (no factors, error or Approximation): the same numbers as the per-matrix
        # functions, without their per-call checks and conversions (an upload of the async app
        # costs a fifth as much, measured).
        A = _as_matrix(X.reshape(-1, n))
        approximate = _APPROXIMATE[self.method]
        out = np.stack([approximate(a, self.rank, generator)[0] for a in A.reshape(-1, m, n)])
        return torch.from_numpy(out).to(device=X.device, dtype=X.dtype).reshape(X.shape)


def lowrank(method: str, rank: int, shape: tuple | None = None) -> LowRank:
    """A :class:`LowRank` compressor (``method`` in pca, qrcp, cur, paper_row_id)."""
    return LowRank(method, rank, shape)
