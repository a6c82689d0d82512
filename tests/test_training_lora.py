"""LoRA: peft on our cast-on-use layers, the adapter file, and merging it back without peft."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from test_training_support import small_dit

from syncfoley.models.checkpoint import CheckpointError
from syncfoley.models.dit import FoleyDiT
from syncfoley.models.lora import apply_lora, read_lora, save_lora
from syncfoley.models.ops import store_weights
from syncfoley.training.config import LoraSettings
from syncfoley.training.lora import add_lora, lora_factors, released_state_dict, target_modules

LATENT = 50


def inputs(model, seed: int = 0):
    c = model.config
    g = torch.Generator().manual_seed(seed)
    clip_len, sync_len = model.visual_lengths(LATENT)
    return (torch.randn(2, c.latent_dim, LATENT, generator=g), torch.tensor([250.0, 900.0]),
            torch.randn(2, 9, c.text_dim, generator=g), torch.randn(2, clip_len, c.clip_dim, generator=g),
            torch.randn(2, sync_len, c.sync_dim, generator=g))


def trained_lora(rank: int = 4, alpha: float = 8.0):
    """(base model, the same model with adapters whose factors are all non-zero)."""
    base = small_dit(single_blocks=2).eval()
    tuned = FoleyDiT.from_checkpoint({k: v.clone() for k, v in base.state_dict().items()})
    add_lora(tuned, LoraSettings(rank=rank, alpha=alpha))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    return base, tuned


def test_default_targets_are_the_attention_and_mlp_layers_of_every_block():
    names = target_modules(small_dit(single_blocks=2))
    assert "triple_blocks.0.audio_self_attn_qkv" in names and "triple_blocks.0.text_cross_kv" in names
    assert "single_blocks.1.linear1" in names and "single_blocks.1.linear2.w3" in names  # Conv1d layers too
    assert not [n for n in names if "mod" in n.split(".")[2] or not n.startswith(("triple", "single"))]
    assert "triple_blocks.0.v_cond_mlp.fc1" not in names  # the visual stream ends in the last triple block


def test_a_saved_lora_applied_without_peft_gives_the_peft_models_outputs(tmp_path):
    base, tuned = trained_lora()
    path = tmp_path / "adapter.safetensors"
    save_lora(path, lora_factors(tuned), alpha=8.0, metadata={"base_config": "tiny"})
    adapter = read_lora(path)
    assert adapter.rank == 4 and adapter.metadata["format"] == "syncfoley-lora"
    assert all(scale == 2.0 for _, _, scale in adapter.layers.values())
    with torch.no_grad():
        expected = tuned(*inputs(base))
        merged = apply_lora(base, path)
        torch.testing.assert_close(merged(*inputs(base)), expected, rtol=1e-4, atol=1e-5)
        assert (expected - base(*inputs(base))).abs().max() > 1e-2  # the adapter does change the output
        # A copy: the base model is untouched and shares every weight the LoRA does not adapt.
        assert merged is not base
        assert merged.final_layer.linear.weight is base.final_layer.linear.weight
        assert not torch.equal(merged.triple_blocks[0].text_cross_kv.weight, base.triple_blocks[0].text_cross_kv.weight)
        torch.testing.assert_close(apply_lora(base, path, strength=0.0)(*inputs(base)), base(*inputs(base)))


def test_a_lora_merges_into_scaled_fp8_weights_through_their_scale(tmp_path):
    from syncfoley.models.ops import dequantized_weight, set_precision

    base, tuned = trained_lora()
    path = tmp_path / "adapter.safetensors"
    save_lora(path, lora_factors(tuned), alpha=8.0)
    fp8 = set_precision(FoleyDiT.from_checkpoint({k: v.clone() for k, v in base.state_dict().items()}),
                        torch.float32, torch.float8_e4m3fn)
    layer = "single_blocks.1.linear1"  # in a repeated block: stored in fp8 with a scale
    assert dict(fp8.named_modules())[layer].weight.dtype == torch.float8_e4m3fn
    merged = apply_lora(fp8, path)
    expected = dict(apply_lora(base, path).named_modules())[layer].weight
    got = dequantized_weight(dict(merged.named_modules())[layer])
    before = dequantized_weight(dict(fp8.named_modules())[layer])
    # the merged weight is the full-precision merge up to e4m3 rounding (about 2.6 %), and it moved
    assert (got - expected).norm() / expected.norm() < 0.04
    assert (got - before).norm() > 0.5 * (expected - base.state_dict()[layer + ".weight"]).norm()


def test_peft_style_files_are_read_the_same(tmp_path):
    _, tuned = trained_lora()
    ours = {f"{name}.lora_{p}.weight": t for name, (a, b) in lora_factors(tuned).items() for p, t in (("A", a), ("B", b))}
    peft_style = {f"base_model.model.{k.replace('.weight', '.default.weight')}": v for k, v in ours.items()}
    save_file({k: v.contiguous() for k, v in peft_style.items()}, str(tmp_path / "peft.safetensors"),
              metadata={"alpha": "8.0"})
    adapter = read_lora(tmp_path / "peft.safetensors")
    expected = read_lora(ours | {})
    assert adapter.layers.keys() == expected.layers.keys()
    for name, (a, b, scale) in adapter.layers.items():
        assert torch.equal(a, expected.layers[name][0]) and scale == 2.0


def test_full_model_export_keeps_the_released_names_and_merges_the_lora():
    base, tuned = trained_lora()
    state = released_state_dict(tuned)
    assert state.keys() == base.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(FoleyDiT.from_checkpoint(state)(*inputs(base)), tuned(*inputs(base)),
                                   rtol=1e-4, atol=1e-5)


def test_a_lora_for_another_model_size_or_a_full_model_is_refused(tmp_path):
    _, tuned = trained_lora()
    path = tmp_path / "adapter.safetensors"
    save_lora(path, lora_factors(tuned), alpha=8.0, metadata={"base_config": "hidden 64"})
    wider = small_dit(single_blocks=2, hidden=128)
    with pytest.raises(CheckpointError, match="another model size.*hidden 64"):
        apply_lora(wider, path)
    with pytest.raises(CheckpointError, match="does not have"):
        apply_lora(small_dit(single_blocks=1), path)
    with pytest.raises(CheckpointError, match="is a LoRA adapter checkpoint.*but the Foley model loader"):
        FoleyDiT.from_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a LoRA adapter"):
        read_lora(small_dit().state_dict())


def test_lora_training_on_fp8_weights_is_refused_with_the_fix():
    model = store_weights(small_dit(single_blocks=1), torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="fp8 storage is for inference: load the model with precision bf16"):
        add_lora(model, LoraSettings(rank=2))


def test_adapters_train_in_fp32_on_a_bf16_base():
    model = small_dit(single_blocks=1).to(torch.bfloat16)
    add_lora(model, LoraSettings(rank=2))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    x, t, text, clip, sync = inputs(model)
    out = model(x, t, text, clip, sync)
    out.square().mean().backward()
    # Every adapter gets a gradient (the layers that never reach the output are not adapted), so
    # distributed training finds no unused parameter.
    assert all(p.grad is not None for p in trainable.values())
    assert model.triple_blocks[0].audio_self_attn_qkv.base_layer.weight.dtype == torch.bfloat16
