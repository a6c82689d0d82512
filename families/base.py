"""What a model family is to the rest of the package: its defaults, the encoders it takes, and a flow
model adapter that shows its network to the sampler in one convention.

The sampler's convention (the reference's for HunyuanVideo-Foley): latents `[B, C, L]` channel-first,
sigma = 1 is noise and sigma = 0 data, `x_sigma = (1 - sigma) x0 + sigma noise`, and the velocity
`v = noise - x0`. Latents leave the sampler in the space of the family's VAE (`to_vae`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch


@dataclass(frozen=True)
class SamplingDefaults:
    """What a model was released (or trained) to run with; every front end takes these."""

    steps: int
    cfg_scale: float = 4.5
    sync_scale: float = 1.0  # SyncCFG's sync term
    anchor: str = "static"  # SyncCFG's negative anchor: "static" (first frame held) or "shift"
    negative_prompt: str = ""
    window_seconds: float | None = None  # long videos: windows of the length the model was trained on
    overlap_seconds: float = 1.0


@dataclass(frozen=True)
class FilePart:
    """One file (or folder) of a family's set, recognised in a model folder by its lower-cased name."""

    part: str  # "model", "vae", "vocoder", "synchformer", "text_encoder", "image_encoder", "clip"
    what: str  # for messages: the release's file name
    matches: Callable[[str], bool]
    kind: str = "file"  # "file", "folder" or "any"


def named(*words: str, without: Sequence[str] = (), pattern: str | None = None) -> Callable[[str], bool]:
    """A name test: any of `words` (or `pattern`) and none of `without`."""
    def test(name: str) -> bool:
        hit = any(w in name for w in words) or (pattern is not None and re.search(pattern, name) is not None)
        return hit and not any(w in name for w in without)
    return test


@dataclass(frozen=True)
class Family:
    """A set of models that work together: its name, defaults, the encoders whose features it reads
    (by each encoder's `kind`) and the files of its set."""

    name: str
    title: str
    defaults: SamplingDefaults
    text_encoders: tuple[str, ...]
    image_encoders: tuple[str, ...]
    sync_encoders: tuple[str, ...]
    loaders_hint: str  # what to load instead, for errors about a part of another family
    files: tuple[FilePart, ...] = field(default=(), compare=False)
    # (part, candidate paths, the parts found so far) -> the candidates that go with them
    narrow: Callable[[str, list, dict], list] | None = field(default=None, compare=False)


class Conditioner:
    """Prepares a family's conditions for one sampling run; caches what windows and branches share
    (text projections, rotary tables, stacked text) and dies with the run."""

    def text(self, tokens: torch.Tensor) -> Any:
        """The prompt's tokens `[1, Lt, D]` made ready for `prepare` (shareable by every window)."""
        raise NotImplementedError

    def prepare(self, text: Any, clip: torch.Tensor | None, sync: torch.Tensor | None, length: int,
                visual_lengths: tuple[int, int] | None = None) -> Any:
        """Conditions for `length` latents; `None` visual features take the learned empty ones, as many
        frame and sync tokens as `visual_lengths` says (default: what goes with `length`)."""
        raise NotImplementedError

    def cat(self, parts: Sequence[Any], takes: int = 1) -> Any:
        """Conditions of batch 1, each expanded to `takes` and stacked along the batch (guidance
        branches run as one forward)."""
        return type(parts[0]).cat([part.expand(takes) for part in parts])


