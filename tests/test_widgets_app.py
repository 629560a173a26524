"""The shared app container's device control, and progress bars that survive in saved notebooks."""

from __future__ import annotations

import ipywidgets as widgets
import nbformat
import pandas as pd
import pytest
import torch
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from lorakit.widgets import _app
from lorakit.widgets._app import App, default_device, devices


def _recording_app(with_device: bool):
    seen = []
    frame = pd.DataFrame({"x": [0.0]})

    if with_device:

        def compute(k, device):
            seen.append((k, device))
            return frame, [], f"k={k}"
    else:

        def compute(k):
            seen.append((k, None))
            return frame, [], f"k={k}"

    app = App({"k": widgets.IntSlider(value=1, min=1, max=3)}, compute, n_charts=0, name="t")
    return app, seen


@pytest.fixture
def cuda(monkeypatch):
    """Pretend torch sees (True) or does not see (False) a CUDA GPU."""

    def set_cuda(available: bool):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)

    return set_cuda


def test_without_cuda_the_device_is_the_cpu_and_the_control_says_why(cuda):
    cuda(False)
    assert devices() == ("cpu",) and default_device() == "cpu"
    app, seen = _recording_app(with_device=True)
    assert seen == [(1, "cpu")]
    assert app.device.options == ("cpu",) and app.device.disabled
    assert "no CUDA" in app.device.tooltip
    assert app.device in app.save_bar.children


def test_with_cuda_the_app_defaults_to_it_and_passes_the_choice_on(cuda):
    cuda(True)
    assert devices() == ("cuda", "cpu") and default_device() == "cuda"
    app, seen = _recording_app(with_device=True)
    assert seen == [(1, "cuda")]
    assert not app.device.disabled
    app.device.value = "cpu"  # redraws on the CPU
    app.controls["k"].value = 2
    assert seen == [(1, "cuda"), (1, "cpu"), (2, "cpu")]
    assert app.values == {"k": 2}  # the device is not part of the values nor the figure names
    assert app.compute_arguments == {"k": 2, "device": "cpu"}
    assert "device" not in _app.figure_stem(app.name, app.values)


def test_a_compute_without_device_gets_none_and_the_control_is_disabled(cuda):
    cuda(True)
    app, seen = _recording_app(with_device=False)
    assert seen == [(1, None)]  # no device= passed (that would be a TypeError)
    assert app.device.disabled and "takes no device" in app.device.tooltip
    assert app.compute_arguments == {"k": 1}


def test_progress_bar_text_in_a_saved_notebook_shows_the_final_count():
    """tqdm's notebook widget carries a text/plain copy, what static copies show; each seed's bar
    must say 5/5 at the end, not the 0% it had when first displayed."""
    source = (
        "import lorakit as lk\n"
        "p = lk.problems.counterexample()\n"
        'f = lk.run("rac_lora", p, steps=5, seeds=range(3), rank=1, gamma=1 / p.L, progress=True)'
    )
    nb = new_notebook(
        cells=[new_code_cell(source)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = [o for o in nb.cells[0].outputs if o.output_type == "display_data"]
    assert len(outputs) == 3, nbformat.writes(nb)  # one bar per seed, over its steps
    for seed, out in enumerate(outputs):
        data = out["data"]
        assert "application/vnd.jupyter.widget-view+json" in data  # still the live widget
        text = data["text/plain"]
        assert "100%" in text and "5/5" in text and f"seed {seed}" in text, text


def test_first_draw_carries_a_png_copy_and_redraws_the_spec_only(cuda):
    import altair as alt

    cuda(False)
    frame = pd.DataFrame({"x": [0, 1, 2], "y": [1.0, 0.5, 0.2]})

    def compute(k):
        chart = alt.Chart(frame.assign(y=frame.y * k)).mark_line().encode(x="x", y="y")
        return frame, [chart], f"k={k}"

    app = App({"k": widgets.IntSlider(value=1, min=1, max=3)}, compute, n_charts=1, name="t")
    (first,) = app.outputs[0].outputs
    assert set(first["data"]) == {"application/vnd.vegalite.v5+json", "image/png", "text/plain"}
    app.controls["k"].value = 2
    (second,) = app.outputs[0].outputs
    assert set(second["data"]) == {"application/vnd.vegalite.v5+json", "text/plain"}
    assert (
        second["data"]["application/vnd.vegalite.v5+json"]
        != first["data"]["application/vnd.vegalite.v5+json"]
    )


def test_compute_runs_on_one_torch_thread_and_the_setting_is_restored():
    """Matrix-scale redraws run on one torch thread (``App.one_thread``); the caller's setting
    comes back afterwards, and an app that opts out keeps it."""
    torch.set_num_threads(2)
    try:
        seen = []

        def compute(k):
            seen.append(torch.get_num_threads())
            return pd.DataFrame({"x": [0.0]}), [], ""

        app = App({"k": widgets.IntSlider(value=1, min=1, max=3)}, compute, n_charts=0)
        app.controls["k"].value = 2
        assert seen == [1, 1] and torch.get_num_threads() == 2

        class ManyThreads(App):
            one_thread = False

        seen.clear()
        ManyThreads({"k": widgets.IntSlider(value=1, min=1, max=3)}, compute, n_charts=0)
        assert seen == [2]
    finally:
        torch.set_num_threads(1)


def test_outside_a_kernel_an_app_shows_a_note_with_its_status(cuda):
    """The widget view for JupyterLab; a text/html note for the book, nbviewer and GitHub, which
    cannot run the controls, holding the status line at the current controls."""
    cuda(False)
    app, _ = _recording_app(with_device=False)
    app.controls["k"].value = 3
    bundle = app._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == app.model_id
    note = bundle["text/html"]
    assert "Interactive app <code>t</code>" in note and "need a running kernel" in note
    assert "k=3" in note
