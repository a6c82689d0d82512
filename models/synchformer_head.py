"""Synchformer's offset head: which of 21 audio-visual offsets (-2..2 s, 0.2 s apart) a window of
14 segments of both streams shows.

`vproj`/`aproj` (in `synchformer.py`) project the features; this transformer takes
`[OFF, visual (14 x 8 tokens)..., MOD, audio (14 x 6 tokens)...]` with a learned position embedding of
exactly 198 rows, pre-norm blocks (LayerNorm eps 1e-5, exact GELU, 8 heads of 96) and classifies the
OFF token. Class k is the offset `OFFSET_GRID_SECONDS[k]` of the release's training crops: the audio
window starts that many seconds after the video window, i.e. the sound is EARLY by it (a late sound
gives a negative class).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .motionformer import merge_heads, split_heads
from .ops import CastOps, cast_to

if TYPE_CHECKING:
    from .synchformer import SynchformerConfig

# Class i of the offset head (numpy's linspace, as the release: its middle class is exactly 0).
OFFSET_GRID_SECONDS = torch.from_numpy(np.linspace(-2.0, 2.0, 21)).float()


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        self.key = operations.Linear(dim, dim, device=device, dtype=dtype)
        self.query = operations.Linear(dim, dim, device=device, dtype=dtype)
        self.value = operations.Linear(dim, dim, device=device, dtype=dtype)
        self.proj = operations.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(proj(x), self.heads) for proj in (self.query, self.key, self.value))
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))


class _Block(nn.Module):
    """Pre-norm block (LayerNorm eps 1e-5, exact GELU); `mlp.0` / `mlp.2` as in the release."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.ln1 = operations.LayerNorm(dim, device=device, dtype=dtype)
        self.ln2 = operations.LayerNorm(dim, device=device, dtype=dtype)
        self.attn = _SelfAttention(dim, heads, operations, device, dtype)
        self.mlp = nn.Sequential(operations.Linear(dim, mlp_hidden, device=device, dtype=dtype), nn.GELU(),
                                 operations.Linear(mlp_hidden, dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class OffsetTransformer(nn.Module):
    """`[OFF, visual..., MOD, audio...]` + learned positions -> blocks -> logits of the OFF token."""

    def __init__(self, config: "SynchformerConfig", operations=CastOps, device=None, dtype=None):
        super().__init__()
        dim, kw = config.dim, dict(device=device, dtype=dtype)
        self.OFF_tok = nn.Parameter(0.02 * torch.randn(1, 1, dim, **kw))
        self.MOD_tok = nn.Parameter(0.02 * torch.randn(1, 1, dim, **kw))
        self.vis_in_lnorm = operations.LayerNorm(dim, **kw)
        self.aud_in_lnorm = operations.LayerNorm(dim, **kw)
        self.pos_emb_cfg = nn.Module()
        self.pos_emb_cfg.pos_emb = nn.Parameter(0.02 * torch.randn(1, config.sync_positions, dim, **kw))
        self.blocks = nn.Sequential(*(
            _Block(dim, dim // config.sync_head_dim, config.mlp_hidden, operations, device, dtype)
            for _ in range(config.sync_depth)))
        self.ln_f = operations.LayerNorm(dim, **kw)
        self.off_head = operations.Linear(dim, config.offset_classes, **kw)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        batch = visual.shape[0]
        special = lambda token: cast_to(token, visual).expand(batch, -1, -1)  # noqa: E731
        x = torch.cat([special(self.OFF_tok), self.vis_in_lnorm(visual),
                       special(self.MOD_tok), self.aud_in_lnorm(audio)], dim=1)
        positions = self.pos_emb_cfg.pos_emb
        if x.shape[1] != positions.shape[1]:
            raise ValueError(f"the offset head takes exactly {positions.shape[1] - 2} visual + audio tokens, "
                             f"got {visual.shape[1]} + {audio.shape[1]}")
        x = self.blocks(x + cast_to(positions, x))
        return self.off_head(self.ln_f(x[:, 0]))


def offset_seconds(logits: torch.Tensor) -> torch.Tensor:
    """The release's offset class value, in seconds, of each row of offset logits (positive: the sound
    is early). DeSync is its absolute value."""
    return OFFSET_GRID_SECONDS.to(logits.device)[logits.argmax(dim=-1)]
