"""Frozen-factor distributions ("sketches") and the projectors they induce.

In a chain link one LoRA factor is drawn from a fixed distribution and frozen: a left sketch
B_S ∈ R^{m×r} (A is trained) or a right sketch A_S ∈ R^{r×n} (B is trained). With the exact
sub-problem step the update is a projected gradient step (RAC-LoRA eqs. (3)–(4); Bernoulli-LoRA
Lemma 10)::

    left:  W⁺ = W − γ H_B G,   H_B = B_S (B_Sᵀ B_S)^† B_Sᵀ    (m×m, projector onto col(B_S))
    right: W⁺ = W − γ G H_A,   H_A = A_Sᵀ (A_S A_Sᵀ)^† A_S    (n×n, projector onto row(A_S))

Every rate depends on λ_min(E[H]) (RAC-LoRA Assumption 5.1; Bernoulli-LoRA Assumption 1). For the
rotation- or signed-permutation-invariant families here (Gaussian, Haar, uniform coordinate,
Kaiming-uniform) E[H_B] = (r/m)·I and E[H_A] = (r/n)·I (Bernoulli-LoRA Lemmas 3–7).

Projectors are never formed from a pseudo-inverse of an m×m matrix. :func:`orthonormal_basis`
takes the Householder QR of the (d×r) sketch where its R certifies full numerical rank (the
common case: one small QR, a fraction of an SVD's time), and otherwise the thin SVD
X = U Σ Vᵀ (batched ``torch.linalg.svd``, backward stable), which gives an orthonormal basis of
the column space, U restricted to the numerical rank, orthonormal to working precision in
float32 and float64, and the Gram pseudo-inverse V Σ^{−2} Vᵀ. The rank is decided as numpy's
``matrix_rank`` does: σ_i > σ_max · max(d, r) · eps, so a rank-deficient sketch gives the
projector onto its actual column space (a zero sketch gives H = 0). The Gram matrix XᵀX squares
the condition number (in float32 a Gaussian 64×64 sketch would lose a column), so a basis from
it is used only with a certificate: :func:`cholesky_basis` (Cholesky QR, Q = X L^{-T}, for
large batches of sketches such as the Monte Carlo estimate of E[H]) also returns ‖QᵀQ − I‖,
which bounds the error of QQᵀ as a projector.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ._validation import check_choice, check_device_match, check_real, check_shape

__all__ = [
    "CHOLESKY_TOL",
    "SKETCHES",
    "Sketch",
    "anisotropic_gaussian",
    "apply_basis",
    "cholesky_basis",
    "coordinate",
    "custom",
    "fixed",
    "gaussian",
    "gram_pinv",
    "haar",
    "kaiming_uniform",
    "make_sketch",
    "nonuniform_coordinate",
    "orthonormal_basis",
    "project",
    "projector",
]

SIDES = ("left", "right")


# --------------------------------------------------------------------------------------------
# Projectors
# --------------------------------------------------------------------------------------------
def _as_columns(X: torch.Tensor, side: str) -> torch.Tensor:
    """The sketch with the projected dimension first: B_S as is, A_S transposed (…, d, r)."""
    return X if side == "left" else X.mT


def _svd(Xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD U, σ, V of the (…, d, r) sketch and the mask of σ above the numerical-rank cut-off.

    The cut-off σ_max · max(d, r) · eps is numpy's ``matrix_rank`` (and ``pinv``) default.
    """
    U, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
    tol = S.amax(dim=-1, keepdim=True) * (max(Xc.shape[-2:]) * torch.finfo(S.dtype).eps)
    return U, S, Vh.mT, S > tol


#: A Cholesky-QR basis is kept when ‖QᵀQ − I‖_max ≤ CHOLESKY_TOL·r·eps, the accuracy the SVD
#: basis reaches (tests/test_sketches.py); Gaussian sketches measure 2–5 eps at 64×4 and 256×8.
CHOLESKY_TOL = 2


