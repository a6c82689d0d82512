"""Synchronization of audio against a held-out set of world clips whose event times are known.

Each audio source (the clips' own ground-truth audio, a folder of generated files, or a model run
with CFG or SyncCFG) is scored per clip with:
- onset precision / recall / F1 against the true impact times (tolerance 0.1 s; true events closer
  than `merge_within` = 0.05 s count as one onset, as the detector's 50 ms minimum gap would);
- the same-loudness random-onset baseline: the same audio rolled by a random offset (0.5 s to
  duration - 0.5 s; 5 ms fades at the seam so the cut adds no click), which keeps its loudness and
  onset count but breaks its timing; scores are pooled over `draws` offsets, the same offsets for
  every source of a clip;
- AV-Align of the audio against the clip's picture (frame-difference stand-in, see av_align.py),
  for the audio and its rolled copies;
- with a sync model (Synchformer, or the demo's stand-in), DeSync (`desync.py`): the mean |offset| of
  its offset head over 14-segment windows (the picture is encoded once per clip, for every source).
Onset scores are pooled over clips (sums of matches, references and detections); AV-Align is the
mean over clips as in its paper. The per-clip numbers are kept in the report.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from ..media import load_audio
from ..media.analysis import motion_curve, read_grey_frames
from .av_align import METHOD as AV_METHOD
from .av_align import av_align, video_peaks
from .desync import DEFAULT_STRIDE
from .onsets import DEFAULT_TOLERANCE, OnsetParams, OnsetScore, detect_onsets, merge_close, score_onsets

MERGE_WITHIN = 0.05
FADE_SECONDS = 0.005
AudioSource = Callable[["HeldOutClip"], tuple[object, int]]  # clip -> (waveform [C, T] or [T], sample rate)


@dataclass(frozen=True)
class HeldOutClip:
    stem: str
    video: Path
    caption: str
    fps: Fraction
    duration: float
    reference: np.ndarray  # true onset times (s), merged within MERGE_WITHIN


def load_held_out(data: str | Path, clips: int | None = None, merge_within: float = MERGE_WITHIN) -> list[HeldOutClip]:
    """The clips of a `syncfoley world` folder, in manifest order (or sorted by name without one)."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"{data} is not a folder of world clips (make one with `syncfoley world`)")
    manifest = data / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            videos = [data / row["video"] for row in csv.DictReader(handle) if row.get("video")]
    else:
        videos = [p.with_suffix(".mp4") for p in sorted(data.glob("*.json")) if p.with_suffix(".mp4").is_file()]
    if not videos:
        raise FileNotFoundError(f"{data} holds no world clips (a manifest.csv, or <name>.mp4 with <name>.json)")
    held_out = []
    for video in videos[:clips] if clips else videos:
        sidecar_path = video.with_suffix(".json")
        if not sidecar_path.is_file():
            raise FileNotFoundError(f"{sidecar_path}: ground truth missing for {video.name}")
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        times = [event["time"] for event in sidecar["events"]]
        held_out.append(HeldOutClip(video.stem, video, sidecar["caption"], Fraction(sidecar["fps"]),
                                    float(sidecar["duration"]), merge_close(times, merge_within)))
    return held_out


def ground_truth_source(clip: HeldOutClip) -> tuple[object, int]:
    """The clip's own soundtrack (decoded from its mp4): the upper reference."""
    return load_audio(clip.video, None, channels=1)


AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".mp4", ".mkv", ".mov", ".webm")


def folder_source(folder: str | Path) -> AudioSource:
    """Audio files named after the clips (`<stem>.wav`, `.flac`, `.mp4`, ...) in `folder`."""
    folder = Path(folder)

    def read(clip: HeldOutClip) -> tuple[object, int]:
        for extension in AUDIO_EXTENSIONS:
            path = folder / f"{clip.stem}{extension}"
            if path.is_file():
                return load_audio(path, None, channels=1)
        raise FileNotFoundError(f"{folder}: no audio for clip {clip.stem} (expected {clip.stem}.wav "
                                f"or another of {', '.join(AUDIO_EXTENSIONS)})")

    return read


