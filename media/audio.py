"""Audio in and out: load any audio (or a video's audio track) to float [C, T], resample, save by extension.

Channel changes are done here, not by FFmpeg's resampler, because swresample scales mono->stereo
and stereo->mono by 1/sqrt(2); we duplicate mono and average stereo. Only layouts with more than two
channels are downmixed to stereo by swresample, which knows their matrices.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from .errors import MediaError
from .files import atomic_output, check_output_path, open_input
from .probe import time_origin

# Extension -> encoder. '.ogg' carries Opus: FFmpeg's native Vorbis encoder is experimental. No raw '.aac':
# ADTS cannot record the encoder's 1024-sample priming, so the sound would come back late; use '.m4a'.
AUDIO_CODECS: dict[str, str] = {
    ".wav": "pcm_s16le",
    ".flac": "flac",
    ".mp3": "libmp3lame",
    ".opus": "libopus",
    ".ogg": "libopus",
    ".m4a": "aac",
}
OPUS_RATES = (48000, 24000, 16000, 12000, 8000)
MP3_RATES = (48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
_CHUNK_SECONDS = 1


def layout_for(channels: int) -> str:
    """FFmpeg channel layout name for a channel count (mono, stereo, else the default layout)."""
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


def as_waveform(waveform: torch.Tensor | np.ndarray) -> torch.Tensor:
    """[T] or [C, T] audio as a float32 [C, T] tensor on the CPU; rejects NaN/inf."""
    tensor = torch.as_tensor(waveform).detach().to("cpu", torch.float32)
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2:
        raise ValueError(f"audio must be [T] or [C, T], got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError("audio contains NaN or infinite samples")
    return tensor


def convert_channels(waveform: torch.Tensor, channels: int) -> torch.Tensor:
    """[C, T] -> [channels, T]: mono is duplicated to stereo; any channel count averages to mono."""
    current = waveform.shape[0]
    if channels == current:
        return waveform
    if channels == 1:
        return waveform.mean(dim=0, keepdim=True)
    if channels == 2 and current == 1:
        return waveform.expand(2, -1).clone()
    raise ValueError(f"cannot convert {current} channels to {channels}; only mono<->stereo and any->mono "
                     "are supported (load_audio downmixes surround to stereo)")


def fit_duration(waveform: torch.Tensor, sample_rate: int, duration: float | Fraction) -> torch.Tensor:
    """Trim or zero-pad the end of [C, T] to round(duration * sample_rate) samples."""
    length = round(Fraction(duration) * sample_rate)
    if waveform.shape[-1] >= length:
        return waveform[..., :length]
    return torch.nn.functional.pad(waveform, (0, length - waveform.shape[-1]))


def resample_audio(waveform: torch.Tensor, sample_rate: int, target_rate: int) -> torch.Tensor:
    """Resample [C, T] with FFmpeg's swresample (PyAV's AudioResampler)."""
    waveform = as_waveform(waveform)
    if sample_rate == target_rate:
        return waveform
    resampler = av.AudioResampler(format="fltp", layout=layout_for(waveform.shape[0]), rate=target_rate)
    step = sample_rate * _CHUNK_SECONDS
    pieces = []
    array = waveform.numpy()
    for begin in range(0, array.shape[1], step):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(array[:, begin:begin + step]), format="fltp",
                                           layout=layout_for(array.shape[0]))
        frame.sample_rate = sample_rate
        frame.pts = begin
        frame.time_base = Fraction(1, sample_rate)
        pieces.extend(out.to_ndarray() for out in resampler.resample(frame))
    pieces.extend(out.to_ndarray() for out in resampler.resample(None))
    if not pieces:
        return torch.zeros(waveform.shape[0], 0)
    return torch.from_numpy(np.concatenate(pieces, axis=1).astype(np.float32, copy=False))


def load_audio(path: str | os.PathLike, sample_rate: int | None = 48000, *, channels: int | None = None,
               stream: int = 0, start: float = 0.0, duration: float | None = None) -> tuple[torch.Tensor, int]:
    """Decode an audio file, or the audio track of a video, to float32 [C, T] in [-1, 1].

    sample_rate: output rate (None keeps the file's). channels: None keeps the file's, 1 mono, 2 stereo.
    stream: which audio track (0 = first). For video files sample 0 is the video's time 0 (silence is
    inserted when the track starts late, samples dropped when it starts early); audio-only files start
    at their first sample.
    start/duration select a window in seconds. Returns (waveform, sample_rate).
    Raises MediaError when the file is unreadable or has no such audio stream.
    """
    if channels not in (None, 1, 2):
        raise ValueError(f"channels must be None, 1 or 2, got {channels}")
    with open_input(path) as container:
        audio_streams = container.streams.audio
        if not audio_streams:
            raise MediaError(path, "has no audio stream", "pass a file with sound, or skip the original audio")
        if not 0 <= stream < len(audio_streams):
            raise MediaError(path, f"has {len(audio_streams)} audio stream(s), stream {stream} was asked for",
                             f"use a stream index below {len(audio_streams)}")
        audio_stream = audio_streams[stream]
        videos = [v for v in container.streams.video if not v.disposition & av.stream.Disposition.attached_pic]
        origin = time_origin(videos[0]) if videos else None
        source_channels = audio_stream.codec_context.channels
        layout = "stereo" if channels is not None and source_channels > 2 else None
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        pieces: list[np.ndarray] = []
        first_time: Fraction | None = None
        out_rate = sample_rate
        try:
            for frame in container.decode(audio_stream):
                if first_time is None and frame.pts is not None:
                    first_time = frame.pts * audio_stream.time_base
                for out in resampler.resample(frame):
                    out_rate = out.sample_rate
                    pieces.append(out.to_ndarray())
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray())
        except av.error.FFmpegError as error:
            raise MediaError(path, f"is corrupt: decoding its audio failed ({error.strerror})") from error
    if not pieces:
        raise MediaError(path, "has an audio stream but no decodable audio", "the track is empty or corrupt")
    out_rate = out_rate or audio_stream.codec_context.sample_rate
    waveform = torch.from_numpy(np.concatenate(pieces, axis=1).astype(np.float32, copy=False))
    # Audio-only files start at their first sample: an MP3's first timestamp is its encoder delay,
    # which the decoder has already removed.
    lead = 0 if origin is None else round(((first_time or Fraction(0)) - origin) * out_rate)
    if lead > 0:
        waveform = torch.nn.functional.pad(waveform, (lead, 0))
    elif lead < 0:
        waveform = waveform[:, -lead:]
    if channels is not None:
        waveform = convert_channels(waveform, channels)
    begin = round(start * out_rate)
    end = None if duration is None else begin + round(duration * out_rate)
    return waveform[:, begin:end].contiguous(), out_rate


def encoder_rate(codec: str, sample_rate: int) -> int:
    """The rate to encode at: the input's, unless the codec cannot take it."""
    allowed = {"libopus": OPUS_RATES, "libmp3lame": MP3_RATES}.get(codec)
    if allowed is None or sample_rate in allowed:
        return sample_rate
    return min(allowed, key=lambda rate: (rate < sample_rate, abs(rate - sample_rate)))


