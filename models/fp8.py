"""Scaled fp8 weights: quantisation, the file conventions for scales, and the fp8 matrix-unit path.

Why a scale: e4m3 keeps 3 mantissa bits, so rounding alone costs about 2.6 % relative (Frobenius)
error at any scale; but its normal range starts at 2^-6, and cast directly the small weights of wide
layers (std below ~0.01: MLP down-projections, weights that shrank in training) fall into its
subnormals and lose most of their bits. One power-of-two scale per tensor moves the tensor's largest
magnitude into e4m3's top binade (224..448], so every weight of a Gaussian-like tensor is normal and
the error is the rounding error alone. A power of two also makes dequantising (`q * scale`) exact in
bf16 and fp16. Per-row scales measure the same (tests/test_fp8.py, the report in docs) and ComfyUI's
loaders read only per-tensor ones, so scales are written per tensor; per-row scales in files are read.

File convention, written and read (ComfyUI's "scaled fp8"): a `scaled_fp8` marker (an empty tensor
of the fp8 dtype), `<layer>.weight` in fp8 and `<layer>.scale_weight`, an fp32 scalar; the weight
used is `weight * scale_weight`. Also read: `<layer>.weight_scale` (ComfyUI's newer mixed-precision
files and compressed-tensors / vLLM fp8 files: scalar, `[out]` or `[out, 1]`), `<layer>.comfy_quant`
(checked to be an fp8 format, then dropped) and `scale_input` / `input_scale` (dropped: the fp8
matmul path scales activations dynamically). A plain fp8 file without scales loads as it is.
"""
from __future__ import annotations

import json
from typing import Mapping

import torch

from .checkpoint import CheckpointError

FP8_DTYPES = tuple(
    getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)
)
SCALE = "scale_weight"  # buffer name on the layers and state-dict suffix
MARKER = "scaled_fp8"
_DROPPED_SUFFIXES = (".scale_input", ".input_scale")
_RENAMED_SUFFIXES = {".weight_scale": "." + SCALE}


# ----------------------------------------------------------------------------------------------
# Quantisation
# ----------------------------------------------------------------------------------------------
def fp8_max(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max)


def weight_scale(weight: torch.Tensor, dtype: torch.dtype, per_row: bool = False) -> torch.Tensor:
    """The smallest power of two that brings the tensor's (or each row's) largest magnitude within
    `dtype`'s range: fp32, a scalar or `[out, 1, ...]`. An all-zero tensor or row gets 1."""
    weight = weight.detach()
    if per_row:
        low, high = torch.aminmax(weight.flatten(1), dim=1)
        amax = torch.maximum(high, -low).float().view(-1, *[1] * (weight.ndim - 1))
    else:
        low, high = torch.aminmax(weight)
        amax = torch.maximum(high, -low).float()
    # frexp: amax / max = m * 2^e with m in [0.5, 1), so 2^e is the smallest power of two at or above
    # it, or 2^(e-1) when m is exactly 0.5.
    mantissa, exponent = torch.frexp(amax / fp8_max(dtype))
    scale = torch.ldexp(torch.ones_like(amax), exponent - (mantissa == 0.5).int())
    return torch.where(amax > 0, scale, torch.ones_like(scale))


