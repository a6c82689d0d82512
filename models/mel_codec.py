"""MMAudio's way between latents and sound: mel VAE latents -> mel spectrogram -> BigVGAN vocoder ->
waveform, and back through the release's mel front end. `MelCodec` has the DAC-VAE's interface
(`encode(wav) -> (mean, logvar)`, `decode(z) -> wav`, `sample_rate`, `config.latent_dim`), so every
stage that decodes or encodes audio takes either."""
from __future__ import annotations

import torch
from torch import nn

from .bigvgan import BigVGAN
from .mel import mel_spectrogram
from .mel_vae import MelVae

MODES = {16000: "16k", 44100: "44k"}


class MelCodec(nn.Module):
    def __init__(self, vae: MelVae, vocoder: BigVGAN):
        super().__init__()
        rate, mels = vae.config.sample_rate, vae.config.n_mels
        if rate not in MODES:
            raise ValueError(f"the mel VAE ({mels} mel bins) is not one of the release's 16 kHz (80 bins) or "
                             "44.1 kHz (128 bins) VAEs, so its mel front end is unknown")
        if vocoder.config.num_mels != mels or vocoder.sample_rate not in (None, rate) or vocoder.hop != vae.config.mel_hop:
            raise ValueError(
                f"the vocoder ({vocoder.config.num_mels} mel bins, hop {vocoder.hop}) does not go with the "
                f"{MODES[rate]} mel VAE ({mels} bins, hop {vae.config.mel_hop}); use "
                + ("best_netG.pt (BigVGAN 16 kHz)" if rate == 16000 else "BigVGAN-v2 44 kHz (bigvgan_generator.pt)"))
        self.vae, self.vocoder = vae, vocoder
        self.mode = MODES[rate]

    @property
    def config(self):
        return self.vae.config

    @property
    def sample_rate(self) -> int:
        return self.vae.config.sample_rate

    @property
    def hop_length(self) -> int:
        """Audio samples per latent."""
        return self.vae.config.hop

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents `[B, C, L]` -> waveform `[B, 1, L * hop_length]`."""
        return self.vocoder(self.vae.decode(latents))

    def encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveform `[B, 1, T]` at `sample_rate` -> latent (mean, logvar) `[B, C, T // hop_length]`."""
        mel = mel_spectrogram(wav.reshape(wav.shape[0], -1).float(), self.mode)
        return self.vae.encode(mel[..., : mel.shape[-1] // 2 * 2].to(self.vae.dtype))
