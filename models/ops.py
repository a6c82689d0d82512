"""Layer construction that can be injected into every network of the package.

The layers here cast their stored weights to the input's dtype and device on use. That one rule lets
weights be stored in fp8 (half the memory of bf16) and computed in bf16, and lets weights live on the
CPU while the computation runs on the GPU (block offloading). When storage and compute agree the cast
is a no-op and costs nothing. An fp8 weight carries its scale as the `scale_weight` buffer (see
`fp8.py`), which travels with the weight wherever the layer's tensors go.
"""
from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError
from .fp8 import FP8_DTYPES, SCALE, dequantize, fp8_compute_available, fp8_linear, normalize_scales, quantize


def cast_to(tensor: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    if tensor is None or (tensor.dtype == like.dtype and tensor.device == like.device):
        return tensor
    return tensor.to(device=like.device, dtype=like.dtype, non_blocking=True)


class CastWeight:
    """What the layers with a matrix weight share: the weight as used, scaled when stored so."""

    def weight_for(self, like: torch.Tensor) -> torch.Tensor:
        weight, scale = self.weight, self._buffers.get(SCALE)
        cast = cast_to(weight, like)
        if scale is None:
            return cast
        scale = scale.to(like.device, non_blocking=True)
        if cast is weight:  # the stored tensor itself: never scale it in place
            return (weight * scale).to(like.dtype)
        return cast.mul_(scale)  # in the compute dtype, the (fp32) scale applied before rounding


class Linear(CastWeight, nn.Linear):
    fp8_matmul = False  # set by `enable_fp8_compute` where the GPU has fp8 matrix units

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp8_matmul:
            out = fp8_linear(x, self.weight, self._buffers.get(SCALE), self.bias)
            if out is not None:
                return out
        return F.linear(x, self.weight_for(x), cast_to(self.bias, x))


class Conv1d(CastWeight, nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight_for(x), cast_to(self.bias, x))


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
        return F.linear(columns, self.weight_for(columns).flatten(1), cast_to(self.bias, columns))

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The convolution of channel-last tokens `[B, L, C]`, returned channel-last."""
        if not self.is_matrix_product:
            return super().forward(tokens.transpose(1, 2)).transpose(1, 2)
        return self.from_columns(self.columns(tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_matrix_product:
            return super().forward(x)
        return self.forward_tokens(x.transpose(1, 2)).transpose(1, 2)


class ConvTranspose1d(CastWeight, nn.ConvTranspose1d):
    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        output_padding = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size, 1, self.dilation
        )
        return F.conv_transpose1d(
            x, self.weight_for(x), cast_to(self.bias, x), self.stride, self.padding,
            output_padding, self.groups, self.dilation,
        )


class Conv2d(CastWeight, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight_for(x), cast_to(self.bias, x))


class Conv3d(CastWeight, nn.Conv3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight_for(x), cast_to(self.bias, x))


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


# ----------------------------------------------------------------------------------------------
# Precision of a whole network
# ----------------------------------------------------------------------------------------------
def repeated_block_layers(module: nn.Module) -> set[str]:
    """Names of the cast-on-use layers inside repeated blocks: elements of an `nn.ModuleList` or
    `nn.Sequential` whose class occurs there more than once (the DiT's triple and single blocks,
    MMAudio's joint and fused blocks, a transformer's layers). The layers outside them (embedders,
    input and output projections: 1 % of the Foley DiT, 11 % of MMAudio large) carry their error
    into the whole residual stream or straight to the output, so fp8 storage leaves them alone. A
    network without repeated blocks: every layer."""
    names: set[str] = set()
    for container_name, container in module.named_modules():
        if not isinstance(container, (nn.ModuleList, nn.Sequential)):
            continue
        counts = Counter(type(child) for child in container.children())
        for child_name, child in container.named_children():
            if counts[type(child)] > 1 and not isinstance(child, CAST_LAYERS):
                prefix = f"{container_name}.{child_name}" if container_name else child_name
                names.update(f"{prefix}.{name}" for name, layer in child.named_modules()
                             if isinstance(layer, CAST_LAYERS))
    return names or {name for name, layer in module.named_modules() if isinstance(layer, CAST_LAYERS)}


def store_weight(layer: nn.Module, dtype: torch.dtype, scaled: bool = True) -> None:
    """Store `layer.weight` in `dtype`. fp8: with a per-tensor power-of-two scale (`scaled=False`:
    cast directly, unscaled); a weight already in that fp8 dtype stays as it is, with or without
    its scale. Other dtypes: dequantised when the layer held scaled fp8."""
    weight, scale = layer.weight, layer._buffers.get(SCALE)
    if weight.dtype == dtype and (scale is None or dtype in FP8_DTYPES):
        return
    full = weight if scale is None else dequantize(weight, scale)
    layer._buffers.pop(SCALE, None)
    if dtype in FP8_DTYPES and scaled and not full.is_meta:  # a meta model has no values to scale
        stored, scale = quantize(full, dtype)
        layer.register_buffer(SCALE, scale)
    else:
        stored = full.detach().to(dtype)
    grad = weight.requires_grad and dtype not in FP8_DTYPES
    layer.weight = nn.Parameter(stored, requires_grad=grad)


def dequantized_weight(layer: nn.Module, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight a layer computes with (its scale applied), in `dtype`."""
    return dequantize(layer.weight.detach(), layer._buffers.get(SCALE), dtype)


def add_to_weight(layer: nn.Module, delta: torch.Tensor) -> None:
    """`weight += delta` (a merged LoRA, say) computed in fp32 and stored back as the weight was:
    fp8 with a new scale, unscaled fp8, or plain."""
    merged = dequantized_weight(layer) + delta.to(layer.weight.device, torch.float32)
    stored_as, scaled = layer.weight.dtype, SCALE in layer._buffers
    layer.weight = nn.Parameter(merged, requires_grad=False)
    layer._buffers.pop(SCALE, None)
    store_weight(layer, stored_as, scaled)


def set_precision(module: nn.Module, dtype: torch.dtype, weight_dtype: torch.dtype | None = None,
                  scaled: bool = True, layers: set[str] | None = None) -> nn.Module:
    """Convert every parameter to `dtype`, and with `weight_dtype` the matrix weights of `layers`
    (default: those in repeated blocks, see `repeated_block_layers`) to it: fp8 scaled per tensor
    unless `scaled=False`. One parameter at a time: the peak is one extra parameter, never a second
    copy of the model (and fp8 weights never pass through bf16 on the compute device). Scales stay
    fp32."""
    if weight_dtype is not None and layers is None:
        layers = repeated_block_layers(module)
    for name, layer in module.named_modules():
        for param_name, param in list(layer._parameters.items()):
            if param is None:
                continue
            if param_name == "weight" and isinstance(layer, CAST_LAYERS):
                store_weight(layer, weight_dtype if weight_dtype is not None and name in layers else dtype, scaled)
            elif param.dtype != dtype and param.is_floating_point():
                layer._parameters[param_name] = nn.Parameter(param.detach().to(dtype),
                                                             requires_grad=param.requires_grad)
        for buffer_name, buffer in list(layer._buffers.items()):
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != dtype and buffer_name != SCALE:
                layer._buffers[buffer_name] = buffer.to(dtype)
    return module


def store_weights(module: nn.Module, dtype: torch.dtype, scaled: bool = True,
                  layers: set[str] | None = None) -> nn.Module:
    """Store the matrix weights of `layers` (default: those in repeated blocks) in `dtype` (e.g.
    fp8, scaled unless `scaled=False`); keep everything else. Returns the module for chaining."""
    layers = repeated_block_layers(module) if layers is None else layers
    for name, layer in module.named_modules():
        weight = getattr(layer, "weight", None)  # weight-normed layers keep weight_g / weight_v instead
        if isinstance(layer, CAST_LAYERS) and name in layers and isinstance(weight, torch.Tensor):
            store_weight(layer, dtype, scaled)
    return module


def stored_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for b in module.buffers()
    )