def cholesky_basis(
    X: torch.Tensor, side: str = "left"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cholesky QR of the sketch with its certificate: (Q (…, d, r), QᵀQ (…, r, r), ok (…)).

    G = XᵀX = LLᵀ and Q = X L^{-T}, so QQᵀ = X G^{-1} Xᵀ is the projector up to the rounding E of
    G, and QᵀQ = I − L^{-1} E L^{-T}: ‖QᵀQ − I‖ is the error of QQᵀ as a projector (at most r
    times its largest entry in the 2-norm). ``ok`` marks the draws whose largest entry of
    QᵀQ − I is at most CHOLESKY_TOL·r·eps: a well-conditioned sketch (a Gaussian one has
    condition number about (√d + √r)/(√d − √r)); an ill-conditioned or rank-deficient one fails
    (the Cholesky factorisation itself fails on a singular G). Qᵀ = L^{-1}Xᵀ is formed as such,
    so Qᵀ (…, r, d) is contiguous.
    """
    check_choice("side", side, SIDES)
    Xc = _as_columns(X, side)
    r = Xc.shape[-1]
    L, info = torch.linalg.cholesky_ex(Xc.mT @ Xc)
    eye = torch.eye(r, dtype=L.dtype, device=L.device)
    # L^{-1} from r×r solves, then a batched product: solving Q Lᵀ = X for every d×r draw took
    # half as long again on the CPU (2,000 draws of 256×8); the certificate covers the rounding.
    Qt = torch.linalg.solve_triangular(L, eye, upper=False) @ Xc.mT
    gram = Qt @ Qt.mT
    dev = (gram - eye).abs().amax(dim=(-2, -1))
    ok = (info == 0) & (dev <= CHOLESKY_TOL * r * torch.finfo(Qt.dtype).eps)
    return Qt.mT, gram, ok


def orthonormal_basis(X: torch.Tensor, side: str = "left") -> torch.Tensor:
    """Q (…, d, min(d, r)) with orthonormal columns spanning col(B_S) (left) or row(A_S)ᵀ (right).

    Householder QR X = QR (backward stable: Q is orthonormal to working precision and spans X up
    to rounding) wherever R certifies full numerical rank: ‖R‖_F·‖R^{-1}‖_F ≥ cond(X), so
    ‖R‖_F·‖R^{-1}‖_F·max(d, r)·eps < 1 puts every singular value above numpy's cut-off (module
    docstring). Otherwise (a rank-deficient or nearly so draw, or r > d) the left singular
    vectors of the non-null singular values, so QᵀQ = I on the rank to working precision and the
    columns beyond the sketch's numerical rank are zero. Q Qᵀ is the projector H either way. For
    one 64×4 sketch the QR and its check take a fraction of the SVD's time, and avoid the
    multi-threaded ``gesdd`` that stalls on a loaded CPU.
    """
    check_choice("side", side, SIDES)
    Xc = _as_columns(X, side)
    d, r = Xc.shape[-2:]
    ok = False
    if r <= d:
        Q, R = torch.linalg.qr(Xc)
        ok = _certified(R, d)
        if ok is True or (torch.is_tensor(ok) and bool(ok.all())):
            return Q
    U, _, _, keep = _svd(Xc)
    U = U * keep.unsqueeze(-2).to(U.dtype)
    if torch.is_tensor(ok):  # keep the certified draws' QR bases, the SVD for the others
        U = torch.where(ok[..., None, None], Q, U)
    return U


#: Up to this rank one sketch's certificate is computed in Python floats (:func:`_certified`).
_SCALAR_CERTIFICATE_RANK = 8


def _certified(R: torch.Tensor, d: int) -> bool | torch.Tensor:
    """‖R‖_F·‖R^{-1}‖_F·d·eps < 1 for the (…, r, r) triangular factor(s) of d×r sketches: a bool
    for one R of rank up to 8, else a bool per draw (NaN, inf or a singular R: False).

    One small R, a chain link's, is checked in Python floats from ``R.tolist()``: its r³/6
    products cost less than the nine tiny torch kernels of the batched check, which at 64×4 took
    about 45 µs of a 600 µs Bernoulli-LoRA step (``tests/benchmarks/bench_chain.py``).
    """
    limit = 1.0 / (d * torch.finfo(R.dtype).eps)
    r = R.shape[-1]
    if R.ndim == 2 and r <= _SCALAR_CERTIFICATE_RANK:
        rows = R.tolist()
        norm = inverse = 0.0  # ‖R‖_F² and ‖R^{-1}‖_F²
        try:
            for j in range(r):  # column j of R^{-1}, by back substitution
                col = [0.0] * (j + 1)
                col[j] = c = 1.0 / rows[j][j]
                inverse += c * c
                for i in range(j - 1, -1, -1):
                    row, s = rows[i], 0.0
                    for k in range(i + 1, j + 1):
                        s += row[k] * col[k]
                    col[i] = c = -s / row[i]
                    inverse += c * c
                for i in range(j + 1):
                    norm += rows[i][j] * rows[i][j]
        except ZeroDivisionError:
            return False
        return math.sqrt(norm * inverse) < limit  # False for NaN
    eye = torch.eye(r, dtype=R.dtype, device=R.device)
    inverse = torch.linalg.solve_triangular(R, eye, upper=True)
    return torch.linalg.matrix_norm(R) * torch.linalg.matrix_norm(inverse) < limit


def gram_pinv(X: torch.Tensor, side: str = "left") -> torch.Tensor:
    """(B_Sᵀ B_S)^† for a left sketch, (A_S A_Sᵀ)^† for a right sketch; r×r, batched.

    V Σ^{−2} Vᵀ from the sketch's SVD (module docstring), never the Gram matrix itself.
    """
    check_choice("side", side, SIDES)
    _, S, V, keep = _svd(_as_columns(X, side))
    inv = torch.where(keep, 1.0 / torch.where(keep, S, torch.ones_like(S)) ** 2, 0.0)
    return (V * inv.unsqueeze(-2)) @ V.mT


def projector(X: torch.Tensor, side: str = "left") -> torch.Tensor:
    """The explicit projector H_B (m×m) or H_A (n×n); batched over leading dimensions."""
    Q = orthonormal_basis(X, side)
    return Q @ Q.mT


def project(X: torch.Tensor, G: torch.Tensor, side: str) -> torch.Tensor:
    """H_B G (left) or G H_A (right) without forming H: two thin products, O(d·r·(m+n))."""
    return apply_basis(orthonormal_basis(X, side), G, side)


def apply_basis(Q: torch.Tensor, G: torch.Tensor, side: str) -> torch.Tensor:
    """H G = Q(QᵀG) (left) or G H = (GQ)Qᵀ (right) for an orthonormal basis Q of the sketch."""
    return Q @ (Q.mT @ G) if side == "left" else (G @ Q) @ Q.mT


# --------------------------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sketch:
    """A distribution over frozen factors.

    ``sample(shape, generator)`` returns a left factor when ``shape = (m, r)`` (r ≤ m) and a right
    factor when ``shape = (r, n)``; which one is asked for is passed as ``side``. A family draws
    a (d, r) matrix for the projected dimension d and transposes it for the right side, so E[H_B]
    and E[H_A] have the same form. ``batch`` prepends Monte Carlo dimensions.

    ``exchangeable`` marks a law invariant under permuting the d coordinates (P·B_S ~ B_S for every
    permutation P): then H_{PB} = P H_B Pᵀ (Bernoulli-LoRA Lemma 4), so every diagonal entry of H
    has one law and every off-diagonal entry another. True for the Gaussian, Haar, uniform
    coordinate and Kaiming-uniform families; :func:`lorakit.theory.expected_projector` pools its
    standard errors over those two groups of entries.
    """

    name: str
    _draw: Callable = field(repr=False, compare=False)
    params: tuple = ()
    exchangeable: bool = field(default=False, compare=False)

    def sample(
        self,
        shape: tuple[int, int],
        generator: torch.Generator | None = None,
        *,
        side: str = "left",
        batch: tuple[int, ...] = (),
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        check_choice("side", side, SIDES)
        d, r = shape if side == "left" else shape[::-1]
        # fan_in follows torch's (out, in) convention: r for B (m×r), n for A (r×n).
        fan_in = shape[1]
        X = self._draw(d, r, tuple(batch), generator, dtype, fan_in, side)
        check_shape(f"sample of sketch {self.name!r}", X, (d, r))
        X = X if side == "left" else X.mT
        return X.to(device)

    def __str__(self) -> str:
        args = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in self.params)
        return f"{self.name}({args})" if args else self.name


def gaussian(scale: float = 1.0) -> Sketch:
    """I.i.d. N(0, scale²) entries (RAC-LoRA Remark after Assumption 5.1; Bernoulli-LoRA Lemma 3).

    E[H] = (r/d)·I for any scale; the scale matters only to plain-optimizer updates.
    """
    scale = check_real("scale", scale, low=0.0, low_open=True)

    def draw(d, r, batch, gen, dtype, fan_in, side):
        X = torch.randn(*batch, d, r, generator=gen, dtype=dtype)
        return X if scale == 1.0 else scale * X

    return Sketch("gaussian", draw, (scale,) if scale != 1.0 else (), exchangeable=True)


def haar() -> Sketch:
    """Haar-distributed orthonormal columns (QR of a Gaussian with the sign of diag(R) fixed)."""

    def draw(d, r, batch, gen, dtype, fan_in, side):
        Q, R = torch.linalg.qr(torch.randn(*batch, d, r, generator=gen, dtype=dtype))
        return Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)

    return Sketch("haar", draw, exchangeable=True)


def coordinate() -> Sketch:
    """Uniform coordinate sampling: B_S = I[:, S] with |S| = r uniform; H = diag(1_S), E[H] = (r/d)·I."""

    def draw(d, r, batch, gen, dtype, fan_in, side):
        keys = torch.rand(*batch, d, generator=gen, dtype=torch.float64)
        idx = keys.argsort(dim=-1)[..., :r]
        out = torch.zeros(*batch, d, r, dtype=dtype)
        return out.scatter_(-2, idx.unsqueeze(-2), 1.0)

    return Sketch("coordinate", draw, exchangeable=True)


def nonuniform_coordinate(marginals) -> Sketch:
    """Coordinate sampling with inclusion probabilities π_i (Σπ_i = r, π_i ≤ 1), so E[H] = diag(π).

    Draws exactly r distinct coordinates by systematic (Madow) sampling: coordinate i is taken when
    an interval of the cumulative sums of π contains one of U, U + 1, …, U + r − 1, U ~ U[0, 1).
    λ_min(E[H]) = min_i π_i.
    """
    pi = torch.as_tensor(marginals, dtype=torch.float64).flatten()
    if pi.numel() == 0 or (pi < 0).any() or (pi > 1).any():
        raise ValueError("marginals must be probabilities in [0, 1]")
    total = float(pi.sum())
    if abs(total - round(total)) > 1e-9 or round(total) < 1:
        raise ValueError(f"marginals must sum to the rank r (a positive integer), got {total:g}")
    r_fixed, d_fixed = round(total), pi.numel()
    edges = torch.cat([torch.zeros(1, dtype=torch.float64), pi.cumsum(0)])

    def draw(d, r, batch, gen, dtype, fan_in, side):
        if (d, r) != (d_fixed, r_fixed):
            raise ValueError(
                f"nonuniform_coordinate marginals describe d={d_fixed}, r={r_fixed}; "
                f"the factor needs d={d}, r={r}"
            )
        u = torch.rand(*batch, 1, generator=gen, dtype=torch.float64)
        points = u + torch.arange(r, dtype=torch.float64)  # (…, r)
        idx = (torch.searchsorted(edges, points.contiguous(), right=True) - 1).clamp(0, d - 1)
        out = torch.zeros(*batch, d, r, dtype=dtype)
        return out.scatter_(-2, idx.unsqueeze(-2), 1.0)

    return Sketch("nonuniform_coordinate", draw, (tuple(round(float(p), 6) for p in pi),))


def anisotropic_gaussian(scales) -> Sketch:
    """B_S = diag(s)·G with G i.i.d. N(0, 1): a full-support but non-isotropic sketch.

    The row scales break rotation invariance, so E[H] is not a multiple of I: coordinates with a
    small scale are rarely in the column space, giving λ_min(E[H]) < r/d < λ_max(E[H]) whenever the
    scales are not all equal (Bernoulli-LoRA §4.1, "distributions that fail Assumption 1" note;
    RAC-LoRA §5 item 3). Sign flips D G ~ G still hold, so E[H] commutes with every diagonal sign
    matrix and is therefore diagonal (the first step of Bernoulli-LoRA Lemma 2's proof); its
    diagonal has no closed form, so use :func:`lorakit.theory.expected_projector`. A zero scale keeps that
    coordinate out of every column space: λ_min = 0 and Assumption 5.1 fails. ``scales`` has length
    d (m for a left sketch, n for a right one).
    """
    s = torch.as_tensor(scales, dtype=torch.float64).flatten()
    if s.numel() == 0 or not torch.isfinite(s).all() or (s < 0).any() or not (s > 0).any():
        raise ValueError(
            "scales must be a non-empty sequence of finite non-negative numbers, not all zero"
        )
    d_fixed = s.numel()

    def draw(d, r, batch, gen, dtype, fan_in, side):
        if d != d_fixed:
            raise ValueError(
                f"anisotropic_gaussian has {d_fixed} scales; the factor needs d={d} "
                f"({'m' if side == 'left' else 'n'})"
            )
        G = torch.randn(*batch, d, r, generator=gen, dtype=dtype)
        return G * s.to(dtype).unsqueeze(-1)

    return Sketch("anisotropic_gaussian", draw, (tuple(round(float(v), 6) for v in s),))


def kaiming_uniform(a: float = math.sqrt(5)) -> Sketch:
    """I.i.d. U[−b, b] with b = gain·√(3/fan_in), gain = √(2/(1+a²)): peft's default init of lora_A.

    Signed-permutation invariance gives E[H] = (r/d)·I (Bernoulli-LoRA Lemmas 5–7).
    """
    a = check_real("a", a, low=0.0)

    def draw(d, r, batch, gen, dtype, fan_in, side):
        bound = math.sqrt(2.0 / (1.0 + a * a)) * math.sqrt(3.0 / fan_in)
        return (2 * torch.rand(*batch, d, r, generator=gen, dtype=dtype) - 1) * bound

    return Sketch("kaiming_uniform", draw, exchangeable=True)


def fixed(matrix: torch.Tensor) -> Sketch:
    """A point mass at ``matrix`` (given in the factor's own shape: m×r for B, r×n for A).

    E[H] = H has eigenvalue 0 whenever r < d, so Assumption 5.1 fails: this is AsymmLoRA's sketch.
    """
    M = torch.as_tensor(matrix)
    check_device_match(M.device, matrix=M)  # a meta matrix has no values to sketch with

    def draw(d, r, batch, gen, dtype, fan_in, side):
        check_shape("fixed sketch matrix", M, (d, r) if side == "left" else (r, d))
        X = M if side == "left" else M.mT
        return X.to(dtype).expand(*batch, d, r)

    return Sketch("fixed", draw)


def custom(sampler: Callable, name: str = "custom") -> Sketch:
    """A user-supplied sampler ``sampler(shape, generator) -> tensor`` of the factor's shape."""
    if not callable(sampler):
        raise ValueError("sampler must be callable as sampler(shape, generator)")

    def draw(d, r, batch, gen, dtype, fan_in, side):
        shape = (d, r) if side == "left" else (r, d)
        draws = []
        for _ in range(math.prod(batch)):
            X = torch.as_tensor(sampler(shape, gen), dtype=dtype)
            check_shape("the sampler's output", X, shape)
            draws.append(X if side == "left" else X.mT)
        return torch.stack(draws).reshape(*batch, d, r)

    return Sketch(name, draw)


SKETCHES: dict[str, Callable[..., Sketch]] = {
    "gaussian": gaussian,
    "haar": haar,
    "coordinate": coordinate,
    "kaiming_uniform": kaiming_uniform,
}


def make_sketch(sketch: Sketch | str) -> Sketch:
    """A :class:`Sketch` from itself or a registered name."""
    if isinstance(sketch, Sketch):
        return sketch
    check_choice("sketch", sketch, SKETCHES)
    return SKETCHES[sketch]()
