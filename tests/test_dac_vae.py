"""DAC-VAE against the reference: parity vectors, released key list, file formats, chunked decode."""
from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import max_abs_error_ratio
from safetensors import safe_open
from safetensors.torch import save_file

from syncfoley.models.checkpoint import CheckpointError
from syncfoley.models.dac_layers import weight_norm_convs
from syncfoley.models.dac_vae import DacVae, DacVaeConfig

RELEASE_PARAMS = 371_589_058


@pytest.fixture(scope="module")
def tiny(parity):
    config, state_dict, io = parity("dacvae_tiny")
    return config, state_dict, io, DacVae.from_checkpoint(state_dict)


@pytest.fixture(scope="module")
def long_latent(tiny):
    generator = torch.Generator().manual_seed(7)
    return 2.0 * torch.randn(2, tiny[3].config.latent_dim, 57, generator=generator)


# Parity and configuration -----------------------------------------------------------------------
def test_parity_encode_and_decode(tiny):
    _, _, io, model = tiny
    with torch.no_grad():
        mean, logvar = model.encode(io["wav"])
        decoded = model.decode(io["expected_mean"])
    assert mean.shape == io["expected_mean"].shape and decoded.shape == io["expected_decoded"].shape
    assert max_abs_error_ratio(mean, io["expected_mean"]) < 1e-4
    assert max_abs_error_ratio(logvar, io["expected_logvar"]) < 1e-4
    assert max_abs_error_ratio(decoded, io["expected_decoded"]) < 1e-4


def test_config_from_kwargs_equals_config_from_shapes(tiny):
    config, state_dict, _, model = tiny
    from_kwargs = DacVaeConfig.from_kwargs(config["kwargs"])
    assert from_kwargs == DacVaeConfig.from_state_dict(state_dict) == model.config
    assert from_kwargs.hop_length == config["hop_length"] == 960
    assert sum(p.numel() for p in model.parameters()) == config["num_params"]


def test_release_layout_matches_key_list(reference_dir, seeded):
    expected = seeded.read_key_list(reference_dir / "keys" / "dac_vae_128d_48k.keys.txt")
    config = DacVaeConfig.release_128d_48k()
    assert (config.hop_length, config.latent_rate) == (960, 50.0)
    with torch.device("meta"):
        model = DacVae(config)
    state_dict = model.state_dict()
    assert [(name, tuple(t.shape)) for name, t in state_dict.items()] == expected
    assert sum(p.numel() for p in model.parameters()) == RELEASE_PARAMS
    assert DacVaeConfig.from_state_dict(state_dict) == config
    assert model.decoder_context_latents == 12


def test_discrete_or_unknown_kwargs_are_refused(tiny):
    kwargs = dict(tiny[0]["kwargs"])
    with pytest.raises(CheckpointError, match="discrete DAC"):
        DacVaeConfig.from_kwargs({**kwargs, "continuous": False})
    with pytest.raises(ValueError, match=r"unknown DAC-VAE kwargs \['d_out'\]"):
        DacVaeConfig.from_kwargs({**kwargs, "d_out": 2})
    assert DacVaeConfig.from_kwargs(json.dumps({**kwargs, "latent_dim": None})).latent_dim == 8 * 2**5


# Checkpoint files -------------------------------------------------------------------------------
def _write_release_pickle(path, state_dict, kwargs):
    torch.save({"state_dict": state_dict, "metadata": {"kwargs": kwargs}}, path)


def _write_safetensors_without_metadata(path, state_dict, kwargs):
    save_file(state_dict, str(path))


@pytest.mark.parametrize("writer, suffix", [
    (_write_release_pickle, ".pth"),
    ("save_safetensors", ".safetensors"),
    (_write_safetensors_without_metadata, ".safetensors"),
], ids=["release-pickle", "safetensors-with-kwargs", "safetensors-shapes-only"])
def test_checkpoint_files_round_trip(tiny, tmp_path, writer, suffix):
    config, state_dict, io, model = tiny
    path = tmp_path / f"vae{suffix}"
    if writer == "save_safetensors":
        model.save_safetensors(path)
        with safe_open(str(path), framework="pt") as f:
            assert json.loads(f.metadata()["kwargs"]) == {**model.config.to_kwargs(), "continuous": True}
    else:
        writer(path, state_dict, config["kwargs"])
    loaded = DacVae.from_checkpoint(path)
    assert loaded.config == model.config
    with torch.no_grad():
        for a, b in zip(loaded.encode(io["wav"]), model.encode(io["wav"])):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        torch.testing.assert_close(loaded.decode(io["expected_mean"]), model.decode(io["expected_mean"]),
                                   rtol=0, atol=1e-6)


