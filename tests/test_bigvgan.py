"""BigVGAN vocoders against the reference: parity vectors through release-format files (old weight-norm
names, with and without the filter buffers, with and without config.json), released key lists, the
computed anti-aliasing filters, chunked vocoding of long mels, and the errors a wrong file or config gets."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import max_abs_error_ratio, mmaudio_vectors
from safetensors.torch import load_file

from syncfoley.models.bigvgan import BigVGAN
from syncfoley.models.bigvgan_config import BigVGANConfig
from syncfoley.models.bigvgan_layers import Downsample, Upsample, kaiser_sinc_filter
from syncfoley.models.checkpoint import CheckpointError, identify

CASES = [*mmaudio_vectors("bigvgan_16k", "bigvgan16k_tiny"), *mmaudio_vectors("bigvgan_v2_44k", "bigvgan_v2_44k_tiny")]
SAMPLE_RATES = {"bigvgan_16k": 16000, "bigvgan_v2_44k": 44100}  # the release config of each kind
RELEASES = {"bigvgan_16k": (BigVGANConfig.release_16k(), 112_233_866, 42),
            "bigvgan_v2_44k": (BigVGANConfig.release_v2_44k(), 122_187_145, 24)}
# The seeded vocoders amplify rounding ~3x per upsampling stage: fp32 and fp64 runs part by 4e-7 of
# the max at the first stage's activations and by 1e-4 at the last. So the vectors carry their
# generator's fp32 rounding: the exact (fp64) evaluation lies 1.17e-3 (16k) / 2.10e-3 (v2) from them,
# and fp32 runs of the reference's own op structure, with the same torch 2.13 on this CPU, lie
# 1.0e-3 .. 3.6e-3 from them depending on the thread count and on which MKL / oneDNN / ATen kernels
# run (MKL_CBWR, ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY); none reproduces them bit for bit. So
# fp32 is held to 5e-3 and the fp64 evaluation, which every machine computes alike, to the
# vectors' own distance from it plus a margin.
VOCODER_TOLERANCE = 5e-3
FP64_TOLERANCE = {"bigvgan16k_tiny": 1.5e-3, "bigvgan_v2_44k_tiny": 2.6e-3}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These convolutions are milliseconds long: on a shared CPU, OpenMP's waiting between threads
    makes them up to 50x slower with 2 threads than with 1 (and 1 thread is deterministic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def case(reference_dir, seeded):
    """case(name) -> (json, generator state dict with old names and the computed filters, io)."""
    folder = reference_dir / "mmaudio" / "parity"
    cache = {}

    def load(name: str):
        if name not in cache:
            config = json.loads((folder / f"{name}.json").read_text())
            keys = seeded.read_key_list(folder / f"{name}.keys.txt")
            state_dict = seeded.seeded_state_dict(keys, config["seed"], gain=config.get("gain", 1.0))
            cache[name] = (config, state_dict, load_file(str(folder / f"{name}.io.safetensors")))
        return cache[name]

    return load


def _with_filters(state_dict: dict) -> dict:
    """The state dict as the release stores it: the 2 filters after each activation's alpha/beta."""
    out = dict(state_dict)
    for name in [k[: -len(".act.alpha")] for k in state_dict if k.endswith(".act.alpha")]:
        out[f"{name}.upsample.filter"] = kaiser_sinc_filter()
        out[f"{name}.downsample.lowpass.filter"] = kaiser_sinc_filter()
    return out


