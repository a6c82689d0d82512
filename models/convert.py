"""Rewrite a checkpoint in another precision, as a `.safetensors` file (`syncfoley convert`).

fp8 output is ComfyUI's scaled-fp8 layout (see `fp8.py`): the matrix weights of the repeated blocks
in fp8 with a per-tensor `scale_weight` each and the `scaled_fp8` marker, everything else in the
compute dtype (bf16 by default). The file loads here with `precision` fp8_* (kept as it is) or any
other precision (dequantised), and in ComfyUI's own scaled-fp8 loaders. Plain precisions (fp32,
bf16, fp16) turn a release `.pth` into a safetensors copy.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoint import (KIND_DESCRIPTIONS, SAFETENSORS_SUFFIXES, CheckpointError, identify, read_checkpoint,
                         strip_wrapper_prefix)
from .dit import FoleyDiT
from .fp8 import FP8_DTYPES, SCALE, with_marker
from .mmaudio import MMAudioNet
from .synchformer import Synchformer

# Checkpoint kind -> `from_checkpoint(source, dtype=, weight_dtype=)` of its network.
LOADERS = {
    "foley_dit": FoleyDiT.from_checkpoint,
    "mmaudio_net": MMAudioNet.from_checkpoint,
    "synchformer": Synchformer.from_checkpoint,
}
PRECISIONS = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2, "bf16": torch.bfloat16,
              "fp16": torch.float16, "fp32": torch.float32}


def convert_checkpoint(source: str | os.PathLike, output: str | os.PathLike, precision: str = "fp8_e4m3fn",
                       dtype: str = "bf16", overwrite: bool = False) -> dict:
    """Write `source` in `precision` to `output` (.safetensors); returns a summary of what was written.
    For fp8, `dtype` is what the layers left out of fp8 (and biases, norms) are stored in. An existing
    `output` is replaced only with `overwrite`, and never when it is `source` itself."""
    output = Path(output)
    if output.exists() and output.resolve() == Path(source).resolve():
        raise ValueError(f"'{output}' is the checkpoint being converted; write the conversion to another file")
    if output.exists() and not overwrite:
        raise FileExistsError(f"'{output}' already exists; pass --overwrite to replace it, or choose another name")
    if output.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise ValueError(f"write the converted model as .safetensors (got '{output.name}'): ComfyUI's loaders "
                         "and this package read scaled fp8 from safetensors files")
    if precision not in PRECISIONS or dtype not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} and dtype one of bf16, fp16, fp32 "
                         f"(got {precision}, {dtype})")
    checkpoint = read_checkpoint(source)
    kind = identify(strip_wrapper_prefix(checkpoint.state_dict))
    if kind not in LOADERS:
        known = ", ".join(KIND_DESCRIPTIONS[k] for k in LOADERS)
        raise CheckpointError(f"'{source}' is {KIND_DESCRIPTIONS.get(kind, 'not a model this package knows')}; "
                              f"convert handles {known}")
    storage = PRECISIONS[precision]
    compute = PRECISIONS[dtype] if storage in FP8_DTYPES else storage
    model = LOADERS[kind](checkpoint, dtype=compute, weight_dtype=storage if storage in FP8_DTYPES else None)
    state = with_marker({key: tensor.contiguous() for key, tensor in model.state_dict().items()})
    _save(state, output, {"format": "pt", "syncfoley_precision": precision, "syncfoley_kind": kind})
    return {"kind": kind, "precision": precision, "tensors": len(state),
            "scaled_layers": sum(key.endswith("." + SCALE) for key in state),
            "bytes": sum(t.numel() * t.element_size() for t in state.values())}


def _save(state: dict[str, torch.Tensor], output: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    save_file(state, str(partial), metadata=metadata)
    os.replace(partial, output)
