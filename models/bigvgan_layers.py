"""Building blocks of BigVGAN: Snake activations made alias-free, and the AMP residual blocks.

Module names follow the released generator (`resblocks.3.activations.2.upsample.filter`, ...). The
convolutions are the DAC-VAE's old-style weight-norm layers (`weight_g` / `weight_v`), fused at load.
The `*.filter` buffers are not learned: they are the Kaiser-windowed sinc below, computed here so
files with or without them load.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .dac_layers import weight_norm_convs
from .ops import CastOps, cast_to

RESAMPLE_RATIO = 2
FILTER_TAPS = 12  # int(6 * ratio // 2) * 2
FILTER_CUTOFF = 0.5 / RESAMPLE_RATIO
FILTER_HALF_WIDTH = 0.6 / RESAMPLE_RATIO


def kaiser_sinc_filter(cutoff: float = FILTER_CUTOFF, half_width: float = FILTER_HALF_WIDTH,
                       taps: int = FILTER_TAPS) -> torch.Tensor:
    """Low-pass FIR `[1, 1, taps]` (fp32): a sinc at `cutoff` (of the sample rate) under a Kaiser
    window whose beta follows Kaiser's formula for the transition width `2 * half_width`; sums to 1."""
    half = taps // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(taps, beta=beta, periodic=False, dtype=torch.float32, device="cpu")
    # Taps sit half a sample off zero for an even length, on the integers for an odd one.
    time = torch.arange(-half, half, dtype=torch.float32, device="cpu") + 0.5 if taps % 2 == 0 else \
        torch.arange(taps, dtype=torch.float32, device="cpu") - half
    taps_ = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (taps_ / taps_.sum()).view(1, 1, taps)


