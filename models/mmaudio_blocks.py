"""MMAudio's layers: input projections, timestep embedder, joint and fused blocks, final layer.

Attribute names are the released checkpoint's key names (`attn.qkv`, `adaLN_modulation.1`, `ffn.w1`,
nn.Sequential indices in the input projections). Tokens are channel-last `[B, L, H]` throughout;
the release's channel-last Conv1d layers convolve along L.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from .embeddings import TimestepEmbedder
from .layers import ConvSwiGLU, RMSNorm, SwiGLU, apply_rope, attention, conv_tokens, layer_norm, modulate
from .ops import CastOps

NORM_EPS = 1e-5  # the release's nn.LayerNorm default


def token_conv(operations, in_dim: int, out_dim: int, kernel_size: int, bias: bool = True, **kw) -> nn.Module:
    """A 'same'-padded Conv1d applied to channel-last tokens (via `conv_tokens`)."""
    layer = getattr(operations, "TokenConv1d", operations.Conv1d)
    return layer(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=bias, **kw)


class TokenSequential(nn.Sequential):
    """nn.Sequential over channel-last tokens `[B, L, C]`: its Conv1d layers convolve along L."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = conv_tokens(layer, x) if isinstance(layer, nn.Conv1d) else layer(x)
        return x


def input_projections(config, operations=CastOps, device=None, dtype=None) -> dict[str, TokenSequential]:
    """`audio_input_proj`, `clip_input_proj`, `sync_input_proj`, `text_input_proj`.

    v1 uses SELU after the audio/sync convolutions and nothing after the clip/text Linears; v2 uses
    SiLU in all four places (which shifts the clip/text SwiGLU from index 1 to 2).
    """
    c, kw = config, dict(device=device, dtype=dtype)
    act = nn.SiLU if c.v2 else nn.SELU
    linear_act = [nn.SiLU()] if c.v2 else []
    conv_swiglu = lambda k: ConvSwiGLU(c.hidden, c.mlp_hidden, k, operations=operations, **kw)  # noqa: E731
    return {
        "audio_input_proj": TokenSequential(token_conv(operations, c.latent_dim, c.hidden, 7, **kw), act(),
                                            conv_swiglu(7)),
        "clip_input_proj": TokenSequential(operations.Linear(c.clip_dim, c.hidden, **kw), *linear_act,
                                           conv_swiglu(3)),
        "sync_input_proj": TokenSequential(token_conv(operations, c.sync_dim, c.hidden, 7, **kw), act(),
                                           conv_swiglu(3)),
        "text_input_proj": TokenSequential(operations.Linear(c.text_dim, c.hidden, **kw), *linear_act,
                                           SwiGLU(c.hidden, c.mlp_hidden, c.hidden, operations=operations, **kw)),
    }


@functools.lru_cache(maxsize=8)
def _time_frequencies(dim: int, max_period: float) -> torch.Tensor:
    # The release's order of operations, in fp32 on the CPU: v2 reaches 1e4 rad at t = 1, where one
    # ulp of a frequency moves the angle by 1e-3.
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    return (10000 / max_period) * freqs


def timestep_features(t: torch.Tensor, dim: int, max_period: float) -> torch.Tensor:
    """`[cos(t f), sin(t f)]` `[B, dim]` fp32 with `f_i = (1e4 / max_period) / 1e4^(2i / dim)`."""
    args = t.float()[:, None] * _time_frequencies(dim, max_period).to(t.device)[None]
    return torch.cat((args.cos(), args.sin()), dim=-1)


class MMAudioTimestepEmbedder(TimestepEmbedder):
    """Flow time t in [0, 1] (not scaled to 1000) -> `[B, hidden]`. v1: 256 features, max_period
    1e4; v2: `hidden` features, max_period 1 (frequencies up to 1e4)."""

    def __init__(self, hidden: int, frequency_dim: int, max_period: float, operations=CastOps, device=None,
                 dtype=None):
        super().__init__(hidden, frequency_dim, operations=operations, device=device, dtype=dtype)
        self.max_period = max_period

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.frequency_dim, self.max_period).to(dtype))


def adaln(hidden: int, factor: int, operations=CastOps, **kw) -> nn.Sequential:
    return nn.Sequential(nn.SiLU(), operations.Linear(hidden, factor * hidden, **kw))


