"""Exercises of notebook 05 (registered on import; see lorakit.exercises)."""

from . import exercise  # noqa: F401
