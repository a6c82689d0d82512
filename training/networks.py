"""The network a run starts from, and the files it ends as, for every family.

A run starts from a family's network handed over (a `FlowModel` or the network), from the recipe's
checkpoint (loaded as the model loader does: the family comes from the file), or from scratch
(HunyuanVideo-Foley's layout). It never changes a network handed over: LoRA trains a copy of the
module tree over the same frozen tensors, full training a deep copy. Exports are what the loaders
read: a LoRA file (`models.lora`), or the whole network under the release's key names; both name the
family in their metadata.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..families import FAMILY_KEY, FlowModel, as_flow
from ..models.lora import save_lora
from .config import ConfigError, TrainConfig
from .layouts import layout_of
from .lora import lora_factors, refuse_fp8, released_state_dict

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def starting_model(config: TrainConfig, model: nn.Module | FlowModel | None, cache_family: str | None) -> FlowModel:
    """The run's network as its family's `FlowModel`; ConfigError when it is not of the recipe's
    family (or cannot train as asked), ValueError when the cache was made with another family's encoders."""
    flow = _loaded_or_copied(config, model)
    layout, wanted = layout_of(flow.network), config.layout
    if layout is not wanted:
        raise ConfigError(f"[model] family is \"{config.model.family}\" but the model is {flow.variant} "
                          f"(the {layout.family} layout): set [model] family = \"{layout.family}\"")
    if cache_family is not None and cache_family != layout.family:
        raise ValueError(f"the feature cache in {config.cache_dir} was prepared with {cache_family}'s encoders, "
                         f"but the model is {flow.variant}: prepare a cache for it (another [data] cache)")
    if config.model.gradient_checkpointing and not hasattr(flow.network, "gradient_checkpointing"):
        raise ConfigError(f"[model] gradient_checkpointing is not available for {flow.variant}; set it to false")
    return flow


def _loaded_or_copied(config: TrainConfig, model) -> FlowModel:
    settings = config.model
    dtype = DTYPES[settings.base_dtype]
    if model is None and settings.checkpoint:
        from ..pipeline.loaders import load_foley_model

        return load_foley_model(settings.checkpoint, settings.base_dtype, device="cpu")
    if model is None:
        from ..models.dit import FoleyDiT

        settings.require_start()
        return as_flow(FoleyDiT(settings.dit_config()).to(dtype))
    flow = as_flow(model)
    network = flow.network
    refuse_fp8(network, "LoRA training" if config.mode == "lora" else "full fine-tuning")
    if config.mode == "full":
        return flow.with_network(copy.deepcopy(network).to(dtype))
    memo = {id(t): t for t in [*network.parameters(), *network.buffers()]}
    return flow.with_network(copy.deepcopy(network, memo))  # a new module tree over the same (frozen) tensors


def write_export(flow: FlowModel, config: TrainConfig, step: int, path: Path) -> None:
    """A LoRA file in LoRA mode, else the network under the release's key names (`save_dtype`)."""
    network, family = flow.network, {FAMILY_KEY: flow.family.name}
    path.parent.mkdir(parents=True, exist_ok=True)
    if config.mode == "lora":
        metadata = {"base_config": json.dumps(network.config.to_dict()), "steps": str(step),
                    "base_model": Path(config.model.checkpoint).name, **family}
        save_lora(path, lora_factors(network), config.lora.scale_alpha, metadata)
        return
    state = released_state_dict(network, dtype=DTYPES[config.train.save_dtype])
    from safetensors.torch import save_file

    partial = path.with_name(f".{path.name}.partial")
    save_file({k: v.cpu() for k, v in state.items()}, str(partial),
              metadata={"format": "pt", "steps": str(step), **family})
    os.replace(partial, path)


def tuned_network(network: nn.Module) -> nn.Module:
    """A plain inference network of the family with `network`'s weights (LoRA merged), on the CPU."""
    state = {k: v.cpu().clone() for k, v in released_state_dict(network).items()}
    return layout_of(network).network_class().from_checkpoint(state)
