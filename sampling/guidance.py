"""Guidance composed outside the sampler: which conditioned predictions a step needs, and how they
combine into one velocity.

- `CFG` is the reference's classifier-free guidance: `v = v_u + s (v_c - v_u)` with the learned
  null visual features and the negative prompt as the unconditional branch.
- `SyncCFG` (Harmony, 2025) adds a negative anchor that differs from the condition only in its
  motion: `v = v_u + s (v_c - v_u) + s_sync (v_c - v_anchor)`, the anchor being the same prompt
  with a static video (first frame held) or the real video shifted in time.

`GuidedVelocity` turns a model, a guidance and the prepared conditions of every branch into the
`velocity(x, sigma)` a sampler integrates. All branches run as one batched forward by default; the
low-memory mode runs them one after another.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from .features import TextFeatures, VisualFeatures

UNCOND, COND, ANCHOR = "uncond", "cond", "anchor"
ANCHORS = ("static", "shift")


@dataclass(frozen=True)
class CFG:
    scale: float  # a model's own is `FlowModel.defaults.cfg_scale`

    @property
    def branches(self) -> tuple[str, ...]:
        # As in the reference, a scale of 1 or below runs the conditional branch alone.
        return (UNCOND, COND) if self.scale > 1.0 else (COND,)

    def combine(self, v: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.scale <= 1.0:
            return v[COND]
        return v[UNCOND] + self.scale * (v[COND] - v[UNCOND])


@dataclass(frozen=True)
class SyncCFG:
    scale: float
    sync_scale: float
    anchor: str = "static"  # "static" (first frame held) or "shift" (video moved by shift_seconds)
    shift_seconds: float = 0.64

    def __post_init__(self):
        if self.anchor not in ANCHORS:
            raise ValueError(f"unknown SyncCFG anchor '{self.anchor}'; choose one of {', '.join(ANCHORS)}")

    @property
    def branches(self) -> tuple[str, ...]:
        base = CFG(self.scale).branches
        return base + (ANCHOR,) if self.sync_scale != 0 else base

    def combine(self, v: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = CFG(self.scale).combine(v)
        if self.sync_scale != 0:
            out = out + self.sync_scale * (v[COND] - v[ANCHOR])
        return out


Guidance = CFG | SyncCFG


def anchor_features(guidance: Guidance, visual: VisualFeatures) -> VisualFeatures:
    if guidance.anchor == "static":
        return visual.static_anchor()
    return visual.shifted(guidance.shift_seconds)


def branch_inputs(
    guidance: Guidance, text: TextFeatures, visual: VisualFeatures | None
) -> dict[str, tuple[torch.Tensor, VisualFeatures | None]]:
    """Text tokens and visual features per branch; `None` means the learned null visual features."""
    inputs = {}
    for name in guidance.branches:
        if name == UNCOND:
            inputs[name] = (text.negative, None)
        elif name == COND:
            inputs[name] = (text.positive, visual)
        else:
            if visual is None:
                raise ValueError("SyncCFG needs a video: its anchor is built from the video's frames. "
                                 "Use CFG for text-to-audio.")
            inputs[name] = (text.positive, anchor_features(guidance, visual))
    return inputs


class GuidedVelocity:
    """`velocity(x, sigma)` of a guidance over prepared branch conditions, for `takes` samples.

    `flow` is a family's `FlowModel`; its `conditioner` stacks the branches for a batched forward.
    """

    def __init__(self, flow, guidance: Guidance, conditions: Mapping[str, object], takes: int,
                 batched: bool = True, conditioner=None):
        self.flow = flow
        self.guidance = guidance
        self.names = guidance.branches
        branches = [conditions[name] for name in self.names]
        if batched and len(branches) > 1:
            self.joint, self.branches = (conditioner or flow.conditioner()).cat(branches, takes), None
        else:
            self.joint, self.branches = None, [branch.expand(takes) for branch in branches]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.joint is not None:
            v = self.flow.velocity(x.repeat(len(self.names), 1, 1), sigma, self.joint).chunk(len(self.names))
        else:
            v = [self.flow.velocity(x, sigma, branch) for branch in self.branches]
        return self.guidance.combine(dict(zip(self.names, v)))
