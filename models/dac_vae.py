"""The 48 kHz continuous DAC-VAE: waveform <-> 128-d latents at 50 Hz.

Loads the release file (`vae_128d_48k.pth`, pickled `{"state_dict", "metadata": {"kwargs"}}`) and
safetensors copies. Our safetensors files carry the config as a JSON string under the metadata key
`"kwargs"` (the same kwargs as the release); without it the config is read off the tensor shapes.
The decoder runs on the DiT output directly: there is no latent scaling.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from typing import Mapping

import torch
from torch import nn

from .checkpoint import Checkpoint, CheckpointError, assign_state_dict, as_checkpoint, require_kind
from .dac_layers import Decoder, Encoder, WeightNorm, decoder_context_latents
from .layers import map_chunks
from .ops import CastOps

LOGVAR_RANGE = (-30.0, 20.0)
SAFETENSORS_KWARGS_KEY = "kwargs"
# Kwargs of the release's DAC class that only concern its discrete (RVQ) variant.
_DISCRETE_ONLY_KWARGS = ("n_codebooks", "codebook_size", "codebook_dim", "quantizer_dropout")


@dataclass(frozen=True)
class DacVaeConfig:
    encoder_dim: int = 128
    encoder_rates: tuple[int, ...] = (2, 3, 4, 5, 8)
    latent_dim: int = 128
    decoder_dim: int = 2048
    decoder_rates: tuple[int, ...] = (8, 5, 4, 3, 2)
    sample_rate: int = 48000

    def __post_init__(self):
        object.__setattr__(self, "encoder_rates", tuple(int(r) for r in self.encoder_rates))
        object.__setattr__(self, "decoder_rates", tuple(int(r) for r in self.decoder_rates))
        if math.prod(self.encoder_rates) != math.prod(self.decoder_rates):
            raise ValueError(f"encoder rates {self.encoder_rates} and decoder rates {self.decoder_rates} "
                             "give different hop lengths; decode(encode(x)) would change the length")
        if self.decoder_dim % (2 ** len(self.decoder_rates)):
            raise ValueError(f"decoder_dim {self.decoder_dim} must halve {len(self.decoder_rates)} times")

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (960 at 48 kHz: 50 latents per second)."""
        return math.prod(self.encoder_rates)

    @property
    def latent_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @classmethod
    def release_128d_48k(cls) -> "DacVaeConfig":
        """`vae_128d_48k.pth` of HunyuanVideo-Foley: 371,589,058 parameters."""
        return cls()

    def to_kwargs(self) -> dict:
        """The release's constructor kwargs (what its pickles and our safetensors store)."""
        kwargs = asdict(self)
        kwargs.update(encoder_rates=list(self.encoder_rates), decoder_rates=list(self.decoder_rates),
                      continuous=True)
        return kwargs

    @classmethod
    def from_kwargs(cls, kwargs: Mapping | str) -> "DacVaeConfig":
        """Read the release's kwargs (dict or JSON). Discrete-only kwargs are ignored."""
        kwargs = dict(json.loads(kwargs) if isinstance(kwargs, str) else kwargs)
        if not kwargs.pop("continuous", True):
            raise CheckpointError(
                "this is a discrete DAC (residual vector quantiser, continuous=False); the DAC-VAE loader "
                "only supports the continuous DAC-VAE (mean/logvar bottleneck) that HunyuanVideo-Foley uses")
        for name in _DISCRETE_ONLY_KWARGS:
            kwargs.pop(name, None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"unknown DAC-VAE kwargs {unknown}; known: {sorted(known)}")
        if kwargs.get("latent_dim") is None and "encoder_dim" in kwargs:
            # The release's default: the encoder's last width.
            kwargs["latent_dim"] = kwargs["encoder_dim"] * 2 ** len(kwargs.get("encoder_rates", cls.encoder_rates))
        return cls(**{k: v for k, v in kwargs.items() if v is not None})

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], sample_rate: int = 48000) -> "DacVaeConfig":
        """Infer the config from tensor shapes (the sample rate is not in them: pass it if not 48 kHz)."""
        _refuse_discrete(state_dict)
        try:
            encoder_dim = state_dict["encoder.block.0.weight_v"].shape[0]
            latent_dim = state_dict["post_quant_conv.weight"].shape[0]
            decoder_dim = state_dict["decoder.model.0.weight_v"].shape[0]
        except KeyError as exc:
            raise CheckpointError(f"not a DAC-VAE state dict: tensor {exc} is missing") from exc
        encoder_rates = _strided_rates(state_dict, r"encoder\.block\.(\d+)\.block\.4\.weight_v")
        decoder_rates = _strided_rates(state_dict, r"decoder\.model\.(\d+)\.block\.1\.weight_v")
        return cls(encoder_dim, encoder_rates, latent_dim, decoder_dim, decoder_rates, sample_rate)


