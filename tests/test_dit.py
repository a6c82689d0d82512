"""FoleyDiT against the reference: parity vectors, released key lists, loading, precision."""
from __future__ import annotations

import pytest
import torch
from conftest import max_abs_error_ratio
from safetensors.torch import save_file

from syncfoley.models import dit_config
from syncfoley.models.checkpoint import CheckpointError
from syncfoley.models.dit import FoleyConditions, FoleyDiT, parameter_count
from syncfoley.models.dit_config import FoleyDiTConfig

RELEASED = {
    "hunyuanvideo_foley_xxl": (dit_config.xxl, 5_134_014_848),
    "hunyuanvideo_foley_xl": (dit_config.xl, 2_912_962_688),
}


@pytest.fixture(scope="module")
def tiny(parity):
    config, state_dict, io = parity("hvf_tiny")
    return config, state_dict, io, FoleyDiT.from_checkpoint(state_dict)


def test_parity_with_visual_conditions(tiny):
    _, _, io, model = tiny
    with torch.no_grad():
        velocity = model(io["x"], io["t"], io["text"], io["clip"], io["sync"])
    assert velocity.shape == io["expected_velocity"].shape
    assert max_abs_error_ratio(velocity, io["expected_velocity"]) < 1e-4


def test_parity_with_learned_null_visual_features(tiny):
    _, _, io, model = tiny
    with torch.no_grad():
        velocity = model(io["x"], io["t"], io["text"], clip=None, sync=None)
        explicit = model(io["x"], io["t"], io["text"], model.null_clip(2, io["clip"].shape[1]),
                         model.null_sync(2, io["sync"].shape[1]))
    assert max_abs_error_ratio(velocity, io["expected_velocity_null_visual"]) < 1e-4
    torch.testing.assert_close(velocity, explicit, rtol=0, atol=0)


def test_config_is_read_from_shapes(tiny):
    config, state_dict, _, model = tiny
    assert model.config == dit_config.parity_tiny()
    assert (model.config.hidden, model.config.heads) == (config["hidden"], config["heads"])
    assert (model.config.triple_blocks, model.config.single_blocks) == (config["triple"], config["single"])
    assert parameter_count(model) == config["num_params"]


def test_prepared_conditions_are_reused_across_steps(tiny):
    _, _, io, model = tiny
    with torch.no_grad():
        conditions = model.prepare(io["text"], io["clip"], io["sync"], io["x"].shape[-1])
        for t in (io["t"], torch.tensor([10.0, 900.0])):
            torch.testing.assert_close(
                model.velocity(io["x"], t, conditions),
                model(io["x"], t, io["text"], io["clip"], io["sync"]), rtol=0, atol=0)


def test_conditions_batch_operations(tiny):
    _, _, io, model = tiny
    with torch.no_grad():
        both = model.prepare(io["text"], io["clip"], io["sync"], io["x"].shape[-1])
        first, second = both.select(slice(0, 1)), both.select(slice(1, 2))
        joined = FoleyConditions.cat([first, second])
        torch.testing.assert_close(model.velocity(io["x"], io["t"], joined), model.velocity(io["x"], io["t"], both))
        # One set of conditions serves several takes.
        takes = model.velocity(io["x"][:1].expand(3, -1, -1), io["t"][:1], first)
        single = model.velocity(io["x"][:1], io["t"][:1], first)
        torch.testing.assert_close(takes, single.expand(3, -1, -1), rtol=1e-5, atol=1e-5)
        short_text = model.prepare(io["text"][:1, :5], io["clip"][:1], io["sync"][:1], io["x"].shape[-1])
        with pytest.raises(ValueError, match="different text lengths"):
            FoleyConditions.cat([first, short_text])
        with pytest.raises(ValueError, match="prepared for 100"):
            model.velocity(io["x"][..., :50], io["t"], both)


def test_sync_features_must_come_in_whole_segments(tiny):
    _, _, io, model = tiny
    with pytest.raises(ValueError, match="multiple of 8"):
        model(io["x"], io["t"], io["text"], io["clip"], io["sync"][:, :-3])


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_configs_match_key_lists(name, reference_dir, seeded):
    factory, count = RELEASED[name]
    with torch.device("meta"):
        model = FoleyDiT(factory())
    expected = dict(seeded.read_key_list(reference_dir / "keys" / f"{name}.keys.txt"))
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert actual == expected
    assert parameter_count(model) == count
    # The config is recovered from the key list's shapes alone.
    shapes = {k: torch.empty(shape, device="meta") for k, shape in expected.items()}
    assert FoleyDiTConfig.from_state_dict(shapes) == factory()
    assert FoleyDiTConfig.from_state_dict(shapes).variant == name.rsplit("_", 1)[1].upper()


