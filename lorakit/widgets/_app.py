"""The app container shared by the notebooks (the fast-mode switch is :mod:`lorakit.mode`)."""

from __future__ import annotations

import contextlib
import hashlib
import html
import inspect
import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import ipywidgets as widgets
import pandas as pd
import torch

from .._validation import check_choice
from ..mode import fast_mode
from ..viz import FORMATS, output, save

__all__ = ["App", "default_device", "devices", "fast_mode", "figure_stem", "one_thread"]

#: Longest file stem :meth:`App.save_figures` writes before it shortens the name with a hash.
MAX_STEM = 150


@contextlib.contextmanager
def one_thread():
    """Run a block on one torch thread, then restore the setting. The matrix-scale apps' problems
    are small, and on a busy machine multi-threaded kernels on them cost far more than they save
    (measured: 600 QRs of an 8×2 matrix, 5 s with 2 threads under load, 0.04 s with one; the
    federated app's 10 rounds, 17 s against 0.9 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def devices() -> tuple[str, ...]:
    """The devices an app offers: ``("cuda", "cpu")`` when torch sees a CUDA GPU, else ``("cpu",)``."""
    import torch

    return ("cuda", "cpu") if torch.cuda.is_available() else ("cpu",)


def default_device() -> str:
    """``"cuda"`` when torch sees a CUDA GPU, ``"cpu"`` otherwise: where an app computes first."""
    return devices()[0]


def _takes_device(compute: Callable) -> bool:
    try:
        return "device" in inspect.signature(compute).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


def figure_stem(app: str, values: dict) -> str:
    """A file stem naming an app and its control values, e.g.
    ``why_lora_fails-methods=lora+rac_lora-rank=1-step_factor=1``: the same controls give the same
    name (no timestamp), so saved figures are reproducible. Characters other than letters, digits
    and ``._+=-`` become ``_``; a stem longer than :data:`MAX_STEM` keeps its first characters
    and a short hash of the whole."""
    parts = [app] + [f"{key}={_token(value)}" for key, value in values.items()]
    stem = re.sub(r"[^A-Za-z0-9._+=-]", "_", "-".join(parts))
    if len(stem) > MAX_STEM:
        digest = hashlib.sha1(stem.encode()).hexdigest()[:10]
        stem = f"{stem[: MAX_STEM - 11]}-{digest}"
    return stem


def _token(value) -> str:
    if isinstance(value, (tuple, list)):
        return "+".join(_token(v) for v in value)
    if isinstance(value, float):  # 12 digits: slider noise (0.15000000000000002) dropped
        return f"{value:.12g}"
    return str(value)


def _app_name(compute: Callable) -> str:
    """``why_lora_fails`` for a ``compute`` defined inside ``why_lora_fails_app``."""
    scopes = getattr(compute, "__qualname__", "app").split(".<locals>.")
    outer = scopes[-2] if len(scopes) > 1 else scopes[-1].split(".")[-1]
    return outer.removesuffix("_app") or "app"


class App(widgets.VBox):
    """Controls, a status line and chart outputs; any control change recomputes and redraws.

    ``compute(**values)`` gets the controls' values by name and returns (frame, charts, status
    HTML). After each redraw ``frame``, ``charts``, ``status`` and ``redraw_seconds`` hold the
    results; a ``ValueError`` from bad input is shown in the status line and leaves the charts.
    With ``progress=True`` whatever ``compute`` prints (its tqdm bars) appears above the charts.

    Every app has a ``device`` control (:func:`devices`; default :func:`default_device`, CUDA
    when torch sees a GPU): ``compute`` gets ``device=`` the chosen one when its signature has a
    ``device`` parameter (it builds its problems there, e.g. ``problems.counterexample(device=...)``).
    For a ``compute`` without one, or a machine without CUDA, the control is shown disabled with a
    tooltip that says why, rather than offering a choice that would do nothing. The device is not
    part of :attr:`values` (nor of figure names): it changes where, not what, the app computes.

    The "save figure" button writes the current charts in the format next to it (PNG, SVG, PDF)
    to :attr:`figure_dir` (default ``figures/``), named by :func:`figure_stem` from ``name``
    (default: the function that built the app, less ``_app``) and the controls' values; see
    :meth:`save_figures`.

    ``compute`` runs on one torch thread (:func:`one_thread`; the class attribute
    :attr:`one_thread` is False for apps that train real models).
    """

    #: Run ``compute`` on one torch thread (the matrix-scale apps; see :func:`one_thread`).
    one_thread = True

    def __init__(
        self,
        controls: dict,
        compute: Callable,
        n_charts: int = 1,
        *,
        progress: bool = False,
        name: str | None = None,
    ):
        self.controls = controls
        self._compute = compute
        self.name = name if name is not None else _app_name(compute)
        self.figure_dir = Path("figures")
        self.outputs = [widgets.Output() for _ in range(n_charts)]
        self.status = widgets.HTML()
        self.progress = widgets.Output() if progress else None
        self.frame: pd.DataFrame | None = None
        self.charts: list = []
        self.redraw_seconds = math.nan
        self.save_button = widgets.Button(
            description="save figure",
            icon="download",
            tooltip="write the charts shown, named by the app and its controls, to figures/",
        )
        self.save_format = widgets.Dropdown(
            options=FORMATS, value="png", layout=widgets.Layout(width="5em")
        )
        self.saved = widgets.HTML()
        self.device = self._device_control(compute)
        self.save_button.on_click(lambda _: self._on_save())
        box = widgets.HBox(
            [widgets.VBox(list(controls.values())[:3]), widgets.VBox(list(controls.values())[3:])]
        )
        self.save_bar = widgets.HBox([self.device, self.save_button, self.save_format, self.saved])
        log = [self.progress] if progress else []
        super().__init__([box, self.save_bar, self.status, *log, *self.outputs])
        # CSS classes name the parts for the browser test (tests/browser) and for custom styles.
        self.add_class("lorakit-app")
        self.save_button.add_class("lorakit-save")
        for name, control in controls.items():
            control.add_class(f"lorakit-control-{name}")
            control.observe(self._on_change, names="value")
        self.device.add_class("lorakit-device")
        self.device.observe(self._on_change, names="value")
        self.redraw(static=True)

    def _repr_mimebundle_(self, **kwargs):
        """The widget view, plus an HTML note for a page without a kernel (the book, nbviewer,
        GitHub), where the controls cannot run: JupyterLab shows the widget, those show the note
        with the app's status line at its default controls."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is not None:
            bundle["text/html"] = (
                f'<div class="lorakit-app-static"><p><em>Interactive app <code>{html.escape(self.name)}'
                "</code>: its controls need a running kernel. Open this notebook in JupyterLab "
                "(<code>make lab</code>) or on Binder to use it.</em></p>"
                f"<p>At its default controls: {self.status.value}</p></div>"
            )
        return bundle

    @property
    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    @staticmethod
    def _device_control(compute: Callable) -> widgets.Dropdown:
        options = devices()
        control = widgets.Dropdown(
            options=options,
            value=options[0],
            description="device",
            layout=widgets.Layout(width="12em"),
        )
        if not _takes_device(compute):
            control.disabled = True
            control.tooltip = "this app computes on the CPU: its compute() takes no device"
        elif len(options) == 1:
            control.disabled = True
            control.tooltip = "torch sees no CUDA GPU: the app computes on the CPU"
        else:
            control.tooltip = "where the app computes (CUDA when torch sees a GPU)"
        return control

    @property
    def compute_arguments(self) -> dict:
        """What ``compute`` gets: :attr:`values`, plus ``device`` when it takes one."""
        values = self.values
        if _takes_device(self._compute):
            values["device"] = self.device.value
        return values

    def _on_change(self, change) -> None:
        self.redraw()

    def redraw(self, *, static: bool = False) -> None:
        """Recompute and redraw. The charts' outputs hold the Vega-Lite spec; with ``static`` (the
        first draw, when the app is built) also a PNG copy, so that a saved notebook's widget state
        shows the app's charts where no vega runs (nbviewer, the book of ``make book``): about
        0.15 s per chart, paid once rather than on every control change. The first draw also
        checks each spec against the Vega-Lite schema; later redraws skip that check (about half
        the time spent turning charts into specs, measured on the federated app), since their
        specs come from the same chart functions, whose specs the unit tests validate."""
        start = time.perf_counter()
        try:
            with one_thread() if self.one_thread else contextlib.nullcontext():
                if self.progress is None:
                    frame, charts, status = self._compute(**self.compute_arguments)
                else:
                    self.progress.clear_output()
                    with self.progress:
                        frame, charts, status = self._compute(**self.compute_arguments)
        except ValueError as error:
            self.status.value = f"<span style='color:#c00'>{html.escape(str(error))}</span>"
            return
        for out, chart in zip(self.outputs, charts, strict=True):
            spec = chart.to_dict(validate=static) if hasattr(chart, "to_dict") else chart
            out.outputs = (output(spec, static=static),)
        self.frame, self.charts = frame, charts
        self.redraw_seconds = time.perf_counter() - start
        self.status.value = f"{status} <i>({self.redraw_seconds:.2f} s)</i>"

    def save_figures(self, folder=None, fmt: str | None = None) -> list[Path]:
        """Write the charts shown to ``folder`` (default :attr:`figure_dir`) as ``fmt`` (default
        the dropdown's, one of png, svg, pdf), one file per chart named
        ``<figure_stem>[-fig<i>].<fmt>``; returns the paths."""
        fmt = check_choice("fmt", fmt if fmt is not None else self.save_format.value, FORMATS)
        folder = Path(folder) if folder is not None else self.figure_dir
        stem = figure_stem(self.name, self.values)
        several = len(self.charts) > 1
        return [
            save(chart, folder / f"{stem}{f'-fig{i + 1}' if several else ''}.{fmt}")
            for i, chart in enumerate(self.charts)
        ]

    def _on_save(self) -> None:
        try:
            paths = self.save_figures()
        except (ValueError, OSError) as error:
            self.saved.value = f"<span style='color:#c00'>{html.escape(str(error))}</span>"
            return
        names = ", ".join(html.escape(str(p)) for p in paths) or "nothing: no chart drawn yet"
        self.saved.value = f"<small>saved {names}</small>"
