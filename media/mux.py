"""Put generated audio back under a picture: stream-copy a source video, or encode IMAGE frames.

The copied video packets are never decoded, so the picture stays bit-identical (rotation and other
stream side data travel with the template stream). Audio always lasts exactly as long as the video.
Packets from all sources are merged in time order so the muxer never buffers a whole track.
"""
from __future__ import annotations

import heapq
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch

from .audio import (add_audio_stream, as_waveform, convert_channels, encode_waveform, encoder_rate, fit_duration,
                    load_audio, resample_audio)
from .errors import MediaError
from .files import atomic_output, check_output_path, open_input, require_input_file
from .frames import as_rate
from .probe import first_video_stream, scan_video_packets, time_origin
from .transforms import images_to_uint8

OriginalAudio = Literal["drop", "keep", "mix"]
# Extension -> audio encoder for the generated track.
VIDEO_CONTAINERS: dict[str, str] = {".mp4": "aac", ".m4v": "aac", ".mov": "aac", ".mkv": "libopus", ".webm": "libopus"}
# Audio codecs each container takes as a stream copy (None: any); others are re-encoded.
_COPYABLE_AUDIO: dict[str, set[str] | None] = {
    ".mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    ".m4v": {"aac", "ac3", "eac3", "alac"},
    ".mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le"},
    ".mkv": None,
    ".webm": {"opus", "vorbis"},
}
_WEBM_VIDEO = {"vp8", "vp9", "av1"}
_BT709 = 1  # the ITU-T H.273 code for BT.709 colour space, primaries and transfer


def _packet_time(packet: av.Packet) -> Fraction:
    stamp = packet.dts if packet.dts is not None else packet.pts
    return Fraction(0) if stamp is None or packet.time_base is None else stamp * packet.time_base


def _interleave(*sources: Iterator[av.Packet]) -> Iterator[av.Packet]:
    """Merge packet sources by decode time (each source is in decode order)."""
    return heapq.merge(*sources, key=_packet_time)


def _label(stream: av.stream.Stream, title: str, default: bool) -> None:
    """Name a track for players (mkv reads 'title', mp4 'handler_name') and mark which plays by default."""
    stream.metadata["title"] = title
    stream.metadata["handler_name"] = title
    stream.disposition = av.stream.Disposition.default if default else av.stream.Disposition(0)


def _mixed(generated: torch.Tensor, original: torch.Tensor, level: float) -> torch.Tensor:
    mixed = generated + level * original
    peak = float(mixed.abs().max()) if mixed.numel() else 0.0
    # Scale down rather than clip: clipping would add distortion the model did not make.
    return mixed / peak if peak > 1.0 else mixed


def shift_audio(waveform: torch.Tensor, sample_rate: int, offset_ms: float) -> torch.Tensor:
    """[C, T] moved `offset_ms` later (positive: silence in front) or earlier (negative: its start
    dropped), its length kept: the repair for a sound that is early or late against the picture."""
    shift = round(offset_ms * sample_rate / 1000)
    if shift == 0:
        return waveform
    length = waveform.shape[-1]
    if shift > 0:
        return torch.nn.functional.pad(waveform, (shift, 0))[..., :length]
    return torch.nn.functional.pad(waveform[..., -shift:], (0, min(-shift, length)))


def _copied_packets(container: av.container.InputContainer, mapping: dict[int, av.stream.Stream],
                    end_time: Fraction) -> Iterator[av.Packet]:
    """Demuxed packets of the mapped input streams (by index), re-targeted; audio past the video's end is dropped."""
    wanted = [stream for stream in container.streams if stream.index in mapping]
    for packet in container.demux(*wanted):
        if packet.dts is None and packet.pts is None:
            continue  # the demuxer's end-of-stream marker
        if packet.stream.type == "audio" and packet.pts is not None and packet.pts * packet.time_base >= end_time:
            continue
        packet.stream = mapping[packet.stream.index]
        yield packet


@dataclass(frozen=True)
class _Source:
    origin: Fraction
    end_time: Fraction
    audio_codec: str | None
    audio_channels: int | None

    @property
    def duration(self) -> Fraction:
        return self.end_time - self.origin


