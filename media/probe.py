"""What a video file holds: duration, frame rates (declared and measured), size, rotation, audio tracks."""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import av

from .errors import MediaError
from .files import open_input
from .transforms import normalize_rotation


@dataclass(frozen=True)
class AudioStreamInfo:
    """One audio track. `index` counts audio tracks only (0 is the first), as `load_audio(stream=...)` does."""

    index: int
    codec: str
    sample_rate: int
    channels: int
    duration: float | None
    language: str | None


@dataclass(frozen=True)
class VideoInfo:
    """Probe result. Times are seconds measured from the video's time origin (see `time_origin`).

    `width`/`height` are the stored picture; `display_width`/`display_height` are after `rotation`
    (degrees counter-clockwise that make the picture upright, the convention of PyAV's
    `VideoFrame.rotation`). `nominal_fps` is what the container declares; `real_fps`, `frame_count`,
    `variable_frame_rate` are measured from packet timestamps (None when probed with scan_packets=False).
    """

    path: str
    container: str
    codec: str
    width: int
    height: int
    display_width: int
    display_height: int
    rotation: int
    duration: float
    start_time: float
    nominal_fps: Fraction | None
    real_fps: float | None
    frame_count: int | None
    variable_frame_rate: bool | None
    audio_streams: tuple[AudioStreamInfo, ...]

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_streams)


@dataclass(frozen=True)
class PacketScan:
    """Exact timing of a video stream from its packets (no decoding). Times in seconds."""

    count: int
    first_time: Fraction
    end_time: Fraction
    min_interval: Fraction | None
    max_interval: Fraction | None
    tick: Fraction


def first_video_stream(container: av.container.InputContainer, path: str | os.PathLike) -> av.video.stream.VideoStream:
    """The first video stream that is not cover art, or MediaError."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise MediaError(path, "has no video stream", "pass a video file, or use load_audio for audio-only files")


def time_origin(stream: av.video.stream.VideoStream) -> Fraction:
    """Time that counts as 0 for sampling and muxing: the stream's start time, if it is positive.

    Frames before 0 (edit-list pre-roll) are skipped as in the reference; a stream that starts late
    (MPEG-TS, trimmed files) is measured from its own start so the first target gets the first frame.
    """
    if stream.start_time is None or stream.start_time <= 0:
        return Fraction(0)
    return stream.start_time * stream.time_base


def nominal_rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


def scan_video_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                       path: str | os.PathLike) -> PacketScan:
    """Read every packet of `stream` (demux only) and measure its timing exactly."""
    time_base = stream.time_base
    stamps: list[int] = []
    end_ticks: int | None = None
    try:
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            stamps.append(packet.pts)
            end = packet.pts + (packet.duration or 0)
            end_ticks = end if end_ticks is None else max(end_ticks, end)
    except av.error.FFmpegError as error:
        raise MediaError(path, f"is corrupt: reading its video packets failed ({error.strerror})") from error
    if not stamps:
        raise MediaError(path, "has a video stream with no frames", "the file is empty or truncated; re-export it")
    stamps.sort()
    intervals = [later - earlier for earlier, later in zip(stamps, stamps[1:]) if later > earlier]
    last = stamps[-1]
    if end_ticks is None or end_ticks <= last:
        # The last packet carried no duration: assume it lasts as long as a typical frame.
        rate = nominal_rate(stream)
        typical = sorted(intervals)[len(intervals) // 2] if intervals else None
        if typical is None and rate:
            typical = max(1, round(1 / (rate * time_base)))
        end_ticks = last + (typical or 1)
    return PacketScan(
        count=len(stamps),
        first_time=stamps[0] * time_base,
        end_time=end_ticks * time_base,
        min_interval=min(intervals) * time_base if intervals else None,
        max_interval=max(intervals) * time_base if intervals else None,
        tick=Fraction(time_base),
    )


def first_frame_rotation(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                         path: str | os.PathLike) -> int:
    """Rotation of the first decodable frame, from its display matrix, else from the legacy 'rotate' tag."""
    try:
        for frame in container.decode(stream):
            rotation = frame.rotation
            if not rotation and "rotate" in stream.metadata:
                rotation = -int(float(stream.metadata["rotate"]))  # the tag is clockwise
            return normalize_rotation(rotation)
    except av.error.FFmpegError as error:
        raise MediaError(path, f"is corrupt: decoding failed ({error.strerror})") from error
    raise MediaError(path, "has a video stream but no frame could be decoded",
                     "the file is corrupt or uses an unsupported codec; re-encode it")


def probe_video(path: str | os.PathLike, *, scan_packets: bool = True) -> VideoInfo:
    """Describe the first video stream of `path` and list its audio streams.

    With `scan_packets` (default) every video packet is read (no decoding) so the duration, frame
    count and real frame rate are exact; without it they come from container headers, which may be
    missing or wrong. One frame is always decoded, to read rotation and prove the video decodes.
    Raises MediaError for missing/unreadable files, no video stream or no decodable frame.
    """
    with open_input(path) as container:
        stream = first_video_stream(container, path)
        origin = time_origin(stream)
        rate = nominal_rate(stream)
        real_fps = frame_count = variable = None
        if scan_packets:
            scan = scan_video_packets(container, stream, path)
            duration = scan.end_time - origin
            frame_count = scan.count
            span = scan.end_time - scan.first_time
            real_fps = float(scan.count / span) if span > 0 else None
            if scan.min_interval is not None:
                tolerance = max(2 * scan.tick, scan.min_interval / 100)
                variable = scan.max_interval - scan.min_interval > tolerance
            container.seek(0)
        elif stream.duration is not None:
            duration = stream.duration * stream.time_base + (stream.start_time or 0) * stream.time_base - origin
        elif container.duration is not None:
            duration = Fraction(container.duration, av.time_base)
        else:
            duration = Fraction(0)
        rotation = first_frame_rotation(container, stream, path)
        width, height = stream.codec_context.width, stream.codec_context.height
        display_width, display_height = (height, width) if rotation % 180 else (width, height)
        audio = tuple(
            AudioStreamInfo(
                index=position,
                codec=audio_stream.codec_context.name,
                sample_rate=audio_stream.codec_context.sample_rate,
                channels=audio_stream.codec_context.channels,
                duration=float(audio_stream.duration * audio_stream.time_base) if audio_stream.duration else None,
                language=audio_stream.language if audio_stream.language not in (None, "und") else None,
            )
            for position, audio_stream in enumerate(container.streams.audio)
        )
        return VideoInfo(
            path=os.fspath(path), container=container.format.name, codec=stream.codec_context.name,
            width=width, height=height, display_width=display_width, display_height=display_height,
            rotation=rotation, duration=float(duration), start_time=float(origin),
            nominal_fps=rate, real_fps=real_fps, frame_count=frame_count, variable_frame_rate=variable,
            audio_streams=audio,
        )
