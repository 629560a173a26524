"""Adapter sites on a tiny GPT-2 (Conv1D, fan_in_fan_out) and a toy Linear model.

Float32 GPT-2 outputs are compared with the stated tolerances (merge and restart: 1e-5, the
issue's requirement); state round trips are exact.
"""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft_toys import toy_model
from transformers import GPT2Config, GPT2LMHeadModel

from lorakit.adapters import (
    adapter_state,
    freeze,
    load_adapter,
    load_adapter_state,
    save_adapter,
    site_frame,
    sites,
    swapped,
)

# peft's get_peft_model calls a deprecated transformers helper (not ours).
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

CONFIG = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=256, n_positions=32,
                    bos_token_id=0, eos_token_id=0)  # fmt: skip


def _base(seed=0):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(CONFIG).eval()


def _gpt2(seed=0, nonzero=True):
    """Tiny GPT-2 with LoRA (r = 4, α = 8: s = 2) on c_attn/c_proj; B random when ``nonzero``."""
    lora = LoraConfig(r=4, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True)
    model = get_peft_model(_base(seed), lora).eval()
    if nonzero:  # peft starts from B = 0; a nonzero product makes the comparisons meaningful
        g = torch.Generator().manual_seed(seed + 100)
        for site in sites(model):
            site.set_factors(B=0.1 * torch.randn(site.B.shape, generator=g))
    return model


IDS = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(7))


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_sites_are_found_by_module_type_with_conv1d_orientation():
    model = _gpt2()
    found = sites(model)
    assert [s.name for s in found] == [
        f"base_model.model.transformer.h.{i}.{m}"
        for i in (0, 1)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_proj")
    ]
    assert [s.shape for s in found] == [(96, 32), (32, 32), (32, 128)] * 2
    assert all(s.transposed and s.rank == 4 and s.scaling == 2.0 for s in found)
    x = torch.randn(5, 7, 128, generator=torch.Generator().manual_seed(0))
    for site in found:
        n = site.shape[1]
        bias = site.layer.get_base_layer().bias
        with torch.no_grad():
            out = site.layer(x[..., :n])
        torch.testing.assert_close(out, x[..., :n] @ site.W().T + bias, rtol=0, atol=1e-5)
        # the delta is peft's own, transposed back from Conv1D's (in, out) storage
        torch.testing.assert_close(site.delta(), site.layer.get_delta_weight("default").T)
    table = site_frame(found)
    assert table["adapter_entries"].tolist() == [4 * (96 + 32), 4 * 64, 4 * 160] * 2
    assert table["conv1d"].all() and (table["scaling"] == 2.0).all()


def test_linear_site_is_not_transposed():
    model = toy_model(rank=2, lora_alpha=4, init_lora_weights=False)  # random A and B
    for site in sites(model):
        assert not site.transposed and site.scaling == 2.0
        assert torch.equal(site.delta(), site.layer.get_delta_weight("default"))
        assert torch.equal(site.W0, site.layer.get_base_layer().weight.detach())


@pytest.mark.parametrize("nonzero", [False, True], ids=["peft-init", "nonzero-product"])
def test_merge_and_restart_keeps_the_outputs(nonzero):
    """W0 ← W0 + s·B·A, then a fresh Gaussian B and A = 0: logits within 1e-5 (float32; measured
    1.8e-7, and 0 from peft's B = 0); the merged product is in W0."""
    model = _gpt2(nonzero=nonzero)
    before, found = _logits(model), sites(model)
    W_before = [s.W() for s in found]
    g = torch.Generator().manual_seed(1)
    for site in found:
        (m, n), r = site.shape, site.rank
        site.merge_and_restart(torch.randn(m, r, generator=g), torch.zeros(r, n))
    assert (_logits(model) - before).abs().max() <= 1e-5
    for site, W in zip(found, W_before, strict=True):
        torch.testing.assert_close(site.W0, W, rtol=0, atol=1e-6)
        assert float(site.A.detach().abs().max()) == 0.0


