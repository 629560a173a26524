"""Saving after any model-scale run gives the trained model (issue 11 §1).

For every method of ``tests/patterns.py`` (and both AsyncFL modes of every rule) a few steps train
the float64 peft toy, :func:`lorakit.adapters.save_trained` writes it, and a fresh untrained model
built the same way, loaded by :func:`lorakit.adapters.load_trained` and by plain peft/safetensors,
computes exactly (``torch.equal``, float64) the trained model's outputs. The plain
``model.save_pretrained`` warns when the base holds training, and only then.
"""

from __future__ import annotations

import copy
import inspect
import json
import pickle
import warnings

import pytest
import torch
from patterns import CASES, RANK
from peft import PeftModel
from peft_toys import ToyMLP, toy_model, toy_problem

import lorakit as lk
from lorakit.adapters import adapter_state, base_changes, load_trained, save_trained
from lorakit.asynchronous import AsyncFL

#: Where each method leaves its training (each runner's docstring): the base (merged) or the adapter.
MERGES = {
    "lora", "asymm_lora", "cola", "rac_lora", "bernoulli_lora", "fedstack_lora", "fed_rac_lora",
    "fedavg", "fedasync", "fedbuff",
}  # fmt: skip
ADAPTER_ONLY = {
    "fslora",
    "fedit",
    "hetero_lora",
    "fslora_topk",
    "flex_lora",
    "rw_lora",
    "gossip_lora",
}


def _async_other_mode(rule, rank):
    """The AsyncFL mode CASES does not hold for ``rule`` (CASES: fedavg/fedasync full-delta,
    fedbuff adapter)."""

    def run(problem, updates, seeds=0, *, gamma=0.3):
        return AsyncFL(rule, gamma, rank=rank, local_steps=2).run(problem, updates, seeds=seeds)

    return pytest.param(rule, run, id=f"{rule}-rank={rank}")


RUNS = [pytest.param(c.method, c.run, id=c.method) for c in CASES] + [
    _async_other_mode("fedavg", RANK),
    _async_other_mode("fedasync", RANK),
    _async_other_mode("fedbuff", None),
]


def _outputs(model, x):
    model.eval()
    with torch.no_grad():
        return model(x=x).logits


def _fresh():
    """An untrained model built as ``toy_problem`` builds its own (same seed: same base, same A)."""
    return toy_model(rank=RANK, seed=0)


def _plain_base():
    """The toy's base model as plain torch builds it (toy_model seeds 0 before building it)."""
    torch.manual_seed(0)
    return ToyMLP().to(torch.float64)


@pytest.mark.parametrize(("method", "run"), RUNS)
def test_save_trained_reloads_the_trained_model_exactly(method, run, tmp_path):
    assert set(c.method for c in CASES) == MERGES | ADAPTER_ONLY  # every method is classified
    pattern = {c.method: c.pattern for c in CASES}[method]
    problem = toy_problem(rank=RANK) if pattern == "chain" else toy_problem(rank=RANK, clients=4)
    x = problem.data["x"]
    before = _outputs(problem.model, x)
    run(problem, 3)
    trained = _outputs(problem.model, x)
    assert (trained - before).abs().max() > 1e-3  # the run trained the model (a real margin)

    kind = save_trained(problem, tmp_path)
    assert kind == ("merged" if method in MERGES else "adapter")

    # lorakit's loader, into a fresh untrained model built the same way
    fresh = _fresh()
    assert torch.equal(_outputs(fresh, x), before)
    assert torch.equal(_outputs(load_trained(tmp_path, fresh), x), trained)

    # the plain libraries, as the docstring says
    if kind == "adapter":
        plain = PeftModel.from_pretrained(_plain_base(), str(tmp_path))
        assert not (tmp_path / "model.safetensors").exists()
    else:
        from safetensors.torch import load_model

        plain = _plain_base()
        load_model(plain, str(tmp_path / "model.safetensors"))
        assert not (tmp_path / "adapter_config.json").exists()
    assert torch.equal(_outputs(plain, x), trained)


# -- the plain peft route ---------------------------------------------------------------------------
def test_plain_save_pretrained_warns_after_a_run_that_writes_the_base(tmp_path):
    problem = toy_problem(rank=RANK)
    lk.run("rac_lora", problem, 3, rank=RANK, gamma=0.05)
    assert "fc1.weight" in base_changes(problem.model)
    with pytest.warns(UserWarning, match=r"writes the LoRA adapter only.*save_trained"):
        problem.model.save_pretrained(str(tmp_path))
    # it still saved (peft's own save): the adapter file peft wrote is the model's adapter
    loaded = PeftModel.from_pretrained(_plain_base(), str(tmp_path))
    for k, v in adapter_state(loaded).items():
        assert torch.equal(v, adapter_state(problem.model)[k])


def test_no_warning_when_the_adapter_holds_everything(tmp_path):
    problem = toy_problem(rank=RANK, clients=4)
    lk.federated.make_federated("fslora", RANK, 0.3, budgets=1).run(problem, 3)
    assert base_changes(problem.model) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        problem.model.save_pretrained(str(tmp_path / "a"))
        assert save_trained(problem, tmp_path / "b") == "adapter"