def _faded(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    count = min(signal.shape[-1] // 2, max(1, round(FADE_SECONDS * sample_rate)))
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(count) + 0.5) / count)
    faded = signal.copy()
    faded[..., :count] *= ramp
    faded[..., -count:] *= ramp[::-1]
    return faded


def shift_offsets(rng: np.random.Generator, duration: float, draws: int) -> np.ndarray:
    """Random roll offsets (s) far enough from 0 and from a full turn that timing is broken."""
    margin = min(0.5, duration / 4)
    return rng.uniform(margin, duration - margin, size=draws)


@dataclass
class SourceScore:
    onset: OnsetScore
    shifted: OnsetScore  # pooled over the draws
    av_align: float
    av_align_shifted: float  # mean over the draws
    onsets: list[float]

    def as_dict(self) -> dict:
        return {"onset": self.onset.as_dict(), "shifted": self.shifted.as_dict(), "av_align": self.av_align,
                "av_align_shifted": self.av_align_shifted, "onsets": self.onsets}


def score_audio(clip: HeldOutClip, audio, sample_rate: int, peaks: np.ndarray, offsets: np.ndarray,
                tolerance: float = DEFAULT_TOLERANCE, params: OnsetParams = OnsetParams()) -> SourceScore:
    """Every number of one source on one clip (see the module docstring)."""
    array = audio.detach().cpu().float().numpy() if hasattr(audio, "detach") else np.asarray(audio, np.float32)
    # Only the clip's span counts: decoded AAC runs up to a frame (1024 samples) past the picture's
    # end, and the cut of a still-ringing sound there would read as an onset.
    signal = array.reshape(-1, array.shape[-1]).mean(0)[:round(clip.duration * sample_rate)]
    onsets = detect_onsets(signal, sample_rate, params)
    fps = float(clip.fps)
    shifted, aligned = OnsetScore(0, 0, 0), []
    faded = _faded(signal, sample_rate)
    for offset in offsets:
        rolled = detect_onsets(np.roll(faded, round(offset * sample_rate)), sample_rate, params)
        shifted = shifted + score_onsets(clip.reference, rolled, tolerance)
        aligned.append(av_align(rolled, peaks, fps).score)
    return SourceScore(score_onsets(clip.reference, onsets, tolerance), shifted, av_align(onsets, peaks, fps).score,
                       float(np.mean(aligned)) if aligned else math.nan, [round(float(t), 4) for t in onsets])


def _picture(sync_model, clip: HeldOutClip, stride: int):
    """The clip's sync features, or the reason DeSync cannot score it (too short for the model)."""
    from .desync import window_length
    from .sync_media import picture_features

    picture = picture_features(sync_model, clip.video, 0.0, clip.duration)
    try:
        window_length(sync_model, picture.segments)
    except ValueError as error:
        return None, str(error)
    return picture, None