def _inspect_source(source: Path, output: Path, original_stream: int) -> _Source:
    with open_input(source) as container:
        video = first_video_stream(container, source)
        if output.suffix.lower() == ".webm" and video.codec_context.name not in _WEBM_VIDEO:
            raise MediaError(output, f"WebM cannot hold {video.codec_context.name} video without re-encoding",
                             "write .mkv or .mp4 instead")
        end_time = scan_video_packets(container, video, source).end_time
        audio = container.streams.audio
        if 0 <= original_stream < len(audio):
            context = audio[original_stream].codec_context
            return _Source(time_origin(video), end_time, context.name, context.channels)
        return _Source(time_origin(video), end_time, None, None)


def mux_audio(video_path: str | os.PathLike, audio: torch.Tensor | np.ndarray, sample_rate: int,
              output_path: str | os.PathLike, *, original_audio: OriginalAudio = "drop", original_level: float = 0.5,
              original_stream: int = 0, overwrite: bool = False, bitrate: int | None = None,
              offset_ms: float = 0.0, comment: str | None = None) -> Path:
    """Write `output_path`: the video stream of `video_path` copied packet for packet, plus `audio`.

    audio: float [C, T] or [T] at `sample_rate`, starting at the video's time 0; it is trimmed or
    zero-padded to the video's duration and encoded as AAC (.mp4/.m4v/.mov) or Opus (.mkv/.webm).
    original_audio: 'drop' the source's sound, 'keep' it as a second (non-default) track (stream-copied
    when the container takes its codec, else re-encoded), or 'mix' it into the new track at linear gain
    `original_level` (the sum is scaled down if it would clip). offset_ms moves the new sound later
    (positive) or earlier (negative) against the picture, e.g. by what `syncfoley eval-sync --suggest`
    says; the picture is still copied, never re-encoded. `comment` goes into the file's own
    metadata (the container's comment tag: a take's sync score, for instance). Only the first video stream and the chosen
    audio stream are kept. Written under a temporary name and renamed when complete.
    Raises MediaError for unreadable input, missing streams, or an output that cannot be written.
    """
    source = require_input_file(video_path)
    output = check_output_path(output_path, VIDEO_CONTAINERS, overwrite=overwrite, kind="video")
    if original_audio not in ("drop", "keep", "mix"):
        raise ValueError(f"original_audio must be 'drop', 'keep' or 'mix', got {original_audio!r}")
    extension = output.suffix.lower()
    codec = VIDEO_CONTAINERS[extension]
    info = _inspect_source(source, output, original_stream)
    if original_audio != "drop" and info.audio_codec is None:
        raise MediaError(source, f"has no audio stream {original_stream} to {original_audio}",
                         "use original_audio='drop'")
    rate = encoder_rate(codec, sample_rate)
    generated = resample_audio(shift_audio(as_waveform(audio), sample_rate, offset_ms), sample_rate, rate)
    generated = fit_duration(generated, rate, info.duration)
    copy_original = False
    reencoded_original = None
    if original_audio == "mix":
        channels = min(2, max(generated.shape[0], info.audio_channels))
        original, _ = load_audio(source, rate, channels=channels, stream=original_stream)
        generated = _mixed(convert_channels(generated, channels), fit_duration(original, rate, info.duration),
                           original_level)
    elif original_audio == "keep":
        allowed = _COPYABLE_AUDIO[extension]
        copy_original = allowed is None or info.audio_codec in allowed
        if not copy_original:
            reencoded_original = fit_duration(load_audio(source, rate, stream=original_stream)[0], rate, info.duration)

    start_pts = round(info.origin * rate)
    with atomic_output(output, overwrite=overwrite) as temp_path, open_input(source) as container:
        video = first_video_stream(container, source)
        try:
            with av.open(str(temp_path), mode="w") as out:
                if comment:
                    out.metadata["comment"] = comment
                mapping = {video.index: out.add_stream_from_template(video)}
                mapping[video.index].disposition = av.stream.Disposition.default
                new_track = add_audio_stream(out, codec, rate, generated.shape[0], bitrate)
                _label(new_track, "SyncFoley", default=True)
                sources = [encode_waveform(new_track, generated, rate, start_pts)]
                if copy_original:
                    in_audio = container.streams.audio[original_stream]
                    mapping[in_audio.index] = out.add_stream_from_template(in_audio)
                    _label(mapping[in_audio.index], "original", default=False)
                elif reencoded_original is not None:
                    kept = add_audio_stream(out, codec, rate, reencoded_original.shape[0], bitrate)
                    _label(kept, "original", default=False)
                    sources.append(encode_waveform(kept, reencoded_original, rate, start_pts))
                for packet in _interleave(_copied_packets(container, mapping, info.end_time), *sources):
                    out.mux(packet)
        except av.error.FFmpegError as error:
            raise MediaError(output, f"muxing failed ({error.strerror})",
                             f"the container may not take {video.codec_context.name} video; try .mkv") from error
    return output


