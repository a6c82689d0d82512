"""The layers of open_clip's CLIP towers, with the release's parameter names.

Pre-norm residual blocks (`ln_1`, `attn`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`), LayerNorm eps 1e-5, attention
with q/k/v packed in `in_proj_weight` as `nn.MultiheadAttention` stores them, and QuickGELU
`x * sigmoid(1.702 x)` when the config asks for it (the release does, in both towers).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .clip_config import ClipConfig
from .motionformer import merge_heads, split_heads
from .ops import CastOps, cast_to

NORM_EPS = 1e-5


class PackedAttention(nn.Module):
    """`nn.MultiheadAttention` parameters (q, k, v rows packed in `in_proj_weight`), computed with SDPA."""

    def __init__(self, dim: int, heads: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.zeros(3 * dim, dim, device=device, dtype=dtype))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim, device=device, dtype=dtype))
        self.out_proj = operations.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        packed = F.linear(x, cast_to(self.in_proj_weight, x), cast_to(self.in_proj_bias, x))
        query, key, value = (split_heads(t, self.heads) for t in packed.chunk(3, dim=-1))
        return self.out_proj(merge_heads(F.scaled_dot_product_attention(query, key, value, is_causal=causal)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, quick_gelu: bool, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.quick_gelu = quick_gelu
        self.c_fc = operations.Linear(dim, hidden, device=device, dtype=dtype)
        self.c_proj = operations.Linear(hidden, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c_fc(x)
        return self.c_proj(x * torch.sigmoid(1.702 * x) if self.quick_gelu else F.gelu(x))


class ResidualBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, quick_gelu: bool, operations=CastOps,
                 device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.ln_1 = operations.LayerNorm(dim, eps=NORM_EPS, **kw)
        self.attn = PackedAttention(dim, heads, operations, **kw)
        self.ln_2 = operations.LayerNorm(dim, eps=NORM_EPS, **kw)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), quick_gelu, operations, **kw)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, mlp_ratio: float, quick_gelu: bool, operations=CastOps,
                 device=None, dtype=None):
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualBlock(dim, heads, mlp_ratio, quick_gelu, operations, device, dtype) for _ in range(layers))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, causal)
        return x


class TokenEmbedding(nn.Module):
    """`nn.Embedding`'s `weight`, without its random init (slow on the meta device, and pointless before loading)."""

    def __init__(self, vocab_size: int, width: int, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(vocab_size, width, device=device, dtype=dtype))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.weight)


class VisionTower(nn.Module):
    """open_clip's `VisionTransformer` (cls pooling): images `[N, 3, H, W]` -> `[N, embed_dim]` (not normalised)."""

    def __init__(self, config: ClipConfig, operations=CastOps, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        width, self.patch_size, self.grid = config.vision_width, config.patch_size, config.grid
        self.class_embedding = nn.Parameter(torch.zeros(width, **kw))
        self.positional_embedding = nn.Parameter(torch.zeros(self.grid**2 + 1, width, **kw))
        self.proj = nn.Parameter(torch.zeros(width, config.embed_dim, **kw))
        self.conv1 = operations.Conv2d(3, width, self.patch_size, stride=self.patch_size, bias=False, **kw)
        self.ln_pre = operations.LayerNorm(width, eps=NORM_EPS, **kw)
        self.transformer = Transformer(width, config.vision_layers, config.vision_heads, config.vision_mlp_ratio,
                                       config.quick_gelu, operations, **kw)
        self.ln_post = operations.LayerNorm(width, eps=NORM_EPS, **kw)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = self.conv1(images).flatten(2).transpose(1, 2)  # [N, grid^2, width], rows then columns
        cls = cast_to(self.class_embedding, patches).expand(patches.shape[0], 1, -1)
        x = torch.cat([cls, patches], dim=1) + cast_to(self.positional_embedding, patches)
        x = self.transformer(self.ln_pre(x))
        cls_out = self.ln_post(x[:, 0])  # a per-token norm: the cls row alone is the same as all rows then pick
        return cls_out @ cast_to(self.proj, cls_out)
