"""MMAudio's CLIP: open_clip `DFN5B-CLIP-ViT-H-14-384`, for video frames (8 fps, 384 px) and prompts.

Numerics of the release (part of the checkpoint contract; the blocks are in `clip_layers.py`): pre-norm
blocks with LayerNorm eps 1e-5, QuickGELU `x * sigmoid(1.702 x)` in both towers, packed q/k/v attention.
- Image: a patch conv without bias (pixels past the last whole patch are ignored: 384 px -> 27 x 27
  patches of 14 = 378 px), cls token first, learned positions, `ln_pre`, blocks, `ln_post` on the cls
  token, `@ proj`, L2-normalised.
- Text as MMAudio patches it: token + position embedding, blocks with a causal mask, `ln_final`,
  L2-normalised per token, no projection: `[B, 77, text width]` (padding rows kept, not masked).
  The stock pooled feature (end-token row `@ text_projection`) is there for loader checks.
- Frames: `Resize((384, 384))` bicubic with antialias on uint8 (torchvision's CPU path, rounded to
  uint8), `/ 255`, then OpenAI mean/std.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import Checkpoint, CheckpointError, as_checkpoint, assign_state_dict, require_kind
from .clip_config import ClipConfig, release
from .clip_layers import NORM_EPS, TokenEmbedding, Transformer, VisionTower
from .clip_tokenizer import tokenize
from .encoders import FrameSpec
from .ops import CastOps, cast_to, set_precision

CLIP_FPS = 8
CLIP_FRAME_SIZE = 384  # what MMAudio resizes to, whatever the config's image_size says
CLIP_FRAME_SPEC = FrameSpec(fps=CLIP_FPS, size=CLIP_FRAME_SIZE, resize="stretch", interpolation="bicubic")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_CHUNK = 16  # frames per forward pass: bounds activation memory for long videos
_MARKER = "visual.conv1.weight"  # open_clip's key; a prefix before it is a converter's wrapper


class MMAudioClip(nn.Module):
    """open_clip `CLIP` with the visual tower under `visual.` and the text tower at the top level."""

    def __init__(self, config: ClipConfig | None = None, operations=CastOps, device=None, dtype=None,
                 frame_size: int | None = None):
        super().__init__()
        self.config = config = config or release()
        kw = dict(device=device, dtype=dtype)
        self.visual = VisionTower(config, operations, **kw)
        self.token_embedding = TokenEmbedding(config.vocab_size, config.text_width, **kw)
        self.positional_embedding = nn.Parameter(torch.zeros(config.context_length, config.text_width, **kw))
        self.transformer = Transformer(config.text_width, config.text_layers, config.text_heads, config.text_mlp_ratio,
                                       config.quick_gelu, operations, **kw)
        self.ln_final = operations.LayerNorm(config.text_width, eps=NORM_EPS, **kw)
        self.text_projection = nn.Parameter(torch.zeros(config.text_width, config.embed_dim, **kw))
        self.logit_scale = nn.Parameter(torch.zeros((), **kw))  # not used by MMAudio; part of the file
        # MMAudio resizes to 384 px; a test-size model keeps its own image size.
        if frame_size is None:
            frame_size = CLIP_FRAME_SIZE if CLIP_FRAME_SIZE // config.patch_size == config.grid else config.image_size
        self.frame_spec = FrameSpec(CLIP_FPS, frame_size, "stretch", "bicubic")

    # ------------------------------------------------------------------------------------------
    # Loading
    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, source: str | os.PathLike | Mapping[str, torch.Tensor] | Checkpoint,
                        config: ClipConfig | Mapping | None = None, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, weight_dtype: torch.dtype | None = None,
                        operations=CastOps) -> "MMAudioClip":
        """Load `open_clip_pytorch_model.bin` (or a same-key `.safetensors`/`.pth`, a state dict).

        `config` is an open_clip `model_cfg` dict or a ClipConfig; None reads `open_clip_config.json`
        beside the file, else takes the release's config when the shapes are the release's. `dtype`
        is the compute dtype (default: the file's); `weight_dtype` stores matrix weights in another.
        """
        checkpoint = as_checkpoint(source)
        state_dict = open_clip_state_dict(checkpoint)
        if config is None:
            config = _sibling_config(checkpoint.path)
        if config is None:
            config = ClipConfig.from_state_dict(state_dict)
        elif not isinstance(config, ClipConfig):
            config = ClipConfig.from_open_clip(config)
        with torch.device("meta"):
            model = cls(config, operations=operations)
        state_dict["logit_scale"] = state_dict.get("logit_scale", torch.tensor(0.0)).reshape(())  # (1,) or ()
        assign_state_dict(model, state_dict, f"an open_clip CLIP of {config}")
        dtype = dtype or state_dict["visual.conv1.weight"].dtype
        set_precision(model, dtype, weight_dtype if weight_dtype != dtype else None)
        return model.to(device).eval().requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.positional_embedding.dtype

    @property
    def device(self) -> torch.device:
        return self.positional_embedding.device

    # ------------------------------------------------------------------------------------------
    # Images
    # ------------------------------------------------------------------------------------------
    def preprocess_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames `[T, H, W, C]` (uint8, or float in [0, 1]) -> normalised `[T, 3, S, S]` float32."""
        return preprocess_frames(frames, self.frame_spec.size)

    @torch.inference_mode()
    def encode_image(self, images: torch.Tensor, batch_size: int = IMAGE_CHUNK) -> torch.Tensor:
        """Normalised images `[N, 3, H, W]` -> L2-normalised features `[N, embed_dim]`, `batch_size` at a time.

        Only the current chunk is moved to the model's device, so a long video can stay on the CPU.
        """
        grid, patch = self.config.grid, self.config.patch_size
        if images.ndim != 4 or images.shape[1] != 3 or any(side // patch != grid for side in images.shape[-2:]):
            raise ValueError(f"CLIP images must be [N, 3, H, W] with {grid} whole patches of {patch} per side "
                             f"(resize to {self.frame_spec.size} px with preprocess_frames), got {list(images.shape)}")
        chunks = [F.normalize(self.visual(chunk.to(self.device, self.dtype)), dim=-1)
                  for chunk in images.split(max(1, batch_size))]
        return torch.cat(chunks) if chunks else images.new_zeros(0, self.config.embed_dim, dtype=self.dtype)

    # ------------------------------------------------------------------------------------------
    # Text
    # ------------------------------------------------------------------------------------------
    def tokenize(self, prompts: str | list[str]) -> torch.Tensor:
        """open_clip's tokenizer of this model: `[B, context_length]` int64."""
        return tokenize(prompts, self.config.context_length)

    @torch.inference_mode()
    def encode_text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens `[B, L<=77]` -> per-token features `[B, L, text_width]`, L2-normalised (MMAudio's encode_text)."""
        return F.normalize(self._text_hidden(tokens), dim=-1)

    @torch.inference_mode()
    def encode_text_pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """Stock open_clip encode_text: the end-token row (highest id) `@ text_projection`, L2 -> `[B, embed_dim]`."""
        hidden = self._text_hidden(tokens)
        rows = hidden[torch.arange(hidden.shape[0], device=hidden.device), tokens.to(hidden.device).argmax(dim=-1)]
        return F.normalize(rows @ cast_to(self.text_projection, rows), dim=-1)

    def encode_prompts(self, prompts: str | list[str]) -> torch.Tensor:
        return self.encode_text_tokens(self.tokenize(prompts))

    def _text_hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        config = self.config
        if tokens.ndim != 2 or tokens.shape[1] > config.context_length or tokens.is_floating_point():
            raise ValueError(f"CLIP tokens must be integer ids [B, L <= {config.context_length}], got "
                             f"{tokens.dtype} {list(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= config.vocab_size):
            raise ValueError(f"CLIP token ids must lie in [0, {config.vocab_size}), got {int(tokens.min())}.."
                             f"{int(tokens.max())}")
        tokens = tokens.to(self.device)
        x = self.token_embedding(tokens).to(self.dtype)
        x = x + self.positional_embedding[: tokens.shape[1]]
        return self.ln_final(self.transformer(x, causal=True))

    # ------------------------------------------------------------------------------------------
    # The pipeline's encoder protocols
    # ------------------------------------------------------------------------------------------
    def image_encoder(self, batch_size: int = IMAGE_CHUNK) -> "ClipImageEncoder":
        return ClipImageEncoder(self, batch_size)

    def text_encoder(self) -> "ClipTextEncoder":
        return ClipTextEncoder(self)


class ClipImageEncoder:
    """`ImageEncoder` of the pipeline: frames `[T, 3, S, S]` in [-1, 1] (the media package's model input)."""

    kind = "mmaudio-clip"

    def __init__(self, clip: MMAudioClip, batch_size: int = IMAGE_CHUNK):
        self.clip, self.batch_size = clip, batch_size
        self.frame_spec = clip.frame_spec
        self.feature_dim = clip.config.embed_dim

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """-> float32 `[T, embed_dim]`. The [-1, 1] frames came from uint8 (u / 127.5 - 1): recovering
        u exactly and scaling by 1/255 gives bit for bit the input of MMAudio's preprocessing."""
        pixels = frames.float().add(1.0).mul_(127.5).round_().clamp_(0, 255).mul_(1.0 / 255.0)
        return self.clip.encode_image(normalize_openai(pixels), self.batch_size).float()

    def to(self, device) -> "ClipImageEncoder":
        self.clip.to(device)
        return self


class ClipTextEncoder:
    """`TextEncoder` of the pipeline: prompts -> `[B, 77, text_width]` float32 (each prompt on its own)."""

    kind = "mmaudio-clip"

    def __init__(self, clip: MMAudioClip):
        self.clip = clip
        self.max_tokens = clip.config.context_length
        self.feature_dim = clip.config.text_width

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self.clip.encode_prompts(prompts).float()

    def to(self, device) -> "ClipTextEncoder":
        self.clip.to(device)
        return self


# ----------------------------------------------------------------------------------------------
# Files and frames
# ----------------------------------------------------------------------------------------------


def open_clip_state_dict(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The open_clip-named tensors of a checkpoint: a converter's prefix (`model.`, `clip.`, ...) removed,
    the derived `attn_mask` buffer dropped; anything that is not a CLIP is refused by what it is."""
    found = [key for key in checkpoint.state_dict if key.endswith(_MARKER)]
    prefixes = {key[: -len(_MARKER)] for key in found}
    if len(prefixes) > 1:
        raise CheckpointError(f"'{checkpoint.path or 'state dict'}' holds {len(prefixes)} CLIP models (prefixes "
                              f"{sorted(prefixes)}); save the one MMAudio uses on its own.")
    prefix = prefixes.pop() if prefixes else ""
    state_dict = {key[len(prefix):]: value for key, value in checkpoint.state_dict.items() if key.startswith(prefix)}
    state_dict = require_kind(Checkpoint(state_dict, checkpoint.metadata, checkpoint.path), "mmaudio_clip",
                              "MMAudio CLIP loader", hint="Use apple/DFN5B-CLIP-ViT-H-14-384's "
                              "open_clip_pytorch_model.bin (or an fp16 safetensors conversion of it).")
    return {key: value for key, value in state_dict.items() if not key.endswith("attn_mask")}


def _sibling_config(path: str | None) -> dict | None:
    candidate = Path(path).with_name("open_clip_config.json") if path else None
    if candidate is None or not candidate.is_file():
        return None
    try:
        return json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read '{candidate}' beside the CLIP weights ({exc}); fix or remove it, "
                              "or pass config= explicitly.") from exc


def normalize_openai(pixels: torch.Tensor) -> torch.Tensor:
    """`[T, 3, H, W]` in [0, 1] -> (x - mean) / std with CLIP's OpenAI statistics (torchvision Normalize)."""
    mean = torch.tensor(OPENAI_MEAN, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(OPENAI_STD, dtype=pixels.dtype, device=pixels.device).view(3, 1, 1)
    return pixels.sub(mean).div_(std)


def preprocess_frames(frames: torch.Tensor, size: int = CLIP_FRAME_SIZE) -> torch.Tensor:
    """Frames `[T, H, W, C]` (uint8, or float in [0, 1] as a ComfyUI IMAGE) -> `[T, 3, size, size]` float32.

    MMAudio: `v2.Resize((size, size), BICUBIC)` on uint8, which on the CPU is torch's native uint8
    antialiased bicubic (integer weights, rounded and clamped to uint8), then `ToDtype(scale=True)`
    (`* (1 / 255)`) and Normalize. Float frames are first quantised to uint8 as a video decode gives them.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        shape = list(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"CLIP frames must be [T, H, W, 3] (channels last), got {shape}")
    if frames.dtype != torch.uint8:
        frames = frames.float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    batch = frames.permute(0, 3, 1, 2)  # channels-last memory: the layout the uint8 kernels are fastest on
    if tuple(batch.shape[-2:]) != (size, size):
        batch = F.interpolate(batch, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return normalize_openai(batch.float().mul_(1.0 / 255.0).contiguous())
