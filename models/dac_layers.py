"""Building blocks of the DAC-VAE: Snake, weight-normalised convolutions, encoder and decoder stacks.

Module names follow the released checkpoint (`encoder.block.N...`, `decoder.model.N...`), so the
`nn.Sequential` indices below are part of the file format, not a style choice.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import CastOps, cast_to

RESIDUAL_DILATIONS = (1, 3, 9)
RESIDUAL_KERNEL = 7
EDGE_KERNEL = 7  # first decoder conv, first encoder conv and the final output conv


class Snake(nn.Module):
    """Periodic activation `x + sin(alpha x)^2 / alpha` with one learned frequency per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = cast_to(self.alpha, x)
        # The reciprocal is taken in fp32: in bf16/fp16 the 1e-9 guard would round away.
        inverse = (self.alpha.float() + 1e-9).reciprocal().to(device=x.device, dtype=x.dtype)
        return torch.addcmul(x, inverse, torch.sin(alpha * x).square())


class WeightNorm:
    """Old-style weight norm (`weight_g`, `weight_v`): weight = g * v / ||v||, norm over all dims but 0.

    Dim 0 is the output channel of a Conv1d but the *input* channel of a ConvTranspose1d (its weight
    is `[in, out, k]`); the release used `torch.nn.utils.weight_norm(dim=0)` for both, so the gains
    are `[in, 1, 1]` for the transposed layers too.

    For inference, `fuse_weight_norm()` stores the normalised weight in `weight_v` and its norm in
    `weight_g`: the same function, the same state-dict keys, no extra memory, and no normalisation
    per call. Switching the layer to training mode goes back to normalising on every call.
    """

    weight_norm_fused: bool

    def _split_weight(self) -> None:
        weight = self.weight
        del self.weight  # the parent conv's parameter; g and v replace it in the state dict
        with torch.no_grad():
            gain = _norm_except_dim0(weight)
        self.weight_g = nn.Parameter(gain)
        self.weight_v = nn.Parameter(weight.detach())
        self.weight_norm_fused = False

    def normalized_weight(self, like: torch.Tensor) -> torch.Tensor:
        """The effective weight in `like`'s dtype and device (computed in fp32 when not fused)."""
        if self.weight_norm_fused:
            return cast_to(self.weight_v, like)
        v = self.weight_v.to(device=like.device, dtype=torch.float32)
        g = self.weight_g.to(device=like.device, dtype=torch.float32)
        return (v * (g / _norm_except_dim0(v))).to(like.dtype)

    @torch.no_grad()
    def fuse_weight_norm(self) -> None:
        if self.weight_norm_fused:
            return
        v = self.weight_v.float()
        weight = v * (self.weight_g.float() / _norm_except_dim0(v))
        # New parameters rather than in-place writes: the loaded tensors may belong to the caller.
        self.weight_v = nn.Parameter(weight.to(self.weight_v.dtype), requires_grad=self.weight_v.requires_grad)
        self.weight_g = nn.Parameter(_norm_except_dim0(weight).to(self.weight_g.dtype),
                                     requires_grad=self.weight_g.requires_grad)
        self.weight_norm_fused = True

    def train(self, mode: bool = True):
        if mode:
            self.weight_norm_fused = False
        return super().train(mode)


def _norm_except_dim0(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)


@functools.cache
def weight_norm_convs(operations=CastOps) -> tuple[type, type]:
    """Weight-normalised (Conv1d, ConvTranspose1d) classes derived from `operations`' layers."""

    class WNConv1d(WeightNorm, operations.Conv1d):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._split_weight()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._conv_forward(x, self.normalized_weight(x), cast_to(self.bias, x))

    class WNConvTranspose1d(WeightNorm, operations.ConvTranspose1d):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._split_weight()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.conv_transpose1d(x, self.normalized_weight(x), cast_to(self.bias, x), self.stride,
                                      self.padding, self.output_padding, self.groups, self.dilation)

    return WNConv1d, WNConvTranspose1d