# ----------------------------------------------------------------------------------------------
# Loading scaled fp8 files, fp8 compute
# ----------------------------------------------------------------------------------------------
def attach_scales(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Prepare `module` (built on the meta device) for a state dict that may hold fp8 scales in any
    of the conventions `fp8.normalize_scales` reads: returns the normalised state dict and gives
    each scaled layer its `scale_weight` buffer, so `assign_state_dict` then takes the file as is."""
    state_dict = normalize_scales(state_dict)
    for key, scale in state_dict.items():
        if not key.endswith("." + SCALE):
            continue
        layer_name = key[: -len(SCALE) - 1]
        try:
            layer = module.get_submodule(layer_name)
        except AttributeError:
            continue  # reported with the other unexpected keys by the strict load
        if not isinstance(layer, CAST_LAYERS):
            raise CheckpointError(f"the file scales '{layer_name}', which is not a matrix layer of this model "
                                  f"({type(layer).__name__}); the file is of another model")
        layer.register_buffer(SCALE, torch.empty(scale.shape, dtype=torch.float32, device="meta"))
    return state_dict


def enable_fp8_compute(module: nn.Module, device: str | torch.device | None = None) -> int:
    """Opt in to fp8 matrix units (`torch._scaled_mm`) for every Linear holding e4m3 weights, where
    `device` has them (compute capability 8.9 and up); elsewhere nothing changes. Returns how many
    layers use them. The result equals the cast-on-use path within fp8 quantisation error."""
    if not fp8_compute_available(device):
        return 0
    count = 0
    for layer in module.modules():
        if isinstance(layer, Linear) and layer.weight.dtype == torch.float8_e4m3fn:
            layer.fp8_matmul = True
            count += 1
    return count
