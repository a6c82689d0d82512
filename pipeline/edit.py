"""Editing options of the Python API and the command line: existing sound, encoded and placed on the
output's timeline with the mask of what to generate (see `sampling.edit` for how sampling keeps the rest)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch

from ..sampling.edit import DEFAULT_FEATHER, LENGTH_TOLERANCE, AudioEdit, check_denoise, extend, fit_length, time_mask
from .decode import encode_waveform

EXTEND_SIDES = ("after", "before")


@dataclass(frozen=True)
class EditOptions:
    """What to do with existing sound (FoleyPipeline's `edit`).

    audio: a file (any audio, or a video's soundtrack), `(waveform [C, T] or [B, C, T], sample_rate)`, or
    None for the video's own soundtrack. denoise: (0, 1], how far from the existing sound to start
    (1 = all new, 0.3 = a light variation that keeps its timing); without ranges it applies to the whole
    sound, and None keeps the sound (only what the output has beyond it is made). regenerate: (start,
    end) seconds of the output to make anew (at `denoise`, default 1), the rest kept. feather: seconds
    of crossfade into the kept sound at each edge. extend: where the new sound goes when the audio is
    shorter than the output, "after" its end or "before" its start (a longer audio is cut at that side).
    """

    audio: str | os.PathLike | tuple[torch.Tensor, int] | None = None
    denoise: float | None = None
    regenerate: Sequence[tuple[float, float]] = ()
    feather: float = DEFAULT_FEATHER
    extend: str = "after"

    def __post_init__(self):
        if self.denoise is not None:
            check_denoise(self.denoise)
        if self.extend not in EXTEND_SIDES:
            raise ValueError(f"extend: '{self.extend}' is not one of {', '.join(EXTEND_SIDES)}")
        if self.feather < 0:
            raise ValueError(f"feather: must be 0 or more seconds, got {self.feather:g}")


def read_audio(audio, video=None, start: float = 0.0) -> tuple[torch.Tensor, int]:
    """The edit's sound as (`[B, C, T]`, rate): a file, a (waveform, rate) pair, or the soundtrack of the
    video file `video` from `start` seconds."""
    from ..media import MediaError, load_audio

    if isinstance(audio, tuple):
        waveform, rate = audio
        waveform = torch.as_tensor(waveform).float()
    elif audio is not None:
        waveform, rate = load_audio(audio, None)
    elif video is None or isinstance(video, tuple):
        raise ValueError("audio: give the sound to edit (a file or a waveform); only a video file brings "
                         "its own soundtrack")
    else:
        try:
            waveform, rate = load_audio(video, None, start=start)
        except MediaError as error:
            raise ValueError(f"audio: the video {video} {error.problem}, so there is no sound of its own to edit; "
                             "give the sound to edit (--audio FILE, or EditOptions.audio)") from None
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim == 2:
        waveform = waveform[None]
    if waveform.ndim != 3 or waveform.shape[-1] == 0 or int(rate) <= 0:
        raise ValueError(f"audio: expected a non-empty waveform [C, T] with its sample rate, got "
                         f"{tuple(waveform.shape)} at {rate}")
    return waveform, int(rate)


def plan_edit(vae, model, options: EditOptions, waveform: torch.Tensor, rate: int, duration: float) -> AudioEdit:
    """The sound encoded with `vae` and placed on `duration` seconds of output (extended or cut at
    the `extend` side), with the mask of the ranges to regenerate and of the extension."""
    latents = encode_waveform(vae, waveform, rate)
    frames_per_second = model.latent_rate
    total = model.latent_length(duration)
    if abs(latents.shape[-1] - total) <= LENGTH_TOLERANCE:  # the codec's rounding, not sound to add
        latents, _ = fit_length(latents, None, total)
    known = min(latents.shape[-1], total)
    missing = total - known
    if options.extend == "after":
        latents = latents[..., :known]
        before, after = 0, missing
    else:
        latents = latents[..., latents.shape[-1] - known:]
        before, after = missing, 0
    ranges = [tuple(map(float, r)) for r in options.regenerate]
    if ranges:
        mask = time_mask(ranges, total, frames_per_second, options.feather, "regenerate", duration)[None]
    elif options.denoise is not None:
        mask = None  # a variation of all of it
    else:
        mask = torch.zeros(1, total)  # all of it kept: only what the output has beyond it is made
    span = None
    if before or after:
        known_mask = None if mask is None else mask[:, before:before + known]
        latents, mask = extend(latents, known_mask, before, after, frames_per_second, options.feather)
        span = (before, before + known)
    return AudioEdit(latents, 1.0 if options.denoise is None else options.denoise, mask, span)
