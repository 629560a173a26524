"""Exercises with automatic checks: ``lk.exercises.check("03.2", answer)``.

Each notebook ends with 4–6 exercises. Every checkable one is an :class:`Exercise` registered here
(one module per notebook, ``nb00`` … ``nb07``): its reference answer is a function that computes
the answer *with lorakit at check time* (never a literal stored in the notebook), compared with the
student's answer numerically (``rtol``/``atol``, for measured values), symbolically (sympy: any
equivalent expression passes) or exactly (a choice among names). A wrong answer gets a hint that
does not give the answer away. Open discussion questions are registered too (``kind="open"``), so
every exercise has a key, but :func:`check` only says they are for discussion.

Notebook convention (nbgrader-compatible; ``make student`` removes the solutions)::

    # Exercise 03.2 — one self-contained code cell: it imports what it uses and does not rely on
    # variables of earlier cells, so it can be checked on its own.
    import lorakit as lk
    ### BEGIN SOLUTION
    answer = ...               # the instructor's solution
    ### END SOLUTION
    lk.exercises.check("03.2", answer)

The student version replaces each ``### BEGIN SOLUTION`` … ``### END SOLUTION`` block by
``# YOUR CODE HERE`` and ``raise NotImplementedError()``, nbgrader's stub.
"""

from __future__ import annotations

# The notebooks' exercises register themselves in lorakit.exercises.registry.
from . import nb00, nb01, nb02, nb03, nb04, nb05, nb06, nb07  # noqa: F401
from .registry import (
    COMPARISONS,
    EXERCISES,
    HOMEWORK,
    KINDS,
    Exercise,
    Result,
    check,
    exercise,
    table,
)

__all__ = [
    "COMPARISONS",
    "EXERCISES",
    "HOMEWORK",
    "KINDS",
    "Exercise",
    "Result",
    "check",
    "exercise",
    "table",
]
