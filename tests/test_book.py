"""The static site of ``make book`` (``book/build.py``): built here from notebook 00, executed in
fast mode during the build, and the theory cards. The pages must hold the charts as PNG files, a
Binder button that opens the page's notebook, and the theory cards with their maths."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = "https://github.com/example-org/lorakit"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


book = _load("lorakit_book_build", ROOT / "book" / "build.py")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("LORAKIT_REPOSITORY", REPOSITORY + ".git")
    mp.setenv("LORAKIT_FAST", "1")
    out = tmp_path_factory.mktemp("book") / "html"
    try:
        index = book.build(out, notebooks=[ROOT / "notebooks" / "00_tour.ipynb"], execute="force")
    finally:
        mp.undo()
    return index.parent


def test_index_lists_the_notebook_and_every_theory_card(site):
    html = (site / "index.html").read_text(encoding="utf-8")
    assert 'href="notebooks/00_tour.html"' in html
    cards = sorted(p.stem for p in (ROOT / "theory").glob("*.md"))
    assert len(cards) == 5
    for card in cards:
        assert f'href="theory/{card}.html"' in html, card
        assert (site / "theory" / f"{card}.html").is_file()


def test_notebook_page_shows_its_charts_as_png_files(site):
    html = (site / "notebooks" / "00_tour.html").read_text(encoding="utf-8")
    images = re.findall(r'<img[^>]*src="\.\./(_images/[0-9a-f]+\.png)"', html)
    assert images, "no chart image on the page"
    for image in images:
        data = (site / image).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, image  # a drawn chart
    assert "cdn.jsdelivr.net/npm/vega" not in html  # no chart that needs a CDN
    assert "Traceback" not in html


def test_notebook_page_has_a_binder_button_for_its_notebook(site):
    html = (site / "notebooks" / "00_tour.html").read_text(encoding="utf-8")
    expected = "https://mybinder.org/v2/gh/example-org/lorakit/main?urlpath=lab/tree/notebooks/00_tour.ipynb"
    assert expected in html.replace("&amp;", "&")


def test_theory_card_page_renders_its_maths(site):
    html = (site / "theory" / "rac_lora.html").read_text(encoding="utf-8")
    assert "RAC-LoRA" in html
    assert 'class="math' in html  # $…$ became MathJax maths, not literal dollars
    assert "$$W^{t+1}" not in html


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/o/lorakit.git", "https://github.com/o/lorakit"),
        ("git@github.com:o/lorakit.git", "https://github.com/o/lorakit"),
        ("https://github.com/o/lorakit/", "https://github.com/o/lorakit"),
        ("/srv/git/lorakit", None),  # not on GitHub: Binder cannot open it
    ],
)
def test_repository_for_the_binder_button(url, expected, monkeypatch):
    monkeypatch.setenv("LORAKIT_REPOSITORY", url)
    conf = _load("lorakit_book_conf", ROOT / "book" / "conf.py")
    assert conf.REPOSITORY == expected
    assert ("launch_buttons" in conf.html_theme_options) == (expected is not None)


def test_build_refuses_an_unknown_execution_mode(tmp_path):
    with pytest.raises(ValueError, match=r"execute must be one of \['cache', 'force', 'off'\]"):
        book.build(tmp_path / "html", notebooks=[], execute="always")
