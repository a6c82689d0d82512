"""Hyper-parameters of the Foley MM-DiT, named configurations, and inference from checkpoint shapes.

The released checkpoints carry no config, so `FoleyDiTConfig.from_state_dict` reads it off the tensor
shapes; any size with the released layout loads, not only XXL and XL.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Mapping

import torch

from .layers import conv_swiglu_width


@dataclass(frozen=True)
class FoleyDiTConfig:
    hidden: int = 1536
    heads: int = 12
    triple_blocks: int = 18
    single_blocks: int = 36
    mlp_hidden: int = 6144  # GELU MLPs of the triple blocks
    single_mlp_hidden: int = 4096  # kernel-3 SwiGLU of the single blocks
    sync_mlp_hidden: int = 4096  # kernel-1 SwiGLU of the sync projection
    latent_dim: int = 128
    text_dim: int = 768
    clip_dim: int = 768
    sync_dim: int = 768
    sync_tokens_per_segment: int = 8
    rope_theta: float = 1e4
    # Rates that tie token counts to seconds.
    latent_rate: float = 50.0
    clip_fps: float = 8.0
    sync_fps: float = 25.0
    sync_segment_frames: int = 16
    sync_segment_stride: int = 8

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def variant(self) -> str:
        """'XXL', 'XL' or a description of a custom size."""
        for name, factory in (("XXL", xxl), ("XL", xl)):
            if self == factory():
                return name
        return f"custom (hidden {self.hidden}, {self.triple_blocks}+{self.single_blocks} blocks)"

    def __post_init__(self):
        if self.hidden % self.heads:
            raise ValueError(f"hidden size {self.hidden} is not divisible by {self.heads} heads")
        if self.head_dim % 2:
            raise ValueError(f"head dim {self.head_dim} must be even for rotary embeddings")

    def to_dict(self) -> dict:
        return asdict(self)

    # Token counts for a clip of a given length -------------------------------------------------
    def latent_length(self, seconds: float) -> int:
        return int(seconds * self.latent_rate)

    def clip_length(self, seconds: float) -> int:
        return int(seconds * self.clip_fps)

    def sync_length(self, seconds: float) -> int:
        frames = int(round(seconds * self.sync_fps))
        segments = max(0, (frames - self.sync_segment_frames) // self.sync_segment_stride + 1)
        return segments * self.sync_tokens_per_segment

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> "FoleyDiTConfig":
        """Read the configuration off the shapes of a released-layout state dict."""
        shape = lambda key: tuple(state_dict[key].shape)  # noqa: E731
        try:
            hidden, latent_dim, _ = shape("audio_embedder.proj.weight")
            head_dim = shape("triple_blocks.0.audio_self_q_norm.weight")[0]
            mlp_hidden = shape("triple_blocks.0.audio_mlp.fc1.weight")[0]
            sync_mlp_hidden = shape("sync_in.2.w1.weight")[0]
            text_dim = shape("cond_in.linear_1.weight")[1]
            clip_dim = shape("visual_proj.w1.weight")[1]
            _, _, tokens_per_segment, sync_dim = shape("sync_pos_emb")
        except KeyError as exc:
            raise ValueError(f"not a HunyuanVideo-Foley state dict: tensor {exc} is missing") from exc
        single = _block_count(state_dict, "single_blocks")
        single_mlp_hidden = shape("single_blocks.0.linear2.w1.weight")[0] if single else conv_swiglu_width(hidden)
        return cls(
            hidden=hidden,
            heads=hidden // head_dim,
            triple_blocks=_block_count(state_dict, "triple_blocks"),
            single_blocks=single,
            mlp_hidden=mlp_hidden,
            single_mlp_hidden=single_mlp_hidden,
            sync_mlp_hidden=sync_mlp_hidden,
            latent_dim=latent_dim,
            text_dim=text_dim,
            clip_dim=clip_dim,
            sync_dim=sync_dim,
            sync_tokens_per_segment=tokens_per_segment,
        )


def _block_count(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}\.(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def sized(hidden: int, heads: int, triple_blocks: int, single_blocks: int, **overrides) -> FoleyDiTConfig:
    """A config of the released layout at any size (MLP widths follow the release's rules)."""
    return FoleyDiTConfig(
        hidden=hidden,
        heads=heads,
        triple_blocks=triple_blocks,
        single_blocks=single_blocks,
        mlp_hidden=4 * hidden,
        single_mlp_hidden=conv_swiglu_width(hidden, 4.0),
        sync_mlp_hidden=conv_swiglu_width(hidden, 4.0),
        **overrides,
    )


def xxl() -> FoleyDiTConfig:
    """`hunyuanvideo_foley.pth`: 5.13 B parameters."""
    return sized(1536, 12, 18, 36)


def xl() -> FoleyDiTConfig:
    """`hunyuanvideo_foley_xl.pth`: 2.91 B parameters."""
    return sized(1408, 11, 12, 24)


def parity_tiny() -> FoleyDiTConfig:
    """The layout of the reference's `hvf_tiny` parity vectors (13 M parameters)."""
    return sized(256, 2, 2, 2)


NAMED_CONFIGS = {"xxl": xxl, "xl": xl, "tiny": parity_tiny}


def named(name: str, **overrides) -> FoleyDiTConfig:
    try:
        return replace(NAMED_CONFIGS[name.lower()](), **overrides)
    except KeyError:
        raise ValueError(f"unknown DiT config '{name}'; known: {', '.join(NAMED_CONFIGS)}") from None
