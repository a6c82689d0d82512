"""Loading every model of a run with one notion of precision.

precision: "auto" (bf16 on GPUs that have it, fp16 on other GPUs, fp32 on CPU), "fp32", "bf16",
"fp16", or "fp8_e4m3fn" / "fp8_e5m2": the matrix weights of the repeated blocks stored in fp8 with a
per-tensor scale (half of bf16) and computed in bf16 on GPUs, fp32 on CPU. "fp8_e4m3fn_fast" also
multiplies on fp8 matrix units where the GPU has them (compute capability 8.9 and up), the same
result within fp8 rounding; elsewhere it is "fp8_e4m3fn".

Every loader places the model on `device` but chooses its precision for `compute_device` (default:
the same), so a model can be loaded straight onto the CPU for a GPU that will run it later.

Every loader also takes "syncfoley-demo" (`demo.bundle.DEMO_MODEL`): the built-in demo model's part.
The demo encoders (files, not folders) load through the encoder loaders by path too.
"""
from __future__ import annotations

import os

import torch

from ..models.dac_vae import DacVae
from ..models.dit import FoleyDiT
from ..models.encoders import ClapTextEncoder, Siglip2ImageEncoder
from ..models.ops import enable_fp8_compute
from ..models.synchformer import Synchformer

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
_PLAIN = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, device: str | torch.device | None) -> tuple[torch.dtype, torch.dtype | None]:
    """(compute dtype, storage dtype or None) for a precision name on a device."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    on_gpu = torch.device(device or "cpu").type == "cuda"
    best_half = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float16
    if precision == "auto":
        return (best_half if on_gpu else torch.float32), None
    if precision.startswith("fp8"):
        storage = getattr(torch, precision.removesuffix("_fast").replace("fp8_", "float8_"))
        return (torch.bfloat16 if on_gpu else torch.float32), storage
    return _PLAIN[precision], None


def _demo_encoder(path: str | os.PathLike, part: str, kind: str, device):
    """(path, the demo encoder at it or None): resolves the demo name, reads demo encoder files."""
    from ..demo.bundle import resolve
    from ..demo.encoders import demo_encoder_kind, load_demo_encoder

    path = resolve(path, part)
    return path, (load_demo_encoder(path, kind, device) if demo_encoder_kind(path) else None)


def load_foley_model(path: str | os.PathLike, precision: str = "auto", device=None, compute_device=None) -> FoleyDiT:
    """The MM-DiT (XXL, XL or any size of the released layout) from `.pth` or `.safetensors`."""
    from ..demo.bundle import resolve

    dtype, storage = resolve_precision(precision, compute_device or device)
    path = resolve(path, "dit")
    model = FoleyDiT.from_checkpoint(path, dtype=dtype, device=device, weight_dtype=storage)
    if precision.endswith("_fast"):
        enable_fp8_compute(model, compute_device or device)
    return model


def load_vae(path: str | os.PathLike, precision: str = "fp32", device=None, compute_device=None) -> DacVae:
    """The DAC-VAE. fp32 by default: its decoder amplifies low-precision error block by block."""
    from ..demo.bundle import resolve

    dtype, _ = resolve_precision(precision, compute_device or device)
    path = resolve(path, "vae")
    return DacVae.from_checkpoint(path, dtype=dtype, device=device)


def load_synchformer(path: str | os.PathLike, precision: str = "auto", device=None, compute_device=None) -> Synchformer:
    dtype, storage = resolve_precision(precision, compute_device or device)
    path, demo = _demo_encoder(path, "synchformer", "sync_encoder", device)
    if demo is not None:
        return demo
    return Synchformer.from_checkpoint(path, dtype=dtype, device=device, weight_dtype=storage)


def load_text_encoder(folder: str | os.PathLike, precision: str = "fp32", device=None,
                      compute_device=None) -> ClapTextEncoder:
    dtype, _ = resolve_precision(precision, compute_device or device)
    folder, demo = _demo_encoder(folder, "clap", "text_encoder", device)
    if demo is not None:
        return demo
    return ClapTextEncoder.from_folder(folder, device=device, dtype=dtype)


def load_image_encoder(folder: str | os.PathLike, precision: str = "fp32", device=None,
                       compute_device=None) -> Siglip2ImageEncoder:
    dtype, _ = resolve_precision(precision, compute_device or device)
    folder, demo = _demo_encoder(folder, "siglip", "image_encoder", device)
    if demo is not None:
        return demo
    return Siglip2ImageEncoder.from_folder(folder, device=device, dtype=dtype)
