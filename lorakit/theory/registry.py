"""The registry of measured checks: what a check measured (:class:`Result`), the registered checks
(:data:`CHECKS`, filled by :func:`register`) and the papers they belong to.

The bottom layer of the checks (README "Architecture", principle 10): the theory checks
(:mod:`lorakit.theory.checks` and its per-paper modules) and the chain checks of
:mod:`lorakit.checks` register here; :func:`lorakit.checks.verify` runs them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CHECKS", "Check", "Result", "papers", "register", "resolve_paper"]


@dataclass(frozen=True)
class Result:
    """What a check measured: ``measured <relation> bound``, and the printed form's bound.

    ``stderr`` is the Monte Carlo standard error of ``measured``; a bound counts as violated only
    beyond ``slack`` standard errors. Where an erratum changes the bound, ``printed`` holds the
    printed form's value and :attr:`status` says whether the run separates the two.
    """

    measured: float
    bound: float
    relation: str = "<="  # "<=", ">=", "==", "≈" (|measured − bound| within slack·stderr)
    detail: str = ""
    printed: float | None = None
    stderr: float = 0.0
    slack: float = 3.0

    def satisfies(self, bound: float) -> bool:
        margin = self.slack * self.stderr
        if self.relation == "<=":
            return self.measured - margin <= bound
        if self.relation == ">=":
            return self.measured + margin >= bound
        if self.relation == "≈":
            return abs(self.measured - bound) <= margin
        return self.measured == bound

    @property
    def holds(self) -> bool:
        return self.satisfies(self.bound)

    @property
    def status(self) -> str:
        if not self.holds:
            return "violated"
        if self.printed is None:
            return "holds"
        if self.satisfies(self.printed):
            return "not separable"
        return "printed form violated but corrected holds"


@dataclass(frozen=True)
class Check:
    name: str
    paper: str
    claim: str
    run: Callable[[bool], Result]


CHECKS: dict[str, Check] = {}


def register(name: str, paper: str, claim: str):
    """Decorator: add ``fn(fast) -> Result`` to :data:`CHECKS`."""

    def wrap(fn):
        CHECKS[name] = Check(name, paper, claim, fn)
        return fn

    return wrap


def papers() -> list[str]:
    """The papers with registered checks, e.g. ``["Async-FL", "Bernoulli-LoRA", ...]``."""
    return sorted({c.paper for c in CHECKS.values()})


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_paper(name: str) -> str:
    """The registered paper a user means by ``name``.

    Case, ``-``, ``_``, spaces and dots are ignored, so ``RAC-LoRA``, ``rac_lora`` (the theorem
    keys' prefix), ``raclora`` and ``Rac Lora`` all name RAC-LoRA; a prefix (``bern``) names the
    one paper it starts. Anything else raises ``ValueError`` listing the valid names.
    """
    if not isinstance(name, str):
        raise ValueError(f"paper must be a string naming one of {papers()}, got {name!r}")
    key = _squash(name)
    exact = [p for p in papers() if _squash(p) == key]
    found = exact or ([p for p in papers() if _squash(p).startswith(key)] if key else [])
    if len(found) != 1:
        why = f"is ambiguous ({', '.join(found)})" if found else "names no registered paper"
        valid = ", ".join(f"{p} ({re.sub(r'[^a-z0-9]+', '_', p.lower())})" for p in papers())
        raise ValueError(f"paper {name!r} {why}: use one of {valid}; case, '-' and '_' are ignored")
    return found[0]