# Parity ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("filters, config_source", [(True, "none"), (False, "dict"), (True, "path")])
def test_parity_through_release_file(case, tmp_path, name, filters, config_source):
    config, state_dict, io = case(name)
    path = tmp_path / "generator.pt"
    extra = {"optim_g": {"state": {}, "param_groups": [{"lr": 2e-4}]}, "steps": 5}
    torch.save({"generator": _with_filters(state_dict) if filters else state_dict, **extra}, path)
    (tmp_path / "config.json").write_text(json.dumps({**config["h"], "batch_size": 4, "num_gpus": 0}))
    given = {"none": None, "dict": {**config["h"], "batch_size": 4}, "path": tmp_path / "config.json"}[config_source]
    vocoder = BigVGAN.from_checkpoint(path, config=given)
    hop, sample_rate = math.prod(config["h"]["upsample_rates"]), SAMPLE_RATES[config["kind"]]
    assert vocoder.hop == hop
    assert vocoder.sample_rate == (sample_rate if config_source == "none" else None)  # not in the tiny h
    assert sum(p.numel() for p in vocoder.parameters()) == config["num_params"]
    with torch.no_grad():
        wav = vocoder(io["mel"])
    assert wav.shape == io["expected_wav"].shape == (1, 1, io["mel"].shape[-1] * hop)
    assert max_abs_error_ratio(wav, io["expected_wav"]) < VOCODER_TOLERANCE


