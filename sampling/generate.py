"""From encoded conditions to audio latents: guidance, windows, noise and a sampler put together."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

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
    velocities = []
    for window in windows:
        conditions = {}
        for name, (tokens, features) in inputs.items():
            if features is not None and len(windows) > 1:
                features = features.window(window.start / rate, window.length / rate)
            clip, sync = (features.clip, features.sync) if features is not None else (None, None)
            conditions[name] = model.prepare(tokens, clip, sync, window.length)
        velocities.append(GuidedVelocity(model, guidance, conditions, options.takes, options.batched_guidance))
    return WindowedVelocity(windows, velocities, total, model.device), windows


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
