"""How lorakit's altair charts reach a screen or a file: offline, with a static copy.

altair's default renderer emits HTML that loads vega from a CDN, so without internet every chart
shows "Error loading script". Importing :mod:`lorakit.viz` (and so :mod:`lorakit.widgets`)
registers and enables the renderer ``"lorakit"`` instead, whose output bundle holds

* ``application/vnd.vegalite.v5+json``, the spec, which JupyterLab 4 draws with its built-in
  vega extension, offline, and which VS Code and nteract draw too;
* ``image/png``, a static copy drawn by vl-convert (vega compiled into the Python wheel, no
  browser), which GitHub, nbviewer, PDF export and static sites show where no vega runs;
* ``text/plain``.

A front end picks the richest type it knows (JupyterLab the interactive spec). An app's outputs
live in widget state; its first draw carries the PNG too, which a saved notebook's widget state
shows where no vega runs, and its redraws the spec only (:func:`output` with ``static=False``):
vl-convert takes about 0.15 s per chart (measured on 2 cores), which every control change would
pay. An app's "save figure" control writes its charts with :func:`save`.

Why altair < 6: altair 6 emits Vega-Lite 6 specs under ``application/vnd.vegalite.v6+json``, and
JupyterLab (4.6) ships a renderer only for Vega-Lite 3–5 (its bundle holds vega-lite 5), so an
altair 6 chart draws only through a renderer that loads vega from a CDN, which is what this module
exists to avoid.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import altair as alt
import vl_convert as vlc
from altair.utils.display import default_renderer_base
from altair.vegalite.v5.display import VEGALITE_MIME_TYPE

__all__ = ["FORMATS", "NAME", "VEGALITE_MIME_TYPE", "activate", "image", "output", "save"]

#: The altair renderer registered by :func:`activate`.
NAME = "lorakit"
#: File formats :func:`save` writes, chosen by the path's suffix.
FORMATS = ("png", "svg", "pdf")
#: Pixel density of saved PNGs (2× for slides); the notebook's static copy is drawn at 1×.
SAVE_SCALE = 2.0
# vl-convert bundles several Vega-Lite versions: pick altair's ("v5.20.1" -> "5.20").
_VL_VERSION = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])


def image(chart, fmt: str = "png", *, scale: float = 1.0) -> bytes | str:
    """The chart drawn by vl-convert: PNG or PDF bytes, or SVG text."""
    spec = _spec(chart)
    if fmt == "png":
        return vlc.vegalite_to_png(spec, vl_version=_VL_VERSION, scale=scale)
    if fmt == "svg":
        return vlc.vegalite_to_svg(spec, vl_version=_VL_VERSION)
    if fmt == "pdf":
        return vlc.vegalite_to_pdf(spec, vl_version=_VL_VERSION)
    raise ValueError(f"fmt must be one of {list(FORMATS)}, got {fmt!r}")


def save(chart, path) -> Path:
    """Write ``chart`` to ``path`` as PNG (2× pixel density), SVG or PDF, chosen by its suffix.

    The parent folder is created if needed; returns the path written. For slides::

        viz.save(viz.convergence_chart(frame), "figures/rac_lora.png")
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or a path, got {type(path).__name__}")
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(
            f"path must end in one of {', '.join('.' + f for f in FORMATS)} (the format is taken "
            f"from the suffix), got {str(path)!r}"
        )
    data = image(chart, fmt, scale=SAVE_SCALE)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def output(chart, *, static: bool = True) -> dict:
    """The chart as a notebook output record (``display_data``) holding the Vega-Lite spec and,
    with ``static``, its PNG; what an app writes into its ``Output`` widgets."""
    data, metadata = _bundle(_spec(chart), static=static)
    return {"output_type": "display_data", "data": data, "metadata": metadata}


def activate() -> None:
    """Register the ``"lorakit"`` renderer and enable it unless the user chose another one.

    altair's own ``"default"`` (the CDN HTML) is replaced; an explicit
    ``alt.renderers.enable(...)`` made before importing lorakit is kept.
    """
    if NAME not in alt.renderers.names():
        alt.renderers.register(NAME, _renderer)
    if alt.renderers.active == "default":
        alt.renderers.enable(NAME)


# ---------------------------------------------------------------------------------------------
def _spec(chart) -> dict:
    if isinstance(chart, dict):
        return chart
    if not isinstance(chart, alt.TopLevelMixin):
        raise TypeError(f"chart must be an altair chart, got {type(chart).__name__}")
    return chart.to_dict()


def _bundle(spec: dict, static: bool, **options) -> tuple[dict, dict]:
    data, metadata = default_renderer_base(spec, VEGALITE_MIME_TYPE, "<lorakit chart>", **options)
    if static:
        png = vlc.vegalite_to_png(spec, vl_version=_VL_VERSION, scale=1.0)
        data["image/png"] = base64.b64encode(png).decode("ascii")
    return data, metadata


def _renderer(spec: dict, **options) -> tuple[dict, dict]:
    return _bundle(spec, static=True, **options)
