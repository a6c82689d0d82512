"""MMAudio's layers: input projections, timestep embedder, joint and fused blocks, final layer.

Attribute names are the released checkpoint's key names (`attn.qkv`, `adaLN_modulation.1`, `ffn.w1`,
nn.Sequential indices in the input projections). Tokens are channel-last `[B, L, H]` throughout;
the release's channel-last Conv1d layers convolve along L.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import TimestepEmbedder
from .layers import ConvSwiGLU, RMSNorm, SwiGLU, apply_rope, attention, layer_norm
from .mmaudio_kernels import adaln_with_offset, gather_rows, inference, normalize_and_rotate_into, swiglu, token_conv
from .ops import CastOps

NORM_EPS = 1e-5  # the release's nn.LayerNorm default


def token_conv_layer(operations, in_dim: int, out_dim: int, kernel_size: int, bias: bool = True, **kw) -> nn.Module:
    """A 'same'-padded Conv1d applied to channel-last tokens (via `conv_tokens`)."""
    layer = getattr(operations, "TokenConv1d", operations.Conv1d)
    return layer(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=bias, **kw)


class TokenSequential(nn.Sequential):
    """nn.Sequential over channel-last tokens `[B, L, C]`: its Conv1d layers convolve along L."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, nn.Conv1d):
                x = token_conv(layer, x)
            elif isinstance(layer, (ConvSwiGLU, SwiGLU)):
                x = swiglu(layer, x)
            else:
                x = layer(x)
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
        "audio_input_proj": TokenSequential(token_conv_layer(operations, c.latent_dim, c.hidden, 7, **kw), act(),
                                            conv_swiglu(7)),
        "clip_input_proj": TokenSequential(operations.Linear(c.clip_dim, c.hidden, **kw), *linear_act,
                                           conv_swiglu(3)),
        "sync_input_proj": TokenSequential(token_conv_layer(operations, c.sync_dim, c.hidden, 7, **kw), act(),
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

    def project_into(self, x: torch.Tensor, rope: torch.Tensor | None, q_out: torch.Tensor | None,
                     k_out: torch.Tensor, v_out: torch.Tensor) -> None:
        """`forward`, written into slices of the joint attention's buffers (q only where wanted)."""
        q, k, v = self.qkv(x).unflatten(-1, (self.heads, -1, 3)).unbind(-1)
        v_out.copy_(v)
        for projected, norm, out in ((q, self.q_norm, q_out), (k, self.k_norm, k_out)):
            if out is None:
                continue
            normalize_and_rotate_into(projected, norm, rope, out)


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
            self.linear1 = token_conv_layer(operations, hidden, hidden, kernel_size, **kw)
            self.ffn = ConvSwiGLU(hidden, mlp_hidden, kernel_size, operations=operations, **kw)

    def modulation(self, cond: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(shift, 1 + scale[, gate, shift, 1 + scale, gate]) from `cond` `[B, 1, H]`, or from
        condition rows `[U, H]` gathered per token by `rows` `[B, L]` (a gather commutes with the
        row-wise SiLU and Linear, so each distinct row is modulated once)."""
        parts = 2 if self.pre_only else 6
        # The 1 of every (1 + scale) is added to the Linear's bias, once, not to every token.
        ones = (torch.arange(parts, device=cond.device) % 3 == 1).repeat_interleave(cond.shape[-1])
        out = adaln_with_offset(self.adaLN_modulation, cond, ones)
        if rows is not None:
            out = gather_rows(out, rows)
        return out.chunk(parts, dim=-1)

    def pre_attention(self, x: torch.Tensor, mods, rope: torch.Tensor | None, buffers=None):
        """q, k, v of the modulated tokens; with `buffers` (q, k, v slices) written into them."""
        normed = layer_norm(x, NORM_EPS)
        modulated = torch.addcmul(mods[0], normed, mods[1], out=normed if inference() else None)
        if buffers is None:
            return self.attn(modulated, rope)
        self.attn.project_into(modulated, rope, *buffers)

    def post_attention(self, x: torch.Tensor, attended: torch.Tensor, mods) -> torch.Tensor:
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = torch.addcmul(x, token_conv(self.linear1, attended, conv=self.kernel_size > 1), gate_msa)
        normed = layer_norm(x, NORM_EPS)
        modulated = torch.addcmul(shift_mlp, normed, scale_mlp, out=normed if inference() else None)
        if inference():
            return x.addcmul_(swiglu(self.ffn, modulated), gate_mlp)
        return torch.addcmul(x, self.ffn(modulated), gate_mlp)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, rope: torch.Tensor,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """A fused (latent-only) block: `cond` rows gathered per latent by `rows`."""
        mods = self.modulation(cond, rows)
        if inference():
            q, k, v = (x.new_empty(*x.shape[:2], self.attn.heads, x.shape[-1] // self.attn.heads) for _ in range(3))
            self.pre_attention(x, mods, rope, (q, k, v))
            return self.post_attention(x, sdpa(q, k, v), mods)
        q, k, v = self.pre_attention(x, mods, rope)
        # v has a channel stride of 3 here; fused attention kernels need unit stride.
        return self.post_attention(x, attention(q, k, v.contiguous()), mods)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention of `[B, L, heads, D]` tensors, returned `[B, L, heads, D]` (a view)."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


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

    def forward(self, latent, clip, text, global_c, extended, rows, latent_rope, clip_rope):
        """`global_c` `[B, 1, H]`; `extended` `[U, H]` condition rows, `rows` `[B, La]` the row of
        each latent. Returns (latent, clip, text); clip and text are None after a pre-only block."""
        streams = (self.latent_block, self.clip_block, self.text_block)
        mods = (self.latent_block.modulation(extended, rows), self.clip_block.modulation(global_c),
                self.text_block.modulation(global_c))
        tokens, ropes = (latent, clip, text), (latent_rope, clip_rope, None)
        if inference():
            outs = self._attend_into_buffers(streams, tokens, mods, ropes)
        else:
            outs = self._attend(streams, tokens, mods, ropes)
        if self.pre_only:  # the clip and text streams end here: only the latent queries mattered
            return self.latent_block.post_attention(latent, outs[0], mods[0]), None, None
        return tuple(block.post_attention(x, out, m) for block, x, out, m in zip(streams, tokens, outs, mods))

    def _attend(self, streams, tokens, mods, ropes):
        (ql, kl, vl), (qc, kc, vc), (qt, kt, vt) = (block.pre_attention(x, m, r)
                                                    for block, x, m, r in zip(streams, tokens, mods, ropes))
        k, v = torch.cat((kl, kc, kt), 1), torch.cat((vl, vc, vt), 1)
        if self.pre_only:
            return (attention(ql, k, v),)
        return attention(torch.cat((ql, qc, qt), 1), k, v, [x.shape[1] for x in tokens])

    def _attend_into_buffers(self, streams, tokens, mods, ropes):
        """Each stream writes its q, k, v straight into the joint tensors (no concatenation)."""
        latent = tokens[0]
        heads = self.latent_block.attn.heads
        lengths = [x.shape[1] for x in tokens]
        shape = (latent.shape[0], sum(lengths), heads, latent.shape[-1] // heads)
        k, v = latent.new_empty(shape), latent.new_empty(shape)
        q = latent.new_empty(shape[0], lengths[0] if self.pre_only else shape[1], *shape[2:])
        start = 0
        for i, (block, x, m, r) in enumerate(zip(streams, tokens, mods, ropes)):
            span = slice(start, start + lengths[i])
            wants_q = i == 0 or not self.pre_only
            block.pre_attention(x, m, r, (q[:, span] if wants_q else None, k[:, span], v[:, span]))
            start += lengths[i]
        attended = sdpa(q, k, v)
        return (attended,) if self.pre_only else attended.split(lengths, dim=1)


class FinalLayer(nn.Module):
    """adaLN (shift, scale) from the global condition, LayerNorm, kernel-7 conv to the latent width.

    The release modulates with `global_c` where `extended_c` was intended (its issue #55); the
    checkpoints were trained that way, so it is kept.
    """

    def __init__(self, hidden: int, out_dim: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.adaLN_modulation = adaln(hidden, 2, operations, **kw)
        self.conv = token_conv_layer(operations, hidden, out_dim, 7, **kw)

    def forward(self, latent: torch.Tensor, global_c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(global_c).chunk(2, dim=-1)
        normed = layer_norm(latent, NORM_EPS)
        return token_conv(self.conv, torch.addcmul(shift, normed, 1 + scale, out=normed if inference() else None))
