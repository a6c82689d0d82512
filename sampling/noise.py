"""Initial noise that depends on the seed alone, never on the device or the clip length."""
from __future__ import annotations

from typing import Sequence

import torch


def take_seeds(seed: int, takes: int) -> list[int]:
    """Seeds of `takes` takes: consecutive, so take k of seed s is take 0 of seed s + k."""
    return [seed + k for k in range(takes)]


def initial_noise(seeds: Sequence[int], channels: int, length: int, device=None) -> torch.Tensor:
    """`[len(seeds), channels, length]` standard normal noise, one CPU generator per take.

    Drawn time-major, so the first N latent frames of a take are the same whatever the clip length.
    """
    takes = [torch.randn(length, channels, generator=torch.Generator().manual_seed(int(s))).T for s in seeds]
    return torch.stack(takes).contiguous().to(device)
