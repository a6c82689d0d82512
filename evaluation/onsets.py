"""Audio onsets and how well they match known event times.

Onsets are peaks of the onset strength curve (`media.analysis.onset_strength`, spectral flux)
that are (1) the maximum within +-`peak_window` s, (2) above its running mean over +-`mean_window` s
by `delta` times the curve's maximum, and (3) at least `min_gap` s apart (the stronger wins). A
curve whose maximum is below `silence` has no onsets, so near-silence does not produce any.

Matching is one-to-one: each reference time takes at most one detected onset within `tolerance`
seconds (inclusive), and the number of pairs is the largest possible (as mir_eval's onset F1).
All in numpy: the arrays are small and this keeps the numbers identical on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..media.analysis import OnsetParams, onset_strength

DEFAULT_TOLERANCE = 0.1


def pick_peaks(curve: np.ndarray, frame_seconds: float, params: OnsetParams = OnsetParams()) -> np.ndarray:
    """Times (s) of the peaks of an onset curve, under the rules in the module docstring."""
    if curve.size == 0 or curve.max() < params.silence:
        return np.zeros(0)
    reach = max(1, round(params.peak_window / frame_seconds))
    span = max(1, round(params.mean_window / frame_seconds))
    padded = np.pad(curve, reach, constant_values=-np.inf)
    local_max = np.lib.stride_tricks.sliding_window_view(padded, 2 * reach + 1).max(1)
    sums = np.concatenate([[0.0], np.cumsum(curve)])
    index = np.arange(curve.size)
    low, high = np.maximum(index - span, 0), np.minimum(index + span + 1, curve.size)
    running_mean = (sums[high] - sums[low]) / (high - low)
    candidates = np.flatnonzero((curve >= local_max) & (curve >= running_mean + params.delta * curve.max())
                                & (curve > 0))
    gap = params.min_gap / frame_seconds
    kept: list[int] = []
    for frame in sorted(candidates, key=lambda i: -curve[i]):
        if all(abs(frame - other) >= gap for other in kept):
            kept.append(frame)
    return np.sort(np.asarray(kept, dtype=np.float64)) * frame_seconds


def detect_onsets(audio, sample_rate: int, params: OnsetParams = OnsetParams()) -> np.ndarray:
    """Onset times in seconds, sorted."""
    curve, frame_seconds = onset_strength(audio, sample_rate, params)
    return pick_peaks(curve, frame_seconds, params)


def match_onsets(reference, estimated, tolerance: float = DEFAULT_TOLERANCE) -> list[tuple[int, int]]:
    """The largest one-to-one set of (reference index, estimate index) pairs within `tolerance` s.

    Every reference accepts estimates in an interval of the same length, so taking, reference by
    reference in time order, the earliest estimate still free that is within reach is optimal.
    """
    reference, estimated = np.asarray(reference, np.float64), np.asarray(estimated, np.float64)
    ref_order, est_order = np.argsort(reference, kind="stable"), np.argsort(estimated, kind="stable")
    limit = tolerance + 1e-9  # |a - b| <= tolerance must hold despite float rounding of the times
    pairs, cursor = [], 0
    for r in ref_order:
        while cursor < est_order.size and estimated[est_order[cursor]] < reference[r] - limit:
            cursor += 1
        if cursor < est_order.size and estimated[est_order[cursor]] <= reference[r] + limit:
            pairs.append((int(r), int(est_order[cursor])))
            cursor += 1
    return pairs


@dataclass(frozen=True)
class OnsetScore:
    """Counts and rates of one comparison (or of many, pooled). Empty sets: a clip with no reference
    and no estimate is perfect; precision of no estimate and recall of no reference are 1."""

    matched: int
    reference: int
    estimated: int
    abs_error_sum: float = 0.0  # seconds, over matched pairs

    @property
    def precision(self) -> float:
        return self.matched / self.estimated if self.estimated else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.reference if self.reference else 1.0

    @property
    def f1(self) -> float:
        total = self.reference + self.estimated
        return 2 * self.matched / total if total else 1.0

    @property
    def mean_abs_error(self) -> float | None:
        return self.abs_error_sum / self.matched if self.matched else None

    def __add__(self, other: "OnsetScore") -> "OnsetScore":
        return OnsetScore(self.matched + other.matched, self.reference + other.reference,
                          self.estimated + other.estimated, self.abs_error_sum + other.abs_error_sum)

    def as_dict(self) -> dict:
        return {"f1": self.f1, "precision": self.precision, "recall": self.recall, "matched": self.matched,
                "reference": self.reference, "estimated": self.estimated, "mean_abs_error_s": self.mean_abs_error}


def score_onsets(reference, estimated, tolerance: float = DEFAULT_TOLERANCE) -> OnsetScore:
    """Onset precision/recall/F1 of `estimated` against `reference` times (seconds)."""
    reference, estimated = np.asarray(reference, np.float64), np.asarray(estimated, np.float64)
    pairs = match_onsets(reference, estimated, tolerance)
    error = float(sum(abs(reference[r] - estimated[e]) for r, e in pairs))
    return OnsetScore(len(pairs), int(reference.size), int(estimated.size), error)


def merge_close(times, within: float) -> np.ndarray:
    """Sorted times with any time closer than `within` s to the previous kept one dropped: events that
    close sound as one onset to any detector with that time resolution."""
    kept: list[float] = []
    for value in np.sort(np.asarray(times, np.float64)):
        if not kept or value - kept[-1] >= within:
            kept.append(float(value))
    return np.asarray(kept)
