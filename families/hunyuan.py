"""HunyuanVideo-Foley: the FoleyDiT (XXL, XL and any size of the layout), CLAP text, SigLIP2 frames,
Synchformer sync features, the 48 kHz DAC-VAE. The network already speaks the sampler's convention
(sigma = 1 noise, v = noise - x0, channel-first); it takes the model time `1000 * sigma`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..models.dit import FoleyConditions, FoleyDiT, cat_text_kv
from .base import Conditioner, Family, FilePart, FlowModel, SamplingDefaults, named

OTHER_PARTS = ("vae", "synchformer", "lora", "mmaudio", "clip", "clap", "siglip", "bigvgan")
HUNYUAN = Family(
    name="hunyuanvideo-foley",
    title="HunyuanVideo-Foley",
    defaults=SamplingDefaults(steps=50, cfg_scale=4.5, sync_scale=1.0, negative_prompt="noisy, harsh"),
    text_encoders=("clap",),
    image_encoders=("siglip2",),
    sync_encoders=("synchformer",),
    loaders_hint="use Load CLAP Text Encoder, Load SigLIP2 Image Encoder and Load Synchformer with it",
    files=(
        FilePart("model", "hunyuanvideo_foley.pth (XXL) or hunyuanvideo_foley_xl.pth (XL)",
                 named("foley", "dit", without=OTHER_PARTS)),
        FilePart("vae", "vae_128d_48k.pth", named("vae", without=("mmaudio",), pattern=None)),
        FilePart("synchformer", "synchformer_state_dict.pth", named("synchformer")),
        FilePart("text_encoder", "the clap/ folder (laion/larger_clap_general)", named("clap"), "any"),
        FilePart("image_encoder", "the siglip2/ folder (google/siglip2-base-patch16-512)", named("siglip"), "any"),
    ),
)


class FoleyText:
    """Prompt tokens and their per-block keys/values (computed once, shared by every window)."""

    def __init__(self, tokens: torch.Tensor, kv):
        self.tokens, self.kv = tokens, kv


class FoleyConditioner(Conditioner):
    def __init__(self, network: FoleyDiT):
        self.network = network
        self.ropes: dict[tuple[int, int], object] = {}
        self.stacked: dict[tuple[int, ...], object] = {}

    def text(self, tokens: torch.Tensor) -> FoleyText:
        return FoleyText(tokens, self.network.prepare_text(tokens))

    def prepare(self, text: FoleyText, clip, sync, length: int, visual_lengths=None) -> FoleyConditions:
        if visual_lengths is not None:
            clip = self.network.null_clip(1, visual_lengths[0]) if clip is None else clip
            sync = self.network.null_sync(1, visual_lengths[1]) if sync is None else sync
        visual_length = clip.shape[1] if clip is not None else self.network.visual_lengths(length)[0]
        key = (length, visual_length)
        if key not in self.ropes:
            self.ropes[key] = self.network.rope_tables(*key)
        return self.network.prepare(text.tokens, clip, sync, length, text.kv, self.ropes[key])

    def cat(self, parts: Sequence[FoleyConditions], takes: int = 1) -> FoleyConditions:
        # Every window stacks the same branches' text keys/values: keep one stacked copy for all.
        key = (takes, *(id(part.text_kv) for part in parts))
        expanded = [part.expand(takes) for part in parts]
        if key not in self.stacked:
            self.stacked[key] = cat_text_kv([part.text_kv for part in expanded])
        return FoleyConditions.cat(expanded, self.stacked[key])


class FoleyFlow(FlowModel):
    network: FoleyDiT

    def conditioner(self) -> FoleyConditioner:
        return FoleyConditioner(self.network)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, conditions: FoleyConditions) -> torch.Tensor:
        return self.network.velocity(x, sigma * 1000, conditions)
