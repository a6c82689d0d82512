"""BigVGAN vocoders: log-mel `[B, n_mels, T]` -> waveform `[B, 1, T * hop]`.

Loads MMAudio's 16 kHz BigVGAN (v1 code, `ext_weights/best_netG.pt`) and NVIDIA's BigVGAN-v2
(`bigvgan_v2_44khz_128band_512x`: `bigvgan_generator.pt` + `config.json`). Both files hold
`{'generator': state_dict, ...}` with old-style weight norm (`weight_g` / `weight_v`); state dicts saved
with torch's newer parametrization names, or with weight norm already removed, load too. Weight norm
is folded at load (inference only). The config is `config.json`'s dict, or, when not given, the
release configuration of the family the tensor shapes show.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Literal, Mapping

import torch
from torch import nn

from .bigvgan_config import BigVGANConfig
from .bigvgan_layers import RESBLOCKS, AntiAliasedActivation, conv_reach
from .checkpoint import Checkpoint, CheckpointError, as_checkpoint, assign_state_dict, require_kind
from .dac_layers import WeightNorm, weight_norm_convs
from .layers import map_chunks
from .ops import CastOps, set_precision

FILTER_TOLERANCE = 1e-6
# Longer mels are vocoded in chunks of this many output samples (11.9 s at 44.1 kHz, 32.8 s at 16 kHz):
# the working memory scales with the samples, ~35 MB of activations per second of 44.1 kHz audio in
# fp32 (768 channels at 8x the frame rate, then half the channels at twice the rate per stage):
# 24 s in one call peaked 845 MB above the weights, in 3 chunks 91 MB.
DEFAULT_CHUNK_SAMPLES = 2 ** 19


class BigVGAN(nn.Module):
    """conv_pre, then per stage a transposed conv (x rate) and the mean of the AMP blocks, then the
    anti-aliased activation, conv_post and tanh (v1) or a clamp to [-1, 1] (v2)."""

    def __init__(self, config: BigVGANConfig, operations=CastOps):
        super().__init__()
        self.config = config
        conv, conv_transpose = weight_norm_convs(operations)
        width = config.upsample_initial_channel
        self.conv_pre = conv(config.num_mels, width, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        resblock = RESBLOCKS[config.resblock]
        for i, (rate, kernel) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes)):
            channels = width >> (i + 1)
            self.ups.append(nn.ModuleList([conv_transpose(width >> i, channels, kernel, rate,
                                                          padding=(kernel - rate) // 2)]))
            for kernel_size, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
                self.resblocks.append(resblock(channels, kernel_size, dilations, config.activation,
                                               config.snake_logscale, operations))
        channels = width >> len(config.upsample_rates)
        self.activation_post = AntiAliasedActivation(channels, config.activation, config.snake_logscale)
        self.conv_post = conv(channels, 1, 7, padding=3, bias=config.use_bias_at_final)

    # Loading ---------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        source: str | os.PathLike | Mapping | Checkpoint,
        config: BigVGANConfig | Mapping | str | os.PathLike | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        operations=CastOps,
    ) -> "BigVGAN":
        """Load a generator file (`.pt` / `.pth` pickle or safetensors) or state dict, strictly.

        `config`: `config.json`'s dict (or its path, or a `BigVGANConfig`); it is checked against the
        tensor shapes and a mismatch names the key. None takes the release config of the family the
        shapes show (16 kHz v1 or 44.1 kHz v2, see `BigVGANConfig.from_state_dict`). The `*.filter`
        buffers are computed; when the file has them they must equal the computed ones. The default
        compute dtype is fp32.
        """
        checkpoint = read_generator(source)
        state_dict = require_kind(checkpoint, "bigvgan", "BigVGAN vocoder loader",
                                  hint="Use the MMAudio network, mel VAE or DAC-VAE loader for those files.")
        state_dict = old_style_weight_norm(state_dict)
        config = BigVGANConfig.from_state_dict(state_dict) if config is None else _as_config(config)
        config.check_state_dict(state_dict)
        with torch.device("meta"):
            model = cls(config, operations=operations)
        state_dict = _with_computed_filters(model, state_dict)
        assign_state_dict(model, state_dict, f"a BigVGAN with {config}")
        for layer in model.modules():
            if isinstance(layer, WeightNorm):
                layer.fuse_weight_norm()
        set_precision(model, dtype or torch.float32)
        return model.to(device).eval().requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (a buffer's: the conv weights may be stored in another, e.g. fp8)."""
        return self.activation_post.upsample.filter.dtype

    @property
    def hop(self) -> int:
        """Audio samples per mel frame."""
        return self.config.hop

    @property
    def sample_rate(self) -> int | None:
        return self.config.sampling_rate

    @property
    def default_chunk_frames(self) -> int:
        """Mel frames per chunk when `forward` is not told: `DEFAULT_CHUNK_SAMPLES` of output."""
        return max(1, DEFAULT_CHUNK_SAMPLES // self.hop)

    @property
    def context_frames(self) -> int:
        """Mel frames each side that an output sample may depend on: its receptive field, bounded
        from above so chunks with this much context reproduce the one-shot output.

        Walking back from the output: conv_post and the last activation reach a few samples; each
        stage adds its widest AMP block's reach at its own rate, and its transposed conv (stride u,
        k taps) maps a reach of r samples to at most (r + k) / u input samples; conv_pre adds 3
        frames. The releases get 42 frames (16 kHz) and 24 (44.1 kHz); their exact receptive fields
        are 38 and 21: the bound adds under 1% to the work of a default chunk.
        """
        reach = conv_reach(self.conv_post) + self.activation_post.reach
        per_stage = len(self.config.resblock_kernel_sizes)
        for i in reversed(range(len(self.ups))):
            reach += max(block.reach for block in self.resblocks[i * per_stage:(i + 1) * per_stage])
            up = self.ups[i][0]
            reach = math.ceil((reach + up.kernel_size[0]) / up.stride[0])
        return reach + conv_reach(self.conv_pre)

    def forward(self, mel: torch.Tensor, chunk_frames: int | None | Literal["auto"] = "auto",
                context_frames: int | None = None) -> torch.Tensor:
        """log-mel `[B, num_mels, T]` -> waveform `[B, 1, T * hop]` in [-1, 1].

        Mels longer than `chunk_frames` ("auto": `default_chunk_frames`) are vocoded in about equal
        chunks, each with `context_frames` (default: the receptive field, `context_frames`) of mel
        on each side whose output is dropped, so the result equals the one-shot call (to rounding)
        while the working memory is bounded by the chunk. `chunk_frames=None` always runs in one call.
        """
        if mel.dim() != 3 or mel.shape[1] != self.config.num_mels:
            raise ValueError(f"expected mel [B, {self.config.num_mels}, frames], got shape {tuple(mel.shape)}")
        chunk = self.default_chunk_frames if chunk_frames == "auto" else chunk_frames
        context = self.context_frames if context_frames is None else int(context_frames)
        if (chunk is not None and chunk < 1) or context < 0:
            raise ValueError(f"chunk_frames must be >= 1, None or 'auto' and context_frames >= 0, "
                             f"got {chunk_frames!r}, {context_frames!r}")
        mel = mel.to(self.dtype)
        if chunk is None or mel.shape[-1] <= chunk:
            return self._vocode(mel)
        return map_chunks(self._vocode, mel, chunk, context, scale=self.hop)

    def _vocode(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        per_stage = len(self.config.resblock_kernel_sizes)
        for i, (up,) in enumerate(self.ups):
            x = up(x)
            blocks = self.resblocks[i * per_stage:(i + 1) * per_stage]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / per_stage
        x = self.conv_post(self.activation_post(x))
        return torch.tanh(x) if self.config.use_tanh_at_final else x.clamp(-1.0, 1.0)


# Files ---------------------------------------------------------------------------------------------
def read_generator(source: str | os.PathLike | Mapping | Checkpoint) -> Checkpoint:
    """A generator's tensors from a file or mapping: `{'generator': state_dict, ...}` is unwrapped
    (the other entries, e.g. optimizer states, are ignored); plain state dicts pass through."""
    if isinstance(source, Mapping) and isinstance(source.get("generator"), Mapping):
        source = source["generator"]
    return as_checkpoint(source)


def old_style_weight_norm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torch's parametrized weight norm (`parametrizations.weight.original0/1`) to `weight_g` /
    `weight_v`; a plain conv `weight` (weight norm removed) becomes `weight_v` with `weight_g = ||weight||`."""
    out = {}
    for name, tensor in state_dict.items():
        if name.endswith(".parametrizations.weight.original0"):
            name = name[: -len("parametrizations.weight.original0")] + "weight_g"
        elif name.endswith(".parametrizations.weight.original1"):
            name = name[: -len("parametrizations.weight.original1")] + "weight_v"
        elif name.endswith(".weight") and tensor.dim() == 3:
            norm = torch.linalg.vector_norm(tensor.float(), dim=(1, 2), keepdim=True).to(tensor.dtype)
            out[name[: -len("weight")] + "weight_g"] = norm
            name = name[: -len("weight")] + "weight_v"
        out[name] = tensor
    return out


def _as_config(config) -> BigVGANConfig:
    if isinstance(config, BigVGANConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        config = json.loads(Path(config).read_text())
    return BigVGANConfig.from_json(config)


def _with_computed_filters(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The file's tensors plus the architecture's filters; a file's filter must equal the computed one."""
    out = dict(state_dict)
    for name, computed in model.named_buffers():
        if not name.endswith(".filter"):
            continue
        stored = out.get(name)
        if stored is not None and (stored.shape != computed.shape or
                                   not torch.allclose(stored.float(), computed, rtol=0, atol=FILTER_TOLERANCE)):
            raise CheckpointError(
                f"the file's anti-aliasing filter '{name}' differs from the Kaiser-sinc filter BigVGAN computes "
                f"(max difference {_difference(stored, computed)}); this is not a BigVGAN generator of the "
                "supported kind (up/down-sampling ratio 2, 12 taps)")
        out[name] = computed.to(stored.dtype) if stored is not None else computed
    return out


def _difference(stored: torch.Tensor, computed: torch.Tensor) -> str:
    if stored.shape != computed.shape:
        return f"shape {tuple(stored.shape)} vs {tuple(computed.shape)}"
    return f"{(stored.float() - computed).abs().max().item():.3g}"
