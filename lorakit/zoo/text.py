"""Offline English text: the pydoc help topics, a byte tokenizer, LM blocks and labelled sentences.

Corpus (spec ``prior_art.md`` §F: the stand-in for WikiText). CPython ships its interactive help
as ``pydoc_data.topics.topics``: 79 topics (Python 3.11; the count varies a little between
versions), ~466 K bytes of English prose, grammar and examples. It is always present, licence-clean
and deterministic for a given Python, so nothing is downloaded.

The topics come from two manuals, which gives a genuine domain shift:

* **reference** (every other topic, ~347 K bytes): the Language Reference — statements,
  expressions, lexical analysis, the data model, the execution model;
* **library** (:data:`LIBRARY_TOPICS`, ~119 K bytes): the Library Reference — built-in types and
  their methods (``str``, ``list``, ``dict``, …), format strings, the ``pdb`` debugger.

The tiny GPT-2 of :mod:`lorakit.zoo.gpt2` is pre-trained on the reference part and LoRA adapts it
to the library part (the async paper fine-tunes GPT-2 on WikiText; here a smaller model and a
smaller corpus play those roles).

Tokenizer. :class:`ByteTokenizer` maps text to its UTF-8 bytes (vocabulary 256, no unknown token),
and :func:`hf_byte_tokenizer` builds the same map as a Hugging Face fast tokenizer (a byte-level
BPE with no merges, ``id == byte value``), so the zoo's GPT-2 saves and loads with
``save_pretrained`` / ``AutoTokenizer.from_pretrained`` like any hub model.

Blocks. :func:`lm_blocks` concatenates token ids and cuts them into non-overlapping rows of
``block_size`` (the remainder is dropped); :func:`split_blocks` holds out every
``eval_every``-th block (deterministic, spread over every topic).

Sentences. :func:`sentences` extracts prose sentences (code, grammar and tables filtered out);
:func:`sentence_task` labels sentences by topic group (:data:`TOPIC_GROUPS`) for the MiniLM
classification task of :mod:`lorakit.zoo.minilm`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

import torch

from .._validation import check_choice, check_int, check_real

__all__ = [
    "CLASS_GROUPS",
    "LIBRARY_TOPICS",
    "PARTS",
    "TOPIC_GROUPS",
    "ByteTokenizer",
    "corpus_hash",
    "corpus_text",
    "corpus_texts",
    "group_sentences",
    "hf_byte_tokenizer",
    "lm_blocks",
    "sentence_task",
    "sentences",
    "split_blocks",
    "topic_names",
]

#: Topics from the Library Reference (built-in types, ``string``, ``pdb``); the rest of
#: ``pydoc_data.topics`` comes from the Language Reference.
LIBRARY_TOPICS = frozenset(
    {
        "bltin-code-objects",
        "bltin-ellipsis-object",
        "bltin-null-object",
        "bltin-type-objects",
        "debugger",
        "formatstrings",
        "specialattrs",
        "string-methods",
        "truth",
        "typesfunctions",
        "typesmapping",
        "typesmethods",
        "typesmodules",
        "typesseq",
        "typesseq-mutable",
    }
)

#: Topic groups labelling :func:`sentence_task` (topics missing from this Python are skipped).
TOPIC_GROUPS: dict[str, tuple[str, ...]] = {
    "statements": tuple(
        """assert assignment async augassign break class compound continue del else for function
        global if import nonlocal pass raise return try while with yield""".split()
    ),
    "library": tuple(sorted(LIBRARY_TOPICS)),
    "expressions": tuple(
        """atom-identifiers atom-literals attribute-references await binary bitwise booleans calls
        comparisons conversions dict exprlists in lambda lists operator-summary power shifting
        slicings subscriptions unary""".split()
    ),
    "datamodel": tuple(
        """attribute-access callable-types context-managers customization numeric-types objects
        sequence-types specialnames types""".split()
    ),
}

#: Class order of :func:`sentence_task`: ``num_labels = k`` uses the first k groups.
CLASS_GROUPS = tuple(TOPIC_GROUPS)

#: Corpus parts: ``"all"``, ``"reference"`` (pre-training) and ``"library"`` (adaptation).
PARTS = ("all", "reference", "library")


def topic_names(part: str = "all") -> list[str]:
    """The pydoc topic names of ``part`` (:data:`PARTS`), in the module's (alphabetical) order."""
    from pydoc_data.topics import topics

    check_choice("part", part, PARTS)
    names = list(topics)
    if part == "reference":
        return [t for t in names if t not in LIBRARY_TOPICS]
    if part == "library":
        return [t for t in names if t in LIBRARY_TOPICS]
    return names


def corpus_texts(part: str = "all") -> list[str]:
    """The topic texts of ``part``, one string per topic (each ends with a blank line)."""
    from pydoc_data.topics import topics

    return [topics[t].rstrip("\n") + "\n\n" for t in topic_names(part)]


def corpus_text(part: str = "all") -> str:
    """The topics of ``part`` concatenated (what :func:`lm_blocks` tokenizes)."""
    return "".join(corpus_texts(part))


def corpus_hash() -> str:
    """A short SHA-256 of the whole corpus: part of every cache key (it changes with Python)."""
    return hashlib.sha256(corpus_text("all").encode("utf-8")).hexdigest()[:16]


class ByteTokenizer:
    """Text ↔ UTF-8 bytes: ``encode`` gives ids in [0, 255], ``decode`` inverts it.

    ``decode`` replaces an invalid UTF-8 sequence (e.g. a sample cut inside a character) by
    U+FFFD instead of failing.
    """

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def __call__(self, text: str) -> torch.Tensor:
        return torch.tensor(self.encode(text), dtype=torch.long)


