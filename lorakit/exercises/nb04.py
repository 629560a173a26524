"""Exercises of notebook 04 (registered on import; see lorakit.exercises)."""

from . import exercise  # noqa: F401
