"""Marking what to redo in existing sound: Foley Time Mask (a range of seconds, or any MASK, as the
LATENT's `noise_mask`, as core's SetLatentNoiseMask) and Foley Extend Latent (room for new sound before
or after it). Foley Sampler then regenerates the marked frames and keeps the rest."""
from __future__ import annotations

import torch

from ..sampling.edit import DEFAULT_FEATHER, as_frame_mask, extend, resample_mask, time_mask
from .common import SAMPLING, blame, input_error

LATENT_TOOLTIP = "Audio latents from Foley VAE Encode (or a sampler, or another Time Mask / Extend node)."
FEATHER_TOOLTIP = ("Seconds of crossfade into the kept sound, so the new sound joins it without a seam; the "
                   "marked part itself is always redone in full.")


def latent_timing(latent: dict) -> tuple[torch.Tensor, float]:
    """The latent's samples `[B, C, L]` and frames per second, or an error naming `latent`."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 3 or samples.shape[-1] == 0:
        raise input_error("latent", "expected audio latents [batch, channels, frames] from Foley VAE Encode")
    rate = latent.get("latent_rate")
    if rate is None and latent.get("duration"):
        rate = samples.shape[-1] / float(latent["duration"])
    if not rate:
        raise input_error("latent", "tells neither its frame rate nor its duration; make it with Foley VAE Encode")
    return samples, float(rate)


def pending_mask(latent: dict, length: int) -> torch.Tensor | None:
    """The latent's noise_mask `[B, L]` still to be sampled: a sampler's output carries the mask it used
    up (beside its `original_samples`), which a new mark replaces rather than adds to."""
    mask = latent.get("noise_mask")
    if mask is None or "original_samples" in latent:
        return None
    with blame("latent"):
        frames = as_frame_mask(mask, "noise_mask")
    if frames.shape[-1] != length:
        raise input_error("latent", f"its noise_mask covers {frames.shape[-1]} frames but the audio has {length}")
    return frames


def unedited(latent: dict) -> dict:
    """The latent as a new edit's starting point (without the original of an edit it came out of)."""
    return {key: value for key, value in latent.items() if key != "original_samples"}


class SyncFoleyTimeMask:
    DESCRIPTION = (
        "Marks a time range of existing sound to regenerate (the LATENT's noise_mask, as core's Set Latent Noise "
        "Mask): Foley Sampler redoes start to end with the video of the whole clip, crossfading over feather "
        "seconds outside it, and keeps the rest. Chain several to mark several ranges (on a sampler's output the "
        "mark starts afresh). A MASK input (any ComfyUI mask; its width is stretched over the clip) is used "
        "instead of start and end.")
    CATEGORY = SAMPLING
    FUNCTION = "mark"
    RETURN_TYPES = ("LATENT", "MASK")
    RETURN_NAMES = ("latent", "mask")
    OUTPUT_TOOLTIPS = ("The latent with its noise_mask (1 = regenerate, 0 = keep), for Foley Sampler.",
                       "The mask over time [1, 1, frames], for previews and other mask nodes.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": ("LATENT", {"tooltip": LATENT_TOOLTIP}),
                "start": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1e6, "step": 0.01,
                                    "tooltip": "Seconds from the clip's start where the part to redo begins."}),
                "end": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 1e6, "step": 0.01,
                                  "tooltip": "Seconds from the clip's start where the part to redo ends."}),
                "feather": ("FLOAT", {"default": DEFAULT_FEATHER, "min": 0.0, "max": 60.0, "step": 0.01,
                                      "tooltip": FEATHER_TOOLTIP}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Any mask (1 = redo); its last axis is time, stretched over the "
                                             "clip. Used instead of start and end when connected."}),
            },
        }

    def mark(self, latent: dict, start: float, end: float, feather: float, mask: torch.Tensor | None = None):
        samples, rate = latent_timing(latent)
        length = samples.shape[-1]
        if mask is not None:
            marked = resample_mask(mask, length, "mask")
        else:
            seconds = length / rate
            if not 0 <= start < seconds:
                raise input_error("start", f"{start:g} s is outside the clip (0-{seconds:.2f} s)")
            if not start < end <= seconds + 0.5 / rate:
                raise input_error("end", f"{end:g} s must lie after start ({start:g} s) and inside the clip "
                                         f"(0-{seconds:.2f} s)")
            with blame("feather"):
                marked = time_mask([(start, end)], length, rate, feather)[None]
        before = pending_mask(latent, length)
        if before is not None:  # chained Time Masks mark the union of their ranges
            marked = torch.maximum(before, marked)
        return {**unedited(latent), "noise_mask": marked[:, None]}, marked[:, None]


class SyncFoleyExtendLatent:
    DESCRIPTION = (
        "Makes room for new sound before or after existing sound (e.g. a video longer than its audio): the "
        "latent grows by silence marked in its noise_mask, which Foley Sampler fills, continuing the existing "
        "sound, whose edge it crossfades over feather seconds.")
    CATEGORY = SAMPLING
    FUNCTION = "extend"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The longer latent with its noise_mask (1 = generate), for Foley Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": ("LATENT", {"tooltip": LATENT_TOOLTIP}),
                "before": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0, "step": 0.01,
                                     "tooltip": "Seconds of new sound before the existing sound."}),
                "after": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 3600.0, "step": 0.01,
                                    "tooltip": "Seconds of new sound after the existing sound."}),
                "feather": ("FLOAT", {"default": DEFAULT_FEATHER, "min": 0.0, "max": 60.0, "step": 0.01,
                                      "tooltip": FEATHER_TOOLTIP}),
            },
            "optional": {
                "total_duration": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 36000.0, "step": 0.01,
                                             "tooltip": "Seconds the result should last (e.g. the video's duration "
                                                        "from Load Video): the new sound after it fills up to "
                                                        "this, instead of `after`. 0 = unused."}),
            },
        }

    def extend(self, latent: dict, before: float, after: float, feather: float, total_duration: float = 0.0):
        samples, rate = latent_timing(latent)
        length = samples.shape[-1]
        ahead = round(before * rate)
        if total_duration > 0:
            target = round(total_duration * rate)
            if target < ahead + length:
                raise input_error("total_duration", f"{total_duration:g} s is shorter than the audio "
                                                    f"({length / rate:.2f} s) and the {before:g} s before it")
            after = (target - ahead - length) / rate
        behind = round(after * rate)
        if ahead + behind == 0:
            raise input_error("after", "adds no frame: give seconds before or after the sound")
        with blame("feather"):
            padded, mask = extend(samples, pending_mask(latent, length), ahead, behind, rate, feather)
        duration = float(latent.get("duration") or length / rate) + (ahead + behind) / rate
        first, last = latent.get("sound_span") or (0, length)  # the frames that hold sound, for VAE Decode
        return ({**unedited(latent), "samples": padded, "noise_mask": mask[:, None], "duration": duration,
                 "sound_span": (first + ahead, last + ahead)},)


NODES = {
    "SyncFoleyTimeMask": (SyncFoleyTimeMask, "Foley Time Mask"),
    "SyncFoleyExtendLatent": (SyncFoleyExtendLatent, "Foley Extend Latent"),
}
