"""Exercises of notebook 07 (registered on import; see lorakit.exercises)."""

from . import exercise  # noqa: F401
