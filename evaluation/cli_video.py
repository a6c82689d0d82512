"""`syncfoley eval-sync VIDEO [AUDIO ...]`: is a sound in sync with a video, and by how much is it off?

The sound is the video's own soundtrack, or audio files (or video files, whose soundtrack is taken),
or every audio file in a folder (e.g. generated takes). Each gets DeSync (the mean |offset| of the
Synchformer's offset head, as papers report it) and the offset of every 4.8 s window, so a long video
gets a sync curve; with --suggest, a consistent offset is turned into the shift that repairs it
(`syncfoley generate --offset-ms`, the Mux node's offset_ms).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .desync import SEGMENT_SECONDS, describe, suggest_offset, window_length
from .sync_eval import AUDIO_EXTENSIONS

DEFAULT_SYNCHFORMER = Path("models") / "foley" / "synchformer_state_dict.pth"


def load_sync_model(spec: str | None, precision: str = "auto", device=None):
    """The model behind `--synchformer`: a Synchformer file, or 'demo' (the built-in stand-in)."""
    from ..demo.bundle import DEMO_MODEL, demo_file
    from ..pipeline.loaders import load_synchformer

    if spec is None:
        if not DEFAULT_SYNCHFORMER.is_file():
            raise FileNotFoundError(
                f"DeSync needs the full Synchformer: pass --synchformer FILE (synchformer_state_dict.pth, with its "
                f"audio side and offset head), or put it at {DEFAULT_SYNCHFORMER}; --synchformer demo uses the "
                "demo model's stand-in (synthetic world clips only)")
        spec = str(DEFAULT_SYNCHFORMER)
    path = demo_file("synchformer") if spec in ("demo", DEMO_MODEL) else Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--synchformer: no file at '{path}'")
    return load_synchformer(path, precision, device)


def sound_files(paths: list[str]) -> list[Path]:
    """The files to score: each path, or the audio and video files in a folder (sorted)."""
    found = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not inside:
                raise FileNotFoundError(f"{path} holds no audio file ({', '.join(AUDIO_EXTENSIONS)})")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no audio file or folder at '{path}'")
    return found


def evaluate_video(args: argparse.Namespace) -> list[str]:
    """Run the video mode; returns the lines to print."""
    from ..media import load_audio
    from .sync_media import measure_sync, picture_features

    video = Path(args.video)
    if not video.is_file():
        raise FileNotFoundError(f"no video file at '{video}'")
    if args.json and Path(args.json).exists() and not args.overwrite:
        raise FileExistsError(f"--json '{args.json}' already exists; pass --overwrite to replace it")
    model = load_sync_model(args.synchformer, args.precision, args.device)
    sources = sound_files(args.audio) if args.audio else [video]
    picture = picture_features(model, str(video), args.start, args.duration)
    stride = max(1, round(args.window_step / SEGMENT_SECONDS))
    window = (window_length(model, picture.segments) + 1) * SEGMENT_SECONDS
    lines = [f"{video}: {picture.duration:.2f} s from {args.start:g} s, windows of {window:.2f} s every "
             f"{stride * SEGMENT_SECONDS:.2f} s ({getattr(model, 'kind', type(model).__name__)})"]
    report = {"video": str(video), "start": args.start, "duration": picture.duration, "sources": {}}
    for source in sources:
        # A video's own track (or another video's) is aligned to its picture's time 0, then cut at start.
        waveform, rate = load_audio(source, 16000, channels=1, start=args.start, duration=picture.duration)
        curve = measure_sync(model, picture, waveform, rate, stride)
        name = "own soundtrack" if source == video and not args.audio else str(source)
        entry = curve.as_dict()
        shift = suggest_offset(curve)
        entry["suggested_shift_ms"] = None if shift is None else round(shift * 1000)
        report["sources"][name] = entry
        lines.append(f"{name}: {describe(curve)}")
        if args.suggest:
            lines.append(f"  suggestion: {_suggestion(shift)}")
    if args.json:
        from ..media.files import write_report

        write_report(Path(args.json), json.dumps(report, indent=1) + "\n", overwrite=args.overwrite)
        lines.append(f"report: {args.json}")
    return lines


def _suggestion(shift: float | None) -> str:
    if shift is None:
        return "no consistent offset (in sync, or the windows disagree): nothing to shift"
    return (f"shift the sound by {round(shift * 1000):+d} ms (Mux Foley Video's offset_ms, mux_audio(offset_ms=...), "
            f"or `syncfoley generate --offset-ms {round(shift * 1000)}` when generating)")
