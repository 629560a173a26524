"""The registered methods: named configurations of one :class:`~lorakit.chain.Chain` engine.

=================  ======================  ================  ==========================
method             coin                    links             default update
=================  ======================  ================  ==========================
``lora``           both factors            one, no restart   ``sgd`` (plain GD on B, A)
``asymm_lora``     always one side         one, no restart   ``projected``
``cola``           both factors            K steps each      ``sgd``
``rac_lora``       left, right, alternate  K steps each      ``projected``
``bernoulli_lora`` Bernoulli(p)            K steps each      ``projected``
=================  ======================  ================  ==========================

LoRA is a chain of one link training both factors; COLA merges and restarts it; AsymmLoRA is
RAC-LoRA with T = 1 (the sketch is never redrawn); RAC-LoRA left/right is Bernoulli-LoRA with
p = 1/0. The non-smooth Bernoulli-LoRA (Algorithm 3) is ``bernoulli_lora`` on a non-smooth problem
with a constant ``gamma`` or ``gamma="polyak"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ._validation import check_choice
from .chain import Chain
from .coins import alternating, always, bernoulli, both

__all__ = ["METHODS", "Method", "make", "run"]


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    paper: str
    build: Callable[..., Chain]


def _lora(rank, gamma, *, update="sgd", **kw) -> Chain:
    return Chain(rank, gamma, coin=both(), steps_per_link=None, update=update, method="lora", **kw)


def _asymm_lora(rank, gamma, *, side="left", **kw) -> Chain:
    return Chain(rank, gamma, coin=always(side), steps_per_link=None, method="asymm_lora", **kw)


def _cola(rank, gamma, *, steps_per_link=1, update="sgd", **kw) -> Chain:
    return Chain(
        rank, gamma, coin=both(), steps_per_link=steps_per_link, update=update, method="cola", **kw
    )


def _rac_lora(rank, gamma, *, side="left", **kw) -> Chain:
    check_choice("side", side, ("left", "right", "alternating"))
    coin = alternating() if side == "alternating" else always(side)
    return Chain(rank, gamma, coin=coin, method="rac_lora", **kw)


def _bernoulli_lora(rank, gamma, *, p=0.5, **kw) -> Chain:
    return Chain(rank, gamma, coin=bernoulli(p), method="bernoulli_lora", **kw)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("lora", "LoRA: train B and A jointly from (B=0, A random), no restart",
               "Hu et al. 2021; RAC-LoRA §2.1", _lora),
        Method("asymm_lora", "AsymmLoRA: one random frozen factor for the whole run",
               "Zhu et al. 2024; RAC-LoRA §2.2", _asymm_lora),
        Method("cola", "COLA: train both factors, merge and restart every K steps",
               "Xia et al. 2024; RAC-LoRA §2.3", _cola),
        Method("rac_lora", "RAC-LoRA: fresh frozen sketch each link (left, right or alternating)",
               "RAC-LoRA Algorithm 1", _rac_lora),
        Method("bernoulli_lora", "Bernoulli-LoRA: a Be(p) coin picks the trained factor each link",
               "Bernoulli-LoRA Algorithms 1-6", _bernoulli_lora),
    )
}  # fmt: skip


def make(method: str, rank: int, gamma: float | str, **kwargs) -> Chain:
    """The :class:`Chain` of a registered method, e.g. ``make("bernoulli_lora", 2, 0.1, p=0.3)``."""
    check_choice("method", method, METHODS)
    return METHODS[method].build(rank, gamma, **kwargs)


def run(method: str, problem, steps: int, seeds=0, *, rank: int, gamma, **kwargs):
    """``make(method, rank, gamma, **config).run(problem, steps, seeds)``; run options
    ``log_every``, ``on_divergence``, ``blowup`` and ``progress`` are passed through. ``problem`` is a matrix
    problem or a :class:`~lorakit.adapters.ModelProblem`."""
    run_kw = {
        k: kwargs.pop(k)
        for k in ("log_every", "on_divergence", "blowup", "progress")
        if k in kwargs
    }
    return make(method, rank, gamma, **kwargs).run(problem, steps, seeds, **run_kw)
