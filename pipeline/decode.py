"""Between latents and waveforms: DAC-VAE decoding (chunked), edits decoded over their original, and
encoding of existing audio."""
from __future__ import annotations

import torch

from ..media.audio import convert_channels, resample_audio


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, duration: float | None = None) -> tuple[torch.Tensor, int]:
    """Latents `[B, C, L]` -> waveform `[B, 1, T]` (fp32, CPU) and its sample rate.

    The waveform is cut to `duration` seconds when given (latents cover whole 20 ms frames).
    """
    device = next(vae.parameters()).device
    waveform = vae.decode(latents.to(device)).float().cpu()
    if duration is not None:
        waveform = waveform[..., : int(round(duration * vae.sample_rate))]
    return waveform, vae.sample_rate


@torch.no_grad()
def decode_edited(vae, latents: torch.Tensor, original: torch.Tensor | None, mask: torch.Tensor | None,
                  duration: float | None = None, span: tuple[int, int] | None = None) -> tuple[torch.Tensor, int]:
    """An edit's latents decoded so the sound outside the mask is the decoded `original` itself.

    The mask `[B or 1, L]` (1 generated, 0 kept) is stretched linearly over the samples, so the decoded
    edit and the decoded original crossfade along its ramps (and over at least one latent frame at a
    hard edge); where it is 0 the result is the original's VAE round trip exactly, however far the
    decoder's receptive field reaches into the kept sound. `span` (start, end frames): the part of
    `original` that holds sound, decoded on its own (an extension's padding is no sound to keep).
    """
    waveform, rate = decode_latents(vae, latents, duration)
    if original is None or mask is None or bool((mask >= 1).all()):
        return waveform, rate
    hop, length = vae.hop_length, waveform.shape[-1]
    start, end = span if span is not None else (0, original.shape[-1])
    sound, _ = decode_latents(vae, original[..., start:end])
    kept = torch.nn.functional.pad(sound, (start * hop, 0))[..., :length]
    kept = torch.nn.functional.pad(kept, (0, length - kept.shape[-1]))
    frames = mask.reshape(-1, 1, mask.shape[-1]).float().cpu()
    weight = torch.nn.functional.interpolate(frames, size=frames.shape[-1] * hop, mode="linear",
                                             align_corners=False)[..., :length]
    outside = (torch.arange(weight.shape[-1]) < start * hop) | (torch.arange(weight.shape[-1]) >= end * hop)
    weight = weight.masked_fill(outside, 1.0)
    return kept * (1 - weight) + waveform * weight, rate


@torch.no_grad()
def encode_waveform(vae, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Audio `[B, C, T]` (any rate, any channel count) -> latent means `[B, latent_dim, L]`, fp32."""
    if waveform.ndim == 2:
        waveform = waveform.unsqueeze(0)
    items = []
    for item in waveform:  # one item at a time: resampling works on [C, T]
        mono = convert_channels(item.float().cpu(), 1)
        if sample_rate != vae.sample_rate:
            mono = resample_audio(mono, sample_rate, vae.sample_rate)
        items.append(mono)
    length = max(i.shape[-1] for i in items)
    batch = torch.stack([torch.nn.functional.pad(i, (0, length - i.shape[-1])) for i in items])
    device = next(vae.parameters()).device
    mean, _ = vae.encode(batch.to(device))
    return mean.float().cpu()
