"""Hyper-parameters of the MMAudio flow-matching network, its released sizes, and inference from shapes.

The released `.pth` files carry no config, so `MMAudioConfig.from_state_dict` reads it off the tensor
shapes. Sequence lengths follow the release's arithmetic for a duration d in seconds:
`La = ceil(d * sr / hop / 2)` latents, `Lc = int(d * 8)` CLIP frames, and
`Ls = ((d * 25 - 16) // 8 + 1) * 8` Synchformer tokens (8 per 16-frame segment, stride 8).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Mapping

import torch

from .layers import conv_swiglu_width
from .mel import MEL_SETTINGS

# Mel VAE latent width -> the mel front end (and sample rate) that goes with it.
MODE_OF_LATENT_DIM = {20: "16k", 40: "44k"}
CLIP_FPS = 8
SYNC_FPS = 25
SYNC_SEGMENT_FRAMES = 16
SYNC_SEGMENT_STRIDE = 8
# Denominators tried, in order, when recovering the nominal duration behind a latent length.
_DURATION_DENOMINATORS = (1, 2, 4, 5, 10, 20, 25, 50, 100, 1000)


@dataclass(frozen=True)
class MMAudioConfig:
    latent_dim: int = 20
    hidden: int = 448
    heads: int = 7
    joint_blocks: int = 4
    fused_blocks: int = 8
    v2: bool = False
    mlp_hidden: int = 1280  # every SwiGLU of the network (hidden * 4, the release's rounding)
    clip_dim: int = 1024
    sync_dim: int = 768
    text_dim: int = 1024
    text_length: int = 77
    sync_tokens_per_segment: int = 8

    def __post_init__(self):
        if self.hidden % self.heads:
            raise ValueError(f"hidden size {self.hidden} is not divisible by {self.heads} heads")
        if self.head_dim % 2:
            raise ValueError(f"head dim {self.head_dim} must be even for rotary embeddings")
        if self.joint_blocks < 1:
            raise ValueError("MMAudio needs at least one joint block (the last one ends the clip/text streams)")

    # Derived sizes -------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def depth(self) -> int:
        return self.joint_blocks + self.fused_blocks

    @property
    def time_frequencies(self) -> int:
        """Width of the sinusoidal timestep features: 256 in v1, the hidden size in v2."""
        return self.hidden if self.v2 else 256

    @property
    def variant(self) -> str:
        """The released name ('small_16k', ..., 'large_44k_v2') or a description of a custom size."""
        for name, factory in NAMED_CONFIGS.items():
            if self == factory():
                return name
        return (f"custom (hidden {self.hidden}, {self.joint_blocks}+{self.fused_blocks} blocks, "
                f"latent {self.latent_dim}{', v2' if self.v2 else ''})")

    def to_dict(self) -> dict:
        return asdict(self)

    # Audio side ----------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """'16k' or '44k': the mel VAE / vocoder family the latents belong to."""
        try:
            return MODE_OF_LATENT_DIM[self.latent_dim]
        except KeyError:
            raise ValueError(
                f"latent width {self.latent_dim} matches neither MMAudio mel VAE (20 channels for 16 kHz, "
                "40 for 44.1 kHz), so no sample rate or latent rate is known for it"
            ) from None

    @property
    def sample_rate(self) -> int:
        return MEL_SETTINGS[self.mode].sample_rate

    @property
    def hop(self) -> int:
        """Audio samples per mel frame; one latent covers two mel frames."""
        return MEL_SETTINGS[self.mode].hop

    @property
    def latent_rate(self) -> float:
        """Latents per second: 31.25 (16k), 43.07 (44k)."""
        return self.sample_rate / self.hop / 2

    # Sequence lengths, the release's arithmetic --------------------------------------------------
    def latent_length(self, seconds: float) -> int:
        return int(math.ceil(seconds * self.sample_rate / self.hop / 2))

    def audio_samples(self, latent_length: int) -> int:
        return latent_length * 2 * self.hop

    @staticmethod
    def clip_length(seconds: float) -> int:
        return int(seconds * CLIP_FPS)

    def sync_length(self, seconds: float) -> int:
        segments = (seconds * SYNC_FPS - SYNC_SEGMENT_FRAMES) // SYNC_SEGMENT_STRIDE + 1
        return int(segments * self.sync_tokens_per_segment)

    def duration(self, latent_length: int) -> float:
        """The nominal duration behind `latent_length` latents.

        Several durations give the same latent count at 44.1 kHz (345 latents = 8.011 s of audio for
        an 8 s request), and the CLIP/Synchformer lengths are computed from the requested duration.
        The roundest duration that yields `latent_length` is taken (8 s, not 8.011 s), so the nominal
        durations reproduce the release's lengths exactly.
        """
        if latent_length < 1:
            raise ValueError(f"latent length must be at least 1, got {latent_length}")
        longest = latent_length / self.latent_rate
        for denominator in _DURATION_DENOMINATORS:
            seconds = math.floor(longest * denominator) / denominator
            if seconds > 0 and self.latent_length(seconds) == latent_length:
                return seconds
        return longest

    def condition_lengths(self, latent_length: int) -> tuple[int, int]:
        """CLIP frames and Synchformer tokens that go with `latent_length` latents.

        Clips shorter than one frame or one Synchformer segment still get one frame and one segment
        (the release never made such clips), so text-to-audio works at any length.
        """
        seconds = self.duration(latent_length)
        return (max(1, self.clip_length(seconds)),
                max(self.sync_tokens_per_segment, self.sync_length(seconds)))

    # From a checkpoint ---------------------------------------------------------------------------
    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> "MMAudioConfig":
        """Read the configuration off the shapes of a released-layout state dict.

        v1 and v2 differ by a SiLU after the clip/text input Linears, which shifts the index of
        the following SwiGLU in the key names (`clip_input_proj.1.*` vs `.2.*`), and by the width of
        the timestep features (256 vs hidden). The key names decide, since the widths coincide at
        hidden 256; the width is checked against them.
        """
        shape = lambda key: tuple(state_dict[key].shape)  # noqa: E731
        try:
            hidden, latent_dim, _ = shape("audio_input_proj.0.weight")
            head_dim = shape("joint_blocks.0.latent_block.attn.q_norm.weight")[0]
            mlp_hidden = shape("global_cond_mlp.w1.weight")[0]
            clip_dim = shape("clip_input_proj.0.weight")[1]
            sync_dim = shape("sync_input_proj.0.weight")[1]
            text_length, text_dim = shape("empty_string_feat")
            tokens_per_segment = shape("sync_pos_emb")[2]
            time_frequencies = shape("t_embed.mlp.0.weight")[1]
        except KeyError as exc:
            raise ValueError(f"not an MMAudio network state dict: tensor {exc} is missing") from exc
        v2 = "clip_input_proj.2.w1.weight" in state_dict
        if time_frequencies != (hidden if v2 else 256):
            raise ValueError(
                f"inconsistent MMAudio state dict: {'v2' if v2 else 'v1'} key layout but timestep features of "
                f"width {time_frequencies} (expected {hidden if v2 else 256}); the file was modified or mixed"
            )
        return cls(
            latent_dim=latent_dim,
            hidden=hidden,
            heads=hidden // head_dim,
            joint_blocks=_block_count(state_dict, "joint_blocks"),
            fused_blocks=_block_count(state_dict, "fused_blocks"),
            v2=v2,
            mlp_hidden=mlp_hidden,
            clip_dim=clip_dim,
            sync_dim=sync_dim,
            text_dim=text_dim,
            text_length=text_length,
            sync_tokens_per_segment=tokens_per_segment,
        )


def _block_count(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}\.(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def sized(latent_dim: int, heads: int, depth: int, fused_depth: int, v2: bool = False, **overrides) -> MMAudioConfig:
    """A config of the released layout (head dim 64, MLP ratio 4) in the release's own terms."""
    hidden = 64 * heads
    return MMAudioConfig(latent_dim=latent_dim, hidden=hidden, heads=heads, joint_blocks=depth - fused_depth,
                         fused_blocks=fused_depth, v2=v2, mlp_hidden=conv_swiglu_width(hidden, 4.0), **overrides)