class SelfAttentionProjection(nn.Module):
    """q, k, v `[B, L, heads, D]`: one Linear whose channels interleave q, k, v per head and
    channel (`(head * D + d) * 3 + j`), RMS norms on q and k, then rotary embeddings if given."""

    def __init__(self, hidden: int, heads: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        kw = dict(device=device, dtype=dtype)
        self.qkv = operations.Linear(hidden, 3 * hidden, **kw)
        # torch.nn.RMSNorm with its default eps (the input dtype's machine epsilon), as released.
        self.q_norm = RMSNorm(hidden // heads, eps=None, fp32=False, **kw)
        self.k_norm = RMSNorm(hidden // heads, eps=None, fp32=False, **kw)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None):
        q, k, v = self.qkv(x).unflatten(-1, (self.heads, -1, 3)).unbind(-1)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return q, k, v


class StreamBlock(nn.Module):
    """One stream of a block (the release's `MMDitSingleBlock`): adaLN-modulated attention and
    SwiGLU, with kernel-3 convolutions (latent, clip) or Linears (text, kernel 1).

    A `pre_only` stream (clip and text in the last joint block) only feeds keys and values to the
    joint attention: its adaLN gives shift and scale only, and it has no output layers.
    """

    def __init__(self, hidden: int, heads: int, mlp_hidden: int, kernel_size: int = 3, pre_only: bool = False,
                 operations=CastOps, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.kernel_size, self.pre_only = kernel_size, pre_only
        self.attn = SelfAttentionProjection(hidden, heads, operations, **kw)
        self.adaLN_modulation = adaln(hidden, 2 if pre_only else 6, operations, **kw)
        if pre_only:
            return
        if kernel_size == 1:
            self.linear1 = operations.Linear(hidden, hidden, **kw)
            self.ffn = SwiGLU(hidden, mlp_hidden, hidden, operations=operations, **kw)
        else:
            self.linear1 = token_conv(operations, hidden, hidden, kernel_size, **kw)
            self.ffn = ConvSwiGLU(hidden, mlp_hidden, kernel_size, operations=operations, **kw)

    def modulation(self, cond: torch.Tensor, index: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(shift, scale[, gate, shift, scale, gate]) from `cond` `[B, 1 or L, H]`; `index` gathers
        per-token rows afterwards (a gather commutes with the row-wise SiLU and Linear)."""
        out = self.adaLN_modulation(cond)
        if index is not None:
            out = out.index_select(1, index)
        return out.chunk(2 if self.pre_only else 6, dim=-1)

    def pre_attention(self, x: torch.Tensor, mods, rope: torch.Tensor | None):
        return self.attn(modulate(layer_norm(x, NORM_EPS), mods[0], mods[1]), rope)

    def post_attention(self, x: torch.Tensor, attended: torch.Tensor, mods) -> torch.Tensor:
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        projected = self.linear1(attended) if self.kernel_size == 1 else conv_tokens(self.linear1, attended)
        x = x + projected * gate_msa
        return x + self.ffn(modulate(layer_norm(x, NORM_EPS), shift_mlp, scale_mlp)) * gate_mlp

    def forward(self, x: torch.Tensor, cond: torch.Tensor, rope: torch.Tensor,
                index: torch.Tensor | None = None) -> torch.Tensor:
        """A fused (latent-only) block: `cond` per sync token, gathered per latent by `index`."""
        mods = self.modulation(cond, index)
        q, k, v = self.pre_attention(x, mods, rope)
        # v has a channel stride of 3 here; fused attention kernels need unit stride.
        return self.post_attention(x, attention(q, k, v.contiguous()), mods)


class JointBlock(nn.Module):
    """Latent, clip and text streams attending jointly over [latent, clip, text] (no mask).

    The latent stream is modulated per token (timestep + global + sync), clip and text by the global
    condition; RoPE on latent and clip, none on text.
    """

    def __init__(self, hidden: int, heads: int, mlp_hidden: int, pre_only: bool = False, operations=CastOps,
                 device=None, dtype=None):
        super().__init__()
        kw = dict(operations=operations, device=device, dtype=dtype)
        self.pre_only = pre_only
        self.latent_block = StreamBlock(hidden, heads, mlp_hidden, 3, **kw)
        self.clip_block = StreamBlock(hidden, heads, mlp_hidden, 3, pre_only=pre_only, **kw)
        self.text_block = StreamBlock(hidden, heads, mlp_hidden, 1, pre_only=pre_only, **kw)

    def forward(self, latent, clip, text, global_c, extended, index, latent_rope, clip_rope):
        """`global_c` `[B, 1, H]`; `extended` `[B, Ls, H]` per sync token, `index` `[La]` its row for
        each latent. Returns (latent, clip, text); clip and text are None after a pre-only block."""
        latent_mods = self.latent_block.modulation(extended, index)
        clip_mods = self.clip_block.modulation(global_c)
        text_mods = self.text_block.modulation(global_c)
        ql, kl, vl = self.latent_block.pre_attention(latent, latent_mods, latent_rope)
        qc, kc, vc = self.clip_block.pre_attention(clip, clip_mods, clip_rope)
        qt, kt, vt = self.text_block.pre_attention(text, text_mods, None)
        k, v = torch.cat((kl, kc, kt), 1), torch.cat((vl, vc, vt), 1)
        if self.pre_only:  # the clip and text streams end here: only the latent queries matter
            return self.latent_block.post_attention(latent, attention(ql, k, v), latent_mods), None, None
        lengths = [latent.shape[1], clip.shape[1], text.shape[1]]
        out_l, out_c, out_t = attention(torch.cat((ql, qc, qt), 1), k, v, lengths)
        return (self.latent_block.post_attention(latent, out_l, latent_mods),
                self.clip_block.post_attention(clip, out_c, clip_mods),
                self.text_block.post_attention(text, out_t, text_mods))


class FinalLayer(nn.Module):
    """adaLN (shift, scale) from the global condition, LayerNorm, kernel-7 conv to the latent width.

    The release modulates with `global_c` where `extended_c` was intended (its issue #55); the
    checkpoints were trained that way, so it is kept.
    """

    def __init__(self, hidden: int, out_dim: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.adaLN_modulation = adaln(hidden, 2, operations, **kw)
        self.conv = token_conv(operations, hidden, out_dim, 7, **kw)

    def forward(self, latent: torch.Tensor, global_c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(global_c).chunk(2, dim=-1)
        return conv_tokens(self.conv, modulate(layer_norm(latent, NORM_EPS), shift, scale))
