"""Exercises of notebook 07 (registered on import; see lorakit.exercises).

The references run on :func:`toy_problem`, a peft LoRA model small enough (two ``nn.Linear``
layers, 64 random samples) that every check takes well under a second: the same code paths as
the zoo's models (``adapters.sites``, ``make_federated(...).run``, ``Site.restart``).
"""

from __future__ import annotations

from types import SimpleNamespace

from .registry import exercise

__all__ = ["TOY_SHAPES", "fslora_upload_bytes", "merge_restart_change", "toy_problem"]

#: The toy's layers as (out, in) = (m, n): the sites' shapes.
TOY_SHAPES = ((16, 12), (8, 16))


def toy_problem(rank: int = 4, clients: int | None = None, seed: int = 0):
    """A float32 peft model x → Linear(12, 16) → tanh → Linear(16, 8), LoRA of rank ``rank`` on both
    layers (``fc1``, ``fc2``), as a :class:`~lorakit.adapters.ModelProblem` on 64 random labelled
    samples (split iid among ``clients`` when given). Built in milliseconds."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch import nn

    from ..adapters import ModelProblem

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            (m1, n1), (m2, n2) = TOY_SHAPES
            self.fc1, self.fc2 = nn.Linear(n1, m1), nn.Linear(n2, m2)

        def forward(self, x, labels=None):
            logits = self.fc2(torch.tanh(self.fc1(x)))
            loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
            return SimpleNamespace(loss=loss, logits=logits)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["fc1", "fc2"])
        model = get_peft_model(Toy(), config)
    gen = torch.Generator().manual_seed(seed + 1)
    data = {
        "x": torch.randn(64, TOY_SHAPES[0][1], generator=gen),
        "labels": torch.randint(0, TOY_SHAPES[1][0], (64,), generator=gen),
    }
    problem = ModelProblem(model, data, name="toy")
    return problem if clients is None else problem.split(clients, seed=seed)


def _adapter_counts(rank: int = 4) -> list[int]:
    """[LoRA (A and B), a left link (A), a right link (B)] from peft's own parameters."""
    from ..adapters import sites

    problem = toy_problem(rank)
    lora = sum(p.numel() for n, p in problem.model.named_parameters() if "lora_" in n)
    found = sites(problem.model)
    return [lora, sum(s.A.numel() for s in found), sum(s.B.numel() for s in found)]


def fslora_upload_bytes(k: int | None, rank: int = 8, clients: int = 4) -> float:
    """Bytes one client uploads in one round of FSLoRA with budget ``k`` (None: FedIT, all r)
    on the toy, read from the run's message table."""
    from ..estimators import sgd
    from ..federated import make_federated

    problem = toy_problem(rank, clients)
    method = "fedit" if k is None else "fslora"
    config = {} if k is None else {"budgets": k}
    fed = make_federated(method, rank, 0.1, local_steps=1, estimator=sgd(batch_size=8), **config)
    _, messages = fed.run(problem, 1, messages=True)
    return float(messages["bytes_up"].iloc[0])


def merge_restart_change(seed: int = 0) -> float:
    """max |Δ logits| of the toy after every site merges s·B·A into W0 and restarts (a Gaussian
    sketch B_S, A = 0), from nonzero factors: notebook 07's "merge and restart" on the toy."""
    import torch

    problem = toy_problem(4, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for site in problem.sites:
        site.set_factors(B=0.5 * torch.randn(site.B.shape, generator=gen))
    x = problem.data["x"]
    with torch.no_grad():
        before = problem.model(x=x).logits
        for site in problem.sites:
            site.restart("gaussian", side="left", generator=gen)
        after = problem.model(x=x).logits
    return float((after - before).abs().max())


def _largest_quarter_budget(rank: int = 8) -> int:
    """The largest k whose FSLoRA upload is at most a quarter of FedIT's (measured: one FSLoRA
    round with client i on budget k = i + 1, and one FedIT round)."""
    from ..estimators import sgd
    from ..federated import make_federated

    problem = toy_problem(rank, rank)
    fed = make_federated(
        "fslora",
        rank,
        0.1,
        local_steps=1,
        estimator=sgd(batch_size=8),
        budgets=list(range(1, rank + 1)),
    )
    _, messages = fed.run(problem, 1, messages=True)
    quarter = fslora_upload_bytes(None, rank) / 4
    return int(messages.loc[messages["bytes_up"] <= quarter, "k"].max())


def _name_matches() -> list[int]:
    """[parameters whose name equals 'lora_B' (the FSLoRA code's test), LoRA B matrices]."""
    names = [name for name, _ in toy_problem(4).model.named_parameters()]
    return [sum(name == "lora_B" for name in names), sum("lora_B" in name for name in names)]


exercise(
    "07.1",
    "Trainable entries of a rank-4 adapter: LoRA, a left link, a right link",
    "compute",
    reference=_adapter_counts,
    hint="Each site W (m × n) gets B (m × r) and A (r × n); a left link trains only A, a right "
    "link only B. Sum over both sites of the toy.",
)
exercise(
    "07.2",
    "Bytes one FSLoRA client uploads per round (r = 8, k = 2)",
    "compute",
    reference=lambda: fslora_upload_bytes(2),
    hint="A client sends its k columns of B and the same k rows of A for every site, as the "
    "model's floats (look at the parameters' dtype for the bytes per entry).",
)
exercise(
    "07.3",
    "Predict, then measure: does merge-and-restart change the logits?",
    "predict",
    reference=merge_restart_change,
    atol=1e-5,
    hint="Measure max |logits after − logits before| around site.restart(...) on the toy; "
    "write down the number you measured, not a guess.",
)
exercise(
    "07.4",
    "The largest budget k whose FSLoRA upload is at most a quarter of FedIT's (r = 8)",
    "configure",
    reference=_largest_quarter_budget,
    compare="exact",
    hint="Upload grows linearly in k; FedIT sends all r components. Measure both with "
    "fslora_upload_bytes, or reason from k(m + n) against r(m + n).",
)
exercise(
    "07.5",
    "What the FSLoRA code's name test selects",
    "erratum",
    reference=_name_matches,
    hint="Print the names of the toy's parameters: what does peft call its B factors, and how "
    "many of those names are exactly the string the code compares with?",
)
exercise(
    "07.6",
    "Why might a chain generalise differently from plain LoRA on MiniLM?",
    "open",
)
