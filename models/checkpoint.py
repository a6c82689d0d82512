"""Reading checkpoint files safely and telling the user what they are.

Every loader in the package goes through `read_checkpoint`: `.safetensors` files are read with
safetensors, everything else with `torch.load(..., weights_only=True)` so a pickle can never run code.
`identify` names what a state dict holds, so a loader given the wrong file can say what it got.
"""
from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")

# Marker key (or key prefix) -> (kind, human description). The first match wins.
_KIND_MARKERS = (
    ("triple_blocks.0.audio_mod.linear.weight", "foley_dit", "a HunyuanVideo-Foley MM-DiT"),
    ("joint_blocks.0.latent_block.attn.qkv.weight", "mmaudio_net", "an MMAudio network"),
    ("encoder.block.0.weight_v", "dac_vae", "a DAC-VAE audio autoencoder"),
    ("decoder.mid.attn_1.qkv.weight", "mmaudio_vae", "an MMAudio mel VAE"),
    ("activation_post.act.alpha", "bigvgan", "a BigVGAN vocoder"),
    ("vfeat_extractor.", "synchformer", "a Synchformer"),
    ("lora_", "lora", "a LoRA adapter"),
    ("text_model.", "clap", "a CLAP / text-encoder model"),
    ("vision_model.", "siglip", "a SigLIP / image-encoder model"),
    ("visual.conv1.weight", "mmaudio_clip", "an open_clip CLIP model"),
)
KIND_DESCRIPTIONS = {kind: text for _, kind, text in _KIND_MARKERS}
# Wrappers that training frameworks and converters put around the released key names.
_STRIPPABLE_PREFIXES = ("module.", "model.", "diffusion_model.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message says what it is and what to do."""


@dataclass
class Checkpoint:
    """The tensors of a checkpoint file plus whatever non-tensor metadata it carried."""

    state_dict: dict[str, torch.Tensor]
    metadata: dict = field(default_factory=dict)
    path: str | None = None

    @property
    def kind(self) -> str | None:
        return identify(self.state_dict)


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a `.safetensors` or pickled (`.pth`, `.pt`, `.ckpt`, `.bin`) checkpoint.

    Pickles are opened with `weights_only=True` and memory-mapped where the format allows, so a
    multi-GB file is not copied into memory twice. Release-style wrappers
    (`{"state_dict": ..., "metadata": ...}`, `{"model": ...}`) are unwrapped.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: '{path}'. Check the path or put the file there.")
    if path.is_dir():
        raise CheckpointError(f"'{path}' is a folder, not a checkpoint file. Pick the .safetensors or .pth file inside it.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"'{path}' is empty (0 bytes): the download or copy did not finish. Fetch the file again.")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return _read_safetensors(path, device)
    return _read_pickle(path, device)


def as_checkpoint(source: "str | os.PathLike | Mapping[str, torch.Tensor] | Checkpoint") -> Checkpoint:
    """What every `from_checkpoint` accepts: a path, a state dict, or an already read Checkpoint."""
    if isinstance(source, Checkpoint):
        return source
    if isinstance(source, Mapping):
        return Checkpoint(dict(source))
    return read_checkpoint(source, device="cpu")


def _read_safetensors(path: Path, device) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = dict(f.metadata() or {})
            state_dict = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"'{path}' is not a readable safetensors file ({exc}); it is truncated or corrupt. "
            "Fetch or convert the file again."
        ) from exc
    return Checkpoint(state_dict, metadata, str(path))


def _read_pickle(path: Path, device) -> Checkpoint:
    try:
        obj = _torch_load(path, device)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc).lower() or "unsupported global" in str(exc).lower():
            raise CheckpointError(
                f"refusing to load '{path}': the pickle carries code or Python objects beyond tensors, "
                "and loading it could run that code. Use a safetensors copy of the file, or re-save only "
                "its tensors from a trusted environment."
            ) from exc
        raise _corrupt(path, exc) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise _corrupt(path, exc) from exc
    return _unwrap(obj, path)


def _torch_load(path: Path, device):
    with warnings.catch_warnings():
        # torch warns about pickle protocols newer than its default before the safe unpickler decides;
        # the decision (load, or refuse with our message) is what the user needs, not that warning.
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        try:
            return torch.load(str(path), map_location=device, weights_only=True, mmap=True)
        except RuntimeError as exc:
            # Legacy (non-zip) pickles cannot be memory-mapped; read them the plain way.
            if "mmap" not in str(exc):
                raise
        return torch.load(str(path), map_location=device, weights_only=True)


def _corrupt(path: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(
        f"'{path}' could not be read as a PyTorch checkpoint ({type(exc).__name__}: {exc}); "
        "it is truncated or corrupt, or not a checkpoint at all. Fetch the file again."
    )


def _unwrap(obj, path: Path) -> Checkpoint:
    metadata: dict = {}
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "module", "ema", "generator"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and _all_tensors(inner):
                metadata = {k: v for k, v in obj.items() if k != key}
                meta = metadata.pop("metadata", None)
                if isinstance(meta, Mapping):
                    metadata.update(meta)
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not _all_tensors(obj):
        raise CheckpointError(
            f"'{path}' holds {type(obj).__name__}, not a state dict of named tensors. "
            "Point the loader at a model checkpoint (.safetensors or .pth of tensors)."
        )
    return Checkpoint(dict(obj), metadata, str(path))


def _all_tensors(mapping: Mapping) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in mapping.items())


def strip_wrapper_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a prefix such as `module.` that every key shares (DDP, compiled or wrapped saves)."""
    for prefix in _STRIPPABLE_PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            return strip_wrapper_prefix({k[len(prefix):]: v for k, v in state_dict.items()})
    return state_dict


def identify(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Name the model family a state dict belongs to, or None when it is not one we know."""
    for marker, kind, _ in _KIND_MARKERS:
        if marker in state_dict or any(k.startswith(marker) or f".{marker}" in k for k in state_dict):
            return kind
    return None


def describe(state_dict: Mapping[str, torch.Tensor]) -> str:
    kind = identify(state_dict)
    what = KIND_DESCRIPTIONS.get(kind, "an unrecognised model")
    count = sum(v.numel() for v in state_dict.values())
    return f"{what} checkpoint ({len(state_dict)} tensors, {count:,} parameters)"


def require_kind(checkpoint: Checkpoint, expected: str, loader: str, hint: str = "") -> dict[str, torch.Tensor]:
    """Return the state dict if it is of the expected kind, else say what the file is."""
    state_dict = strip_wrapper_prefix(checkpoint.state_dict)
    kind = identify(state_dict)
    if kind != expected:
        where = f"'{checkpoint.path}'" if checkpoint.path else "the given state dict"
        raise CheckpointError(
            f"{where} is {describe(state_dict)}, but the {loader} expects "
            f"{KIND_DESCRIPTIONS[expected]} checkpoint.{(' ' + hint) if hint else ''}"
        )
    return state_dict


def assign_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """Strictly load `state_dict` into `module` (usually built on the meta device) by assignment.

    Assignment keeps the loaded tensors as the parameters, so no second copy is made. Mismatches are
    reported by name and shape, so a wrong or modified file is easy to diagnose.
    """
    expected = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    persistent = set(module.state_dict(keep_vars=True).keys())
    expected = {k: v for k, v in expected.items() if k in persistent}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if items:
                shown = ", ".join(items[:6]) + (f", ... ({len(items)} in all)" if len(items) > 6 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"the checkpoint does not match {what}: " + "; ".join(parts))
    module.load_state_dict(dict(state_dict), strict=True, assign=True)
    return module
