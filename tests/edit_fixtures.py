"""Tiny sets of both families with the conditions of a 2 s clip and an encoded 2 s stereo sound, built once per
test session for the editing tests (test_edit_*.py), whatever order they run in."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from tiny_mmaudio import write_tiny_mmaudio

from syncfoley.pipeline import FoleyModels, FoleyPipeline
from syncfoley.pipeline.decode import encode_waveform
from syncfoley.sampling.edit import fit_length

SECONDS = 2.0
FAMILIES = ("hunyuanvideo-foley", "mmaudio")
_SETS: dict = {}


def stereo_sound(seconds: float = SECONDS, rate: int = 44100) -> dict:
    """A stereo ComfyUI AUDIO at 44.1 kHz: a tone on the left, clicks on the right."""
    t = torch.arange(int(seconds * rate)) / rate
    left = 0.3 * torch.sin(2 * math.pi * 440 * t)
    right = 0.5 * ((t * 4) % 1 < 0.01).float()
    return {"waveform": torch.stack([left, right])[None], "sample_rate": rate}


def family_set(name: str, tiny_models: dict, folder: Path) -> dict:
    """models, pipeline, text and visual conditions, frames, the sound and its latents fitted to the clip."""
    if name not in _SETS:
        if name == "mmaudio":
            write_tiny_mmaudio(folder, mode="16k")
            models = FoleyModels.from_folder(folder, device="cpu")
        else:
            models = FoleyModels.from_folder(tiny_models["dit"].parent, device="cpu")
        pipeline = FoleyPipeline(models, device="cpu")
        frames = torch.rand(int(SECONDS * 25), 32, 32, 3, generator=torch.Generator().manual_seed(0))
        sound = stereo_sound()
        latents = encode_waveform(models.vae, sound["waveform"], sound["sample_rate"])
        latents, _ = fit_length(latents, None, models.model.latent_length(SECONDS))
        _SETS[name] = dict(models=models, pipeline=pipeline, frames=frames, sound=sound, latents=latents,
                           text=pipeline.encode_text("glass breaks"), visual=pipeline.encode_video((frames, 25.0)))
    return _SETS[name]
