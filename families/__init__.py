"""Model families: what the pipeline, the sampler and the nodes need to know of each, in one small
adapter per family (`hunyuan`, `mmaudio`); everything else stays family-agnostic.

`as_flow(model)` takes a family's network (or an adapter already) and returns its `FlowModel`.
"""
from __future__ import annotations

from .base import Conditioner, Family, FlowModel, SamplingDefaults

FAMILY_KEY = "syncfoley_family"  # checkpoint metadata naming the family (files of the same layout, other defaults)


def families() -> dict[str, Family]:
    from .demo import DEMO
    from .hunyuan import HUNYUAN
    from .mmaudio import MMAUDIO

    return {family.name: family for family in (HUNYUAN, MMAUDIO, DEMO)}


def family_named(name: str | None) -> Family | None:
    """The family a checkpoint's metadata names (None: none named)."""
    if not name:
        return None
    known = families()
    if name not in known:
        raise ValueError(f"unknown model family '{name}'; known: {', '.join(known)}")
    return known[name]


def as_flow(model, family: Family | None = None) -> FlowModel:
    """The sampler's view of `model`: a FlowModel passes through; a network gets its family's adapter
    (or the adapter of `family`, for a network of that layout with other defaults, as the demo's)."""
    if isinstance(model, FlowModel):
        return model
    from ..models.dit import FoleyDiT
    from ..models.mmaudio import MMAudioNet

    if isinstance(model, FoleyDiT):
        from .hunyuan import HUNYUAN, FoleyFlow

        return FoleyFlow(model, family or HUNYUAN)
    if isinstance(model, MMAudioNet):
        from .mmaudio import MMAUDIO, MMAudioFlow

        return MMAudioFlow(model, family or MMAUDIO)
    raise TypeError(f"{type(model).__name__} is not a network of a model family this package runs "
                    "(HunyuanVideo-Foley's FoleyDiT or MMAudio's network)")


__all__ = ["FAMILY_KEY", "Conditioner", "Family", "FlowModel", "SamplingDefaults", "as_flow", "families", "family_named"]
