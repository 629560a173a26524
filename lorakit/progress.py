"""Progress bars every run draws, and that an app can watch and stop (notebook 07's Run/Cancel):
:func:`bar` is the one bar of lorakit's runs, and every engine checks :func:`stop_requested` before
each step (round, hop, update)."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable

__all__ = ["bar", "report_progress", "stop_requested"]

_LOCAL = threading.local()


@contextlib.contextmanager
def report_progress(factory: Callable):
    """Within the block, in this thread only, every run draws its bar with
    ``factory(total=..., desc=...)`` whatever its ``progress`` (e.g. an ipywidgets bar: it needs
    ``update()``, ``set_postfix(**kw, refresh=...)`` and the context-manager protocol); a true
    ``stop`` attribute ends the run before its next step, keeping the rows logged so far."""
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    previous = getattr(_LOCAL, "factory", None)
    _LOCAL.factory = factory
    try:
        yield factory
    finally:
        _LOCAL.factory = previous


def bar(iterable=None, *, enabled: bool, total: int | None = None, desc: str | None = None):
    """The bar of a run, over ``iterable`` or of ``total`` manual updates: inside
    :func:`report_progress` (manual bars only) the installed factory's, else ``tqdm.auto``'s,
    silent unless ``enabled``. In a notebook the saved text copy of tqdm's widget (what GitHub,
    nbviewer, ``make book`` and PDF show) is the bar as first displayed, 0%: this bar updates it
    under the same display id when it closes, so the saved text says where the run ended."""
    factory = getattr(_LOCAL, "factory", None)
    if factory is not None and iterable is None:
        return factory(total=total, desc=desc)
    from tqdm.auto import tqdm
    from tqdm.notebook import tqdm_notebook

    if enabled and issubclass(tqdm, tqdm_notebook):
        return _saved_bar()(iterable, total=total, desc=desc)
    return tqdm(iterable, total=total, desc=desc, disable=not enabled)


def stop_requested(bar) -> bool:
    """True when ``bar`` (from :func:`report_progress`'s factory) asks its run to stop early."""
    return bool(getattr(bar, "stop", False))


@functools.cache
def _saved_bar() -> type:
    """tqdm's notebook bar whose displayed output is updated in place when it closes."""
    from IPython.display import display
    from tqdm.notebook import tqdm_notebook

    class SavedBar(tqdm_notebook):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, display=False, **kwargs)
            self.handle = display(self.container, display_id=True)
            self.displayed = True

        def close(self):
            super().close()
            handle, self.handle = getattr(self, "handle", None), None
            if handle is not None:  # the final text replaces the 0% one in the saved output
                handle.update(self.container)

    return SavedBar
