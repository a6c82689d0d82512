"""Audio load/save round trips, resampling, channel handling, duration fitting, atomic writes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from media_fixtures import make_video, tone

import syncfoley.media.audio as audio_module
from syncfoley.media import (MediaError, audio_from_comfy, audio_to_comfy, convert_channels, fit_duration,
                             load_audio, resample_audio, save_audio)


def peak_frequency(waveform: torch.Tensor, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform[0].numpy()))
    return float(np.argmax(spectrum) * rate / waveform.shape[-1])


@pytest.mark.parametrize("extension, codec, tolerance", [
    (".wav", None, 1e-4), (".wav", "pcm_f32le", 0.0), (".flac", None, 1e-4)])
def test_lossless_round_trip(tmp_path, extension, codec, tolerance):
    source = torch.from_numpy(tone(0.5, 48000, channels=2))
    path = save_audio(tmp_path / f"out{extension}", source, 48000, codec=codec)
    loaded, rate = load_audio(path, sample_rate=None)
    assert rate == 48000 and loaded.shape == source.shape and loaded.dtype == torch.float32
    assert (loaded - source).abs().max() <= tolerance


@pytest.mark.parametrize("extension", [".mp3", ".opus", ".ogg", ".m4a"])
def test_lossy_round_trip_keeps_rate_channels_length_and_timing(tmp_path, extension):
    source = torch.from_numpy(tone(1.0, 48000, channels=2))
    source[:, 20000:20200] = 0.9  # a click whose position must survive the codec's delay handling
    path = save_audio(tmp_path / f"out{extension}", source, 48000)
    loaded, rate = load_audio(path, sample_rate=None)
    assert rate == 48000 and loaded.shape[0] == 2
    assert 0 <= loaded.shape[1] - source.shape[1] <= 1024  # at most the last codec frame's padding
    assert loaded.pow(2).mean().sqrt() == pytest.approx(float(source.pow(2).mean().sqrt()), rel=0.1)
    click = int(torch.argmax((loaded[0] > 0.7).int()))
    assert abs(click - 20000) <= 8


def test_opus_input_at_an_unsupported_rate_is_resampled(tmp_path):
    path = save_audio(tmp_path / "out.opus", tone(1.0, 44100), 44100)
    loaded, rate = load_audio(path, sample_rate=None)
    assert rate == 48000 and abs(loaded.shape[1] - 48000) <= 1024


def test_load_resamples_with_pyav(tmp_path):
    path = save_audio(tmp_path / "cd.wav", tone(1.0, 44100, frequency=1000), 44100)
    loaded, rate = load_audio(path, sample_rate=48000)
    assert rate == 48000
    assert abs(loaded.shape[1] - 48000) <= 2
    assert peak_frequency(loaded, 48000) == pytest.approx(1000, abs=2)


def test_channels_duplicate_mono_and_average_stereo(tmp_path):
    mono = save_audio(tmp_path / "mono.wav", tone(0.2), 48000)
    stereo_from_mono, _ = load_audio(mono, channels=2)
    assert stereo_from_mono.shape[0] == 2 and torch.equal(stereo_from_mono[0], stereo_from_mono[1])
    assert stereo_from_mono[0].abs().max() == pytest.approx(0.3, abs=1e-3)  # not scaled by 1/sqrt(2)
    stereo = save_audio(tmp_path / "stereo.wav", tone(0.2, channels=2), 48000, codec="pcm_f32le")
    both, _ = load_audio(stereo)
    mixed, _ = load_audio(stereo, channels=1)
    assert torch.allclose(mixed[0], both.mean(dim=0))


def test_save_mono_as_stereo(tmp_path):
    path = save_audio(tmp_path / "wide.flac", tone(0.1), 48000, channels=2)
    loaded, _ = load_audio(path)
    assert loaded.shape[0] == 2 and torch.equal(loaded[0], loaded[1])


def test_window_selection(tmp_path):
    ramp = torch.linspace(-0.5, 0.5, 48000).unsqueeze(0)
    path = save_audio(tmp_path / "ramp.wav", ramp, 48000, codec="pcm_f32le")
    window, _ = load_audio(path, start=0.25, duration=0.5)
    assert torch.equal(window, ramp[:, 12000:36000])


def test_audio_track_of_a_video(tmp_path):
    path = tmp_path / "talk.mp4"
    make_video(path, fps=25, count=25, audio_seconds=1.0, audio_channels=2)
    waveform, rate = load_audio(path, sample_rate=16000, channels=1)
    assert rate == 16000 and waveform.shape[0] == 1
    assert abs(waveform.shape[1] - 16000) <= 1024 * 16000 // 48000 + 1
    assert peak_frequency(waveform, 16000) == pytest.approx(440, abs=3)


def test_video_without_audio_and_missing_stream(tmp_path):
    path = tmp_path / "silent.mp4"
    make_video(path, fps=25, count=5)
    with pytest.raises(MediaError, match=r"silent\.mp4: has no audio stream"):
        load_audio(path)
    voiced = tmp_path / "voiced.mp4"
    make_video(voiced, fps=25, count=5, audio_seconds=0.2)
    with pytest.raises(MediaError, match=r"voiced\.mp4: has 1 audio stream\(s\), stream 3 was asked for"):
        load_audio(voiced, stream=3)


def test_output_path_checks(tmp_path):
    with pytest.raises(MediaError, match=r"song\.xyz: unsupported audio output extension '\.xyz' \(use one of"):
        save_audio(tmp_path / "song.xyz", tone(0.1), 48000)
    target = save_audio(tmp_path / "song.wav", tone(0.1), 48000)
    with pytest.raises(MediaError, match=r"song\.wav: output file already exists \(pass overwrite=True"):
        save_audio(target, tone(0.2), 48000)
    save_audio(target, tone(0.2), 48000, overwrite=True)
    assert load_audio(target)[0].shape[1] == 9600
    with pytest.raises(MediaError, match=r"output folder does not exist"):
        save_audio(tmp_path / "missing" / "song.wav", tone(0.1), 48000)


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    existing = save_audio(tmp_path / "keep.wav", tone(0.1), 48000)
    before = existing.read_bytes()

    def broken_encoder(*args, **kwargs):
        yield from ()
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(audio_module, "encode_waveform", broken_encoder)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_audio(tmp_path / "new.flac", tone(0.1), 48000)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_audio(existing, tone(0.3), 48000, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]
    assert existing.read_bytes() == before


def test_bad_samples_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        save_audio(tmp_path / "nan.wav", torch.tensor([0.0, float("nan")]), 48000)
    assert not list(tmp_path.iterdir())


def test_fit_duration_convert_channels_and_resample():
    waveform = torch.ones(2, 100)
    assert fit_duration(waveform, 100, 0.5).shape == (2, 50)
    padded = fit_duration(waveform, 100, 1.5)
    assert padded.shape == (2, 150) and padded[:, 100:].abs().sum() == 0 and padded[:, :100].min() == 1
    assert convert_channels(torch.tensor([[1.0, 3.0], [3.0, 5.0]]), 1).tolist() == [[2.0, 4.0]]
    assert convert_channels(torch.tensor([[1.0, 2.0]]), 2).tolist() == [[1.0, 2.0], [1.0, 2.0]]
    resampled = resample_audio(torch.from_numpy(tone(1.0, 32000, frequency=500)), 32000, 48000)
    assert abs(resampled.shape[1] - 48000) <= 2 and peak_frequency(resampled, 48000) == pytest.approx(500, abs=2)


def test_comfy_audio_dict():
    waveform = torch.from_numpy(tone(0.1, channels=2))
    comfy = audio_to_comfy(waveform, 48000)
    assert comfy["waveform"].shape == (1, 2, 4800) and comfy["sample_rate"] == 48000
    back, rate = audio_from_comfy(comfy)
    assert rate == 48000 and torch.equal(back, waveform)
