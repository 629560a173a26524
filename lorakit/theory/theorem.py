"""Theorems as data (README "Architecture", principle 3).

A :class:`Theorem` holds a paper's statement as printed and, where the spec found an error, the
corrected form with a one-line reason. Each form is a bound (a sympy expression in the symbols of
:mod:`lorakit.theory.symbols`) and its step-size conditions (sympy relations). Both evaluate
numerically for given constants, so a check can put a measured run beside either form.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import sympy as sp

from .._validation import check_choice
from .symbols import NAMES, SYMBOLS, domain, gamma

__all__ = ["OUTSIDE", "THEOREMS", "Form", "Theorem", "get_theorem", "register_theorem"]

#: What :meth:`Theorem.bound` does at constants outside the form's conditions.
OUTSIDE = ("raise", "evaluate")


@dataclass(frozen=True)
class Form:
    """One form of a statement: ``lhs ≤ bound`` under every condition in ``conditions``.

    ``bound`` is None when the printed statement cannot be evaluated as written (it is kept in
    ``latex`` for display).
    """

    bound: sp.Expr | None
    conditions: tuple[sp.Rel, ...] = ()
    latex: str = ""

    @property
    def symbols(self) -> set[str]:
        exprs = [self.bound, *self.conditions] if self.bound is not None else [*self.conditions]
        return {NAMES[s] for e in exprs for s in e.free_symbols}


@dataclass(frozen=True)
class Theorem:
    """A theorem of one of the papers, with printed and (where needed) corrected forms.

    Attributes
    ----------
    paper, number : e.g. ``"RAC-LoRA"``, ``"Theorem 5.3"``.
    setting : the method and regime, e.g. ``"GD, non-convex"``.
    lhs : what the bound controls, e.g. ``"E‖∇f(W̃^T)‖², W̃^T uniform over W^0..W^{T-1}"``.
    assumptions : the assumptions the statement lists (and, flagged, those the proof also uses).
    printed : the statement as printed.
    corrected : the corrected statement, or None when the printed one is right.
    erratum : one line saying what is wrong with the printed form and why.
    notes : further remarks (typos elsewhere, unstated conditions) that change no number.
    check : the lorakit call that checks it (shown in the theory cards).
    """

    paper: str
    number: str
    setting: str
    lhs: str
    assumptions: tuple[str, ...]
    printed: Form
    corrected: Form | None = None
    erratum: str | None = None
    notes: tuple[str, ...] = ()
    check: str = ""

    @property
    def key(self) -> str:
        """``paper.number`` in lower case, e.g. ``rac_lora.theorem_5.3``."""
        slug = lambda s: re.sub(r"[^a-z0-9.]+", "_", s.lower()).strip("_")  # noqa: E731
        return f"{slug(self.paper)}.{slug(self.number)}"

    def form(self, which: str = "corrected") -> Form:
        """The corrected form (the printed one where nothing needed correcting), or the printed."""
        if which not in ("printed", "corrected"):
            raise ValueError(f"which must be 'printed' or 'corrected', got {which!r}")
        return self.printed if which == "printed" or self.corrected is None else self.corrected

    @property
    def symbols(self) -> list[str]:
        forms = [self.printed] + ([self.corrected] if self.corrected else [])
        return sorted(set().union(*(f.symbols for f in forms)))

    # -- numbers -------------------------------------------------------------------------------
    # One rule for every theorem. Keywords the theorem does not take raise (listing those it
    # does); a value outside its symbol's domain (γ ≤ 0, T < 0, λ_min > 1, ...: see
    # lorakit.theory.symbols.domain) raises; :meth:`bound` at constants that break a step-size
    # condition of the form raises with the condition and its value (outside="evaluate" opts out).
    def bound(self, which: str = "corrected", *, outside: str = "raise", **values: float) -> float:
        """The bound's value for the given constants (``gamma=…, L=…, T=…``).

        The theorem claims its bound only under its conditions (the form's step-size conditions,
        e.g. γ ≤ 1/L): with ``outside="raise"`` (the default) constants that break one raise
        ``ValueError`` naming the condition and the values (give every constant the conditions
        use); ``outside="evaluate"`` returns the expression's value anyway (e.g. to show the
        printed form beside the corrected one where only the corrected conditions hold). Unknown
        keywords and values outside their domain always raise. NaN when the form cannot be
        evaluated as printed.
        """
        check_choice("outside", outside, OUTSIDE)
        form = self.form(which)
        values = self._checked(values)
        if form.bound is None:
            return math.nan
        value = _evaluate(form.bound, values, f"{self.paper} {self.number}")
        if outside == "raise":
            failed = self._failed(form, values, which, need_all=True)
            if failed:
                raise ValueError(
                    f"{self.paper} {self.number} ({which} form) claims nothing at these "
                    f"constants: {'; '.join(failed)}. Choose constants inside its conditions, or "
                    "pass outside='evaluate' for the expression's value anyway"
                )
        return value

    def step_cap(self, which: str = "corrected", **values: float) -> float:
        """The largest γ allowed by the conditions ``γ ≤ expr`` and ``γ < expr`` (inf if none;
        for a strict condition the supremum: γ must stay below it)."""
        values = self._checked(values)
        caps = [
            c.rhs for c in self.form(which).conditions if c.lhs == gamma and c.rel_op in ("<=", "<")
        ]
        if not caps:
            return math.inf
        return min(
            _evaluate(c, values, f"{self.paper} {self.number}", allow_inf=True) for c in caps
        )

    def admissible(self, which: str = "corrected", **values: float) -> bool:
        """Whether every step-size condition holds for the given constants (``gamma`` included)."""
        values = self._checked(values)
        return not self._failed(self.form(which), values, which, need_all=False)

    def select(self, constants: dict) -> dict:
        """The entries of ``constants`` this theorem takes (a check's constants for one problem
        serve several theorems; each takes its own)."""
        return {k: v for k, v in constants.items() if k in self.symbols}

    def _checked(self, values: dict) -> dict:
        """``values`` after refusing unknown keywords and values outside their domain."""
        valid = self.symbols
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(
                f"{self.paper} {self.number} takes {', '.join(valid)}; got unknown "
                f"{', '.join(unknown)}"
            )
        for name, value in values.items():
            _check_domain(name, value)
        return values

    def _failed(self, form: Form, values: dict, which: str, need_all: bool) -> list[str]:
        """The form's conditions that the values break, each with its two sides' values."""
        where = f"{self.paper} {self.number}"
        failed = []
        for cond in form.conditions:
            if need_all:
                needs = sorted(NAMES[s] for s in cond.free_symbols if NAMES[s] not in values)
                if needs:
                    raise ValueError(
                        f"{where} ({which} form) needs {', '.join(needs)} to check its condition "
                        f"{_show(cond)}; give every constant, or pass outside='evaluate'"
                    )
            left = _evaluate(cond.lhs, values, where, allow_inf=True)
            right = _evaluate(cond.rhs, values, where, allow_inf=True)
            if not _compare(left, cond.rel_op, right):
                op = {"<=": ">", "<": "≥", ">=": "<"}[cond.rel_op]
                failed.append(f"{_show(cond)} fails: {left:g} {op} {right:g}")
        return failed

    def describe(self) -> str:
        head = f"{self.paper} {self.number} ({self.setting})"
        return head + (f" — erratum: {self.erratum}" if self.erratum else "")


def _show(cond) -> str:
    """A condition in the keywords' names, e.g. ``gamma <= 1/L``."""
    return str(cond.subs({s: sp.Symbol(NAMES[s]) for s in cond.free_symbols}))


