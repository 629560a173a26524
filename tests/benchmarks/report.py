"""The README's performance section, generated from ``make bench``'s results file.

``python tests/benchmarks/report.py [results.csv] [README.md]`` (run by ``make bench``) replaces
the text between the ``<!-- bench:start -->`` and ``<!-- bench:end -->`` markers of the README
with a table of the results (one row per figure: benchmark, figure, value, target, pass) and the
machine's core count.
"""

import math
import os
import sys
from pathlib import Path

import pandas as pd

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _value(value, unit: str) -> str:
    """``value`` to 3 significant digits with its unit; a dash where no figure was measured."""
    value = pd.to_numeric(value, errors="coerce")
    return "—" if math.isnan(value) else f"{value:.3g} {unit}".strip()


def table(results: pd.DataFrame) -> str:
    """A markdown table of the results, one row per figure (a failed target in bold **no**)."""
    if results.empty:
        return "No figures recorded: run `make bench`.\n"
    lines = ["| benchmark | figure | value | target | pass |", "|---|---|---|---|---|"]
    for row in results.rename(columns={"pass": "passed"}).itertuples(index=False):
        figure = row.figure.replace("|", r"\|")  # a bar would split the cell
        verdict = {"True": "yes", "False": "**no**"}.get(str(row.passed), "")
        lines.append(
            f"| {row.bench} | {figure} | {_value(row.value, row.unit)} | {row.target} | {verdict} |"
        )
    cores = ", ".join(str(c) for c in sorted(results.cores.unique()))
    return "\n".join(lines) + f"\n\nMeasured by `make bench` on {cores} CPU core(s).\n"


def main(results=None, readme="README.md") -> None:
    """Rewrite the README's text between the markers from the results file (by default the one
    the benchmarks' conftest writes: ``LORAKIT_BENCH_RESULTS`` or build/bench/results.csv)."""
    results = results or os.environ.get("LORAKIT_BENCH_RESULTS", "build/bench/results.csv")
    frame = pd.read_csv(results, keep_default_na=False, dtype={"pass": str, "target": str})
    text = Path(readme).read_text()
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{readme} must hold one {START} followed by one {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    Path(readme).write_text(f"{head}{START}\n{table(frame)}{END}{tail}")
    print(f"{readme}: performance section rewritten from {results} ({len(frame)} figures)")


if __name__ == "__main__":
    main(*sys.argv[1:])
