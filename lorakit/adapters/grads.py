"""Gradients at model scale: ∇_W f for every site, from one backward pass.

The matrix algorithms are written in terms of G = ∇_W f (RAC-LoRA eqs. (3)–(4), Bernoulli-LoRA
Lemma 10, FSLoRA Lemma 3.2). A peft layer computes base(x) + s·B·A·x, which is linear in
W = W0 + s·B·A, so ∂f/∂W0 = ∂f/∂W: switching on the base weight's gradient gives G exactly, and
the factor gradients follow from it by the chain rule (∇_A = s·BᵀG, ∇_B = s·G·Aᵀ).
"""

from __future__ import annotations

import torch

from .problem import ModelProblem
from .sites import freeze

__all__ = ["site_gradients"]


def site_gradients(problem: ModelProblem, batch: dict) -> tuple[float, list[torch.Tensor]]:
    """(loss on ``batch``, [∇_W f for each site]) with the factors frozen during the pass."""
    freeze(problem.sites, "none")
    for site in problem.sites:
        site.track_W(True)
        site.base.grad = None
    try:
        loss = problem.objective(batch)
        loss.backward()
        grads = [site.grad_W().clone() for site in problem.sites]
    finally:
        for site in problem.sites:
            site.track_W(False)
    return float(loss.detach()), grads
