"""Fast mode: fewer default steps and seeds, for CI and a quick look (``LORAKIT_FAST=1``).

Below the notebook layer on purpose: the theory scenarios, the exercises and the apps all read it,
and none of them should import :mod:`lorakit.widgets` for it (README "Architecture", principle
10).
"""

from __future__ import annotations

import os

__all__ = ["by_mode", "fast_mode"]


def fast_mode() -> bool:
    """True when the environment variable ``LORAKIT_FAST`` is ``1`` (also true/yes/on): CI mode."""
    return os.environ.get("LORAKIT_FAST", "").strip().lower() in ("1", "true", "yes", "on")


def by_mode(value, normal, fast):
    """``value`` if given, else the mode's default: ``fast`` in fast mode, ``normal`` otherwise."""
    return value if value is not None else (fast if fast_mode() else normal)
