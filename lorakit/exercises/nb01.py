"""Exercises of notebook 01 (registered on import; see lorakit.exercises)."""

from . import exercise  # noqa: F401
