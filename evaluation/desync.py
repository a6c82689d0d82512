"""DeSync: how far sound is from picture, by the full Synchformer (or any model with its offset protocol).

av-benchmark's DeSync (`desync_from_features`): for an 8 s clip (24 segments of 0.32 s), the offset
head classifies the first 14 segments and the last 14 of each stream into 21 offsets on the -2..2 s
grid; DeSync is the mean over all windows of all clips of |grid[argmax logits]| (no softmax).

`desync` goes beyond the benchmark's fixed 8 s: 14-segment windows slide over a clip of any length
(every `stride` segments, the last window always ending at the clip's end; the default stride of 10
gives exactly the benchmark's two windows on 8 s), and each window's offset is kept, so a long video
gets a sync curve. A clip shorter than one window is one window of all its segments where the model
takes that (the demo's stand-in does, down to `min_offset_segments`); Synchformer needs 4.8 s.

Sign: the offsets this module reports are the sound's DELAY, in seconds: +0.4 means the sound comes
0.4 s after the picture (shift it by -400 ms to repair). The offset head's class k means the opposite
(the release's training crops: the sound early by grid[k]), so a reported offset is -grid[k]. DeSync,
an absolute value, does not depend on the sign.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

SEGMENT_SECONDS = 0.32
BENCHMARK_WINDOW = 14
DEFAULT_STRIDE = 10  # segments: on 8 s (24 segments) the windows are the benchmark's first and last 14
CONSISTENT_WITHIN = 0.2  # s: windows this close to the median offset agree with it (one grid step)
CONSISTENT_SHARE = 0.75  # of the windows, for an offset to be called consistent


class OffsetModel(Protocol):
    """What DeSync needs: Synchformer (`models.synchformer`) and the demo's sync encoder have it."""

    audio_sample_rate: int
    offset_segments: int  # the window the offset head takes
    min_offset_segments: int  # the shortest window it accepts
    offset_grid: torch.Tensor  # [classes] seconds; class k: the sound early by grid[k]
    segment_independent: bool  # True: a segment's features depend on it alone (any chunking is exact)

    def extract_visual(self, segments: torch.Tensor) -> torch.Tensor: ...

    def audio_segments(self, audio: torch.Tensor) -> torch.Tensor: ...

    def extract_audio(self, segments: torch.Tensor) -> torch.Tensor: ...

    def offset_logits(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor: ...


@dataclass
class SyncCurve:
    """Offsets of a batch of sounds against one picture, window by window.

    offsets: `[B, W]` the sound's delay per window (s; positive: late). logits: `[B, W, classes]`.
    times: `[W]` each window's centre (s from the clip's start). desync: `[B]` mean |offset| per sound.
    """

    offsets: torch.Tensor
    logits: torch.Tensor
    times: torch.Tensor
    window_seconds: float
    grid: torch.Tensor

    @property
    def desync(self) -> torch.Tensor:
        return self.offsets.abs().mean(dim=1)

    @property
    def soft_desync(self) -> torch.Tensor:
        """`[B]` expected |offset| under each window's softmax, averaged: a finer score that breaks the
        ties of the 0.2 s grid."""
        probabilities = self.logits.float().softmax(dim=-1)
        return (probabilities * self.grid.abs().to(probabilities)).sum(-1).mean(dim=1)

    def take(self, index: int) -> "SyncCurve":
        return SyncCurve(self.offsets[index:index + 1], self.logits[index:index + 1], self.times,
                         self.window_seconds, self.grid)

    def as_dict(self, index: int = 0) -> dict:
        return {"desync": round(float(self.desync[index]), 4), "soft_desync": round(float(self.soft_desync[index]), 4),
                "window_seconds": round(self.window_seconds, 4),
                "windows": [{"time": round(float(t), 3), "offset": round(float(o), 3)}
                            for t, o in zip(self.times, self.offsets[index])]}


def window_starts(segments: int, window: int, stride: int = DEFAULT_STRIDE) -> list[int]:
    """First segments of the windows: every `stride` from 0, and the last one ending at the end."""
    if stride < 1:
        raise ValueError(f"the window stride must be at least 1 segment, got {stride}")
    starts = list(range(0, segments - window + 1, stride))
    return starts if starts[-1] == segments - window else starts + [segments - window]


def window_length(model: OffsetModel, segments: int) -> int:
    """The window `desync` uses for a clip of `segments`; an error names the shortest clip the model takes."""
    window = min(segments, model.offset_segments)
    if window < model.min_offset_segments:
        need = (model.min_offset_segments + 1) * SEGMENT_SECONDS
        raise ValueError(f"DeSync needs at least {need:.2f} s of video and sound ({model.min_offset_segments} "
                         f"segments of 0.64 s every 0.32 s); this clip has {segments} segment(s), "
                         f"{(segments + 1) * SEGMENT_SECONDS:.2f} s")
    return window


@torch.no_grad()
def windowed_logits(model: OffsetModel, visual: torch.Tensor, audio: torch.Tensor, starts: list[int],
                    window: int) -> torch.Tensor:
    """`[B, S, 8, D]`, `[B, S, 6, D']` -> logits `[B, W, classes]`, every window in one batch."""
    index = torch.tensor(starts)[:, None] + torch.arange(window)  # [W, window]
    batch = visual.shape[0]
    logits = model.offset_logits(visual[:, index].flatten(0, 1), audio[:, index].flatten(0, 1))
    return logits.float().cpu().unflatten(0, (batch, len(starts)))


def _check_pair(visual: torch.Tensor, audio: torch.Tensor) -> None:
    if visual.ndim != 4 or audio.ndim != 4 or visual.shape[:2] != audio.shape[:2]:
        raise ValueError(f"expected visual [B, S, 8, D] and audio [B, S, 6, D] features of the same B and S, "
                         f"got {tuple(visual.shape)} and {tuple(audio.shape)}")


def desync_from_features(model: OffsetModel, visual: torch.Tensor, audio: torch.Tensor) -> float:
    """av-benchmark's DeSync of features of 8 s clips (`[B, 24, 8, D]`, `[B, 24, 6, D]`): the mean of
    |grid[argmax]| over the first and the last 14 segments of every clip."""
    _check_pair(visual, audio)
    segments = visual.shape[1]
    if segments < BENCHMARK_WINDOW:
        raise ValueError(f"DeSync takes windows of {BENCHMARK_WINDOW} segments; the features have {segments}")
    logits = windowed_logits(model, visual, audio, [0, segments - BENCHMARK_WINDOW], BENCHMARK_WINDOW)
    return float(model.offset_grid[logits.argmax(-1)].abs().mean())


def desync(model: OffsetModel, visual: torch.Tensor, audio: torch.Tensor, stride: int = DEFAULT_STRIDE,
           start_seconds: float = 0.0) -> SyncCurve:
    """Offsets of every 14-segment window (every `stride` segments) of features of any length.

    visual `[1 or B, S, 8, D]` (one picture serves every sound) and audio `[B, S, 6, D']`.
    """
    if visual.shape[0] == 1 and audio.shape[0] > 1:
        visual = visual.expand(audio.shape[0], *visual.shape[1:])
    _check_pair(visual, audio)
    window = window_length(model, visual.shape[1])
    starts = window_starts(visual.shape[1], window, stride)
    logits = windowed_logits(model, visual, audio, starts, window)
    grid = model.offset_grid.float().cpu()
    offsets = -grid[logits.argmax(-1)] + 0.0  # + 0.0: no -0.0 in reports
    times = start_seconds + (torch.tensor(starts, dtype=torch.float32) + (window + 1) / 2) * SEGMENT_SECONDS
    return SyncCurve(offsets, logits, times, (window + 1) * SEGMENT_SECONDS, grid)


def suggest_offset(curve: SyncCurve, index: int = 0) -> float | None:
    """The shift (s) that would bring sound `index` in sync when its windows agree, else None.

    Agreement: at least 3/4 of the windows within 0.2 s of their median, which is not 0. The
    shift is minus the mean offset of the agreeing windows (a late sound is moved earlier).
    """
    offsets = curve.offsets[index]
    median = offsets.median()
    agreeing = offsets[(offsets - median).abs() <= CONSISTENT_WITHIN + 1e-6]
    if median.abs() < 1e-6 or agreeing.numel() < CONSISTENT_SHARE * offsets.numel():
        return None
    return -float(agreeing.mean())


def rank_takes(curve: SyncCurve) -> list[int]:
    """Take indices best first: lowest DeSync, ties by the softer score, then by take order (so the
    first take is kept unless another is strictly better)."""
    desync, soft = curve.desync.tolist(), curve.soft_desync.tolist()
    return sorted(range(len(desync)), key=lambda k: (round(desync[k], 6), round(soft[k], 6), k))


def describe(curve: SyncCurve, index: int = 0) -> str:
    """One line: DeSync, each window's offset (the sound's delay) and, when they agree, the repair."""
    offsets = " ".join(f"{float(o):+.1f}" for o in curve.offsets[index])
    line = f"DeSync {float(curve.desync[index]):.2f} s; offsets (s, + = sound late) every window: {offsets}"
    shift = suggest_offset(curve, index)
    if shift is not None:
        line += f"; consistent: shift the sound by {round(shift * 1000):+d} ms"
    return line
