"""Inference kernels of MMAudio's network: the layers' functions with less work and fewer temporaries.

Used only when autograd is off (`inference()`): training and LoRA (peft wraps our layers) keep the
plain modules. Each kernel computes the function of the module it stands for, to rounding:

- Channel-last 'same' convolutions as matrix products (im2col: the K shifted copies of the input
  side by side times the `[out, in * K]` view of the weight); a ConvSwiGLU's `w1` and `w3` share
  their columns. A convolution whose input is at least as wide as its output (the FFN's `w2`, the
  final layer) runs one GEMM per tap into a shifted accumulator instead: columns K times a wide
  input cost more to copy than the shifted adds of a narrower output (less memory, a few % faster).
- SwiGLU: SiLU and the gating product in place on the first projection's output.
- q / k RMS norms and rotary embeddings in place in the joint attention's buffers (one complex
  product per rotation, no concatenation afterwards).
- adaLN: the 1 of every (1 + scale) folded into the Linear's bias; the per-token modulation of the
  latents computed once per distinct sync token of each sample (`condition_rows`).
- CFG's branches evaluate the same latents: their input projection runs once (`distinct_batch`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvSwiGLU, RMSNorm, apply_rope, conv_tokens
from .ops import CastWeight, cast_to


def inference() -> bool:
    return not torch.is_grad_enabled()


def _plain_conv(layer: nn.Module) -> bool:
    """One of our cast-on-use Conv1d layers with 'same' padding, stride 1 (not wrapped by peft)."""
    if not (isinstance(layer, CastWeight) and isinstance(layer, nn.Conv1d)):
        return False
    k = layer.kernel_size[0]
    return (k % 2 == 1 and layer.padding == (k // 2,) and layer.stride == (1,) and layer.dilation == (1,)
            and layer.groups == 1)


def columns(x: torch.Tensor, k: int) -> torch.Tensor:
    """`[B, L, *C]` (any strides) -> `[B, L, C * k]`: the k 'same'-padded shifted copies of each
    position, channel-major like a Conv1d weight `[out, in, k]` flattened."""
    batch, length = x.shape[:2]
    cols = x.new_empty(*x.shape, k)
    pad = k // 2
    for tap in range(k):  # the kernel's taps, not the tokens
        shift = tap - pad
        lo, hi = max(0, -shift), min(length, length - shift)
        target = cols[..., tap]
        if hi > lo:
            target[:, lo:hi].copy_(x[:, lo + shift:hi + shift])
        target[:, :lo].zero_()
        target[:, hi:].zero_()
    return cols.view(batch, length, -1)


def _per_tap(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """'Same' convolution of contiguous channel-last `x` as one GEMM per tap, shifted into place."""
    batch, length, _ = x.shape
    k = weight.shape[-1]
    pad = k // 2
    out = F.linear(x, weight[..., pad], bias)
    for tap in range(k):  # the kernel's taps, not the tokens
        shift = tap - pad
        if tap == pad or abs(shift) >= length:
            continue
        tapped = F.linear(x, weight[..., tap])  # out[l] += w_tap x[l + shift]
        if shift > 0:
            out[:, :length - shift] += tapped[:, shift:]
        else:
            out[:, -shift:] += tapped[:, :length + shift]
    return out


def token_conv(layer: nn.Module, x: torch.Tensor, conv: bool = True) -> torch.Tensor:
    """`layer` applied to channel-last tokens `[B, L, C]`: a Conv1d convolving along L (`conv`; a
    wrapped one, as peft wraps, keeps its channel-first contract) or a Linear."""
    if not conv:
        return layer(x.flatten(2).contiguous())
    if not (inference() and _plain_conv(layer)):
        return conv_tokens(layer, x.flatten(2))
    weight, bias = layer.weight_for(x), cast_to(layer.bias, x)
    out_dim, in_dim, k = weight.shape
    if k == 1:
        return F.linear(x.flatten(2), weight[..., 0], bias)
    if in_dim < out_dim:
        return F.linear(columns(x, k), weight.flatten(1), bias)
    return _per_tap(x.flatten(2).contiguous(), weight, bias)  # a wide input: no K-times-wider columns


def swiglu(ffn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`w2(silu(w1 x) * w3 x)` of a SwiGLU (Linears) or ConvSwiGLU (Conv1d over the tokens)."""
    w1, w3 = ffn.w1, ffn.w3
    if not inference():
        return ffn(x)
    conv = isinstance(ffn, ConvSwiGLU)
    if conv and all(_plain_conv(w) for w in (w1, w3)) and w1.kernel_size[0] > 1 and w1.in_channels <= w1.out_channels:
        shared = columns(x, w1.kernel_size[0])  # w1 and w3 see the same receptive fields
        hidden = F.linear(shared, w1.weight_for(shared).flatten(1))
        gate = F.linear(shared, w3.weight_for(shared).flatten(1))
        del shared
    else:
        hidden, gate = token_conv(w1, x, conv), token_conv(w3, x, conv)
    hidden = F.silu(hidden, inplace=True).mul_(gate)
    del gate
    return token_conv(ffn.w2, hidden, conv)


