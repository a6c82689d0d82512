"""Long videos: the velocity of a long latent computed on overlapping windows and blended.

At every step each window's velocity is computed on its slice of the latent (memory is bounded by
the window, not the clip) and the slices are blended with linear ramps over the overlaps, so no
seam survives: every window sees the same current latent in the overlap. A clip no longer than one
window is sampled exactly as without windowing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Window:
    start: int  # latent frames
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


def plan_windows(total: int, window: int, overlap: int, grid: int = 1) -> list[Window]:
    """Windows of `window` latents covering `total`, overlapping by at least `overlap`.

    Starts lie on multiples of `grid` (the Synchformer segment stride in latents) so every window's
    visual features are whole segments. The last window ends at `total` and may be up to
    `grid - 1` latents longer than the others.
    """
    if total <= window:
        return [Window(0, total)]
    if not 0 <= overlap < window:
        raise ValueError(f"the overlap ({overlap} latents) must be shorter than the window ({window})")
    stride = max(grid, (window - overlap) // grid * grid)
    last_start = (total - window) // grid * grid
    starts = list(range(0, last_start, stride)) + [last_start]
    return [Window(s, window) for s in starts[:-1]] + [Window(last_start, total - last_start)]


def blend_weights(windows: Sequence[Window], total: int, device=None) -> list[torch.Tensor]:
    """Per-window weights over its own span: linear ramps in overlaps, summing to 1 everywhere."""
    ramps = []
    for i, w in enumerate(windows):
        ramp = torch.ones(w.length, dtype=torch.float64)
        if i > 0:  # rise over the overlap with the previous window
            rise = max(0, windows[i - 1].end - w.start)
            ramp[:rise] = (torch.arange(rise, dtype=torch.float64) + 0.5) / rise
        if i + 1 < len(windows):  # fall over the overlap with the next window
            fall = max(0, w.end - windows[i + 1].start)
            if fall:
                ramp[w.length - fall:] = torch.minimum(
                    ramp[w.length - fall:], 1 - (torch.arange(fall, dtype=torch.float64) + 0.5) / fall)
        ramps.append(ramp)
    total_weight = torch.zeros(total, dtype=torch.float64)
    for w, ramp in zip(windows, ramps):
        total_weight[w.start:w.end] += ramp
    return [(ramp / total_weight[w.start:w.end]).float().to(device) for w, ramp in zip(windows, ramps)]


class WindowedVelocity:
    """Blend the velocities of per-window velocity functions into one over the whole latent."""

    def __init__(self, windows: Sequence[Window], velocities: Sequence[Velocity], total: int, device=None):
        if len(windows) != len(velocities):
            raise ValueError("one velocity function per window is needed")
        self.windows = list(windows)
        self.velocities = list(velocities)
        self.weights = blend_weights(self.windows, total, device)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if len(self.windows) == 1:
            return self.velocities[0](x, sigma)
        out = torch.zeros_like(x)
        for window, velocity, weight in zip(self.windows, self.velocities, self.weights):
            span = slice(window.start, window.end)
            out[..., span] += velocity(x[..., span].contiguous(), sigma) * weight
        return out
