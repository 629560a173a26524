"""Charts render offline and survive outside a kernel (lorakit._render via lorakit.viz): the output
bundle, viz.save, and the apps' "save figure" control (issue 12 §1)."""

from __future__ import annotations

import base64
import json
import struct

import altair as alt
import pandas as pd
import pytest

from lorakit import viz, widgets
from lorakit.widgets import App, figure_stem

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VEGALITE = "application/vnd.vegalite.v5+json"


def _chart(slope: float = 1.0, width: int = 300) -> alt.Chart:
    data = pd.DataFrame({"x": range(5), "y": [slope * i for i in range(5)]})
    return alt.Chart(data).mark_line().encode(x="x:Q", y="y:Q").properties(width=width)


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (bytes 16–24)."""
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


# ---------------------------------------------------------------------------------------------
# the renderer: offline mimetype plus a static PNG, no CDN
# ---------------------------------------------------------------------------------------------
def test_importing_viz_enables_the_offline_renderer():
    assert alt.renderers.active == "lorakit"


def test_bundle_holds_the_vegalite_spec_and_a_png_and_no_html():
    chart = _chart()
    data, _ = chart._repr_mimebundle_()
    assert set(data) == {VEGALITE, "image/png", "text/plain"}
    assert data[VEGALITE]["mark"] == {"type": "line"}
    assert data[VEGALITE]["$schema"].endswith("/v5.20.1.json")
    png = base64.b64decode(data["image/png"])
    width, height = _png_size(png)
    assert 300 <= width < 400 and height > 100  # the 300 px plot plus its axis, at 1×
    assert "cdn.jsdelivr" not in json.dumps(data)


def test_app_outputs_hold_a_png_on_the_first_draw_then_the_spec_only():
    """The first draw's PNG is what a saved notebook's widget state shows without vega; redraws
    (every control change) skip the ~0.15 s conversion."""
    app = widgets.why_lora_fails_app(methods=("rac_lora",), steps=10)
    (record,) = app.outputs[0].outputs
    assert set(record["data"]) == {VEGALITE, "image/png", "text/plain"}
    assert base64.b64decode(record["data"]["image/png"])[:8] == PNG_MAGIC
    app.redraw()
    (record,) = app.outputs[0].outputs
    assert set(record["data"]) == {VEGALITE, "text/plain"}
    assert record["data"][VEGALITE]["layer"]


def test_output_with_static_png():
    record = viz.output(_chart(), static=True)
    assert record["output_type"] == "display_data"
    assert base64.b64decode(record["data"]["image/png"])[:8] == PNG_MAGIC


def test_an_explicit_renderer_choice_is_kept(monkeypatch):
    from lorakit import _render

    monkeypatch.setattr(alt.renderers, "_active_name", alt.renderers.active)
    alt.renderers.enable("json")
    try:
        _render.activate()
        assert alt.renderers.active == "json"
        alt.renderers.enable("default")
        _render.activate()
        assert alt.renderers.active == "lorakit"
    finally:
        alt.renderers.enable("lorakit")


# ---------------------------------------------------------------------------------------------
# viz.save
# ---------------------------------------------------------------------------------------------
def test_save_png_at_twice_the_pixel_density(tmp_path):
    path = viz.save(_chart(width=300), tmp_path / "sub" / "line.png")
    data = path.read_bytes()
    width, height = _png_size(data)
    assert width >= 600 and height > 200  # 300 px plot at scale 2, plus axes
    assert len(data) > 1000


def test_save_svg_and_pdf(tmp_path):
    svg = viz.save(_chart(), tmp_path / "line.svg").read_text()
    assert svg.startswith("<svg") and "<path" in svg and svg.rstrip().endswith("</svg>")
    pdf = viz.save(_chart(), str(tmp_path / "line.PDF")).read_bytes()
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-64:]


def test_save_different_charts_differ(tmp_path):
    a = viz.save(_chart(1.0), tmp_path / "a.svg").read_text()
    b = viz.save(_chart(-1.0), tmp_path / "b.svg").read_text()
    assert a != b


@pytest.mark.parametrize("name", ["chart.jpg", "chart", "chart.html"])
def test_save_rejects_other_suffixes(tmp_path, name):
    with pytest.raises(ValueError, match=r"path must end in one of \.png, \.svg, \.pdf"):
        viz.save(_chart(), tmp_path / name)
    assert not (tmp_path / name).exists()


def test_save_rejects_non_charts(tmp_path):
    with pytest.raises(TypeError, match="chart must be an altair chart, got int"):
        viz.save(3, tmp_path / "x.png")
    with pytest.raises(TypeError, match="path must be a str or a path, got int"):
        viz.save(_chart(), 3)


# ---------------------------------------------------------------------------------------------
# the apps' "save figure" control
# ---------------------------------------------------------------------------------------------
def test_figure_stem_is_descriptive_and_reproducible():
    values = {
        "methods": ("lora", "rac_lora"),
        "rank": 1,
        "step_factor": 0.1 + 0.05,
        "graph": "a b/c",
    }
    stem = figure_stem("why_lora_fails", values)
    assert stem == "why_lora_fails-methods=lora+rac_lora-rank=1-step_factor=0.15-graph=a_b_c"
    assert figure_stem("x", {"p": 0.1234567}) != figure_stem("x", {"p": 0.1234568})
    assert figure_stem("why_lora_fails", dict(values)) == stem
    long = figure_stem("app", {f"control_{i}": "x" * 20 for i in range(20)})
    assert len(long) == 150
    other = figure_stem("app", {f"control_{i}": "y" * 20 for i in range(20)})
    assert long != other


def test_save_button_writes_files_that_follow_the_controls(tmp_path):
    app = widgets.why_lora_fails_app(methods=("rac_lora", "lora"), steps=20)
    app.figure_dir = tmp_path
    app.save_format.value = "svg"
    app.save_button.click()
    first = sorted(tmp_path.iterdir())
    assert [p.name for p in first] == [
        "why_lora_fails-methods=rac_lora+lora-rank=1-step_factor=1-cola_steps_per_link=1-"
        "seed=0-steps=20.svg"
    ]
    assert "saved" in app.saved.value and first[0].name in app.saved.value
    before = first[0].read_text()
    app.controls["rank"].value = 2
    app.save_button.click()
    (second,) = set(tmp_path.iterdir()) - set(first)
    assert "rank=2" in second.name
    assert second.read_text().startswith("<svg") and second.read_text() != before


def test_save_figures_one_file_per_chart(tmp_path):
    def compute(slope):
        return None, [_chart(slope), _chart(-slope)], "ok"

    app = App({"slope": widgets_float(1.0)}, compute, n_charts=2, name="toy")
    paths = app.save_figures(tmp_path, "png")
    assert [p.name for p in paths] == ["toy-slope=1-fig1.png", "toy-slope=1-fig2.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in paths)
    with pytest.raises(ValueError, match="fmt must be one of"):
        app.save_figures(tmp_path, "jpg")


def test_app_name_defaults_to_the_builder():
    def toy_app():
        def compute(slope):
            return None, [_chart(slope)], "ok"

        return App({"slope": widgets_float(1.0)}, compute)

    assert toy_app().name == "toy"


def widgets_float(value):
    import ipywidgets

    return ipywidgets.FloatSlider(value=value, min=-2, max=2)


def test_save_button_before_any_chart_says_so(tmp_path):
    def compute(slope):
        raise ValueError("slope must be in [0, 1]")

    app = App({"slope": widgets_float(-1.0)}, compute, name="toy")
    app.figure_dir = tmp_path
    app.save_button.click()
    assert "nothing: no chart drawn yet" in app.saved.value
    assert list(tmp_path.iterdir()) == []


def test_a_static_html_export_shows_the_png():
    """Outside a kernel (nbconvert, as for GitHub/nbviewer/static sites) the chart is the PNG."""
    import nbformat
    from nbconvert import HTMLExporter

    cell = nbformat.v4.new_code_cell("chart", outputs=[nbformat.from_dict(viz.output(_chart()))])
    notebook = nbformat.v4.new_notebook(cells=[cell])
    nbformat.validate(notebook)
    body, _ = HTMLExporter().from_notebook_node(notebook)
    png = viz.output(_chart())["data"]["image/png"]
    assert f"data:image/png;base64,{png}" in body
