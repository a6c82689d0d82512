"""MMAudio: the flow network (small 16k to large 44k v2), CLIP frames and text, Synchformer sync
features, the mel VAE and its BigVGAN vocoder. The release runs the flow the other way round
(t = 0 noise, v = data - noise, channel-last latents normalised by the network's own statistics);
this adapter turns that into the sampler's convention.
"""
from __future__ import annotations

import re

import torch

from ..models.mmaudio import MMAudioConditions, MMAudioNet
from .base import Conditioner, Family, FilePart, FlowModel, SamplingDefaults, named

MMAUDIO = Family(
    name="mmaudio",
    title="MMAudio",
    # The release: 25 Euler steps, CFG 4.5, an empty negative prompt; trained on 8 s clips.
    defaults=SamplingDefaults(steps=25, cfg_scale=4.5, sync_scale=1.0, negative_prompt="", window_seconds=8.0),
    text_encoders=("mmaudio-clip",),
    image_encoders=("mmaudio-clip",),
    sync_encoders=("synchformer",),
    loaders_hint="use Load MMAudio CLIP and Load Synchformer with it",
    narrow=lambda part, candidates, found: same_mode(part, candidates, found),
    files=(
        FilePart("model", "mmaudio_large_44k_v2.pth (or another size)",
                 named("mmaudio", without=("vae", "vocoder", "bigvgan", "clip", "synchformer", "lora"))),
        FilePart("vae", "v1-16.pth (16 kHz) or v1-44.pth (44.1 kHz)", named(pattern=r"(^|[^a-z0-9])v1[-_](16|44)",
                                                                            without=("bigvgan",))),
        FilePart("vocoder", "best_netG.pt (16 kHz) or the BigVGAN-v2 44 kHz folder/file",
                 named("best_netg", "bigvgan"), "any"),
        FilePart("synchformer", "synchformer_state_dict.pth", named("synchformer")),
        FilePart("clip", "open_clip_pytorch_model.bin of apple/DFN5B-CLIP-ViT-H-14-384",
                 named("dfn5b", "open_clip", pattern=r"(^|[^a-z])clip([^a-z]|$)", without=("clap",))),
    ),
)
def same_mode(part: str, candidates: list, found: dict) -> list:
    """The VAE and vocoder of the network's audio mode (both VAEs may sit in one folder)."""
    model = found.get("model")
    mode = mode_hint(model.name) if model is not None else None
    if part in ("vae", "vocoder") and mode and len(candidates) > 1:
        return [path for path in candidates if mode_hint(path.name) == mode]
    return candidates


def mode_hint(name: str) -> str | None:
    """The audio mode a file name tells ("16k" or "44k"; best_netG is the 16 kHz vocoder)."""
    name = name.lower()
    if "best_netg" in name or re.search(r"(^|[^0-9])16(k|khz|[^0-9]|$)", name):
        return "16k"
    if re.search(r"(^|[^0-9])44(k|khz|[^0-9]|$)", name):
        return "44k"
    return None


class MMAudioConditioner(Conditioner):
    def __init__(self, network: MMAudioNet):
        self.network = network

    def text(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens  # projected with the rest in `prepare`: a few tokens, once per window

    def prepare(self, text: torch.Tensor, clip, sync, length: int, visual_lengths=None) -> MMAudioConditions:
        return self.network.prepare(clip, sync, text, length, *(visual_lengths or (None, None)))


class MMAudioFlow(FlowModel):
    network: MMAudioNet

    def conditioner(self) -> MMAudioConditioner:
        return MMAudioConditioner(self.network)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, conditions: MMAudioConditions) -> torch.Tensor:
        # t = 1 - sigma; the release predicts data - noise, the sampler integrates noise - data.
        flow = self.network.velocity(x.transpose(1, 2), 1 - torch.as_tensor(sigma), conditions)
        return flow.transpose(1, 2).neg()

    def to_vae(self, latents: torch.Tensor) -> torch.Tensor:
        return self.network.unnormalize(latents.transpose(1, 2)).transpose(1, 2)

    def from_vae(self, latents: torch.Tensor) -> torch.Tensor:
        return self.network.normalize(latents.transpose(1, 2)).transpose(1, 2)

    def null_features(self):
        # The release trains its text dropout with the stored `empty_string_feat` (CLIP of "").
        _, clip, sync = super().null_features()
        return self.network.empty_string_feat, clip, sync