def test_reset_puts_back_the_unguarded_state(tmp_path):
    problem = toy_problem(rank=RANK)
    lk.run("bernoulli_lora", problem, 3, rank=RANK, gamma=0.05, p=0.5)
    assert base_changes(problem.model)
    problem.reset()
    assert base_changes(problem.model) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        problem.model.save_pretrained(str(tmp_path))


def test_guard_survives_deepcopy_and_pickle_bound_to_the_copy(tmp_path):
    problem = toy_problem(rank=RANK)
    # the guard shows peft's signature (help, inspect)
    assert "save_directory" in str(inspect.signature(problem.model.save_pretrained))
    lk.run("rac_lora", problem, 3, rank=RANK, gamma=0.05)
    copies = [copy.deepcopy(problem.model), pickle.loads(pickle.dumps(problem.model))]
    problem.reset()  # the original is back to its reference; the copies still hold training
    for j, twin in enumerate(copies):
        assert "fc1.weight" in base_changes(twin)
        with pytest.warns(UserWarning, match="writes the LoRA adapter only"):
            twin.save_pretrained(str(tmp_path / str(j)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        problem.model.save_pretrained(str(tmp_path / "original"))


def test_a_split_keeps_the_reference_of_the_first_problem():
    problem = toy_problem(rank=RANK)
    lk.run("rac_lora", problem, 3, rank=RANK, gamma=0.05)
    again = lk.adapters.ModelProblem(problem.model, problem.data)  # built on the trained model
    assert "fc1.weight" in base_changes(again.model)  # still compared with the untrained base
    assert "fc1.weight" in base_changes(problem.split(2, seed=0).model)


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="problem_or_model"):
        save_trained(ToyMLP(), tmp_path)
    with pytest.raises(TypeError, match=r"^model must be a ModelProblem or a peft\.PeftModel"):
        load_trained(tmp_path, ToyMLP())
    with pytest.raises(ValueError, match="neither an adapter"):
        load_trained(tmp_path, _fresh())
    problem = toy_problem(rank=RANK)
    assert save_trained(problem, tmp_path) == "adapter"
    lk.run("rac_lora", problem, 2, rank=RANK, gamma=0.05)
    with pytest.raises(ValueError, match=r"adapter_config\.json from another kind"):
        save_trained(problem, tmp_path)  # a merged model next to an adapter
    with pytest.raises(ValueError, match="r = 2"):
        load_trained(tmp_path, toy_model(rank=3, seed=0))
    assert save_trained(problem, tmp_path / "m") == "merged"
    from peft import LoraConfig, get_peft_model

    wider = get_peft_model(ToyMLP(hidden=5).double(), LoraConfig(r=RANK, target_modules=["fc1"]))
    untouched = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(ValueError, match=r"'fc1\.(weight|bias)' is saved with shape \(8"):
        load_trained(tmp_path / "m", wider)
    assert all(torch.equal(v, untouched[k]) for k, v in wider.state_dict().items())


def test_untracked_model_is_saved_merged(tmp_path):
    """No ModelProblem was built on it: nothing tells which weights trained, so all are written."""
    model = _fresh()
    assert base_changes(model) is None
    assert save_trained(model, tmp_path) == "merged"
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_outputs(load_trained(tmp_path, toy_model(rank=RANK, seed=1)), x),
                       _outputs(model, x))  # fmt: skip


# -- a transformers model from the zoo --------------------------------------------------------------
GPT = {"pretrain_steps": 20, "batch_size": 4, "lr": 1e-2, "block_size": 16}


@pytest.mark.parametrize(("method", "kind"), [("bernoulli_lora", "merged"), ("fslora", "adapter")])
def test_zoo_gpt2_saved_and_reloaded_by_transformers_and_peft(method, kind, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from lorakit.zoo import gpt2

    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path / "cache"))
    problem = gpt2.gpt2_problem(rank=2, blocks=8, **GPT)
    batch = problem.batch(torch.arange(4))

    def logits(model):
        model.eval()
        with torch.no_grad():
            return model(input_ids=batch["input_ids"]).logits

    before = logits(problem.model)
    if method == "fslora":
        lk.federated.make_federated("fslora", 2, 1.0, budgets=1).run(problem.split(2), 2)
    else:
        lk.run(method, problem, 4, rank=2, gamma=0.5, p=0.5)
    trained = logits(problem.model)
    assert (trained - before).abs().max() > 1e-3

    out = tmp_path / "saved"
    assert save_trained(problem, out) == kind
    base = AutoModelForCausalLM.from_pretrained(str(gpt2.tiny_gpt2_path(**GPT)))
    if kind == "merged":
        assert json.loads((out / "config.json").read_text())["model_type"] == "gpt2"
        plain = AutoModelForCausalLM.from_pretrained(str(out))
    else:
        plain = PeftModel.from_pretrained(base, str(out))
    assert torch.equal(logits(plain), trained)  # float32, bit for bit (the merge adds zeros)
    fresh, _ = gpt2.tiny_gpt2(rank=2, **GPT)
    assert torch.equal(logits(load_trained(out, fresh)), trained)