def normalize_and_rotate_into(x: torch.Tensor, norm: nn.Module, table: torch.Tensor | None, out: torch.Tensor) -> None:
    """`out = apply_rope(norm(x), table)` (no rotation without a table) for `[B, L, heads, D]`
    tensors, written into `out` (a slice of a joint attention buffer), in place there.

    The RMS norm is torch.nn.RMSNorm's, in the input dtype: x * rsqrt(mean(x^2) + eps) * weight. The
    rotation multiplies each pair (x[2i], x[2i+1]) by cos + i sin as one complex product, which is the
    release's rotation in fp32; other dtypes (or other norms) take the modules' own path."""
    if not (isinstance(norm, RMSNorm) and not norm.fp32 and x.dtype == torch.float32 and out.stride(-1) == 1):
        normed = norm(x)
        out.copy_(normed if table is None else apply_rope(normed, table))
        return
    out.copy_(x)  # x is a strided view into the interleaved q, k, v projection
    eps = torch.finfo(x.dtype).eps if norm.eps is None else norm.eps
    scale = torch.linalg.vector_norm(out, dim=-1, keepdim=True)
    out.mul_(scale.square_().div_(x.shape[-1]).add_(eps).rsqrt_()).mul_(cast_to(norm.weight, out))
    if table is not None:
        rotation = torch.complex(table[0], table[1]).unsqueeze(1)  # [L, 1, D/2], broadcast over heads
        torch.view_as_complex(out.unflatten(-1, (-1, 2))).mul_(rotation)


def adaln_with_offset(adaln: nn.Sequential, cond: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """`adaln(cond) + offset` (SiLU then Linear) with the offset folded into the Linear's bias."""
    linear = adaln[-1]
    if not (isinstance(linear, CastWeight) and isinstance(linear, nn.Linear) and linear.bias is not None):
        return adaln(cond) + offset
    hidden = adaln[:-1](cond)
    return F.linear(hidden, linear.weight_for(hidden), cast_to(linear.bias, hidden) + offset.to(hidden.dtype))


def gather_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`table[rows]`: rows `[U, C]` gathered into `[*rows.shape, C]` (the embedding kernel)."""
    return F.embedding(rows, table)


def condition_rows(sync_tokens: torch.Tensor, sync_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-token conditions of the latent stream as rows: (tokens `[U, H]`, the sample of each
    row `[U]`, the row behind every latent `[B, La]`).

    At inference each sample's identical (bitwise equal) sync tokens share a row. CFG's empty branch
    is the learned empty feature plus an 8-periodic position embedding through the sync projection,
    so away from the clip's ends its tokens repeat, and the blocks' per-token modulation runs on
    about half the rows at 8 s. With autograd on, every token is a row (no sorting in training)."""
    batch, length, _ = sync_tokens.shape
    if not inference():
        offsets = torch.arange(batch, device=sync_index.device)[:, None] * length
        samples = torch.arange(batch, device=sync_index.device).repeat_interleave(length)
        return sync_tokens.flatten(0, 1), samples, offsets + sync_index
    tokens, samples, rows, start = [], [], [], 0
    for sample in range(batch):  # the batch, not the tokens
        distinct, inverse = torch.unique(sync_tokens[sample], dim=0, return_inverse=True)
        tokens.append(distinct)
        samples.append(torch.full((len(distinct),), sample, device=sync_index.device))
        rows.append(inverse.index_select(0, sync_index) + start)
        start += len(distinct)
    return torch.cat(tokens), torch.cat(samples), torch.stack(rows)


def distinct_batch(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """`(x[:n], copies)` with `x == x[:n].repeat(copies, 1, 1)` for the most copies (CFG's branches
    all evaluate the same latents); `(x, 1)` when autograd is on or the rows differ."""
    batch = x.shape[0]
    if inference():
        for copies in range(batch, 1, -1):
            first = x[:batch // copies]
            if batch % copies == 0 and torch.equal(x.unflatten(0, (copies, -1)), first.expand(copies, *first.shape)):
                return first, copies
    return x, 1