def test_pth_and_safetensors_round_trip(tiny, tmp_path):
    _, state_dict, io, model = tiny
    torch.save(state_dict, tmp_path / "model.pth")
    save_file(state_dict, str(tmp_path / "model.safetensors"))
    torch.save({"module." + k: v for k, v in state_dict.items()}, tmp_path / "ddp.pth")
    with torch.no_grad():
        expected = model(io["x"], io["t"], io["text"], io["clip"], io["sync"])
        for name in ("model.pth", "model.safetensors", "ddp.pth"):
            loaded = FoleyDiT.from_checkpoint(tmp_path / name)
            assert not any(p.requires_grad for p in loaded.parameters())
            torch.testing.assert_close(loaded(io["x"], io["t"], io["text"], io["clip"], io["sync"]), expected,
                                       rtol=0, atol=0)


def test_wrong_checkpoints_are_named(tmp_path, tiny):
    _, state_dict, _, _ = tiny
    vae_like = {"encoder.block.0.weight_v": torch.zeros(8, 1, 7), "quant_conv.weight": torch.zeros(4, 2, 1)}
    torch.save({"state_dict": vae_like, "metadata": {"kwargs": {}}}, tmp_path / "vae.pth")
    with pytest.raises(CheckpointError, match=r"vae\.pth' is a DAC-VAE .* Foley model loader expects a HunyuanVideo"):
        FoleyDiT.from_checkpoint(tmp_path / "vae.pth")
    broken = dict(state_dict)
    broken["final_layer.linear.weight"] = torch.zeros(64, 256)
    with pytest.raises(CheckpointError, match=r"wrong shape: final_layer\.linear\.weight"):
        FoleyDiT.from_checkpoint(broken)
    missing = {k: v for k, v in state_dict.items() if not k.startswith("time_in")}
    with pytest.raises(CheckpointError, match=r"missing: time_in\.mlp\.0\.bias"):
        FoleyDiT.from_checkpoint(missing)


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_half_precision_compute(tiny, dtype, tolerance):
    _, state_dict, io, _ = tiny
    model = FoleyDiT.from_checkpoint(state_dict, dtype=dtype)
    assert model.dtype == dtype and model.triple_blocks[0].audio_self_attn_qkv.weight.dtype == dtype
    with torch.no_grad():
        velocity = model(io["x"], io["t"], io["text"], io["clip"], io["sync"])
    assert velocity.dtype == torch.float32
    assert max_abs_error_ratio(velocity, io["expected_velocity"]) < tolerance


@pytest.mark.parametrize("storage", ["float8_e4m3fn", "float8_e5m2"])
def test_fp8_weight_storage(tiny, storage):
    _, state_dict, io, _ = tiny
    storage = getattr(torch, storage)
    full = FoleyDiT.from_checkpoint(state_dict, dtype=torch.bfloat16)
    fp8 = FoleyDiT.from_checkpoint(state_dict, dtype=torch.bfloat16, weight_dtype=storage)
    assert fp8.triple_blocks[0].audio_mlp.fc1.weight.dtype == storage
    assert fp8.empty_clip_feat.dtype == torch.bfloat16  # learned tokens and norms keep full precision
    weight_bytes = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())  # noqa: E731
    assert weight_bytes(fp8) < 0.6 * weight_bytes(full)
    with torch.no_grad():
        velocity = fp8(io["x"], io["t"], io["text"], io["clip"], io["sync"])
    # fp8 keeps 2-3 significant bits of mantissa; the blocks' weights are stored scaled and the rest stays
    # in the compute dtype, so the output stays close, not exact (0.9998 e4m3, 0.9992 e5m2 measured).
    cos = torch.nn.functional.cosine_similarity(velocity.flatten(), io["expected_velocity"].flatten(), dim=0)
    assert cos > (0.999 if storage == torch.float8_e4m3fn else 0.998)


def test_clips_shorter_than_a_segment_get_null_features(tiny):
    _, _, io, model = tiny
    assert model.visual_lengths(5) == (1, 8) and model.visual_lengths(400) == (64, 192)
    with torch.no_grad():
        short = model(io["x"][..., :20], io["t"], io["text"])  # 0.4 s: no whole Synchformer segment
        clip_len, sync_len = model.visual_lengths(20)
        assert (clip_len, sync_len) == (3, 8)
        explicit = model(io["x"][..., :20], io["t"], io["text"], model.null_clip(2, 3), model.null_sync(2, 8))
    assert short.shape == (2, 128, 20) and torch.isfinite(short).all()
    torch.testing.assert_close(short, explicit, rtol=0, atol=0)
