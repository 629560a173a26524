"""The README's sample output is the current code's output (issue 11 §5).

The ``lorakit methods`` block must equal the command's output; the ``make verify`` excerpt must
end with the summary line for the registered checks, and each of its rows must be a registered
check's row. ``python tests/test_readme.py`` rewrites both blocks from the current code (the
excerpt runs ``lorakit verify`` in full: minutes).
"""

from __future__ import annotations

import io
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"
METHODS_PROMPT = "$ lorakit methods"
# The checks shown in the excerpt (in the table's order), ending in "..." and the summary.
EXCERPT = [
    "full_rank_chain_is_gd",
    "counterexample_lora_stalls",
    "counterexample_asymm_lora_stalls",
    "rac_lora.theorem_5.5",
    "rac_lora.theorem_e.3",
    "rac_lora.theorem_d.3",
    "bernoulli_lora.theorem_5",
    "bernoulli_lora.theorem_22",
    "bernoulli_lora.theorem_10_polyak_step",
    "identity.mvr_momentum_identity",
    "identity.mvr_momentum_inequality",
    "rw_lora.ring_periodic",
]


def _blocks(text: str) -> list[tuple[int, int]]:
    """(first line, closing fence line) of every fenced block, as line indices."""
    lines, out, start = text.splitlines(), [], None
    for i, line in enumerate(lines):
        if line.startswith("```"):
            if start is None:
                start = i
            else:
                out.append((start + 1, i))
                start = None
    return out


def _block(text: str, first: str) -> tuple[int, int]:
    lines = text.splitlines()
    found = [(a, b) for a, b in _blocks(text) if a < b and lines[a].startswith(first)]
    assert len(found) == 1, f"README has {len(found)} blocks starting with {first!r}"
    return found[0]


def _methods_output() -> list[str]:
    from lorakit.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["methods"]) == 0
    return out.getvalue().splitlines()


def _summary() -> str:
    from lorakit.checks import CHECKS

    return f"{len(CHECKS)} of {len(CHECKS)} corrected statements hold"


def test_readme_methods_block_is_the_output_of_lorakit_methods():
    text = README.read_text()
    a, b = _block(text, METHODS_PROMPT)
    assert text.splitlines()[a + 1 : b] == _methods_output()


def test_readme_verify_excerpt_names_registered_checks_and_ends_with_their_count():
    from lorakit.checks import CHECKS

    text = README.read_text()
    a, b = _block(text, "paper ")
    lines = text.splitlines()[a:b]
    assert lines[-2:] == ["...", _summary()]
    assert re.split(r"\s+", lines[0]) == [
        "paper", "claim", "measured", "relation", "bound", "printed", "status",
    ]  # fmt: skip
    rows = lines[1:-2]
    assert len(rows) == len(EXCERPT)
    for row, name in zip(rows, EXCERPT, strict=True):
        check = CHECKS[name]
        claim = check.claim if len(check.claim) <= 58 else check.claim[:57] + "…"
        assert row.startswith(check.paper) and claim in row, (name, row)
    assert not re.search(r"\d+(\.\d+)? s\)", "\n".join(lines))  # no time in the README


def write() -> None:
    """Rewrite the two blocks from the current code (runs ``lorakit verify`` in full)."""
    from lorakit.checks import verify
    from lorakit.cli import summary, table

    text = README.read_text()
    lines = text.splitlines()
    a, b = _block(text, METHODS_PROMPT)
    lines[a + 1 : b] = _methods_output()
    frame = verify()
    assert (frame.status != "violated").all(), frame[frame.status == "violated"]
    shown = table(frame).splitlines()
    keep = [shown[0]] + [shown[i + 1] for i in range(len(frame)) if frame.check[i] in EXCERPT]
    text = "\n".join(lines) + "\n"
    a, b = _block(text, "paper ")
    lines = text.splitlines()
    lines[a:b] = [*keep, "...", summary(frame)]
    README.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(README.parent))
    write()
