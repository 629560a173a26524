"""Per-site iterates: the one iterate type every engine works on (README "Architecture").

A problem's weights are a *tree* of per-site matrices, as optax's parameters are a pytree: a bare
tensor for a one-site problem (a :class:`~lorakit.problems.base.MatrixProblem`), a
:class:`PerSite` tuple for an N-site one (a peft model). An update rule reads as in the paper
(``W - gamma * G``) on both; a per-site operation (a projection, an SVD) goes through
:func:`tree_map`. A leaf may carry leading batch dimensions (many clients at once).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from functools import partialmethod

import torch

__all__ = ["PerSite", "finite", "leaves", "sq_norm", "tree_like", "tree_map"]


class PerSite:
    """One matrix per LoRA site with entrywise arithmetic (+, −, scalar ×, ÷; ``0 + x`` for
    ``sum``), so a rule written for one matrix applies to a model's per-site weights unchanged."""

    __slots__ = ("mats",)

    def __init__(self, mats: Iterable[torch.Tensor]):
        self.mats = tuple(mats)

    def __iter__(self):
        return iter(self.mats)

    def __len__(self) -> int:
        return len(self.mats)

    def __getitem__(self, j: int) -> torch.Tensor:
        return self.mats[j]

    def __repr__(self) -> str:
        return f"PerSite({[tuple(x.shape) for x in self.mats]})"

    def _pair(self, other, op):
        if not isinstance(other, PerSite):
            return NotImplemented
        return PerSite(op(a, b) for a, b in zip(self.mats, other.mats, strict=True))

    def _scalar(self, c, op):
        if not isinstance(c, (int, float)):
            return NotImplemented
        return PerSite(op(a, c) for a in self.mats)

    __add__ = partialmethod(_pair, op=operator.add)
    __sub__ = partialmethod(_pair, op=operator.sub)
    __mul__ = __rmul__ = partialmethod(_scalar, op=operator.mul)
    __truediv__ = partialmethod(_scalar, op=operator.truediv)

    def __radd__(self, other):
        return self if isinstance(other, int) and other == 0 else NotImplemented

    def __neg__(self):
        return PerSite(-a for a in self.mats)


def leaves(tree) -> list[torch.Tensor]:
    """The per-site matrices of ``tree`` in site order (one for a bare tensor)."""
    return [tree] if isinstance(tree, torch.Tensor) else list(tree)


def tree_like(like, mats: Iterable[torch.Tensor]):
    """A tree of ``like``'s structure holding ``mats`` (a bare tensor when ``like`` is one)."""
    if isinstance(like, torch.Tensor):
        (only,) = mats
        return only
    return PerSite(mats)


def tree_map(fn: Callable, tree, *rest):
    """``fn`` applied site by site to ``tree`` and the trees ``rest`` of the same structure."""
    if isinstance(tree, torch.Tensor):
        return fn(tree, *rest)
    return PerSite(fn(*args) for args in zip(tree, *rest, strict=True))


def sq_norm(tree) -> float:
    """Σ_l ‖X_l‖²_F: the squared norm of the whole tree as one vector."""
    return sum(float(x.square().sum()) for x in leaves(tree))


def finite(tree) -> bool:
    """True when every entry of every site is free of NaN and infinity."""
    return all(bool(torch.isfinite(x).all()) for x in leaves(tree))
