"""Build the lorakit book: ``python book/build.py build/book`` (what ``make book`` runs).

Stages ``book/index.md``, the notebooks and the theory cards (``theory/*.md``) into a source
folder (default ``build/book-src``) laid out like the repository, so each page's Binder button
opens ``notebooks/<name>.ipynb``, then runs Sphinx with MyST-NB (``book/conf.py``). Notebooks are
executed during the build (``--execute force``; set ``LORAKIT_FAST=1`` for the fast mode), or
taken as they are (``--execute off``, for copies executed beforehand).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent


def stage(source: Path, notebooks: list[Path], theory: list[Path]) -> Path:
    """Lay out ``source`` afresh: index.md, notebooks/, theory/."""
    if source.exists():
        shutil.rmtree(source)
    (source / "notebooks").mkdir(parents=True)
    (source / "theory").mkdir()
    shutil.copy(BOOK / "index.md", source / "index.md")
    for path in notebooks:
        shutil.copy(path, source / "notebooks" / path.name)
    for path in theory:
        shutil.copy(path, source / "theory" / path.name)
    return source


def build(out, *, notebooks=None, theory=None, execute="force", source=None) -> Path:
    """Stage and build the HTML site into ``out``; returns the path of its index.html."""
    from sphinx.cmd.build import build_main

    if execute not in ("force", "off", "cache"):
        raise ValueError(f"execute must be one of ['cache', 'force', 'off'], got {execute!r}")
    notebooks = sorted(ROOT.glob("notebooks/*.ipynb")) if notebooks is None else list(notebooks)
    theory = sorted(ROOT.glob("theory/*.md")) if theory is None else list(theory)
    out = Path(out)
    source = stage(Path(source) if source else out.parent / f"{out.name}-src", notebooks, theory)
    options = ["-D", f"nb_execution_mode={execute}"]
    code = build_main(["-b", "html", "-q", "-c", str(BOOK), *options, str(source), str(out)])
    if code:
        raise RuntimeError(f"sphinx-build failed (exit {code}); its messages are above")
    return out / "index.html"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the folder to write the HTML site to")
    parser.add_argument("--execute", default="force", choices=["force", "off", "cache"])
    parser.add_argument("--notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args(argv)
    index = build(args.out, notebooks=args.notebooks, execute=args.execute)
    print(f"the book: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
