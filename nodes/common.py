"""What every node module shares: categories, the FOLEY_VIDEO object, input-blaming errors, model loading
onto the right devices, and the files output nodes write.

Nothing here imports ComfyUI; `host()` decides whether ComfyUI's folders and memory management apply.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .host import host

CATEGORY = "SyncFoley"
LOADERS, VIDEO, CONDITIONING, SAMPLING, AUDIO, VISUALIZE = (
    f"{CATEGORY}/{name}" for name in ("loaders", "video", "conditioning", "sampling", "audio", "visualize"))
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".gif")
SEED_MAX = 2**63 - 1024  # takes use seed + k, and torch generators take signed 64-bit seeds


@dataclass(frozen=True)
class FoleyVideo:
    """A clip of a video (FOLEY_VIDEO): the source file, or IMAGE frames with their rate, from `start`
    for `duration` seconds. Visual Encode samples the source by timestamps; Mux copies its packets."""

    path: str | None
    fps: float
    start: float
    duration: float
    images: torch.Tensor | None = None  # [N, H, W, C] when the frames came from an IMAGE input
    has_audio: bool = False

    @property
    def source(self) -> str | tuple[torch.Tensor, float]:
        return self.path if self.path is not None else (self.images, self.fps)

    def clip_images(self) -> torch.Tensor:
        """The IMAGE frames of the clip (IMAGE-based videos only)."""
        first = max(0, round(self.start * self.fps))
        return self.images[first:first + max(1, round(self.duration * self.fps))]


@dataclass(frozen=True)
class FileVideo:
    """A video file as a VIDEO value where ComfyUI's own video type is not available (the headless
    runner, ComfyUI before 0.3.31): the calls other nodes make on a VIDEO that is a file."""

    path: str

    def get_stream_source(self) -> str:
        return self.path

    def save_to(self, path: str, *args, **kwargs) -> None:
        import shutil

        shutil.copyfile(self.path, path)


def as_comfy_video(path: str | Path):
    """ComfyUI's VIDEO for a file (`VideoFromFile`) where the running ComfyUI has it, else a FileVideo."""
    try:
        from comfy_api.input_impl import VideoFromFile
    except ImportError:
        return FileVideo(str(path))
    return VideoFromFile(str(path))


# Errors -----------------------------------------------------------------------------------------------
def input_error(name: str, message: str, kind: type[Exception] = ValueError) -> Exception:
    return kind(f"{name}: {message}")


@contextmanager
def blame(name: str):
    """Re-raise ValueError/OSError (MediaError, CheckpointError, ...) with the input at fault in front."""
    try:
        yield
    except (ValueError, OSError) as error:
        message = str(error)
        if message.startswith(f"{name}:"):
            raise
        kind = FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError
        raise kind(f"{name}: {message}") from error


# Models -----------------------------------------------------------------------------------------------
def model_path(name: str, input_name: str, part: str, what: str = "model file") -> Path:
    """The file or folder a COMBO value names; the built-in demo name is its `part`'s file."""
    from ..demo.bundle import DEMO_MODEL, demo_file

    with blame(input_name):
        if name == DEMO_MODEL:
            return demo_file(part)
        return host().resolve_model(name, what)


def load_model(loader: Callable, path: Path, precision: str, input_name: str, **options):
    """Load onto the offload device with the precision of the compute device (so "auto" means what it
    will run in); a stage moves it in when needed."""
    compute, offload = host().compute_device(), host().offload_device()
    with blame(input_name):
        return loader(path, precision, offload, compute, **options)


def file_choices(folders: bool = False) -> list[str]:
    """Model files (or encoder folders) for a COMBO; never fails, so /object_info always works."""
    try:
        return host().model_folders() if folders else host().model_files()
    except OSError:
        return []


def model_combo(tooltip: str, folders: bool = False) -> tuple[list[str], dict]:
    """A model loader's COMBO: the built-in demo model first, then the files (or folders) of models/foley;
    the default is the first of those, or the demo when the folder holds nothing."""
    from ..demo.bundle import DEMO_MODEL

    found = file_choices(folders)
    return [DEMO_MODEL, *found], {"default": found[0] if found else DEMO_MODEL,
                                  "tooltip": f"{tooltip} {DEMO_MODEL}: the small built-in demo model."}


# Videos in the input folder -----------------------------------------------------------------------------
def input_videos() -> list[str]:
    folder = host().get_input_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def video_choices() -> list[str]:
    """Load Video's list: the input folder's videos, then the pack's built-in example clips (a name in
    the input folder wins over an example of the same name)."""
    from ..demo.bundle import EXAMPLE_VIDEOS

    found = input_videos()
    return found + [name for name in EXAMPLE_VIDEOS if name not in found]


def find_video(video: str, path: str = "") -> Path:
    """`path` when given (any file), else `video`: a name in the input folder, a built-in example clip,
    or a path."""
    from ..demo.bundle import example_video

    if path and path.strip():
        candidate = Path(path.strip()).expanduser()
        if not candidate.is_file():
            raise input_error("path", f"no video file at '{candidate}'", FileNotFoundError)
        return candidate
    if not video:
        raise input_error("video", "choose a video from the input folder, or give a path")
    candidate = Path(video).expanduser()
    if candidate.is_absolute() or os.sep in video or "/" in video:
        if candidate.is_file():
            return candidate
    inside = host().get_input_dir() / video
    if inside.is_file():
        return inside
    with blame("video"):
        example = example_video(video)
    if example is not None:
        return example
    if candidate.is_file():
        return candidate
    available = video_choices()
    raise input_error("video", f"no file '{video}' in the input folder '{host().get_input_dir().resolve()}'; "
                               f"available: {', '.join(available)}", FileNotFoundError)


# Output files -------------------------------------------------------------------------------------------
def output_file(prefix: str, extension: str) -> tuple[Path, dict]:
    """A fresh output path for `prefix` and its ComfyUI ui entry {filename, subfolder, type}."""
    with blame("filename_prefix"):
        path = host().output_path(prefix, extension)
    subfolder = path.parent.relative_to(host().get_output_dir().resolve()).as_posix()
    return path, {"filename": path.name, "subfolder": "" if subfolder == "." else subfolder, "type": "output"}


def save_previews(images: torch.Tensor, kind: str) -> list[dict]:
    """PNG previews of IMAGE [B, H, W, 3]: ComfyUI's temp folder (as PreviewImage does), or, outside
    ComfyUI, `<output>/previews/` so headless runs keep the pictures too."""
    from ..pipeline.visualize import encode_png

    entries = []
    for image in images:
        if host().in_comfyui:
            folder = host().get_temp_dir()
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"syncfoley_{kind}_{secrets.token_hex(4)}.png"
            entry = {"filename": path.name, "subfolder": "", "type": "temp"}
        else:
            path, entry = output_file(f"previews/{kind}", "png")
        path.write_bytes(encode_png(image))
        entries.append(entry)
    return entries


@contextmanager
def progress(total: int, description: str = ""):
    """Yields `update(done)` for a stage of `total` units: moves the host's bar (ComfyUI's, or the
    runner's) and stops the stage when the user cancels."""
    bar = host().progress(total, description)

    def update(done: int) -> None:
        bar.update(min(int(done), total), total)
        host().check_interrupt()

    try:
        yield update
    finally:
        bar.close()
