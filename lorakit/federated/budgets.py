"""Heterogeneous client budgets: how many rank-1 components k_i ≤ r each client trains.

FSLoRA draws a sketching ratio k_i/r per device (spec fslora.md §3: the paper's mix
{0.125, 0.25, 0.5, 0.75}; §11: the authors' later code draws k_i from uniform, normal and
heavy-tail-low distributions on [4, r]). A budget is drawn once per client at the start of a run
from the ``budget`` stream, so the same seed gives the same devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import torch

from .._validation import ArgumentTypeError, check_int, check_real

__all__ = [
    "Budget",
    "describe",
    "fixed",
    "heavy_tail",
    "mix",
    "normal",
    "resolve_budgets",
    "uniform",
]


@dataclass(frozen=True)
class Budget:
    """A distribution of k_i over {low, …, r}; ``sample(N, r, generator)`` → (N,) long tensor."""

    kind: str
    values: tuple = ()
    low: int | None = None
    high: int | None = None
    loc: float | None = None
    scale: float | None = None

    def sample(self, N: int, r: int, generator: torch.Generator) -> torch.Tensor:
        low = max(1, self.low or 1)
        high = min(r, self.high or r)
        if low > high:
            raise ValueError(f"budget range [{low}, {high}] is empty for rank r={r}")
        if self.kind == "fixed":
            k = torch.full((N,), int(self.values[0]))
        elif self.kind == "mix":
            ratios = torch.tensor(self.values, dtype=torch.float64)
            pick = torch.randint(len(self.values), (N,), generator=generator)
            k = torch.round(ratios[pick] * r).long()
        elif self.kind == "uniform":
            k = torch.randint(low, high + 1, (N,), generator=generator)
        elif self.kind == "normal":
            loc = self.loc if self.loc is not None else (low + high) / 2
            scale = self.scale if self.scale is not None else (high - low) / 4
            k = torch.round(loc + scale * torch.randn(N, generator=generator, dtype=torch.float64))
        else:  # heavy_tail: most clients near `low`, a few large (a Pareto tail, index `scale`)
            u = torch.rand(N, generator=generator, dtype=torch.float64)
            k = torch.floor(low * u.pow(-1.0 / (self.scale or 1.5)))
        k = k.long().clamp(low, high)
        if int(k.min()) < 1 or int(k.max()) > r:
            raise ValueError(
                f"budgets k_i must be in [1, {r}], got [{int(k.min())}, {int(k.max())}]"
            )
        return k

    def __str__(self) -> str:
        return self.kind if not self.values else f"{self.kind}{self.values}"


def fixed(k: int) -> Budget:
    """Every client trains k components (k = r: FedIT)."""
    return Budget("fixed", (check_int("k", k, low=1),))


def mix(ratios=(0.125, 0.25, 0.5, 0.75)) -> Budget:
    """Ratios k_i/r drawn uniformly from ``ratios`` (the FSLoRA paper's heterogeneous setting)."""
    ratios = tuple(check_real("ratio", v, low=0.0, high=1.0, low_open=True) for v in ratios)
    if not ratios:
        raise ValueError("ratios must be a non-empty sequence in (0, 1]")
    return Budget("mix", ratios)


def uniform(low: int = 1, high: int | None = None) -> Budget:
    """k_i uniform on {low, …, high} (high defaults to r)."""
    return Budget("uniform", low=check_int("low", low, low=1), high=high)


def normal(loc: float | None = None, scale: float | None = None, low: int = 1) -> Budget:
    """k_i ≈ N(loc, scale²), rounded and clipped to [low, r]."""
    return Budget("normal", low=check_int("low", low, low=1), loc=loc, scale=scale)


def heavy_tail(low: int = 1, index: float = 1.5) -> Budget:
    """k_i = ⌊low·U^(−1/index)⌋ clipped to r: most clients at the low end, a few large."""
    return Budget(
        "heavy_tail",
        low=check_int("low", low, low=1),
        scale=check_real("index", index, low=0.0, low_open=True),
    )


def resolve_budgets(budgets, N: int, r: int, generator: torch.Generator) -> torch.Tensor:
    """Per-client k_i as an (N,) long tensor from an int, a sequence of ints or a :class:`Budget`
    (a fractional k_i is refused rather than truncated)."""
    if isinstance(budgets, Budget):
        return budgets.sample(N, r, generator)
    if isinstance(budgets, Integral) and not isinstance(budgets, bool):
        budgets = [budgets] * N
    elif isinstance(budgets, str | bytes) or not hasattr(budgets, "__iter__"):
        raise ArgumentTypeError(
            "budgets must be an int k, one int k_i per client or a lorakit.federated.budgets "
            f"distribution, got {budgets!r}"
        )
    # Each k_i is an integer: a fractional budget is refused, never truncated.
    values = budgets.tolist() if hasattr(budgets, "tolist") else list(budgets)
    k = torch.tensor(
        [check_int(f"budgets[{i}]", v) for i, v in enumerate(values)], dtype=torch.long
    )
    if k.numel() != N:
        raise ValueError(f"budgets must give one k_i per client ({N}), got {k.numel()}")
    if int(k.min()) < 1 or int(k.max()) > r:
        raise ValueError(
            f"budgets k_i must be in [1, {r}] (the rank r), got [{int(k.min())}, {int(k.max())}]"
        )
    return k


def describe(k: torch.Tensor, r: int) -> dict:
    """ρ_1 = mean r/k_i and ρ_2 = mean (r/k_i)² (FSLoRA Theorem 4.4)."""
    ratio = r / k.double()
    return {
        "rho1": float(ratio.mean()),
        "rho2": float((ratio**2).mean()),
        "mean_ratio": float((k.double() / r).mean()),
    }
