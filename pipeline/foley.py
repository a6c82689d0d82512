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

from ..demo.encoders import demo_encoder_kind
from ..families import FlowModel
from ..models.offload import blocks_streamed, moved_to
from ..sampling.features import TextFeatures, VisualFeatures
from ..sampling.edit import AudioEdit
from ..sampling.generate import SamplingOptions, generate_latents
from ..sampling.guidance import CFG, Guidance
from . import loaders
from .decode import decode_edited, decode_latents
from .edit import EditOptions, plan_edit, read_audio
from .encode import ImageEncoder, SyncEncoder, TextEncoder, encode_text, encode_video
from .files import find_model_files


@dataclass
class FoleyModels:
    """One family's set, loaded: the network (as its `FlowModel`), the audio VAE and the encoders."""

    model: FlowModel
    vae: torch.nn.Module
    text_encoder: TextEncoder
    image_encoder: ImageEncoder
    sync_encoder: SyncEncoder

    @property
    def family(self):
        return self.model.family

    @classmethod
    def from_files(cls, model: str | os.PathLike, vae: str | os.PathLike, synchformer: str | os.PathLike,
                   text_encoder: str | os.PathLike, image_encoder: str | os.PathLike,
                   vocoder: str | os.PathLike | None = None, precision: str = "auto", device=None,
                   compute_device=None) -> "FoleyModels":
        """A set from its files, loaded onto `device` in the precision suited to `compute_device`
        (default: `device`). HunyuanVideo-Foley: the DiT, DAC-VAE and Synchformer files, the CLAP and
        SigLIP2 folders. MMAudio: the network, the mel VAE and its `vocoder`, the Synchformer, and its
        CLIP file as both encoders (loaded once)."""
        at = dict(device=device, compute_device=compute_device)
        if Path(text_encoder) == Path(image_encoder) and Path(text_encoder).is_file() \
                and not demo_encoder_kind(text_encoder):
            clip = loaders.load_clip(text_encoder, "fp32", **at)
            texts, images = clip.text_encoder(), clip.image_encoder()
        else:
            texts = loaders.load_text_encoder(text_encoder, "fp32", **at)
            images = loaders.load_image_encoder(image_encoder, "fp32", **at)
        return cls(
            model=loaders.load_foley_model(model, precision, **at),
            vae=loaders.load_vae(vae, "fp32", **at, vocoder=vocoder),
            text_encoder=texts,
            image_encoder=images,
            sync_encoder=loaders.load_synchformer(synchformer, "fp32" if precision == "auto" else precision, **at),
        )

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, precision: str = "auto", device=None, compute_device=None,
                    family: str | None = None, model: str | None = None) -> "FoleyModels":
        """The set found by name in `folder` ("demo": the built-in one; see `find_model_files`)."""
        files = find_model_files(folder, family, model)
        paths = dict(files.paths)
        clip = paths.pop("clip", None)
        if clip is not None:
            paths.update(text_encoder=clip, image_encoder=clip)
        return cls.from_files(**paths, precision=precision, device=device, compute_device=compute_device)


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

    @property
    def defaults(self):
        """What the set's family runs with by default (steps, CFG scale, negative prompt, ...)."""
        return self.models.model.defaults

    def encode_text(self, prompt: str, negative_prompt: str | None = None) -> TextFeatures:
        """`negative_prompt` None: the family's (HunyuanVideo-Foley "noisy, harsh", MMAudio empty)."""
        negative = self.defaults.negative_prompt if negative_prompt is None else negative_prompt
        with self._on_device(self.models.text_encoder):
            return encode_text(self.models.text_encoder, prompt, negative)

    def encode_video(self, source, start: float = 0.0, max_duration: float | None = None,
                     static_anchor: bool = True, progress: Callable[[float], None] | None = None) -> VisualFeatures:
        with self._on_device(self.models.image_encoder, self.models.sync_encoder):
            return encode_video(source, self.models.image_encoder, self.models.sync_encoder, start, max_duration,
                                static_anchor, progress)

    def guidance(self, guidance: Guidance | None) -> Guidance:
        """`guidance`, or the family's CFG."""
        return CFG(self.defaults.cfg_scale) if guidance is None else guidance

    def sample(self, text: TextFeatures, visual: VisualFeatures | None, guidance: Guidance | None = None,
               options: SamplingOptions = SamplingOptions(), duration: float | None = None,
               callback: Callable[[dict], None] | None = None, edit: AudioEdit | None = None) -> torch.Tensor:
        network = self.models.model.network
        placement = (self._on_device(network) if self.gpu_blocks is None
                     else blocks_streamed(network, self.device, self.gpu_blocks))
        with placement:
            return generate_latents(self.models.model, text, visual, self.guidance(guidance), options, duration,
                                    callback, edit=edit)

    def decode(self, latents: torch.Tensor, duration: float | None = None,
               edit: AudioEdit | None = None) -> tuple[torch.Tensor, int]:
        """With an `edit` that keeps part of its sound, the kept part is its decoded original (crossfaded)."""
        with self._on_device(self.models.vae):
            if edit is not None and edit.mask is not None:
                return decode_edited(self.models.vae, latents, edit.latents, edit.mask, duration, edit.span)
            return decode_latents(self.models.vae, latents, duration)

    def plan_edit(self, edit: EditOptions, sound: tuple[torch.Tensor, int], duration: float) -> AudioEdit:
        """`sound` (`read_audio`) encoded and placed on `duration` seconds of output as `edit` says."""
        with self._on_device(self.models.vae):
            return plan_edit(self.models.vae, self.models.model, edit, *sound, duration)

    def __call__(
        self,
        video: str | os.PathLike | tuple[torch.Tensor, float] | None = None,
        prompt: str = "",
        negative_prompt: str | None = None,
        guidance: Guidance | None = None,
        options: SamplingOptions = SamplingOptions(),
        duration: float | None = None,
        start: float = 0.0,
        callback: Callable[[dict], None] | None = None,
        progress: Callable[[str, float, float | None], None] | None = None,
        edit: EditOptions | None = None,
    ) -> FoleyResult:
        """Audio for `video` (a file or `(IMAGE frames, fps)`) or, without one, for `prompt` alone.

        What is left as None is the family's default (negative prompt, CFG, options' steps and
        windows). `progress(stage, done, total)` follows the slow stages: "video" (seconds encoded),
        "sampling" (steps), "decoding"; `callback(info)` gets every sampling step's details. `edit`
        starts from existing sound (by default the video's own), regenerates ranges of it or extends it.
        """
        report = progress or (lambda stage, done, total=None: None)
        guidance, options = self.guidance(guidance), options.resolved(self.models.model)
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

        audio_edit = None
        if edit is not None:
            sound = read_audio(edit.audio, video, start)
            if duration is None:
                duration = visual.duration if visual is not None else sound[0].shape[-1] / sound[1]
            audio_edit = self.plan_edit(edit, sound, duration)
        latents = self.sample(text, visual, guidance, options, duration, step, audio_edit)
        duration = duration if duration is not None else visual.duration
        report("decoding", 0, 1)
        waveform, rate = self.decode(latents, duration, audio_edit)
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
