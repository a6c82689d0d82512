"""What the nodes need from whoever runs them: folders, progress, interruption, devices, memory.

Inside ComfyUI these come from ComfyUI itself (`folder_paths`, `comfy.utils.ProgressBar`,
`comfy.model_management`), imported lazily so nothing here needs ComfyUI. Outside it (the headless
runner, scripts, tests) they fall back to plain equivalents: folders under the working directory
(or as configured), a tqdm bar, and a `threading.Event` for interruption.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

MODEL_FOLDER = "foley"  # models/foley holds every checkpoint file and encoder folder of the pack
CHECKPOINT_SUFFIXES = (".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".bin")


class Interrupted(RuntimeError):
    """The user asked to stop (the runner's Ctrl-C or ComfyUI's cancel button)."""


def _comfy(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        return None


@dataclass
class Host:
    input_dir: Path = field(default_factory=lambda: Path(os.environ.get("SYNCFOLEY_INPUT", "input")))
    output_dir: Path = field(default_factory=lambda: Path(os.environ.get("SYNCFOLEY_OUTPUT", "output")))
    models_dir: Path = field(default_factory=lambda: Path(os.environ.get("SYNCFOLEY_MODELS", "models")))
    interrupt_event: threading.Event = field(default_factory=threading.Event)
    progress_factory: Callable[[int, str], "Progress"] | None = None
    device: str | None = None  # None: CUDA when available, else CPU

    # Folders -------------------------------------------------------------------------------------
    @property
    def in_comfyui(self) -> bool:
        return _comfy("folder_paths") is not None and _comfy("comfy.model_management") is not None

    def get_input_dir(self) -> Path:
        folder_paths = _comfy("folder_paths")
        return Path(folder_paths.get_input_directory()) if folder_paths else Path(self.input_dir)

    def get_output_dir(self) -> Path:
        folder_paths = _comfy("folder_paths")
        return Path(folder_paths.get_output_directory()) if folder_paths else Path(self.output_dir)

    def get_temp_dir(self) -> Path:
        """ComfyUI's temp folder (previews); headless, `<output>/previews`."""
        folder_paths = _comfy("folder_paths")
        if folder_paths:
            return Path(folder_paths.get_temp_directory())
        return self.get_output_dir() / "previews"

    def output_path(self, prefix: str, extension: str) -> Path:
        """A fresh `<prefix>_NNNNN.<extension>` inside the output folder.

        The prefix may name sub-folders (`foley/take`) but never leave the output folder: absolute
        prefixes and `..` that escape it are refused.
        """
        root = self.get_output_dir().resolve()
        if not prefix or Path(prefix).is_absolute():
            raise ValueError(f"filename prefix '{prefix}' must be a relative name inside the output folder {root}")
        target = (root / prefix).resolve()
        if root != target and root not in target.parents:
            raise ValueError(f"filename prefix '{prefix}' points outside the output folder {root}; "
                             "use a plain name or a sub-folder such as 'foley/clip'")
        target.parent.mkdir(parents=True, exist_ok=True)
        stem = target.name
        taken = [p.name for p in target.parent.glob(f"{stem}_*.{extension}")]
        numbers = [int(n[len(stem) + 1:-len(extension) - 1]) for n in taken
                   if n[len(stem) + 1:-len(extension) - 1].isdigit()]
        return target.parent / f"{stem}_{max(numbers, default=0) + 1:05d}.{extension}"

    def model_dirs(self) -> list[Path]:
        folder_paths = _comfy("folder_paths")
        if folder_paths:
            register_model_folder()
            return [Path(p) for p in folder_paths.get_folder_paths(MODEL_FOLDER)]
        return [Path(self.models_dir) / MODEL_FOLDER]

    def model_files(self) -> list[str]:
        """Checkpoint files in the model folders, as names relative to their folder."""
        names = set()
        for folder in self.model_dirs():
            if folder.is_dir():
                for path in folder.rglob("*"):
                    if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES and not _inside_encoder(path, folder):
                        names.add(path.relative_to(folder).as_posix())
        return sorted(names)

    def model_folders(self) -> list[str]:
        """Sub-folders that hold a transformers model (config.json): CLAP and SigLIP2."""
        names = set()
        for folder in self.model_dirs():
            if folder.is_dir():
                names.update(p.parent.relative_to(folder).as_posix() for p in folder.rglob("config.json"))
        return sorted(names)

    def resolve_model(self, name: str, what: str = "model file") -> Path:
        """A file or folder name from the model folders (or an absolute path) to a path; errors list what is there."""
        candidate = Path(name).expanduser()
        if candidate.is_absolute() and candidate.exists():
            return candidate
        for folder in self.model_dirs():
            if (folder / name).exists():
                return folder / name
        listing = self.model_folders() if what.endswith("folder") else self.model_files()
        where = ", ".join(str(d) for d in self.model_dirs())
        raise FileNotFoundError(
            f"{what} '{name}' not found in {where}. "
            + (f"Available: {', '.join(listing)}." if listing else "That folder is empty: put the files there.")
        )

    # Progress, interruption ---------------------------------------------------------------------
    def progress(self, total: int, description: str = "") -> "Progress":
        utils = _comfy("comfy.utils")
        if utils is not None and hasattr(utils, "ProgressBar"):
            return ComfyProgress(utils.ProgressBar(total))
        if self.progress_factory is not None:
            return self.progress_factory(total, description)
        return Progress()

    def check_interrupt(self) -> None:
        mm = _comfy("comfy.model_management")
        if mm is not None:
            mm.throw_exception_if_processing_interrupted()
        if self.interrupt_event.is_set():
            raise Interrupted("interrupted by the user")

    # Devices and memory ---------------------------------------------------------------------------
    def compute_device(self) -> torch.device:
        mm = _comfy("comfy.model_management")
        if mm is not None:
            return mm.get_torch_device()
        if self.device:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def offload_device(self) -> torch.device:
        mm = _comfy("comfy.model_management")
        return mm.unet_offload_device() if mm is not None and hasattr(mm, "unet_offload_device") else torch.device("cpu")

    def free_memory(self) -> None:
        """Make room before a heavy stage: ComfyUI unloads its own models; elsewhere empty caches."""
        mm = _comfy("comfy.model_management")
        if mm is not None:
            mm.unload_all_models()
            mm.soft_empty_cache()
        elif torch.cuda.is_available():
            torch.cuda.empty_cache()

    @contextmanager
    def stage(self, *models: torch.nn.Module, gpu_blocks: int = -1):
        """Run a stage with `models` on the compute device; afterwards send them back to the
        offload device when compute and offload differ, so the next stage has the memory.

        With `gpu_blocks` >= 0 the one model, the DiT, keeps at most that many blocks on the compute
        device and streams the others from the offload device one block ahead."""
        from ..models.offload import blocks_streamed, moved_to

        device, offload = self.compute_device(), self.offload_device()
        moved = [m for m in models if m is not None]
        if device != offload:
            self.free_memory()
        if gpu_blocks >= 0:
            (dit,) = moved
            placement = blocks_streamed(dit, device, gpu_blocks, home=offload)
        else:
            placement = moved_to(moved, device, offload)
        try:
            with placement:
                yield device
        finally:
            if device != offload and device.type == "cuda":
                torch.cuda.empty_cache()


