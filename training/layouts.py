"""What training needs to know of each family's network layout, in one table; the objective, the
loop and the exports stay family-agnostic (they see the network through its `FlowModel` adapter).

- "hunyuanvideo-foley": the FoleyDiT (HunyuanVideo-Foley and the demo model); trained with the
  paper's REPA on a single-stream block by default; encoders CLAP, SigLIP2, Synchformer, DAC-VAE.
- "mmaudio": MMAudio's network; its release trains without REPA (a fused block's output can be
  aligned on request); encoders CLIP (text and frames), Synchformer, the mel VAE (+ its vocoder, which
  the loaders want with it). Full training keeps the latent statistics and the stored empty text
  frozen, as the release does.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Layout:
    family: str  # `[model] family` in recipes: the family whose layout this is
    kind: str  # what `models.checkpoint.identify` calls a checkpoint of it
    lora_targets: tuple[str, ...]  # regexes over module names: attention and MLP layers of every block
    repa_blocks: str  # the ModuleList whose block outputs REPA can align
    repa_block_name: str  # for messages
    repa_weight: float  # `[objective] repa_weight` when the recipe leaves it unset
    encoder_parts: tuple[str, ...]  # `[model]` keys of the files the preparation step reads
    foreign_parts: tuple[str, ...]  # `[model]` keys that belong to another layout
    frozen: tuple[str, ...] = ()  # parameters full training leaves as they are

    def network_class(self) -> type[nn.Module]:
        if self.kind == "mmaudio_net":
            from ..models.mmaudio import MMAudioNet

            return MMAudioNet
        from ..models.dit import FoleyDiT

        return FoleyDiT

    def dead_modules(self, network: nn.Module) -> list[str]:
        """Layers whose output never reaches the velocity, so they get no gradient (and distributed
        training would stop on them as unused)."""
        config = network.config
        if self.kind == "mmaudio_net":
            # The last joint block's clip and text streams only give keys and values: their queries' norms are unused.
            last = config.joint_blocks - 1
            return [f"joint_blocks.{last}.{stream}_block.attn.q_norm" for stream in ("clip", "text")]
        # The final layer's adaLN (see FinalLayer), and the last triple block's visual cross-attention
        # output and MLP (the visual stream ends there).
        last = config.triple_blocks - 1
        dead = ["final_layer.adaLN_modulation"]
        if last >= 0:
            dead += [f"triple_blocks.{last}.v_cond_cross_proj", f"triple_blocks.{last}.v_cond_mlp"]
        return dead


FOLEY = Layout(
    family="hunyuanvideo-foley", kind="foley_dit",
    lora_targets=(r"(triple|single)_blocks\.\d+\.(?!audio_mod\.|v_cond_mod\.|modulation\.).+",),
    repa_blocks="single_blocks", repa_block_name="single", repa_weight=0.5,
    encoder_parts=("vae", "synchformer", "clap", "siglip"), foreign_parts=("vocoder", "clip"),
)
MMAUDIO = Layout(
    family="mmaudio", kind="mmaudio_net",
    lora_targets=(r"(joint_blocks\.\d+\.(latent|clip|text)_block|fused_blocks\.\d+)\.(attn\.qkv|linear1|ffn\.w[123])",),
    repa_blocks="fused_blocks", repa_block_name="fused", repa_weight=0.0,
    encoder_parts=("vae", "vocoder", "synchformer", "clip"), foreign_parts=("clap", "siglip"),
    frozen=("latent_mean", "latent_std", "empty_string_feat"),
)
LAYOUTS = {layout.family: layout for layout in (FOLEY, MMAUDIO)}


def layout_named(family: str) -> Layout:
    """The layout of a recipe's `[model] family` (the demo family trains as the FoleyDiT it is)."""
    if family == "syncfoley-demo":
        return FOLEY
    if family not in LAYOUTS:
        raise ValueError(f"unknown model family '{family}'; training knows {', '.join(LAYOUTS)}")
    return LAYOUTS[family]


def layout_of(network: nn.Module) -> Layout:
    """The layout of a network (or of a `FlowModel`'s network)."""
    network = getattr(network, "network", network)
    for layout in LAYOUTS.values():
        if isinstance(network, layout.network_class()):
            return layout
    raise TypeError(f"{type(network).__name__} is not a network training knows (HunyuanVideo-Foley's FoleyDiT "
                    "or MMAudio's network)")


def repa_blocks(network: nn.Module) -> nn.ModuleList:
    return getattr(network, layout_of(network).repa_blocks)
