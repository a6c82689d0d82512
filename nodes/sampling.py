"""Sampling and the VAE: Foley Sampler (conditions, and optionally existing sound -> LATENT), VAE Decode
(LATENT -> AUDIO), VAE Encode (AUDIO -> LATENT).

A LATENT of Foley audio is `{"samples": [B, C, L], "type": "audio", "duration": seconds}` plus what
tells where it comes from (`latent_dim`, `latent_rate`; `vae` from VAE Encode, `family` from the
sampler), and, as core's, an optional `noise_mask` (1 = generate, 0 = keep; Foley Time Mask). An
edited LATENT also carries `original_samples`, so VAE Decode keeps the original sound outside the mask
(and an extended one `sound_span`, the frames that hold sound).
"""
from __future__ import annotations

import torch

from ..media import audio_from_comfy
from ..pipeline import decode_latents, encode_waveform
from ..pipeline.decode import decode_edited
from ..sampling.edit import AudioEdit, as_frame_mask, check_denoise, fit_length
from ..sampling.features import TextFeatures, VisualFeatures
from ..sampling.generate import SamplingOptions, generate_latents
from ..sampling.guidance import CFG, SyncCFG
from ..sampling.samplers import SAMPLERS
from ..sampling.schedules import SCHEDULES
from .common import AUDIO, SAMPLING, SEED_MAX, blame, host, input_error, progress


def audio_latent(samples: torch.Tensor, duration: float, **origin) -> dict:
    """ComfyUI LATENT of Foley audio latents [B, C, L] lasting `duration` seconds (`origin`: the keys
    that tell which VAE or model family made them)."""
    return {"samples": samples, "type": "audio", "duration": float(duration), **origin}


def vae_origin(vae) -> dict:
    """What identifies latents of `vae`: width, frames per second and a name for messages."""
    kind = "mel VAE" if hasattr(vae, "vocoder") else "DAC-VAE"
    return {"latent_dim": int(vae.config.latent_dim), "latent_rate": vae.sample_rate / vae.hop_length,
            "vae": f"{kind} ({vae.sample_rate} Hz, {vae.config.latent_dim}-d)"}


def check_origin(latent: dict, model) -> None:
    """ValueError naming `latent` when it comes from another family's model or VAE."""
    samples = latent["samples"]
    made_by = f" (from {latent['vae']})" if latent.get("vae") else ""
    if samples.shape[1] != model.latent_dim:
        raise input_error("latent", f"holds {samples.shape[1]}-channel latents{made_by} but {model.variant} samples "
                                    f"{model.latent_dim}-channel ones; encode the audio with this model's VAE")
    rate = latent.get("latent_rate")
    if rate is not None and abs(float(rate) - model.latent_rate) > 1e-3:
        raise input_error("latent", f"has {float(rate):g} latent frames per second{made_by} but {model.variant} "
                                    f"samples {model.latent_rate:g}; encode the audio with this model's VAE")
    family = latent.get("family")
    if family is not None and family != model.family.name:
        raise input_error("latent", f"was sampled by a {family} model, but this one is {model.family.title}; "
                                    "decode it with its own VAE and encode the audio with this model's VAE")


