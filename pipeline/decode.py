"""Between latents and waveforms: DAC-VAE decoding (chunked) and encoding of existing audio."""
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
