"""The logging loop shared by the decentralized simulations (RW-LoRA hops, gossip rounds)."""

from __future__ import annotations

import pandas as pd

from ..divergence import DivergenceError, exploded


def run_logged(
    sim, advance, count: int, log_every: int, first_record: dict, unit: str
) -> list[dict]:
    """Advance ``sim`` ``count`` times, logging every ``log_every``-th state and the last one.

    ``advance()`` performs one hop or round and returns its record; ``sim.log(record)`` makes a row.
    A loss that explodes (:func:`lorakit.divergence.exploded` with ``sim.blowup``) raises
    :class:`DivergenceError` naming the ``unit`` ("hop", "round") with the rows so far.
    ``sim.checked`` holds (t, A, B) of the last logged state that passed the check (references, no
    copy): the last good state a model-scale run writes back.
    """
    if not sim.rows:
        sim.rows.append(sim.log(first_record))
        sim.checked = (sim.t, sim.A, sim.B)
    first = sim.rows[0]["loss"]
    for k in range(count):
        record = advance()
        if sim.t % log_every == 0 or k == count - 1:
            sim.rows.append(sim.log(record))
            loss = sim.rows[-1]["loss"]
            if exploded(loss, first, sim.blowup):
                raise DivergenceError(
                    f"{sim.cfg.method} diverged at {unit} {sim.t} (seed {sim.seed}): the loss is "
                    f"{loss:g}. Lower lr = {sim.cfg.lr:g}",
                    step=sim.t,
                    seed=sim.seed,
                    frame=pd.DataFrame(sim.rows),
                )
            sim.checked = (sim.t, sim.A, sim.B)
    return sim.rows
