"""MotionFormer: the visual feature extractor of Synchformer (ViT-B/16 with divided space-time attention).

One 16-frame segment (values in [-1, 1]) becomes 8 x 14 x 14 tubelet tokens plus a CLS token. Every block
attends over time first (each patch position against its own 8 time steps), then over space (each time
step against its own 196 patches), then runs its MLP; the CLS token attends to every token in both
steps and is the extra key/value of every group. Finally `spatial_attn_agg` pools each time step's 196
tokens to one, so a segment gives 8 tokens.

Numerics of the release (they are part of the checkpoint contract): LayerNorm eps 1e-6 everywhere,
exact (erf) GELU, attention scaled by 1/sqrt(head_dim). The aggregation layer is a pre-norm
`nn.TransformerEncoderLayer` (norm_first, eps 1e-6, GELU) whose CLS output is the pooled token.

`ClsPooling` is shared with the audio side (`synchformer_audio.py`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import CastOps, cast_to

VISUAL_NORM_EPS = 1e-6


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[..., L, heads * d] -> [..., heads, L, d]"""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[..., heads, L, d] -> [..., L, heads * d]"""
    return x.transpose(-3, -2).flatten(-2)


class _InProjAttention(nn.Module):
    """Parameters laid out as `nn.MultiheadAttention` (packed `in_proj_weight`), computed with SDPA."""

    def __init__(self, dim: int, heads: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.randn(3 * dim, dim, device=device, dtype=dtype) / dim**0.5)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim, device=device, dtype=dtype))
        self.out_proj = operations.Linear(dim, dim, device=device, dtype=dtype)

    def attend_first(self, x: torch.Tensor) -> torch.Tensor:
        """Attention output of the first token only, against the whole sequence: [M, L, D] -> [M, 1, D]."""
        dim = x.shape[-1]
        weight, bias = cast_to(self.in_proj_weight, x), cast_to(self.in_proj_bias, x)
        query = F.linear(x[:, :1], weight[:dim], bias[:dim])
        key, value = F.linear(x, weight[dim:], bias[dim:]).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(*(split_heads(t, self.heads) for t in (query, key, value)))
        return self.out_proj(merge_heads(out))


class ClsPooling(nn.Module):
    """A pre-norm transformer encoder layer over `[cls, tokens]` that returns the CLS output.

    Keys match the release's `nn.TransformerEncoderLayer` subclass (`cls_token`, `self_attn.*`,
    `linear1/2`, `norm1/2`). Only the CLS output is used, and every other row of the layer is
    independent of it after the attention, so only the CLS row is computed: the same numbers for
    1/(L+1) of the work.
    """

    def __init__(self, dim: int, heads: int, mlp_hidden: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim, device=device, dtype=dtype))
        self.self_attn = _InProjAttention(dim, heads, operations, device, dtype)
        self.linear1 = operations.Linear(dim, mlp_hidden, device=device, dtype=dtype)
        self.linear2 = operations.Linear(mlp_hidden, dim, device=device, dtype=dtype)
        self.norm1 = operations.LayerNorm(dim, eps=VISUAL_NORM_EPS, device=device, dtype=dtype)
        self.norm2 = operations.LayerNorm(dim, eps=VISUAL_NORM_EPS, device=device, dtype=dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """[M, L, D] -> [M, D]"""
        cls = cast_to(self.cls_token, tokens).expand(tokens.shape[0], -1, -1)
        x = cls + self.self_attn.attend_first(self.norm1(torch.cat([cls, tokens], dim=1)))
        x = x + self.linear2(F.gelu(self.linear1(self.norm2(x))))
        return x[:, 0]


class DividedAttention(nn.Module):
    """Attention within groups of tokens (one time axis or one frame), plus a global CLS token.

    Tokens are laid out `[cls, (frame, patch)...]`. The CLS query attends to all tokens; patch
    queries attend to the CLS key/value plus the tokens of their group: the same patch across frames
    (`axis="time"`) or the same frame across patches (`axis="space"`).
    """

    def __init__(self, dim: int, heads: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        self.qkv = operations.Linear(dim, 3 * dim, device=device, dtype=dtype)
        self.proj = operations.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, frames: int, axis: str) -> torch.Tensor:
        batch, length, dim = x.shape
        patches = (length - 1) // frames
        # [3, N, H, L, d]
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)

        def grouped(t: torch.Tensor) -> torch.Tensor:  # [N, H, 1 + F*P, d] -> [N, H, groups, size, d]
            t = t[:, :, 1:].unflatten(2, (frames, patches))
            return t.transpose(2, 3) if axis == "time" else t

        q_g, k_g, v_g = grouped(q), grouped(k), grouped(v)
        groups = q_g.shape[2]
        k_g = torch.cat([k[:, :, None, :1].expand(-1, -1, groups, -1, -1), k_g], dim=3)
        v_g = torch.cat([v[:, :, None, :1].expand(-1, -1, groups, -1, -1), v_g], dim=3)
        out = F.scaled_dot_product_attention(q_g.flatten(1, 2), k_g.flatten(1, 2), v_g.flatten(1, 2))
        out = out.unflatten(1, (self.heads, groups))
        if axis == "time":
            out = out.transpose(2, 3)
        out = torch.cat([cls_out, out.flatten(2, 3)], dim=2)  # [N, H, L, d]
        return self.proj(merge_heads(out))


class GeluMlp(nn.Module):
    def __init__(self, dim: int, hidden: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.fc1 = operations.Linear(dim, hidden, device=device, dtype=dtype)
        self.fc2 = operations.Linear(hidden, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DividedSpaceTimeBlock(nn.Module):
    """Time attention (`norm3`, `timeattn`), then space attention (`norm1`, `attn`), then MLP (`norm2`)."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        norm = lambda: operations.LayerNorm(dim, eps=VISUAL_NORM_EPS, device=device, dtype=dtype)  # noqa: E731
        self.norm1 = norm()
        self.attn = DividedAttention(dim, heads, operations, device, dtype)
        self.timeattn = DividedAttention(dim, heads, operations, device, dtype)
        self.norm2 = norm()
        self.mlp = GeluMlp(dim, mlp_hidden, operations, device, dtype)
        self.norm3 = norm()

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x), frames, "time")
        x = x + self.attn(self.norm1(x), frames, "space")
        return x + self.mlp(self.norm2(x))


