"""Run state on disk: EMA weights, resumable checkpoints written atomically, and the exported model.

A checkpoint is a folder `<output>/checkpoints/step-00001000/` written through accelerate's
`save_state` (optimizer, gradient scaler, the RNG states of every process) plus, through its save
hook, only what training changes: `trainable.safetensors` (adapters, or the whole network in full mode,
and the REPA projector), `ema.safetensors`, `rng-rank<N>.safetensors` (the generator of the noise,
time and dropout draws) and `state.json` (the step; the data position follows from it). It is
written as `.step-00001000.partial` and renamed when complete, so a crash never leaves a folder that
looks finished; the oldest folders beyond `keep_checkpoints` are deleted.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class EMA:
    """Exponential moving average of named parameters, kept in fp32.

    The decay ramps up as `min(decay, (1 + n) / (10 + n))` over the first updates, so a short run's
    average is not dominated by the starting weights.
    """

    def __init__(self, parameters: dict[str, nn.Parameter], decay: float):
        self.parameters = parameters
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().float().clone() for name, p in parameters.items()}

    @torch.no_grad()
    def update(self) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, param in self.parameters.items():
            self.shadow[name].lerp_(param.detach().float(), 1 - decay)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.shadow, "__updates__": torch.tensor(self.updates)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"the checkpoint's EMA lacks {len(missing)} parameters (e.g. {sorted(missing)[0]}); "
                             "it was written by a run with other trainable parameters")
        self.updates = int(state["__updates__"])
        for name in self.shadow:
            self.shadow[name] = state[name].float().to(self.shadow[name].device)

    @contextmanager
    def applied(self):
        """Temporarily put the averaged weights into the parameters."""
        saved = {name: p.detach().clone() for name, p in self.parameters.items()}
        with torch.no_grad():
            for name, param in self.parameters.items():
                param.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in self.parameters.items():
                    param.copy_(saved[name])


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints `(step, folder)`, oldest first."""
    root = checkpoint_root(output_dir)
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()] \
        if root.is_dir() else []
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, keep: int) -> Path:
    """Write the run state for `step` (every process must call this); returns the folder."""
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:08d}"
    partial = root / f".{final.name}.partial"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resolve_resume(output_dir: str | os.PathLike, resume: str | os.PathLike | bool) -> Path | None:
    """`True`/"latest": the newest checkpoint of the run (None when there is none); else a folder."""
    if resume is True or resume == "latest":
        return latest_checkpoint(output_dir)
    folder = Path(resume)
    if not (folder / "state.json").is_file():
        raise FileNotFoundError(f"'{folder}' is not a training checkpoint (no state.json); checkpoints are the "
                                f"step-* folders under {checkpoint_root(output_dir)}")
    return folder


def write_state_files(folder: Path, trainable: dict[str, torch.Tensor], ema: EMA | None, state: dict,
                      generator: torch.Generator, rank: int, main: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"state": generator.get_state()}, str(folder / f"rng-rank{rank}.safetensors"))
    if not main:
        return
    save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(folder / "trainable.safetensors"))
    if ema is not None:
        save_file({k: v.cpu().contiguous() for k, v in ema.state_dict().items()}, str(folder / "ema.safetensors"))
    (folder / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")


def _current_name(key: str) -> str:
    """Checkpoints written before training took every family named the network `dit`."""
    return "network." + key.removeprefix("dit.") if key.startswith("dit.") else key


def read_state_files(folder: Path, module: nn.Module, ema: EMA | None, generator: torch.Generator, rank: int) -> dict:
    """Load trainable weights, EMA and generator from `folder` into the given objects; return state.json."""
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    trainable = {_current_name(k): v for k, v in load_file(str(folder / "trainable.safetensors")).items()}
    expected = {n: p for n, p in module.named_parameters() if p.requires_grad}
    if set(trainable) != set(expected):
        extra, missing = sorted(set(trainable) - set(expected)), sorted(set(expected) - set(trainable))
        raise ValueError(f"checkpoint '{folder}' does not match this run's trainable parameters (missing: "
                         f"{missing[:3]}, unexpected: {extra[:3]}); resume with the recipe that wrote it")
    with torch.no_grad():
        for name, param in expected.items():
            param.copy_(trainable[name])
    if ema is not None:
        if not (folder / "ema.safetensors").is_file():
            raise ValueError(f"checkpoint '{folder}' has no EMA weights but this run keeps an EMA")
        ema.load_state_dict(load_file(str(folder / "ema.safetensors")))
    rng = folder / f"rng-rank{rank}.safetensors"
    if not rng.is_file():
        raise ValueError(f"checkpoint '{folder}' has no generator state for process {rank}: it was written with "
                         "fewer processes; resume with the same number of processes")
    generator.set_state(load_file(str(rng))["state"])
    return state
