"""The last good state of a model-scale run: what a diverged run leaves in the model.

A model-scale run that diverges (:mod:`lorakit.divergence`) must not leave exploded or NaN weights
in the user's model. The runners that write into the model step by step (the FSLoRA family and
Fed-RAC-LoRA, :mod:`lorakit.adapters.federated`) keep a :class:`LastGood` copy of what a step can
change, every site's base weight W0, factors B and A, their ``requires_grad`` flags and scaling,
taken each time a state passes the divergence check (every logged step), and put it back when the
run diverges. Nothing else of the model is
copied: per logged step the cost is one copy of the adapted weights (Σ_l m_l n_l + r(m_l + n_l)
entries), not of the whole model.

The runners that keep their state outside the model and write it back at the end (the chain's
tree of weights, :mod:`lorakit.chain`; RW-LoRA's token, gossip's node adapters, AsyncFL's global
model: :mod:`lorakit.decentralized.simulation`, :mod:`lorakit.asynchronous.clock`) write back the
last checked state instead, which costs nothing (they keep references to it).
"""

from __future__ import annotations

import torch

from ..divergence import restored_note
from .sites import Site

__all__ = ["LastGood", "site_state"]


def site_state(site_list: list[Site]) -> list[tuple]:
    """Copies of every site's (W0, B, A) as stored, their requires_grad flags and the scaling."""
    with torch.no_grad():
        return [
            (
                tuple(t.detach().clone() for t in (s.base, s.B, s.A)),
                tuple(t.requires_grad for t in (s.base, s.B, s.A)),
                s.scaling,
            )
            for s in site_list
        ]


class LastGood:
    """The sites' state at the last step whose loss passed the divergence check.

    ``keep(step)`` copies the current state (or takes one from :func:`site_state`);
    ``restore()`` writes it back into the same tensors and returns the sentence the
    :class:`~lorakit.divergence.DivergenceError` ends with; ``rollback(error)`` does both.
    """

    def __init__(self, site_list: list[Site], unit: str = "step"):
        self.sites, self.unit = site_list, unit
        self.keep(0)

    def keep(self, step: int, state: list[tuple] | None = None) -> None:
        self.step = step
        self.state = site_state(self.sites) if state is None else state

    def restore(self) -> str:
        with torch.no_grad():
            for site, (values, flags, scaling) in zip(self.sites, self.state, strict=True):
                for tensor, value, flag in zip(
                    (site.base, site.B, site.A), values, flags, strict=True
                ):
                    tensor.copy_(value)
                    tensor.requires_grad_(flag)
                site.scaling = scaling
        return restored_note(self.unit, self.step)

    def rollback(self, error):
        """Restore the state and say so in ``error``'s message (returns the error)."""
        return error.append(self.restore())
