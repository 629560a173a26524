"""Diagonal quadratics: the RAC-LoRA counterexample and the (an)isotropic test quadratics.

Every problem here has the form

    f(W) = ½ ⟨W − W*, Λ ∘ (W − W*)⟩ + c,        Λ ∈ R^{m×n}, Λ_ij ≥ 0,

so ∇f(W) = Λ ∘ (W − W*), the Hessian (acting on vec W) is diag(vec Λ), L = max Λ, μ = min Λ
(strong convexity, hence PL) and f* = c is attained at W*.

* :func:`counterexample` — RAC-LoRA (Malinovsky et al. 2024), Section 3, Eq. (2), Figure 1
  (spec ``rac_lora.md`` §6): f(x) = xᵀMx + bᵀx written in completed-square form.
* :func:`quadratic` — the isotropic quadratic ½‖W − W*‖²_F on which Theorem 5.5 is tight
  (RAC-LoRA spec §5 item 4; Bernoulli-LoRA spec §6 item 6), and its anisotropic variant
  (RAC-LoRA spec §5 item 7).

The small private helpers at the bottom are shared with the other modules of this sub-package.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch

from .._validation import check_device, check_dtype, check_int, check_real, check_shape
from ..rng import Streams
from .base import MatrixProblem

__all__ = ["DiagonalQuadratic", "counterexample", "quadratic"]


@dataclass(eq=False)
class DiagonalQuadratic(MatrixProblem):
    """f(W) = ½ ⟨W − W*, Λ ∘ (W − W*)⟩ + c, with Λ = ``curvature`` and c = ``offset``.

    ``W_star`` and ``curvature`` (shape ``(m, n)``, entries ≥ 0) are required. Unset constants are
    filled in from Λ: ``L = max Λ``, ``mu = min Λ`` (None if that is 0), ``f_star = offset``.
    """

    curvature: torch.Tensor | None = None
    offset: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.W_star is None:
            raise ValueError("W_star is required for a DiagonalQuadratic")
        if self.curvature is None:
            raise ValueError("curvature (Λ) is required for a DiagonalQuadratic")
        _check_exact_shape("curvature", self.curvature, (self.m, self.n))
        if not bool(torch.isfinite(self.curvature).all()) or bool((self.curvature < 0).any()):
            raise ValueError("curvature must have finite entries >= 0")
        self.offset = check_real("offset", self.offset)
        lam_max = float(self.curvature.max())
        lam_min = float(self.curvature.min())
        if self.L is None:
            self.L = lam_max
        if self.mu is None and lam_min > 0:
            self.mu = lam_min
        if self.f_star is None:
            self.f_star = self.offset
        if self.f_lower is None:
            self.f_lower = self.f_star

    def loss(self, W: torch.Tensor) -> torch.Tensor:
        return self._excess(W) + self.offset

    def gap(self, W: torch.Tensor) -> torch.Tensor:
        """f(W) − f* computed directly, exact down to the smallest gaps (no cancellation with c)."""
        return self._excess(W) if self.f_star == self.offset else self.loss(W) - self.f_star

    def _excess(self, W: torch.Tensor) -> torch.Tensor:
        check_W(W, self.m, self.n)
        diff = W - self.W_star
        return 0.5 * (self.curvature * diff * diff).sum(dim=(-2, -1))

    def grad(self, W: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        self._check_idx(idx)
        check_W(W, self.m, self.n)
        return self.curvature * (W - self.W_star)


def counterexample(
    *,
    half: bool = False,
    W0: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> DiagonalQuadratic:
    """The RAC-LoRA counterexample, Section 3, Eq. (2) (Figure 1; spec ``rac_lora.md`` §6).

    f(x) = xᵀMx + bᵀx with M = diag(10, 1, …, 1), b = 1 ∈ R⁹ and x = vec(W) for W ∈ R^{3×3} in
    row-major order (``x = W.reshape(..., 9)``). As printed, ∇f = 2Mx + b, so the Hessian is 2M:
    **L = 20, μ = 2** (the paper's "L = 10" holds only for the ½ convention), x* = −½M⁻¹b and
    f* = −¼ bᵀM⁻¹b = −2.025.

    With ``half=True``, f = ½xᵀMx + bᵀx: L = 10, μ = 1, x* = −M⁻¹b, f* = −½ bᵀM⁻¹b = −4.05.

    The function is stored in completed-square form ½⟨W − W*, Λ∘(W − W*)⟩ + f* with
    Λ = 2M (or M) reshaped to 3×3, which equals Eq. (2) identically and makes f(W*) = f* exact.
    ``W0`` (unspecified in the paper) defaults to zeros(3, 3); W* has rank 2, so a single rank-1
    LoRA from W0 = 0 cannot reach it.
    """
    if not isinstance(half, bool):
        raise ValueError(f"half must be a bool, got {half!r}")
    dtype, device = check_dtype("dtype", dtype), check_device("device", device)
    device = torch.device(device)
    M = [Fraction(10)] + [Fraction(1)] * 8
    scale = Fraction(1) if half else Fraction(2)  # Hessian = scale · M
    x_star = [-1 / (scale * Mi) for Mi in M]  # b = 1
    f_star = -sum(1 / Mi for Mi in M) / (2 * scale)  # −½ bᵀ(scale·M)⁻¹b
    curvature = torch.tensor([float(scale * Mi) for Mi in M], dtype=dtype, device=device)
    W_star = torch.tensor([float(v) for v in x_star], dtype=dtype, device=device)
    W0 = matrix_arg("W0", W0, 3, 3, dtype, device)
    return DiagonalQuadratic(
        m=3,
        n=3,
        W0=W0,
        W_star=W_star.reshape(3, 3),
        curvature=curvature.reshape(3, 3),
        offset=float(f_star),
        L=float(scale * 10),
        mu=float(scale),
        f_star=float(f_star),
        name="counterexample",
    )


def quadratic(
    m: int,
    n: int,
    *,
    L: float = 1.0,
    mu: float | None = None,
    W_star: torch.Tensor | None = None,
    W0: torch.Tensor | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> DiagonalQuadratic:
    """f(W) = ½ Σ_ij Λ_ij (W − W*)_ij², f* = 0 (RAC-LoRA spec §5 items 4 and 7).

    * ``mu`` None or equal to ``L``: isotropic, Λ ≡ L. With L = 1 this is ½‖W − W*‖²_F, on which
      RAC-LoRA Theorem 5.5 / Bernoulli-LoRA Theorem 9 hold with equality at γ = 1/L.
    * ``0 < mu < L``: anisotropic. The m·n entries of Λ are log-uniform on [mu, L]
      (Λ = mu·(L/mu)^U, U ~ U[0, 1)), and two entries at random positions are set to exactly
      ``mu`` and ``L``, so that μ = min Λ = mu and L = max Λ = L hold exactly. Needs m·n ≥ 2.

    Randomness: Λ comes from the ``"data"`` stream and the default W* (standard normal) from the
    ``"init"`` stream of :class:`lorakit.rng.Streams` ``(seed)``, drawn on the CPU in float64, so
    the values do not depend on ``dtype``/``device`` and Λ does not depend on whether W* is given.
    ``W0`` defaults to zeros.
    """
    m = check_int("m", m, low=1)
    n = check_int("n", n, low=1)
    L = check_real("L", L, low=0.0, low_open=True)
    if mu is None:
        mu = L
    mu = check_real("mu", mu, low=0.0, high=L, low_open=True)
    seed = check_int("seed", seed, low=0)
    dtype, device = check_dtype("dtype", dtype), check_device("device", device)
    device = torch.device(device)
    streams = Streams(seed)
    if mu == L:
        curvature = torch.full((m, n), L, dtype=torch.float64)
    else:
        if m * n < 2:
            raise ValueError(f"mu < L needs m*n >= 2 entries (for mu and L), got m*n={m * n}")
        gen = streams["data"]
        u = torch.rand(m * n, generator=gen, dtype=torch.float64)
        curvature = mu * (L / mu) ** u
        ends = torch.randperm(m * n, generator=gen)[:2]
        curvature[ends[0]] = mu
        curvature[ends[1]] = L
        curvature = curvature.reshape(m, n)
    if W_star is None:
        W_star = torch.randn(m, n, generator=streams["init"], dtype=torch.float64)
        W_star = W_star.to(dtype=dtype, device=device)
    else:
        W_star = matrix_arg("W_star", W_star, m, n, dtype, device)
    W0 = matrix_arg("W0", W0, m, n, dtype, device)
    return DiagonalQuadratic(
        m=m,
        n=n,
        W0=W0,
        W_star=W_star,
        curvature=curvature.to(dtype=dtype, device=device),
        offset=0.0,
        L=L,
        mu=mu,
        f_star=0.0,
        name="quadratic",
    )


# -- helpers shared by the problem modules -----------------------------------------------------


def _check_exact_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}")


def matrix_arg(name, value, m, n, dtype, device) -> torch.Tensor:
    """Shared by the problem modules: a user-supplied m×n matrix as a tensor of ``dtype`` on ``device`` (zeros when None)."""
    if value is None:
        return torch.zeros(m, n, dtype=dtype, device=device)
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be an ({m}, {n}) array or tensor, got {value!r}") from err
    _check_exact_shape(name, tensor, (m, n))
    tensor = tensor.to(dtype=dtype, device=device)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must have finite entries")
    return tensor


def check_W(W: torch.Tensor, m: int, n: int) -> None:
    """Shared by the problem modules: ``W`` is a tensor of shape (..., m, n), else ``ValueError``."""
    if not isinstance(W, torch.Tensor):
        raise ValueError(f"W must be a torch.Tensor of shape (..., {m}, {n}), got {type(W)}")
    if W.dim() < 2:
        raise ValueError(f"W must have shape (..., {m}, {n}), got {tuple(W.shape)}")
    check_shape("W", W, (m, n))