class FlowModel:
    """A family's network seen by the sampler. Subclasses adapt layout and time convention."""

    def __init__(self, network: torch.nn.Module, family: Family):
        self.network = network
        self.family = family

    # Facts -----------------------------------------------------------------------------------
    @property
    def defaults(self) -> SamplingDefaults:
        return self.family.defaults

    @property
    def config(self):
        return self.network.config

    @property
    def latent_dim(self) -> int:
        return self.network.config.latent_dim

    @property
    def latent_rate(self) -> float:
        """Latent frames per second."""
        return float(self.network.config.latent_rate)

    def latent_length(self, seconds: float) -> int:
        return self.network.config.latent_length(seconds)

    @property
    def device(self) -> torch.device:
        return self.network.device

    @property
    def dtype(self) -> torch.dtype:
        return self.network.dtype

    @property
    def variant(self) -> str:
        """'HunyuanVideo-Foley XL', 'MMAudio large_44k_v2', 'the SyncFoley demo model (hidden 128, ...)'."""
        size = getattr(self.network.config, "variant", "")
        return f"{self.family.title} {size.removeprefix('custom ') if self.family.title.startswith('the ') else size}".strip()

    def with_network(self, network: torch.nn.Module) -> "FlowModel":
        """The same adapter around another network of the family (a LoRA-merged copy, say)."""
        return type(self)(network, self.family)

    # Sampling ----------------------------------------------------------------------------------
    def conditioner(self) -> Conditioner:
        raise NotImplementedError

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, conditions: Any) -> torch.Tensor:
        """`v = noise - x0` `[B, C, L]` (fp32) at noise level `sigma` (scalar or `[B]`)."""
        raise NotImplementedError

    def to_vae(self, latents: torch.Tensor) -> torch.Tensor:
        """Sampled latents `[B, C, L]` in the VAE's space (what VAE Decode takes)."""
        return latents

    def from_vae(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE latents `[B, C, L]` in the space the network samples."""
        return latents

    # Training ----------------------------------------------------------------------------------
    def null_features(self) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """What condition dropout puts in while training: (the null text `[Lt, Dt]`, or None where the
        family trains with its text encoder's empty prompt; the learned empty clip row `[1, Dc]` and
        sync row `[1, Ds]`). The network's own parameters, so dropout trains them."""
        network = self.network
        return None, network.empty_clip_feat.reshape(1, -1), network.empty_sync_feat.reshape(1, -1)

    # Checks ----------------------------------------------------------------------------------
    def check_conditions(self, text, visual) -> None:
        """ValueError naming the input when text or visual features come from another family's
        encoders (or have widths this network does not take)."""
        config = self.network.config
        family = self.family
        if text is not None:
            _check_encoder("text_cond", getattr(text, "encoder", None), family.text_encoders, family)
            if text.positive.shape[-1] != config.text_dim:
                raise ValueError(f"text_cond: has {text.positive.shape[-1]}-d features but {self.variant} takes "
                                 f"{config.text_dim}-d; {family.loaders_hint}")
        if visual is not None:
            _check_encoder("visual_cond", getattr(visual, "image_encoder", None), family.image_encoders, family)
            _check_encoder("visual_cond", getattr(visual, "sync_encoder", None), family.sync_encoders, family)
            widths = (visual.clip.shape[-1], visual.sync.shape[-1])
            if widths != (config.clip_dim, config.sync_dim):
                raise ValueError(f"visual_cond: has {widths[0]}-d frame and {widths[1]}-d sync features but "
                                 f"{self.variant} takes {config.clip_dim}-d and {config.sync_dim}-d; "
                                 f"{family.loaders_hint}")


ENCODER_TITLES = {
    "clap": "CLAP (HunyuanVideo-Foley)", "siglip2": "SigLIP2 (HunyuanVideo-Foley)",
    "synchformer": "Synchformer", "mmaudio-clip": "CLIP (MMAudio)",
    "demo-text": "the demo's text encoder", "demo-image": "the demo's image encoder",
    "demo-sync": "the demo's sync encoder",
}


def _check_encoder(input_name: str, kind: str | None, accepted: tuple[str, ...], family: Family) -> None:
    if kind is None or kind in accepted:  # features made by hand carry no encoder: widths decide
        return
    wanted = " or ".join(ENCODER_TITLES.get(k, k) for k in accepted)
    raise ValueError(f"{input_name}: was encoded with {ENCODER_TITLES.get(kind, kind)}, but the model is "
                     f"{family.title}, which reads {wanted}; {family.loaders_hint}")
