"""A tiny GPT-2, pre-trained on the Language Reference, LoRA-adapted to the Library Reference.

The async paper fine-tunes GPT-2 on WikiText (spec ``prior_art.md`` §A.5, §F); no GPT-2 weights
or WikiText ship offline, so the zoo builds the same kind of problem at toy scale (§B.6):

* **model**: ``GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=256,
  n_positions=block_size))`` — 0.12 M parameters — with a byte-level tokenizer
  (:func:`lorakit.zoo.text.hf_byte_tokenizer`, id = byte value). Dropout is 0 and
  ``bos_token_id = eos_token_id = 0`` (the NUL byte, absent from the text; GPT-2's 50256 would lie
  outside the 256-token vocabulary);
* **pre-training** (full parameters, AdamW, one-cycle cosine schedule, seeded) on the *reference*
  topics of ``pydoc_data`` (statements, expressions, data model: ~347 K bytes), so that LoRA
  adapts a model that already knows English and Python's vocabulary. The weights are cached
  (:mod:`lorakit.zoo._cache`, ``$LORAKIT_CACHE``) as a ``save_pretrained`` directory keyed by every
  configuration value; a second call loads them (identical tensors) in well under a second;
* **LoRA task** (:func:`gpt2_problem`): next-byte prediction on the *library* topics (built-in
  types, string methods, format strings, pdb: ~119 K bytes), a domain shift from pre-training.
  Data ``{"input_ids": (N, block_size), "labels": same}``; Hugging Face shifts the labels inside.

Both functions go through :func:`lorakit.zoo.hub.from_pretrained` and
:func:`~lorakit.zoo.hub.text_problem` with the cached directory, exactly as a hub model would.
Measured with the defaults (``pretrain_steps=400``, batch 16, block 64): pre-training takes
~5.5 s on 2 CPU threads (~8 s on 1), a cached call ~0.1 s. The held-out loss falls from
ln 256 ≈ 5.5 to 2.25 nats per byte on the reference topics and 2.31 on the library topics (the
LoRA task's starting point); 200 Adam steps (lr 3e-3, 32 blocks) on the rank-4 factors bring the
library loss to 2.13 (train) / 2.25 (held out).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .._validation import check_int, check_real
from ._cache import cached_dir, read_meta
from .hub import (
    ZooProblem,
    check_rank_fits,
    from_pretrained,
    quiet_transformers,
    text_data,
    text_problem,
)
from .text import corpus_hash, corpus_texts, hf_byte_tokenizer, split_blocks

__all__ = [
    "ADAPT_PART",
    "GPT2_TARGETS",
    "PRETRAIN_PART",
    "gpt2_problem",
    "pretrain_facts",
    "tiny_gpt2",
    "tiny_gpt2_path",
]

#: Corpus parts (:data:`lorakit.zoo.text.PARTS`) for pre-training and for the LoRA task.
PRETRAIN_PART, ADAPT_PART = "reference", "library"
#: LoRA sites: ``c_attn`` (64 → 192) and both ``c_proj`` (attention 64 → 64, MLP 256 → 64).
#: ``target_modules`` may also name ``c_fc`` and the token embedding ``wte`` (a 64 × 256 site,
#: :class:`~lorakit.adapters.EmbeddingSite`; ``lm_head`` then keeps its own copy of the tied weight).
GPT2_TARGETS = ("c_attn", "c_proj")


def tiny_gpt2_path(
    *,
    block_size: int = 64,
    n_layer: int = 2,
    n_head: int = 2,
    n_embd: int = 64,
    pretrain_steps: int = 400,
    batch_size: int = 16,
    lr: float = 3e-3,
    pretrain_seed: int = 0,
    eval_every: int = 10,
    cache: bool = True,
) -> Path:
    """The ``save_pretrained`` directory of the pre-trained tiny GPT-2 (built on first use).

    Pre-training: ``pretrain_steps`` AdamW steps (``lr`` peak of a one-cycle cosine schedule with
    10 % warm-up, no weight decay, gradients clipped to norm 1) on minibatches of ``batch_size`` blocks of ``block_size``
    bytes drawn with replacement from the reference topics, every ``eval_every``-th block held
    out; initialisation and batches seeded by ``pretrain_seed``. ``pretrain_steps=0`` keeps the
    random initialisation. The directory holds ``config.json``, ``model.safetensors``, the
    tokenizer and ``lorakit.json`` (configuration, held-out losses before/after on both corpus
    parts, seconds taken: :func:`lorakit.zoo._cache.read_meta`).
    """
    config = _pretrain_config(
        block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
        pretrain_steps=pretrain_steps, batch_size=batch_size, lr=lr, pretrain_seed=pretrain_seed,
        eval_every=eval_every,
    )  # fmt: skip
    return cached_dir("gpt2", config, lambda path: _pretrain(path, config), cache=cache)


def _pretrain_config(
    *, block_size=64, n_layer=2, n_head=2, n_embd=64, pretrain_steps=400, batch_size=16, lr=3e-3,
    pretrain_seed=0, eval_every=10,
) -> dict:  # fmt: skip
    """The checked pre-training configuration (the cache key) of :func:`tiny_gpt2_path`."""
    config = {
        "block_size": check_int("block_size", block_size, low=2, high=4096),
        "n_layer": check_int("n_layer", n_layer, low=1),
        "n_head": check_int("n_head", n_head, low=1),
        "n_embd": check_int("n_embd", n_embd, low=1),
        "pretrain_steps": check_int("pretrain_steps", pretrain_steps, low=0),
        "batch_size": check_int("batch_size", batch_size, low=1),
        "lr": check_real("lr", lr, low=0.0, low_open=True),
        "pretrain_seed": check_int("pretrain_seed", pretrain_seed, low=0, high=2**63 - 1),
        "eval_every": check_int("eval_every", eval_every, low=2),
        "corpus": corpus_hash(),
    }
    if config["n_embd"] % config["n_head"]:
        raise ValueError(f"n_embd must be a multiple of n_head ({n_head}), got {n_embd}")
    return config


def _gpt2_config(cfg: dict):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=256,
        n_positions=cfg["block_size"],
        n_embd=cfg["n_embd"],
        n_layer=cfg["n_layer"],
        n_head=cfg["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )


@torch.no_grad()
def _mean_loss(model, blocks: torch.Tensor, chunk: int = 256) -> float:
    total = 0.0
    for start in range(0, len(blocks), chunk):
        x = blocks[start : start + chunk]
        total += float(model(input_ids=x, labels=x).loss) * len(x)
    return total / len(blocks)


def _pretrain(path: Path, cfg: dict) -> dict:
    """Build, pre-train and save the base model into ``path``; returns the facts for the cache."""
    from transformers import GPT2LMHeadModel

    tokenizer = hf_byte_tokenizer(model_max_length=cfg["block_size"])
    held_out = {}
    for part in (PRETRAIN_PART, ADAPT_PART):
        blocks = text_data(tokenizer, corpus_texts(part), block_size=cfg["block_size"])["input_ids"]
        train, held_out[part] = split_blocks(blocks, cfg["eval_every"])
        if part == PRETRAIN_PART:
            train_blocks = train
    config = _gpt2_config(cfg)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["pretrain_seed"])
        model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"  # what transformers falls back to, minus its warning
    model.eval()
    before = {part: _mean_loss(model, b) for part, b in held_out.items()}
    steps = cfg["pretrain_steps"]
    model.train()
    if steps:
        gen = torch.Generator().manual_seed(cfg["pretrain_seed"])
        opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.0)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg["lr"], total_steps=steps, pct_start=0.1, anneal_strategy="cos"
        )
        # The first call pre-trains (seconds); later calls read the cache.
        for _ in tqdm(range(steps), desc="pre-training the tiny GPT-2", leave=False):
            x = train_blocks[torch.randint(len(train_blocks), (cfg["batch_size"],), generator=gen)]
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
    model.eval()
    after = {part: _mean_loss(model, b) for part, b in held_out.items()}
    seconds = time.perf_counter() - start
    with quiet_transformers(True):
        model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))
    return {"loss_before": before, "loss_after": after, "seconds": seconds}


def tiny_gpt2(
    rank: int = 4,
    *,
    lora_alpha: float | None = None,
    target_modules: Sequence[str] = GPT2_TARGETS,
    init_lora_weights: bool | str = True,
    seed: int = 0,
    cache: bool = True,
    **pretrain,
):
    """The pre-trained tiny GPT-2 with LoRA adapters; returns ``(peft_model, tokenizer)``.

    ``pretrain`` (``block_size``, ``pretrain_steps``, ``n_layer``, …) goes to
    :func:`tiny_gpt2_path`; the rest to :func:`lorakit.zoo.hub.from_pretrained` (``lora_alpha``
    None: α = r; ``init_lora_weights=True``: Kaiming-uniform A, B = 0 (peft's and FSLoRA's
    convention); ``seed`` seeds the LoRA factors). Default sites (:data:`GPT2_TARGETS`): 3 per
    layer, r·(64+192) + r·(64+64) + r·(256+64) = 704·r trainable entries per layer.
    """
    from transformers import GPT2LMHeadModel

    # Refuse a rank no site can take before pre-training (seconds) on a meta-device skeleton.
    with torch.device("meta"):
        skeleton = GPT2LMHeadModel(_gpt2_config(_pretrain_config(**pretrain)))
    check_rank_fits(skeleton, check_int("rank", rank, low=1), target_modules)
    path = tiny_gpt2_path(cache=cache, **pretrain)
    return from_pretrained(
        path,
        task="causal-lm",
        rank=rank,
        lora_alpha=lora_alpha,
        target_modules=target_modules,
        init_lora_weights=init_lora_weights,
        seed=seed,
        quiet=True,
    )


def gpt2_problem(
    rank: int = 4,
    *,
    blocks: int | None = 256,
    block_size: int = 64,
    seed: int = 0,
    eval_every: int = 10,
    lora_alpha: float | None = None,
    target_modules: Sequence[str] = GPT2_TARGETS,
    init_lora_weights: bool | str = True,
    cache: bool = True,
    **pretrain,
) -> ZooProblem:
    """LoRA on the tiny GPT-2: next-byte prediction on the library topics (a domain shift).

    The library part of the corpus (:data:`ADAPT_PART`, ~1,870 blocks of 64 bytes) is cut into
    ``block_size`` blocks; every ``eval_every``-th block is held out (``eval_data``) and
    ``blocks`` training blocks spread evenly over the rest are kept (None: all ~1,680). The model
    is :func:`tiny_gpt2` (pre-trained on the reference topics; ``pretrain`` kwargs go there).
    Returns a :class:`~lorakit.zoo.hub.ZooProblem` with data ``{"input_ids", "labels"}`` (long,
    (N, block_size)); the loss is the mean next-byte cross-entropy in nats.
    """
    blocks = None if blocks is None else check_int("blocks", blocks, low=1)
    check_int("seed", seed, low=0, high=2**63 - 1)  # cheap checks before any pre-training
    check_int("eval_every", eval_every, low=2)
    model, tokenizer = tiny_gpt2(
        rank,
        lora_alpha=lora_alpha,
        target_modules=target_modules,
        init_lora_weights=init_lora_weights,
        seed=seed,
        cache=cache,
        block_size=block_size,
        **pretrain,
    )
    return text_problem(
        model,
        tokenizer,
        corpus_texts(ADAPT_PART),
        block_size=block_size,
        eval_every=eval_every,
        max_samples=blocks,
        name="gpt2-pydoc",
    )


def pretrain_facts(**pretrain) -> dict:
    """``lorakit.json`` of the cached pre-trained model: losses before/after, seconds taken."""
    return read_meta(tiny_gpt2_path(**pretrain))