def _wn_conv(operations, *args, **kwargs) -> nn.Module:
    return weight_norm_convs(operations)[0](*args, **kwargs)


def _wn_conv_transpose(operations, *args, **kwargs) -> nn.Module:
    return weight_norm_convs(operations)[1](*args, **kwargs)


class ResidualUnit(nn.Module):
    """Snake, dilated k7 conv, Snake, k1 conv, plus the input (centre-cropped if lengths differ)."""

    def __init__(self, channels: int, dilation: int, operations=CastOps):
        super().__init__()
        self.block = nn.Sequential(
            Snake(channels),
            _wn_conv(operations, channels, channels, RESIDUAL_KERNEL, dilation=dilation,
                     padding=(RESIDUAL_KERNEL - 1) * dilation // 2),
            Snake(channels),
            _wn_conv(operations, channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        trim = (x.shape[-1] - y.shape[-1]) // 2
        if trim > 0:
            x = x[..., trim:-trim]
        return x + y


def _residual_stack(channels: int, operations) -> list[nn.Module]:
    return [ResidualUnit(channels, d, operations) for d in RESIDUAL_DILATIONS]


class EncoderBlock(nn.Module):
    """Three residual units at `channels // 2`, then a strided conv that doubles the channels."""

    def __init__(self, channels: int, stride: int, operations=CastOps):
        super().__init__()
        half = channels // 2
        self.block = nn.Sequential(
            *_residual_stack(half, operations),
            Snake(half),
            _wn_conv(operations, half, channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Encoder(nn.Module):
    def __init__(self, width: int, rates: list[int], latent_dim: int, operations=CastOps):
        super().__init__()
        layers = [_wn_conv(operations, 1, width, EDGE_KERNEL, padding=EDGE_KERNEL // 2)]
        for stride in rates:
            width *= 2
            layers.append(EncoderBlock(width, stride, operations))
        layers += [Snake(width), _wn_conv(operations, width, latent_dim, 3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.block(wav)


class DecoderBlock(nn.Module):
    """Snake, transposed conv that upsamples by `stride` (length exactly x stride), residual units."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, operations=CastOps):
        super().__init__()
        self.block = nn.Sequential(
            Snake(in_channels),
            _wn_conv_transpose(operations, in_channels, out_channels, 2 * stride, stride=stride,
                               padding=math.ceil(stride / 2), output_padding=stride % 2),
            *_residual_stack(out_channels, operations),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    def __init__(self, latent_dim: int, width: int, rates: list[int], operations=CastOps):
        super().__init__()
        layers = [_wn_conv(operations, latent_dim, width, EDGE_KERNEL, padding=EDGE_KERNEL // 2)]
        for i, stride in enumerate(rates):
            layers.append(DecoderBlock(width >> i, width >> (i + 1), stride, operations))
        out_width = width >> len(rates)
        layers += [Snake(out_width), _wn_conv(operations, out_width, 1, EDGE_KERNEL, padding=EDGE_KERNEL // 2),
                   nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)


def decoder_context_latents(rates: list[int]) -> float:
    """How far (in latents, each side) a decoder output sample can see; channel widths do not matter.

    Each layer adds its one-sided reach, converted to latents by the sample rate it runs at: the k7
    convs reach 3 samples, a residual unit with dilation d reaches 3d, and a transposed conv with
    kernel 2s reaches at most 2 input samples. Decoding a chunk with at least this many extra latents
    on each side reproduces the one-shot output exactly where the chunk's outer parts are cut off.
    """
    edge = EDGE_KERNEL // 2
    residual = sum((RESIDUAL_KERNEL - 1) // 2 * d for d in RESIDUAL_DILATIONS)
    reach, rate = float(edge), 1
    for stride in rates:
        reach += 2 / rate  # transposed conv, at its input rate
        rate *= stride
        reach += residual / rate
    return reach + edge / rate
