"""Progress bars an app can watch and stop: how notebook 07's Run/Cancel reaches a model run.

:func:`report_progress` installs, for the current thread, a factory that every model-scale chain
and federated run then uses for its step (round) bar instead of tqdm; :func:`stop_requested` is
what those runs check before each step, so a bar whose ``stop`` is true ends the run early with
the rows logged so far (the engines log the step reached).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

__all__ = ["progress_bar", "report_progress", "stop_requested"]

_LOCAL = threading.local()


@contextlib.contextmanager
def report_progress(factory: Callable):
    """Within the block, in this thread only, every model-scale chain or federated run draws its
    step/round bar with ``factory(total=..., desc=...)`` (whatever its ``progress``), e.g. an
    ipywidgets progress bar. The object needs ``update()``, ``set_postfix(**kw, refresh=...)``
    and the context-manager protocol; when its ``stop`` attribute is true the run ends before its
    next step (round) and keeps the rows logged so far.
    """
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    previous = getattr(_LOCAL, "factory", None)
    _LOCAL.factory = factory
    try:
        yield factory
    finally:
        _LOCAL.factory = previous


def progress_bar(*, enabled: bool, total: int, desc: str | None = None):
    """The bar of ``total`` manual updates a run draws: the installed factory's, else tqdm's
    (silent unless ``enabled``)."""
    factory = getattr(_LOCAL, "factory", None)
    if factory is not None:
        return factory(total=total, desc=desc)
    from .chain import _progress

    return _progress(enabled=enabled, total=total, desc=desc)


def stop_requested(bar) -> bool:
    """True when ``bar`` (from :func:`report_progress`'s factory) asks its run to stop early."""
    return bool(getattr(bar, "stop", False))