@pytest.mark.parametrize("side", ["left", "right"])
def test_restart_draws_the_frozen_factor_from_the_sketch(side):
    """Site.restart: merge, the frozen factor a draw of the sketch (same generator → same draw),
    the trained factor zero; logits within 1e-5."""
    from lorakit.sketches import haar

    model = _gpt2(nonzero=True)
    before, found = _logits(model), sites(model)
    g, g_ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for site in found:
        (m, n), r = site.shape, site.rank
        drawn = site.restart("haar", side=side, generator=g)
        shape = (m, r) if side == "left" else (r, n)
        expected = haar().sample(shape, g_ref, side=side, dtype=torch.float32)
        frozen, trained = (site.B, site.A) if side == "left" else (site.A, site.B)
        assert torch.equal(drawn, expected) and torch.equal(frozen.detach(), expected)
        assert float(trained.detach().abs().max()) == 0.0
    assert (_logits(model) - before).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="side"):
        found[0].restart(side="both")
        assert not site.layer.merged_adapters  # a restart, not peft's merge flag


def test_freeze_guard_survives_set_adapter():
    """peft's set_adapter re-enables every factor; freeze(…, "right") makes A frozen again and an
    optimizer over the trainable parameters leaves A bit-identical while B moves."""
    model = _gpt2()
    found = sites(model)
    freeze(found, "right")
    model.set_adapter("default")
    assert all(s.A.requires_grad for s in found)  # what peft does
    trained = freeze(found, "right")
    assert not any(s.A.requires_grad for s in found)
    assert {id(t) for t in trained} == {id(s.B) for s in found}
    A0, B0 = [s.A.detach().clone() for s in found], [s.B.detach().clone() for s in found]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        model(input_ids=IDS, labels=IDS).loss.backward()
        opt.step()
    assert all(torch.equal(s.A, a) for s, a in zip(found, A0, strict=True))
    assert all(not torch.equal(s.B, b) for s, b in zip(found, B0, strict=True))


def test_swap_of_a_column_slice_is_the_diagonal_sketch():
    """B[:, I], A[I, :] with scaling s·r/k gives the output of B·S·A, S = (r/k)·diag(1_I)
    (FSLoRA's sketch); swapping back restores the model exactly."""
    model = _gpt2()
    found = sites(model)
    original = _logits(model)
    idx, r = torch.tensor([0, 2]), 4
    S = torch.zeros(r)
    S[idx] = r / len(idx)
    slices = [s.slice(idx) for s in found]
    for site, (B, A) in zip(found, slices, strict=True):  # slice then pad: zeros outside I
        full_B, full_A = site.pad(B, A, idx)
        assert torch.equal(full_B[:, idx], site.B.detach()[:, idx])
        assert torch.equal(full_A[idx], site.A.detach()[idx])
        assert not full_B[:, [1, 3]].any() and not full_A[[1, 3]].any()
    scalings = [s.scaling * r / len(idx) for s in found]
    with swapped(found, slices, scalings):
        assert all(s.rank == 2 for s in found)
        sliced = _logits(model)
    assert torch.equal(_logits(model), original) and all(s.scaling == 2.0 for s in found)
    B_full = [s.B.detach().clone() for s in found]
    for site, B in zip(found, B_full, strict=True):
        site.set_factors(B=B * S)
    torch.testing.assert_close(sliced, _logits(model), rtol=0, atol=1e-6)
    assert (sliced - original).abs().max() > 1e-4  # the sketch changes the model


def test_adapter_state_round_trip_is_exact():
    one, two = _gpt2(seed=0), _gpt2(seed=1)
    state = adapter_state(one)
    assert len(state) == 12 and all(".default." not in k for k in state)
    assert not torch.equal(sites(two)[0].A, sites(one)[0].A)
    load_adapter_state(two, state)
    back = adapter_state(two)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], v) for k, v in state.items())


def test_saved_adapter_loads_in_plain_peft(tmp_path):
    model = _gpt2()
    save_adapter(model, tmp_path)
    plain = PeftModel.from_pretrained(_base(0), str(tmp_path))
    torch.testing.assert_close(_logits(plain), _logits(model), rtol=0, atol=1e-6)
    again = load_adapter(_base(0), tmp_path, trainable=True)
    assert all(s.A.requires_grad and s.B.requires_grad for s in sites(again))
    torch.testing.assert_close(_logits(again.eval()), _logits(model), rtol=0, atol=1e-6)


def test_foreign_key_and_missing_lora_raise():
    model = _gpt2(nonzero=False)
    state = {"base_model.model.transformer.h.9.attn.c_attn.lora_A.weight": torch.zeros(4, 32)}
    with pytest.raises(ValueError, match="keys the model lacks"):
        load_adapter_state(model, state)
    with pytest.raises(ValueError, match="no LoRA layer"):
        sites(_base(0))
    with pytest.raises(ValueError, match="no LoRA layer"):
        sites(model, adapter="other")
