"""Frames for the visual encoders, sampled by timestamp from a video file or a ComfyUI IMAGE batch.

The rule (the reference's, without its drift): for a stream at `fps`, target k is the time
`start + k / fps`, computed exactly with Fractions, and takes the first decoded frame whose timestamp
is at or after it. Frames before `start` (and before the video's time origin) are skipped. The clip
lasts `n / duration_fps` seconds where n counts the `duration_fps` targets the video covers (25 fps in
the reference), and every stream is cut to `floor(duration * fps)` frames.

One decode pass feeds every stream; each decoded frame is converted to RGB only if some stream needs
it, then resized at once, so only encoder-sized uint8 frames are kept.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import torch

from .errors import MediaError
from .files import open_input
from .probe import first_video_stream, nominal_rate, time_origin
from .transforms import (INTERPOLATIONS, RESIZE_POLICIES, Interpolation, ResizePolicy, images_to_uint8,
                         normalize_rotation, resize_frame, rotate_upright, to_model_input)

DURATION_FPS = Fraction(25)
# Seeking saves decoding only when the start is well past the first keyframe interval.
_SEEK_THRESHOLD_S = Fraction(2)


def as_rate(fps: int | float | Fraction | str) -> Fraction:
    """A frame rate as an exact Fraction; floats near an NTSC rate (23.976, 29.97, 59.94) snap to n*1000/1001."""
    if isinstance(fps, Fraction):
        rate = fps
    elif isinstance(fps, float):
        rate = Fraction(fps).limit_denominator(1001)
        ntsc = Fraction(round(fps * 1.001), 1) * Fraction(1000, 1001)
        if abs(float(ntsc) - fps) < 5e-4 and float(ntsc) != round(fps):
            rate = ntsc
    else:
        rate = Fraction(fps)
    if rate <= 0:
        raise ValueError(f"frame rate must be positive, got {fps!r}")
    return rate


def as_seconds(value: int | float | Fraction) -> Fraction:
    """A time in seconds as a Fraction; floats are read as the decimal they were written as (3.84 is
    96/25, not the binary double just below it, which would lose the 96th frame at 25 fps)."""
    return Fraction(value).limit_denominator(1_000_000) if isinstance(value, float) else Fraction(value)


@dataclass(frozen=True)
class StreamSpec:
    """One encoder's view of the video: its name, frame rate and how frames are resized.

    resize: 'stretch' (size x size, aspect ignored), 'short_side_center_crop' (short side to size,
    central size x size) or 'none' (upright source size). interpolation: 'bilinear' or 'bicubic'.
    """

    name: str
    fps: Fraction
    resize: ResizePolicy = "stretch"
    size: int = 224
    interpolation: Interpolation = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fps", as_rate(self.fps))
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"stream {self.name!r}: resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"stream {self.name!r}: interpolation must be one of {INTERPOLATIONS}")
        if self.resize != "none" and self.size < 1:
            raise ValueError(f"stream {self.name!r}: size must be positive, got {self.size}")


SIGLIP2_STREAM = StreamSpec("siglip2", Fraction(8), "stretch", 512, "bilinear")
SYNCHFORMER_STREAM = StreamSpec("synchformer", Fraction(25), "short_side_center_crop", 224, "bicubic")
HUNYUAN_STREAMS: tuple[StreamSpec, ...] = (SIGLIP2_STREAM, SYNCHFORMER_STREAM)


@dataclass
class SampledStream:
    """Frames of one stream: uint8 [T, H, W, 3] (4x smaller than float, and exactly what torchvision's
    uint8 Resize yields), the target time of each frame and the timestamp of the frame chosen for it,
    both in seconds from the video's time origin. A chosen time is >= its target, except for frames
    repeated to pad a stream faster than `duration_fps` at the very end of the video."""

    spec: StreamSpec
    frames: torch.Tensor
    target_times: tuple[Fraction, ...]
    frame_times: tuple[Fraction, ...]

    def model_input(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Float [T, 3, H, W] in [-1, 1], the encoders' input."""
        return to_model_input(self.frames, dtype)

    def __len__(self) -> int:
        return self.frames.shape[0]


@dataclass
class SampledClip:
    """All streams of one clip. `duration` (seconds) is what the audio must last."""

    streams: dict[str, SampledStream]
    duration: Fraction
    start: Fraction
    source: str
    rotation: int = 0
    source_fps: Fraction | None = field(default=None)

    def __getitem__(self, name: str) -> SampledStream:
        return self.streams[name]


