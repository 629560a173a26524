"""When a run has diverged, and what a diverged run keeps: one test (:func:`exploded`), one error
(:class:`DivergenceError`), one seed loop (:func:`run_seeds`) and one loop over a seed's
iterations (:func:`iterate`) for every pattern at both scales, so all stop at the same point and
keep the same rows.

The threshold. A run has diverged when its loss is NaN or infinite, or when
|f| > ``blowup``·max(1, |f(W^0)|). The default ``blowup`` = 10³: a run that raises its loss a
thousandfold above its start (or above 1000 when the start is below 1) is not converging, whatever
its step size, while the transient rise of a stable method stays far below that (the theory checks
all run below it). A larger ``blowup`` lets a run go further; it must be a finite number > 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import pandas as pd

from ._validation import check_choice, check_flag, check_int, check_real, check_seeds
from .progress import bar as progress_bar
from .progress import stop_requested

__all__ = [
    "BLOWUP",
    "DivergenceError",
    "check_blowup",
    "check_run",
    "exploded",
    "iterate",
    "restored_note",
    "run_seeds",
]

#: The default divergence threshold: a loss above 10³·max(1, |f(W^0)|) has diverged.
BLOWUP = 1e3


def check_blowup(blowup) -> float:
    """``blowup`` as a float: a finite number > 1 (the factor of :func:`exploded`)."""
    return check_real("blowup", blowup, low=1.0, low_open=True)


def check_run(unit: str, count, seeds, log_every, on_divergence, blowup, **flags):
    """A run's common arguments checked: (count, seeds, log_every, blowup); ``unit`` names the
    count (``"steps"``, ``"rounds"``, ...), every keyword flag must be True or False."""
    for name, value in flags.items():
        check_flag(name, value)
    check_choice("on_divergence", on_divergence, ("raise", "stop"))
    count, log_every = check_int(unit, count, low=1), check_int("log_every", log_every, low=1)
    return count, check_seeds(seeds), log_every, check_blowup(blowup)


def exploded(loss: float, reference: float, blowup: float = BLOWUP) -> bool:
    """True for a NaN/infinite ``loss`` or one with |loss| > ``blowup``·max(1, |``reference``|)."""
    return not (math.isfinite(loss) and abs(loss) <= blowup * max(1.0, abs(reference)))


def restored_note(unit: str, step: int) -> str:
    """The sentence a model-scale DivergenceError ends with: where the model was put back."""
    return f". The model was restored to its state at {unit} {step}, the last one that passed"


class DivergenceError(RuntimeError):
    """A run whose loss became NaN, infinite or exploded (:func:`exploded`) at ``step`` of
    ``seed``; ``frame`` holds every finished seed's rows and the diverged seed's up to ``step``."""

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
    """The seed loop of every pattern: (frame, the runs). ``make(seed)`` builds a run (its
    ``blowup`` set here), ``run(sim)`` returns its rows or raises :class:`DivergenceError` holding
    them, ``frame(rows)`` makes the table. ``on_divergence="raise"`` re-raises with every seed's
    rows so far; ``"stop"`` keeps them, lists the seed in ``attrs["diverged"]`` (seed → step) and
    goes on."""
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


def iterate(
    run, count: int, log_every: int, *, unit: str, progress: bool, rows=None, start: int = 0
) -> list[dict]:
    """One seed's iterations ``start`` + 1, …, ``start`` + ``count`` of ``run``: its rows
    (``rows``, extended in place, continues a run; else the start is logged first).

    ``run`` has ``problem``, ``streams``, ``seed``, ``blowup``, ``cfg.method``, ``round(t, rows)``
    (iteration t: what ``log`` needs), ``log(t, counts)`` (a row; ``counts`` is ``()`` before any
    iteration), ``state()`` (a value), ``commit(t, state)`` and ``diverged(t, what, rows)`` (raises).
    A row is logged every ``log_every``-th iteration, at the last, and where a stop asked by the
    progress bar (:func:`lorakit.progress.stop_requested`) ends the run; a logged loss that
    :func:`exploded` raises, the problem then holding the last logged state that passed.
    """
    p, counts, rows = run.problem, (), [] if rows is None else rows
    bar = progress_bar(enabled=progress, total=count, desc=f"{run.cfg.method} seed {run.seed}")

    def log(t: int) -> tuple:  # the row after iteration t, checked: (t, its state) if it passed
        rows.append(run.log(t, counts))
        loss = rows[-1]["loss"]
        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        if len(rows) > 1 and exploded(loss, rows[0]["loss"], run.blowup):  # the start is f_0
            run.diverged(t, f"the loss is {loss:g}", rows)
        return t, run.state()

    with p.seeded(run.streams), bar:
        good = log(start) if not rows else (start, run.state())
        try:
            for t in range(start + 1, start + count + 1):
                if stop_requested(bar):  # cancelled: log where the run stands
                    if rows[-1][unit] < t - 1:
                        good = log(t - 1)
                    break
                counts = run.round(t, rows)
                bar.update()
                if t % log_every == 0 or t == start + count:
                    good = log(t)
        except DivergenceError as error:
            run.commit(*good)
            if p.stateful:  # a model, put back
                error.append(restored_note(unit, good[0]))
            raise
    return rows