def _bytes_to_chars() -> dict[int, str]:
    """The byte → printable character map of byte-level BPE (printable bytes map to themselves)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def hf_byte_tokenizer(model_max_length: int = 1024):
    """:class:`ByteTokenizer` as a Hugging Face fast tokenizer (``id == byte value``, 256 ids).

    A byte-level BPE with an empty merge list: every byte is one token, no special tokens, so
    ``tok(text, add_special_tokens=False)["input_ids"] == list(text.encode())``. It saves and
    loads with ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` (only a ``tokenizer.json``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in _bytes_to_chars().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length)


def lm_blocks(ids: Sequence[int] | torch.Tensor, block_size: int) -> torch.Tensor:
    """Cut a token stream into ``(len(ids) // block_size, block_size)`` long rows (no overlap)."""
    block_size = check_int("block_size", block_size, low=2)
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    n = ids.numel() // block_size
    if n == 0:
        raise ValueError(
            f"block_size must be at most the number of tokens ({ids.numel()}), got {block_size}"
        )
    return ids[: n * block_size].view(n, block_size)


def split_blocks(blocks: torch.Tensor, eval_every: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, eval) rows: every ``eval_every``-th row (1-based) is held out, the rest train."""
    eval_every = check_int("eval_every", eval_every, low=2)
    held = torch.zeros(len(blocks), dtype=torch.bool)
    held[eval_every - 1 :: eval_every] = True
    return blocks[~held], blocks[held]


# -- sentences ------------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")
_RULE = re.compile(r"^[\s*=\-~^+#_|]*$")


def sentences(topic: str, *, min_chars: int = 40, max_chars: int = 300) -> list[str]:
    """The prose sentences of one pydoc topic, in order.

    Paragraphs (blank-line separated) are joined into one line each; headings, rules, code
    (``>>>``), grammar (``::=``) and tables are dropped, and a sentence is kept when it starts with
    an upper-case letter or a quote, ends with ``.``, ``!`` or ``?``, has ``min_chars`` to
    ``max_chars`` characters, at least 6 words and at least 80 % letters and spaces.
    """
    from pydoc_data.topics import topics

    if topic not in topics:
        raise ValueError(
            f"topic must be one of pydoc_data.topics ({len(topics)} topics), got {topic!r}"
        )
    out = []
    for para in re.split(r"\n\s*\n", topics[topic]):
        lines = [ln.strip() for ln in para.splitlines() if not _RULE.match(ln)]
        text = " ".join(ln for ln in lines if ln)
        if not text or ">>>" in text or "::=" in text or "|" in text:
            continue
        for s in _SENTENCE_END.split(text):
            s = s.strip()
            if not (min_chars <= len(s) <= max_chars) or s[-1] not in ".!?":
                continue
            if not (s[0].isupper() or s[0] == '"') or len(s.split()) < 6:
                continue
            if sum(c.isalpha() or c == " " for c in s) < 0.8 * len(s):
                continue
            out.append(s)
    return out


def group_sentences(group: str) -> list[str]:
    """Every distinct sentence of the topics of ``group`` (:data:`TOPIC_GROUPS`), in order."""
    from pydoc_data.topics import topics

    check_choice("group", group, TOPIC_GROUPS)
    seen, out = set(), []
    for t in TOPIC_GROUPS[group]:
        if t not in topics:
            continue
        for s in sentences(t):
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out


def sentence_task(
    num_labels: int = 2, per_class: int = 160, *, eval_fraction: float = 0.25, seed: int = 0
) -> dict[str, list]:
    """Sentences labelled by the topic group they come from: a text-classification task.

    Class k holds ``per_class`` sentences drawn (with ``seed``) from group ``CLASS_GROUPS[k]``
    (default 2 classes: Language Reference *statements* vs Library Reference *built-in types,
    format strings and pdb*). The task is learnable but not trivial: both sides are technical
    English about Python, and many sentences ("Return the value …", "The object …") could sit in
    either manual. Each class is split the same way: the first ``round(eval_fraction·per_class)``
    drawn sentences are held out.

    Returns ``{"train_texts", "train_labels", "eval_texts", "eval_labels"}`` (lists; classes
    interleaved, so any prefix is roughly balanced).
    """
    num_labels = check_int("num_labels", num_labels, low=2, high=len(CLASS_GROUPS))
    seed = check_int("seed", seed, low=0, high=2**63 - 1)
    eval_fraction = check_real("eval_fraction", eval_fraction, low=0.0, high=0.9)
    pools = [group_sentences(g) for g in CLASS_GROUPS[:num_labels]]
    available = min(len(p) for p in pools)
    per_class = check_int("per_class", per_class, low=2, high=available)
    n_eval = round(eval_fraction * per_class)
    if eval_fraction > 0 and not 1 <= n_eval < per_class:
        raise ValueError(
            f"eval_fraction must leave at least one train and one eval sentence per class, got "
            f"{eval_fraction:g} with per_class={per_class}"
        )
    g = torch.Generator().manual_seed(seed)
    chosen = [
        [pool[i] for i in torch.randperm(len(pool), generator=g)[:per_class].tolist()]
        for pool in pools
    ]
    out: dict[str, list] = {
        "train_texts": [],
        "train_labels": [],
        "eval_texts": [],
        "eval_labels": [],
    }
    for i in range(per_class):
        part = "eval" if i < n_eval else "train"
        for k, picked in enumerate(chosen):
            out[f"{part}_texts"].append(picked[i])
            out[f"{part}_labels"].append(k)
    return out
