"""Command line: ``lorakit methods`` and ``lorakit verify``."""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main"]


def _methods(args) -> int:
    from .methods import METHODS

    width = max(map(len, METHODS))
    for m in METHODS.values():
        print(f"{m.name:<{width}}  {m.description}  [{m.paper}]")
    return 0


def _verify(args) -> int:
    from .checks import verify

    frame = verify(paper=args.paper, fast=args.fast)
    if args.json:
        print(
            json.dumps(frame.to_dict(orient="records"), indent=2, default=float, ensure_ascii=False)
        )
    else:
        columns = ["paper", "claim", "measured", "relation", "bound", "printed_bound", "status"]
        shown = frame[columns].rename(columns={"printed_bound": "printed"})
        shown["claim"] = shown.claim.map(lambda c: c if len(c) <= 58 else c[:57] + "…")
        left = {c: _left(shown[c]) for c in ("paper", "claim", "status")}
        table = shown.to_string(
            index=False,
            float_format=lambda v: f"{v:.4g}",
            na_rep="",
            formatters=left,
            justify="left",
        )
        print("\n".join(line.rstrip() for line in table.splitlines()))
        held = int((frame.status != "violated").sum())
        print(f"\n{held} of {len(frame)} corrected statements hold ({frame.seconds.sum():.1f} s)")
    return 0 if (frame.status != "violated").all() else 1


def _left(column):
    width = int(column.str.len().max())
    return lambda value: f"{value:<{width}}"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="lorakit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="list the registered methods").set_defaults(fn=_methods)
    v = sub.add_parser("verify", help="run the theory checks and print measured against bound")
    v.add_argument("--paper", help="only this paper's checks (e.g. rac-lora, bernoulli-lora)")
    v.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    v.add_argument("--fast", action="store_true", help="fewer seeds and steps")
    v.set_defaults(fn=_verify)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
