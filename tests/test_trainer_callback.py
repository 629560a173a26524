"""A transformers Trainer with lorakit.distributed.trainer.ChainCallback is the chain method of
lk.run: with plain SGD, a constant learning rate, no clipping and full batches the trained model
equals lk.run's on the same model and data (1e-10, float64); with AdamW it trains, keeps the frozen
factor fixed within a link, and saves a model that reloads with identical outputs.

The model is a tiny GPT-2 built from its config (random weights, no download, dropout off), with
LoRA on its three Conv1D layers (c_attn, attn.c_proj, mlp.c_proj)."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
)

import lorakit as lk
from lorakit.adapters import ModelProblem, save_trained, sites
from lorakit.distributed.trainer import ChainCallback

RANK, SAMPLES, LENGTH, VOCAB = 2, 12, 6, 20


def tiny_gpt2(seed: int = 0):
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=LENGTH, n_embd=8, n_layer=1, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    base = GPT2LMHeadModel(config).to(torch.float64)
    # transformers 5 finds no loss type in the name GPT2LMHeadModel, so its Trainer would count
    # label 0 (which a causal LM never predicts) in num_items_in_batch and scale the loss by
    # (T − 1)/T; named, the Trainer's loss is the model's mean loss, the one lk.run takes.
    base.loss_type = "ForCausalLM"
    lora = LoraConfig(
        r=RANK, lora_alpha=4, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True,
        lora_dropout=0.0,
    )  # fmt: skip
    return get_peft_model(base, lora)


def data(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (SAMPLES, LENGTH), generator=g)
    return {"input_ids": ids, "labels": ids.clone()}


def rows(batch: dict) -> list[dict]:
    return [{k: v[i] for k, v in batch.items()} for i in range(SAMPLES)]


def train(model, callback, tmp_path, steps: int, lr: float, optim="sgd", weight_decay=0.0):
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"), max_steps=steps, learning_rate=lr,
        per_device_train_batch_size=SAMPLES, lr_scheduler_type="constant", warmup_steps=0,
        max_grad_norm=0.0, optim=optim, weight_decay=weight_decay, use_cpu=True, report_to="none",
        save_strategy="no", logging_strategy="no", disable_tqdm=True,
        remove_unused_columns=False,
    )  # fmt: skip
    callbacks = callback if isinstance(callback, list) else [callback]
    trainer = Trainer(model=model, args=args, train_dataset=rows(data()), callbacks=callbacks)
    return trainer.train()


def weights(model) -> list[torch.Tensor]:
    """W = W0 + s·B·A of every LoRA site (the function the model computes)."""
    return [site.W().clone() for site in sites(model)]


@pytest.mark.parametrize(
    "method, config",
    [
        ("bernoulli_lora", dict(p=0.5, steps_per_link=3)),
        ("rac_lora", dict(side="alternating", sketch="haar", steps_per_link=2)),
        ("cola", dict(steps_per_link=2)),
        ("lora", dict()),
    ],
)
def test_trainer_with_sgd_equals_lk_run(tmp_path, method, config):
    steps, lr, seed = 7, 0.3, 4
    model = tiny_gpt2()
    ours = copy.deepcopy(model)
    callback = ChainCallback(method, seed=seed, **config)
    train(ours, callback, tmp_path, steps, lr)

    problem = ModelProblem(model, data())
    frame = lk.run(method, problem, steps, seeds=[seed], rank=RANK, gamma=lr, update="sgd",
                   estimator="gd", **config)  # fmt: skip
    assert frame["loss"].iloc[-1] < frame["loss"].iloc[0]  # the run trains
    assert callback.link == (0 if config.get("steps_per_link") is None else
                             (steps - 1) // config["steps_per_link"])  # fmt: skip
    for W, V in zip(weights(ours), weights(model), strict=True):
        assert float((W - V).abs().max()) <= 1e-10
    # Both end merged (B = 0): the model's function is its base.
    assert all(float(site.B.detach().abs().max()) == 0.0 for site in sites(ours))
    assert all(p.requires_grad for site in sites(ours) for p in (site.B, site.A))


class FrozenWatch(TrainerCallback):
    """Records, before the chain's restart, whether the link's frozen factor is unchanged."""

    def __init__(self, chain: ChainCallback):
        self.chain, self.checked, self.link, self.start = chain, 0, None, None

    def frozen(self):
        side = self.chain.side
        return [(s.B if side == "left" else s.A).detach().clone() for s in sites(self.model)]

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.model = model
        if self.chain.link != self.link:  # a new link: remember its sketch
            self.link, self.start = self.chain.link, self.frozen()

    def on_step_end(self, args, state, control, **kwargs):
        for now, then in zip(self.frozen(), self.start, strict=True):
            assert torch.equal(now, then)
        self.checked += 1


def test_adamw_trains_and_saves_a_model_that_reloads(tmp_path):
    model = tiny_gpt2()
    batch = data()
    with torch.no_grad():
        before = float(model(**batch).loss)
    chain = ChainCallback("bernoulli_lora", seed=1, p=0.5, steps_per_link=4)
    watch = FrozenWatch(chain)
    # weight_decay > 0: a frozen factor must still not move (it has no gradient, so AdamW skips it)
    train(model, [watch, chain], tmp_path, 12, 0.05, optim="adamw_torch", weight_decay=0.1)
    assert watch.checked == 12 and chain.link == 2
    with torch.no_grad():
        after = model(**batch)
    assert float(after.loss) < before

    # lorakit's save: the base holds the training, so it writes the merged model.
    assert save_trained(model, tmp_path / "merged") == "merged"
    reloaded = GPT2LMHeadModel.from_pretrained(tmp_path / "merged", dtype=torch.float64)
    # Plain peft: merge and save the base model.
    copy.deepcopy(model).merge_and_unload().save_pretrained(tmp_path / "plain")
    plain = GPT2LMHeadModel.from_pretrained(tmp_path / "plain", dtype=torch.float64)
    with torch.no_grad():
        for other in (reloaded, plain):
            assert torch.equal(other(**batch).logits, after.logits)
    # peft's adapter-only save would lose the merged links: it warns.
    with pytest.warns(UserWarning, match="base"):
        model.save_pretrained(tmp_path / "adapter")


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="method"):
        ChainCallback("fslora")
    with pytest.raises(ValueError, match=r"gamma.*the Trainer decides"):
        ChainCallback("rac_lora", gamma=0.1)
    with pytest.raises(ValueError, match=r"^p must be in \[0, 1\]"):
        ChainCallback("bernoulli_lora", p=1.5)
    with pytest.raises(ValueError, match="steps_per_link"):
        ChainCallback("rac_lora", steps_per_link=0)
    with pytest.raises(ValueError, match=r"seed must be in \[0, inf\]"):
        ChainCallback(seed=-1)


def test_resuming_and_an_optimizer_without_a_factor_are_refused(tmp_path):
    model = tiny_gpt2()
    callback = ChainCallback("rac_lora")
    with pytest.raises(ValueError, match="cannot resume from a checkpoint"):
        callback.on_train_begin(None, TrainerState(global_step=3), None, model=model)
    sites(model)[0].A.requires_grad_(False)  # the Trainer's optimizer then leaves it out
    with pytest.raises(ValueError, match="does not hold both LoRA factors"):
        train(model, ChainCallback("rac_lora"), tmp_path, 2, 0.1)
