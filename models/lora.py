"""LoRA adapters of the Foley DiT at inference: read an adapter file and merge it into the weights.

File format (written by `training`, read here; no peft needed): a safetensors file holding, for each
adapted layer `<module>` named as in the released checkpoint (e.g. `triple_blocks.3.audio_self_attn_qkv`,
`single_blocks.7.linear2.w1`):

    <module>.lora_A.weight   [rank, in]      Linear      [rank, in, k]  Conv1d (kernel k)
    <module>.lora_B.weight   [out, rank]                 [out, rank, 1]

and string metadata `format = "syncfoley-lora"`, `version`, `rank`, `alpha`, `target_modules` (JSON
list), `base_config` (JSON of the FoleyDiTConfig it was trained on). The merged weight is
`W + strength * (alpha / rank) * B @ A` (for convolutions the product runs over the rank for every
kernel tap). Files saved by peft itself (`base_model.model.` prefixes, `.lora_A.default.weight`) and
the `lora_down` / `lora_up` / `.alpha` naming of other trainers are read too; alpha comes from a
layer's `.alpha` tensor, else the `alpha` metadata, else equals the rank (scale 1).

`apply_lora` returns a copy by default that shares every untouched tensor with the original, so a
cached base model (ComfyUI keeps node outputs) is never changed and only the adapted weights take new
memory; `inplace=True` patches the given model. fp8-stored weights are merged in fp32 and stored back
in fp8.
"""
from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from .checkpoint import Checkpoint, CheckpointError, as_checkpoint
from .ops import add_to_weight

LORA_FORMAT = "syncfoley-lora"
LORA_VERSION = "1"
_PEFT_PREFIXES = ("base_model.model.", "diffusion_model.", "model.", "module.")
_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_down|lora_up)(?:\.default)?\.weight$")


@dataclass
class LoraAdapter:
    """Low-rank factors per module: `{module: (A [r, in(, k)], B [out, r(, 1)], scale)}`."""

    layers: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    metadata: dict = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return max(a.shape[0] for a, _, _ in self.layers.values())


def lora_delta(down: torch.Tensor, up: torch.Tensor, scale: float) -> torch.Tensor:
    """`scale * B @ A` in fp32, shaped like the adapted weight (Linear `[out, in]`, Conv1d `[out, in, k]`)."""
    down, up = down.float(), up.float()
    if down.ndim == 2:
        return scale * (up @ down)
    return scale * torch.einsum("or,rik->oik", up.flatten(1), down)


def save_lora(path: str | os.PathLike, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], alpha: float,
              metadata: Mapping[str, str] | None = None) -> None:
    """Write `{module: (A, B)}` in the format above (fp32), atomically."""
    from safetensors.torch import save_file

    if not factors:
        raise ValueError("no LoRA layers to save")
    tensors = {}
    for module, (down, up) in factors.items():
        tensors[f"{module}.lora_A.weight"] = down.detach().float().cpu().contiguous()
        tensors[f"{module}.lora_B.weight"] = up.detach().float().cpu().contiguous()
    rank = max(down.shape[0] for down, _ in factors.values())
    info = {"format": LORA_FORMAT, "version": LORA_VERSION, "rank": str(rank), "alpha": repr(float(alpha)),
            "target_modules": json.dumps(sorted(factors)), **dict(metadata or {})}
    partial = f"{os.fspath(path)}.partial"
    save_file(tensors, partial, metadata=info)
    os.replace(partial, path)


def read_lora(source: str | os.PathLike | Mapping[str, torch.Tensor] | Checkpoint) -> LoraAdapter:
    """Read an adapter file (or state dict); raises CheckpointError when it is not a LoRA."""
    checkpoint = as_checkpoint(source)
    where = f"'{checkpoint.path}'" if checkpoint.path else "the given state dict"
    metadata = dict(checkpoint.metadata)
    default_alpha = float(metadata["alpha"]) if "alpha" in metadata else None
    parts: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    for key, tensor in checkpoint.state_dict.items():
        for prefix in _PEFT_PREFIXES:
            key = key.removeprefix(prefix)
        if key.endswith(".alpha"):
            alphas[key[: -len(".alpha")]] = float(tensor)
            continue
        match = _KEY.match(key)
        if match is None:
            raise CheckpointError(f"{where} is not a LoRA adapter: tensor '{key}' is neither a lora_A/lora_B "
                                  "(or lora_down/lora_up) factor nor an alpha. Load full models with the model loader.")
        part = "A" if match["part"] in ("lora_A", "lora_down") else "B"
        parts.setdefault(match["module"], {})[part] = tensor
    if not parts:
        raise CheckpointError(f"{where} holds no LoRA factors")
    layers = {}
    for module, factors in parts.items():
        if set(factors) != {"A", "B"}:
            raise CheckpointError(f"{where}: layer '{module}' has only its lora_{'A' if 'A' in factors else 'B'} "
                                  "factor; the file is incomplete")
        down, up = factors["A"], factors["B"]
        rank = down.shape[0]
        if up.shape[1] != rank:
            raise CheckpointError(f"{where}: layer '{module}' has factors of ranks {rank} and {up.shape[1]}")
        alpha = alphas.get(module, default_alpha if default_alpha is not None else float(rank))
        layers[module] = (down, up, alpha / rank)
    return LoraAdapter(layers, metadata)


def apply_lora(model: nn.Module, lora: LoraAdapter | str | os.PathLike | Mapping[str, torch.Tensor],
               strength: float = 1.0, inplace: bool = False) -> nn.Module:
    """Merge `lora` into `model`'s weights at `strength`; returns a copy unless `inplace`."""
    adapter = lora if isinstance(lora, LoraAdapter) else read_lora(lora)
    modules = dict(model.named_modules())
    trained_on = adapter.metadata.get("base_config", "")
    deltas = {}
    for name, (down, up, scale) in adapter.layers.items():
        module = modules.get(name)
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise CheckpointError(f"the LoRA adapts layer '{name}', which this model does not have"
                                  + (f"; it was trained for a model of config {trained_on}" if trained_on else ""))
        delta = lora_delta(down.to(weight.device), up.to(weight.device), scale * strength)
        if delta.shape != weight.shape:
            raise CheckpointError(f"the LoRA for layer '{name}' gives a {tuple(delta.shape)} update but the model's "
                                  f"weight is {tuple(weight.shape)}: the LoRA was made for another model size"
                                  + (f" ({trained_on})" if trained_on else ""))
        deltas[name] = delta
    if not inplace:
        model = _copy_sharing(model)
        modules = dict(model.named_modules())
    with torch.no_grad():
        for name, delta in deltas.items():
            add_to_weight(modules[name], delta)  # through the fp8 scale where there is one
    return model


def _copy_sharing(model: nn.Module) -> nn.Module:
    """A copy of the module tree that shares every tensor with `model` (merging then replaces the
    adapted weights of the copy only)."""
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo)
