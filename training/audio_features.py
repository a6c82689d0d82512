"""REPA targets: frame-level features of the clean audio from a pluggable encoder.

An encoder is anything with `name`, `dim` and `frame_features(wav [B, T], sample_rate) -> [B, F, dim]`
(any frame rate: the objective pools the frames to the latent rate). The default is weight-free:
log-mel frames at the latent rate (50 Hz) less the clip's mean log energy, so the cosine alignment
follows the spectral shape and loudness changes of each frame rather than the recording level. A learned audio encoder (an SSL
model's frame features, as the paper uses) gives a richer target: pass one as
`repa_encoder = "package.module:factory"` in the recipe, where `factory()` returns an encoder, or any
callable `(wav, sample_rate) -> [B, F, D]` (its output width is discovered on first use).

The features are computed once by the preparation step and cached with the latents.
"""
from __future__ import annotations

import importlib
from typing import Callable, Protocol, runtime_checkable

import torch

from ..models.mel import mel_filterbank as htk_filterbank


@runtime_checkable
class AudioFeatureEncoder(Protocol):
    name: str
    dim: int | None

    def frame_features(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor: ...


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """Triangular filters on the HTK mel scale: `[n_fft // 2 + 1, n_mels]`, each filter peaking at 1."""
    return htk_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max or sample_rate / 2)


class LogMelFrames:
    """Weight-free REPA target: log-mel frames less their clip mean, one per `hop` samples."""

    def __init__(self, n_mels: int = 64, sample_rate: int = 48000, hop: int = 960, n_fft: int = 2048):
        self.n_mels, self.sample_rate, self.hop, self.n_fft = n_mels, sample_rate, hop, n_fft
        self.name = f"logmel{n_mels}@{sample_rate}/{hop}"
        self.dim = n_mels
        self._filters = mel_filterbank(n_fft, n_mels, sample_rate)

    @torch.no_grad()
    def frame_features(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        wav = wav.float().cpu()
        if wav.ndim == 3:  # [B, 1, T]
            wav = wav.mean(1)
        if sample_rate != self.sample_rate:
            from ..media.audio import resample_audio

            wav = resample_audio(wav, sample_rate, self.sample_rate)
        window = torch.hann_window(self.n_fft)
        spectrum = torch.stft(wav, self.n_fft, self.hop, window=window, center=True, return_complex=True)
        power = spectrum.abs().square().transpose(1, 2)  # [B, F, bins]
        log_mel = torch.log(power @ self._filters + 1e-6)
        frames = wav.shape[-1] // self.hop  # the latent count: drop stft's extra centred frame
        log_mel = log_mel[:, :frames]
        return log_mel - log_mel.mean(dim=(1, 2), keepdim=True)


class CallableEncoder:
    """Wrap a plain callable `(wav, sample_rate) -> [B, F, D]` as an encoder."""

    def __init__(self, fn: Callable[[torch.Tensor, int], torch.Tensor], name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", type(fn).__name__)
        self.dim = None

    def frame_features(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        features = self.fn(wav, sample_rate)
        if not isinstance(features, torch.Tensor) or features.ndim != 3:
            raise ValueError(f"REPA audio encoder '{self.name}' must return a [B, frames, dim] tensor, got "
                             f"{getattr(features, 'shape', type(features).__name__)}")
        self.dim = features.shape[-1]
        return features


BUILTIN = {"logmel": LogMelFrames}


def resolve_audio_encoder(spec: str | AudioFeatureEncoder | Callable) -> AudioFeatureEncoder:
    """'logmel', 'package.module:attribute' (a factory, class or callable), an encoder or a callable."""
    if isinstance(spec, AudioFeatureEncoder):
        return spec
    if callable(spec):
        return CallableEncoder(spec)
    if spec in BUILTIN:
        return BUILTIN[spec]()
    module_name, _, attribute = str(spec).partition(":")
    if not attribute:
        raise ValueError(f"unknown REPA audio encoder '{spec}': use one of {', '.join(BUILTIN)} or "
                         "'package.module:factory'")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"REPA audio encoder '{spec}' cannot be imported: {exc}") from exc
    if isinstance(target, type) or (callable(target) and not _takes_audio(target)):
        target = target()
    return target if isinstance(target, AudioFeatureEncoder) else CallableEncoder(target, name=str(spec))


def _takes_audio(fn: Callable) -> bool:
    import inspect

    try:
        return len(inspect.signature(fn).parameters) >= 2
    except (TypeError, ValueError):
        return True
