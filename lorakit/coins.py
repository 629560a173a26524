"""Which factor a chain link trains (README "Architecture", principle 1: the *coin*).

``left``  – a fresh B_S is frozen and A is trained (RAC-LoRA Option 1, Definition 4.1);
``right`` – a fresh A_S is frozen and B is trained (Option 2, Definition 4.2);
``both``  – both factors are trained from the LoRA initialisation (LoRA, COLA).

Bernoulli-LoRA flips c^t ~ Be(p) per link and trains A (left sketch) when c^t = 1 (Algorithm 1).
The deterministic coins draw nothing, so RAC-LoRA and Bernoulli-LoRA with p ∈ {0, 1} consume the
other streams identically and give identical trajectories.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._validation import check_choice, check_real
from .rng import Streams

__all__ = ["Coin", "alternating", "always", "bernoulli", "both"]

SIDES = ("left", "right", "both")


@dataclass(frozen=True)
class Coin:
    """``flip(link, streams)`` returns the side trained in chain link ``link``."""

    kind: str
    p: float = math.nan
    first: str = "left"

    def flip(self, link: int, streams: Streams) -> str:
        if self.kind == "bernoulli":
            return "left" if streams.uniform("coin") < self.p else "right"
        if self.kind == "alternating":
            other = "right" if self.first == "left" else "left"
            return self.first if link % 2 == 0 else other
        return self.first  # always / both

    @property
    def prob_left(self) -> float:
        """P(train A | a link), the p of λ^p; NaN for ``both`` and ``alternating``."""
        if self.kind == "bernoulli":
            return self.p
        if self.kind == "always":
            return 1.0 if self.first == "left" else 0.0
        return math.nan

    def __str__(self) -> str:
        if self.kind == "bernoulli":
            return f"bernoulli(p={self.p:g})"
        return f"{self.kind}({self.first})" if self.kind != "both" else "both"


def bernoulli(p: float) -> Coin:
    """c^t ~ Be(p): train A (left sketch) with probability p (Bernoulli-LoRA Algorithm 1)."""
    return Coin("bernoulli", check_real("p", p, low=0.0, high=1.0))


def always(side: str) -> Coin:
    """Always the same side: RAC-LoRA with the option fixed a priori (Algorithm 1)."""
    return Coin("always", first=check_choice("side", side, ("left", "right")))


def alternating(first: str = "left") -> Coin:
    """Left and right links in turn, starting with ``first``."""
    return Coin("alternating", first=check_choice("first", first, ("left", "right")))


def both() -> Coin:
    """Train both factors (LoRA, COLA)."""
    return Coin("both", first="both")
