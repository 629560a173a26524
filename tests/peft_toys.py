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


# -- one toy per further site kind (tests/test_sites_kinds.py) -----------------------------------
class ToyEmbedding(nn.Module):
    """token ids (N, T) → Embedding(vocab, dim) → mean over T → tanh → Linear(dim, c)."""

    def __init__(self, vocab: int = 12, dim: int = 5, n_out: int = 3):
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab, dim), nn.Linear(dim, n_out)

    def forward(self, input_ids, labels=None):
        logits = self.head(torch.tanh(self.emb(input_ids).mean(1)))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SimpleNamespace(loss=loss, logits=logits)


class ToyConv(nn.Module):
    """images (N, 2, 6, 6) → Conv2d(2, 4, 3, stride 2, padding 1) → tanh → Linear(36, c)."""

    def __init__(self, n_out: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4 * 3 * 3, n_out)

    def forward(self, x, labels=None):
        logits = self.head(torch.tanh(self.conv(x)).flatten(1))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SimpleNamespace(loss=loss, logits=logits)


def kind_model(kind: str, rank: int = 2, seed: int = 0, **config) -> nn.Module:
    """``ToyEmbedding`` (LoRA on ``emb``, ``head``) or ``ToyConv`` (``conv``, ``head``), float64."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    net, targets = {
        "embedding": (ToyEmbedding, ["emb", "head"]),
        "conv": (ToyConv, ["conv", "head"]),
    }[kind]
    cfg = dict(r=rank, lora_alpha=rank, target_modules=targets)
    cfg.update(config)
    return get_peft_model(net().to(torch.float64), LoraConfig(**cfg))


def kind_data(kind: str, samples: int = 64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed + 1)
    if kind == "embedding":
        x = {"input_ids": torch.randint(0, 12, (samples, 4), generator=g)}
    else:
        x = {"x": torch.randn(samples, 2, 6, 6, generator=g, dtype=torch.float64)}
    return {**x, "labels": torch.randint(0, 3, (samples,), generator=g)}


def kind_problem(
    kind: str, rank: int = 2, seed: int = 0, samples: int = 64, clients=None, **config
):
    """A classification problem on random data with an embedding or a conv site."""
    model = kind_model(kind, rank, seed, **config)
    problem = ModelProblem(model, kind_data(kind, samples, seed), name=kind)
    return problem if clients is None else problem.split(clients, seed=seed)


# -- the one-site toy as a matrix problem: the same f, written out without peft ----------------
def _toy_client_loss(toy: ModelProblem, W: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The toy's mean loss on ``rows`` with fc1's weight W (the hand oracle; fc1 is the site)."""
    fc1 = toy.sites[0].layer.get_base_layer()
    fc2 = toy.model.base_model.model.fc2
    x, y = toy.data["x"][rows], toy.data["labels"][rows]
    logits = torch.tanh(x @ W.T + fc1.bias) @ fc2.weight.T + fc2.bias
    return nn.functional.cross_entropy(logits, y)


def _toy_client(toy: ModelProblem, client: int, W0: torch.Tensor):
    from lorakit.problems.base import MatrixProblem

    rows = toy.clients[client]

    class ToyClient(MatrixProblem):
        """Client c of the one-site toy: f_c(W) = its mean loss with fc1's weight W."""

        def loss(self, W):
            with torch.no_grad():
                if W.dim() > 2:
                    return torch.stack([self.loss(w) for w in W])
                return _toy_client_loss(toy, W, rows)

        def grad(self, W, idx=None):
            if W.dim() > 2:
                return torch.stack([self.grad(w, idx) for w in W])
            W = W.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                f = _toy_client_loss(toy, W, rows if idx is None else rows[idx])
                return torch.autograd.grad(f, W)[0]

    m, n = W0.shape
    return ToyClient(m=m, n=n, W0=W0, n_samples=rows.numel(), name=f"toy client {client}")


def toy_as_matrix(toy: ModelProblem):
    """A one-site toy (``toy_problem(..., clients=M, target_modules=["fc1"])``) as a
    FederatedProblem over fc1's weight, from W0 = the site's W: the matrix problem of the same f.

    Every engine run on both must give the same frame (the scale is a problem, not a runner)."""
    from lorakit.problems.federated import FederatedProblem

    toy.reset()
    W0 = toy.sites[0].W().clone()
    clients = [_toy_client(toy, c, W0) for c in range(toy.M)]
    return FederatedProblem.from_clients(clients, W0=W0, name="toy as matrix")