def small_16k() -> MMAudioConfig:
    """`mmaudio_small_16k.pth`: 157,283,644 parameters."""
    return sized(20, 7, 12, 8)


def small_44k() -> MMAudioConfig:
    """`mmaudio_small_44k.pth`: 157,409,144 parameters."""
    return sized(40, 7, 12, 8)


def medium_44k() -> MMAudioConfig:
    """`mmaudio_medium_44k.pth`: 621,805,944 parameters."""
    return sized(40, 14, 12, 8)


def large_44k() -> MMAudioConfig:
    """`mmaudio_large_44k.pth`: 1,030,002,168 parameters."""
    return sized(40, 14, 21, 14)


def large_44k_v2() -> MMAudioConfig:
    """`mmaudio_large_44k_v2.pth` (the recommended one): 1,030,575,608 parameters."""
    return sized(40, 14, 21, 14, v2=True)


NAMED_CONFIGS = {
    "small_16k": small_16k,
    "small_44k": small_44k,
    "medium_44k": medium_44k,
    "large_44k": large_44k,
    "large_44k_v2": large_44k_v2,
}


def named(name: str, **overrides) -> MMAudioConfig:
    try:
        return replace(NAMED_CONFIGS[name.lower()](), **overrides)
    except KeyError:
        raise ValueError(f"unknown MMAudio config '{name}'; known: {', '.join(NAMED_CONFIGS)}") from None
