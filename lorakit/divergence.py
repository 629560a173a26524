"""When a run has diverged, and what a diverged run keeps.

Every pattern (chain, federated, decentralized, asynchronous) at both scales uses the same test
(:func:`exploded`), the same error (:class:`DivergenceError`) and the same seed loop
(:func:`run_seeds`), so they stop at the same point and keep the same rows.

The threshold. A run has diverged when its loss is NaN or infinite, or when
|f| > ``blowup``·max(1, |f(W^0)|). The default ``blowup`` = 10³: a run that raises its loss a
thousandfold above its start (or above 1000 when the start is below 1) is not converging, whatever
its step size, while the transient rise of a stable method stays far below that (the theory checks
all run below it). A larger ``blowup`` lets a run go further before it stops; it must be a finite
number > 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import pandas as pd

from ._validation import check_real

__all__ = ["BLOWUP", "DivergenceError", "check_blowup", "exploded", "restored_note", "run_seeds"]

#: The default divergence threshold: a loss above 10³·max(1, |f(W^0)|) has diverged.
BLOWUP = 1e3


def check_blowup(blowup) -> float:
    """``blowup`` as a float: a finite number > 1 (the factor of :func:`exploded`)."""
    return check_real("blowup", blowup, low=1.0, low_open=True)


def exploded(loss: float, reference: float, blowup: float = BLOWUP) -> bool:
    """True for a NaN/infinite ``loss`` or one with |loss| > ``blowup``·max(1, |``reference``|)."""
    return not (math.isfinite(loss) and abs(loss) <= blowup * max(1.0, abs(reference)))


def restored_note(unit: str, step: int) -> str:
    """The sentence a model-scale DivergenceError ends with: where the model was put back."""
    return f". The model was restored to its state at {unit} {step}, the last one that passed"


class DivergenceError(RuntimeError):
    """A run whose loss became NaN, infinite or exploded (:func:`exploded`).

    ``step`` is where it was detected and ``seed`` the seed; ``frame`` holds the rows of every seed
    that finished before it and the diverged seed's rows up to ``step``.
    """

    def __init__(self, message: str, *, step: int, seed: int, frame: pd.DataFrame):
        super().__init__(message)
        self.step, self.seed, self.frame = step, seed, frame

    def append(self, text: str) -> DivergenceError:
        """Extend the message with ``text`` (returns self)."""
        self.args = (f"{self.args[0]}{text}", *self.args[1:])
        return self


def run_seeds(
    seeds: Iterable,
    make: Callable,
    run: Callable,
    frame: Callable,
    *,
    on_divergence: str,
    blowup: float,
) -> tuple[pd.DataFrame, list]:
    """The seed loop of every pattern: run each seed, keep every row, stop or go on at divergence.

    ``make(seed)`` builds one seeded run (its ``blowup`` is set here), ``run(sim)`` runs it and
    returns its rows (a list of dicts) or raises :class:`DivergenceError` whose ``frame`` holds the
    rows so far; ``frame(rows)`` makes the table (with the configuration columns). With
    ``on_divergence="raise"`` the error is re-raised with ``frame`` = every finished seed's rows
    and the diverged seed's rows; with ``"stop"`` the diverged seed keeps its rows and is listed in
    ``attrs["diverged"]`` (seed → step) while the next seeds run. Returns (frame, the runs).
    """
    rows: list[dict] = []
    diverged, sims = {}, []
    for seed in seeds:
        sim = make(seed)
        sim.blowup = blowup
        sims.append(sim)
        try:
            rows.extend(run(sim))
        except DivergenceError as error:
            rows.extend(error.frame.to_dict("records"))
            if on_divergence == "raise":
                error.frame = frame(rows)
                raise
            diverged[seed] = error.step
    out = frame(rows)
    out.attrs["diverged"] = diverged
    return out, sims
