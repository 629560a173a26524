"""Exercises of notebook 03 (registered on import; see lorakit.exercises)."""

from . import exercise  # noqa: F401