def test_wrong_kind_of_checkpoint_is_named(tmp_path):
    path = tmp_path / "hunyuanvideo_foley.pth"
    torch.save({"triple_blocks.0.audio_mod.linear.weight": torch.ones(6, 2)}, path)
    with pytest.raises(CheckpointError, match="HunyuanVideo-Foley MM-DiT.*the DAC-VAE loader expects a DAC-VAE"):
        DacVae.from_checkpoint(path)


def test_discrete_dac_and_mismatched_kwargs_are_refused(tiny, tmp_path):
    config, state_dict, _, _ = tiny
    discrete = {k: v for k, v in state_dict.items() if "quant_conv" not in k}
    discrete["quantizer.quantizers.0.codebook.weight"] = torch.ones(4, 8)
    with pytest.raises(CheckpointError, match="discrete DAC"):
        DacVae.from_checkpoint(discrete)
    path = tmp_path / "vae.pth"
    _write_release_pickle(path, state_dict, {**config["kwargs"], "latent_dim": 32})
    with pytest.raises(CheckpointError, match="does not match a DAC-VAE.*wrong shape: decoder.model.0.weight_v"):
        DacVae.from_checkpoint(path)


# Weight norm ------------------------------------------------------------------------------------
@pytest.mark.parametrize("transposed", [False, True])
def test_weight_norm_matches_torch_and_fuses(transposed):
    conv_cls = weight_norm_convs()[int(transposed)]
    layer = conv_cls(6, 4, 4, stride=2, padding=1)
    torch.nn.init.normal_(layer.weight_g)
    reference = (torch.nn.ConvTranspose1d if transposed else torch.nn.Conv1d)(6, 4, 4, stride=2, padding=1)
    reference = torch.nn.utils.parametrizations.weight_norm(reference, dim=0)
    # torch's dim 0 is the *input* channel of a transposed conv: the gain is [in, 1, 1] there.
    assert layer.weight_g.shape == (6 if transposed else 4, 1, 1)
    with torch.no_grad():
        reference.parametrizations.weight.original0.copy_(layer.weight_g)
        reference.parametrizations.weight.original1.copy_(layer.weight_v)
        reference.bias.copy_(layer.bias)
        x = torch.randn(2, 6, 11)
        expected = reference(x)
        torch.testing.assert_close(layer(x), expected, rtol=1e-6, atol=1e-6)
        v_before = layer.weight_v
        layer.eval()
        layer.fuse_weight_norm()
        assert layer.weight_norm_fused and sorted(layer.state_dict()) == ["bias", "weight_g", "weight_v"]
        torch.testing.assert_close(layer(x), expected, rtol=1e-6, atol=1e-6)
        assert not torch.equal(v_before, layer.weight_v)  # new tensors; the caller's stay untouched
        layer.train()
        assert not layer.weight_norm_fused
        torch.testing.assert_close(layer(x), expected, rtol=1e-6, atol=1e-6)


def test_loading_fuses_without_touching_the_callers_tensors(tiny):
    _, state_dict, io, model = tiny
    given = {k: v.clone() for k, v in state_dict.items()}
    loaded = DacVae.from_checkpoint(given)
    assert all(layer.weight_norm_fused for layer in loaded.modules() if hasattr(layer, "weight_norm_fused"))
    for key, tensor in state_dict.items():
        torch.testing.assert_close(given[key], tensor, rtol=0, atol=0)
    assert list(loaded.state_dict()) == list(state_dict)
    # A fused model saved and reloaded unfused computes the same function.
    unfused = DacVae.from_checkpoint(loaded.state_dict()).train()
    with torch.no_grad():
        torch.testing.assert_close(unfused.decode(io["expected_mean"]), loaded.decode(io["expected_mean"]),
                                   rtol=0, atol=1e-6)