def _video_encoder(extension: str) -> str:
    preferred = ["libvpx-vp9"] if extension == ".webm" else ["libx264", "h264", "mpeg4"]
    for name in preferred:
        try:
            av.Codec(name, "w")
            return name
        except (av.error.FFmpegError, ValueError):
            continue
    raise MediaError(None, f"no video encoder available for {extension}",
                     "install PyAV wheels that bundle libx264/libvpx")


def _even_frame(frame: torch.Tensor) -> np.ndarray:
    """Pad uint8 [H, W, 3] by repeating its last row/column to even sides, as 4:2:0 chroma requires."""
    height, width = frame.shape[:2]
    array = frame.numpy()
    if height % 2 or width % 2:
        array = np.pad(array, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return array


def _encoded_frames(stream: av.video.stream.VideoStream, images: torch.Tensor) -> Iterator[av.Packet]:
    for index in range(images.shape[0]):
        frame = av.VideoFrame.from_ndarray(_even_frame(images_to_uint8(images[index])), format="rgb24")
        # Convert and tag as BT.709 limited range so players do not guess the matrix from the size.
        frame = frame.reformat(format=stream.pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG",
                               dst_color_trc=_BT709, dst_color_primaries=_BT709)
        frame.pts = index
        yield from stream.encode(frame)
    yield from stream.encode(None)


def write_video(images: torch.Tensor, fps: int | float | Fraction, output_path: str | os.PathLike, *,
                audio: torch.Tensor | np.ndarray | None = None, sample_rate: int = 48000, crf: int = 18,
                overwrite: bool = False, bitrate: int | None = None, offset_ms: float = 0.0) -> Path:
    """Encode ComfyUI IMAGE frames (float [N, H, W, C] in 0..1, or uint8) at `fps`, with optional audio.

    Video is H.264 yuv420p (VP9 for .webm); odd sides are padded by one repeated row/column because
    4:2:0 needs even sizes. Audio (float [C, T] at `sample_rate`) is trimmed or padded to N / fps
    seconds, after moving it `offset_ms` later (negative: earlier). Written under a temporary name and
    renamed when complete. Returns the path written.
    """
    output = check_output_path(output_path, VIDEO_CONTAINERS, overwrite=overwrite, kind="video")
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"IMAGE must be a non-empty [N, H, W, C] batch, got shape {tuple(images.shape)}")
    rate = as_rate(fps)
    extension = output.suffix.lower()
    video_codec = _video_encoder(extension)
    audio_codec = VIDEO_CONTAINERS[extension]
    height, width = images.shape[1], images.shape[2]
    waveform = None
    if audio is not None:
        audio_rate = encoder_rate(audio_codec, sample_rate)
        waveform = resample_audio(shift_audio(as_waveform(audio), sample_rate, offset_ms), sample_rate, audio_rate)
        waveform = fit_duration(waveform, audio_rate, images.shape[0] / rate)
    with atomic_output(output, overwrite=overwrite) as temp_path:
        try:
            with av.open(str(temp_path), mode="w") as out:
                options = {"crf": str(crf)} if video_codec in ("libx264", "libvpx-vp9") else {}
                video = out.add_stream(video_codec, rate=rate, options=options)
                video.width, video.height = width + width % 2, height + height % 2
                video.pix_fmt = "yuv420p"
                context = video.codec_context
                context.colorspace = context.color_primaries = context.color_trc = _BT709
                context.color_range = 1  # MPEG (limited)
                video.codec_context.time_base = 1 / rate
                video.disposition = av.stream.Disposition.default
                sources = [_encoded_frames(video, images)]
                if waveform is not None:
                    track = add_audio_stream(out, audio_codec, audio_rate, waveform.shape[0], bitrate)
                    sources.append(encode_waveform(track, waveform, audio_rate))
                for packet in _interleave(*sources):
                    out.mux(packet)
        except av.error.FFmpegError as error:
            raise MediaError(output, f"encoding failed ({error.strerror})") from error
    return output
