"""The student version of the notebooks: solutions removed the way nbgrader's ``ClearSolutions`` does.

The notebooks in the repository are the *instructor* version: every exercise's solution sits
between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines, nbgrader's markers, so a course can
also import them into nbgrader (``nbgrader generate_assignment`` recognises the same markers). This
module builds the student version without nbgrader::

    python -m lorakit.exercises.student notebooks/ build/student/     # what `make student` runs

* in a code cell, each marked block (the marker lines included) becomes nbgrader's stub,
  ``# YOUR CODE HERE`` and ``raise NotImplementedError()``, indented like the ``BEGIN`` line, so the
  exercise's ``lk.exercises.check(...)`` line fails until the student fills the block in;
* in a markdown cell, each marked block becomes ``YOUR ANSWER HERE``;
* every output and execution count is cleared (an executed instructor notebook would otherwise
  show the solutions' results).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import nbformat

__all__ = ["BEGIN", "CODE_STUB", "END", "TEXT_STUB", "build", "strip_solutions", "student_notebook"]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
#: nbgrader's default stubs (``ClearSolutions.code_stub["python"]`` and ``text_stub``).
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
TEXT_STUB = ("YOUR ANSWER HERE",)


def strip_solutions(source: str, *, markdown: bool = False, where: str = "cell") -> tuple[str, int]:
    """``source`` with each ``BEGIN``…``END`` block replaced by the stub; returns (text, blocks).

    A nested ``BEGIN`` or a missing ``END`` is a ``ValueError`` naming ``where``: a half-removed
    solution would leak the answer or break the cell."""
    stub = TEXT_STUB if markdown else CODE_STUB
    lines, inside, blocks = [], False, 0
    for number, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: {BEGIN!r} inside a solution block")
            inside, blocks = True, blocks + 1
            indent = re.match(r"\s*", line).group(0)
            lines.extend(indent + s for s in stub)
        elif marker == END:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END!r} without {BEGIN!r}")
            inside = False
        elif not inside:
            lines.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN!r} without {END!r}")
    return "\n".join(lines), blocks


def student_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> tuple:
    """A copy of ``nb`` with solutions stripped and outputs cleared; returns (notebook, blocks)."""
    nb = nbformat.from_dict(nb)  # a deep copy
    total = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type not in ("code", "markdown"):
            continue
        where = f"{name}, cell {index}"
        cell.source, blocks = strip_solutions(
            cell.source, markdown=cell.cell_type == "markdown", where=where
        )
        total += blocks
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb, total


def build(src, dst) -> dict[Path, int]:
    """Write the student version of ``src`` (a notebook or a folder of them) into folder ``dst``;
    returns {written path: solution blocks removed}."""
    src, dst = Path(src), Path(dst)
    if src.is_dir():
        sources = sorted(src.glob("*.ipynb"))
    elif src.suffix == ".ipynb" and src.is_file():
        sources = [src]
    else:
        raise ValueError(f"src must be a notebook or a folder of notebooks, got {str(src)!r}")
    if not sources:
        raise ValueError(f"src must hold notebooks (*.ipynb), found none in {str(src)!r}")
    dst.mkdir(parents=True, exist_ok=True)
    written = {}
    for path in sources:
        nb, blocks = student_notebook(nbformat.read(path, as_version=4), name=path.name)
        nbformat.validate(nb)
        out = dst / path.name
        nbformat.write(nb, out)
        written[out] = blocks
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lorakit.exercises.student",
        description="Build the student version of the notebooks (solutions removed).",
    )
    parser.add_argument("src", help="a notebook or a folder of notebooks (the instructor version)")
    parser.add_argument("dst", help="the folder to write the student notebooks to")
    args = parser.parse_args(argv)
    written = build(args.src, args.dst)
    for path, blocks in written.items():
        print(f"{path}: {blocks} solution block(s) removed")
    print(f"{len(written)} notebook(s), {sum(written.values())} solution block(s) removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