class _PatchProjection(nn.Module):
    """Holds `proj` (the release's `patch_embed` / `patch_embed_3d` modules)."""

    def __init__(self, proj: nn.Module):
        super().__init__()
        self.proj = proj


class MotionFormer(nn.Module):
    """Segments `[N, frames, 3, H, W]` in [-1, 1] -> per-time-step features `[N, frames / tubelet, D]`."""

    def __init__(
        self,
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_hidden: int = 3072,
        image_size: int = 224,
        patch_size: int = 16,
        tubelet: int = 2,
        frames: int = 16,
        operations=CastOps,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.frames, self.tubelet, self.image_size = frames, tubelet, image_size
        grid = image_size // patch_size
        kw = dict(device=device, dtype=dtype)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim, **kw))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, grid * grid + 1, dim, **kw))
        self.temp_embed = nn.Parameter(0.02 * torch.randn(1, frames // tubelet, dim, **kw))
        # The 2-D patch embedding is never used (the 3-D one replaces it) but is part of the file.
        self.patch_embed = _PatchProjection(
            operations.Conv2d(3, dim, patch_size, stride=patch_size, **kw))
        self.patch_embed_3d = _PatchProjection(operations.Conv3d(
            3, dim, (tubelet, patch_size, patch_size), stride=(tubelet, patch_size, patch_size), **kw))
        self.blocks = nn.ModuleList(
            DividedSpaceTimeBlock(dim, heads, mlp_hidden, operations, device, dtype) for _ in range(depth))
        self.norm = operations.LayerNorm(dim, eps=VISUAL_NORM_EPS, **kw)
        self.spatial_attn_agg = ClsPooling(dim, heads, mlp_hidden, operations, device, dtype)

    def forward(self, segments: torch.Tensor) -> torch.Tensor:
        count, frames, channels, height, width = segments.shape
        if frames != self.frames or height != self.image_size or width != self.image_size or channels != 3:
            raise ValueError(
                f"MotionFormer expects segments [N, {self.frames}, 3, {self.image_size}, {self.image_size}], "
                f"got {list(segments.shape)}")
        patches = self.patch_embed_3d.proj(segments.transpose(1, 2))  # [N, D, t, h, w]
        steps = patches.shape[2]
        tokens = patches.flatten(3).permute(0, 2, 3, 1)  # [N, t, h*w, D]
        position = cast_to(self.pos_embed, tokens)
        # Same summation order as the release: (spatial + temporal) first, then added to the tokens.
        tokens = tokens + (position[:, None, 1:] + cast_to(self.temp_embed, tokens)[:, :, None])
        cls = (cast_to(self.cls_token, tokens) + position[:, :1]).expand(count, -1, -1)
        x = torch.cat([cls, tokens.flatten(1, 2)], dim=1)
        for block in self.blocks:
            x = block(x, steps)
        x = self.norm(x[:, 1:])  # the CLS token is not used past the blocks
        pooled = self.spatial_attn_agg(x.unflatten(1, (steps, -1)).flatten(0, 1))  # [N*t, D]
        return pooled.unflatten(0, (count, steps))
