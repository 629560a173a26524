"""Argument checks shared by every public entry point.

Each check raises ``ValueError`` naming the argument, its allowed range and the value received, so
that a bad notebook slider or a typo fails at once with a message a user can act on. A value of the
wrong *type* raises :class:`ArgumentTypeError`, which is both a ``TypeError`` and a ``ValueError``
(as numpy's ``AxisError`` is both an ``IndexError`` and a ``ValueError``), so either ``except``
catches it.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

__all__ = [
    "ArgumentTypeError",
    "check_byte_size",
    "check_choice",
    "check_device",
    "check_device_match",
    "check_disjoint",
    "check_dtype",
    "check_flag",
    "check_generator",
    "check_int",
    "check_problem",
    "check_real",
    "check_seeds",
    "check_shape",
]

#: The floating dtypes lorakit computes in (CPU linear algebra — eigh, svd, qr — has no
#: float16/bfloat16 kernels, and half precision cannot hold the theory checks' tolerances).
DTYPES = ("torch.float32", "torch.float64")


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a ``TypeError`` that ``except ValueError`` also catches)."""


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int after checking ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ArgumentTypeError(f"{name} must be an integer, got {value!r}")
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
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArgumentTypeError(f"{name} must be a finite real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        interval = f"{'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value:g}")
    return value


def check_flag(name: str, value) -> bool:
    """``value`` if it is True or False (a ValueError naming ``name`` otherwise)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
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


def check_byte_size(name: str, value) -> int:
    """A message size in bytes per value (``bytes_per_float``, ``bytes_per_index``, ...): an int ≥ 1."""
    return check_int(name, value, low=1)


def check_seeds(seeds, name: str = "seeds") -> list[int]:
    """``seeds`` as a non-empty list of non-negative ints: one int (numpy integers included) or a
    sequence of them. Bools, floats (even integral ones), strings and None are refused."""
    if isinstance(seeds, Integral) and not isinstance(seeds, bool):
        return [check_int(name, seeds, low=0)]
    if seeds is None or isinstance(seeds, str | bytes | bool | Real) or not _iterable(seeds):
        raise ArgumentTypeError(
            f"{name} must be a non-negative int or a non-empty sequence of them, got {seeds!r}"
        )
    out = [check_int(f"{name}[{i}]", s, low=0) for i, s in enumerate(seeds)]
    if not out:
        raise ValueError(
            f"{name} must be a non-negative int or a non-empty sequence of them, got []"
        )
    return out


def check_problem(problem, kinds, expected: str, name: str = "problem"):
    """Check ``isinstance(problem, kinds)``; ``expected`` says what is accepted, e.g. "a
    FederatedProblem or a lorakit.adapters.ModelProblem with clients"."""
    if not isinstance(problem, kinds):
        raise ArgumentTypeError(f"{name} must be {expected}, got {type(problem).__name__}")
    return problem


def check_dtype(name: str, dtype, allowed: tuple[str, ...] = DTYPES):
    """A torch floating dtype among ``allowed`` (default float32, float64; module docstring)."""
    import torch

    if not isinstance(dtype, torch.dtype):
        raise ArgumentTypeError(f"{name} must be a torch.dtype in {list(allowed)}, got {dtype!r}")
    if str(dtype) not in allowed:
        why = (
            ": CPU linear algebra (eigh, svd, qr) has no half-precision kernels"
            if dtype in (torch.float16, torch.bfloat16)
            else ""
        )
        raise ValueError(f"{name} must be one of {list(allowed)}, got {dtype}{why}")
    return dtype


def check_generator(name: str, generator):
    """``None`` or a CPU ``torch.Generator`` (the draws of lorakit are made on the CPU)."""
    import torch

    if generator is not None and not isinstance(generator, torch.Generator):
        raise ArgumentTypeError(
            f"{name} must be a torch.Generator or None, got {type(generator).__name__} "
            "(seed one with torch.Generator().manual_seed(seed))"
        )
    return generator


def check_device(name: str, device):
    """A ``torch.device`` for ``device`` (a string or a device); the meta device is refused."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"{name} must be a torch device such as 'cpu' or 'cuda', got {device!r}"
        ) from err
    if dev.type == "meta":
        raise ValueError(f"{name} must hold data: a meta device ({name}={device!r}) has none")
    return dev


def check_device_match(device, **tensors) -> None:
    """Every tensor in ``tensors`` (name → tensor, None skipped) lives on ``device``."""
    import torch

    device = torch.device(device)
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if tensor.device.type == "meta":
            raise ValueError(f"{name} is on the meta device (no data); lorakit needs real values")
        if tensor.device != device and not (
            tensor.device.type == device.type and device.index is None
        ):
            raise ValueError(f"{name} is on {tensor.device} but must be on {device}, like the rest")


def check_disjoint(name: str, index_sets) -> None:
    """No index appears in two of ``index_sets`` (client data must not overlap)."""
    import torch

    sets = [torch.as_tensor(idx).flatten().long() for idx in index_sets]
    every = torch.cat(sets) if sets else torch.zeros(0, dtype=torch.long)
    if every.numel() == 0:
        return
    low = int(every.min())
    repeated = (torch.bincount(every - low) > 1).nonzero()
    if repeated.numel():
        i = int(repeated[0]) + low
        holders = [l for l, s in enumerate(sets) if bool((s == i).any())]
        where = (
            f"{name}[{holders[0]}] holds it twice"
            if len(holders) == 1
            else f"it is held by {name}[{holders[0]}] and {name}[{holders[1]}]"
        )
        raise ValueError(f"{name} must be disjoint: index {i} appears twice ({where})")


def _iterable(value) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _fmt(bound) -> str:
    if bound is None:
        return "inf"
    return f"{bound:g}" if isinstance(bound, float) else str(bound)