def encode_waveform(stream: av.audio.stream.AudioStream, waveform: torch.Tensor, sample_rate: int,
                    start_pts: int = 0) -> Iterator[av.Packet]:
    """Encode float [C, T] at `sample_rate` (the stream's rate) into packets, lazily, then flush.

    start_pts (in 1/sample_rate) places the first sample on the output timeline.
    """
    array = waveform.numpy()
    layout = layout_for(array.shape[0])
    step = sample_rate * _CHUNK_SECONDS
    for begin in range(0, array.shape[1], step):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(array[:, begin:begin + step]), format="fltp",
                                           layout=layout)
        frame.sample_rate = sample_rate
        frame.time_base = Fraction(1, sample_rate)
        frame.pts = start_pts + begin
        yield from stream.encode(frame)
    yield from stream.encode(None)


def add_audio_stream(container: av.container.OutputContainer, codec: str, sample_rate: int, channels: int,
                     bitrate: int | None = None) -> av.audio.stream.AudioStream:
    stream = container.add_stream(codec, rate=sample_rate)
    stream.layout = layout_for(channels)
    stream.time_base = Fraction(1, sample_rate)
    if bitrate:
        stream.bit_rate = bitrate
    return stream


def save_audio(path: str | os.PathLike, waveform: torch.Tensor | np.ndarray, sample_rate: int, *,
               overwrite: bool = False, channels: int | None = None, codec: str | None = None,
               bitrate: int | None = None) -> Path:
    """Write float [C, T] (or [T]) audio; the format follows the extension (see AUDIO_CODECS).

    WAV is 16-bit PCM unless codec='pcm_f32le' (exact float). channels=2 turns mono into stereo.
    Opus/MP3 inputs at rates those codecs lack are resampled. The file is written under a temporary
    name and renamed when complete. Returns the path written.
    """
    path = check_output_path(path, AUDIO_CODECS, overwrite=overwrite, kind="audio")
    waveform = as_waveform(waveform)
    if channels is not None:
        waveform = convert_channels(waveform, channels)
    codec = codec or AUDIO_CODECS[path.suffix.lower()]
    rate = encoder_rate(codec, sample_rate)
    waveform = resample_audio(waveform, sample_rate, rate)
    with atomic_output(path, overwrite=overwrite) as temp_path:
        try:
            with av.open(str(temp_path), mode="w") as container:
                stream = add_audio_stream(container, codec, rate, waveform.shape[0], bitrate)
                for packet in encode_waveform(stream, waveform, rate):
                    container.mux(packet)
        except av.error.FFmpegError as error:
            raise MediaError(path, f"writing {codec} audio failed ({error.strerror})",
                             "try another format, e.g. .wav or .flac") from error
    return path


def audio_to_comfy(waveform: torch.Tensor, sample_rate: int) -> dict:
    """[C, T] -> ComfyUI AUDIO {'waveform': [1, C, T], 'sample_rate': int}."""
    return {"waveform": as_waveform(waveform).unsqueeze(0), "sample_rate": int(sample_rate)}


def audio_from_comfy(audio: dict, index: int = 0) -> tuple[torch.Tensor, int]:
    """ComfyUI AUDIO -> ([C, T] of batch item `index`, sample_rate)."""
    waveform = audio["waveform"]
    if waveform.ndim == 3:
        waveform = waveform[index]
    return as_waveform(waveform), int(audio["sample_rate"])
