"""Command line: ``lorakit methods`` and ``lorakit verify``.

Exit codes: 0 success (every corrected statement holds), 1 a corrected statement is violated,
2 a usage error (an unknown command, option or paper name; argparse's convention).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

__all__ = ["catalogue", "main", "summary", "table"]

#: ``lorakit verify``'s exit codes.
OK, VIOLATED, USAGE = 0, 1, 2


def catalogue() -> list[tuple[str, str, str, str]]:
    """Every method a user can run as (name, pattern, unit, description with its source), from the
    one registry :data:`lorakit.methods.REGISTRY`."""
    from .methods import REGISTRY

    return [
        (m.name, m.pattern, m.unit, f"{m.description}  [{m.source}]") for m in REGISTRY.values()
    ]


def _methods(args) -> int:
    rows = catalogue()
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for *cells, text in rows:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(cells, widths, strict=True)), "", text)
    return OK


def _json_value(value):
    """Strict JSON has no NaN or ±Infinity: a non-finite number is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _verify(args) -> int:
    from .checks import verify

    start = time.perf_counter()
    frame = verify(paper=args.paper, fast=args.fast)
    if args.pep:
        from .theory.pep import pep_columns

        frame = pep_columns(frame, fast=args.fast)
    if args.json:
        records = [
            {key: _json_value(value) for key, value in record.items()}
            for record in frame.to_dict(orient="records")
        ]
        print(json.dumps(records, indent=2, default=float, ensure_ascii=False, allow_nan=False))
    else:
        print(table(frame, pep=args.pep))
        print(f"\n{summary(frame)}")
        # The time goes to stderr, so that stdout depends on the code alone.
        print(f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return OK if (frame.status != "violated").all() else VIOLATED


def table(frame, pep: bool = False) -> str:
    """The table ``lorakit verify`` prints: one line per check (claims cut at 58 characters);
    ``pep``: with the certified worst case and its status (``lorakit verify --pep``)."""
    columns = ["paper", "claim", "measured", "relation", "bound", "printed_bound", "status"]
    if pep:
        columns += ["pep_T", "worst_case", "pep_bound", "pep"]
    names = {"printed_bound": "printed", "pep_T": "T_pep", "worst_case": "worst case",
             "pep_bound": "bound@T_pep"}  # fmt: skip
    shown = frame[columns].rename(columns=names)
    shown["claim"] = shown.claim.map(lambda c: c if len(c) <= 58 else c[:57] + "…")
    if pep:
        shown["pep"] = shown.pep.map(lambda c: c if len(c) <= 60 else c[:59] + "…")
    left = {c: _left(shown[c]) for c in ("paper", "claim", "status") + (("pep",) if pep else ())}
    text = shown.to_string(
        index=False,
        float_format=lambda v: f"{v:.4g}",
        na_rep="",
        formatters=left,
        justify="left",
    )
    return "\n".join(line.rstrip() for line in text.splitlines())


def summary(frame) -> str:
    """The last line of ``lorakit verify``: how many corrected statements hold."""
    held = int((frame.status != "violated").sum())
    return f"{held} of {len(frame)} corrected statements hold"


def _left(column):
    width = int(column.str.len().max())
    return lambda value: f"{value:<{width}}"


def _paper(name: str) -> str:
    """argparse type of ``--paper``: a usage error (exit 2) listing the valid names."""
    from .checks import resolve_paper

    try:
        return resolve_paper(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(
        prog="lorakit",
        description="lorakit: randomized and distributed LoRA.",
        epilog="exit codes: 0 success, 1 a corrected statement is violated, 2 usage error",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "methods", help="list every method you can run: name, pattern, unit, description [source]"
    ).set_defaults(fn=_methods)
    v = sub.add_parser(
        "verify",
        help="run the theory checks and print measured against bound",
        epilog="exit codes: 0 every corrected statement holds, 1 one is violated, 2 usage error",
    )
    v.add_argument(
        "--paper",
        type=_paper,
        help="only this paper's checks, e.g. RAC-LoRA or rac_lora (case, '-' and '_' ignored; a "
        "unique prefix will do; an unknown name lists the valid ones)",
    )
    v.add_argument(
        "--json",
        action="store_true",
        help="print strict JSON records instead of a table (a non-finite number is null)",
    )
    v.add_argument("--fast", action="store_true", help="fewer seeds and steps")
    v.add_argument(
        "--pep",
        action="store_true",
        help="add each theorem's certified worst case (a PEP solved by PEPit; needs the pep extra) "
        "and whether the bound is tight, loose by x%%, or below it",
    )
    v.set_defaults(fn=_verify)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
