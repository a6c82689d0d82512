"""MMAudio's mel VAE: log-mel spectrograms <-> latents at half the mel frame rate.

Loads the release files (`ext_weights/v1-16.pth`, `v1-44.pth`: plain state dicts of raw `MPConv1D`
weights, 0-d `learnable_gain`s and the `data_mean` / `data_std` buffers) and same-layout safetensors.
The release normalises every convolution weight once after loading (`remove_weight_norm`); so does
`from_checkpoint`, which is why it expects the raw weights the release stores. The mel layout is
`[B, n_mels, frames]`, the latent layout `[B, latent_dim, L]` (MMAudio's network works channel-last:
transpose its `[B, L, C]` output before `decode`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from .checkpoint import Checkpoint, CheckpointError, as_checkpoint, assign_state_dict, require_kind
from .mel_vae_constants import MEL_NORMALISATION
from .layers import map_chunks
from .mel_vae_layers import Decoder, Encoder, normalize_mp_weight
from .ops import CastOps, set_precision

LOGVAR_RANGE = (-30.0, 20.0)
# Audio settings of the release's two modes, by mel bins: (sample rate, mel hop length).
AUDIO_MODES = {80: (16000, 256), 128: (44100, 512)}


@dataclass(frozen=True)
class MelVaeConfig:
    data_dim: int = 128  # mel bins
    embed_dim: int = 40  # latent channels
    hidden_dim: int = 512

    @classmethod
    def release_16k(cls) -> "MelVaeConfig":
        """`v1-16.pth`: 80 mels, 20 latent channels, 171,657,378 numbers."""
        return cls(80, 20, 384)

    @classmethod
    def release_44k(cls) -> "MelVaeConfig":
        """`v1-44.pth`: 128 mels, 40 latent channels, 305,479,938 numbers."""
        return cls(128, 40, 512)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> "MelVaeConfig":
        """Sizes from the decoder's first and last convolutions (decoder-only files have no encoder)."""
        try:
            conv_in = state_dict["decoder.conv_in.weight"]
            conv_out = state_dict["decoder.conv_out.weight"]
        except KeyError as exc:
            raise CheckpointError(f"not an MMAudio mel VAE state dict: tensor {exc} is missing") from exc
        return cls(data_dim=conv_out.shape[0], embed_dim=conv_in.shape[1], hidden_dim=conv_out.shape[1])

    @property
    def n_mels(self) -> int:
        return self.data_dim

    @property
    def latent_dim(self) -> int:
        return self.embed_dim

    @property
    def sample_rate(self) -> int | None:
        """16000 for 80 mels, 44100 for 128 (the release's modes); None for other sizes."""
        return AUDIO_MODES.get(self.data_dim, (None, None))[0]

    @property
    def mel_hop(self) -> int | None:
        """Audio samples per mel frame (256 at 16 kHz, 512 at 44.1 kHz)."""
        return AUDIO_MODES.get(self.data_dim, (None, None))[1]

    @property
    def hop(self) -> int | None:
        """Audio samples per latent (512 at 16 kHz, 1024 at 44.1 kHz): latents are at half the mel rate."""
        return None if self.mel_hop is None else 2 * self.mel_hop