@pytest.mark.parametrize("name", list(CASES))
def test_parity_in_fp64_and_rounding_amplification(case, name):
    _, state_dict, io = case(name)
    vocoder = BigVGAN.from_checkpoint({"generator": state_dict}, dtype=torch.float64)
    mel = io["mel"].double()
    nudge = 1 + 1e-7 * torch.randn(mel.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        wav, nudged = vocoder(mel), vocoder(mel * nudge)
    assert wav.dtype == torch.float64
    assert max_abs_error_ratio(wav, io["expected_wav"]) < FP64_TOLERANCE.get(name, max(FP64_TOLERANCE.values()))
    assert max_abs_error_ratio(nudged, wav) > 1e-4  # why no fp32 run can come within 1e-4


def test_other_weight_norm_spellings_load_the_same(case):
    _, state_dict, io = case("bigvgan16k_tiny")
    reference = BigVGAN.from_checkpoint(state_dict)
    parametrized = {k.replace("weight_g", "parametrizations.weight.original0")
                     .replace("weight_v", "parametrizations.weight.original1"): v for k, v in state_dict.items()}
    folded = {k: v for k, v in reference.state_dict().items() if not k.endswith((".weight_g", ".filter"))}
    folded = {k.replace("weight_v", "weight"): v for k, v in folded.items()}
    with torch.no_grad():
        expected = reference(io["mel"])
        for variant in (parametrized, folded):
            torch.testing.assert_close(BigVGAN.from_checkpoint(variant)(io["mel"]), expected, rtol=0, atol=1e-5)


# Chunked vocoding ------------------------------------------------------------------------------------
# Release kernels (x8 with 16 taps, x2 with 4; AMP kernels 3 and 11) at a small width and two stages.
SMALL = BigVGANConfig(num_mels=8, upsample_rates=(8, 2), upsample_kernel_sizes=(16, 4), upsample_initial_channel=16,
                      resblock_kernel_sizes=(3, 11), resblock_dilation_sizes=((1, 3, 5), (1, 3, 5)))


@pytest.fixture(scope="module")
def small_vocoder(seeded):
    with torch.device("meta"):
        keys = [(k, tuple(t.shape)) for k, t in BigVGAN(SMALL).state_dict().items() if not k.endswith(".filter")]
    state_dict = seeded.seeded_state_dict(keys, 7, gain=0.8)
    return lambda dtype: BigVGAN.from_checkpoint(state_dict, config=SMALL, dtype=dtype)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_chunked_equals_one_shot(small_vocoder, dtype, tolerance):
    vocoder = small_vocoder(dtype)
    context = vocoder.context_frames
    mel = torch.randn(2, 8, 4 * context + 20, generator=torch.Generator().manual_seed(1), dtype=dtype) - 3
    chunk = context // 2 + 3  # the middle chunks have their context cut on both sides
    with torch.no_grad():
        one_shot = vocoder(mel, chunk_frames=None)
        chunked = vocoder(mel, chunk_frames=chunk)
        too_little_context = vocoder(mel, chunk_frames=chunk, context_frames=context // 3)
    assert chunked.shape == one_shot.shape == (2, 1, mel.shape[-1] * vocoder.hop)
    assert max_abs_error_ratio(chunked, one_shot) < tolerance
    assert max_abs_error_ratio(too_little_context, one_shot) > 1e-2  # the context is what makes them equal


@pytest.mark.parametrize("name", list(RELEASES))
def test_context_covers_the_receptive_field(name):
    """The releases' context (an upper bound of the receptive field) and the default chunk (2^19 samples)."""
    config, _, context = RELEASES[name]
    with torch.device("meta"):
        vocoder = BigVGAN(config)
    assert vocoder.context_frames == context
    assert vocoder.default_chunk_frames * vocoder.hop == 2 ** 19


def test_long_mels_are_vocoded_in_bounded_chunks(small_vocoder, monkeypatch):
    vocoder = small_vocoder(torch.float32)
    calls = []

    def vocode(mel):
        calls.append(mel.shape[-1])
        return mel[:, :1].repeat_interleave(vocoder.hop, dim=-1)  # frame t -> its first mel bin

    monkeypatch.setattr(vocoder, "_vocode", vocode)
    chunk, context = vocoder.default_chunk_frames, vocoder.context_frames
    mel = torch.arange(int(2.5 * chunk), dtype=torch.float32).expand(1, 8, -1)
    wav = vocoder(mel)
    assert len(calls) == 3 and max(calls) <= chunk + 2 * context  # memory bounded by the chunk
    assert torch.equal(wav, mel[:, :1].repeat_interleave(vocoder.hop, dim=-1))  # pieces in place, none twice
    calls.clear()
    vocoder(mel[..., :chunk])
    assert calls == [chunk]  # 8 s clips (690 frames at 44.1 kHz, 500 at 16 kHz) run in one call
    with pytest.raises(ValueError, match="chunk_frames must be >= 1"):
        vocoder(mel, chunk_frames=0)


# Filters -----------------------------------------------------------------------------------------
def test_filter_is_the_kaiser_windowed_sinc():
    """Computed independently with numpy: cutoff 0.25, half width 0.3, 12 taps (Kaiser's beta formula)."""
    attenuation = 2.285 * (6 - 1) * math.pi * (4 * 0.3) + 7.95
    beta = 0.1102 * (attenuation - 8.7)  # attenuation > 50 dB
    time = np.arange(-6, 6) + 0.5
    taps = 2 * 0.25 * np.kaiser(12, beta) * np.sinc(2 * 0.25 * time)
    expected = torch.from_numpy(taps / taps.sum()).float().view(1, 1, 12)
    torch.testing.assert_close(kaiser_sinc_filter(), expected, rtol=0, atol=1e-7)
    assert torch.equal(kaiser_sinc_filter(), kaiser_sinc_filter().flip(-1))  # linear phase


def test_resamplers_equal_their_textbook_form():
    """Replicate padding, zero-stuffing transposed conv (gain 2) and crop; replicate padding, strided conv."""
    x = torch.randn(2, 3, 17, dtype=torch.float64)
    taps = kaiser_sinc_filter().double().expand(3, 1, 12)
    up = 2 * F.conv_transpose1d(F.pad(x, (5, 5), mode="replicate"), taps, stride=2, groups=3)[..., 15:-15]
    down = F.conv1d(F.pad(up, (5, 6), mode="replicate"), taps, stride=2, groups=3)
    upsample, downsample = Upsample().double(), Downsample().double()
    torch.testing.assert_close(upsample(x), up, rtol=0, atol=1e-12)
    torch.testing.assert_close(downsample(up), down, rtol=0, atol=1e-12)


def test_file_filters_must_equal_the_computed_ones(case):
    _, state_dict, _ = case("bigvgan_v2_44k_tiny")
    broken = _with_filters(state_dict)
    broken["resblocks.4.activations.1.upsample.filter"] = kaiser_sinc_filter().roll(1, -1)
    with pytest.raises(CheckpointError, match=r"filter 'resblocks\.4\.activations\.1\.upsample\.filter' differs"):
        BigVGAN.from_checkpoint(broken)


# Released layout -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(RELEASES))
def test_release_layout_matches_key_list(reference_dir, seeded, name):
    config, numbers, _ = RELEASES[name]
    expected = seeded.read_key_list(reference_dir / "mmaudio" / "keys" / f"{name}.keys.txt")
    with torch.device("meta"):
        vocoder = BigVGAN(config)
    state_dict = vocoder.state_dict()
    assert [(k, tuple(t.shape)) for k, t in state_dict.items()] == expected
    assert sum(t.numel() for t in state_dict.values()) == numbers
    assert BigVGANConfig.from_state_dict(state_dict) == config
    assert identify(state_dict) == "bigvgan"


# Config checks and wrong files ----------------------------------------------------------------------
@pytest.mark.parametrize("change, named", [
    ({"num_mels": 100}, r"'num_mels' is 100 but the file has 128"),
    ({"upsample_kernel_sizes": [16, 8, 4, 4, 4, 3]}, r"'upsample_kernel_sizes' is \[16, 8, 4, 4, 4, 3\]"),
    ({"use_bias_at_final": True}, r"'use_bias_at_final' is True but the file has False"),
    ({"resblock": "2"}, r"'resblock' is '2' but the file has '1'"),
    ({"resblock_kernel_sizes": [3, 5, 11]}, r"'resblock_kernel_sizes' is \[3, 5, 11\]"),
    ({"upsample_initial_channel": 1536}, r"'upsample_initial_channel' is 1536 but the file has 128"),
    ({"activation": "snake"}, r"'activation' is 'snake' but the file has 'snakebeta'"),
])
def test_config_that_does_not_match_the_file_is_named(case, change, named):
    config, state_dict, _ = case("bigvgan_v2_44k_tiny")
    with pytest.raises(CheckpointError, match=f"config does not match the generator file: .*{named}"):
        BigVGAN.from_checkpoint({"generator": state_dict}, config={**config["h"], **change})


def test_incomplete_config_is_refused(case):
    config, state_dict, _ = case("bigvgan16k_tiny")
    with pytest.raises(ValueError, match=r"lacks \['upsample_rates'\]"):
        BigVGAN.from_checkpoint(state_dict, config={k: v for k, v in config["h"].items() if k != "upsample_rates"})


def _state_dict_of(reference_dir, seeded, key_list: str) -> dict[str, torch.Tensor]:
    return {name: torch.zeros(shape, device="meta") for name, shape in seeded.read_key_list(reference_dir / key_list)}


@pytest.mark.parametrize("key_list, named", [
    ("keys/dac_vae_128d_48k.keys.txt", "DAC-VAE audio autoencoder"),
    ("mmaudio/keys/mmaudio_small_16k.keys.txt", "MMAudio network"),
    ("mmaudio/keys/vae_16k.keys.txt", "MMAudio mel VAE"),
])
def test_other_models_are_named(reference_dir, seeded, key_list, named):
    with pytest.raises(CheckpointError, match=f"is an? {named} checkpoint.*BigVGAN vocoder loader"):
        BigVGAN.from_checkpoint({"generator": _state_dict_of(reference_dir, seeded, key_list)})


def test_truncated_file_is_refused(case, tmp_path):
    _, state_dict, _ = case("bigvgan16k_tiny")
    path = tmp_path / "best_netG.pt"
    torch.save({"generator": state_dict}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        BigVGAN.from_checkpoint(path)


def test_bad_mel_is_named(case):
    _, state_dict, _ = case("bigvgan16k_tiny")
    with pytest.raises(ValueError, match=r"expected mel \[B, 80, frames\]"):
        BigVGAN.from_checkpoint(state_dict)(torch.zeros(1, 128, 4))
