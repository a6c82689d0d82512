"""One call from a video (or nothing but a prompt) to synchronized audio.

`FoleyPipeline` strings the stages together (encode text, encode video, sample, decode) over a
`FoleyModels` bundle. The ComfyUI nodes, the command line and the tests call the same stage
functions; this class is the convenience for scripts.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..models.offload import blocks_streamed, moved_to
from ..sampling.features import TextFeatures, VisualFeatures
from ..sampling.generate import SamplingOptions, generate_latents
from ..sampling.guidance import CFG, Guidance
from . import loaders
from .decode import decode_latents
from .encode import DEFAULT_NEGATIVE_PROMPT, ImageEncoder, SyncEncoder, TextEncoder, encode_text, encode_video


MODEL_PARTS = ("dit", "vae", "synchformer", "clap", "siglip")
_WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pth", ".pt", ".ckpt")


def find_model_files(folder: str | os.PathLike) -> dict[str, Path | str]:
    """The five model parts in `folder` (or `folder/foley`), recognised by name: a DiT file with
    'foley' or 'dit' in its name, files with 'vae' and 'synchformer', folders with 'clap' and 'siglip'.
    `folder` may also be "demo" (the built-in demo model).

    Raises FileNotFoundError naming the part that is missing or ambiguous.
    """
    from ..demo.bundle import DEMO_MODEL

    if str(folder) in ("demo", DEMO_MODEL):  # the built-in demo model: every loader takes its name
        return {part: DEMO_MODEL for part in MODEL_PARTS}
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder '{folder}' does not exist")
    roots = [folder] + ([folder / "foley"] if (folder / "foley").is_dir() else [])
    entries = [p for root in roots for p in sorted(root.iterdir())]
    files = [p for p in entries if p.is_file() and p.suffix.lower() in _WEIGHT_SUFFIXES]
    named = lambda p, *keys: any(k in p.name.lower() for k in keys)  # noqa: E731
    tests = {
        "vae": lambda p: p in files and named(p, "vae"),
        "synchformer": lambda p: p in files and named(p, "synchformer"),
        "dit": lambda p: p in files and named(p, "foley", "dit") and not named(p, "vae", "synchformer", "lora"),
        "clap": lambda p: p.is_dir() and named(p, "clap"),
        "siglip": lambda p: p.is_dir() and named(p, "siglip"),
    }
    found = {}
    for part, test in tests.items():
        matches = [p for p in entries if test(p)]
        if len(matches) != 1:
            what = "nothing" if not matches else ", ".join(p.name for p in matches)
            raise FileNotFoundError(f"model folder '{folder}': found {what} for the {part}; name one file per part")
        found[part] = matches[0]
    return found


@dataclass
class FoleyModels:
    dit: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: TextEncoder
    image_encoder: ImageEncoder
    sync_encoder: SyncEncoder

    @classmethod
    def from_files(cls, dit: str | os.PathLike, vae: str | os.PathLike, synchformer: str | os.PathLike,
                   clap: str | os.PathLike, siglip: str | os.PathLike, precision: str = "auto",
                   device=None, compute_device=None) -> "FoleyModels":
        """The released models: DiT, DAC-VAE and Synchformer files, CLAP and SigLIP2 folders, loaded
        onto `device` in the precision suited to `compute_device` (default: `device`)."""
        at = dict(device=device, compute_device=compute_device)
        return cls(
            dit=loaders.load_foley_model(dit, precision, **at),
            vae=loaders.load_vae(vae, "fp32", **at),
            text_encoder=loaders.load_text_encoder(clap, "fp32", **at),
            image_encoder=loaders.load_image_encoder(siglip, "fp32", **at),
            sync_encoder=loaders.load_synchformer(synchformer, "fp32" if precision == "auto" else precision, **at),
        )

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, precision: str = "auto", device=None,
                    compute_device=None) -> "FoleyModels":
        """The five parts found by name in `folder` (see `find_model_files`)."""
        paths = find_model_files(folder)
        return cls.from_files(*(paths[part] for part in MODEL_PARTS), precision=precision, device=device,
                              compute_device=compute_device)


@dataclass
class FoleyResult:
    waveform: torch.Tensor  # [takes, 1, T] fp32
    sample_rate: int
    latents: torch.Tensor  # [takes, C, L]
    duration: float
    text: TextFeatures
    visual: VisualFeatures | None


class FoleyPipeline:
    """Stages over a model bundle. With `offload=True` each model sits on the CPU between stages.
    With `gpu_blocks=N` the DiT also samples with only N of its blocks on the device, the others
    streamed from CPU memory one block ahead (it sits on the CPU between stages too)."""

    def __init__(self, models: FoleyModels, device: str | torch.device | None = None, offload: bool = False,
                 gpu_blocks: int | None = None):
        if gpu_blocks is not None and gpu_blocks < 0:
            raise ValueError(f"gpu_blocks must be 0 or more (or None for the whole DiT), got {gpu_blocks}")
        self.models = models
        self.device = torch.device(device) if device else loaders.default_device()
        self.offload = offload
        self.gpu_blocks = gpu_blocks

    def _on_device(self, *modules):
        return moved_to(list(modules), self.device) if self.offload else nullcontext()

    def encode_text(self, prompt: str, negative_prompt: str = DEFAULT_NEGATIVE_PROMPT) -> TextFeatures:
        with self._on_device(self.models.text_encoder):
            return encode_text(self.models.text_encoder, prompt, negative_prompt)

    def encode_video(self, source, start: float = 0.0, max_duration: float | None = None,
                     static_anchor: bool = True, progress: Callable[[float], None] | None = None) -> VisualFeatures:
        with self._on_device(self.models.image_encoder, self.models.sync_encoder):
            return encode_video(source, self.models.image_encoder, self.models.sync_encoder, start, max_duration,
                                static_anchor, progress)

    def sample(self, text: TextFeatures, visual: VisualFeatures | None, guidance: Guidance = CFG(),
               options: SamplingOptions = SamplingOptions(), duration: float | None = None,
               callback: Callable[[dict], None] | None = None) -> torch.Tensor:
        placement = (self._on_device(self.models.dit) if self.gpu_blocks is None
                     else blocks_streamed(self.models.dit, self.device, self.gpu_blocks))
        with placement:
            return generate_latents(self.models.dit, text, visual, guidance, options, duration, callback)

    def decode(self, latents: torch.Tensor, duration: float | None = None) -> tuple[torch.Tensor, int]:
        with self._on_device(self.models.vae):
            return decode_latents(self.models.vae, latents, duration)

    def __call__(
        self,
        video: str | os.PathLike | tuple[torch.Tensor, float] | None = None,
        prompt: str = "",
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        guidance: Guidance = CFG(),
        options: SamplingOptions = SamplingOptions(),
        duration: float | None = None,
        start: float = 0.0,
        callback: Callable[[dict], None] | None = None,
        progress: Callable[[str, float, float | None], None] | None = None,
    ) -> FoleyResult:
        """Audio for `video` (a file or `(IMAGE frames, fps)`) or, without one, for `prompt` alone.

        `progress(stage, done, total)` follows the slow stages: "video" (seconds encoded), "sampling"
        (steps), "decoding"; `callback(info)` gets every sampling step's details.
        """
        report = progress or (lambda stage, done, total=None: None)
        text = self.encode_text(prompt, negative_prompt)
        visual = None
        if video is not None:
            seconds = duration if duration is not None or progress is None else _video_seconds(video, start)
            visual = self.encode_video(video, start, duration, getattr(guidance, "anchor", None) == "static",
                                       progress=lambda done: report("video", round(done, 2), seconds))

        def step(info: dict) -> None:
            report("sampling", info["i"] + 1, options.steps)
            if callback is not None:
                callback(info)

        latents = self.sample(text, visual, guidance, options, duration, step)
        duration = duration if duration is not None else visual.duration
        report("decoding", 0, 1)
        waveform, rate = self.decode(latents, duration)
        report("decoding", 1, 1)
        return FoleyResult(waveform, rate, latents, duration, text, visual)


def _video_seconds(video, start: float) -> float | None:
    """Seconds of video from `start` (for progress totals), or None when it cannot be told cheaply."""
    if isinstance(video, tuple):
        images, fps = video
        return max(0.0, images.shape[0] / fps - start)
    from ..media import probe_video

    try:
        return round(max(0.0, probe_video(video).duration - start), 2)
    except (OSError, ValueError):
        return None
