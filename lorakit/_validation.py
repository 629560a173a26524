"""Argument checks shared by every public entry point.

Each check raises ``ValueError`` naming the argument, its allowed range and the value received, so
that a bad notebook slider or a typo fails at once with a message a user can act on.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

__all__ = ["check_choice", "check_int", "check_real", "check_shape"]


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int after checking ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be in [{_fmt(low)}, {_fmt(high)}], got {value}")
    return value


def check_real(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite float after checking it lies in the stated interval."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        interval = f"{'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value:g}")
    return value


def check_choice(name: str, value, choices) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def check_shape(name: str, tensor, shape: tuple[int, ...]) -> None:
    """Check the trailing dimensions of ``tensor`` against ``shape``."""
    got = tuple(tensor.shape[-len(shape) :]) if tensor.dim() >= len(shape) else tuple(tensor.shape)
    if got != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}")


def _fmt(bound) -> str:
    if bound is None:
        return "inf"
    return f"{bound:g}" if isinstance(bound, float) else str(bound)