def evaluate(clips: list[HeldOutClip], sources: dict[str, AudioSource], tolerance: float = DEFAULT_TOLERANCE,
             draws: int = 10, seed: int = 0, params: OnsetParams = OnsetParams(),
             progress: Callable[[int, int, str], None] | None = None, sync_model=None,
             stride: int = DEFAULT_STRIDE) -> dict:
    """Score every source on every clip; returns the JSON-ready report (see `format_table`). With
    `sync_model` (see `desync.OffsetModel`) each source also gets DeSync where the clip is long enough."""
    if not sources:
        raise ValueError("nothing to evaluate: give at least one audio source")
    from .sync_media import measure_sync

    per_clip, totals = [], {name: [] for name in sources}
    desyncs: dict[str, list[float]] = {name: [] for name in sources}
    unscored: list[str] = []
    for index, clip in enumerate(clips):
        grey, _ = read_grey_frames(clip.video)
        peaks = video_peaks(motion_curve(grey), float(clip.fps))
        offsets = shift_offsets(np.random.default_rng([seed, index]), clip.duration, draws)
        row = {"clip": clip.stem, "caption": clip.caption, "reference": [round(float(t), 4) for t in clip.reference],
               "video_peaks": [round(float(t), 4) for t in peaks], "offsets": [round(float(o), 4) for o in offsets]}
        picture, too_short = _picture(sync_model, clip, stride) if sync_model is not None else (None, None)
        if too_short:
            unscored.append(f"{clip.stem}: {too_short}")
        for name, source in sources.items():
            audio, sample_rate = source(clip)
            result = score_audio(clip, audio, sample_rate, peaks, offsets, tolerance, params)
            totals[name].append(result)
            row[name] = result.as_dict()
            if picture is not None:
                curve = measure_sync(sync_model, picture, audio, sample_rate, stride)
                desyncs[name].append(float(curve.desync[0]))
                row[name]["desync"] = curve.as_dict()
        per_clip.append(row)
        if progress is not None:
            progress(index + 1, len(clips), clip.stem)
    summary = {}
    for name, results in totals.items():
        onset = sum((r.onset for r in results), OnsetScore(0, 0, 0))
        shifted = sum((r.shifted for r in results), OnsetScore(0, 0, 0))
        summary[name] = {"onset": onset.as_dict(), "mean_clip_f1": float(np.mean([r.onset.f1 for r in results])),
                         "shifted": shifted.as_dict(), "av_align": float(np.mean([r.av_align for r in results])),
                         "av_align_shifted": float(np.mean([r.av_align_shifted for r in results]))}
        if sync_model is not None:
            summary[name]["desync"] = float(np.mean(desyncs[name])) if desyncs[name] else None
            summary[name]["desync_clips"] = len(desyncs[name])
    method = {"tolerance_s": tolerance, "merge_within_s": MERGE_WITHIN, "onset_params": asdict(params),
              "baseline": "same audio rolled by a random offset (same loudness and onset count, timing broken)",
              "draws": draws, "seed": seed, "av_align": AV_METHOD}
    if sync_model is not None:
        method["desync"] = {"model": getattr(sync_model, "kind", type(sync_model).__name__),
                            "window_stride_segments": stride, "unscored": unscored}
    return {"clips": len(clips), "reference_onsets": int(sum(c.reference.size for c in clips)), "method": method,
            "sources": summary, "per_clip": per_clip}


def format_table(report: dict) -> str:
    """The summary of a report as aligned text, one row per source."""
    method = report["method"]
    header = ["source", "F1", "precision", "recall", "error ms", "onsets", "shifted F1", "AV-Align", "shifted AV"]
    with_desync = "desync" in method
    header += ["DeSync s"] if with_desync else []
    rows = []
    for name, s in report["sources"].items():
        onset, error = s["onset"], s["onset"]["mean_abs_error_s"]
        rows.append([name, f"{onset['f1']:.3f}", f"{onset['precision']:.3f}", f"{onset['recall']:.3f}",
                     "-" if error is None else f"{1000 * error:.1f}", str(onset["estimated"]),
                     f"{s['shifted']['f1']:.3f}", f"{s['av_align']:.3f}", f"{s['av_align_shifted']:.3f}"])
        if with_desync:
            rows[-1].append("-" if s["desync"] is None else f"{s['desync']:.3f}")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([
        f"sync evaluation: {report['clips']} clips, {report['reference_onsets']} true onsets, tolerance "
        f"{method['tolerance_s']:g} s (true events closer than {method['merge_within_s']:g} s count once)",
        line(header), line(["-" * w for w in widths]), *(line(r) for r in rows),
        f"shifted: {method['baseline']}, {method['draws']} draws per clip (the random-onset baseline)",
        f"AV-Align: {method['av_align']}",
        *([f"DeSync: mean |offset| of {method['desync']['model']}'s offset head over windows of up to 4.8 s every "
           f"{method['desync']['window_stride_segments'] * 0.32:g} s ({len(method['desync']['unscored'])} clips "
           "too short to score)"] if with_desync else []),
    ])
