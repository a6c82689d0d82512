"""Encoded conditions as they travel between stages, and the visual anchors SyncCFG needs.

`VisualFeatures` keeps each stream at its own rate: SigLIP2 tokens at `clip_fps` (one per frame) and
Synchformer tokens in segments (`tokens_per_segment` tokens per `segment_frames` frames at
`sync_fps`, segments every `segment_stride` frames). Slicing, shifting and static anchors all work
in those units, so no stream is ever resampled to another's rate.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class TextFeatures:
    """CLAP tokens of the prompt and the negative prompt, padded to one length."""

    positive: torch.Tensor  # [1, Lt, D]
    negative: torch.Tensor  # [1, Lt, D]
    prompt: str = ""
    negative_prompt: str = ""
    encoder: str | None = None  # the text encoder's `kind`: a model of another family refuses the features

    def __post_init__(self):
        if self.positive.shape != self.negative.shape:
            raise ValueError(
                f"prompt and negative prompt features differ in shape ({tuple(self.positive.shape)} vs "
                f"{tuple(self.negative.shape)}); encode them together so they are padded alike"
            )


@dataclass
class VisualFeatures:
    clip: torch.Tensor  # [1, Lv, Dc] SigLIP2 features, one per frame at clip_fps
    sync: torch.Tensor  # [1, Ls, Ds] Synchformer features, tokens_per_segment per segment
    duration: float  # seconds the features describe
    static_clip: torch.Tensor | None = None  # [1, 1, Dc] the first frame's SigLIP2 features
    static_sync: torch.Tensor | None = None  # [1, tokens_per_segment, Ds] a segment of the first frame held
    clip_fps: float = 8.0
    sync_fps: float = 25.0
    segment_frames: int = 16
    segment_stride: int = 8
    tokens_per_segment: int = 8
    image_encoder: str | None = None  # the encoders' `kind`s: a model of another family refuses the features
    sync_encoder: str | None = None

    @property
    def segments(self) -> int:
        return self.sync.shape[1] // self.tokens_per_segment

    @property
    def segment_seconds(self) -> float:
        """Time between consecutive Synchformer segments (0.32 s for the release)."""
        return self.segment_stride / self.sync_fps

    def clip_length(self, seconds: float) -> int:
        return int(seconds * self.clip_fps)

    def sync_segments(self, seconds: float) -> int:
        frames = int(round(seconds * self.sync_fps))
        return max(0, (frames - self.segment_frames) // self.segment_stride + 1)

    # ------------------------------------------------------------------------------------------
    def window(self, start: float, seconds: float) -> "VisualFeatures":
        """The features of the clip [start, start + seconds), each stream sliced at its own rate.

        `start` should lie on the Synchformer segment grid (multiples of `segment_seconds`); it is
        rounded to the nearest segment otherwise. Tokens past the end repeat the last one.
        """
        clip_start = int(round(start * self.clip_fps))
        segment_start = int(round(start / self.segment_seconds))
        clip = _take(self.clip, clip_start, self.clip_length(seconds))
        sync = _take(
            self.sync.unflatten(1, (-1, self.tokens_per_segment)), segment_start, self.sync_segments(seconds)
        ).flatten(1, 2)
        return replace(self, clip=clip, sync=sync, duration=seconds)

    def trimmed(self, seconds: float) -> "VisualFeatures":
        if seconds > self.duration + 1e-6:
            raise ValueError(
                f"asked for {seconds:.2f} s of audio but the video features cover {self.duration:.2f} s; "
                "leave the duration at the video's length or shorten it"
            )
        if abs(seconds - self.duration) < 1e-6:
            return self
        return self.window(0.0, seconds)

    def static_anchor(self) -> "VisualFeatures":
        """Features of a static video: the first frame held for the whole clip, in both streams."""
        if self.static_clip is None or self.static_sync is None:
            raise ValueError("these visual features carry no static-frame encoding; re-encode the video "
                             "with the static anchor enabled to use SyncCFG's static anchor")
        clip = self.static_clip.expand(-1, self.clip.shape[1], -1)
        sync = self.static_sync.repeat(1, self.segments, 1)
        return replace(self, clip=clip, sync=sync)

    def shifted(self, seconds: float) -> "VisualFeatures":
        """The video delayed by `seconds` (negative: advanced), edges held at the first/last token.

        Each stream moves by a whole number of its own steps: frames for SigLIP2, segments for
        Synchformer; the shifts actually applied are `round(seconds * rate)` steps.
        """
        clip = _shift(self.clip, int(round(seconds * self.clip_fps)))
        segments = self.sync.unflatten(1, (-1, self.tokens_per_segment))
        sync = _shift(segments, int(round(seconds / self.segment_seconds))).flatten(1, 2)
        return replace(self, clip=clip, sync=sync)

    def to(self, device=None, dtype=None) -> "VisualFeatures":
        move = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return replace(self, clip=move(self.clip), sync=move(self.sync), static_clip=move(self.static_clip),
                       static_sync=move(self.static_sync))


def _take(tokens: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """Tokens [start, start + count) along dim 1, clamping indices to the available range."""
    index = torch.arange(start, start + count, device=tokens.device).clamp_(0, tokens.shape[1] - 1)
    return tokens.index_select(1, index)


def _shift(tokens: torch.Tensor, steps: int) -> torch.Tensor:
    """Delay by `steps` along dim 1: output[i] = input[i - steps], clamped at the edges."""
    length = tokens.shape[1]
    index = (torch.arange(length, device=tokens.device) - steps).clamp_(0, length - 1)
    return tokens.index_select(1, index)
