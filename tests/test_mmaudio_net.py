"""MMAudioNet against the reference: parity vectors (v1, v2), released key lists, loading, lengths."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import max_abs_error_ratio, mmaudio_vectors
from tiny_mmaudio import nominal_seconds
from safetensors.torch import save_file

from syncfoley.models import mmaudio_config
from syncfoley.models.checkpoint import CheckpointError
from syncfoley.models.mmaudio import MMAudioConditions, MMAudioNet
from syncfoley.models.mmaudio_config import MMAudioConfig

RELEASED = ("small_16k", "small_44k", "medium_44k", "large_44k", "large_44k_v2")
CONDITION_FIELDS = ("clip_f", "sync_f", "text_f", "clip_f_c", "text_f_c")
TOLERANCE = 1e-4


@pytest.fixture(scope="module", params=mmaudio_vectors("mmaudio_network", "mmaudio_tiny", "mmaudio_tiny_v2"))
def case(request, mmaudio_parity, tmp_path_factory):
    """A parity case loaded from a `.pth` in the release's format (a flat pickled state dict)."""
    config, state_dict, io = mmaudio_parity(request.param)
    path = tmp_path_factory.mktemp("mmaudio") / f"{request.param}.pth"
    torch.save(state_dict, path)
    net = MMAudioNet.from_checkpoint(path)
    batch, latent_length = io["x"].shape[:2]
    with torch.no_grad():
        io["conditions"] = net.prepare(io["clip"], io["sync"], io["text"], latent_length)
        io["empty"] = net.empty_conditions(batch, latent_length)
    return config, state_dict, io, net


def test_config_is_read_from_shapes(case):
    config, _, _, net = case
    kwargs = config["ctor_kwargs"]
    c = net.config
    assert (c.latent_dim, c.hidden, c.heads, c.v2) == (kwargs["latent_dim"], kwargs["hidden_dim"],
                                                         kwargs["num_heads"], kwargs["v2"])
    assert (c.depth, c.fused_blocks) == (kwargs["depth"], kwargs["fused_depth"])
    assert c.variant.startswith("custom")
    assert c.latent_length(nominal_seconds(c, kwargs["latent_seq_len"])) == kwargs["latent_seq_len"]
    assert c.condition_lengths(kwargs["latent_seq_len"]) == (kwargs["clip_seq_len"], kwargs["sync_seq_len"])


def test_prepared_conditions(case):
    _, _, io, net = case
    for name in CONDITION_FIELDS:
        assert max_abs_error_ratio(getattr(io["conditions"], name), io[f"expected_cond_{name}"]) < TOLERANCE, name


def test_velocity(case):
    _, _, io, net = case
    with torch.no_grad():
        velocity = net.velocity(io["x"], io["t"], io["conditions"])
        forward = net(io["x"], io["t"], clip=io["clip"], sync=io["sync"], text=io["text"])
    assert velocity.dtype == torch.float32 and velocity.shape == io["x"].shape
    assert max_abs_error_ratio(velocity, io["expected_velocity"]) < TOLERANCE
    assert max_abs_error_ratio(forward, io["expected_velocity_forward"]) < TOLERANCE


def test_empty_conditions(case):
    _, _, io, net = case
    empty = io["empty"]
    with torch.no_grad():
        velocity = net.velocity(io["x"], io["t"], empty)
        # None inputs are the learned empty features at the lengths that go with the latents.
        forward = net(io["x"], io["t"])
    for name in CONDITION_FIELDS:
        assert max_abs_error_ratio(getattr(empty, name), io[f"expected_empty_{name}"]) < TOLERANCE, name
    assert max_abs_error_ratio(velocity, io["expected_velocity_empty"]) < TOLERANCE
    assert max_abs_error_ratio(forward, io["expected_velocity_empty"]) < TOLERANCE