class _StreamCollector:
    def __init__(self, spec: StreamSpec, limit: int | None) -> None:
        self.spec = spec
        self.limit = limit
        self.frames: list[torch.Tensor] = []
        self.frame_times: list[Fraction] = []

    def wanted(self, offset: Fraction) -> int:
        """Targets k with k / fps <= offset, i.e. those a frame at `offset` (or earlier) satisfies."""
        count = math.floor(offset * self.spec.fps) + 1
        return count if self.limit is None else min(count, self.limit)

    def add(self, frame: torch.Tensor, time: Fraction, copies: int) -> None:
        self.frames.extend([frame] * copies)
        self.frame_times.extend([time] * copies)

    def finish(self, count: int, last_frame: Callable[[], torch.Tensor], last_time: Fraction,
               start: Fraction) -> SampledStream:
        if len(self.frames) < count:
            self.add(last_frame(), last_time, count - len(self.frames))
        del self.frames[count:], self.frame_times[count:]
        if self.frames:
            frames = torch.stack(self.frames)
        else:
            empty = (0, self.spec.size, self.spec.size, 3) if self.spec.resize != "none" else (0, 0, 0, 3)
            frames = torch.empty(empty, dtype=torch.uint8)
        targets = tuple(start + Fraction(k) / self.spec.fps for k in range(count))
        return SampledStream(self.spec, frames, targets, tuple(self.frame_times))


def _check_streams(streams: Sequence[StreamSpec]) -> None:
    if not streams:
        raise ValueError("at least one StreamSpec is needed")
    names = [spec.name for spec in streams]
    if len(set(names)) != len(names):
        raise ValueError(f"stream names must be unique, got {names}")


def _sample_timed(timed: Iterable[tuple[Fraction, Any]], render: Callable[[Any], torch.Tensor],
                  streams: Sequence[StreamSpec], start: Fraction, max_duration: float | Fraction | None,
                  duration_fps: Fraction, source: str) -> tuple[dict[str, SampledStream], Fraction]:
    """Apply the frame rule to (time, payload) pairs in presentation order; `render` makes uint8 [H,W,3]."""
    duration_limit = None if max_duration is None else math.floor(as_seconds(max_duration) * duration_fps)
    stream_limits = [None if duration_limit is None else math.floor(duration_limit * spec.fps / duration_fps)
                     for spec in streams]
    collectors = [_StreamCollector(spec, limit) for spec, limit in zip(streams, stream_limits)]
    duration_count = 0
    seen_any = False
    last: tuple[Fraction, Any] | None = None
    for time, payload in timed:
        seen_any = True
        offset = time - start
        if offset < 0:
            continue
        if last is None or time >= last[0]:
            last = (time, payload)
        duration_count = max(duration_count, math.floor(offset * duration_fps) + 1)
        picture = None
        for collector in collectors:
            missing = collector.wanted(offset) - len(collector.frames)
            if missing > 0:
                if picture is None:
                    picture = render(payload)
                spec = collector.spec
                collector.add(resize_frame(picture, spec.resize, spec.size, spec.interpolation), time, missing)
        if (duration_limit is not None and duration_count >= duration_limit
                and all(len(c.frames) >= c.limit for c in collectors)):
            break
    if not seen_any:
        raise MediaError(source, "has a video stream but no frame could be decoded",
                         "the file is corrupt or uses an unsupported codec; re-encode it")
    if last is None:
        raise MediaError(source, f"has no frame at or after the start offset {float(start):.3f} s",
                         "use a smaller start offset")
    if duration_limit is not None:
        duration_count = min(duration_count, duration_limit)
    duration = Fraction(duration_count) / duration_fps

    last_time, last_payload = last
    rendered: dict[str, torch.Tensor] = {}

    def last_frame_for(spec: StreamSpec) -> Callable[[], torch.Tensor]:
        def make() -> torch.Tensor:
            if "picture" not in rendered:
                rendered["picture"] = render(last_payload)
            return resize_frame(rendered["picture"], spec.resize, spec.size, spec.interpolation)
        return make

    sampled = {
        c.spec.name: c.finish(math.floor(duration * c.spec.fps), last_frame_for(c.spec), last_time, start)
        for c in collectors
    }
    return sampled, duration


