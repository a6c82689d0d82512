"""Mel filterbanks (one builder for the package) and MMAudio's mel front end against the reference."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from conftest import max_abs_error_ratio
from safetensors.torch import load_file

from syncfoley.models.mel import MEL_SETTINGS, mel_filterbank, mel_spectrogram


def independent_htk_filterbank(n_freqs: int, n_mels: int, sample_rate: float, f_min: float, f_max: float):
    """HTK triangles in float64 from their definition, bins at k * sample_rate / n_fft: `[n_freqs, n_mels]`."""
    to_mel = lambda hz: 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)  # noqa: E731
    edges = 700.0 * (10.0 ** (torch.linspace(float(to_mel(f_min)), float(to_mel(f_max)), n_mels + 2,
                                             dtype=torch.float64) / 2595.0) - 1.0)
    bins = torch.arange(n_freqs, dtype=torch.float64)[:, None] * (sample_rate / 2) / (n_freqs - 1)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising, falling = (bins - lower) / (centre - lower), (upper - bins) / (upper - centre)
    return torch.minimum(rising, falling).clamp_min(0.0)


@pytest.fixture(scope="module")
def frontend(reference_dir):
    folder = reference_dir / "mmaudio" / "parity"
    config = json.loads((folder / "mmaudio_mel_frontend.json").read_text())
    return config, load_file(str(folder / "mmaudio_mel_frontend.io.safetensors"))


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_mmaudio_mel_front_end(frontend, mode):
    _, io = frontend
    wav = io[f"wav_{mode}"]
    assert wav.abs().max() > 1  # the last row exercises the clamp
    mel = mel_spectrogram(wav, mode)
    settings = MEL_SETTINGS[mode]
    assert mel.shape == (wav.shape[0], settings.n_mels, wav.shape[1] // settings.hop)
    assert max_abs_error_ratio(mel, io[f"expected_mel_{mode}"]) < 1e-4
    torch.testing.assert_close(mel_spectrogram(wav[0], mode), mel[0])  # one unbatched wave


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_slaney_filterbank_is_librosas(frontend, mode):
    _, io = frontend
    s = MEL_SETTINGS[mode]
    filters = mel_filterbank(s.n_fft // 2 + 1, s.n_mels, s.sample_rate, s.f_min, s.f_max, scale="slaney", norm="slaney")
    torch.testing.assert_close(filters.T, io[f"mel_basis_{mode}"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_fft, n_mels, sample_rate", [(1024, 128, 16000), (2048, 64, 48000), (512, 128, 11025),
                                                        (2048, 128, 44100), (256, 40, 8000)])
def test_htk_filterbank_matches_its_definition(n_fft, n_mels, sample_rate):
    """Also at odd sample rates, where transformers alone would put the top bin at sample_rate // 2."""
    expected = independent_htk_filterbank(n_fft // 2 + 1, n_mels, sample_rate, 0.0, sample_rate / 2)
    torch.testing.assert_close(mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate).double(), expected,
                               rtol=0, atol=1e-6)


def test_package_filterbanks_are_the_shared_one():
    from syncfoley.models.synchformer_audio import htk_mel_filterbank
    from syncfoley.pipeline.visualize import mel_filterbank as visual_filterbank
    from syncfoley.training.audio_features import mel_filterbank as feature_filterbank

    torch.testing.assert_close(htk_mel_filterbank(), mel_filterbank(513, 128, 16000, 0.0, 8000.0), rtol=0, atol=0)
    torch.testing.assert_close(visual_filterbank(1025, 128, 48000), mel_filterbank(1025, 128, 48000).T, rtol=0, atol=0)
    torch.testing.assert_close(feature_filterbank(2048, 64, 48000), mel_filterbank(1025, 64, 48000), rtol=0, atol=0)
    first = mel_filterbank(513, 80, 16000)
    first.zero_()  # every call returns its own tensor: the cached filters stay intact
    assert mel_filterbank(513, 80, 16000).abs().sum() > 0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="use '16k' or '44k'"):
        mel_spectrogram(torch.zeros(1, 4096), "48k")
    with pytest.raises(ValueError, match="mel scale must be"):
        mel_filterbank(513, 80, 16000, scale="librosa")


def test_importing_the_models_stays_light():
    """transformers is imported inside `mel_filterbank`, never when the modules are imported."""
    import syncfoley.models as models

    for name in ("mel", "mmaudio", "mmaudio_blocks", "mmaudio_config"):
        tree = ast.parse((Path(models.__file__).parent / f"{name}.py").read_text())
        top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        imported = {alias.name for node in top_level for alias in node.names} | {
            node.module for node in top_level if isinstance(node, ast.ImportFrom) and node.module}
        assert not any(module.split(".")[0] in ("transformers", "torchaudio", "librosa") for module in imported), name