class SyncFoleySampler:
    DESCRIPTION = (
        "Generates audio latents from a text condition and, for video-to-audio, a visual condition (leave it "
        "unconnected for text-to-audio). Each take uses seed + take index. Long clips can be sampled in overlapping "
        "windows that are blended at every step. Connect a latent (Foley VAE Encode of existing sound) to edit it: "
        "denoise below 1 varies it and keeps its timing; a noise_mask (Foley Time Mask) regenerates only part of it "
        "and keeps the rest; Foley Extend Latent adds room for new sound before or after it.")
    CATEGORY = SAMPLING
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Audio latents [takes, channels, frames] (type 'audio', with their duration), for Foley VAE "
                       "Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("FOLEY_MODEL", {"tooltip": "From Load Foley Model (or Apply Foley LoRA)."}),
                "text_cond": ("FOLEY_TEXT_COND", {"tooltip": "From Foley Text Encode."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                                 "tooltip": "Noise seed; take k uses seed + k."}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": "Sampler steps; 0 = the model's "
                                  "(as released: 50 HunyuanVideo-Foley, 25 MMAudio; 25 the demo)."}),
                "sampler_name": (list(SAMPLERS), {"default": "euler", "tooltip": "ODE solver; euler as released. "
                                                  "heun/midpoint use 2 and rk4 4 model calls per step."}),
                "schedule": (list(SCHEDULES), {"default": "linear", "tooltip": "Noise levels from 1 to 0: linear as "
                                               "released, or cosine."}),
                "shift": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 100.0, "step": 0.01,
                                    "tooltip": "Timestep shift; above 1 spends more steps at high noise. 1 as released."}),
                "takes": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Variations to generate at once."}),
                "duration": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0, "step": 0.01,
                                       "tooltip": "Seconds of audio; 0 = the video's length. Required for text-to-audio."}),
                "window_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0, "step": 0.01,
                                             "tooltip": "Long video: sample in windows of this many seconds (e.g. 10); "
                                                        "0 = the model's: 8 s windows for MMAudio (its training "
                                                        "length), the whole clip at once for HunyuanVideo-Foley."}),
                "overlap_seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 600.0, "step": 0.01,
                                              "tooltip": "Overlap between windows, cross-faded at every step."}),
                "low_memory": ("BOOLEAN", {"default": False, "tooltip": "Run the guidance branches one after another "
                                           "instead of batched: less memory, same result, slower."}),
            },
            "optional": {
                "visual_cond": ("FOLEY_VISUAL_COND", {"tooltip": "From Foley Visual Encode; leave unconnected for "
                                                      "text-to-audio."}),
                "guidance": ("FOLEY_GUIDANCE", {"tooltip": "Foley CFG or SyncCFG Guidance; unconnected = the model's "
                                                "CFG (4.5)."}),
                "gpu_blocks": ("INT", {"default": -1, "min": -1, "max": 1024,
                                       "tooltip": "Low VRAM: keep only this many DiT blocks on the GPU and stream "
                                                  "the others from CPU memory one block ahead (XXL has 54 blocks, "
                                                  "XL 36). -1 = the whole model on the GPU."}),
                "latent": ("LATENT", {"tooltip": "Existing sound to start from (Foley VAE Encode of any audio, or "
                                                 "a previous sampler), with a noise_mask (Foley Time Mask) to "
                                                 "regenerate only part of it; its takes are the latent's clips."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "With a latent: how much of it to redo. 1 = all new sound (the "
                                                 "video's timing); 0.3 = a light variation of it. Runs the last "
                                                 "steps of a steps/denoise schedule, as KSampler."}),
            },
        }

    def sample(self, model, text_cond: TextFeatures, seed: int, steps: int, sampler_name: str, schedule: str,
               shift: float, takes: int, duration: float, window_seconds: float, overlap_seconds: float,
               low_memory: bool, visual_cond: VisualFeatures | None = None, guidance=None, gpu_blocks: int = -1,
               latent: dict | None = None, denoise: float = 1.0):
        guidance = guidance or CFG(model.defaults.cfg_scale)
        check_latent(latent, denoise, model)
        if latent is not None and duration <= 0 and visual_cond is None:
            duration = float(latent.get("duration") or latent["samples"].shape[-1] / model.latent_rate)
        duration = self._duration(model, text_cond, visual_cond, guidance, duration)
        edit = None if latent is None else self._edit(model, latent, denoise, duration)
        if sampler_name not in SAMPLERS:
            raise input_error("sampler_name", f"'{sampler_name}' is not one of {', '.join(SAMPLERS)}")
        if schedule not in SCHEDULES:
            raise input_error("schedule", f"'{schedule}' is not one of {', '.join(SCHEDULES)}")
        options = SamplingOptions(steps=steps or None, sampler=sampler_name, schedule=schedule, shift=shift, seed=seed,
                                  takes=takes, window_seconds=window_seconds or None, overlap_seconds=overlap_seconds,
                                  batched_guidance=not low_memory).resolved(model)
        if options.window_seconds and overlap_seconds >= options.window_seconds:
            raise input_error("overlap_seconds", f"{overlap_seconds:g} s must be shorter than the windows "
                                                 f"({options.window_seconds:g} s)")
        with host().stage(model.network, gpu_blocks=gpu_blocks), progress(options.steps, "sampling") as update:
            latents = generate_latents(model, text_cond, visual_cond, guidance, options, duration,
                                       callback=lambda info: update(info["i"] + 1), edit=edit)
        out = audio_latent(latents.float().cpu(), duration, latent_dim=model.latent_dim,
                           latent_rate=model.latent_rate, family=model.family.name)
        if edit is not None and edit.mask is not None:  # kept as core keeps it; VAE Decode keeps the original
            out.update(noise_mask=edit.mask[:, None].float(), original_samples=edit.latents)
            if edit.span is not None:
                out["sound_span"] = edit.span
        return (out,)

    @staticmethod
    def _edit(model, latent: dict, denoise: float, duration: float) -> AudioEdit:
        """The latent (and its noise_mask) on the timeline of the sound to make."""
        mask = latent.get("noise_mask")
        with blame("latent"):
            mask = None if mask is None else as_frame_mask(mask, "noise_mask")
            samples, mask = fit_length(latent["samples"].float().cpu(), mask, model.latent_length(duration))
        span = latent.get("sound_span")
        span = None if span is None else (min(int(span[0]), samples.shape[-1]), min(int(span[1]), samples.shape[-1]))
        return AudioEdit(samples, denoise, mask, span)

    @staticmethod
    def _duration(model, text: TextFeatures, visual: VisualFeatures | None, guidance, duration: float) -> float:
        """The audio length, after checking the conditions fit the model and each other."""
        model.check_conditions(text, visual)  # a ValueError that names text_cond or visual_cond
        if visual is None:
            if isinstance(guidance, SyncCFG) and guidance.sync_scale != 0:
                raise input_error("guidance", "SyncCFG builds its anchor from the video: connect a visual_cond, "
                                              "or use Foley CFG Guidance for text-to-audio")
            if duration <= 0:
                raise input_error("duration", "text-to-audio (no visual_cond) needs the length in seconds")
            if model.latent_length(duration) == 0:
                raise input_error("duration", f"{duration:g} s is shorter than one latent frame "
                                              f"({1 / model.latent_rate:g} s)")
            return duration
        if isinstance(guidance, SyncCFG) and guidance.anchor == "static" and visual.static_clip is None:
            raise input_error("guidance", "the static anchor needs Foley Visual Encode with static_anchor on")
        if duration > visual.duration + 1e-6:
            raise input_error("duration", f"{duration:g} s is longer than the video clip ({visual.duration:.2f} s); "
                                          "use 0 for the clip's length or shorten it")
        return duration if duration > 0 else visual.duration


