"""Input embeddings of the MM-DiT: timestep, text, visual and sync projections, audio patches."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvSwiGLU, SwiGLU
from .ops import CastOps


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of `t` `[B]`, ordered [cos, sin] as the released model expects."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat((args.cos(), args.sin()), dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, frequency_dim: int = 256, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(
            operations.Linear(frequency_dim, hidden, device=device, dtype=dtype),
            nn.SiLU(),
            operations.Linear(hidden, hidden, device=device, dtype=dtype),
        )

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.frequency_dim).to(dtype))


class ConditionProjection(nn.Module):
    """Text tokens into the hidden width: Linear, SiLU, Linear."""

    def __init__(self, in_dim: int, hidden: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.linear_1 = operations.Linear(in_dim, hidden, device=device, dtype=dtype)
        self.linear_2 = operations.Linear(hidden, hidden, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class AudioEmbedder(nn.Module):
    """Latent frames `[B, C, L]` to tokens `[B, L, H]` (patch size 1, a 1x1 conv)."""

    def __init__(self, latent_dim: int, hidden: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.proj = operations.Conv1d(latent_dim, hidden, 1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).transpose(1, 2)


def sync_projection(in_dim: int, hidden: int, mlp_hidden: int, operations=CastOps, device=None, dtype=None):
    """Synchformer tokens into the hidden width: Linear, SiLU, kernel-1 SwiGLU (released `sync_in` keys)."""
    return nn.Sequential(
        operations.Linear(in_dim, hidden, device=device, dtype=dtype),
        nn.SiLU(),
        ConvSwiGLU(hidden, mlp_hidden, kernel_size=1, operations=operations, device=device, dtype=dtype),
    )


def visual_projection(in_dim: int, hidden: int, operations=CastOps, device=None, dtype=None) -> SwiGLU:
    return SwiGLU(in_dim, hidden, hidden, operations=operations, device=device, dtype=dtype)