def test_euler_cfg_sampling(case):
    config, _, io, net = case
    steps, cfg = config["steps"], config["cfg_strength"]
    times = torch.linspace(0, 1, steps + 1)
    x = io["noise"].clone()
    conditions, empty = io["conditions"], io["empty"]
    with torch.no_grad():
        for t, t_next in zip(times[:-1], times[1:]):
            t_batch = t.expand(x.shape[0])
            v = cfg * net.velocity(x, t_batch, conditions) + (1 - cfg) * net.velocity(x, t_batch, empty)
            x = x + (t_next - t) * v
    assert max_abs_error_ratio(x, io["expected_sample"]) < TOLERANCE
    assert max_abs_error_ratio(net.unnormalize(x), io["expected_sample_unnormalized"]) < TOLERANCE
    torch.testing.assert_close(net.normalize(net.unnormalize(x)), x, rtol=1e-5, atol=1e-5)


def test_fp16_safetensors_copy(case, tmp_path):
    _, state_dict, io, _ = case
    half = {k: v.half() for k, v in state_dict.items()}
    half["t_embed.freqs"] = torch.ones(128)  # derived buffers some saves carry are dropped
    save_file(half, str(tmp_path / "net_fp16.safetensors"))
    net = MMAudioNet.from_checkpoint(tmp_path / "net_fp16.safetensors")
    assert net.dtype == torch.float16 and net.latent_mean.dtype == torch.float16
    net32 = MMAudioNet.from_checkpoint(tmp_path / "net_fp16.safetensors", dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in net32.parameters())
    with torch.no_grad():
        velocity = net32(io["x"], io["t"], io["clip"], io["sync"], io["text"])
    assert max_abs_error_ratio(velocity, io["expected_velocity"]) < 1e-2  # fp16-rounded weights


