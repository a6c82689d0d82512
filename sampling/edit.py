"""Editing existing sound: start from it (`denoise`), keep part of it (a mask over time), extend it.

ComfyUI's conventions: `denoise` d in (0, 1] runs the last `steps` of a schedule of `int(steps / d)`
steps (KSampler), so sampling starts at the noise level d selects, from the existing latent noised to
that level with the take's own noise. A noise mask is 1 where sound is generated and 0 where the
existing latent is kept (SetLatentNoiseMask); fractions crossfade.

The solvers stay ignorant of all this. Before every evaluation `KeptVelocity` sets the kept frames of
the state to the existing latent noised to the current level, and returns there the straight path's
velocity `noise - x0`; every solver (Euler, Heun, midpoint, RK4, DPM++ 2M) then moves the kept frames
along that path exactly, while the model sees the whole clip, so generated sound continues across the
seams. After the last step the kept frames are the existing latents again, bitwise.

Time masks: a range marks the latent frames it overlaps with 1; `feather` seconds outside it ramp
linearly down to 0, so the range itself is always regenerated in full and the feather eats into the
kept sound (the same for extensions: the new sound ramps into the end of the existing one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .schedules import make_sigmas

DEFAULT_FEATHER = 0.1  # seconds: long enough to hide a seam, short next to a sound
LENGTH_TOLERANCE = 2  # latent frames an encoded clip may be off its video's length (codec padding, rounding)


@dataclass(frozen=True)
class AudioEdit:
    """Existing sound to edit, on the output's timeline.

    latents: `[B, C, L]` in the space of the model's VAE (what VAE Encode makes); B is 1 (every take
    edits it) or the number of takes. mask: `[B or 1, L]` in 0..1, 1 = generate, 0 = keep; None =
    generate everywhere (audio-to-audio with `denoise`). span: the frames (start, end) that hold
    existing sound when it was extended (the rest is room for new sound); None: all of them.
    """

    latents: torch.Tensor | None = None
    denoise: float = 1.0
    mask: torch.Tensor | None = None
    span: tuple[int, int] | None = None

    def __post_init__(self):
        check_denoise(self.denoise)
        if self.latents is None and self.denoise < 1:
            raise ValueError(f"denoise: {self.denoise:g} starts from existing sound, but none was given; give "
                             "a latent (or audio) to start from, or use denoise 1")
        if self.latents is None and self.mask is not None:
            raise ValueError("mask: marks what to keep of existing sound, but none was given")

    @property
    def plain(self) -> bool:
        """Nothing to edit: sampling from noise as without an edit."""
        return self.latents is None


def check_denoise(denoise: float, name: str = "denoise") -> None:
    try:
        value = float(denoise)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value <= 1:  # NaN fails too
        raise ValueError(f"{name}: must be above 0 and at most 1 (1 = all new sound, 0.3 = a light variation), "
                         f"got {denoise}")


def denoise_sigmas(schedule: str, steps: int, shift: float, denoise: float) -> torch.Tensor:
    """The last `steps` steps of a schedule of `int(steps / denoise)` steps (ComfyUI's KSampler)."""
    check_denoise(denoise)
    if denoise >= 1:
        return make_sigmas(schedule, steps, shift)
    return make_sigmas(schedule, int(steps / denoise), shift)[-(steps + 1):]


# Masks ---------------------------------------------------------------------------------------------------
def time_mask(ranges: Sequence[tuple[float, float]], length: int, rate: float, feather: float = 0.0,
              name: str = "range", duration: float | None = None) -> torch.Tensor:
    """`[length]` mask at `rate` frames per second: 1 on the frames any (start, end) range overlaps,
    ramping to 0 over `feather` seconds outside it. Ranges must lie in the clip of `duration` seconds
    (default: the frames'), `name` in errors."""
    if feather < 0:
        raise ValueError(f"feather: must be 0 or more seconds, got {feather:g}")
    duration = length / rate if duration is None else duration
    frame = torch.arange(length, dtype=torch.float64)
    mask = torch.zeros(length, dtype=torch.float64)
    for start, end in ranges:
        check_range(start, end, duration, rate, name)
        # Seconds from the range to each frame: < 0 where they overlap, else edge to frame centre.
        gap = torch.maximum(start - (frame + 1) / rate, frame / rate - end)
        centre_gap = gap + 0.5 / rate
        ramp = (1 - centre_gap / feather).clamp(0, 1) if feather > 0 else torch.zeros(length, dtype=torch.float64)
        mask = torch.maximum(mask, torch.where(gap < 0, 1.0, ramp))
    return mask.float()


def check_range(start: float, end: float, duration: float, rate: float, name: str = "range") -> None:
    slack = 0.5 / rate  # a range may end on the last frame's edge whatever the rounding of the duration
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end > duration + slack or start >= end:
        raise ValueError(f"{name}: {start:g}-{end:g} s is not a range inside the clip (0-{duration:.2f} s); "
                         "give START-END seconds with START < END")


def as_frame_mask(mask: torch.Tensor, name: str = "noise_mask") -> torch.Tensor:
    """Any ComfyUI mask layout as `[B, T]` over its last axis (time): `[T]`, `[H, T]`, `[B, H, T]` or
    `[B, 1, H, T]`; rows (H) are combined by their maximum, so any marked row marks the frame."""
    mask = torch.as_tensor(mask).detach().float().cpu()
    if mask.ndim == 0 or mask.ndim > 4 or mask.shape[-1] == 0:
        raise ValueError(f"{name}: expected a mask [T], [H, T], [B, H, T] or [B, 1, H, T], got {tuple(mask.shape)}")
    if not torch.isfinite(mask).all():
        raise ValueError(f"{name}: holds NaN or infinite values")
    if mask.ndim == 1:
        return mask.clamp(0, 1)[None]
    if mask.ndim == 2:
        return mask.amax(0, keepdim=True).clamp(0, 1)
    return mask.reshape(mask.shape[0], -1, mask.shape[-1]).amax(1).clamp(0, 1)


def resample_mask(mask: torch.Tensor, length: int, name: str = "mask") -> torch.Tensor:
    """Any ComfyUI mask stretched over `length` frames `[B, length]` (its width spans the whole clip)."""
    frames = as_frame_mask(mask, name)
    if frames.shape[-1] == length:
        return frames
    return torch.nn.functional.interpolate(frames[:, None], size=length, mode="linear", align_corners=False)[:, 0]


def extend(latents: torch.Tensor, mask: torch.Tensor | None, before: int, after: int, rate: float,
           feather: float = DEFAULT_FEATHER) -> tuple[torch.Tensor, torch.Tensor]:
    """Room for new sound: `before` and `after` latent frames of zeros around `latents` `[B, C, L]`, marked
    1 in the mask (ramping into the existing sound over `feather` s); an existing mask is kept."""
    if before < 0 or after < 0:
        raise ValueError(f"extend: frames to add must be 0 or more, got {before} before and {after} after")
    length = latents.shape[-1]
    total = before + length + after
    padded = torch.nn.functional.pad(latents, (before, after))
    kept = torch.zeros(1, length) if mask is None else mask
    kept = torch.nn.functional.pad(kept, (before, after), value=1.0)
    ranges = [(0.0, before / rate)] * (before > 0) + [((before + length) / rate, total / rate)] * (after > 0)
    new = time_mask(ranges, total, rate, feather, "extend")
    return padded, torch.maximum(kept, new[None])


def fit_length(latents: torch.Tensor, mask: torch.Tensor | None, total: int, name: str = "latent"):
    """Latents (and mask) of an encoded clip cut or padded at the end to `total` frames, when they are
    off by the few frames codecs and rounding add; padded frames are generated (mask 1)."""
    length = latents.shape[-1]
    if mask is not None and mask.shape[-1] != length:
        raise ValueError(f"{name}: its noise_mask covers {mask.shape[-1]} latent frames but the audio has {length}; "
                         "make the mask from this latent (Foley Time Mask resamples any MASK to it)")
    if length == total:
        return latents, mask
    if abs(length - total) > LENGTH_TOLERANCE:
        raise ValueError(f"{name}: holds {length} latent frames but the sound to make has {total}; extend the "
                         "audio to the clip (Foley Extend Latent), or set the duration to the audio's")
    if length > total:
        return latents[..., :total], None if mask is None else mask[..., :total]
    pad = total - length
    padded = torch.nn.functional.pad(latents, (0, pad))
    return padded, None if mask is None else torch.nn.functional.pad(mask, (0, pad), value=1.0)


# Sampling ------------------------------------------------------------------------------------------------
class KeptVelocity:
    """`velocity` with the kept frames (mask 0) held on the existing latent's noising path."""

    def __init__(self, velocity, known: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor):
        self.velocity, self.known, self.noise, self.mask = velocity, known, noise, mask
        self.keep = 1 - mask
        self.path_velocity = noise - known  # d/dsigma of (1 - sigma) x0 + sigma noise

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        on_path = (1 - sigma) * self.known + sigma * self.noise
        x = x * self.mask + on_path * self.keep  # exact on both sides of a hard mask
        v = self.velocity(x, sigma).to(x.dtype)
        return v * self.mask + self.path_velocity * self.keep


class EditPlan:
    """One sampling run's edit, resolved against the model: takes, start, velocity and final blend."""

    def __init__(self, flow, edit: AudioEdit, total: int, takes: int, device):
        latents = edit.latents
        if latents.ndim != 3:
            raise ValueError(f"latent: expected audio latents [batch, channels, frames], got {tuple(latents.shape)}")
        if latents.shape[1] != flow.latent_dim:
            raise ValueError(f"latent: has {latents.shape[1]}-channel latents but {flow.variant} samples "
                             f"{flow.latent_dim}-channel ones; encode the audio with the VAE of this model")
        mask = None if edit.mask is None else as_frame_mask(edit.mask, "mask")
        latents, mask = fit_length(latents.float().cpu(), mask, total)
        batch = latents.shape[0]
        if batch != 1 and takes not in (1, batch):
            raise ValueError(f"latent: holds {batch} clips but {takes} takes were asked for; use 1 take (one per "
                             f"clip) or {batch}")
        self.takes = takes if batch == 1 else batch
        if mask is not None and mask.shape[0] not in (1, self.takes):
            raise ValueError(f"latent: its noise_mask has {mask.shape[0]} rows for {self.takes} takes; give one, "
                             "or one per take")
        self.denoise = edit.denoise
        self.original = latents.to(device)  # VAE space, what the kept frames end as
        self.known = flow.from_vae(self.original).float().expand(self.takes, -1, -1)
        self.mask = None if mask is None else mask[:, None].to(device)

    def sigmas(self, options) -> torch.Tensor:
        return denoise_sigmas(options.schedule, options.steps, options.shift, self.denoise)

    def start(self, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The take's noise at denoise 1 (as without an edit), else the known latent noised to `sigma`."""
        if self.denoise >= 1:
            return noise
        return (1 - sigma) * self.known + sigma * noise

    def velocity(self, velocity, noise: torch.Tensor):
        return velocity if self.mask is None else KeptVelocity(velocity, self.known, noise, self.mask)

    def finish(self, latents: torch.Tensor) -> torch.Tensor:
        """Sampled latents (VAE space) with the kept frames set to the existing ones, bitwise."""
        if self.mask is None:
            return latents
        return latents * self.mask + self.original * (1 - self.mask)
