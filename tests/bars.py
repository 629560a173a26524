"""A progress bar for the tests of Cancel (lorakit.progress.report_progress)."""

from __future__ import annotations


class StopAfter:
    """A bar that asks its run to stop once it has counted 3 steps (rounds, hops, updates), as
    notebook 07's Cancel does."""

    def __init__(self, total=None, desc=None):
        self.n = 0

    @property
    def stop(self):
        return self.n >= 3

    def update(self, n=1):
        self.n += n

    def set_postfix(self, refresh=True, **values):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass
