"""Signal curves that both the evaluation and the previews draw on: the onset strength of audio (the
evaluation's onset detector) and the motion of video frames (AV-Align's). Plain numpy: the arrays
are small and the numbers are identical on every machine.

Onset strength is spectral flux on a log-compressed magnitude STFT: STFT magnitudes are averaged
into `bands` log-spaced bands (40 Hz to 16 kHz, as a mel spectrogram would, so a low thud counts as
much as a bright click), compressed as `log(1 + C |X|)`, and each frame scores the mean over bands of
the positive change since the previous frame (the signal is preceded by silence, so a sound starting
at 0 s counts; frames stop at its end, so a sound cut off by the end does not). Motion between
frames is the mean absolute difference of consecutive grey frames at <= 64 px.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .files import open_input
from .probe import first_video_stream

MOTION_SIDE = 64


@dataclass(frozen=True)
class OnsetParams:
    """Onset detector settings (times in seconds). Defaults suit 16-48 kHz audio of impacts and hits."""

    window: float = 0.02  # STFT window, rounded to a power of two of samples (1024 at 48 kHz)
    hop: float = 0.01  # time resolution of the onset curve
    compression: float = 1000.0  # C in log(1 + C |X|), |X| scaled so a full-scale sine peaks at 1
    bands: int = 40
    peak_window: float = 0.03
    mean_window: float = 0.1
    delta: float = 0.1
    min_gap: float = 0.05
    silence: float = 0.02  # maximum flux below which a signal counts as silent


def _mono(audio) -> np.ndarray:
    array = audio.detach().cpu().float().numpy() if hasattr(audio, "detach") else np.asarray(audio, np.float32)
    if array.ndim == 2:
        array = array.mean(0)
    if array.ndim != 1:
        raise ValueError(f"audio must be [T] or [C, T], got shape {array.shape}")
    return array.astype(np.float64)


def _band_matrix(n_fft: int, sample_rate: int, bands: int) -> np.ndarray:
    """[bins, bands] averaging weights over log-spaced bands; bands narrower than a bin are merged."""
    frequencies = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    edges = np.geomspace(40.0, min(16000.0, sample_rate / 2), bands + 1)
    band_of_bin = np.searchsorted(edges, frequencies, side="right") - 1
    used = [b for b in range(bands) if np.any(band_of_bin == b)]
    weights = np.zeros((frequencies.size, len(used)))
    for column, band in enumerate(used):
        members = band_of_bin == band
        weights[members, column] = 1.0 / members.sum()
    return weights


def onset_strength(audio, sample_rate: int, params: OnsetParams = OnsetParams()) -> tuple[np.ndarray, float]:
    """Spectral flux of `audio` ([T] or [C, T], channels averaged): (curve [frames], seconds per frame).

    Frame i is centred on sample i * hop, i.e. at time i * hop / sample_rate.
    """
    signal = _mono(audio)
    n_fft = 2 ** max(6, round(math.log2(params.window * sample_rate)))
    hop = max(1, round(params.hop * sample_rate))
    # Silence before the start, so a sound at 0 s is an onset. No frame reaches past the end: the cut
    # of a sound still ringing there would splash broadband energy into a last, partial frame.
    padded = np.pad(signal, (n_fft // 2, max(0, n_fft - n_fft // 2 - signal.size)))
    count = 1 + (padded.shape[0] - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:count]
    window = np.hanning(n_fft + 1)[:-1]
    magnitude = np.abs(np.fft.rfft(frames * window, axis=1)) * (2 / window.sum())
    level = np.log1p(params.compression * magnitude @ _band_matrix(n_fft, sample_rate, params.bands))
    previous = np.vstack([np.zeros((1, level.shape[1])), level[:-1]])
    return np.maximum(level - previous, 0.0).mean(1), hop / sample_rate


def grey_frames(frames, max_side: int = MOTION_SIDE) -> np.ndarray:
    """float32 [T, h, w] grey levels (0..255) of RGB frames [T, H, W, 3] or grey [T, H, W],
    block-averaged so the longer side is at most `max_side`."""
    array = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    array = array.astype(np.float32)
    if array.ndim == 4:
        array = array[..., :3] @ np.asarray([0.299, 0.587, 0.114], np.float32)
    if array.ndim != 3:
        raise ValueError(f"frames must be [T, H, W, 3] or [T, H, W], got shape {array.shape}")
    factor = max(1, math.ceil(max(array.shape[1:]) / max_side))
    height, width = array.shape[1] // factor * factor, array.shape[2] // factor * factor
    if factor > 1 and height and width:
        array = array[:, :height, :width].reshape(array.shape[0], height // factor, factor, width // factor, factor)
        array = array.mean((2, 4))
    return array


def read_grey_frames(path: str | os.PathLike, max_side: int = MOTION_SIDE) -> tuple[np.ndarray, Fraction]:
    """Every frame of a video file as grey levels (see `grey_frames`), and its frame rate."""
    frames = []
    with open_input(path) as container:
        stream = first_video_stream(container, path)
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        for frame in container.decode(stream):
            frames.append(grey_frames(frame.to_ndarray(format="gray")[None], max_side)[0])
    if not frames:
        raise ValueError(f"{path}: no decodable video frame")
    return np.stack(frames), Fraction(rate)


def motion_curve(grey: np.ndarray) -> np.ndarray:
    """[T] motion: entry k is the mean |frame k - frame k-1|; entry 0 repeats entry 1 (as the original)."""
    if grey.shape[0] < 2:
        return np.zeros(grey.shape[0])
    difference = np.abs(np.diff(grey.astype(np.float32), axis=0)).mean((1, 2))
    return np.concatenate([difference[:1], difference]).astype(np.float64)