def _strided_rates(state_dict: Mapping[str, torch.Tensor], pattern: str) -> tuple[int, ...]:
    """Strides of the up/down-sampling convs, in block order: their kernels are 2 * stride."""
    matcher = re.compile(pattern)
    kernels = sorted((int(m.group(1)), t.shape[-1]) for k, t in state_dict.items() if (m := matcher.fullmatch(k)))
    if not kernels or [i for i, _ in kernels] != list(range(1, len(kernels) + 1)):
        raise CheckpointError(f"not a DAC-VAE state dict: no consecutive strided convs matching '{pattern}'")
    return tuple(k // 2 for _, k in kernels)


def _refuse_discrete(state_dict: Mapping[str, torch.Tensor]) -> None:
    if "quant_conv.weight" not in state_dict and any(k.startswith("quantizer.") for k in state_dict):
        raise CheckpointError(
            "this is a discrete DAC (residual vector quantiser weights, no quant_conv); the DAC-VAE loader "
            "only supports the continuous DAC-VAE (mean/logvar bottleneck) that HunyuanVideo-Foley uses")


class DacVae(nn.Module):
    """Continuous DAC: `encode` gives (mean, logvar) of latents, `decode` turns latents into audio."""

    DEFAULT_CHUNK_LATENTS = 500  # 10 s at 50 Hz per decoder call, whatever the clip length

    def __init__(self, config: DacVaeConfig = DacVaeConfig(), operations=CastOps):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.encoder_dim, config.encoder_rates, config.latent_dim, operations)
        self.quant_conv = operations.Conv1d(config.latent_dim, 2 * config.latent_dim, 1)
        self.post_quant_conv = operations.Conv1d(config.latent_dim, config.latent_dim, 1)
        self.decoder = Decoder(config.latent_dim, config.decoder_dim, config.decoder_rates, operations)

    # Loading and saving ----------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        source: str | os.PathLike | Mapping[str, torch.Tensor] | Checkpoint,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        operations=CastOps,
    ) -> "DacVae":
        """Load a release pickle, a safetensors file or a state dict, strictly, for inference.

        The config comes from the release kwargs (`metadata["kwargs"]`, a dict in pickles, a JSON
        string in safetensors) when present, else from the tensor shapes. The network is built on
        the meta device and the tensors are assigned; weight norm is fused in the file's precision
        before casting to `dtype` (default: the file's dtype).
        """
        checkpoint = as_checkpoint(source)
        state_dict = require_kind(checkpoint, "dac_vae", "DAC-VAE loader",
                                  hint="Use the Foley model or Synchformer loader for those files.")
        kwargs = checkpoint.metadata.get(SAFETENSORS_KWARGS_KEY)
        if kwargs:
            config = DacVaeConfig.from_kwargs(kwargs)
            _refuse_discrete(state_dict)
        else:
            config = DacVaeConfig.from_state_dict(state_dict)
        with torch.device("meta"):
            model = cls(config, operations=operations)
        assign_state_dict(model, state_dict, f"a DAC-VAE with {config}")
        model.fuse_weight_norm()
        model.to(device=device, dtype=dtype or state_dict["quant_conv.weight"].dtype)
        return model.eval().requires_grad_(False)

    def save_safetensors(self, path: str | os.PathLike) -> None:
        """Write the weights (release key names) with the config as JSON under metadata `"kwargs"`."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        metadata = {"format": "pt", SAFETENSORS_KWARGS_KEY: json.dumps(self.config.to_kwargs())}
        save_file(tensors, str(path), metadata=metadata)

    def fuse_weight_norm(self) -> "DacVae":
        """Normalise every weight once (inference); training mode undoes it. Keys stay weight_g/_v."""
        for layer in self.modules():
            if isinstance(layer, WeightNorm):
                layer.fuse_weight_norm()
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    # Encoding ----------------------------------------------------------------------------------------
    def encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`wav [B, 1, T]` -> `(mean, logvar)`, each `[B, latent_dim, ceil(T / hop)]`.

        The wav is zero-padded on the right to a multiple of the hop, as the release's `preprocess`
        does; logvar is clamped to [-30, 20] as its Gaussian posterior does.
        """
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"expected mono audio [B, 1, T], got {tuple(wav.shape)}")
        wav = wav.to(self.dtype)
        hop = self.hop_length
        wav = nn.functional.pad(wav, (0, -wav.shape[-1] % hop))
        moments = self.quant_conv(self.encoder(wav))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    @staticmethod
    def sample(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw from the posterior N(mean, exp(logvar)) (reparameterised: differentiable in both)."""
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * noise

    @staticmethod
    def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL to N(0, 1) per batch item, averaged over channels and time as the release's loss does."""
        return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean(dim=(1, 2))

    # Decoding ----------------------------------------------------------------------------------------
    @property
    def decoder_context_latents(self) -> int:
        """Latents each side that a decoded sample depends on (12 for the release's rates)."""
        return math.ceil(decoder_context_latents(self.config.decoder_rates))

    def decode(
        self,
        z: torch.Tensor,
        chunk_latents: int | None = DEFAULT_CHUNK_LATENTS,
        overlap_latents: int | None = None,
    ) -> torch.Tensor:
        """`z [B, latent_dim, L]` -> audio `[B, 1, L * hop]` in [-1, 1].

        Long latents are decoded `chunk_latents` at a time, each call seeing `overlap_latents` extra
        latents on each side (default: the decoder's receptive field, so the result matches a one-shot
        decode to rounding) and keeping only its centre. Peak memory is then bounded by
        `chunk_latents + 2 * overlap_latents`, not by the clip length. `chunk_latents=None` decodes in
        one call.
        """
        if z.dim() != 3 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"expected latents [B, {self.config.latent_dim}, L], got {tuple(z.shape)}")
        z = z.to(self.dtype)
        overlap = self.decoder_context_latents if overlap_latents is None else int(overlap_latents)
        if (chunk_latents is not None and chunk_latents < 1) or overlap < 0:
            raise ValueError(f"chunk_latents must be >= 1 and overlap_latents >= 0, got {chunk_latents}, {overlap}")
        length = z.shape[-1]
        if chunk_latents is None or length <= chunk_latents + 2 * overlap:
            return self._decode_once(z)
        return map_chunks(self._decode_once, z, chunk_latents, overlap, scale=self.hop_length)

    def _decode_once(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))
