"""Exercises of notebook 06 (registered on import; see lorakit.exercises)."""

from . import exercise  # noqa: F401