# Encode / decode shapes and chunking ------------------------------------------------------------
def test_encode_pads_to_a_multiple_of_the_hop(tiny):
    model = tiny[3]
    hop = model.hop_length
    wav = 0.3 * torch.randn(1, 1, 3 * hop + 17, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mean, logvar = model.encode(wav)
        padded_mean, _ = model.encode(torch.nn.functional.pad(wav, (0, hop - 17)))
        audio = model.decode(mean)
    assert mean.shape == logvar.shape == (1, model.config.latent_dim, math.ceil(wav.shape[-1] / hop)) == (1, 16, 4)
    torch.testing.assert_close(mean, padded_mean, rtol=0, atol=0)
    assert audio.shape == (1, 1, 4 * hop)
    assert float(logvar.min()) >= -30 and float(logvar.max()) <= 20


def _spy_decoder_lengths(model, monkeypatch) -> list[int]:
    lengths: list[int] = []
    forward = model.decoder.forward

    def spy(z):
        lengths.append(z.shape[-1])
        return forward(z)

    monkeypatch.setattr(model.decoder, "forward", spy)
    return lengths


def test_chunked_decode_matches_one_shot_with_bounded_calls(tiny, long_latent, monkeypatch):
    model = tiny[3]
    with torch.no_grad():
        one_shot = model.decode(long_latent, chunk_latents=None)
        lengths = _spy_decoder_lengths(model, monkeypatch)
        chunked = model.decode(long_latent, chunk_latents=10)
        no_overlap = model.decode(long_latent, chunk_latents=10, overlap_latents=0)
    overlap = model.decoder_context_latents
    assert chunked.shape == one_shot.shape == (2, 1, 57 * model.hop_length)
    assert float((chunked - one_shot).abs().max()) < 1e-3
    # Without the overlap the chunk seams are wrong, so the comparison above has teeth.
    assert float((no_overlap - one_shot).abs().max()) > 1e-2
    assert len(lengths) == 12 and max(lengths[:6]) <= 10 + 2 * overlap and lengths[6:] == [10] * 5 + [7]


def test_decode_chunks_by_default_above_ten_seconds(tiny, monkeypatch):
    model = tiny[3]
    z = torch.randn(1, model.config.latent_dim, DacVae.DEFAULT_CHUNK_LATENTS + 25)
    lengths = _spy_decoder_lengths(model, monkeypatch)
    with torch.no_grad():
        audio = model.decode(z)
    assert audio.shape[-1] == z.shape[-1] * model.hop_length
    assert lengths == [500 + 12, 25 + 12]
    with pytest.raises(ValueError, match="chunk_latents must be >= 1"):
        model.decode(z, chunk_latents=0)


def test_decoder_context_bounds_the_measured_receptive_field(tiny):
    model = tiny[3]
    hop, middle = model.hop_length, 20
    z = torch.randn(1, model.config.latent_dim, 2 * middle + 1, generator=torch.Generator().manual_seed(5))
    nudged = z.clone()
    nudged[..., middle] += 3.0
    with torch.no_grad():
        changed = (model.decode(z, chunk_latents=None) - model.decode(nudged, chunk_latents=None))[0, 0] != 0
    first, last = changed.nonzero()[[0, -1], 0].tolist()
    reach = max(middle - first / hop, (last + 1) / hop - (middle + 1))
    # The formula is an upper bound and, for the release rates, a close one (measured ~9.8 vs 12).
    assert model.decoder_context_latents - 3 <= reach <= model.decoder_context_latents


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_encode_and_chunked_decode(tiny, dtype):
    _, state_dict, io, reference = tiny
    model = DacVae.from_checkpoint(state_dict, dtype=dtype)
    assert model.dtype == dtype
    with torch.no_grad():
        mean, logvar = model.encode(io["wav"])
        one_shot = model.decode(io["expected_mean"], chunk_latents=None)
        chunked = model.decode(io["expected_mean"], chunk_latents=2, overlap_latents=12)
    assert mean.dtype == logvar.dtype == one_shot.dtype == dtype
    assert torch.isfinite(one_shot).all() and one_shot.shape == io["expected_decoded"].shape
    assert max_abs_error_ratio(mean, io["expected_mean"]) < 0.15
    assert float((chunked.float() - one_shot.float()).abs().max()) < 2e-2


def test_posterior_sample_and_kl():
    mean = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0))
    logvar = torch.full_like(mean, -1.0)
    draws = [DacVae.sample(mean, logvar, torch.Generator().manual_seed(1)) for _ in range(2)]
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    assert not torch.equal(draws[0], mean)
    # std = exp(-15) ~ 3e-7: a draw stays within ~6 sigma of the mean whatever the global RNG state
    near_mean = DacVae.sample(mean, torch.full_like(mean, -30.0), torch.Generator().manual_seed(2))
    torch.testing.assert_close(near_mean, mean, rtol=0, atol=2e-6)
    assert DacVae.kl_divergence(torch.zeros(1, 4, 5), torch.zeros(1, 4, 5)).tolist() == [0.0]
    assert float(DacVae.kl_divergence(mean, logvar).min()) > 0
