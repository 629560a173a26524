"""The app container shared by the notebooks, and the fast-mode switch."""

from __future__ import annotations

import html
import math
import os
import time
from collections.abc import Callable

import ipywidgets as widgets
import pandas as pd

__all__ = ["App", "fast_mode"]


def fast_mode() -> bool:
    """True when the environment variable ``LORAKIT_FAST`` is ``1`` (also true/yes/on): CI mode."""
    return os.environ.get("LORAKIT_FAST", "").strip().lower() in ("1", "true", "yes", "on")


def _default(value, normal, fast):
    return value if value is not None else (fast if fast_mode() else normal)


def _mimebundle(chart) -> dict:
    """The output record of a chart under the active altair renderer (no IPython shell needed)."""
    bundle = chart._repr_mimebundle_()
    data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
    return {"output_type": "display_data", "data": data, "metadata": metadata or {}}


class App(widgets.VBox):
    """Controls, a status line and chart outputs; any control change recomputes and redraws.

    ``compute(**values)`` gets the controls' values by name and returns (frame, charts, status
    HTML). After each redraw ``frame``, ``charts``, ``status`` and ``redraw_seconds`` hold the
    results; a ``ValueError`` from bad input is shown in the status line and leaves the charts.
    With ``progress=True`` whatever ``compute`` prints (its tqdm bars) appears above the charts.
    """

    def __init__(
        self, controls: dict, compute: Callable, n_charts: int = 1, *, progress: bool = False
    ):
        self.controls = controls
        self._compute = compute
        self.outputs = [widgets.Output() for _ in range(n_charts)]
        self.status = widgets.HTML()
        self.progress = widgets.Output() if progress else None
        self.frame: pd.DataFrame | None = None
        self.charts: list = []
        self.redraw_seconds = math.nan
        box = widgets.HBox(
            [widgets.VBox(list(controls.values())[:3]), widgets.VBox(list(controls.values())[3:])]
        )
        log = [self.progress] if progress else []
        super().__init__([box, self.status, *log, *self.outputs])
        for control in controls.values():
            control.observe(self._on_change, names="value")
        self.redraw()

    @property
    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def _on_change(self, change) -> None:
        self.redraw()

    def redraw(self) -> None:
        start = time.perf_counter()
        try:
            if self.progress is None:
                frame, charts, status = self._compute(**self.values)
            else:
                self.progress.clear_output()
                with self.progress:
                    frame, charts, status = self._compute(**self.values)
        except ValueError as error:
            self.status.value = f"<span style='color:#c00'>{html.escape(str(error))}</span>"
            return
        for out, chart in zip(self.outputs, charts, strict=True):
            out.outputs = (_mimebundle(chart),)
        self.frame, self.charts = frame, charts
        self.redraw_seconds = time.perf_counter() - start
        self.status.value = f"{status} <i>({self.redraw_seconds:.2f} s)</i>"