def _decoded_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                    path: str, origin: Fraction) -> Iterator[tuple[Fraction, av.VideoFrame]]:
    time_base = stream.time_base
    rate = nominal_rate(stream) or Fraction(25)
    previous: Fraction | None = None
    try:
        for frame in container.decode(stream):
            if frame.pts is not None:
                time = frame.pts * time_base - origin
            else:
                # No timestamp (rare raw formats): assume the declared rate after the previous frame.
                time = Fraction(0) if previous is None else previous + 1 / rate
            previous = time
            yield time, frame
    except av.error.FFmpegError as error:
        at = f" after {float(previous):.3f} s" if previous is not None else ""
        raise MediaError(path, f"is corrupt: decoding failed{at} ({error.strerror})",
                         "re-encode the video") from error


def _frames_from(container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: str,
                 origin: Fraction, start: Fraction) -> Iterator[tuple[Fraction, av.VideoFrame]]:
    """Decoded frames, seeking near `start` first when that is safe to do."""
    if start >= _SEEK_THRESHOLD_S:
        try:
            container.seek(int((origin + start) / stream.time_base), stream=stream, backward=True)
            frames = _decoded_frames(container, stream, path, origin)
            first = next(frames, None)
            # A seek that lands after the start would break the rule; decode from the beginning then.
            if first is not None and first[0] <= start:
                yield first
                yield from frames
                return
        except av.error.FFmpegError:
            pass
        container.seek(0)
    yield from _decoded_frames(container, stream, path, origin)


def sample_video(path: str | os.PathLike, streams: Sequence[StreamSpec] = HUNYUAN_STREAMS, *,
                 start: float | Fraction = 0, max_duration: float | Fraction | None = None,
                 duration_fps: int | float | Fraction = DURATION_FPS) -> SampledClip:
    """Sample every stream of `streams` from the video at `path` in one decode pass.

    start: seconds into the video where target 0 lies. max_duration: optional cap on the clip length
    (the release caps at 15 s; no cap by default). Frames are turned upright per the video's rotation.
    Returns a SampledClip whose streams hold uint8 [T, H, W, 3] frames and their exact times.
    Raises MediaError for unreadable files, no video stream, no decodable frame, or a start past the end.
    """
    _check_streams(streams)
    start = as_seconds(start)
    if start < 0:
        raise ValueError(f"start must be >= 0, got {float(start)}")
    if max_duration is not None and max_duration <= 0:
        raise ValueError(f"max_duration must be positive, got {max_duration}")
    duration_fps = as_rate(duration_fps)
    with open_input(path) as container:
        stream = first_video_stream(container, path)
        stream.thread_type = "AUTO"
        origin = time_origin(stream)
        rotation_state: dict[str, int] = {}

        def render(frame: av.VideoFrame) -> torch.Tensor:
            if "rotation" not in rotation_state:
                rotation = frame.rotation
                if not rotation and "rotate" in stream.metadata:
                    rotation = -int(float(stream.metadata["rotate"]))  # legacy tag is clockwise
                rotation_state["rotation"] = normalize_rotation(rotation)
            return rotate_upright(frame.to_ndarray(format="rgb24"), rotation_state["rotation"])

        timed = _frames_from(container, stream, os.fspath(path), origin, start)
        sampled, duration = _sample_timed(timed, render, streams, start, max_duration, duration_fps,
                                          os.fspath(path))
        return SampledClip(sampled, duration, start, os.fspath(path), rotation_state.get("rotation", 0),
                           nominal_rate(stream))


def sample_images(images: torch.Tensor, fps: int | float | Fraction, streams: Sequence[StreamSpec] = HUNYUAN_STREAMS,
                  *, start: float | Fraction = 0, max_duration: float | Fraction | None = None,
                  duration_fps: int | float | Fraction = DURATION_FPS) -> SampledClip:
    """Sample streams from a ComfyUI IMAGE batch (float [N, H, W, C] in 0..1, or uint8) shown at `fps`.

    Frame n is at time n / fps; the same rule and return value as `sample_video`.
    """
    _check_streams(streams)
    if images.ndim != 4:
        raise ValueError(f"IMAGE must be [N, H, W, C], got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("IMAGE batch is empty")
    rate = as_rate(fps)
    start = as_seconds(start)
    timed = ((Fraction(index) / rate, index) for index in range(images.shape[0]))
    sampled, duration = _sample_timed(timed, lambda index: images_to_uint8(images[index]), streams, start,
                                      max_duration, as_rate(duration_fps), "IMAGE input")
    return SampledClip(sampled, duration, start, "IMAGE input", 0, rate)
