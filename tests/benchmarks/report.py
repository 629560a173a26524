"""The README's performance section, generated from ``make bench``'s results file.

``python tests/benchmarks/report.py [results.csv] [README.md]`` replaces the text between the
``<!-- bench:start -->`` and ``<!-- bench:end -->`` markers of the README with a table of the
results (one row per figure: benchmark, figure, value, target, pass) and the machine's core count.
"""

import sys
from pathlib import Path

import pandas as pd

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def table(results: pd.DataFrame) -> str:
    """A markdown table of the results, one row per figure."""
    lines = ["| benchmark | figure | value | target | pass |", "|---|---|---|---|---|"]
    for row in results.rename(columns={"pass": "passed"}).itertuples(index=False):
        value = f"{row.value:.3g} {row.unit}".strip()
        verdict = {"True": "yes", "False": "**no**"}.get(row.passed, "")
        lines.append(f"| {row.bench} | {row.figure} | {value} | {row.target} | {verdict} |")
    cores = ", ".join(str(c) for c in sorted(results.cores.unique()))
    return "\n".join(lines) + f"\n\nMeasured by `make bench` on {cores} CPU core(s).\n"


def main(results="build/bench/results.csv", readme="README.md") -> None:
    frame = pd.read_csv(results, keep_default_na=False, dtype={"pass": str, "target": str})
    text = Path(readme).read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    Path(readme).write_text(f"{head}{START}\n{table(frame)}{END}{tail}")


if __name__ == "__main__":
    main(*sys.argv[1:])
