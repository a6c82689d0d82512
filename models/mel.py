"""Mel filterbanks for the whole package, and MMAudio's mel front end.

`mel_filterbank` is the one filterbank builder: the HTK scale without normalisation (torchaudio's
defaults, used by the Synchformer audio front end and the visualisations) or the slaney scale with
slaney normalisation (librosa's defaults, used by MMAudio). It is built by
`transformers.audio_utils.mel_filter_bank`, imported only when a filterbank is first needed so that
importing the package stays light.

`mel_spectrogram` is MMAudio's `MelConverter`: the domain of its mel VAEs and vocoders.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=32)
def _filterbank_numpy(n_freqs: int, n_mels: int, sample_rate: int, f_min: float, f_max: float,
                      scale: str, norm: str | None):
    from transformers.audio_utils import mel_filter_bank

    # transformers places the FFT bins on linspace(0, sample_rate // 2): for an odd rate that is
    # half a hertz short of the true Nyquist frequency. The first n_freqs bins of a bank over
    # 2 * n_freqs - 1 bins at twice the rate sit exactly at k * sample_rate / n_fft (as librosa's).
    doubled = sample_rate % 2 == 1
    with warnings.catch_warnings():  # all-zero filters (too many mels for the FFT) are the caller's choice
        warnings.simplefilter("ignore")
        filters = mel_filter_bank(
            num_frequency_bins=2 * n_freqs - 1 if doubled else n_freqs, num_mel_filters=n_mels,
            min_frequency=f_min, max_frequency=f_max, sampling_rate=2 * sample_rate if doubled else sample_rate,
            norm=norm, mel_scale=scale,
        )
    return filters[:n_freqs]


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None,
                   scale: str = "htk", norm: str | None = None) -> torch.Tensor:
    """Triangular mel filters over the `n_freqs` bins of a one-sided FFT: `[n_freqs, n_mels]` fp32.

    `scale="htk", norm=None` (each filter peaks at 1) are torchaudio's defaults;
    `scale="slaney", norm="slaney"` (each filter has unit area in Hz) are librosa's. `f_max`
    defaults to the Nyquist frequency. Bin k is at k * sample_rate / n_fft. The result is a new
    tensor on every call (built once per argument set).
    """
    if scale not in ("htk", "slaney"):
        raise ValueError(f"mel scale must be 'htk' or 'slaney', got {scale!r}")
    if norm not in (None, "slaney"):
        raise ValueError(f"mel filter norm must be None or 'slaney', got {norm!r}")
    f_max = sample_rate / 2 if f_max is None else f_max
    filters = _filterbank_numpy(int(n_freqs), int(n_mels), int(sample_rate), float(f_min), float(f_max), scale, norm)
    return torch.from_numpy(filters).float()


@dataclass(frozen=True)
class MelSettings:
    """One MMAudio mel front end (`MelConverter`)."""

    sample_rate: int
    n_fft: int
    win_length: int
    hop: int
    n_mels: int
    f_min: float
    f_max: float
    log_base: str  # "10" (16k) or "e" (44k)


MEL_SETTINGS = {
    "16k": MelSettings(16000, 1024, 1024, 256, 80, 0.0, 8000.0, "10"),
    "44k": MelSettings(44100, 2048, 2048, 512, 128, 0.0, 22050.0, "e"),
}


def mel_settings(mode: str) -> MelSettings:
    try:
        return MEL_SETTINGS[mode]
    except KeyError:
        raise ValueError(f"unknown MMAudio mel mode {mode!r}; use '16k' or '44k'") from None


def mel_spectrogram(wav: torch.Tensor, mode: str = "16k") -> torch.Tensor:
    """MMAudio's log-mel spectrogram of `wav` `[B, T]` (or `[T]`) at the mode's sample rate.

    Returns `[B, n_mels, T // hop]` fp32: the wave is clamped to [-1, 1] and reflect-padded by
    `(n_fft - hop) / 2` on both sides, framed without centring, windowed by a periodic Hann window;
    magnitudes `sqrt(re^2 + im^2 + 1e-9)` go through the slaney mel filters, are floored at 1e-5 and
    take log10 (16k) or the natural log (44k), as the release's VAEs and vocoders expect.
    """
    settings = mel_settings(mode)
    squeeze = wav.ndim == 1
    wav = wav.float().reshape(-1, wav.shape[-1]).clamp(-1.0, 1.0)
    pad = (settings.n_fft - settings.hop) // 2
    if wav.shape[-1] <= pad:
        raise ValueError(f"{wav.shape[-1]} samples are too few for the {mode} mel front end "
                         f"(needs more than {pad}, one hop is {settings.hop})")
    wav = F.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(settings.win_length, periodic=True, device=wav.device)
    spectrum = torch.stft(wav, settings.n_fft, hop_length=settings.hop, win_length=settings.win_length,
                          window=window, center=False, normalized=False, onesided=True, return_complex=True)
    magnitude = torch.sqrt(spectrum.real.square() + spectrum.imag.square() + 1e-9)
    filters = mel_filterbank(settings.n_fft // 2 + 1, settings.n_mels, settings.sample_rate, settings.f_min,
                             settings.f_max, scale="slaney", norm="slaney").to(wav.device)
    mel = torch.matmul(filters.T, magnitude).clamp_min(1e-5)
    mel = mel.log10() if settings.log_base == "10" else mel.log()
    return mel[0] if squeeze else mel