class Progress:
    """Progress that goes nowhere (and the interface the others follow)."""

    def update(self, value: int, total: int | None = None) -> None:
        """Report `value` steps done (absolute)."""

    def close(self) -> None:
        pass


class ComfyProgress(Progress):
    def __init__(self, bar):
        self.bar = bar

    def update(self, value: int, total: int | None = None) -> None:
        self.bar.update_absolute(value, total)


def _inside_encoder(path: Path, root: Path) -> bool:
    """Weights inside a transformers folder belong to that encoder, not to the file lists."""
    return any((parent / "config.json").exists() for parent in path.parents if parent != root and root in parent.parents)


def register_model_folder() -> None:
    """Tell ComfyUI about models/foley (idempotent)."""
    folder_paths = _comfy("folder_paths")
    if folder_paths is None:
        return
    path = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    if MODEL_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[MODEL_FOLDER] = ([path], set(CHECKPOINT_SUFFIXES))
    elif path not in folder_paths.folder_names_and_paths[MODEL_FOLDER][0]:
        folder_paths.add_model_folder_path(MODEL_FOLDER, path)


_HOST = Host()


def host() -> Host:
    return _HOST


def configure(**settings) -> Host:
    """Set the plain host's folders, device, progress factory (the headless runner does this)."""
    for key, value in settings.items():
        if not hasattr(_HOST, key):
            raise AttributeError(f"unknown host setting '{key}'")
        setattr(_HOST, key, Path(value) if key.endswith("_dir") and value is not None else value)
    return _HOST
