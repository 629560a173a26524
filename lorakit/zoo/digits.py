"""RAC-LoRA's and Bernoulli-LoRA's MNIST experiment at 8×8 scale: pre-train on 0–4, adapt on 5–9.

The papers' MLP experiment (spec ``prior_art.md`` §A.2, §A.3; setting of RACLora's
``rac_lora_mnist``): an MLP 784 → 64 → 64 → 5 is pre-trained on the MNIST digits 0–4, then LoRA
adapts every linear layer to the digits 5–9 with the same five outputs (digit d is class d − 5).
Here MNIST is replaced by scikit-learn's bundled ``load_digits`` (1,797 images of 8×8 pixels, no
download; loaded by :func:`lorakit.problems.softmax.digits_arrays`), so the MLP is
64 → ``hidden`` → ``hidden`` → 5 (ReLU):

* :func:`digits_data` — features scaled to [0, 1] (pixel / 16), a stratified train/eval split
  (``test_fraction`` 0.25, ``data_seed``), the digits 0–4 (``"pretrain"``) or 5–9 (``"adapt"``,
  labels d − 5);
* :func:`digits_mlp` — the base model, pre-trained with full-batch Adam on the 0–4 training split
  (seeded; 100 steps take ~0.1 s, so there is no cache). It reaches ~99 % held-out accuracy on 0–4;
* :func:`digits_problem` — peft LoRA on ``fc1``, ``fc2``, ``fc3`` (B = 0 at the start, peft's and
  FSLoRA's convention, so the adapted model starts as the base) and the 5–9 data: a
  :class:`~lorakit.zoo.hub.ZooProblem` with ``{"x": (N, 64) float, "labels": (N,) long}`` and
  the held-out 5–9 images as ``eval_data``. The base model maps the new digits to the old classes,
  so the initial loss is high (~4.5 nats, against ln 5 ≈ 1.6 for a uniform guess; accuracy
  ~20 %); 200 full-batch Adam steps on the LoRA factors (r = 4) reach ~97 % held-out accuracy.

:func:`~lorakit.zoo.hub.accuracy` (``problem.accuracy("eval")``) reports the accuracy a notebook
shows next to the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._validation import check_choice, check_dtype, check_int, check_real
from .hub import ZooProblem, check_rank_fits

__all__ = [
    "DIGIT_PARTS",
    "DigitsMLP",
    "MLPOutput",
    "digits_data",
    "digits_mlp",
    "digits_problem",
]

#: ``"pretrain"``: digits 0–4 (labels 0–4); ``"adapt"``: digits 5–9 (labels d − 5).
DIGIT_PARTS = ("pretrain", "adapt")


@dataclass
class MLPOutput:
    """Hugging Face-style output: ``logits`` (N, 5) and the mean cross-entropy ``loss`` (or None)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


class DigitsMLP(nn.Module):
    """x (N, 64) → fc1 → ReLU → fc2 → ReLU → fc3 → 5 logits; ``forward(x, labels=None)``."""

    def __init__(self, hidden: int = 64, n_in: int = 64, n_out: int = 5):
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> MLPOutput:
        h = torch.relu(self.fc2(torch.relu(self.fc1(x))))
        logits = self.fc3(h)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return MLPOutput(logits=logits, loss=loss)


