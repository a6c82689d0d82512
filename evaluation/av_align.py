"""AV-Align (Yariv et al., TempoTokens 2024): do audio onsets fall where the picture moves most?

A = audio onsets (peaks of onset strength, `onsets.detect_onsets`); V = strict local maxima of the
motion between consecutive frames; I = the number of audio onsets within one frame period (strictly)
of some video peak; score = I / (|A| + |V| - I). It needs no ground truth and no weights.

Substitution, stated wherever a score is printed: the original measures motion as the mean optical
flow magnitude (OpenCV Farneback). No OpenCV or flow network is available here, so motion is the
mean absolute difference of consecutive grey frames at <= 64 px ("frame-difference AV-Align"). For
rigid objects over a still background both grow with speed and peak at the same frames, but the
absolute values differ and large, textured motion saturates the difference sooner.
Two further choices: the motion between frames k-1 and k is dated at frame k (as the original
code), and maxima below `relative_floor` x the clip's largest motion (or below `absolute_floor`
grey levels) are ignored, so codec noise on still frames does not count as motion peaks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHOD = "frame-difference AV-Align (mean |grey frame difference| at <=64 px stands in for optical-flow magnitude)"


def video_peaks(motion: np.ndarray, fps: float, relative_floor: float = 0.05,
                absolute_floor: float = 0.05) -> np.ndarray:
    """Times (s) of the strict local maxima of a motion curve that clear the noise floors."""
    if motion.size < 3:
        return np.zeros(0)
    floor = max(absolute_floor, relative_floor * float(motion.max()))
    middle = motion[1:-1]
    strict = (middle > motion[:-2]) & (middle > motion[2:]) & (middle >= floor)
    return (np.flatnonzero(strict) + 1) / float(fps)


@dataclass(frozen=True)
class AVAlign:
    audio_peaks: int
    video_peaks: int
    intersection: int

    @property
    def score(self) -> float:
        union = self.audio_peaks + self.video_peaks - self.intersection
        return self.intersection / union if union > 0 else 1.0  # no onset and no motion peak agree

    def as_dict(self) -> dict:
        return {"score": self.score, "audio_peaks": self.audio_peaks, "video_peaks": self.video_peaks,
                "intersection": self.intersection}


def av_align(audio_onsets, peaks, fps: float) -> AVAlign:
    """AV-Align of audio onset times against video peak times (seconds) at `fps`.

    As the original, I counts audio onsets having a video peak closer than one frame period; it is
    not a one-to-one matching, so two onsets near one peak both count.
    """
    audio_onsets, peaks = np.asarray(audio_onsets, np.float64), np.asarray(peaks, np.float64)
    period = 1.0 / float(fps)
    if audio_onsets.size and peaks.size:
        hits = int((np.abs(audio_onsets[:, None] - peaks[None]) < period).any(1).sum())
    else:
        hits = 0
    return AVAlign(int(audio_onsets.size), int(peaks.size), hits)
