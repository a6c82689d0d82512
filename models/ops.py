"""Layer construction that can be injected into every network of the package.

The layers here cast their stored weights to the input's dtype and device on use. That one rule lets
weights be stored in fp8 (half the memory of bf16) and computed in bf16, and lets weights live on the
CPU while the computation runs on the GPU (block offloading). When storage and compute agree the cast
is a no-op and costs nothing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPES = tuple(
    getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)
)


def cast_to(tensor: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    if tensor is None or (tensor.dtype == like.dtype and tensor.device == like.device):
        return tensor
    return tensor.to(device=like.device, dtype=like.dtype, non_blocking=True)


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, cast_to(self.weight, x), cast_to(self.bias, x))


class Conv1d(nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, cast_to(self.weight, x), cast_to(self.bias, x))


class TokenConv1d(Conv1d):
    """A Conv1d over the token axis computed as one matrix product (im2col).

    For the DiT's kernel-3, stride-1 convolutions over a few hundred tokens and thousands of channels
    this is faster on CPUs than the direct convolution, and it is exactly the same function: the
    input's K shifted copies are laid out [c, k] like the weight `[out, in, k]`, so the weight is
    used as a `[out, in * k]` view. Contract and parameters are those of `nn.Conv1d`; the DiT calls
    `forward_tokens` on channel-last tokens, and two convolutions of one input can share `columns`.
    """

    @property
    def is_matrix_product(self) -> bool:
        return (self.kernel_size[0] > 1 and self.stride == (1,) and self.dilation == (1,) and self.groups == 1
                and not isinstance(self.padding, str))

    def columns(self, tokens: torch.Tensor) -> torch.Tensor:
        """`[B, L, C]` tokens -> `[B, L_out, C * k]`: each output position's receptive field."""
        k, pad = self.kernel_size[0], self.padding[0]
        length = tokens.shape[1] + 2 * pad - k + 1
        padded = F.pad(tokens, (0, 0, pad, pad))
        return torch.stack([padded[:, i:i + length] for i in range(k)], dim=-1).flatten(2)

    def from_columns(self, columns: torch.Tensor) -> torch.Tensor:
        return F.linear(columns, cast_to(self.weight, columns).flatten(1), cast_to(self.bias, columns))

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The convolution of channel-last tokens `[B, L, C]`, returned channel-last."""
        if not self.is_matrix_product:
            return super().forward(tokens.transpose(1, 2)).transpose(1, 2)
        return self.from_columns(self.columns(tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_matrix_product:
            return super().forward(x)
        return self.forward_tokens(x.transpose(1, 2)).transpose(1, 2)


class ConvTranspose1d(nn.ConvTranspose1d):
    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        output_padding = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size, 1, self.dilation
        )
        return F.conv_transpose1d(
            x, cast_to(self.weight, x), cast_to(self.bias, x), self.stride, self.padding,
            output_padding, self.groups, self.dilation,
        )


class Conv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, cast_to(self.weight, x), cast_to(self.bias, x))


class Conv3d(nn.Conv3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, cast_to(self.weight, x), cast_to(self.bias, x))


class LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, cast_to(self.weight, x), cast_to(self.bias, x), self.eps)


class CastOps:
    """The default operations: PyTorch layers that cast weights on use."""

    Linear = Linear
    Conv1d = Conv1d
    TokenConv1d = TokenConv1d
    ConvTranspose1d = ConvTranspose1d
    Conv2d = Conv2d
    Conv3d = Conv3d
    LayerNorm = LayerNorm


CAST_LAYERS = (Linear, Conv1d, ConvTranspose1d, Conv2d, Conv3d)


def store_weights(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store the matrix weights of every cast-on-use layer in `dtype` (e.g. fp8); keep the rest.

    Biases, norms, embeddings and learned tokens stay in their dtype: they are small and precision
    sensitive. Returns the module for chaining.
    """
    for layer in module.modules():
        weight = getattr(layer, "weight", None)  # weight-normed layers keep weight_g / weight_v instead
        if isinstance(layer, CAST_LAYERS) and isinstance(weight, torch.Tensor) and weight.dtype != dtype:
            layer.weight = nn.Parameter(weight.detach().to(dtype), requires_grad=False)
    return module


def stored_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for b in module.buffers()
    )


def set_precision(module: nn.Module, dtype: torch.dtype, weight_dtype: torch.dtype | None = None) -> nn.Module:
    """Convert every parameter to `dtype`, and the cast-on-use layers' matrix weights to
    `weight_dtype` when given, one parameter at a time: the peak is one extra parameter, never a
    second copy of the model (and fp8 weights never pass through bf16 on the compute device)."""
    for layer in module.modules():
        for name, param in list(layer._parameters.items()):
            if param is None:
                continue
            storage = weight_dtype if weight_dtype is not None and name == "weight" and isinstance(layer, CAST_LAYERS) else dtype
            if param.dtype != storage and param.is_floating_point():
                layer._parameters[name] = nn.Parameter(param.detach().to(storage), requires_grad=param.requires_grad)
        for name, buffer in list(layer._buffers.items()):
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != dtype:
                layer._buffers[name] = buffer.to(dtype)
    return module
