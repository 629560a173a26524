"""The exercise registry: :class:`Exercise`, :func:`exercise` (register one), :data:`EXERCISES`,
:func:`check` and :func:`table` (the package docstring of :mod:`lorakit.exercises` explains the
conventions). The per-notebook modules ``nb00`` … ``nb07`` register here; :mod:`lorakit.exercises`
imports them all and re-exports this module's names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp

from .._validation import check_choice, check_real

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

#: The kinds of exercise (issue 12 §2): predict then run; compute a constant by hand; change a
#: configuration to reach a goal; find what a printed bound gets wrong; an open question.
KINDS = ("predict", "compute", "configure", "erratum", "open")
COMPARISONS = ("numeric", "symbolic", "exact")
#: The kinds that suit homework (worked alone, checked automatically); "predict" suits the class,
#: where the prediction is said aloud before the run, and "open" a discussion.
HOMEWORK = ("compute", "configure", "erratum")


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``key`` ("NN.k": notebook NN, exercise k), its kind, and how it is checked.

    ``reference`` computes the answer with lorakit when :func:`check` runs. ``compare`` is
    ``numeric`` (|a − ref| ≤ atol + rtol·|ref|, element-wise for sequences), ``symbolic`` (sympy:
    ``simplify(a − ref) == 0``; strings are parsed with ``sympy.sympify``) or ``exact`` (equality,
    case-insensitive for strings). ``accept`` overrides the comparison for goals with many correct
    answers (e.g. "a γL at which the run still converges"): it gets the answer and the reference
    and returns True/False. ``hint`` is shown after a wrong answer.
    """

    key: str
    title: str
    kind: str
    reference: Callable[[], object] | None = None
    compare: str = "numeric"
    rtol: float = 1e-6
    atol: float = 0.0
    hint: str = ""
    accept: Callable[[object, object], bool] | None = field(default=None, repr=False)

    def __post_init__(self):
        if not (isinstance(self.key, str) and re.fullmatch(r"\d\d\.\d+", self.key)):
            raise ValueError(
                f"key must look like 'NN.k' (notebook NN, exercise k), got {self.key!r}"
            )
        check_choice("kind", self.kind, KINDS)
        check_choice("compare", self.compare, COMPARISONS)
        check_real("rtol", self.rtol, low=0.0)
        check_real("atol", self.atol, low=0.0)
        if (self.kind == "open") != (self.reference is None and self.accept is None):
            raise ValueError(f"exercise {self.key}: open questions, and only they, have no answer")

    def correct(self, answer) -> bool:
        reference = self.reference() if self.reference is not None else None
        if self.accept is not None:
            return bool(self.accept(answer, reference))
        return _COMPARE[self.compare](answer, reference, self)


@dataclass(frozen=True)
class Result:
    """What :func:`check` returns: truthy when correct; shows a one-line verdict in a notebook."""

    key: str
    correct: bool | None  # None: an open question
    message: str

    def __bool__(self) -> bool:
        return bool(self.correct)

    def __repr__(self) -> str:
        return self.message

    def _repr_markdown_(self) -> str:
        return self.message


#: Every registered exercise, by key (filled by the ``nbNN`` modules).
EXERCISES: dict[str, Exercise] = {}


def exercise(key: str, title: str, kind: str, **kw) -> Exercise:
    """Register an exercise (called by the ``nbNN`` modules at import)."""
    if key in EXERCISES:
        raise ValueError(f"exercise {key} is registered twice")
    EXERCISES[key] = ex = Exercise(key, title, kind, **kw)
    return ex


def check(key: str, answer) -> Result:
    """Check ``answer`` to exercise ``key``: a :class:`Result` (✓ or ✗ with a hint)."""
    check_choice("key", key, sorted(EXERCISES))
    ex = EXERCISES[key]
    if ex.kind == "open":
        return Result(
            key, None, f"**{key}** is an open question for discussion: no automatic check."
        )
    if answer is None or answer is Ellipsis:
        return Result(key, False, f"✗ **{key}**: no answer yet (set `answer`).")
    try:
        ok = ex.correct(answer)
    except (TypeError, ValueError, sp.SympifyError) as error:
        return Result(key, False, f"✗ **{key}**: could not read the answer ({error}). {ex.hint}")
    if ok:
        return Result(key, True, f"✓ **{key}** correct.")
    return Result(key, False, f"✗ **{key}** not yet. Hint: {ex.hint}")


def table():
    """Every registered exercise as a ``pandas.DataFrame`` (key, notebook, kind, title, how it is
    checked, whether it suits homework: :data:`HOMEWORK`), in key order: the course guide's list."""
    import pandas as pd

    rows = [
        {
            "key": ex.key,
            "notebook": ex.key[:2],
            "kind": ex.kind,
            "title": ex.title,
            "checked": "no (discussion)" if ex.kind == "open" else ex.compare,
            "homework": ex.kind in HOMEWORK,
        }
        for ex in sorted(EXERCISES.values(), key=lambda e: (e.key[:2], int(e.key[3:])))
    ]
    columns = ["key", "notebook", "kind", "title", "checked", "homework"]
    return pd.DataFrame(rows, columns=columns)


def _numeric(answer, reference, ex: Exercise) -> bool:
    import numpy as np

    a = np.asarray(answer, dtype=float)
    r = np.asarray(reference, dtype=float)
    if a.shape != r.shape:
        raise ValueError(f"expected shape {r.shape}, got {a.shape}")
    return bool(np.all(np.abs(a - r) <= ex.atol + ex.rtol * np.abs(r)))


def _symbolic(answer, reference, ex: Exercise) -> bool:
    a = sp.sympify(answer) if isinstance(answer, str) else answer
    diff = sp.simplify(sp.sympify(a) - sp.sympify(reference))
    return diff == 0


def _exact(answer, reference, ex: Exercise) -> bool:
    norm = (lambda v: v.strip().lower()) if isinstance(reference, str) else (lambda v: v)
    if isinstance(reference, str) and not isinstance(answer, str):
        return False
    if isinstance(reference, float) and isinstance(answer, float):
        return math.isclose(answer, reference, rel_tol=0.0, abs_tol=0.0)
    return norm(answer) == norm(reference)


_COMPARE = {"numeric": _numeric, "symbolic": _symbolic, "exact": _exact}
