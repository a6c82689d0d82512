"""LoRA training through peft, and turning a trained model back into the files the loaders read.

peft wraps our cast-on-use `Linear` / `Conv1d` layers (subclasses of the torch ones) in its LoRA layers
and calls the original layer for the base output, so fp32/bf16/fp16 storage works unchanged. fp8
storage does not: peft would create the adapters in fp8 and merging cannot update an fp8 weight
exactly, so LoRA (and full) training refuses fp8-stored weights with a clear error.

Exports use the released key names: `lora_factors` feeds `models.lora.save_lora`, and
`released_state_dict` gives the plain (optionally LoRA-merged) weights for the network's
`from_checkpoint` (`FoleyDiT` or `MMAudioNet`). The default targets are each layout's attention and
MLP layers (`layouts`): HunyuanVideo-Foley's triple and single blocks less their modulation; MMAudio's
qkv, `linear1` and (Conv)SwiGLU of the joint blocks' three streams and of the fused blocks.
"""
from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import nn

from ..models.lora import lora_delta
from ..models.ops import FP8_DTYPES
from .config import LoraSettings
from .layouts import layout_of


def dead_modules(model: nn.Module) -> list[str]:
    """Layers whose output never reaches the velocity (`layouts.Layout.dead_modules`)."""
    return layout_of(model).dead_modules(model)


def freeze_dead(model: nn.Module) -> None:
    """Full training: leave frozen what gets no gradient, and what the family keeps fixed (MMAudio's
    latent statistics and stored empty text)."""
    layout = layout_of(model)
    for prefix in layout.dead_modules(model):
        model.get_submodule(prefix).requires_grad_(False)
    for name in layout.frozen:
        model.get_parameter(name).requires_grad_(False)


def target_modules(model: nn.Module, patterns: Iterable[str] = ()) -> list[str]:
    """Names of the Linear / Conv1d layers whose full name matches one of `patterns` (regexes),
    less the dead ones."""
    compiled = [re.compile(p) for p in (tuple(patterns) or layout_of(model).lora_targets)]
    dead = tuple(dead_modules(model))
    names = [name for name, module in model.named_modules()
             if isinstance(module, (nn.Linear, nn.Conv1d)) and any(p.fullmatch(name) for p in compiled)
             and not name.startswith(dead)]
    if not names:
        raise ValueError(f"no Linear or Conv1d layer matches the LoRA targets {[p.pattern for p in compiled]}")
    return names


def refuse_fp8(model: nn.Module, what: str) -> None:
    for name, param in model.named_parameters():
        if param.dtype in FP8_DTYPES:
            raise ValueError(f"{what} needs the base weights in fp32, bf16 or fp16, but '{name}' is stored in "
                             f"{str(param.dtype).removeprefix('torch.')}. fp8 storage is for inference: load the "
                             "model with precision bf16 (or fp32) to train.")


def add_lora(model: nn.Module, settings: LoraSettings) -> list[str]:
    """Inject LoRA adapters (in place) and freeze everything else; returns the adapted layer names."""
    from peft import LoraConfig, inject_adapter_in_model

    refuse_fp8(model, "LoRA training")
    names = target_modules(model, settings.targets)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.scale_alpha, lora_dropout=settings.dropout,
                        target_modules=names)
    model.requires_grad_(False)
    inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_A." in name or ".lora_B." in name)
        if param.requires_grad:  # adapters train in fp32 whatever the base storage
            param.data = param.data.float()
    return names


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def lora_factors(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """`{released layer name: (A, B)}` of the injected adapters."""
    return {name: (layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach())
            for name, layer in lora_layers(model).items()}


def released_state_dict(model: nn.Module, merge_lora: bool = True, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The model's weights under the released key names; LoRA adapters merged (or dropped)."""
    layers = lora_layers(model)
    state = {}
    for key, tensor in model.state_dict().items():
        if ".lora_A." in key or ".lora_B." in key or ".lora_dropout." in key:
            continue
        state[key.replace(".base_layer.", ".")] = tensor.detach()
    if merge_lora:
        for name, layer in layers.items():
            scale = layer.scaling["default"]
            delta = lora_delta(layer.lora_A["default"].weight, layer.lora_B["default"].weight, scale)
            weight = state[f"{name}.weight"]
            state[f"{name}.weight"] = (weight.float() + delta.to(weight.device)).to(weight.dtype)
    return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous() for k, v in state.items()}
