"""From encoded conditions to audio latents: guidance, windows, noise and a sampler put together.

The model is any family's network (or its `FlowModel` adapter from `families`): the sampler sees one
convention, and every default left as None is the model's own (`FlowModel.defaults`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from ..families import FlowModel, as_flow
from .edit import AudioEdit, EditPlan
from .features import TextFeatures, VisualFeatures
from .guidance import CFG, Guidance, GuidedVelocity, branch_inputs
from .noise import initial_noise, take_seeds
from .samplers import get_sampler
from .schedules import make_sigmas
from .windowed import Window, WindowedVelocity, plan_windows


@dataclass(frozen=True)
class SamplingOptions:
    steps: int | None = None  # None: the model's (50 HunyuanVideo-Foley, 25 MMAudio and the demo)
    sampler: str = "euler"
    schedule: str = "linear"
    shift: float = 1.0
    seed: int = 0
    takes: int = 1
    window_seconds: float | None = None  # None: the model's (MMAudio: 8 s windows); 0: the whole clip at once
    overlap_seconds: float | None = None  # None: the model's (1 s)
    batched_guidance: bool = True  # False: one branch at a time (less memory, same result)

    def resolved(self, model) -> "SamplingOptions":
        """These options with every None replaced by the model's default."""
        defaults = as_flow(model).defaults
        return replace(
            self,
            steps=defaults.steps if self.steps is None else self.steps,
            window_seconds=(defaults.window_seconds or 0.0) if self.window_seconds is None else self.window_seconds,
            overlap_seconds=defaults.overlap_seconds if self.overlap_seconds is None else self.overlap_seconds,
        )


def prepare_velocity(model, text: TextFeatures, visual: VisualFeatures | None, guidance: Guidance,
                     options: SamplingOptions, total: int) -> tuple[WindowedVelocity, list[Window]]:
    """Prepare every branch's conditions for every window once, before the first step."""
    flow = as_flow(model)
    options = options.resolved(flow)
    rate = flow.latent_rate
    if options.window_seconds:
        grid = max(1, round(rate * visual.segment_seconds)) if visual is not None else 1
        windows = plan_windows(total, int(options.window_seconds * rate), int(options.overlap_seconds * rate), grid)
    else:
        windows = [Window(0, total)]
    inputs = branch_inputs(guidance, text, visual)
    conditioner = flow.conditioner()
    texts = {}  # one prepared text per distinct prompt tensor, shared by every window
    for name, (tokens, _) in inputs.items():
        shared = next((other for other, (t, _) in inputs.items() if t is tokens and other in texts), None)
        texts[name] = texts[shared] if shared is not None else conditioner.text(tokens)
    velocities = []
    for window in windows:
        features = {name: f if f is None or len(windows) == 1 else f.window(window.start / rate, window.length / rate)
                    for name, (_, f) in inputs.items()}
        # Branches without a video take the learned empty features at the video's token counts, so
        # every branch of the window stacks into one batch.
        shown = next((f for f in features.values() if f is not None), None)
        lengths = (shown.clip.shape[1], shown.sync.shape[1]) if shown is not None else None
        conditions = {}
        for name, f in features.items():
            clip, sync = (f.clip, f.sync) if f is not None else (None, None)
            conditions[name] = conditioner.prepare(texts[name], clip, sync, window.length, lengths)
        velocities.append(GuidedVelocity(flow, guidance, conditions, options.takes, options.batched_guidance,
                                         conditioner))
    return WindowedVelocity(windows, velocities, total, flow.device), windows


@torch.no_grad()
def generate_latents(
    model,
    text: TextFeatures,
    visual: VisualFeatures | None = None,
    guidance: Guidance | None = None,
    options: SamplingOptions = SamplingOptions(),
    duration: float | None = None,
    callback: Callable[[dict], None] | None = None,
    noise: torch.Tensor | None = None,
    edit: AudioEdit | None = None,
) -> torch.Tensor:
    """Sample `[takes, latent_dim, frames]` audio latents (fp32) in the space of the model's VAE.

    `guidance` defaults to the model's CFG; `duration` defaults to the video's (or the edited audio's);
    without either it is required. `callback(info)` runs after every step (progress, previews); raising
    from it interrupts sampling. `edit` starts from existing sound and keeps part of it (`sampling.edit`);
    the takes are then the edited clips' when it holds several.
    """
    flow: FlowModel = as_flow(model)
    options = options.resolved(flow)
    guidance = CFG(flow.defaults.cfg_scale) if guidance is None else guidance
    edit = None if edit is None or edit.plain else edit
    if duration is None and visual is None and edit is not None:
        duration = edit.latents.shape[-1] / flow.latent_rate
    if duration is None:
        if visual is None:
            raise ValueError("without a video, give the duration of the audio to generate")
        duration = visual.duration
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if visual is not None:
        visual = visual.trimmed(duration)
    total = flow.latent_length(duration)
    plan = None if edit is None else EditPlan(flow, edit, total, options.takes, flow.device)
    if plan is not None:
        options = replace(options, takes=plan.takes)
    velocity, _ = prepare_velocity(flow, text, visual, guidance, options, total)
    if noise is None:
        noise = initial_noise(take_seeds(options.seed, options.takes), flow.latent_dim, total)
    sampler = get_sampler(options.sampler)
    if plan is None:
        sigmas = make_sigmas(options.schedule, options.steps, options.shift).to(flow.device)
        latents = sampler(velocity, noise.to(flow.device), sigmas, callback)
        return flow.to_vae(latents)
    noise, sigmas = noise.to(flow.device), plan.sigmas(options).to(flow.device)
    latents = sampler(plan.velocity(velocity, noise), plan.start(noise, sigmas[0]), sigmas, callback)
    return plan.finish(flow.to_vae(latents))
