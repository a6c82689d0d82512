"""Test media made with PyAV: every video frame shows its own index as a 4x4 grid of black/white blocks.

The grid fills the frame's central square, so it survives stretching and short-side center crops,
and 16 bits (12 of index, 4 of checksum) let a misread be told apart from a wrong frame.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

GRID = 4
INDEX_BITS = 12


def _checksum(index: int) -> int:
    return (index ^ (index >> 4) ^ (index >> 8) ^ 0b1010) & 0xF


def index_pattern(index: int, width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3]: mid grey with the code of `index` in the central square."""
    assert 0 <= index < 2 ** INDEX_BITS
    code = index | (_checksum(index) << INDEX_BITS)
    image = np.full((height, width, 3), 128, np.uint8)
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    edges = [round(i * side / GRID) for i in range(GRID + 1)]
    for bit in range(GRID * GRID):
        row, col = divmod(bit, GRID)
        value = 255 if code >> bit & 1 else 0
        image[top + edges[row]:top + edges[row + 1], left + edges[col]:left + edges[col + 1]] = value
    return image


def code_region(width: int, height: int, policy: str) -> tuple[float, float, float, float]:
    """Where the code square lies in an output made by `policy` from an upright width x height frame,
    as fractions (x0, y0, x1, y1) of the output."""
    if policy == "short_side_center_crop":
        return 0.0, 0.0, 1.0, 1.0
    side = min(width, height)
    x0, y0 = (width - side) / 2 / width, (height - side) / 2 / height
    return x0, y0, 1 - x0, 1 - y0


def read_index(image: np.ndarray, region: Sequence[float]) -> int | None:
    """Decode the index shown in `image` (uint8 [H, W, 3]); None if the checksum does not match."""
    image = np.asarray(image)
    height, width = image.shape[:2]
    x0, y0, x1, y1 = region[0] * width, region[1] * height, region[2] * width, region[3] * height
    block_w, block_h = (x1 - x0) / GRID, (y1 - y0) / GRID
    code = 0
    for bit in range(GRID * GRID):
        row, col = divmod(bit, GRID)
        top, left = y0 + (row + 0.3) * block_h, x0 + (col + 0.3) * block_w
        patch = image[int(top):int(math.ceil(top + 0.4 * block_h)), int(left):int(math.ceil(left + 0.4 * block_w))]
        if patch.mean() > 127:
            code |= 1 << bit
    index = code & (2 ** INDEX_BITS - 1)
    return index if code >> INDEX_BITS == _checksum(index) else None


def tone(seconds: float, rate: int = 48000, channels: int = 1, frequency: float = 440.0,
         amplitude: float = 0.3) -> np.ndarray:
    """float32 [channels, round(seconds * rate)] sine; channel c is at frequency * (c + 1)."""
    t = np.arange(round(seconds * rate)) / rate
    channels_out = [amplitude * np.sin(2 * np.pi * frequency * (c + 1) * t) for c in range(channels)]
    return np.stack(channels_out).astype(np.float32)


def make_video(path: Path, *, fps: Fraction | int | None = None, count: int | None = None,
               times: Sequence[Fraction] | None = None, time_base: Fraction | None = None,
               size: tuple[int, int] = (96, 72), codec: str = "libx264", pix_fmt: str = "yuv420p",
               options: dict[str, str] | None = None, rotation: int = 0, audio_seconds: float | None = None,
               audio_rate: int = 48000, audio_channels: int = 1) -> list[Fraction]:
    """Write a video whose frame i shows i; returns each frame's time in seconds.

    Either fps + count (constant rate) or times (any timestamps, multiples of time_base). `size` is
    the upright (display) size; with `rotation` the stored picture is turned the other way and the
    display matrix says to turn it back, as phones do.
    """
    if times is None:
        fps = Fraction(fps)
        time_base = 1 / fps
        times = [Fraction(i) / fps for i in range(count)]
    width, height = size
    stored_w, stored_h = (height, width) if rotation % 180 else (width, height)
    container = av.open(str(path), mode="w")
    stream = container.add_stream(codec, rate=fps or 30, options=options or {})
    stream.width, stream.height, stream.pix_fmt = stored_w, stored_h, pix_fmt
    stream.codec_context.time_base = time_base
    if rotation:
        stream.set_display_rotation(rotation)
    audio = None
    if audio_seconds is not None:
        audio = container.add_stream("aac", rate=audio_rate)
        audio.layout = "mono" if audio_channels == 1 else "stereo"
    for index, time in enumerate(times):
        picture = np.ascontiguousarray(np.rot90(index_pattern(index, width, height), k=-rotation // 90))
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        pts = time / time_base
        assert pts.denominator == 1, "frame times must be multiples of time_base"
        frame.pts, frame.time_base = int(pts), time_base
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    if audio is not None:
        samples = tone(audio_seconds, audio_rate, audio_channels)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=audio.layout.name)
        frame.sample_rate, frame.pts, frame.time_base = audio_rate, 0, Fraction(1, audio_rate)
        for packet in [*audio.encode(frame), *audio.encode(None)]:
            container.mux(packet)
    container.close()
    return list(times)


def expected_choice(frame_times: Sequence[Fraction], fps: Fraction, count: int,
                    start: Fraction = Fraction(0)) -> list[int]:
    """Naive rule: target k at start + k / fps takes the first frame whose time is >= it."""
    chosen = []
    for k in range(count):
        target = start + Fraction(k) / Fraction(fps)
        chosen.append(next(i for i, time in enumerate(frame_times) if time >= target))
    return chosen


def expected_count(frame_times: Sequence[Fraction], fps: Fraction, start: Fraction = Fraction(0),
                   duration_fps: Fraction = Fraction(25)) -> int:
    """Frames a stream at `fps` gets: floor(duration * fps), duration = covered duration_fps targets / duration_fps."""
    covered = math.floor((max(frame_times) - start) * duration_fps) + 1
    return math.floor(Fraction(covered) / duration_fps * Fraction(fps))


def packet_bytes(path: Path, kind: str = "video") -> list[tuple[bytes, Fraction | None]]:
    """(payload, presentation time) of every packet of the first stream of `kind`."""
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [(bytes(packet), None if packet.pts is None else packet.pts * packet.time_base)
                for packet in container.demux(stream) if packet.size]
