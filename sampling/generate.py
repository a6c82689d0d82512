"""From encoded conditions to audio latents: guidance, windows, noise and a sampler put together."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..models.dit import cat_text_kv
from .features import TextFeatures, VisualFeatures
from .guidance import CFG, Guidance, GuidedVelocity, branch_inputs
from .noise import initial_noise, take_seeds
from .samplers import get_sampler
from .schedules import make_sigmas
from .windowed import Window, WindowedVelocity, plan_windows


@dataclass(frozen=True)
class SamplingOptions:
    steps: int = 50
    sampler: str = "euler"
    schedule: str = "linear"
    shift: float = 1.0
    seed: int = 0
    takes: int = 1
    window_seconds: float | None = None  # None: the whole clip in one window
    overlap_seconds: float = 1.0
    batched_guidance: bool = True  # False: one branch at a time (less memory, same result)


def prepare_velocity(model, text: TextFeatures, visual: VisualFeatures | None, guidance: Guidance,
                     options: SamplingOptions, total: int) -> tuple[WindowedVelocity, list[Window]]:
    """Prepare every branch's conditions for every window once, before the first step."""
    rate = model.config.latent_rate
    if options.window_seconds:
        grid = max(1, round(rate * visual.segment_seconds)) if visual is not None else 1
        windows = plan_windows(total, int(options.window_seconds * rate), int(options.overlap_seconds * rate), grid)
    else:
        windows = [Window(0, total)]
    inputs = branch_inputs(guidance, text, visual)
    # Text keys/values and rotary tables do not depend on the window: compute them once.
    text_kv = {}
    for name, (tokens, _) in inputs.items():
        shared = next((text_kv[other] for other, (t, _) in inputs.items() if t is tokens and other in text_kv), None)
        text_kv[name] = shared or model.prepare_text(tokens)
    joint_text_kv = None
    if options.batched_guidance and len(inputs) > 1:
        joint_text_kv = cat_text_kv([_expand_text_kv(text_kv[n], options.takes) for n in guidance.branches])
    ropes = {}
    velocities = []
    for window in windows:
        conditions = {}
        for name, (tokens, features) in inputs.items():
            if features is not None and len(windows) > 1:
                features = features.window(window.start / rate, window.length / rate)
            clip, sync = (features.clip, features.sync) if features is not None else (None, None)
            visual_length = clip.shape[1] if clip is not None else model.visual_lengths(window.length)[0]
            key = (window.length, visual_length)
            if key not in ropes:
                ropes[key] = model.rope_tables(*key)
            conditions[name] = model.prepare(tokens, clip, sync, window.length, text_kv[name], ropes[key])
        velocities.append(GuidedVelocity(model, guidance, conditions, options.takes, options.batched_guidance,
                                         joint_text_kv))
    return WindowedVelocity(windows, velocities, total, model.device), windows


def _expand_text_kv(text_kv, takes: int):
    return tuple((k.expand(takes, *k.shape[1:]), v.expand(takes, *v.shape[1:])) for k, v in text_kv)


@torch.no_grad()
def generate_latents(
    model,
    text: TextFeatures,
    visual: VisualFeatures | None = None,
    guidance: Guidance = CFG(),
    options: SamplingOptions = SamplingOptions(),
    duration: float | None = None,
    callback: Callable[[dict], None] | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample `[takes, latent_dim, frames]` audio latents (fp32).

    `duration` defaults to the video's; without a video it is required. `callback(info)` runs after
    every step (progress, previews); raising from it interrupts sampling.
    """
    if duration is None:
        if visual is None:
            raise ValueError("without a video, give the duration of the audio to generate")
        duration = visual.duration
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if visual is not None:
        visual = visual.trimmed(duration)
    total = model.config.latent_length(duration)
    velocity, _ = prepare_velocity(model, text, visual, guidance, options, total)
    if noise is None:
        noise = initial_noise(take_seeds(options.seed, options.takes), model.config.latent_dim, total)
    sigmas = make_sigmas(options.schedule, options.steps, options.shift).to(model.device)
    return get_sampler(options.sampler)(velocity, noise.to(model.device), sigmas, callback)