class SnakeBeta(nn.Module):
    """`x + sin(a x)^2 / b` per channel, a = exp(alpha), b = exp(beta) when log-scaled (the releases)."""

    def __init__(self, channels: int, logscale: bool = True):
        super().__init__()
        self.logscale = logscale
        self.alpha = nn.Parameter(torch.zeros(channels) if logscale else torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels) if logscale else torch.ones(channels))

    def frequency_and_magnitude(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha, beta = self.alpha.float(), self.beta.float()
        if self.logscale:
            alpha, beta = alpha.exp(), beta.exp()
        # The reciprocal in fp32: in bf16 / fp16 the 1e-9 guard would round away.
        inverse = (beta + 1e-9).reciprocal()
        return tuple(t.to(device=like.device, dtype=like.dtype).view(1, -1, 1) for t in (alpha, inverse))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frequency, magnitude = self.frequency_and_magnitude(x)
        return torch.addcmul(x, magnitude, torch.sin(x * frequency).square())


class Snake(SnakeBeta):
    """`x + sin(a x)^2 / a`: SnakeBeta with the magnitude tied to the frequency (no `beta`)."""

    def __init__(self, channels: int, logscale: bool = True):
        nn.Module.__init__(self)
        self.logscale = logscale
        self.alpha = nn.Parameter(torch.zeros(channels) if logscale else torch.ones(channels))

    def frequency_and_magnitude(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.alpha.float().exp() if self.logscale else self.alpha.float()
        inverse = (alpha + 1e-9).reciprocal()
        return tuple(t.to(device=like.device, dtype=like.dtype).view(1, -1, 1) for t in (alpha, inverse))


class FilterBuffer(nn.Module):
    """Holds the fixed low-pass filter under the name `filter` (the file's key)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("filter", kaiser_sinc_filter())

    def depthwise(self, like: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """The filter for every channel of `like`: `[C, 1, taps]`, contiguous (much faster than an
        expanded view in the grouped convolution)."""
        taps = cast_to(self.filter, like) * gain
        return taps.expand(like.shape[1], 1, FILTER_TAPS).contiguous()


def replicate_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """`F.pad(x, (left, right), mode='replicate')`, done as one concatenation (faster on CPUs)."""
    batch, channels, _ = x.shape
    return torch.cat([x[..., :1].expand(batch, channels, left), x, x[..., -1:].expand(batch, channels, right)], -1)


class Downsample(nn.Module):
    """Low-pass and keep every second sample: replicate padding 5 left / 6 right, stride 2."""

    def __init__(self):
        super().__init__()
        self.lowpass = FilterBuffer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = replicate_pad(x, FILTER_TAPS // 2 - 1, FILTER_TAPS // 2)
        return F.conv1d(padded, self.lowpass.depthwise(x), stride=RESAMPLE_RATIO, groups=x.shape[1])


class Upsample(FilterBuffer):
    """Zeros between samples, then low-pass with gain 2: replicate padding 5, transposed conv, crop 15."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = FILTER_TAPS // RESAMPLE_RATIO - 1
        crop = pad * RESAMPLE_RATIO + (FILTER_TAPS - RESAMPLE_RATIO) // 2
        # The gain goes into the filter: scaling by 2 is exact, so this equals scaling the output.
        y = F.conv_transpose1d(replicate_pad(x, pad, pad), self.depthwise(x, RESAMPLE_RATIO),
                               stride=RESAMPLE_RATIO, groups=x.shape[1])
        return y[..., crop:crop + RESAMPLE_RATIO * x.shape[-1]]


class AntiAliasedActivation(nn.Module):
    """The activation at twice the sample rate, so its harmonics do not alias back (`Activation1d`)."""

    # Input samples each side an output may depend on (6; exactly 5 for 12 taps): the upsampler's
    # taps span taps / ratio input samples, half each side, and the downsampler's reach half its
    # taps at the doubled rate.
    reach = math.ceil(FILTER_TAPS / (2 * RESAMPLE_RATIO)) + math.ceil(FILTER_TAPS // 2 / RESAMPLE_RATIO)

    def __init__(self, channels: int, kind: str, logscale: bool):
        super().__init__()
        self.act = activation(kind, channels, logscale)
        self.upsample = Upsample()
        self.downsample = Downsample()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


def activation(kind: str, channels: int, logscale: bool) -> nn.Module:
    if kind == "snakebeta":
        return SnakeBeta(channels, logscale)
    if kind == "snake":
        return Snake(channels, logscale)
    raise ValueError(f"unknown BigVGAN activation '{kind}': expected 'snakebeta' or 'snake'")


def _same_padding(kernel: int, dilation: int) -> int:
    return (kernel * dilation - dilation) // 2


def conv_reach(conv: nn.Module) -> int:
    """Input samples each side that an output of a stride-1 convolution depends on."""
    span = conv.dilation[0] * (conv.kernel_size[0] - 1)
    return max(conv.padding[0], span - conv.padding[0])


class AMPBlock1(nn.Module):
    """Per dilation d: `x += c2(act(c1(act(x))))`, c1 dilated by d, c2 not dilated (resblock '1')."""

    def __init__(self, channels: int, kernel: int, dilations, kind: str, logscale: bool, operations=CastOps):
        super().__init__()
        conv = weight_norm_convs(operations)[0]
        self.convs1 = nn.ModuleList(conv(channels, channels, kernel, dilation=d, padding=_same_padding(kernel, d))
                                    for d in dilations)
        self.convs2 = nn.ModuleList(conv(channels, channels, kernel, padding=_same_padding(kernel, 1))
                                    for _ in dilations)
        self.activations = nn.ModuleList(AntiAliasedActivation(channels, kind, logscale)
                                         for _ in range(2 * len(dilations)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations[::2], self.activations[1::2]):
            x = x + c2(a2(c1(a1(x))))
        return x

    @property
    def reach(self) -> int:
        """Samples each side an output depends on (for chunked vocoding)."""
        convs = [*self.convs1, *self.convs2]
        return sum(map(conv_reach, convs)) + len(self.activations) * AntiAliasedActivation.reach


class AMPBlock2(nn.Module):
    """Per dilation d: `x += c(act(x))`, c dilated by d (resblock '2')."""

    def __init__(self, channels: int, kernel: int, dilations, kind: str, logscale: bool, operations=CastOps):
        super().__init__()
        conv = weight_norm_convs(operations)[0]
        self.convs = nn.ModuleList(conv(channels, channels, kernel, dilation=d, padding=_same_padding(kernel, d))
                                   for d in dilations)
        self.activations = nn.ModuleList(AntiAliasedActivation(channels, kind, logscale) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, act in zip(self.convs, self.activations):
            x = x + conv(act(x))
        return x

    @property
    def reach(self) -> int:
        """Samples each side an output depends on (for chunked vocoding)."""
        return sum(map(conv_reach, self.convs)) + len(self.activations) * AntiAliasedActivation.reach


RESBLOCKS = {"1": AMPBlock1, "2": AMPBlock2}
