"""Message compressors: what a client's upload loses (Bernoulli-LoRA Defs. 2–3, §3 "Compressors").

A compressor maps a message x ∈ R^d (any tensor, flattened; d = its number of entries) to a
message of the same shape. Two classes matter to the theory:

* **unbiased** (Def. 2, eq. (123)): E Q(x) = x and E‖Q(x) − x‖² ≤ ω‖x‖², used by
  Fed-Bernoulli-LoRA-QGD (Alg. 7) and -MARINA (Alg. 8);
* **contractive** (Def. 3, eq. (135)): E‖C(x) − x‖² ≤ (1 − β)‖x‖², 0 < β ≤ 1, used by
  Fed-Bernoulli-LoRA-EF21 (Alg. 9).

If Q is unbiased with ω, then Q/(ω + 1) is contractive with β = 1/(ω + 1); ``scaled_rand_k`` is
that operator for rand-k. The paper names no concrete compressor; the standard instances below
(d = number of entries) are those of the spec's note under Defs. 2–3:

==================  ===========  ===================================  ==========================
constructor         class        constant                             payload (floats, indices)
==================  ===========  ===================================  ==========================
``identity()``      both         ω = 0, β = 1                         (d, 0)
``rand_k(k)``       unbiased     ω = d/k − 1 (equality)               (k, k)
``scaled_rand_k(k)``contractive  β = k/d (equality)                   (k, k)
``top_k(k)``        contractive  β = k/d                              (k, k)
``natural()``       unbiased     ω = 1/8                              (d, 0), 9 bits each
``qsgd(s)``         unbiased     ω = min(d/s², √d/s)                  (1, d): ‖x‖ and signed levels
==================  ===========  ===================================  ==========================

Calling convention: ``C(X, generator, batch_dims=0)``. The first ``batch_dims`` dimensions of X
index independent messages (for example ``batch_dims=1`` on the (M, m, n) stack of client
gradients compresses each client's message with its own randomness, in one tensor operation); the
remaining dimensions form one message of d entries. Every random draw comes from ``generator`` (a
CPU ``torch.Generator``, e.g. ``streams["compression"]``), is made in float64 on the CPU and moved to
X's device, so draws do not depend on the device. Compressing a stack with ``batch_dims=1``
consumes the generator differently from compressing its messages one by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ._validation import check_int

__all__ = [
    "COMPRESSORS",
    "Compressor",
    "Payload",
    "identity",
    "make_compressor",
    "natural",
    "qsgd",
    "rand_k",
    "scaled_rand_k",
    "top_k",
]


class Payload(NamedTuple):
    """What one compressed message of d entries puts on the wire."""

    floats: int  # real numbers sent
    indices: int  # integers sent (coordinate indices, or QSGD's signed levels)


class Compressor:
    """Interface: ``__call__(X, generator, batch_dims=0)``, ``omega(d)``, ``beta(d)``, ``payload(d)``.

    ``unbiased``/``contractive`` say which of Defs. 2/3 the operator satisfies; ``omega`` is
    defined for unbiased compressors and ``beta`` for contractive ones (a ValueError otherwise).
    """

    name: str = "compressor"
    unbiased: bool = False
    contractive: bool = False

    # -- interface -----------------------------------------------------------------------------
    def __call__(
        self, X: torch.Tensor, generator: torch.Generator | None = None, batch_dims: int = 0
    ) -> torch.Tensor:
        if not isinstance(X, torch.Tensor):
            raise ValueError(f"X must be a torch.Tensor, got {type(X)}")
        batch_dims = check_int("batch_dims", batch_dims, low=0, high=X.dim())
        batch = X.shape[:batch_dims]
        d = math.prod(X.shape[batch_dims:])
        self._check_d(d)
        flat = X.reshape(math.prod(batch), d)
        return self._compress(flat, d, generator).reshape(X.shape)

    def omega(self, d: int) -> float:
        """ω of Def. 2: E‖Q(x) − x‖² ≤ ω‖x‖² for every x ∈ R^d."""
        raise ValueError(
            f"{self} is not an unbiased compressor (Def. 2), so it has no omega; "
            "use its beta (Def. 3)"
        )

    def beta(self, d: int) -> float:
        """β of Def. 3: E‖C(x) − x‖² ≤ (1 − β)‖x‖² for every x ∈ R^d."""
        raise ValueError(
            f"{self} is not a contractive compressor (Def. 3), so it has no beta; "
            "Q/(omega + 1) is contractive with beta = 1/(omega + 1)"
        )

    def payload(self, d: int) -> Payload:
        """(floats, integer indices) sent for one message of d entries."""
        raise NotImplementedError  # pragma: no cover - interface

    # -- helpers -------------------------------------------------------------------------------
    @property
    def is_identity(self) -> bool:
        return False

    def _check_d(self, d: int) -> int:
        return check_int("d", d, low=1)

    def _compress(self, x: torch.Tensor, d: int, gen) -> torch.Tensor:
        """Compress the rows of x (B, d)."""
        raise NotImplementedError  # pragma: no cover - interface


def _uniform(shape, gen, device) -> torch.Tensor:
    """U[0, 1) draws in float64 on the CPU from ``gen``, moved to ``device``."""
    return torch.rand(shape, generator=gen, dtype=torch.float64).to(device)


def _random_mask(x: torch.Tensor, k: int, gen) -> torch.Tensor:
    """A boolean mask with k uniformly random True entries per row of x (B, d)."""
    keys = _uniform(x.shape, gen, x.device)
    idx = torch.topk(keys, k, dim=-1, sorted=False).indices
    return torch.zeros(x.shape, dtype=torch.bool, device=x.device).scatter_(-1, idx, True)


# --------------------------------------------------------------------------------------------
# The compressors
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity(Compressor):
    """Q(x) = x: ω = 0 and β = 1 (no compression; the federated methods become GD)."""

    name = "identity"
    unbiased = True
    contractive = True

    @property
    def is_identity(self) -> bool:
        return True

    def __call__(self, X, generator=None, batch_dims=0):
        if not isinstance(X, torch.Tensor):
            raise ValueError(f"X must be a torch.Tensor, got {type(X)}")
        check_int("batch_dims", batch_dims, low=0, high=X.dim())
        return X

    def omega(self, d):
        self._check_d(d)
        return 0.0

    def beta(self, d):
        self._check_d(d)
        return 1.0

    def payload(self, d):
        return Payload(self._check_d(d), 0)

    def __str__(self):
        return "identity"


@dataclass(frozen=True)
class _KSparse(Compressor):
    k: int

    def __post_init__(self):
        object.__setattr__(self, "k", check_int("k", self.k, low=1))

    def _check_d(self, d):
        d = check_int("d", d, low=1)
        check_int("k", self.k, low=1, high=d)
        return d

    def payload(self, d):
        self._check_d(d)
        return Payload(self.k, self.k)

    def __str__(self):
        return f"{self.name}(k={self.k})"


@dataclass(frozen=True)
class RandK(_KSparse):
    """Rand-k: keep k uniformly random entries, scaled by d/k. Unbiased, ω = d/k − 1 (equality)."""

    name = "rand_k"
    unbiased = True

    def omega(self, d):
        d = self._check_d(d)
        return d / self.k - 1.0

    def _compress(self, x, d, gen):
        return torch.where(_random_mask(x, self.k, gen), x * (d / self.k), 0.0)


@dataclass(frozen=True)
class ScaledRandK(_KSparse):
    """Rand-k without the d/k scale, i.e. Q/(ω + 1) for Q = rand-k: contractive, β = k/d.

    E‖C(x) − x‖² = (1 − k/d)‖x‖² exactly (each entry is dropped with probability 1 − k/d).
    """

    name = "scaled_rand_k"
    contractive = True

    def beta(self, d):
        d = self._check_d(d)
        return self.k / d

    def _compress(self, x, d, gen):
        return torch.where(_random_mask(x, self.k, gen), x, 0.0)


@dataclass(frozen=True)
class TopK(_KSparse):
    """Top-k: keep the k entries of largest magnitude (deterministic). Contractive, β = k/d.

    ‖C(x) − x‖² is the mass of the d − k smallest entries, at most (1 − k/d)‖x‖². Ties are broken
    by ``torch.topk``. The generator is not used.
    """

    name = "top_k"
    contractive = True

    def beta(self, d):
        d = self._check_d(d)
        return self.k / d

    def _compress(self, x, d, gen):
        idx = torch.topk(x.abs(), self.k, dim=-1, sorted=False).indices
        mask = torch.zeros(x.shape, dtype=torch.bool, device=x.device).scatter_(-1, idx, True)
        return torch.where(mask, x, 0.0)


@dataclass(frozen=True)
class Natural(Compressor):
    """Natural compression (Horváth et al. 2019): unbiased stochastic rounding of |x_i| to one of
    the two nearest powers of two, 2^a ≤ |x_i| < 2^{a+1}, rounding up with probability
    (|x_i| − 2^a)/2^a. Unbiased, ω = 1/8; zeros stay zero. Each entry is then a sign and an
    exponent (9 bits in float32), counted here as one float.
    """

    name = "natural"
    unbiased = True

    def omega(self, d):
        self._check_d(d)
        return 1.0 / 8.0

    def payload(self, d):
        return Payload(self._check_d(d), 0)

    def _compress(self, x, d, gen):
        mantissa, exponent = torch.frexp(x.abs())  # |x| = mantissa·2^exponent, mantissa ∈ [½, 1)
        low = torch.ldexp(torch.ones_like(mantissa), exponent - 1)  # 2^a ≤ |x| < 2^{a+1}
        p_up = (2.0 * mantissa - 1.0).to(torch.float64)  # exact: (|x| − 2^a)/2^a
        up = _uniform(x.shape, gen, x.device) < p_up
        return torch.sign(x) * torch.where(up, 2.0 * low, low)

    def __str__(self):
        return "natural"


@dataclass(frozen=True)
class QSGD(Compressor):
    """QSGD with s levels (Alistarh et al. 2017): Q(x)_i = ‖x‖ sign(x_i) ξ_i / s, where ξ_i is
    ℓ + 1 with probability s|x_i|/‖x‖ − ℓ and ℓ otherwise, ℓ = ⌊s|x_i|/‖x‖⌋. Unbiased with
    ω = min(d/s², √d/s). Sends ‖x‖ and d signed integer levels in [−s, s]; x = 0 maps to 0.
    """

    s: int

    name = "qsgd"
    unbiased = True

    def __post_init__(self):
        object.__setattr__(self, "s", check_int("s", self.s, low=1))

    def omega(self, d):
        d = self._check_d(d)
        return min(d / self.s**2, math.sqrt(d) / self.s)

    def payload(self, d):
        return Payload(1, self._check_d(d))

    def _compress(self, x, d, gen):
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        level = self.s * x.abs() / safe  # in [0, s]
        low = torch.floor(level)
        up = _uniform(x.shape, gen, x.device) < (level - low).to(torch.float64)
        xi = low + up.to(x.dtype)
        return torch.where(norm > 0, norm * torch.sign(x) * xi / self.s, torch.zeros_like(x))

    def __str__(self):
        return f"qsgd(s={self.s})"


# --------------------------------------------------------------------------------------------
# Constructors
# --------------------------------------------------------------------------------------------
def identity() -> Compressor:
    """No compression: ω = 0, β = 1."""
    return Identity()


def rand_k(k: int) -> Compressor:
    """Unbiased rand-k (k random entries scaled by d/k): ω = d/k − 1; k ∈ [1, d] checked per call."""
    return RandK(k)


def scaled_rand_k(k: int) -> Compressor:
    """Contractive rand-k (no rescaling) = rand-k/(ω + 1): β = k/d."""
    return ScaledRandK(k)


def top_k(k: int) -> Compressor:
    """Contractive top-k (k largest magnitudes): β = k/d."""
    return TopK(k)


def natural() -> Compressor:
    """Natural compression (stochastic rounding to powers of two): unbiased, ω = 1/8."""
    return Natural()


def qsgd(s: int) -> Compressor:
    """QSGD with s ≥ 1 levels: unbiased, ω = min(d/s², √d/s)."""
    return QSGD(s)


COMPRESSORS = {
    "identity": identity,
    "rand_k": rand_k,
    "scaled_rand_k": scaled_rand_k,
    "top_k": top_k,
    "natural": natural,
    "qsgd": qsgd,
}


def make_compressor(compressor: Compressor | str, **kwargs) -> Compressor:
    """A :class:`Compressor` from itself or a registered name plus its parameters."""
    if isinstance(compressor, Compressor):
        return compressor
    if compressor not in COMPRESSORS:
        raise ValueError(f"compressor must be one of {sorted(COMPRESSORS)}, got {compressor!r}")
    return COMPRESSORS[compressor](**kwargs)
