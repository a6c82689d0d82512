"""Noise-level schedules: decreasing sigmas from 1 (noise) to 0 (data), `steps + 1` values."""
from __future__ import annotations

import torch


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3-style timestep shift: spends more steps at high noise when shift > 1."""
    if shift == 1.0:
        return sigmas
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def linear_sigmas(steps: int, shift: float = 1.0) -> torch.Tensor:
    """The reference schedule: `linspace(1, 0, steps + 1)`, optionally shifted."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return shift_sigmas(torch.linspace(1, 0, steps + 1), shift)


def cosine_sigmas(steps: int, shift: float = 1.0) -> torch.Tensor:
    """Denser steps near both ends (sigma = (1 + cos(pi * u)) / 2); useful with few steps."""
    u = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    return shift_sigmas(((1 + torch.cos(torch.pi * u)) / 2).float(), shift)


SCHEDULES = {"linear": linear_sigmas, "cosine": cosine_sigmas}


def make_sigmas(schedule: str, steps: int, shift: float = 1.0) -> torch.Tensor:
    try:
        return SCHEDULES[schedule](steps, shift)
    except KeyError:
        raise ValueError(f"unknown schedule '{schedule}'; choose one of {', '.join(SCHEDULES)}") from None
