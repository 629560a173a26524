"""When a run has diverged, and what a diverged run keeps.

Every pattern (chain, federated, decentralized, asynchronous) at both scales uses the same test
(:func:`exploded`), the same error (:class:`DivergenceError`) and the same seed loop
(:func:`run_seeds`), so they stop at the same point and keep the same rows; the round patterns
also share one seed's loop over its rounds (:func:`iterate`).

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
    """A run's common arguments, checked (each error names the argument and its range): returns
    (count, seeds, log_every, blowup); ``unit`` names the count (``"steps"``, ``"rounds"``, ...)
    and every keyword flag (``messages=``, ``progress=``) must be True or False."""
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


def iterate(run, count: int, log_every: int, *, unit: str, progress: bool) -> list[dict]:
    """One seed's loop over ``count`` iterations (rounds) of ``run``; returns its rows.

    ``run`` has ``problem``, ``streams``, ``seed``, ``blowup``, ``cfg.method`` and
    ``round(t, rows)`` (iteration t = 1, 2, …; returns what ``log`` needs, or raises
    :class:`DivergenceError`), ``log(t, counts)`` (the row after iteration t; ``counts`` is ``()``
    at t = 0), ``state()`` (the state as a value: trees are values), ``commit(t, state)`` (write it
    into the problem; t = 0 is the start) and ``diverged(t, what, rows)`` (raises, with the hint).

    A row is logged at t = 0, every ``log_every``-th iteration and the last; a logged loss above
    ``blowup``·max(1, |f_0|) (:func:`exploded`) raises, and the problem then holds the state of the
    last logged iteration that passed (a model says so in the message). A stop asked by the
    progress bar (:func:`lorakit.progress.stop_requested`) logs where the run stands and ends it.
    The draws of a model's own randomness come from the run's streams (``problem.seeded``);
    ``progress`` shows a bar over the iterations.
    """
    p, counts = run.problem, ()
    bar = progress_bar(enabled=progress, total=count, desc=f"{run.cfg.method} seed {run.seed}")
    with p.seeded(run.streams), bar:
        rows = [run.log(0, counts)]
        good = (0, run.state())
        try:
            for t in range(1, count + 1):
                if stop_requested(bar):  # cancelled: log the last iteration done
                    if t > 1 and rows[-1][unit] < t - 1:
                        rows.append(run.log(t - 1, counts))
                    break
                counts = run.round(t, rows)
                if t % log_every == 0 or t == count:
                    rows.append(run.log(t, counts))
                    loss = rows[-1]["loss"]
                    bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                    if exploded(loss, rows[0]["loss"], run.blowup):
                        run.diverged(t, f"the loss is {loss:g}", rows)
                    good = (t, run.state())
                bar.update()
        except DivergenceError as error:
            run.commit(*good)
            if p.stateful:  # a model, put back
                error.append(restored_note(unit, good[0]))
            raise
    return rows