def digits_data(
    part: str = "adapt",
    split: str = "train",
    *,
    test_fraction: float = 0.25,
    data_seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """``{"x", "labels"}`` of the digits of ``part`` (:data:`DIGIT_PARTS`) in ``split``.

    The split is a stratified ``train_test_split`` of all 1,797 digits (``test_fraction`` held
    out, ``random_state=data_seed``), so ``"eval"`` never overlaps ``"train"``; features are
    pixel / 16 ∈ [0, 1]; labels are d (pretrain) or d − 5 (adapt).
    """
    from ..problems.softmax import digits_arrays

    check_choice("part", part, DIGIT_PARTS)
    check_choice("split", split, ("train", "eval"))
    test_fraction = check_real("test_fraction", test_fraction, low=0.0, high=0.9, low_open=True)
    X, y, X_test, y_test = digits_arrays(False, test_fraction, data_seed)
    if split == "eval":
        X, y = X_test, y_test
    y = torch.as_tensor(y, dtype=torch.long)
    keep = y < 5 if part == "pretrain" else y >= 5
    return {
        "x": torch.as_tensor(X, dtype=dtype)[keep],
        "labels": y[keep] - (0 if part == "pretrain" else 5),
    }


def digits_mlp(
    *,
    hidden: int = 64,
    pretrain_steps: int = 100,
    lr: float = 3e-3,
    pretrain_seed: int = 0,
    test_fraction: float = 0.25,
    data_seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> DigitsMLP:
    """The base :class:`DigitsMLP` pre-trained on the digits 0–4 (full parameters, no LoRA).

    ``pretrain_steps`` full-batch Adam steps (``lr``, cosine decay to 0) on the ``"pretrain"``
    training split; the initialisation is seeded by ``pretrain_seed`` (inside
    ``torch.random.fork_rng``: the global RNG is untouched). Returned in eval mode.
    """
    hidden = check_int("hidden", hidden, low=1)
    steps = check_int("pretrain_steps", pretrain_steps, low=0)
    lr = check_real("lr", lr, low=0.0, low_open=True)
    pretrain_seed = check_int("pretrain_seed", pretrain_seed, low=0, high=2**63 - 1)
    data = digits_data(
        "pretrain", "train", test_fraction=test_fraction, data_seed=data_seed, dtype=dtype
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(pretrain_seed)
        model = DigitsMLP(hidden).to(dtype)
    if steps:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        for _ in range(steps):
            loss = model(**data).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def digits_problem(
    rank: int = 4,
    *,
    hidden: int = 64,
    seed: int = 0,
    lora_alpha: float | None = None,
    target_modules: Sequence[str] = ("fc1", "fc2", "fc3"),
    init_lora_weights: bool | str = True,
    pretrain_steps: int = 100,
    pretrain_seed: int = 0,
    test_fraction: float = 0.25,
    data_seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> ZooProblem:
    """LoRA on the pre-trained digits MLP, adapted to the digits 5–9 (module docstring).

    ``rank`` (at most min(m, n) of every targeted layer: 5 with ``fc3``, checked before the
    build), ``lora_alpha`` (None: α = r, so s = 1), ``target_modules`` and ``init_lora_weights``
    (True: Kaiming-uniform A, B = 0) go to ``peft.LoraConfig``; ``seed`` seeds the factors.
    Sizes (hidden 64): 3 sites, 64×64, 64×64 and 5×64; data ~675 training and ~225 held-out
    images of 5–9 (``test_fraction`` 0.25).
    """
    from peft import LoraConfig, get_peft_model

    rank = check_int("rank", rank, low=1)
    seed = check_int("seed", seed, low=0, high=2**63 - 1)
    check_dtype("dtype", dtype)
    with torch.device("meta"):  # the architecture's shapes only: refuse a rank before building
        check_rank_fits(DigitsMLP(check_int("hidden", hidden, low=1)), rank, target_modules)
    alpha = (
        float(rank)
        if lora_alpha is None
        else check_real("lora_alpha", lora_alpha, low=0.0, low_open=True)
    )
    base = digits_mlp(
        hidden=hidden,
        pretrain_steps=pretrain_steps,
        pretrain_seed=pretrain_seed,
        test_fraction=test_fraction,
        data_seed=data_seed,
        dtype=dtype,
    )
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(target_modules),
        lora_dropout=0.0,
        init_lora_weights=init_lora_weights,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(base, config)
    model.eval()
    kw = {"test_fraction": test_fraction, "data_seed": data_seed, "dtype": dtype}
    return ZooProblem(
        model,
        digits_data("adapt", "train", **kw),
        eval_data=digits_data("adapt", "eval", **kw),
        task="classification",
        name="digits-5to9",
    )
