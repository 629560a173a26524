"""Interleaved timing for the benchmarks: ratios of medians, never differences of times.

Every figure of ``make bench`` compares lorakit with an alternative measured in the same run:
:func:`compare` times the candidates round-robin (one call of each per repeat, the order rotated
each repeat) so that a burst of load on a shared machine hits every side alike, and reports min /
median / max per side; a target is a bound on the ratio of medians (:meth:`Timings.ratio`).

:func:`record` adds one row (bench, figure, value, unit, target, pass, cores) to the results file
``build/bench/results.csv`` (``LORAKIT_BENCH_RESULTS`` overrides the path), written by the
``results`` fixture of ``conftest.py``; ``tests/benchmarks/report.py`` turns it into the README's
performance section.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["COLUMNS", "RESULTS", "Timing", "Timings", "compare", "record"]

#: The results file's columns, one row per figure.
COLUMNS = ("bench", "figure", "value", "unit", "target", "pass", "cores")
#: Rows recorded during this pytest session (written to the results file at its end).
RESULTS: list[dict] = []


@dataclass(frozen=True)
class Timing:
    """The seconds of each repeat of one candidate, divided by ``per`` (e.g. steps per call)."""

    seconds: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def max(self) -> float:
        return max(self.seconds)

    def describe(self, scale: float = 1e3, unit: str = "ms") -> str:
        return (
            f"min {self.min * scale:9.3f}  median {self.median * scale:9.3f}  "
            f"max {self.max * scale:9.3f} {unit}"
        )


class Timings(dict):
    """name → :class:`Timing`, in the order the candidates were given."""

    def ratio(self, slow: str, fast: str) -> float:
        """median(slow) / median(fast): how many times faster ``fast`` is."""
        return self[slow].median / self[fast].median

    def table(self, scale: float = 1e3, unit: str = "ms") -> str:
        width = max(map(len, self))
        return "\n".join(f"  {k:{width}s}  {t.describe(scale, unit)}" for k, t in self.items())


def compare(
    candidates: dict[str, Callable[[], object]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    per: float | Mapping[str, float] = 1.0,
    settle: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
) -> Timings:
    """Time each candidate ``repeats`` times (≥ 5 for a reported figure), interleaved.

    Each candidate is called ``warmup`` times first (imports, caches, allocator). Repeat k calls
    the candidates in the order rotated by k, so no side always runs first or last. Times are
    divided by ``per`` (steps or rounds per call) to give a per-unit figure; a mapping gives each
    candidate its own count (e.g. 10 steps per call against 200 copies per call). ``settle``:
    seconds of sleep, untimed, before each timed call, for candidates from libraries whose worker
    threads busy-wait after a call (OpenBLAS's spin for about 0.1 s on this machine and take the
    core from the next candidate's threads).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    if not settle >= 0:
        raise ValueError(f"settle must be >= 0 seconds, got {settle!r}")
    names = list(candidates)
    if not names:
        raise ValueError("candidates must name at least one function to time")
    units = dict(per) if isinstance(per, Mapping) else dict.fromkeys(names, per)
    if set(units) != set(names) or not all(u > 0 for u in units.values()):
        raise ValueError(f"per must be > 0 for each of {names}, got {per!r}")
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for k in range(repeats):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            time.sleep(settle)
            start = clock()
            candidates[name]()
            seconds[name].append((clock() - start) / units[name])
    return Timings((name, Timing(tuple(seconds[name]))) for name in names)


def record(
    bench: str, figure: str, value: float, unit: str, target: str = "", passed: bool | None = None
) -> bool | None:
    """Add one row to the results file and return ``passed`` (so ``assert record(...)`` reads as
    the target). ``target`` is a human-readable bound such as ``">= 10"``; ``passed`` None marks
    a figure reported without a target."""
    row = (bench, figure, float(value), unit, target, "" if passed is None else bool(passed))
    RESULTS.append(dict(zip(COLUMNS, (*row, os.cpu_count()), strict=True)))
    return passed
