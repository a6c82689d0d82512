"""Low-level layers of the MM-DiT: norms, modulation, feed-forwards, rotary embeddings, attention.

Numerics follow the released model exactly (they are part of the checkpoint contract): q/k RMS norms
computed in fp32, rotary embeddings that rotate adjacent pairs (x[2i], x[2i+1]) in fp32, SwiGLU
feed-forwards whose hidden width is rounded up to a multiple of 256.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import CastOps, TokenConv1d, cast_to


class RMSNorm(nn.Module):
    """RMS norm over the last dim, computed in fp32 and scaled in the input dtype."""

    def __init__(self, dim: int, eps: float | None = 1e-6, fp32: bool = True, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.fp32 = fp32
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fp32:  # torch.nn.RMSNorm semantics (default eps = dtype's machine epsilon)
            return F.rms_norm(x, (x.shape[-1],), cast_to(self.weight, x), self.eps)
        normed = F.rms_norm(x.float(), (x.shape[-1],), None, self.eps).type_as(x)
        return normed * cast_to(self.weight, x)


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without affine parameters (the DiT modulates instead)."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(shift, x, 1 + scale)


class Modulation(nn.Module):
    """adaLN: SiLU then one Linear producing `factor` (shift, scale, gate) vectors."""

    def __init__(self, hidden: int, factor: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.factor = factor
        self.linear = operations.Linear(hidden, factor * hidden, device=device, dtype=dtype)

    def forward(self, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.linear(F.silu(cond))
        if out.ndim == 2:  # one vector per sample: broadcast over tokens
            out = out.unsqueeze(1)
        return out.chunk(self.factor, dim=-1)


class GeluMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.fc1 = operations.Linear(dim, hidden, device=device, dtype=dtype)
        self.fc2 = operations.Linear(hidden, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SwiGLU(nn.Module):
    """`w2(silu(w1 x) * w3 x)` without biases (the visual projection)."""

    def __init__(self, dim: int, hidden: int, out: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.w1 = operations.Linear(dim, hidden, bias=False, device=device, dtype=dtype)
        self.w2 = operations.Linear(hidden, out, bias=False, device=device, dtype=dtype)
        self.w3 = operations.Linear(dim, hidden, bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def conv_swiglu_width(dim: int, mlp_ratio: float = 4.0, multiple_of: int = 256) -> int:
    hidden = int(2 * int(dim * mlp_ratio) / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


def conv_tokens(conv: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Apply a Conv1d (any operations' Conv1d) to channel-last tokens `[B, L, C]`."""
    if isinstance(conv, TokenConv1d):
        return conv.forward_tokens(tokens)
    return conv(tokens.transpose(1, 2)).transpose(1, 2)


class ConvSwiGLU(nn.Module):
    """SwiGLU whose three projections are Conv1d over the token axis; tokens come channel-last."""

    def __init__(self, dim: int, hidden: int, kernel_size: int, operations=CastOps, device=None, dtype=None):
        super().__init__()
        pad = kernel_size // 2
        conv = dict(kernel_size=kernel_size, padding=pad, bias=False, device=device, dtype=dtype)
        layer = getattr(operations, "TokenConv1d", operations.Conv1d)
        self.w1 = layer(dim, hidden, **conv)
        self.w2 = layer(hidden, dim, **conv)
        self.w3 = layer(dim, hidden, **conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if all(isinstance(w, TokenConv1d) and w.is_matrix_product for w in (self.w1, self.w3)):
            columns = self.w1.columns(x)  # w1 and w3 see the same receptive fields
            hidden = F.silu(self.w1.from_columns(columns)) * self.w3.from_columns(columns)
        else:
            hidden = F.silu(conv_tokens(self.w1, x)) * conv_tokens(self.w3, x)
        return conv_tokens(self.w2, hidden)


# ---------------------------------------------------------------------------------------------
# Rotary position embedding (1-D, rotating adjacent pairs)
# ---------------------------------------------------------------------------------------------


def rope_frequencies(head_dim: int, theta: float = 1e4) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))


def rope_positions(length: int) -> torch.Tensor:
    """Positions 0..length-1 in fp32, generated the way the reference does (linspace)."""
    return torch.linspace(0, length, length + 1, dtype=torch.float32)[:length]


def rope_table(positions: torch.Tensor, head_dim: int, theta: float = 1e4, scaling: float = 1.0) -> torch.Tensor:
    """cos/sin of every (position, frequency) pair: `[2, L, head_dim/2]` fp32; `scaling` multiplies
    every frequency (MMAudio stretches its CLIP positions onto the latent time axis this way)."""
    angles = torch.outer(positions.float(), (rope_frequencies(head_dim, theta) * scaling).to(positions.device))
    return torch.stack((angles.cos(), angles.sin()))


def apply_rope(x: torch.Tensor, table: torch.Tensor, heads_first: bool = False) -> torch.Tensor:
    """Rotate `x` `[B, L, H, D]` (or `[B, H, L, D]` with heads_first) by a `[2, L, D/2]` table."""
    cos, sin = table[0], table[1]
    if not heads_first:  # broadcast over the head axis that follows L
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1)
    return rotated.flatten(-2).type_as(x)


def nearest_exact_index(src_len: int, dst_len: int, device=None) -> torch.Tensor:
    """Indices that `F.interpolate(mode="nearest-exact")` picks when resizing src_len -> dst_len."""
    if src_len == dst_len:
        return torch.arange(dst_len, device=device)
    source = torch.arange(src_len, dtype=torch.float32, device=device).view(1, 1, src_len)
    return F.interpolate(source, size=dst_len, mode="nearest-exact").view(dst_len).long()


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: list[int] | None = None):
    """Scaled dot-product attention on `[B, L, H, D]` tensors, returning `[B, L, H*D]`.

    With `split` (query lengths per stream) it returns one contiguous `[B, L_i, H*D]` tensor per
    stream: a slice along L of a batched tensor is not a matrix view, and a Linear on it falls back
    to a batched matmul with an expanded weight, at half the speed on CPUs.
    """
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    if split is None:
        return out.transpose(1, 2).flatten(2)
    # The kernels may return [B, L, H, D] memory behind the [B, H, L, D] view, so copy explicitly.
    return tuple(part.transpose(1, 2).flatten(2).contiguous() for part in out.split(split, dim=2))


def map_chunks(fn, x: torch.Tensor, chunk: int, context: int, scale: int = 1) -> torch.Tensor:
    """`fn(x)` for a local `fn` (output length = input length * `scale`), run on pieces of at most
    `chunk` frames along the last axis so that memory follows the chunk, not the clip.

    Each call sees `context` extra frames on each side (cut at the clip's ends, where the one-shot
    call's padding applies anyway) and only its centre is kept, so the result equals `fn(x)` whenever
    `context` covers `fn`'s reach.
    """
    length = x.shape[-1]
    bounds = [*range(0, length, chunk), length]
    out = None
    for start, end in zip(bounds[:-1], bounds[1:]):  # the chunks, not the frames
        lo, hi = max(0, start - context), min(length, end + context)
        piece = fn(x[..., lo:hi])
        if out is None:
            out = piece.new_empty(*piece.shape[:-1], length * scale)
        out[..., start * scale:end * scale] = piece[..., (start - lo) * scale:(end - lo) * scale]
    return out
