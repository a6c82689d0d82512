"""Synchformer: audio-visual synchronisation features (visual conditioning of the Foley model, and DeSync).

The released `synchformer_state_dict.pth` (the same file MMAudio ships) holds three parts:
- `vfeat_extractor`: MotionFormer (`motionformer.py`), 16-frame segments at 25 fps -> 8 tokens of 768;
- `afeat_extractor`: AST (`synchformer_audio.py`), 0.64 s log-mel segments at 16 kHz -> 6 tokens of 768;
- `vproj`/`aproj` + `transformer`: a 3-layer transformer over `[OFF, visual..., MOD, audio...]` whose OFF
  token is classified into 21 audio-visual offsets on a -2..2 s grid (0.2 s steps). Its learned position
  embedding has 198 rows = 2 + 14 * (8 + 6), so it takes exactly 14 segments (4.8 s) of each stream.

The Foley model uses only `extract_visual`; evaluation uses the audio side and the offset head.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, replace
from typing import Mapping

import torch
from torch import nn

from .checkpoint import Checkpoint, assign_state_dict, as_checkpoint, require_kind
from .encoders import SYNCHFORMER_FRAME_SPEC, FrameSpec
from .motionformer import MotionFormer
from .ops import CastOps, attach_scales, set_precision
from .synchformer_audio import SAMPLE_RATE, ASTFeatureExtractor, log_mel_segments
from .synchformer_head import OFFSET_GRID_SECONDS, OffsetTransformer, offset_seconds

__all__ = ["OFFSET_GRID_SECONDS", "Synchformer", "SynchformerConfig", "named", "offset_seconds", "release",
           "segment_frames", "tiny"]

SEGMENT_FRAMES = 16
SEGMENT_STRIDE = 8
FPS = 25.0


@dataclass(frozen=True)
class SynchformerConfig:
    dim: int = 768
    visual_depth: int = 12
    visual_head_dim: int = 64
    image_size: int = 224
    patch_size: int = 16
    tubelet: int = 2
    segment_frames: int = 16
    audio_depth: int = 12
    audio_head_dim: int = 64
    mels: int = 128
    spec_frames: int = 66
    audio_patch: int = 16
    audio_stride: int = 10
    mlp_ratio: int = 4
    sync_depth: int = 3
    sync_head_dim: int = 96
    sync_positions: int = 198
    offset_classes: int = 21

    def __post_init__(self):
        for head_dim in (self.visual_head_dim, self.audio_head_dim, self.sync_head_dim):
            if self.dim % head_dim:
                raise ValueError(f"dim {self.dim} is not a multiple of the head dim {head_dim}")

    @property
    def mlp_hidden(self) -> int:
        return self.mlp_ratio * self.dim

    @property
    def visual_tokens_per_segment(self) -> int:
        return self.segment_frames // self.tubelet

    @property
    def audio_tokens_per_segment(self) -> int:
        return (self.spec_frames - self.audio_patch) // self.audio_stride + 1

    @property
    def offset_segments(self) -> int:
        """Segments per stream the offset head takes (its position embedding fixes it)."""
        return (self.sync_positions - 2) // (self.visual_tokens_per_segment + self.audio_tokens_per_segment)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> "SynchformerConfig":
        """Read the sizes off the tensor shapes. Head dims, the AST stride and mel count are not in
        the shapes; the release's values are assumed (64, 64, 96; stride 10, 128 mels)."""
        shape = lambda key: tuple(state_dict[key].shape)  # noqa: E731
        try:
            dim, _, tubelet, patch, _ = shape("vfeat_extractor.patch_embed_3d.proj.weight")
            grid = round((shape("vfeat_extractor.pos_embed")[1] - 1) ** 0.5)
            steps = shape("vfeat_extractor.temp_embed")[1]
            mlp_hidden = shape("vfeat_extractor.blocks.0.mlp.fc1.weight")[0]
            audio_patch = shape("afeat_extractor.ast.embeddings.patch_embeddings.projection.weight")[-1]
            audio_tokens = shape("afeat_extractor.ast.embeddings.position_embeddings")[1] - 2
            sync_positions = shape("transformer.pos_emb_cfg.pos_emb")[1]
            offset_classes = shape("transformer.off_head.weight")[0]
        except KeyError as exc:
            raise ValueError(f"not a full Synchformer state dict: tensor {exc} is missing") from exc
        base = cls()
        freq_patches = (base.mels - audio_patch) // base.audio_stride + 1
        time_patches = audio_tokens // freq_patches
        return cls(
            dim=dim, visual_depth=_count(state_dict, "vfeat_extractor.blocks"), image_size=grid * patch,
            patch_size=patch, tubelet=tubelet, segment_frames=steps * tubelet,
            audio_depth=_count(state_dict, "afeat_extractor.ast.encoder.layer"), audio_patch=audio_patch,
            spec_frames=(time_patches - 1) * base.audio_stride + audio_patch, mlp_ratio=mlp_hidden // dim,
            sync_depth=_count(state_dict, "transformer.blocks"), sync_positions=sync_positions,
            offset_classes=offset_classes,
        )


