"""Exercises of notebook 02 (registered on import; see lorakit.exercises)."""

from . import exercise  # noqa: F401
