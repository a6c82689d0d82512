"""Building blocks of MMAudio's mel VAE: EDM2-style magnitude-preserving 1-D convolutions.

Every convolution is a bias-free `operations.Conv1d` with 'same' padding (the release's `MPConv1D`);
its stored weight is the release's raw weight, normalised once at load by `normalize_mp_weight`.
Module names follow the released checkpoint (`encoder.down.0.block.1.conv2.weight`, ...), so the
`nn.ModuleList` indices are part of the file format.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import CastOps

CHANNEL_MULTIPLIERS = (1, 2, 4)  # widths of the three levels, in units of `hidden_dim`
ENCODER_BLOCKS_PER_LEVEL = 2
DECODER_BLOCKS_PER_LEVEL = 3
RESAMPLED_LEVEL_ENCODER = 0  # the encoder halves the frame rate after level 0 ...
RESAMPLED_LEVEL_DECODER = 1  # ... the decoder doubles it after level 1
ACTIVATION_CLIP = 256.0
RESIDUAL_WEIGHT = 0.3  # mp_sum(x, h, t): t of the residual branch
NORM_EPS = 1e-4


def pixel_norm(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """`x / (eps + ||x|| / sqrt(n))` over `dim`: unit mean square per position."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    norm = norm.mul(1.0 / math.sqrt(x.shape[dim])).add(NORM_EPS)
    return x / norm.to(x.dtype)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU scaled back to unit magnitude for unit-variance input."""
    return F.silu(x) / 0.596


def mp_sum(x: torch.Tensor, h: torch.Tensor, t: float = RESIDUAL_WEIGHT) -> torch.Tensor:
    """Magnitude-preserving blend `((1 - t) x + t h) / sqrt((1 - t)^2 + t^2)`."""
    return x.lerp(h, t) / math.sqrt((1 - t) ** 2 + t ** 2)


@torch.no_grad()
def normalize_mp_weight(weight: torch.Tensor) -> torch.Tensor:
    """The release's load step (`remove_weight_norm`): per output channel o,
    `w_o / (eps + ||w_o|| / sqrt(fan_in)) / sqrt(fan_in)`, computed in fp32, returned in the weight's dtype."""
    w = weight.float()
    fan_in = w[0].numel()
    norm = torch.linalg.vector_norm(w, dim=tuple(range(1, w.dim())), keepdim=True)
    w = w / (norm / math.sqrt(fan_in) + NORM_EPS) / math.sqrt(fan_in)
    return w.to(weight.dtype)


def clip_activations(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-ACTIVATION_CLIP, ACTIVATION_CLIP)


def mp_conv(operations, in_channels: int, out_channels: int, kernel_size: int) -> nn.Module:
    return operations.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)


class ResnetBlock(nn.Module):
    """Pixel norm, then `mp_sum(x, conv2(mp_silu(conv1(mp_silu(x)))))`; a k1 shortcut when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, operations=CastOps):
        super().__init__()
        self.conv1 = mp_conv(operations, in_channels, out_channels, 3)
        self.conv2 = mp_conv(operations, out_channels, out_channels, 3)
        if in_channels != out_channels:
            self.nin_shortcut = mp_conv(operations, in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(x)
        h = self.conv2(mp_silu(self.conv1(mp_silu(x))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return mp_sum(x, h)


class AttnBlock(nn.Module):
    """One-head self-attention over time with pixel-normalised q, k, v (cosine attention).

    The qkv channels are interleaved `3c + j` (j = 0 q, 1 k, 2 v). `forward` can take the keys and
    values of a longer sequence, so a chunk of queries attends to the whole clip (chunked decoding).
    """

    def __init__(self, channels: int, operations=CastOps):
        super().__init__()
        self.qkv = mp_conv(operations, channels, 3 * channels, 1)
        self.proj_out = mp_conv(operations, channels, channels, 1)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`[B, C, L]` -> normalised q, k, v, each `[B, 1, L, C]`."""
        batch, channels, length = x.shape
        qkv = pixel_norm(self.qkv(x).view(batch, channels, 3, length), dim=1)
        return tuple(qkv[:, :, j].transpose(1, 2).unsqueeze(1) for j in range(3))

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None,
                values: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.project(x)
        if keys is not None:
            k, v = keys, values
        h = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(C)
        return mp_sum(x, self.proj_out(h.squeeze(1).transpose(1, 2)))


class Downsample(nn.Module):
    """k1 conv, average pool by 2, k1 conv."""

    def __init__(self, channels: int, operations=CastOps):
        super().__init__()
        self.conv1 = mp_conv(operations, channels, channels, 1)
        self.conv2 = mp_conv(operations, channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.avg_pool1d(self.conv1(x), 2))


class Upsample(nn.Module):
    """Nearest x2 (each frame repeated, the same as 'nearest-exact' at factor 2), then a k3 conv."""

    def __init__(self, channels: int, operations=CastOps):
        super().__init__()
        self.conv = mp_conv(operations, channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.repeat_interleave(2, dim=-1))


