"""Method configurations as scikit-learn treats an estimator's parameters: inert and comparable.

Every configuration (:class:`~lorakit.chain.Chain`, the federated, decentralized and asynchronous
ones) is a frozen dataclass deriving from :class:`Config`: building one only validates its
fields (naming the argument and its allowed range); it holds no data and no state, so two equal
configurations compare equal, a configuration can be reused for any number of runs, and
:meth:`Config.with_params` gives a validated copy with some fields changed.
"""

from __future__ import annotations

from dataclasses import field, fields, replace

import pandas as pd

__all__ = ["Config", "deprecated"]


def deprecated():
    """A field kept only as the deprecated name of another (e.g. ``lr`` for ``gamma``): None
    after validation, not compared, not shown, not among :meth:`Config.get_params`."""
    return field(default=None, repr=False, compare=False, metadata={"deprecated": True})


class Config:
    """Base of every method configuration (a frozen dataclass; module docstring)."""

    def get_params(self) -> dict:
        """Every field and its value (scikit-learn's ``get_params``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata}

    def with_params(self, **changes):
        """A copy with some fields replaced, validated again (scikit-learn's ``set_params``,
        without mutation)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters: {', '.join(f.name for f in fields(self))}"
            )
        return replace(self, **changes)

    def describe(self) -> dict:
        """The configuration's columns in a results table (method name first)."""
        raise NotImplementedError

    def frame(self, rows: list[dict]) -> pd.DataFrame:
        """A run's rows as its tidy table: the :meth:`describe` columns first, then the rows'."""
        frame = pd.DataFrame(rows)
        for key, value in reversed(self.describe().items()):
            frame.insert(0, key, value)
        return frame
