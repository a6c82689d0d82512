"""Sizes of an open_clip CLIP (the `model_cfg` of an `open_clip_config.json`), and reading them.

The release MMAudio uses is `hf-hub:apple/DFN5B-CLIP-ViT-H-14-384` = open_clip's `ViT-H-14-378-quickgelu`:
embed 1024; vision ViT-H/14 (width 1280, 32 layers, heads of 80, 27 x 27 patches); text width 1024,
24 layers, 16 heads, 77 tokens; QuickGELU in both towers. Only the plain open_clip layout is built
(pre-norm blocks, ln_pre, cls pooling, causal text mask, linear projections): a config asking for
anything else is refused by name rather than silently computed another way.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Mapping

import torch

from .checkpoint import CheckpointError

# open_clip options that change the network: the value the plain layout needs (missing = that value).
_VISION_FIXED = {"ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "pos_embed_type": "learnable",
                 "final_ln_after_pool": False, "pool_type": "tok", "timm_model_name": None, "hf_model_name": None,
                 "block_type": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
                 "scale_attn_inner": False, "scale_attn": False, "scale_fc": False, "act_kwargs": None,
                 "norm_kwargs": None}
_TEXT_FIXED = {"ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "final_ln_after_pool": False,
               "pool_type": "argmax", "proj_bias": False, "proj_type": "linear", "hf_model_name": None,
               "block_type": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
               "scale_attn_inner": False, "scale_attn": False, "scale_fc": False, "act_kwargs": None,
               "norm_kwargs": None}
_TOP_FIXED = {"init_logit_bias": None, "custom_text": False}
# Options that do not change inference (training, tokenizer or output-format settings).
_VISION_FREE = {"patch_dropout", "output_tokens", "attn_pooler_queries", "attn_pooler_heads", "timm_model_pretrained",
                "timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path"}
_TEXT_FREE = {"hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs", "pad_id", "eos_id", "output_tokens",
              "hf_model_pretrained", "hf_proj_type", "hf_pooler_type"}
_TOP_FREE = {"nonscalar_logit_scale", "init_logit_scale", "cast_dtype", "output_dict"}


@dataclass(frozen=True)
class ClipConfig:
    embed_dim: int = 1024
    quick_gelu: bool = True
    image_size: int = 378
    patch_size: int = 14
    vision_width: int = 1280
    vision_layers: int = 32
    vision_head_width: int = 80
    vision_mlp_ratio: float = 4.0
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 1024
    text_heads: int = 16
    text_layers: int = 24
    text_mlp_ratio: float = 4.0

    def __post_init__(self):
        if self.vision_width % self.vision_head_width or self.text_width % self.text_heads:
            raise ValueError(f"CLIP widths must split into whole heads: vision {self.vision_width} / head width "
                             f"{self.vision_head_width}, text {self.text_width} / {self.text_heads} heads")
        if self.image_size < self.patch_size:
            raise ValueError(f"CLIP image_size {self.image_size} is smaller than its patch {self.patch_size}")

    @property
    def grid(self) -> int:
        """Patches per side; pixels past the last whole patch are not seen (378 and 384 px give 27)."""
        return self.image_size // self.patch_size

    @property
    def vision_heads(self) -> int:
        return self.vision_width // self.vision_head_width

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_open_clip(cls, model_cfg: Mapping) -> "ClipConfig":
        """From an open_clip `model_cfg` dict (or a whole open_clip_config.json with a `model_cfg`)."""
        if "model_cfg" in model_cfg:
            model_cfg = model_cfg["model_cfg"]
        try:
            vision, text = dict(model_cfg["vision_cfg"]), dict(model_cfg["text_cfg"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"an open_clip model_cfg needs 'vision_cfg' and 'text_cfg' dicts ({exc!r} missing)") \
                from exc
        _refuse_other_layouts("", model_cfg, _TOP_FIXED,
                              _TOP_FREE | {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"})
        _refuse_other_layouts("vision_cfg.", vision, _VISION_FIXED,
                              _VISION_FREE | {"image_size", "patch_size", "width", "layers", "head_width", "mlp_ratio"})
        _refuse_other_layouts("text_cfg.", text, _TEXT_FIXED,
                              _TEXT_FREE | {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"})
        image_size = vision.get("image_size", 224)
        if isinstance(image_size, (list, tuple)):
            if len(set(image_size)) != 1:
                raise ValueError(f"vision_cfg.image_size {list(image_size)} is not square; only square CLIPs are built")
            image_size = image_size[0]
        if not isinstance(vision.get("layers", 12), int):
            raise ValueError("vision_cfg.layers is a list (a ResNet tower); only ViT towers are built")
        # Missing keys take open_clip's defaults, as open_clip itself would.
        return cls(
            embed_dim=int(model_cfg["embed_dim"]), quick_gelu=bool(model_cfg.get("quick_gelu", False)),
            image_size=int(image_size), patch_size=int(vision.get("patch_size", 16)),
            vision_width=int(vision.get("width", 768)), vision_layers=int(vision.get("layers", 12)),
            vision_head_width=int(vision.get("head_width", 64)), vision_mlp_ratio=float(vision.get("mlp_ratio", 4.0)),
            context_length=int(text.get("context_length", 77)), vocab_size=int(text.get("vocab_size", 49408)),
            text_width=int(text.get("width", 512)), text_heads=int(text.get("heads", 8)),
            text_layers=int(text.get("layers", 12)), text_mlp_ratio=float(text.get("mlp_ratio", 4.0)),
        )

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> "ClipConfig":
        """The released config if the tensor shapes are the release's. Head counts and the activation
        are not in a state dict, so any other size needs its model_cfg; the error says so."""
        found = shape_summary(state_dict)
        released = release()
        differing = [f"{name} {value} (release {getattr(released, name)})"
                     for name, value in found.items() if getattr(released, name) != value]
        if differing:
            raise CheckpointError(
                "this open_clip CLIP is not the released DFN5B-CLIP-ViT-H-14-384 (" + ", ".join(differing) + "); "
                "its head counts and activation are not stored in the weights. Pass config= the 'model_cfg' of "
                "its open_clip_config.json (or put that file beside the checkpoint).")
        return released


def shape_summary(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """The sizes that the tensor shapes do fix (the grid, not the image size: 378 and 384 px give 27)."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise CheckpointError(f"not a complete open_clip CLIP state dict: '{key}' is missing")
        return tuple(state_dict[key].shape)

    vision_width, _, patch_size, _ = shape("visual.conv1.weight")
    grid = math.isqrt(shape("visual.positional_embedding")[0] - 1)
    vocab_size, text_width = shape("token_embedding.weight")
    return dict(
        embed_dim=shape("visual.proj")[1], patch_size=patch_size, grid=grid, vision_width=vision_width,
        vision_layers=count_blocks(state_dict, "visual.transformer.resblocks"),
        vision_mlp_ratio=shape("visual.transformer.resblocks.0.mlp.c_fc.weight")[0] / vision_width,
        context_length=shape("positional_embedding")[0], vocab_size=vocab_size, text_width=text_width,
        text_layers=count_blocks(state_dict, "transformer.resblocks"),
        text_mlp_ratio=shape("transformer.resblocks.0.mlp.c_fc.weight")[0] / text_width,
    )


def count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def _refuse_other_layouts(where: str, cfg: Mapping, fixed: Mapping, free: set) -> None:
    for key, value in cfg.items():
        if key in fixed:
            if value != fixed[key]:
                raise ValueError(f"open_clip option {where}{key}={value!r} is not supported (only {fixed[key]!r}): "
                                 "this CLIP builds the plain ViT/text layout of DFN5B-CLIP-ViT-H-14-384")
        elif key not in free:
            raise ValueError(f"unknown open_clip option {where}{key}={value!r}; this CLIP builds the plain ViT/text "
                             "layout of DFN5B-CLIP-ViT-H-14-384 and does not know what that option would change")


def release() -> ClipConfig:
    """`apple/DFN5B-CLIP-ViT-H-14-384` (open_clip `ViT-H-14-378-quickgelu`): 986,714,881 parameters."""
    return ClipConfig()
