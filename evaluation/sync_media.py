"""DeSync of sound against a video: the Synchformer features of a video's picture and of any sound.

The picture is sampled at the model's frames (25 fps segments of 16 frames every 8) by the same
timestamp rule as the Foley model's conditioning, the sound is made mono 16 kHz and cut to exactly
the span those segments cover ((S + 1) x 0.32 s, zero-padded if it is shorter), so segment i of both
streams is the same 0.64 s. The picture is encoded once for any number of sounds (takes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import torch

from ..media import StreamSpec, resample_audio, sample_images, sample_video
from ..media.audio import as_waveform
from ..models.encoders import FrameSpec
from ..models.synchformer_audio import SEGMENT_STRIDE_SAMPLES
from .desync import DEFAULT_STRIDE, OffsetModel, SyncCurve, desync

VideoSource = str | os.PathLike | tuple[torch.Tensor, float]  # a file, or (IMAGE frames [N, H, W, C], fps)
AUDIO_CHUNK_SEGMENTS = 64  # segments per audio-encoder call for segment-independent models (memory)


@dataclass
class PictureFeatures:
    """Visual sync features `[1, S, 8, D]` of a clip of `duration` seconds from `start`."""

    features: torch.Tensor
    start: float
    duration: float

    @property
    def segments(self) -> int:
        return self.features.shape[1]


class _NoImages:
    """An image encoder that reads one tiny frame a second and keeps nothing: lets `encode_video`
    (chunked, exact for segment-independent models) compute the sync stream alone."""

    frame_spec = FrameSpec(fps=1, size=2, resize="stretch", interpolation="bilinear")

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.new_zeros(frames.shape[0], 1)


@torch.no_grad()
def picture_features(model: OffsetModel, source: VideoSource, start: float = 0.0,
                     duration: float | None = None) -> PictureFeatures:
    """The visual sync features of a video file or `(IMAGE, fps)` from `start` for `duration` s (None: to the end)."""
    from ..pipeline.encode import encode_video, segments_of

    if model.segment_independent:  # chunk by chunk: memory bounded by one chunk of frames
        encoded = encode_video(source, _NoImages(), model, start=start, max_duration=duration, static_anchor=False)
        features = encoded.sync.unflatten(1, (-1, encoded.tokens_per_segment))
        return PictureFeatures(features, start, float(encoded.duration))
    spec = model.frame_spec
    stream = StreamSpec("sync", Fraction(spec.fps).limit_denominator(1001), spec.resize, spec.size, spec.interpolation)
    if isinstance(source, tuple):
        clip = sample_images(source[0], source[1], [stream], start=start, max_duration=duration)
    else:
        clip = sample_video(source, [stream], start=start, max_duration=duration)
    segments = segments_of(clip["sync"].model_input())
    if segments.shape[0] == 0:
        raise ValueError(f"{float(clip.duration):.2f} s of video is shorter than one 0.64 s segment")
    return PictureFeatures(model.extract_visual(segments[None]).float().cpu(), start, float(clip.duration))


def mono_16k(waveforms: torch.Tensor | list, sample_rate: int, target_rate: int) -> torch.Tensor:
    """Sounds `[B, C, T]`, `[C, T]`, `[T]` or a list of `[C, T]` -> mono `[B, T']` at `target_rate`."""
    if isinstance(waveforms, torch.Tensor) and waveforms.ndim == 3:
        waveforms = list(waveforms)
    elif not isinstance(waveforms, (list, tuple)):
        waveforms = [waveforms]
    rows = [resample_audio(as_waveform(w).float().mean(0, keepdim=True), sample_rate, target_rate)[0]
            for w in waveforms]
    length = max(row.shape[0] for row in rows)
    return torch.stack([torch.nn.functional.pad(row, (0, length - row.shape[0])) for row in rows])


@torch.no_grad()
def sound_features(model: OffsetModel, waveforms, sample_rate: int, segments: int) -> torch.Tensor:
    """Audio sync features `[B, segments, 6, D]` of sounds starting at the clip's start."""
    audio = mono_16k(waveforms, sample_rate, model.audio_sample_rate)
    span = (segments + 1) * SEGMENT_STRIDE_SAMPLES  # at 16 kHz: the span the picture's segments cover
    audio = torch.nn.functional.pad(audio, (0, max(0, span - audio.shape[1])))[:, :span]
    mel = model.audio_segments(audio)
    if not model.segment_independent:
        return model.extract_audio(mel).float().cpu()
    chunks = [model.extract_audio(mel[:, s:s + AUDIO_CHUNK_SEGMENTS]).float().cpu()
              for s in range(0, segments, AUDIO_CHUNK_SEGMENTS)]
    return torch.cat(chunks, dim=1)


def measure_sync(model: OffsetModel, picture: PictureFeatures, waveforms, sample_rate: int,
                 stride: int = DEFAULT_STRIDE) -> SyncCurve:
    """The sync curve of each sound (`[B, C, T]`, `[C, T]` or a list) against a picture."""
    audio = sound_features(model, waveforms, sample_rate, picture.segments)
    return desync(model, picture.features, audio, stride=stride, start_seconds=picture.start)


def measure_video_sync(model: OffsetModel, source: VideoSource, waveforms, sample_rate: int, start: float = 0.0,
                       duration: float | None = None, stride: int = DEFAULT_STRIDE) -> SyncCurve:
    """`picture_features` then `measure_sync`: the sounds start at `start` seconds into the video."""
    return measure_sync(model, picture_features(model, source, start, duration), waveforms, sample_rate, stride)