def test_conditions_batch_operations(case):
    _, _, io, net = case
    conditions = io["conditions"]
    with torch.no_grad():
        empty = net.empty_conditions(1, io["x"].shape[1])
        both = MMAudioConditions.cat([conditions, empty.expand(2)])
        velocity = net.velocity(torch.cat([io["x"], io["x"]]), torch.cat([io["t"], io["t"]]), both)
        second = net.velocity(io["x"][1:], io["t"][1:], conditions.select(slice(1, 2)))
        # Inputs of batch 1 are shared: one text for two clips.
        shared = net.prepare(io["clip"], io["sync"], io["text"][:1], io["x"].shape[1])
    assert both.batch == 4 and empty.batch == 1
    assert max_abs_error_ratio(velocity[:2], io["expected_velocity"]) < TOLERANCE
    assert max_abs_error_ratio(velocity[2:], io["expected_velocity_empty"]) < TOLERANCE
    torch.testing.assert_close(second, velocity[1:2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared.text_f[1], conditions.text_f[0])
    with pytest.raises(ValueError, match="different lengths"):
        MMAudioConditions.cat([conditions, net.empty_conditions(2, io["x"].shape[1] + 5)])
    with pytest.raises(ValueError, match="prepared for"):
        net.velocity(io["x"][:, :-1], io["t"], conditions)
    with pytest.raises(ValueError, match="multiple of 8"):
        net.prepare(io["clip"], io["sync"][:, :-3], io["text"], io["x"].shape[1])


def test_any_latent_length(case):
    """Windows of long videos and very short clips use other lengths than the nominal ones."""
    _, _, io, net = case
    c = net.config
    for latent_length in (1, 7, 100):
        with torch.no_grad():
            conditions = net.empty_conditions(2, latent_length)
            x = torch.randn(2, latent_length, c.latent_dim, generator=torch.Generator().manual_seed(latent_length))
            velocity = net.velocity(x, torch.tensor([0.1, 0.9]), conditions)
        clip_length, sync_length = c.condition_lengths(latent_length)
        assert conditions.clip_f.shape[1] == clip_length >= 1 and conditions.sync_tokens.shape[1] == sync_length >= 8
        assert conditions.sync_f.shape[1] == latent_length and conditions.latent_rope.shape[1] == latent_length
        assert velocity.shape == x.shape and torch.isfinite(velocity).all()
    # The clip rotary frequencies are stretched by La / Lc so clip frames line up with latent time.
    conditions = net.empty_conditions(1, 100, clip_length=10, sync_length=16)
    assert conditions.lengths() == (100, 10, 16, 77)
    torch.testing.assert_close(conditions.clip_rope[:, 3], conditions.latent_rope[:, 30], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Released sizes and configuration
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", RELEASED)
def test_released_configs_match_key_lists(name, reference_dir, seeded):
    keys = reference_dir / "mmaudio" / "keys"
    expected = dict(seeded.read_key_list(keys / f"mmaudio_{name}.keys.txt"))
    factory = mmaudio_config.NAMED_CONFIGS[name]
    with torch.device("meta"):
        net = MMAudioNet(factory())
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == expected
    summary = json.loads((keys / "summary.json").read_text())[name]
    assert sum(p.numel() for p in net.parameters()) == summary["num_params"]
    shapes = {k: torch.empty(shape, device="meta") for k, shape in expected.items()}
    config = MMAudioConfig.from_state_dict(shapes)
    assert config == factory() and config.variant == name
    assert config.mode == name.split("_")[1] and config.latent_length(8.0) == (250 if "16k" in name else 345)
    assert config.condition_lengths(config.latent_length(8.0)) == (64, 192)


def test_v2_is_told_apart_at_hidden_256():
    """At hidden 256 the timestep features are 256 wide in both versions; the key layout decides."""
    for v2 in (False, True):
        config = mmaudio_config.sized(40, 4, 3, 1, v2=v2)
        with torch.device("meta"):
            shapes = MMAudioNet(config).state_dict()
        assert shapes["t_embed.mlp.0.weight"].shape == (256, 256)
        assert MMAudioConfig.from_state_dict(shapes) == config
    mixed = dict(MMAudioNet(mmaudio_config.sized(40, 2, 2, 1, v2=True), device="meta").state_dict())
    mixed["t_embed.mlp.0.weight"] = torch.empty(128, 256, device="meta")
    with pytest.raises(ValueError, match="inconsistent MMAudio state dict: v2 key layout"):
        MMAudioConfig.from_state_dict(mixed)


def test_sequence_lengths():
    c16, c44 = mmaudio_config.small_16k(), mmaudio_config.large_44k_v2()
    assert (c16.latent_rate, c16.sample_rate, c16.audio_samples(250)) == (31.25, 16000, 128_000)
    assert (c44.sample_rate, c44.latent_length(8.0), c44.audio_samples(345)) == (44100, 345, 353_280)
    assert c44.duration(345) == 8.0 and c44.condition_lengths(c44.latent_length(10.0)) == (80, 240)
    for seconds in (0.5, 1.25, 2.3, 4.1, 7.95, 12.0):  # nominal durations give the release's lengths
        for c in (c16, c44):
            expected = (max(1, c.clip_length(seconds)), max(8, c.sync_length(seconds)))
            assert c.condition_lengths(c.latent_length(seconds)) == expected, (c.mode, seconds)
    assert c16.condition_lengths(1) == (1, 8)  # shorter than a frame and a segment
    with pytest.raises(ValueError, match="matches neither MMAudio mel VAE"):
        _ = mmaudio_config.sized(32, 2, 2, 1).mode


# ------------------------------------------------------------------------------------------------
# Files that are not an MMAudio network
# ------------------------------------------------------------------------------------------------
class NotATensor:
    """A pickled object that weights_only loading must refuse."""


def test_foley_dit_file_is_named(reference_dir, seeded, tmp_path):
    keys = seeded.read_key_list(reference_dir / "parity" / "hvf_tiny.keys.txt")
    foley = {name: torch.empty(shape, device="meta") for name, shape in keys}
    with pytest.raises(CheckpointError, match=r"is a HunyuanVideo-Foley MM-DiT .* MMAudio network loader expects an "
                                              r"MMAudio network"):
        MMAudioNet.from_checkpoint(foley)


def test_truncated_and_unsafe_files_are_refused(case, tmp_path):
    _, state_dict, _, _ = case
    torch.save(state_dict, tmp_path / "net.pth")
    data = (tmp_path / "net.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        MMAudioNet.from_checkpoint(tmp_path / "truncated.pth")
    torch.save({"state_dict": state_dict, "extra": NotATensor()}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError, match="refusing to load .* carries code"):
        MMAudioNet.from_checkpoint(tmp_path / "code.pth")
    broken = {k: v for k, v in state_dict.items() if k != "fused_blocks.0.linear1.bias"}
    with pytest.raises(CheckpointError, match=r"missing: fused_blocks\.0\.linear1\.bias"):
        MMAudioNet.from_checkpoint(broken)