def quantize(weight: torch.Tensor, dtype: torch.dtype, per_row: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(`weight / scale` rounded to the fp8 `dtype`, scale); dequantise with `dequantize`. Dividing
    by a power of two is exact (computed in fp32: 1/scale can pass fp16's range), so the only
    rounding is the one to fp8."""
    scale = weight_scale(weight, dtype, per_row)
    return (weight.detach() * scale.reciprocal()).to(dtype), scale


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    full = weight.to(dtype) if scale is None else weight.float() * scale.float().to(weight.device)
    return full.to(dtype)


def storage_error(weight: torch.Tensor, dtype: torch.dtype, granularity: str = "tensor") -> float:
    """Relative (Frobenius) error of storing `weight` in the fp8 `dtype`: granularity "none"
    (cast directly, the old storage), "tensor" (what is stored) or "row" (per output row)."""
    weight = weight.detach().float()
    if granularity == "none":
        stored = weight.to(dtype).float()
    elif granularity in ("tensor", "row"):
        stored = dequantize(*quantize(weight, dtype, per_row=granularity == "row"))
    else:
        raise ValueError(f"unknown granularity '{granularity}': choose none, tensor or row")
    return float((stored - weight).norm() / weight.norm())


# ----------------------------------------------------------------------------------------------
# fp8 matrix units (compute capability 8.9 and up)
# ----------------------------------------------------------------------------------------------
def fp8_compute_available(device: str | torch.device | None = None) -> bool:
    """Whether `device` has fp8 matrix units that `torch._scaled_mm` drives (Ada, Hopper, later)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" or not torch.cuda.is_available() or not hasattr(torch, "_scaled_mm"):
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None,
               bias: torch.Tensor | None) -> torch.Tensor | None:
    """`x @ (weight * scale).T + bias` on fp8 matrix units: the activations are quantised to e4m3
    with one dynamic scale (their absolute maximum maps to 448), the product accumulates in fp32 and
    comes out in `x`'s dtype. None where the units cannot take it (the caller then casts on use):
    e5m2 or per-row-scaled weights, fp32 activations, sizes not multiples of 16."""
    e4m3 = torch.float8_e4m3fn
    out_features, in_features = weight.shape
    if (weight.dtype != e4m3 or x.dtype not in (torch.bfloat16, torch.float16) or in_features % 16
            or out_features % 16 or (scale is not None and scale.numel() != 1)):
        return None
    rows = x.reshape(-1, in_features)
    limit = fp8_max(e4m3)
    x_scale = (rows.abs().amax().float() / limit).clamp_min(torch.finfo(torch.float32).tiny)
    x8 = (rows * x_scale.reciprocal()).clamp_(-limit, limit).to(e4m3)
    w_scale = torch.ones((), device=x.device) if scale is None else scale.to(x.device, torch.float32).reshape(())
    bias = None if bias is None else bias.to(x.device, x.dtype)
    out = torch._scaled_mm(x8, weight.to(x.device).t(), scale_a=x_scale, scale_b=w_scale, bias=bias,
                           out_dtype=x.dtype)
    return out.reshape(*x.shape[:-1], out_features)


# ----------------------------------------------------------------------------------------------
# State-dict conventions
# ----------------------------------------------------------------------------------------------
def normalize_scales(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with every scale under `<layer>.scale_weight` (fp32, a scalar or shaped to
    broadcast against its weight) and the markers and input scales removed."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key == MARKER or key.endswith("." + MARKER) or key.endswith(_DROPPED_SUFFIXES):
            continue
        if key.endswith(".comfy_quant"):
            _require_fp8_format(key, tensor)
            continue
        for old, new in _RENAMED_SUFFIXES.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
        out[key] = tensor
    for key in [k for k in out if k.endswith("." + SCALE)]:
        out[key] = _broadcastable_scale(key, out[key], out.get(key[: -len(SCALE)] + "weight"))
    return out


def _require_fp8_format(key: str, tensor: torch.Tensor) -> None:
    try:
        layer_format = json.loads(bytes(tensor.to(torch.uint8).tolist()).decode()).get("format", "")
    except (ValueError, AttributeError):
        layer_format = "unreadable"
    if not str(layer_format).startswith("float8"):
        raise CheckpointError(f"'{key}' marks the layer as quantised in the '{layer_format}' format; only fp8 "
                              "(float8_e4m3fn / float8_e5m2) weights are supported. Use an fp8 or a bf16 file.")


def _broadcastable_scale(key: str, scale: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        raise CheckpointError(f"the file has the scale '{key}' but no weight for it: the file is incomplete")
    scale = scale.float()
    if scale.numel() == 1:
        return scale.reshape(())
    if scale.numel() == weight.shape[0]:
        return scale.reshape(-1, *[1] * (weight.ndim - 1))
    raise CheckpointError(f"the scale '{key}' has shape {tuple(scale.shape)} for a weight of shape "
                          f"{tuple(weight.shape)}; only per-tensor and per-output-row fp8 scales are supported "
                          "(not block-wise ones): convert the model from its bf16 file instead")


def with_marker(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with ComfyUI's `scaled_fp8` marker when it holds scaled fp8 weights: an empty
    tensor of their fp8 dtype, which the loaders read to pick their scaled-fp8 operations."""
    scaled = [state_dict[k[: -len(SCALE)] + "weight"].dtype for k in state_dict if k.endswith("." + SCALE)]
    fp8 = [dtype for dtype in scaled if dtype in FP8_DTYPES]
    if not fp8:
        return dict(state_dict)
    if len(set(fp8)) > 1:
        raise ValueError("the model mixes e4m3 and e5m2 weights; ComfyUI's scaled-fp8 files hold one fp8 type")
    return {**state_dict, MARKER: torch.empty(0, dtype=fp8[0])}