class MelVae(nn.Module):
    """`encode(mel) -> (mean, logvar)`, `decode(z) -> mel`; mels are un-normalised log-mels."""

    DEFAULT_CHUNK_LATENTS = 512  # ~12 s at 44.1 kHz, ~16 s at 16 kHz per decoder call

    def __init__(self, config: MelVaeConfig = MelVaeConfig(), with_encoder: bool = True, operations=CastOps):
        super().__init__()
        self.config = config
        for name, buffer in _release_normalisation(config.data_dim).items():
            self.register_buffer(name, buffer)
        args = (config.data_dim, config.embed_dim, config.hidden_dim, operations)
        self.encoder = Encoder(*args) if with_encoder else None
        self.decoder = Decoder(*args)

    # Loading ---------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        source: str | os.PathLike | Mapping[str, torch.Tensor] | Checkpoint,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        with_encoder: bool = True,
        weights_normalized: bool = False,
        operations=CastOps,
    ) -> "MelVae":
        """Load a release file (or same-layout state dict / safetensors) strictly, for inference.

        The sizes come from the tensor shapes (16k: 80 mels, 20 latent channels; 44k: 128, 40). Every
        convolution weight gets the release's load-time normalisation (new tensors: the caller's are
        left alone). `data_mean` / `data_std`, if absent, take the release's constants for the mel
        count. `with_encoder=False` (or a decoder-only file) builds only the decoder, half the memory.
        The default compute dtype is fp32. A state dict of an already loaded `MelVae` holds normalised
        weights, and normalising again would change them: load those with `weights_normalized=True`.
        """
        checkpoint = as_checkpoint(source)
        state_dict = dict(require_kind(checkpoint, "mmaudio_vae", "MMAudio mel VAE loader",
                                       hint="Use the MMAudio network, BigVGAN or DAC-VAE loader for those files."))
        config = MelVaeConfig.from_state_dict(state_dict)
        with_encoder = with_encoder and any(k.startswith("encoder.") for k in state_dict)
        if not with_encoder:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("encoder.")}
        for name in ("data_mean", "data_std"):
            if name not in state_dict and config.data_dim not in MEL_NORMALISATION:
                raise CheckpointError(
                    f"the mel VAE file has no '{name}' and {config.data_dim} mel bins is not a release mode "
                    f"(80 or 128), so there is no default normalisation; add the buffers to the file")
        with torch.device("meta"):
            model = cls(config, with_encoder=with_encoder, operations=operations)
        state_dict = {**_release_normalisation(config.data_dim), **state_dict}
        if not weights_normalized:
            state_dict = {k: normalize_mp_weight(v) if k.endswith(".weight") else v for k, v in state_dict.items()}
        assign_state_dict(model, state_dict, f"an MMAudio mel VAE with {config}")
        set_precision(model, dtype or torch.float32)
        return model.to(device).eval().requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.data_mean.dtype

    @property
    def device(self) -> torch.device:
        return self.data_mean.device

    @property
    def sample_rate(self) -> int | None:
        return self.config.sample_rate

    @property
    def hop(self) -> int | None:
        """Audio samples per latent."""
        return self.config.hop

    # Encoding ----------------------------------------------------------------------------------------
    def encode(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log-mel `[B, n_mels, T]` -> `(mean, logvar)`, each `[B, latent_dim, T // 2]`."""
        if self.encoder is None:
            raise RuntimeError("this mel VAE was loaded without its encoder (with_encoder=False or a "
                               "decoder-only file); load it with the encoder to encode")
        self._check_input(mel, self.config.data_dim, "mel [B, n_mels, frames]")
        mel = (mel.to(self.dtype) - self.data_mean) / self.data_std
        mean, logvar = self.encoder(mel).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    # Decoding ----------------------------------------------------------------------------------------
    @property
    def decoder_context_latents(self) -> int:
        """Latents each side that a mel frame depends on, apart from the global mid attention (18)."""
        return self.decoder.tail_context_latents()

    def decode(self, z: torch.Tensor, chunk_latents: int | None = DEFAULT_CHUNK_LATENTS,
               context_latents: int | None = None) -> torch.Tensor:
        """latents `[B, latent_dim, L]` -> log-mel `[B, n_mels, 2L]`.

        Latents longer than `chunk_latents` are decoded chunk by chunk. The decoder is local except
        for one attention layer over the whole clip at the latent rate: its keys and values (two
        `[B, 4 * hidden, L]` tensors, plus the stem output) are computed for the whole clip, and each
        chunk runs its queries and the local rest of the decoder with `decoder_context_latents` of
        context on each side (`context_latents` overrides it). The result equals the one-shot decode
        to rounding, and apart from those three latent-rate tensors (24 KB per latent at 44.1 kHz)
        memory is bounded by the chunk. `chunk_latents=None` always decodes in one call.
        """
        self._check_input(z, self.config.embed_dim, "latents [B, latent_dim, L]")
        context = self.decoder_context_latents if context_latents is None else int(context_latents)
        if (chunk_latents is not None and chunk_latents < 1) or context < 0:
            raise ValueError(f"chunk_latents must be >= 1 or None and context_latents >= 0, "
                             f"got {chunk_latents}, {context_latents}")
        z = z.to(self.dtype)
        if chunk_latents is None or z.shape[-1] <= chunk_latents:
            normalised = self.decoder(z)
        else:
            normalised = self._decode_chunked(z, chunk_latents, context)
        return normalised * self.data_std + self.data_mean

    def _decode_chunked(self, z: torch.Tensor, chunk: int, context: int) -> torch.Tensor:
        decoder = self.decoder
        stem = map_chunks(decoder.stem, z, chunk, decoder.stem_context_latents(), scale=1)
        keys, values = [], []
        for start in range(0, stem.shape[-1], chunk):  # k1 projection: no context needed
            _, k, v = decoder.mid.attn_1.project(stem[..., start:start + chunk])
            keys.append(k)
            values.append(v)
        keys, values = torch.cat(keys, dim=2), torch.cat(values, dim=2)

        def attend_and_finish(piece: torch.Tensor) -> torch.Tensor:
            return decoder.tail(decoder.mid.attn_1(piece, keys, values))

        return map_chunks(attend_and_finish, stem, chunk, context, scale=2)

    @staticmethod
    def _check_input(x: torch.Tensor, channels: int, what: str) -> None:
        if x.dim() != 3 or x.shape[1] != channels:
            raise ValueError(f"expected {what} with {channels} channels, got shape {tuple(x.shape)}")


def _release_normalisation(data_dim: int) -> dict[str, torch.Tensor]:
    """`data_mean` / `data_std` `[1, data_dim, 1]`: the release's for 80 / 128 mels, else 0 / 1."""
    mean, std = MEL_NORMALISATION.get(data_dim, ((0.0,) * data_dim, (1.0,) * data_dim))
    return {"data_mean": torch.tensor(mean, dtype=torch.float32, device="cpu").view(1, -1, 1),
            "data_std": torch.tensor(std, dtype=torch.float32, device="cpu").view(1, -1, 1)}

