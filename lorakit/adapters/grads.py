"""Gradients and randomness at model scale (:class:`~lorakit.adapters.ModelProblem`).

The algorithms are written in G = ∇_W f (RAC-LoRA eqs. (3)–(4), Bernoulli-LoRA Lemma 10, FSLoRA
Lemma 3.2). A peft layer computes base(x) + s·B·A·x, linear in W = W0 + s·B·A, so ∂f/∂W0 = ∂f/∂W:
the base weight's gradient is G exactly, from the same backward pass that fills the factors'
(∇_A = s·BᵀG, ∇_B = s·G·Aᵀ), unless LoRA dropout (:func:`dropout_active`) feeds the adapter
another input than the base weight.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..rng import Streams
from .sites import Site, freeze, swapped

if TYPE_CHECKING:
    from .problem import ModelProblem

__all__ = ["at_weights", "backward", "dropout_active", "model_rng", "site_gradients"]


def site_gradients(problem: ModelProblem, batch: dict) -> tuple[float, list[torch.Tensor]]:
    """(loss on ``batch``, [∇_W f for each site]) with the factors frozen during the pass."""
    with torch.no_grad():
        loss = float(problem.objective(batch))
    return loss, backward(problem, [(batch, 1.0)], "none", want_G=True)


def dropout_active(site: Site) -> bool:
    """True when the site's LoRA dropout is a real dropout in training mode."""
    dropout = site.layer.lora_dropout[site.adapter]
    return not isinstance(dropout, nn.Identity) and dropout.training


def backward(problem: ModelProblem, batches, side: str, want_G: bool) -> list | None:
    """Σ_c w_c ∇f_c by autograd: the trained factors' ``.grad`` for ``side`` and, with ``want_G``,
    [∇_W f for each site] (the chunked, side-aware form of :func:`site_gradients`)."""
    sites = problem.sites
    for p in freeze(sites, side):  # the freeze guard: only the trained factors get gradients
        p.grad = None
    for site in sites:
        site.base.grad = None
        site.track_W(want_G)
    try:
        with torch.enable_grad():  # also when called under no_grad (the matrix engine's log)
            for batch, weight in batches:
                (problem.objective(batch) * weight).backward()
        return [site.grad_W().clone() for site in sites] if want_G else None
    finally:
        for site in sites:
            site.track_W(False)


@contextmanager
def model_rng(streams: Streams, device: torch.device):
    """The global torch generator (the model's dropout) seeded from the ``model`` stream, forked."""
    seed = int(torch.randint(0, 2**62, (), generator=streams["model"]))
    devices = []  # the CUDA device to fork besides the CPU, if any
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        yield


@contextmanager
def at_weights(site_list: list[Site], W):
    """The model computing W_l at every site (base ← W_l, a zero rank-1 adapter); restored after:
    the protocol's ``loss(W)`` and ``grad(W)`` at any weights (PAGE's and MVR's previous iterate,
    an asynchronous client's stale one)."""
    saved = [site.W0.clone() for site in site_list]
    zeros = [(_frozen(site.B.new_zeros(site.shape[0], 1)),
              _frozen(site.A.new_zeros(1, site.shape[1]))) for site in site_list]  # fmt: skip
    with swapped(site_list, zeros):
        try:
            for site, Wl in zip(site_list, W, strict=True):
                site.W0 = Wl
            yield
        finally:
            for site, W0 in zip(site_list, saved, strict=True):
                site.W0 = W0


def _frozen(x: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(x, requires_grad=False)
