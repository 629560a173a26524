"""Theory as data: the papers' theorems as sympy objects, their constants, and checks.

``THEOREMS`` maps a key such as ``rac_lora.theorem_5.5`` to a :class:`Theorem` with the printed
and corrected forms; :mod:`lorakit.theory.checks` runs each against a measured run.
"""

from . import rac_lora  # noqa: F401  (registers the theorems)
from .theorem import THEOREMS, Form, Theorem, get_theorem

__all__ = ["THEOREMS", "Form", "Theorem", "get_theorem"]
