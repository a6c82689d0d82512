"""MMAudio mel VAE against the reference: parity vectors through release-format files, released key
lists, chunked decoding, and the errors a wrong file gets."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import max_abs_error_ratio, mmaudio_vectors
from safetensors.torch import load_file

from syncfoley.models.checkpoint import CheckpointError, identify
from syncfoley.models.mel_vae import MelVae, MelVaeConfig
from syncfoley.models.mel_vae_constants import MEL_NORMALISATION
from syncfoley.models.ops import CastOps

RELEASE_NUMBERS = {"vae_16k": 171_657_378, "vae_44k": 305_479_938}
CASES = mmaudio_vectors("mmaudio_mel_vae", "mmaudio_vae16k_tiny", "mmaudio_vae44k_tiny")
RATE_AND_HOP = {80: (16000, 512), 128: (44100, 1024)}  # the release's two mel VAEs, by mel count


@pytest.fixture(scope="module")
def release_file(reference_dir, seeded, tmp_path_factory):
    """release_file(name) -> (json, path of a release-format .pth, io tensors).

    The file is what `v1-16.pth` / `v1-44.pth` hold: the seeded weights, the 0-d gains from the JSON
    and the release's `data_mean` / `data_std` (from the reference's constants file, not ours).
    """
    folder = reference_dir / "mmaudio" / "parity"
    constants = load_file(str(folder / "mel_vae_constants.safetensors"))
    cache = {}

    def load(name: str):
        if name not in cache:
            config = json.loads((folder / f"{name}.json").read_text())
            state_dict = seeded.seeded_state_dict(seeded.read_key_list(folder / f"{name}.keys.txt"), config["seed"],
                                                  gain=config.get("gain", 1.0))
            state_dict.update({k: torch.tensor(v) for k, v in config["scalars_not_in_key_list"].items()})
            mels = config["ctor_kwargs"]["data_dim"]
            state_dict["data_mean"] = constants[f"DATA_MEAN_{mels}D"].view(1, -1, 1)
            state_dict["data_std"] = constants[f"DATA_STD_{mels}D"].view(1, -1, 1)
            path = tmp_path_factory.mktemp("vae") / f"{name}.pth"
            torch.save(state_dict, path)
            cache[name] = (config, path, load_file(str(folder / f"{name}.io.safetensors")), state_dict)
        return cache[name]

    return load


# Parity ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_parity_through_release_file(release_file, name):
    config, path, io, _ = release_file(name)
    vae = MelVae.from_checkpoint(path)
    mels = config["ctor_kwargs"]["data_dim"]
    sample_rate, hop = RATE_AND_HOP[mels]
    assert vae.config == MelVaeConfig(**config["ctor_kwargs"])
    assert (vae.config.n_mels, vae.config.latent_dim, vae.sample_rate, vae.hop) == (
        mels, config["ctor_kwargs"]["embed_dim"], sample_rate, hop)
    # The JSON counts the seeded tensors: every parameter but the two 0-d gains.
    assert sum(p.numel() for p in vae.parameters()) - 2 == config["num_params"]
    with torch.no_grad():
        mean, logvar = vae.encode(io["mel"])
        decoded_mean, decoded_z = vae.decode(io["expected_mean"]), vae.decode(io["z"])
    assert mean.shape == io["expected_mean"].shape and decoded_z.shape == io["expected_decoded_z"].shape
    assert max_abs_error_ratio(mean, io["expected_mean"]) < 1e-4
    assert max_abs_error_ratio(logvar, io["expected_logvar"]) < 1e-4
    assert max_abs_error_ratio(decoded_mean, io["expected_decoded_mean"]) < 1e-4
    assert max_abs_error_ratio(decoded_z, io["expected_decoded_z"]) < 1e-4


def test_shipped_constants_are_the_release_values(reference_dir):
    constants = load_file(str(reference_dir / "mmaudio" / "parity" / "mel_vae_constants.safetensors"))
    for mels, (mean, std) in MEL_NORMALISATION.items():
        assert torch.equal(torch.tensor(mean, dtype=torch.float32), constants[f"DATA_MEAN_{mels}D"])
        assert torch.equal(torch.tensor(std, dtype=torch.float32), constants[f"DATA_STD_{mels}D"])


def test_missing_normalisation_buffers_take_the_release_constants(release_file):
    config, _, io, state_dict = release_file("mmaudio_vae16k_tiny")
    bare = {k: v for k, v in state_dict.items() if k not in ("data_mean", "data_std")}
    with torch.no_grad():
        decoded = MelVae.from_checkpoint(bare).decode(io["z"])
    assert max_abs_error_ratio(decoded, io["expected_decoded_z"]) < 1e-4


def test_load_step_leaves_the_callers_tensors_alone(release_file):
    _, _, _, state_dict = release_file("mmaudio_vae44k_tiny")
    before = state_dict["decoder.conv_in.weight"].clone()
    vae = MelVae.from_checkpoint(state_dict)
    assert torch.equal(state_dict["decoder.conv_in.weight"], before)
    # The release's load step, per output channel o: w_o / (||w_o|| / sqrt(fan_in) + 1e-4) / sqrt(fan_in).
    raw = before.double()
    fan_in = raw[0].numel()
    norms = torch.linalg.vector_norm(raw, dim=(1, 2), keepdim=True)
    expected = raw / (norms / fan_in**0.5 + 1e-4) / fan_in**0.5
    torch.testing.assert_close(vae.decoder.conv_in.weight.double(), expected, rtol=1e-6, atol=0)


def test_state_dict_of_a_loaded_vae_reloads_with_weights_normalized(release_file):
    _, path, io, _ = release_file("mmaudio_vae16k_tiny")
    vae = MelVae.from_checkpoint(path)
    again = MelVae.from_checkpoint(vae.state_dict(), weights_normalized=True)
    renormalised = MelVae.from_checkpoint(vae.state_dict())
    with torch.no_grad():
        assert torch.equal(again.decode(io["z"]), vae.decode(io["z"]))
        assert max_abs_error_ratio(renormalised.decode(io["z"]), vae.decode(io["z"])) > 1e-4


# Released layout -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, config", [("vae_16k", MelVaeConfig.release_16k()),
                                          ("vae_44k", MelVaeConfig.release_44k())])
def test_release_layout_matches_key_list(reference_dir, seeded, name, config):
    expected = seeded.read_key_list(reference_dir / "mmaudio" / "keys" / f"{name}.keys.txt")
    with torch.device("meta"):
        vae = MelVae(config)
    state_dict = vae.state_dict()
    assert [(k, tuple(t.shape)) for k, t in state_dict.items()] == expected
    assert sum(t.numel() for t in state_dict.values()) == RELEASE_NUMBERS[name]
    assert MelVaeConfig.from_state_dict(state_dict) == config
    assert identify(state_dict) == "mmaudio_vae"
    assert vae.decoder_context_latents == 18


# Chunked decoding -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae44(release_file):
    return MelVae.from_checkpoint(release_file("mmaudio_vae44k_tiny")[1])


def _latents(length: int, channels: int = 40, seed: int = 3) -> torch.Tensor:
    return torch.randn(2, channels, length, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("length, chunk", [(97, 20), (41, 40)])
def test_chunked_decode_equals_one_shot(vae44, length, chunk):
    z = _latents(length)
    with torch.no_grad():
        whole = vae44.decode(z, chunk_latents=None)
        chunked = vae44.decode(z, chunk_latents=chunk)
        # Too little context shows: the comparison above can see a chunking error.
        short = vae44.decode(z, chunk_latents=chunk, context_latents=6)
    assert chunked.shape == whole.shape == (2, 128, 2 * length)
    assert max_abs_error_ratio(chunked, whole) < 1e-5
    assert max_abs_error_ratio(short, whole) > 1e-4


def test_chunk_context_is_the_decoders_exact_reach(vae44):
    """Outside the mid attention, latent i reaches exactly mel frames 2i - 2c .. 2i + 2c + 1 (c = 18)."""
    context = vae44.decoder_context_latents
    decoder = vae44.decoder
    with torch.no_grad():
        stem = decoder.stem(_latents(3 * context))
        nudged = stem.clone()
        i = int(1.5 * context)
        nudged[..., i] += 1.0
        changed = (decoder.tail(nudged) - decoder.tail(stem)).abs().amax(dim=(0, 1)).nonzero().flatten()
    assert context == 18
    assert (changed.min().item(), changed.max().item()) == (2 * i - 2 * context, 2 * i + 2 * context + 1)
    assert len(changed) == 4 * context + 2


def test_long_latents_are_chunked_by_default(vae44, monkeypatch):
    calls = []
    original = MelVae._decode_chunked
    monkeypatch.setattr(MelVae, "_decode_chunked",
                        lambda self, z, chunk, context: calls.append(chunk) or original(self, z, chunk, context))
    z = _latents(MelVae.DEFAULT_CHUNK_LATENTS + 40, seed=5)
    with torch.no_grad():
        default = vae44.decode(z)
        assert calls == [MelVae.DEFAULT_CHUNK_LATENTS]
        assert max_abs_error_ratio(default, vae44.decode(z, chunk_latents=None)) < 1e-5
        vae44.decode(z[..., :MelVae.DEFAULT_CHUNK_LATENTS])
    assert len(calls) == 1


# Options ---------------------------------------------------------------------------------------------
def test_decoder_only(release_file, tmp_path):
    _, _, io, state_dict = release_file("mmaudio_vae16k_tiny")
    path = tmp_path / "decoder_only.pth"
    torch.save({k: v for k, v in state_dict.items() if not k.startswith("encoder.")}, path)
    for vae in (MelVae.from_checkpoint(path), MelVae.from_checkpoint(state_dict, with_encoder=False)):
        assert vae.encoder is None and not any(k.startswith("encoder.") for k in vae.state_dict())
        with torch.no_grad():
            assert max_abs_error_ratio(vae.decode(io["z"]), io["expected_decoded_z"]) < 1e-4
        with pytest.raises(RuntimeError, match="without its encoder"):
            vae.encode(io["mel"])


def test_operations_are_injected_and_dtype_is_fp32_by_default(release_file):
    class CountingConv(CastOps.Conv1d):
        built = 0

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            CountingConv.built += 1

    class Operations(CastOps):
        Conv1d = CountingConv

    _, _, io, state_dict = release_file("mmaudio_vae16k_tiny")
    vae = MelVae.from_checkpoint({k: v.half() for k, v in state_dict.items()}, operations=Operations)
    convs = [m for m in vae.modules() if isinstance(m, torch.nn.Conv1d)]
    assert CountingConv.built == len(convs) == sum(k.endswith(".weight") for k in state_dict)
    assert all(isinstance(m, CountingConv) for m in convs)
    # An fp16 file computes in fp32 unless asked otherwise; only the weights' rounding shows.
    assert vae.dtype == torch.float32 and all(p.dtype == torch.float32 for p in vae.parameters())
    with torch.no_grad():
        assert max_abs_error_ratio(vae.decode(io["z"]), io["expected_decoded_z"]) < 1e-2


def test_bad_inputs_are_named(vae44):
    with pytest.raises(ValueError, match=r"latents \[B, latent_dim, L\] with 40 channels"):
        vae44.decode(torch.zeros(1, 20, 8))
    with pytest.raises(ValueError, match=r"mel \[B, n_mels, frames\] with 128 channels"):
        vae44.encode(torch.zeros(1, 80, 8))


# Wrong files -------------------------------------------------------------------------------------------
def _state_dict_of(reference_dir, seeded, key_list: str) -> dict[str, torch.Tensor]:
    keys = seeded.read_key_list(reference_dir / key_list)
    return {name: torch.zeros(shape, device="meta") for name, shape in keys}


@pytest.mark.parametrize("key_list, named", [
    ("keys/dac_vae_128d_48k.keys.txt", "DAC-VAE audio autoencoder"),
    ("mmaudio/keys/mmaudio_small_44k.keys.txt", "MMAudio network"),
    ("mmaudio/keys/bigvgan_v2_44k.keys.txt", "BigVGAN vocoder"),
])
def test_other_models_are_named(reference_dir, seeded, key_list, named):
    with pytest.raises(CheckpointError, match=f"is an? {named} checkpoint.*MMAudio mel VAE loader"):
        MelVae.from_checkpoint(_state_dict_of(reference_dir, seeded, key_list))


def test_truncated_file_is_refused(release_file, tmp_path):
    _, path, _, _ = release_file("mmaudio_vae16k_tiny")
    truncated = tmp_path / "v1-16.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        MelVae.from_checkpoint(truncated)


def test_wrong_shapes_are_named(release_file):
    _, _, _, state_dict = release_file("mmaudio_vae16k_tiny")
    broken = {**state_dict, "decoder.up.1.upsample.conv.weight": torch.zeros(64, 64, 1)}
    with pytest.raises(CheckpointError, match=r"wrong shape: decoder\.up\.1\.upsample\.conv\.weight"):
        MelVae.from_checkpoint(broken)
