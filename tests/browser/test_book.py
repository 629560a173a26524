"""The static site (``make book``) read offline in headless Chromium: a page with maths, charts and
an app, served from 127.0.0.1 with every other request aborted (``browser.blocked``). The maths
must be typeset by the MathJax served with the site, the chart PNGs must load, and the app must
show its note instead of an empty widget (issue 12: a course an instructor can teach offline)."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

NOTEBOOK = "01_why_lora_fails"


def _build_module():
    spec = importlib.util.spec_from_file_location("lorakit_book_build", ROOT / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site_url(chromium, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("LORAKIT_FAST", "1")
    mp.setenv("LORAKIT_REPOSITORY", "https://github.com/example-org/lorakit")
    out = tmp_path_factory.mktemp("book") / "html"
    try:
        notebook = ROOT / "notebooks" / f"{NOTEBOOK}.ipynb"
        _build_module().build(out, notebooks=[notebook], execute="force")
    finally:
        mp.undo()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _typeset(page) -> dict:
    """Wait for MathJax's queue to finish; count typeset formulas, list the failed ones."""
    page.wait_for_function("() => window.MathJax && MathJax.Hub && MathJax.isReady", timeout=60_000)
    page.evaluate("() => new Promise(done => MathJax.Hub.Queue(done))")
    return page.evaluate(
        """() => ({
            typeset: document.querySelectorAll('.MathJax, .MathJax_Display').length,
            errors: [...document.querySelectorAll('.MathJax_Error, merror')].map(
                e => e.textContent || e.getAttribute('data-mjx-error') || '?'),
            raw: document.querySelectorAll('span.math').length,
        })"""
    )


def test_notebook_page_draws_maths_charts_and_the_app_note_offline(site_url, browser, screenshots):
    page = browser.context.new_page()
    try:
        page.goto(f"{site_url}/notebooks/{NOTEBOOK}.html", wait_until="load", timeout=60_000)
        maths = _typeset(page)
        assert maths["typeset"] >= 10 and maths["errors"] == [], maths
        images = page.evaluate(
            "() => [...document.querySelectorAll('article img')].map(i => i.naturalWidth)"
        )
        assert images and min(images) > 100, images  # every chart PNG loaded and drawn
        note = page.locator(".lorakit-app-static")
        assert note.count() == 1 and "need a running kernel" in note.inner_text()
        assert "final f − f*" in note.inner_text()  # the status line at the default controls
        page.locator(".lorakit-app-static").scroll_into_view_if_needed()
        page.screenshot(path=str(screenshots / f"book-{NOTEBOOK}.png"))
    finally:
        page.close()
    assert browser.blocked == [], browser.blocked


def test_theory_card_maths_is_typeset_offline(site_url, browser):
    page = browser.context.new_page()
    try:
        page.goto(f"{site_url}/theory/rac_lora.html", wait_until="load", timeout=60_000)
        maths = _typeset(page)
        assert maths["typeset"] >= 5 and maths["errors"] == [], maths
    finally:
        page.close()
    assert browser.blocked == [], browser.blocked
