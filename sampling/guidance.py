"""Guidance composed outside the sampler: which conditioned predictions a step needs, and how they
combine into one velocity.

- `CFG` is the reference's classifier-free guidance: `v = v_u + s (v_c - v_u)` with the learned
  null visual features and the negative prompt as the unconditional branch.
- `SyncCFG` (Harmony, 2025) adds a negative anchor that differs from the condition only in its
  motion, the anchor being the same prompt with a static video (first frame held) or the real video
  shifted in time. Two forms:
  - "add" (default): `v = v_u + s (v_c - v_u) + s_sync (v_c - v_anchor)`, CFG plus a sync term;
  - "harmony": the anchor as the base of the sync guidance, `v = v_anchor + s_sync (v_c - v_anchor)`,
    with text CFG (s > 1) taken from the unconditional branch to the anchor:
    `v = v_u + s (v_anchor - v_u) + s_sync (v_c - v_anchor)`. It equals the "add" form at sync scale
    `s_sync - s`, so `s_sync = s` is plain CFG and `s_sync < s` weighs motion less than CFG does.
  `interval = (low, high)` applies the sync term only at steps whose sigma (1 = noise, 0 = clean)
  lies in [low, high]; outside it the step is plain CFG (the sync weight takes its neutral value:
  0 for "add", s for "harmony"). Every branch still runs at every step so the batch keeps its shape.

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
FORMS = ("add", "harmony")


@dataclass(frozen=True)
class CFG:
    scale: float  # a model's own is `FlowModel.defaults.cfg_scale`

    @property
    def branches(self) -> tuple[str, ...]:
        # As in the reference, a scale of 1 or below runs the conditional branch alone.
        return (UNCOND, COND) if self.scale > 1.0 else (COND,)

    def combine(self, v: Mapping[str, torch.Tensor], sigma: torch.Tensor | None = None) -> torch.Tensor:
        if self.scale <= 1.0:
            return v[COND]
        return v[UNCOND] + self.scale * (v[COND] - v[UNCOND])


@dataclass(frozen=True)
class SyncCFG:
    scale: float
    sync_scale: float
    anchor: str = "static"  # "static" (first frame held) or "shift" (video moved by shift_seconds)
    shift_seconds: float = 0.64
    form: str = "add"  # "add": CFG + sync term; "harmony": the anchor as the base (module docstring)
    interval: tuple[float, float] | None = None  # sigmas (1 = noise) where the sync term applies; None: all

    def __post_init__(self):
        if self.anchor not in ANCHORS:
            raise ValueError(f"unknown SyncCFG anchor '{self.anchor}'; choose one of {', '.join(ANCHORS)}")
        if self.form not in FORMS:
            raise ValueError(f"unknown SyncCFG form '{self.form}'; choose one of {', '.join(FORMS)}")
        if self.interval is not None and not 0.0 <= self.interval[0] <= self.interval[1] <= 1.0:
            raise ValueError(f"SyncCFG interval {self.interval} must be (low, high) with 0 <= low <= high <= 1 "
                             "(sigmas: 1 is pure noise, 0 the clean sound)")

    @property
    def branches(self) -> tuple[str, ...]:
        base = CFG(self.scale).branches
        return base + (ANCHOR,) if self.sync_scale != 0 or self.form == "harmony" else base

    def _sync_weight(self, neutral: float, sigma: torch.Tensor | None):
        """`sync_scale` inside the interval, `neutral` (the weight that makes the step plain CFG) outside."""
        if self.interval is None:
            return self.sync_scale
        if sigma is None:
            raise ValueError("a SyncCFG with an interval needs the step's sigma to combine its branches")
        sigma = torch.as_tensor(sigma)
        inside = (sigma >= self.interval[0]) & (sigma <= self.interval[1])  # a tensor: no host read per step
        return torch.where(inside, self.sync_scale, neutral).to(torch.float32)

    def combine(self, v: Mapping[str, torch.Tensor], sigma: torch.Tensor | None = None) -> torch.Tensor:
        if self.form == "harmony":
            base = CFG(self.scale)
            neutral = self.scale if self.scale > 1.0 else 1.0
            # Text CFG up to the anchor, then the sync guidance from the anchor to the condition.
            out = base.combine({UNCOND: v.get(UNCOND), COND: v[ANCHOR]}) if base.scale > 1.0 else v[ANCHOR]
            return out + self._weight_like(self._sync_weight(neutral, sigma), out) * (v[COND] - v[ANCHOR])
        out = CFG(self.scale).combine(v)
        if self.sync_scale != 0:
            out = out + self._weight_like(self._sync_weight(0.0, sigma), out) * (v[COND] - v[ANCHOR])
        return out

    @staticmethod
    def _weight_like(weight, out: torch.Tensor):
        if isinstance(weight, torch.Tensor):  # per-sample sigmas broadcast over the sample's latent
            weight = weight.to(out.device, out.dtype)
            return weight.reshape(-1, *(1,) * (out.ndim - 1)) if weight.ndim == 1 else weight
        return weight


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
        return self.guidance.combine(dict(zip(self.names, v)), sigma)
