"""Conditions from prompts and videos: text features, and visual features of both encoder streams.

Videos are encoded in chunks of `CHUNK_SECONDS` (a multiple of both the SigLIP2 frame step and the
Synchformer segment step, so chunking changes nothing) and only features are kept, so a long video
never holds more than one chunk of frames.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction
from typing import Callable, Protocol

import torch

from ..media import StreamSpec, sample_images, sample_video
from ..media.frames import SampledClip
from ..models.encoders import FrameSpec
from ..sampling.features import TextFeatures, VisualFeatures

IMAGE_STREAM, SYNC_STREAM = "image", "sync"
SEGMENT_FRAMES, SEGMENT_STRIDE = 16, 8
CHUNK_SECONDS = 16  # at least; rounded up to a whole number of both streams' steps (16 s for the release)


class TextEncoder(Protocol):
    def encode(self, prompts: list[str]) -> torch.Tensor: ...


class ImageEncoder(Protocol):
    frame_spec: FrameSpec

    def encode(self, frames: torch.Tensor) -> torch.Tensor: ...


class SyncEncoder(Protocol):
    frame_spec: FrameSpec

    def extract_visual(self, segments: torch.Tensor) -> torch.Tensor: ...


def encode_text(encoder: TextEncoder, prompt: str, negative_prompt: str) -> TextFeatures:
    """Encode the prompt and the negative prompt together, as the reference does (one padded batch)."""
    tokens = encoder.encode([negative_prompt, prompt]).float().cpu()
    return TextFeatures(tokens[1:2], tokens[0:1], prompt, negative_prompt, getattr(encoder, "kind", None))


def stream_specs(image_encoder: ImageEncoder, sync_encoder: SyncEncoder) -> tuple[StreamSpec, StreamSpec]:
    return tuple(
        StreamSpec(name, Fraction(spec.fps).limit_denominator(1001), spec.resize, spec.size, spec.interpolation)
        for name, spec in ((IMAGE_STREAM, image_encoder.frame_spec), (SYNC_STREAM, sync_encoder.frame_spec))
    )


def chunk_seconds(image_fps: Fraction, sync_fps: Fraction, at_least: float | None = None) -> Fraction:
    """The shortest span >= `at_least` that is whole SigLIP2 frames and whole Synchformer segment
    steps, so chunk boundaries fall on both grids (the release's 8 fps and 0.32 s: multiples of 8 s)."""
    a, b = 1 / Fraction(image_fps), SEGMENT_STRIDE / Fraction(sync_fps)
    step = Fraction(math.lcm(a.numerator, b.numerator), math.gcd(a.denominator, b.denominator))
    at_least = CHUNK_SECONDS if at_least is None else at_least
    return step * max(1, math.ceil(Fraction(at_least) / step))


def segments_of(frames: torch.Tensor) -> torch.Tensor:
    """`[T, 3, H, W]` -> overlapping segments `[S, 16, 3, H, W]`, S = (T - 16) // 8 + 1 (a view)."""
    count = (frames.shape[0] - SEGMENT_FRAMES) // SEGMENT_STRIDE + 1
    if count <= 0:
        return frames.new_zeros(0, SEGMENT_FRAMES, *frames.shape[1:])
    return frames.unfold(0, SEGMENT_FRAMES, SEGMENT_STRIDE)[:count].permute(0, 4, 1, 2, 3)


@torch.no_grad()
def encode_clip(clip: SampledClip, image_encoder: ImageEncoder, sync_encoder: SyncEncoder,
                image_frames: int | None = None, segments: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a sampled clip: `[T_image, D]` and `[S, tokens, D]` (None without a whole
    segment), optionally of the first frames / segments only."""
    images = clip[IMAGE_STREAM].model_input()[:image_frames]
    image_features = image_encoder.encode(images).float().cpu()
    sync_segments = segments_of(clip[SYNC_STREAM].model_input())[:segments]
    if sync_segments.shape[0] == 0:
        return image_features, None
    return image_features, sync_encoder.extract_visual(sync_segments.unsqueeze(0)).float().cpu()[0]


@torch.no_grad()
def static_features(first_frame: SampledClip, image_encoder: ImageEncoder, sync_encoder: SyncEncoder):
    """SigLIP2 and Synchformer features of the first frame held still (SyncCFG's static anchor)."""
    image = first_frame[IMAGE_STREAM].model_input()[:1]
    still = first_frame[SYNC_STREAM].model_input()[:1].expand(SEGMENT_FRAMES, -1, -1, -1)
    static_clip = image_encoder.encode(image).float().cpu().unsqueeze(0)
    static_sync = sync_encoder.extract_visual(still[None, None]).float().cpu().flatten(1, 2)
    return static_clip, static_sync


def encode_video(
    source: str | os.PathLike | tuple[torch.Tensor, float],
    image_encoder: ImageEncoder,
    sync_encoder: SyncEncoder,
    start: float = 0.0,
    max_duration: float | None = None,
    static_anchor: bool = True,
    progress: Callable[[float], None] | None = None,
) -> VisualFeatures:
    """Visual features of a video file, or of `(IMAGE frames [N,H,W,C], fps)`, from `start` on.

    Each stream is sampled at its encoder's rate by the timestamp rule; `progress(seconds_done)` is
    called after each chunk.
    """
    streams = stream_specs(image_encoder, sync_encoder)
    image_fps, sync_fps = float(streams[0].fps), float(streams[1].fps)
    if isinstance(source, tuple):
        images, fps = source
        sample = lambda s, d: sample_images(images, fps, streams, start=s, max_duration=d)  # noqa: E731
        where = "the IMAGE frames"
    else:
        sample = lambda s, d: sample_video(source, streams, start=s, max_duration=d)  # noqa: E731
        where = f"'{source}'"
    chunk = float(chunk_seconds(streams[0].fps, streams[1].fps))
    # A chunk is sampled with one more segment step so its last segments have their frames.
    reach = chunk + SEGMENT_STRIDE / sync_fps
    image_parts, sync_parts, duration, first = [], [], 0.0, None
    while max_duration is None or duration < max_duration - 1e-9:
        remaining = None if max_duration is None else max_duration - duration
        want = reach if remaining is None else min(reach, remaining)
        clip = sample(start + duration, want)
        first = first or clip
        covered = float(clip.duration)
        last = covered <= chunk + 1e-9
        if last and duration + covered < SEGMENT_FRAMES / sync_fps - 1e-9:  # checked before any encoding
            raise _too_short(where, duration + covered, start, sync_fps)
        span = covered if last else chunk
        image_count = math.floor(span * image_fps + 1e-9)
        segment_count = None if last else int(round(chunk * sync_fps / SEGMENT_STRIDE))
        image_features, sync_features = encode_clip(clip, image_encoder, sync_encoder, image_count, segment_count)
        image_parts.append(image_features)
        if sync_features is not None:
            sync_parts.append(sync_features)
        duration += span
        if progress:
            progress(duration)
        if last:
            break
    if not sync_parts:
        raise _too_short(where, duration, start, sync_fps)
    static_clip, static_sync = static_features(first, image_encoder, sync_encoder) if static_anchor else (None, None)
    sync = torch.cat(sync_parts)  # [S, tokens, D]
    return VisualFeatures(
        clip=torch.cat(image_parts).unsqueeze(0),
        sync=sync.flatten(0, 1).unsqueeze(0),
        duration=duration,
        static_clip=static_clip,
        static_sync=static_sync,
        clip_fps=image_fps,
        sync_fps=sync_fps,
        segment_frames=SEGMENT_FRAMES,
        segment_stride=SEGMENT_STRIDE,
        tokens_per_segment=sync.shape[1],
        image_encoder=getattr(image_encoder, "kind", None),
        sync_encoder=getattr(sync_encoder, "kind", None),
    )


def _too_short(where: str, seconds: float, start: float, sync_fps: float) -> ValueError:
    return ValueError(f"{where} gives {seconds:.2f} s of video from {start:.2f} s on; at least "
                      f"{SEGMENT_FRAMES / sync_fps:.2f} s (one Synchformer segment) is needed")
