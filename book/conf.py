"""Sphinx configuration of the lorakit book (``make book``; sources staged by ``book/build.py``).

MyST-NB turns the notebooks into pages: each chart's output holds a Vega-Lite spec and a PNG
(lorakit's renderer, ``lorakit/_render.py``); the HTML builder has no Vega-Lite renderer, so it
shows the PNG. sphinx-book-theme adds a Binder launch button to every notebook page.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import jupyter_server_mathjax

project = "lorakit"
author = "the lorakit authors"
extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# -- MyST: the notebooks' and the theory cards' maths ($…$, $$…$$) ------------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]
# Offline: MathJax 2.7 from jupyter-server-mathjax is copied into the site (_copy_mathjax), not
# loaded from a CDN. MyST's own MathJax settings are for MathJax 3/4, so they are off; Sphinx
# writes the maths as \(…\) and \[…\], which tex2jax reads.
MATHJAX = Path(jupyter_server_mathjax.__file__).parent / "static"
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
myst_update_mathjax = False
mathjax2_config = {
    "tex2jax": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processEscapes": True,
    },
    # jupyter-server-mathjax ships the STIX-Web fonts only (as Jupyter's classic notebook used)
    "HTML-CSS": {"availableFonts": [], "webFont": "STIX-Web", "imageFont": None},
    "SVG": {"font": "STIX-Web"},
}
# The apps need a kernel: no widget manager from a CDN; each app's page shows its HTML note
# (lorakit.widgets.App._repr_mimebundle_) in place of the widget view.
nb_ipywidgets_js = {}
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
suppress_warnings = [
    "myst.header",  # the theory cards start at "#", then skip levels
    # MyST-NB parses every type of a chart's bundle before it picks the PNG: the Vega-Lite spec,
    # which no static page draws, would warn once per chart.
    "mystnb.unknown_mime_type",
]

# -- execution (book/build.py --execute: force, or off for pre-executed copies) ---------------
nb_execution_mode = "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True  # a failing notebook fails the build, not a silent page
nb_execution_show_tb = True


def _repository() -> str | None:
    """The GitHub repository the Binder buttons open: ``LORAKIT_REPOSITORY``, else git's origin."""
    url = os.environ.get("LORAKIT_REPOSITORY", "").strip()
    if not url:
        try:
            url = subprocess.run(
                ["git", "remote", "get-url", "origin"], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None
    match = re.match(r"(?:https://github\.com/|git@github\.com:)([^/]+/[^/]+?)(?:\.git)?/?$", url)
    return f"https://github.com/{match.group(1)}" if match else None


REPOSITORY = _repository()
html_theme = "sphinx_book_theme"
html_title = "lorakit: randomized and distributed LoRA, a course"
html_theme_options = {"path_to_docs": "", "use_download_button": True}
if REPOSITORY:
    html_theme_options |= {
        "repository_url": REPOSITORY,
        "repository_branch": os.environ.get("LORAKIT_BRANCH", "main"),
        "use_repository_button": True,
        # Binder builds the repository's binder/ environment and opens the page's notebook.
        "launch_buttons": {
            "binderhub_url": "https://mybinder.org",
            "notebook_interface": "jupyterlab",
        },
    }


def _copy_mathjax(app, exception):
    if exception is None and app.builder.format == "html":
        shutil.copytree(MATHJAX, Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True)


def setup(app):
    app.connect("build-finished", _copy_mathjax)
    if not REPOSITORY:
        from sphinx.util import logging

        logging.getLogger(__name__).warning(
            "no GitHub repository known: pages get no Binder button; set "
            "LORAKIT_REPOSITORY=https://github.com/OWNER/NAME (or a git remote 'origin')"
        )
