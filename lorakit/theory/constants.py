"""Expected-projector constants λ_min(E[H]) and λ_max(E[H]), exact and by Monte Carlo.

Every rate in both papers is driven by the spectrum of the expected projector
(RAC-LoRA Assumption 5.1; Bernoulli-LoRA Assumption 1)::

    λ^H_min = λ_min(E[H]) > 0,    λ^H_max = λ_max(E[H]),

where H = H_B = B_S(B_SᵀB_S)^†B_Sᵀ (m×m, left sketch) or H = H_A = A_Sᵀ(A_SA_Sᵀ)^†A_S (n×n, right
sketch). This module gives

* :func:`exact_expected_projector` — E[H] as an exact sympy matrix for the families with a closed
  form (Bernoulli-LoRA Lemmas 1–7; RAC-LoRA Remark after Assumption 5.1; RAC-LoRA §5 items 2–3);
* :func:`expected_projector` — a batched Monte Carlo estimate of E[H] with entry-wise standard
  errors, for any :class:`~lorakit.sketches.Sketch` (the only route for anisotropic sketches);
* :func:`lorakit.sketches.anisotropic_gaussian` (B = diag(s)·G) is the non-isotropic test family;
* :func:`lambda_p` — Bernoulli-LoRA's probability-weighted λ^p_min, λ^p_max;
* :func:`multilayer_lambda` and :func:`mlp_layers_lambda` — the multi-layer rule (RAC-LoRA §5
  item 13): E[H] of a stack of independently sketched layers is block-diagonal, so its spectrum is
  the union of the layers' spectra.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from numbers import Integral, Rational
from typing import NamedTuple

import sympy
import torch
from scipy.linalg import blas

from .._validation import check_choice, check_device, check_dtype, check_int, check_real
from ..rng import Streams
from ..sketches import SIDES, Sketch, cholesky_basis, make_sketch, orthonormal_basis

__all__ = [
    "ENUMERATION_MAX_D",
    "INVARIANT_FAMILIES",
    "LambdaRange",
    "LayerwiseLambda",
    "ProjectorEstimate",
    "exact_expected_projector",
    "expected_projector",
    "lambda_p",
    "mlp_layers_lambda",
    "multilayer_lambda",
]

#: Families whose E[H] is (r/d)·I by a group-invariance argument (Bernoulli-LoRA Lemmas 1–7).
#: Gaussian and Haar: rotation invariance (Lemmas 1, 3, 4); i.i.d. uniform and Kaiming-uniform:
#: signed-permutation invariance (Lemmas 2, 5, 6, 7); uniform coordinate sampling: permutation
#: invariance plus the exact enumeration in :func:`exact_expected_projector`.
INVARIANT_FAMILIES = ("gaussian", "haar", "kaiming_uniform", "uniform")

#: Largest d for which uniform coordinate sampling is enumerated subset by subset.
ENUMERATION_MAX_D = 12


# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------
class LambdaRange(NamedTuple):
    """(λ_min, λ_max): exact sympy numbers where the inputs were exact, floats otherwise."""

    min: object
    max: object


class LayerwiseLambda(NamedTuple):
    """Per-layer λ = r/d_ℓ of a layer stack and the global (min, max) (RAC-LoRA §5 item 13)."""

    per_layer: tuple
    min: object
    max: object


@dataclass(frozen=True)
class ProjectorEstimate:
    """A Monte Carlo estimate of E[H] (RAC-LoRA Assumption 5.1; Bernoulli-LoRA Assumption 1).

    ``mean`` is the d×d sample mean of H, ``stderr`` the entry-wise standard error of that mean
    (sample standard deviation of the entry / √samples), ``eigenvalues`` the ascending eigenvalues
    of ``mean``. All tensors are on the CPU. Note that the extreme eigenvalues of a noisy matrix
    are biased outwards (by about 2·stderr·√d for an isotropic target), so compare entries, not
    eigenvalues, against a target at the stated number of standard errors.
    """

    mean: torch.Tensor
    stderr: torch.Tensor
    eigenvalues: torch.Tensor
    lambda_min: float
    lambda_max: float
    samples: int
    sketch: str = ""
    side: str = "left"

    @property
    def d(self) -> int:
        return self.mean.shape[-1]

    @property
    def condition(self) -> float:
        """λ_max/λ_min (the factor in the SGD/PAGE/MVR step sizes; RR needs it below 4)."""
        return self.lambda_max / self.lambda_min if self.lambda_min > 0 else math.inf

    def as_range(self) -> LambdaRange:
        return LambdaRange(self.lambda_min, self.lambda_max)


# --------------------------------------------------------------------------------------------
# Anisotropic Gaussian sketch
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# Monte Carlo
# --------------------------------------------------------------------------------------------
#: Elements of one block of explicit projector tiles (s×t×t) formed while accumulating Σ H∘H
#: (1 MiB of float64: a core's L2 cache on the benchmark machine).
_BLOCK_ELEMENTS = 1 << 17
#: Tile side for Σ H∘H, and the most tiles per side (larger d gets larger tiles).
_TILE, _MAX_TILES = 128, 8
#: Elements of one chunk of sketches (chunk×d×r); larger chunks are split to bound memory.
_CHUNK_ELEMENTS = 1 << 24
#: BLAS symmetric rank-k update C ← C + A·Aᵀ by dtype (upper triangle; half a GEMM's work).
_SYRK = {torch.float64: blas.dsyrk, torch.float32: blas.ssyrk}


@functools.cache
def _blas_pools():
    """threadpoolctl's handle on the BLAS libraries loaded (made once: the lookup takes ~1 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _basis(X: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Qᵀ (k, r, d, contiguous) in float64 with H_k = Q_k Q_kᵀ, and QᵀQ (k, r, r).

    The certified Cholesky QR of :func:`lorakit.sketches.cholesky_basis` (on the CPU a batched
    Cholesky of r×r matrices and a triangular solve cost about half a batched Householder QR);
    the draws it does not certify (ill-conditioned or rank-deficient) take the SVD basis of
    :func:`lorakit.sketches.orthonormal_basis`, which handles rank deficiency.
    """
    Q, gram, ok = cholesky_basis(X.to(torch.float64), side)
    Qt = Q.mT
    bad = ~ok
    if bool(bad.any()):
        Qt = Qt.contiguous()
        Qt[bad] = orthonormal_basis(X.to(torch.float64)[bad], side).mT
        gram[bad] = Qt[bad] @ Qt[bad].mT
    return Qt, gram


def expected_projector(
    sketch: Sketch | str,
    d: int,
    r: int,
    side: str = "left",
    samples: int = 10_000,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    chunk: int = 2000,
    *,
    draw_dtype: torch.dtype = torch.float32,
    pooled: bool | None = None,
) -> ProjectorEstimate:
    """Monte Carlo estimate of E[H] with standard errors of its entries.

    Draws ``samples`` sketches of the factor's shape — (d, r) for a left sketch B_S (d = m),
    (r, d) for a right sketch A_S (d = n) — ``chunk`` at a time with
    ``sketch.sample(..., batch=(chunk,))`` in ``draw_dtype`` from the ``"sketch"`` stream of
    ``Streams(seed)``, so the same arguments give the same estimate bit for bit (draws are made on
    the CPU and moved). For each chunk an orthonormal basis Q of every draw (H = QQᵀ, float64
    Cholesky QR certified by ‖QᵀQ − I‖, the SVD for the draws it does not certify, rank-deficient
    ones included) gives Σ H and the second moments for the standard errors:

    * **pooled** (default for an exchangeable sketch, :attr:`lorakit.sketches.Sketch.exchangeable`:
      Gaussian, Haar, coordinate, Kaiming-uniform): H_{PB} = P H_B Pᵀ for every permutation P
      (Bernoulli-LoRA Lemma 4), so all diagonal entries of H share one variance and all
      off-diagonal entries another. The reported variance of an entry is the average of the
      entry-wise sample variances over its group, which needs only the scalars Σ_i H_ii² and
      ‖H‖_F² = ‖QᵀQ‖_F² per draw: unbiased for every entry, and far less noisy than one entry's.
      Σ H is then one symmetric rank-(chunk·r) update per chunk (BLAS ``syrk`` on the CPU).
    * **entry-wise** (any other sketch, or ``pooled=False``): Σ H and Σ H∘H from blocks of
      explicit tiles of the H_k (a batched product with inner dimension r) small enough to stay in
      cache, over the upper tile pairs only (both sums are symmetric).

    ``draw_dtype`` defaults to float32: on the CPU float32 Gaussian draws cost a fifth of float64
    ones. The sketch's law is then its float32 rounding, which moves each entry by at most 2⁻²⁴
    of itself and keeps every permutation and sign symmetry exactly; the basis and the sums are
    in float64 (``dtype`` is the accumulation's), so tr of the mean is r to float64 rounding.
    No d×d pseudo-inverse is formed and there is no per-sample Python loop.

    The result's ``mean`` estimates E[H]; its extreme eigenvalues estimate λ^H_min, λ^H_max
    (RAC-LoRA Assumption 5.1, Bernoulli-LoRA Assumption 1). ``device`` defaults to CUDA when
    available, else the CPU. The chunk is reduced if chunk·d·r would exceed 2²⁴ elements; the
    estimate depends on the chunk size through the order of the draws.
    """
    sketch = make_sketch(sketch)
    d = check_int("d", d, low=1)
    r = check_int("r", r, low=1, high=d)
    check_choice("side", side, SIDES)
    samples = check_int("samples", samples, low=2)
    seed = check_int("seed", seed, low=0)
    chunk = check_int("chunk", chunk, low=1)
    check_dtype("dtype", dtype)
    check_dtype("draw_dtype", draw_dtype)
    device = _default_device() if device is None else check_device("device", device)
    if pooled is None:
        pooled = sketch.exchangeable
    elif not isinstance(pooled, bool):
        raise ValueError(f"pooled must be True, False or None, got {pooled!r}")
    elif pooled and not sketch.exchangeable:
        raise ValueError(
            f"pooled=True needs an exchangeable sketch (gaussian, haar, coordinate, "
            f"kaiming_uniform), got {sketch.name!r}"
        )

    chunk = max(1, min(chunk, samples, _CHUNK_ELEMENTS // (d * r)))
    shape = (d, r) if side == "left" else (r, d)
    gen = Streams(seed)["sketch"]
    sums = _PooledSums(d, dtype, device) if pooled else _TiledSums(d, dtype, device)
    done = 0
    while done < samples:
        k = min(chunk, samples - done)
        X = sketch.sample(shape, gen, side=side, batch=(k,), dtype=draw_dtype, device=device)
        Qt, gram = _basis(X, side)
        sums.add(Qt.to(dtype), gram)
        done += k
    mean, var = sums.result(samples)
    stderr = (var / samples).sqrt()
    eig = torch.linalg.eigvalsh(mean.to(torch.float64))
    return ProjectorEstimate(
        mean=mean.cpu(),
        stderr=stderr.cpu(),
        eigenvalues=eig.cpu(),
        lambda_min=float(eig[0]),
        lambda_max=float(eig[-1]),
        samples=samples,
        sketch=str(sketch),
        side=side,
    )


class _PooledSums:
    """Σ H (upper triangle, by syrk) and the pooled second moments Σ Σ_i H_ii², Σ ‖H‖_F²."""

    def __init__(self, d: int, dtype: torch.dtype, device: torch.device):
        self.d = d
        # Column-major, so scipy's syrk updates it in place.
        self.sum_h = torch.zeros(d, d, dtype=dtype, device=device).mT
        self.diag2 = self.fro2 = 0.0
        self.blas = device.type == "cpu" and dtype in _SYRK

    def add(self, Qt: torch.Tensor, gram: torch.Tensor) -> None:
        """Add a chunk; Qt is consumed (squared in place: a fresh chunk-sized temporary cost
        more than the arithmetic on it)."""
        k, r, d = Qt.shape
        self.fro2 += float(gram.square().sum())  # ‖H‖_F² = ‖QᵀQ‖_F² (= rank)
        rows = Qt.reshape(k * r, d)  # Σ_k Q_k Q_kᵀ = rowsᵀ rows
        if self.blas:  # rowsᵀ is (d, k·r) column-major: syrk reads it without a copy
            # On one thread: at this shape a second gains nothing (25.5 against 26.7 ms a chunk
            # of 2,000 256×8 draws), and OpenBLAS's idle workers then spin for about 0.1 s on the
            # core that torch's next operations need (10,000 draws took 573 ms, now 340 ms).
            with _blas_pools().limit(limits=1, user_api="blas"):
                syrk = _SYRK[rows.dtype]
                syrk(1.0, rows.numpy().T, beta=1.0, c=self.sum_h.numpy(), overwrite_c=True)
        else:
            self.sum_h.addmm_(rows.mT, rows)
        h_diag = Qt.square_().sum(dim=1)  # (k, d): H_ii = ‖q_i‖²
        self.diag2 += float(h_diag.square().sum())

    def result(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.d
        upper = torch.triu(self.sum_h)
        mean = (upper + torch.triu(upper, 1).mT) / n
        # Average over each group of the entry-wise unbiased variances (Σ x² − n·x̄²)/(n − 1).
        m2 = mean.square()
        diag_m2 = float(m2.diagonal().sum())
        var_diag = (self.diag2 - n * diag_m2) / (d * (n - 1))
        var = torch.full_like(mean, 0.0)
        if d > 1:
            var_off = (self.fro2 - self.diag2 - n * (float(m2.sum()) - diag_m2)) / (
                d * (d - 1) * (n - 1)
            )
            var.fill_(max(var_off, 0.0))
        var.diagonal().fill_(max(var_diag, 0.0))
        return mean, var


class _TiledSums:
    """Σ H and Σ H∘H entry by entry, from cache-sized blocks of explicit upper tiles of the H_k."""

    def __init__(self, d: int, dtype: torch.dtype, device: torch.device):
        tile = min(d, max(_TILE, -(-d // _MAX_TILES)))
        self.tiles = [slice(a, min(a + tile, d)) for a in range(0, d, tile)]
        self.block = max(1, (_BLOCK_ELEMENTS if device.type == "cpu" else 1 << 24) // tile**2)
        self.sum_h = torch.zeros(d, d, dtype=dtype, device=device)
        self.sum_h2 = torch.zeros(d, d, dtype=dtype, device=device)
        # Preallocated work space: re-allocating the block of tiles each time costs more than the
        # arithmetic on it (page faults on the CPU).
        self.H_buf = torch.empty(self.block * tile * tile, dtype=dtype, device=device)
        self.sum_buf = torch.empty(tile * tile, dtype=dtype, device=device)

    def add(self, Qt: torch.Tensor, gram: torch.Tensor) -> None:
        Q = Qt.mT  # (k, d, r)
        tiles = self.tiles
        for Qb in Q.split(self.block):
            for i, I in enumerate(tiles):
                for J in tiles[i:]:
                    ti, tj = I.stop - I.start, J.stop - J.start
                    H = self.H_buf[: Qb.shape[0] * ti * tj].view(Qb.shape[0], ti, tj)
                    torch.matmul(Qb[:, I], Qb[:, J].mT, out=H)  # the (I, J) tiles of the H_k
                    S = self.sum_buf[: ti * tj].view(ti, tj)
                    torch.sum(H, dim=0, out=S)
                    self.sum_h[I, J].add_(S)  # Σ_k H_k
                    H.square_()
                    torch.sum(H, dim=0, out=S)
                    self.sum_h2[I, J].add_(S)  # Σ_k H_k∘H_k

    def result(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Mirror the upper tiles (the diagonal tiles are complete and symmetric).
        sum_h = torch.triu(self.sum_h) + torch.triu(self.sum_h, 1).mT
        sum_h2 = torch.triu(self.sum_h2) + torch.triu(self.sum_h2, 1).mT
        mean = sum_h / n
        return mean, ((sum_h2 - n * mean.square()) / (n - 1)).clamp_min(0)


# --------------------------------------------------------------------------------------------
# Exact expected projectors
# --------------------------------------------------------------------------------------------
def _exact_number(x, name: str):
    """x as a sympy Rational if it is exact (int, Fraction, sympy Rational), else ``None``."""
    if isinstance(x, bool):
        raise ValueError(f"{name} must be a number, got {x!r}")
    if isinstance(x, sympy.Rational):
        return x
    if isinstance(x, Integral | Fraction | Rational) and not isinstance(x, float):
        return sympy.Rational(x.numerator, x.denominator)
    return None


def _rational(x, name: str):
    """x as an exact sympy number; a float becomes the Rational of the decimal it prints as."""
    exact = _exact_number(x, name)
    if exact is not None:
        return exact
    if isinstance(x, sympy.Expr) and not isinstance(x, sympy.Float):
        return x  # a symbolic entry stays symbolic
    try:
        return sympy.Rational(repr(float(x)))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {x!r}") from None


def _to_rational_matrix(X) -> sympy.Matrix:
    """An exact sympy matrix from a sympy matrix, nested lists or a tensor (floats exactly)."""
    if isinstance(X, sympy.MatrixBase):
        return sympy.Matrix(X).applyfunc(lambda v: _rational(v, "matrix entry"))
    rows = X if isinstance(X, list) else torch.as_tensor(X, dtype=torch.float64).tolist()
    return sympy.Matrix([[_rational(v, "matrix entry") for v in row] for row in rows])


def _coordinate_enumeration(d: int, r: int) -> sympy.Matrix:
    """E[H] for uniform coordinate sampling by averaging H_S over all C(d, r) subsets S."""
    if d > ENUMERATION_MAX_D:
        raise ValueError(
            f"d must be in [1, {ENUMERATION_MAX_D}] for exact enumeration, got {d}; "
            "use method='closed_form'"
        )
    counts = [[0] * d for _ in range(d)]
    subsets = 0
    for S in itertools.combinations(range(d), r):
        subsets += 1
        # B_S = I[:, S] has orthonormal columns, so H_S = B_S B_Sᵀ; its (i, j) entry is
        # Σ_a B[i, a]·B[j, a] = 1 exactly when i = j ∈ S.
        B = [[1 if i == s else 0 for s in S] for i in range(d)]
        for i in range(d):
            for j in range(d):
                counts[i][j] += sum(B[i][a] * B[j][a] for a in range(r))
    return sympy.Matrix(d, d, lambda i, j: sympy.Rational(counts[i][j], subsets))


def _marginals_from(family, marginals, d: int, r: int) -> list:
    if marginals is None:
        if isinstance(family, Sketch) and family.params:
            # The sketch stores its marginals rounded to 6 decimals: recover simple fractions
            # (denominator ≤ 1000, within the rounding), keep the decimal otherwise.
            marginals = []
            for v in family.params[0]:
                frac = Fraction(repr(v)).limit_denominator(1000)
                marginals.append(frac if abs(float(frac) - v) <= 5e-7 else Fraction(repr(v)))
        else:
            raise ValueError("marginals must be given for nonuniform coordinate sampling")
    pi = [_rational(v, "marginals") for v in marginals]
    if len(pi) != d:
        raise ValueError(f"marginals must have length d={d}, got {len(pi)}")
    if any(p < 0 or p > 1 for p in pi):
        raise ValueError("marginals must be probabilities in [0, 1]")
    if sum(pi) != r:
        raise ValueError(f"marginals must sum to r={r} exactly, got {sum(pi)}")
    return pi


def exact_expected_projector(
    family: Sketch | str,
    d: int,
    r: int,
    *,
    side: str = "left",
    marginals=None,
    matrix=None,
    method: str = "auto",
) -> sympy.Matrix:
    """E[H] as an exact sympy matrix, for the families with a closed form.

    ``family`` is a :class:`~lorakit.sketches.Sketch` or its name; d is the dimension H acts on
    (m for a left sketch, n for a right one) and r the rank.

    * **Uniform coordinate sampling** (``"coordinate"``; RAC-LoRA §5 item 3): B_S = I[:, S] with
      |S| = r uniform, so H = diag(1_S). ``method="enumerate"`` (the default ``"auto"`` for
      d ≤ 12) averages H_S over all C(d, r) subsets with exact Rationals; ``"closed_form"`` (auto
      for d > 12) returns (r/d)·I: each i lies in C(d−1, r−1) of the C(d, r) subsets, and
      C(d−1, r−1)/C(d, r) = r/d.
    * **Non-uniform coordinate sampling** (``"nonuniform_coordinate"``, marginals π with Σπ = r):
      H = diag(1_S), so E[H] = diag(P(i ∈ S)) = diag(π) by linearity of expectation, entry by
      entry, whatever the joint law of S; λ_min = min_i π_i. Pass ``marginals`` (exact numbers
      preferred) or the sketch itself (its stored marginals are rounded to 6 decimals and
      recovered as simple fractions).
    * **Gaussian, Haar, i.i.d. uniform, Kaiming-uniform**: (r/d)·I by invariance
      (Bernoulli-LoRA Lemmas 1–7; RAC-LoRA Remark after Assumption 5.1). Let 𝒢 be a group of
      orthogonal matrices with Q B_S ~ B_S for every Q ∈ 𝒢: all rotations for Gaussian and Haar
      sketches (Lemma 3), the signed permutations for i.i.d. uniform and Kaiming-uniform entries
      (Lemmas 5–7). The projector is equivariant, H_{QB} = Q H_B Qᵀ (Lemma 4, eq. (21); eq. (22)
      for H_A), so E[H] = E[H_{QB}] = Q E[H] Qᵀ: E[H] commutes with 𝒢. A matrix commuting with
      all rotations (Lemma 1), or with all signed permutations (Lemma 2: sign flips kill the
      off-diagonal entries, permutations equalise the diagonal), is α·I. Finally tr H = rank(B_S)
      = r almost surely (full rank a.s.), so dα = E[tr H] = r and E[H] = (r/d)·I, i.e.
      λ_min = λ_max = r/d. The right sketch is the same statement for A_Sᵀ.
    * **Point mass** (``"fixed"``, AsymmLoRA): E[H] = H = B(BᵀB)^†Bᵀ itself, computed exactly from
      ``matrix`` (in the factor's own shape, m×r or r×n per ``side``) or from the fixed sketch;
      λ_min = 0 whenever r < d, so Assumption 5.1 fails (RAC-LoRA §2.2).

    Families with no closed form (the anisotropic Gaussian, custom samplers) raise ``ValueError``:
    estimate them with :func:`expected_projector`.
    """
    d = check_int("d", d, low=1)
    r = check_int("r", r, low=1, high=d)
    check_choice("side", side, SIDES)
    check_choice("method", method, ("auto", "enumerate", "closed_form"))
    if isinstance(family, Sketch):
        name = family.name
    elif isinstance(family, str):
        name = family
    else:
        raise ValueError(f"family must be a Sketch or a family name, got {family!r}")

    if name == "coordinate":
        if method == "enumerate" or (method == "auto" and d <= ENUMERATION_MAX_D):
            return _coordinate_enumeration(d, r)
        return sympy.Rational(r, d) * sympy.eye(d)
    if name == "nonuniform_coordinate":
        return sympy.diag(*_marginals_from(family, marginals, d, r))
    if name in INVARIANT_FAMILIES:
        return sympy.Rational(r, d) * sympy.eye(d)
    if name == "fixed":
        if matrix is None:
            if not isinstance(family, Sketch):
                raise ValueError("matrix must be given for the fixed (point-mass) family")
            shape = (d, r) if side == "left" else (r, d)
            matrix = family.sample(shape, None, side=side)
        M = _to_rational_matrix(matrix)
        expected = (d, r) if side == "left" else (r, d)
        if M.shape != expected:
            raise ValueError(f"matrix must have shape {expected} for side={side!r}, got {M.shape}")
        Bc = M if side == "left" else M.T
        return Bc * (Bc.T * Bc).pinv() * Bc.T
    raise ValueError(
        f"family {name!r} has no closed-form E[H]; estimate it with expected_projector "
        f"(Monte Carlo). Closed forms exist for: coordinate, nonuniform_coordinate, "
        f"{', '.join(INVARIANT_FAMILIES)}, fixed"
    )


# --------------------------------------------------------------------------------------------
# λ^p and the multi-layer rule
# --------------------------------------------------------------------------------------------
def _as_range(value, name: str, default) -> tuple:
    """(min, max) from None (→ default), a number, a pair, a ProjectorEstimate or a matrix."""
    if value is None:
        return default, default
    if isinstance(value, ProjectorEstimate):
        return value.lambda_min, value.lambda_max
    if isinstance(value, sympy.MatrixBase):
        eig = list(value.diagonal()) if value.is_diagonal() else list(value.eigenvals())
        lo, hi = min(eig), max(eig)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}")
        lo, hi = value
    else:
        lo = hi = value
    for v in (lo, hi):
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number in [0, 1] or a (min, max) pair") from None
        check_real(name, x, low=0.0, high=1.0)
    if lo > hi:
        raise ValueError(f"{name} must have min <= max, got ({lo}, {hi})")
    return lo, hi


def _normalise(x):
    exact = _exact_number(x, "value")
    return exact if exact is not None else float(x)


def lambda_p(p, r: int, m: int, n: int, *, lam_B=None, lam_A=None) -> LambdaRange:
    """Bernoulli-LoRA's probability-weighted eigenvalues (Assumption 1 discussion, §4)::

        λ^p_min = p·λ_min(E[H_B]) + (1 − p)·λ_min(E[H_A])
        λ^p_max = p·λ_max(E[H_B]) + (1 − p)·λ_max(E[H_A])

    p is the probability of a left sketch (train A). ``lam_B``/``lam_A`` default to the isotropic
    values r/m and r/n (Lemmas 3–7); pass a number (isotropic), a (min, max) pair, a
    :class:`ProjectorEstimate` or an exact E[H] matrix otherwise. The bound is tight: the operator
    V ↦ p·E[H_B]V + (1 − p)·V E[H_A] on R^{m×n} has eigenvalues p·a_i + (1 − p)·b_j, whose extremes
    are λ^p_min and λ^p_max. Exact sympy Rationals are returned when p and the λ's are exact
    (ints, Fractions, sympy Rationals); a float anywhere gives floats. λ^p is linear in p, so it is
    maximised at p ∈ {0, 1} and independent of p when m = n (isotropic sketches).
    """
    exact_p = _exact_number(p, "p")
    p_val = exact_p if exact_p is not None else check_real("p", p, low=0.0, high=1.0)
    if exact_p is not None and not (0 <= exact_p <= 1):
        raise ValueError(f"p must be in [0, 1], got {exact_p}")
    m = check_int("m", m, low=1)
    n = check_int("n", n, low=1)
    r = check_int("r", r, low=1, high=min(m, n))
    b_lo, b_hi = _as_range(lam_B, "lam_B", sympy.Rational(r, m))
    a_lo, a_hi = _as_range(lam_A, "lam_A", sympy.Rational(r, n))
    lo = p_val * _normalise(b_lo) + (1 - p_val) * _normalise(a_lo)
    hi = p_val * _normalise(b_hi) + (1 - p_val) * _normalise(a_hi)
    return LambdaRange(_normalise(lo), _normalise(hi))


def multilayer_lambda(layers, kind: str = "auto") -> LambdaRange:
    """λ_min and λ_max of E[H] for independently sketched layers (RAC-LoRA §5 item 13).

    Each layer ℓ updates its own weight with its own projector, so the stacked E[H] is
    block-diagonal, blockdiag(E[H_ℓ] ⊗ I) over the layers, and its spectrum is the union of the
    layers' spectra: λ_min = min_ℓ λ_min,ℓ and λ_max = max_ℓ λ_max,ℓ. Each entry of ``layers`` is
    a (λ_min, λ_max) pair, a :class:`LambdaRange`, a :class:`ProjectorEstimate`, or an isotropic
    layer (r, d) with λ = r/d. ``kind="auto"`` reads an integer pair with r ≥ 1 as (r, d) — the
    only integer (λ_min, λ_max) pair it could be confused with, (1, 1), means the same thing — and
    any other pair as (λ_min, λ_max); ``kind="lambda"`` or ``"rank"`` forces one reading.
    """
    check_choice("kind", kind, ("auto", "lambda", "rank"))
    layers = list(layers)
    if not layers:
        raise ValueError("layers must be a non-empty sequence of layers")
    ranges = []
    for i, layer in enumerate(layers):
        name = f"layers[{i}]"
        if isinstance(layer, ProjectorEstimate | LambdaRange):
            ranges.append(
                _as_range(tuple(layer)[:2] if isinstance(layer, LambdaRange) else layer, name, None)
            )
            continue
        if not isinstance(layer, Sequence) or len(layer) != 2:
            raise ValueError(
                f"{name} must be a (lambda_min, lambda_max) or (r, d) pair, got {layer!r}"
            )
        is_int = all(isinstance(v, Integral) and not isinstance(v, bool) for v in layer)
        as_rank = kind == "rank" or (kind == "auto" and is_int and layer[0] >= 1)
        if as_rank:
            d = check_int(f"{name} d", layer[1], low=1)
            r = check_int(f"{name} r", layer[0], low=1, high=d)
            lam = sympy.Rational(r, d)
            ranges.append((lam, lam))
        else:
            ranges.append(_as_range(tuple(layer), name, None))
    lo = min((_normalise(a) for a, _ in ranges), key=float)
    hi = max((_normalise(b) for _, b in ranges), key=float)
    return LambdaRange(lo, hi)


def mlp_layers_lambda(dims: Sequence[int], r, side: str) -> LayerwiseLambda:
    """Per-layer and global λ for an MLP with widths ``dims`` and isotropic sketches.

    Layer ℓ maps dims[ℓ] → dims[ℓ+1]; its weight is (out, in) = (dims[ℓ+1], dims[ℓ]) as in
    ``nn.Linear``. A left sketch (B_S, trains A) projects the output dimension, λ_ℓ = r/out; a
    right sketch (A_S, trains B) projects the input dimension, λ_ℓ = r/in. The global values
    follow :func:`multilayer_lambda`. RAC-LoRA §5 item 13 (MNIST MLP 784–64–64–5, r = 1): left
    1/64, 1/64, 1/5 → λ_min = 1/64; right 1/784, 1/64, 1/64 → λ_min = 1/784. ``r`` is one rank
    or one per layer; it must not exceed min(in, out) of its layer.
    """
    check_choice("side", side, SIDES)
    dims = [check_int(f"dims[{i}]", v, low=1) for i, v in enumerate(dims)]
    if len(dims) < 2:
        raise ValueError(f"dims must list at least 2 widths (one layer), got {dims}")
    n_layers = len(dims) - 1
    ranks = list(r) if isinstance(r, Sequence) else [r] * n_layers
    if len(ranks) != n_layers:
        raise ValueError(f"r must be one rank or {n_layers} ranks (one per layer), got {r!r}")
    per_layer = []
    for i in range(n_layers):
        fan_in, fan_out = dims[i], dims[i + 1]
        rank = check_int(
            f"r[{i}]" if isinstance(r, Sequence) else "r",
            ranks[i],
            low=1,
            high=min(fan_in, fan_out),
        )
        per_layer.append(sympy.Rational(rank, fan_out if side == "left" else fan_in))
    return LayerwiseLambda(tuple(per_layer), min(per_layer), max(per_layer))
