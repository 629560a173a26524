"""Tiny peft models for the model-scale tests (built in milliseconds, no download)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from lorakit.adapters import ModelProblem


class ToyMLP(nn.Module):
    """x → Linear(n, h) → tanh → Linear(h, c); Hugging Face style output with ``.loss``."""

    def __init__(self, n_in: int = 6, hidden: int = 8, n_out: int = 3):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(n_in, hidden), nn.Linear(hidden, n_out)

    def forward(self, x, labels=None):
        logits = self.fc2(torch.tanh(self.fc1(x)))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SimpleNamespace(loss=loss, logits=logits)


def toy_model(rank: int = 2, seed: int = 0, dtype=torch.float64, **config) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = dict(r=rank, lora_alpha=rank, target_modules=["fc1", "fc2"], init_lora_weights=True)
    cfg.update(config)
    return get_peft_model(ToyMLP().to(dtype), LoraConfig(**cfg))


def toy_problem(rank: int = 2, seed: int = 0, samples: int = 64, clients=None, **config):
    """A classification problem on random data; ``clients`` = number of iid clients."""
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(samples, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (samples,), generator=g)
    problem = ModelProblem(toy_model(rank, seed, **config), {"x": x, "labels": y}, name="toy")
    return problem if clients is None else problem.split(clients, seed=seed)