class Level(nn.Module):
    """Res blocks of one width, then an optional resampler (`downsample` / `upsample` in the file)."""

    def __init__(self, widths: list[tuple[int, int]], resampler: str | None, operations=CastOps):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(i, o, operations) for i, o in widths)
        if resampler == "downsample":
            self.downsample = Downsample(widths[-1][1], operations)
        elif resampler == "upsample":
            self.upsample = Upsample(widths[-1][1], operations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = clip_activations(block(x))
        for name in ("downsample", "upsample"):
            if hasattr(self, name):
                x = getattr(self, name)(x)
        return x


class Mid(nn.Module):
    def __init__(self, channels: int, operations=CastOps):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, operations)
        self.attn_1 = AttnBlock(channels, operations)
        self.block_2 = ResnetBlock(channels, channels, operations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clip_activations(self.block_2(self.attn_1(self.block_1(x))))


class Encoder(nn.Module):
    """mel `[B, data_dim, T]` (normalised) -> moments `[B, 2 * embed_dim, T // 2]`."""

    def __init__(self, data_dim: int, embed_dim: int, hidden_dim: int, operations=CastOps):
        super().__init__()
        # Registered first: the release's state dict lists the gain before the convolutions.
        self.learnable_gain = nn.Parameter(torch.zeros(()))
        self.conv_in = mp_conv(operations, data_dim, hidden_dim, 3)
        widths = [hidden_dim * m for m in CHANNEL_MULTIPLIERS]
        self.down = nn.ModuleList()
        previous = hidden_dim
        for level, width in enumerate(widths):
            pairs = [(previous if i == 0 else width, width) for i in range(ENCODER_BLOCKS_PER_LEVEL)]
            resampler = "downsample" if level == RESAMPLED_LEVEL_ENCODER else None
            self.down.append(Level(pairs, resampler, operations))
            previous = width
        self.mid = Mid(widths[-1], operations)
        self.conv_out = mp_conv(operations, widths[-1], 2 * embed_dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.conv_out(mp_silu(self.mid(h)))
        # conv(x, w * g) == conv(x, w) * g: the release scales the weight, we scale the output.
        return h * (1 + self.learnable_gain.to(h.dtype))


class Decoder(nn.Module):
    """latents `[B, embed_dim, L]` -> normalised mel `[B, data_dim, 2L]`.

    Split into a local `stem` (conv_in, mid.block_1), the global mid attention and a local `tail`,
    so that long latents can be decoded chunk by chunk with the attention still seeing the whole clip.
    """

    def __init__(self, data_dim: int, embed_dim: int, hidden_dim: int, operations=CastOps):
        super().__init__()
        self.learnable_gain = nn.Parameter(torch.zeros(()))
        widths = [hidden_dim * m for m in CHANNEL_MULTIPLIERS]
        self.conv_in = mp_conv(operations, embed_dim, widths[-1], 3)
        self.mid = Mid(widths[-1], operations)
        levels = []
        previous = widths[-1]
        for level in reversed(range(len(widths))):
            pairs = [(previous if i == 0 else widths[level], widths[level]) for i in range(DECODER_BLOCKS_PER_LEVEL)]
            levels.append(Level(pairs, "upsample" if level == RESAMPLED_LEVEL_DECODER else None, operations))
            previous = widths[level]
        self.up = nn.ModuleList(reversed(levels))  # up.0 is the last level run (the file's indexing)
        self.conv_out = mp_conv(operations, hidden_dim, data_dim, 3)

    def stem(self, z: torch.Tensor) -> torch.Tensor:
        return self.mid.block_1(self.conv_in(z))

    def tail(self, h: torch.Tensor) -> torch.Tensor:
        """From the attention output to the normalised mel (all local)."""
        h = clip_activations(self.mid.block_2(h))
        for level in reversed(self.up):
            h = level(h)
        h = self.conv_out(mp_silu(h))
        return h * (1 + self.learnable_gain.to(h.dtype))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.tail(self.mid.attn_1(self.stem(z)))

    @staticmethod
    def stem_context_latents() -> int:
        """Latents each side a stem output depends on: conv_in (1) and block_1's two k3 convs (2)."""
        return 3

    @staticmethod
    def tail_context_latents() -> int:
        """Latents each side a mel frame of `tail` depends on.

        At the mel rate: conv_out and the level-0 blocks' k3 convs, plus the upsampler's conv, reach
        1 + 2 * blocks + 1 frames, i.e. half as many latents (rounded up: repeated frames pair up).
        At the latent rate: mid.block_2 and the blocks of every level run before the upsampler.
        """
        levels_at_mel_rate = RESAMPLED_LEVEL_DECODER  # levels 0 .. upsampled level - 1
        mel_reach = 1 + 2 * DECODER_BLOCKS_PER_LEVEL * levels_at_mel_rate + 1
        latent_reach = 2 + 2 * DECODER_BLOCKS_PER_LEVEL * (len(CHANNEL_MULTIPLIERS) - levels_at_mel_rate)
        return math.ceil(mel_reach / 2) + latent_reach