def _check_domain(name: str, value) -> None:
    """Refuse a value outside the keyword's domain (NaN never; +∞ where there is no upper end,
    e.g. an infinite mixing time)."""
    low, high, low_open = domain(name)
    if high is not None:
        allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    elif low is not None:
        allowed = f"{'>' if low_open else '≥'} {low:g}"
    else:
        allowed = "a real number"
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    below = low is not None and (number <= low if low_open else number < low)
    above = (high is not None and number > high) or (low is None and number == -math.inf)
    if isinstance(value, bool) or math.isnan(number) or below or above:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _compare(left: float, op: str, right: float) -> bool:
    tol = 1e-12 * max(1.0, abs(left), abs(right)) if math.isfinite(left + right) else 0.0
    return {"<=": left <= right + tol, "<": left < right, ">=": left >= right - tol}[op]


def _evaluate(expr, values: dict, where: str, allow_inf: bool = False) -> float:
    expr = sp.sympify(expr)
    missing = sorted(NAMES[s] for s in expr.free_symbols if NAMES[s] not in values)
    if missing:
        raise ValueError(f"{where} needs values for {', '.join(missing)}")
    subs = {SYMBOLS[k]: sp.sympify(v) for k, v in values.items() if k in SYMBOLS}
    value = expr.subs(subs)
    if value.has(sp.zoo, sp.oo) or value == sp.nan:
        # A cap like 1/√(L·A_1·…) with A_1 = 0 imposes no condition.
        if allow_inf:
            return math.inf
        raise ValueError(f"{where}: the bound is infinite for these constants")
    return float(sp.N(value))


THEOREMS: dict[str, Theorem] = {}


def register_theorem(theorem: Theorem) -> Theorem:
    if theorem.key in THEOREMS:
        raise ValueError(f"theorem {theorem.key} is registered twice")
    THEOREMS[theorem.key] = theorem
    return theorem


def get_theorem(key: str) -> Theorem:
    if key not in THEOREMS:
        raise ValueError(f"key must be one of {sorted(THEOREMS)}, got {key!r}")
    return THEOREMS[key]
