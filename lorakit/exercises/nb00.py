"""Exercises of notebook 00 (registered on import; see lorakit.exercises)."""

from . import exercise  # noqa: F401