def _count(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def release() -> SynchformerConfig:
    """`synchformer_state_dict.pth`: 237,460,245 parameters."""
    return SynchformerConfig()


def tiny() -> SynchformerConfig:
    """Same layout at test size (one layer per part, dim 192, 32x32 frames)."""
    return SynchformerConfig(dim=192, visual_depth=1, image_size=32, audio_depth=1, sync_depth=1)


NAMED_CONFIGS = {"release": release, "tiny": tiny}


def named(name: str, **overrides) -> SynchformerConfig:
    try:
        return replace(NAMED_CONFIGS[name.lower()](), **overrides)
    except KeyError:
        raise ValueError(f"unknown Synchformer config '{name}'; known: {', '.join(NAMED_CONFIGS)}") from None


def segment_frames(frames: torch.Tensor, segment: int = SEGMENT_FRAMES, stride: int = SEGMENT_STRIDE) -> torch.Tensor:
    """`[B, T, C, H, W]` -> `[B, S, segment, C, H, W]`, S = (T - segment) // stride + 1 (a strided view)."""
    if frames.shape[1] < segment:
        raise ValueError(f"{frames.shape[1]} frames are fewer than one segment of {segment}")
    return frames.unfold(1, segment, stride).permute(0, 1, 5, 2, 3, 4)


# ----------------------------------------------------------------------------------------------
# The full model
# ----------------------------------------------------------------------------------------------
class Synchformer(nn.Module):
    kind = "synchformer"  # stamped on the sync features it makes

    def __init__(self, config: SynchformerConfig | None = None, operations=CastOps, device=None, dtype=None):
        super().__init__()
        self.config = config = config or release()
        dim, hidden = config.dim, config.mlp_hidden
        self.vfeat_extractor = MotionFormer(
            dim, config.visual_depth, dim // config.visual_head_dim, hidden, config.image_size,
            config.patch_size, config.tubelet, config.segment_frames, operations, device, dtype)
        self.afeat_extractor = ASTFeatureExtractor(
            dim, config.audio_depth, dim // config.audio_head_dim, hidden, config.mels, config.spec_frames,
            config.audio_patch, config.audio_stride, operations, device, dtype)
        self.vproj = operations.Linear(dim, dim, device=device, dtype=dtype)
        self.aproj = operations.Linear(dim, dim, device=device, dtype=dtype)
        self.transformer = OffsetTransformer(config, operations, device, dtype)

    @classmethod
    def from_checkpoint(
        cls,
        source: str | os.PathLike | Mapping[str, torch.Tensor] | Checkpoint,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        weight_dtype: torch.dtype | None = None,
        operations=CastOps,
    ) -> "Synchformer":
        """Load `synchformer_state_dict.pth` (or a same-layout `.safetensors` / state dict), strictly.

        Built on the meta device and the loaded tensors assigned: no random init, no second copy.
        `dtype` is the compute dtype (default: the file's); `weight_dtype` stores matrix weights in
        another dtype (e.g. fp8) that is cast on use.
        """
        checkpoint = as_checkpoint(source)
        state_dict = require_kind(checkpoint, "synchformer", "Synchformer loader",
                                  hint="Use the Foley model or DAC-VAE loader for that file.")
        config = SynchformerConfig.from_state_dict(state_dict)
        with torch.device("meta"):
            model = cls(config, operations=operations)
        state_dict = attach_scales(model, state_dict)  # scaled fp8 files
        assign_state_dict(model, state_dict, f"a Synchformer ({config.dim}-d, {config.visual_depth} visual layers)")
        dtype = dtype or state_dict["vfeat_extractor.cls_token"].dtype
        set_precision(model, dtype, weight_dtype if weight_dtype != dtype else None)
        model.to(device)
        return model.eval().requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.vfeat_extractor.cls_token.dtype

    @property
    def device(self) -> torch.device:
        return self.vfeat_extractor.cls_token.device

    @property
    def frame_spec(self) -> FrameSpec:
        """The frames `extract_visual` expects: 25 fps, short side to the image size (224), centre crop."""
        return replace(SYNCHFORMER_FRAME_SPEC, size=self.config.image_size)

    def extract_visual(self, segments: torch.Tensor, chunk_segments: int | None = None) -> torch.Tensor:
        """Video segments `[B, S, 16, 3, 224, 224]` in [-1, 1] -> features `[B, S, 8, 768]`.

        `chunk_segments` bounds how many segments run at once (memory); results do not depend on it.
        """
        batch, count = segments.shape[:2]
        if chunk_segments:  # slices of the (often strided) input, converted one chunk at a time
            starts = range(0, count, chunk_segments)
            chunks = [segments[b, s: s + chunk_segments] for b in range(batch) for s in starts]
        else:
            chunks = [segments.flatten(0, 1)]
        features = torch.cat([self.vfeat_extractor(chunk.to(self.device, self.dtype)) for chunk in chunks])
        return features.unflatten(0, (batch, count))

    # The offset protocol that DeSync runs on (evaluation/desync.py; the demo's stand-in has the same).
    audio_sample_rate = SAMPLE_RATE
    segment_independent = True  # a segment's features depend on that segment only: chunking is exact

    @property
    def offset_segments(self) -> int:
        """Segments of each stream one offset window takes (14: 4.8 s), the fewest it accepts too."""
        return self.config.offset_segments

    min_offset_segments = offset_segments

    @property
    def offset_grid(self) -> torch.Tensor:
        """The offset (s) of each logit class: positive means the sound is early (see synchformer_head)."""
        return OFFSET_GRID_SECONDS

    def audio_segments(self, audio: torch.Tensor) -> torch.Tensor:
        """Mono 16 kHz audio `[B, samples]` -> normalised log-mel segments `[B, S, 128, 66]` (0.64 s
        every 0.32 s, aligned with the video's segments; see `synchformer_audio`)."""
        return log_mel_segments(audio.to(self.device))

    def extract_audio(self, segments: torch.Tensor) -> torch.Tensor:
        """Log-mel segments `[B, S, 128, 66]` (or the release's `[B, S, 1, 128, 66]`) -> `[B, S, 6, 768]`."""
        if segments.ndim == 5:
            segments = segments.squeeze(2)
        batch, count = segments.shape[:2]
        flat = segments.flatten(0, 1).to(device=self.device, dtype=self.dtype)
        return self.afeat_extractor(flat).unflatten(0, (batch, count))

    def offset_logits(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Visual `[B, 14, 8, D]` and audio `[B, 14, 6, D]` features of one window -> logits `[B, 21]`
        over `offset_grid` (the release's `compare_v_a`)."""
        if visual.shape[1] != self.offset_segments or audio.shape[1] != self.offset_segments:
            raise ValueError(f"the offset head takes windows of exactly {self.offset_segments} segments "
                             f"({self.offset_segments * 0.32:.2f} s) of each stream, got {visual.shape[1]} visual "
                             f"and {audio.shape[1]} audio segments")
        visual = self.vproj(visual.to(self.device, self.dtype)).flatten(1, 2)
        audio = self.aproj(audio.to(self.device, self.dtype)).flatten(1, 2)
        return self.transformer(visual, audio)