def check_latent(latent: dict | None, denoise: float, model) -> None:
    """The sampler's `latent` and `denoise` inputs, each error naming its input."""
    with blame("denoise"):
        check_denoise(denoise)
    if latent is None:
        if denoise < 1:
            raise input_error("denoise", f"{denoise:g} varies existing sound: connect a latent (Foley VAE Encode "
                                         "of the audio), or use 1 to make sound from noise")
        return
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 3:
        raise input_error("latent", "expected audio latents [batch, channels, frames] from Foley VAE Encode or "
                                    "Foley Sampler")
    check_origin(latent, model)


class SyncFoleyVAEDecode:
    DESCRIPTION = "Decodes Foley audio latents into sound (ComfyUI AUDIO, 48 kHz mono, one batch item per take)."
    CATEGORY = AUDIO
    FUNCTION = "decode"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("Waveform [takes, 1, samples] with its sample rate.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("FOLEY_VAE", {"tooltip": "From Load Foley DAC-VAE."}),
            "samples": ("LATENT", {"tooltip": "Audio latents from Foley Sampler or Foley VAE Encode."}),
        }}

    def decode(self, vae, samples: dict):
        latents = samples.get("samples") if isinstance(samples, dict) else None
        if latents is None or latents.ndim != 3:
            raise input_error("samples", "expected audio latents [batch, channels, frames] from Foley Sampler")
        if latents.shape[1] != vae.config.latent_dim:
            raise input_error("samples", f"latents have {latents.shape[1]} channels but this VAE decodes "
                                         f"{vae.config.latent_dim}; are they from another model's VAE?")
        rate = samples.get("latent_rate")
        if rate is not None and abs(float(rate) - vae.sample_rate / vae.hop_length) > 1e-3:
            raise input_error("samples", f"latents of {float(rate):g} frames per second, but this VAE decodes "
                                         f"{vae.sample_rate / vae.hop_length:g}; are they from another model's VAE?")
        mask, original = samples.get("noise_mask"), samples.get("original_samples")
        with host().stage(vae):
            if mask is not None and original is not None:  # an edit: the original sound where it was kept
                with blame("samples"):
                    frames = as_frame_mask(mask, "noise_mask")
                    if frames.shape[-1] != latents.shape[-1] or original.shape[-1] != latents.shape[-1]:
                        raise ValueError("its noise_mask or original_samples do not cover its frames")
                waveform, rate = decode_edited(vae, latents, original, frames, samples.get("duration"),
                                               samples.get("sound_span"))
            else:
                waveform, rate = decode_latents(vae, latents, samples.get("duration"))
        return ({"waveform": waveform, "sample_rate": rate},)


class SyncFoleyVAEEncode:
    DESCRIPTION = ("Encodes sound (any ComfyUI AUDIO: any sample rate, stereo or more channels mixed down to "
                   "mono, resampled to the VAE's rate) into Foley audio latents, e.g. to edit with Foley Sampler.")
    CATEGORY = AUDIO
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Audio latents (type 'audio', with their duration).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("FOLEY_VAE", {"tooltip": "From Load Foley DAC-VAE."}),
            "audio": ("AUDIO", {"tooltip": "Any sound; every batch item is encoded."}),
        }}

    def encode(self, vae, audio: dict):
        waveform, rate = audio.get("waveform"), int(audio.get("sample_rate", 0))
        if waveform is None or waveform.shape[-1] == 0 or rate <= 0:
            raise input_error("audio", "is empty or has no sample rate")
        if waveform.ndim == 2:
            waveform = audio_from_comfy(audio)[0].unsqueeze(0)
        with host().stage(vae):
            latents = encode_waveform(vae, waveform, rate)
        return (audio_latent(latents, waveform.shape[-1] / rate, **vae_origin(vae)),)


NODES = {
    "SyncFoleySampler": (SyncFoleySampler, "Foley Sampler"),
    "SyncFoleyVAEDecode": (SyncFoleyVAEDecode, "Foley VAE Decode"),
    "SyncFoleyVAEEncode": (SyncFoleyVAEEncode, "Foley VAE Encode"),
}
