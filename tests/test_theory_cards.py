"""Every registered theorem has a section in its paper's card, and every section names one."""

import re
from pathlib import Path

import pytest

from lorakit.theory import THEOREMS

CARDS = Path(__file__).resolve().parents[1] / "theory"
SECTION = re.compile(r"^## .*`([a-z0-9_.]+)`\s*$", re.MULTILINE)


def _card(paper: str) -> Path:
    return CARDS / (paper.lower().replace("-", "_") + ".md")


@pytest.mark.parametrize("paper", sorted({t.paper for t in THEOREMS.values()}))
def test_card_sections_match_registered_theorems(paper):
    card = _card(paper)
    assert card.exists(), f"missing theory card {card}"
    text = card.read_text()
    sections = SECTION.findall(text)
    registered = sorted(k for k, t in THEOREMS.items() if t.paper == paper)
    assert sorted(sections) == registered
    for key in sections:  # each section shows how lorakit checks it, and the erratum if any
        body = text.split(f"`{key}`", 1)[1].split("\n## ", 1)[0]
        assert "Check:" in body, key
        if THEOREMS[key].erratum:
            assert "**Erratum.**" in body, key
