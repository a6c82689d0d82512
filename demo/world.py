"""A synthetic audio-visual world in which the time of every sound is known exactly.

One to three balls or blocks fall, bounce, roll, slide, hit the walls and each other in a box with a
floor; a body's colour names its material (red metal, blue wood, green glass, yellow rubber), which
sets its impact timbre. Each contact makes an impact sound at its exact simulated time (not rounded
to the frame grid); rolling and sliding make a noise that follows the speed (in about half the
clips); a caption describes the scene. `generate_clip` makes one clip in memory; `write_dataset`
writes a folder of H.264/AAC mp4 files with a JSON sidecar each (events, caption, timing, seed), a
`<stem>.txt` caption beside each video, and a `manifest.csv` (columns `video`, `prompt`) that the
batch runner and the training data loader read. Everything is deterministic for a seed.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..media import as_rate, write_video
from .materials import MATERIALS
from .physics import Body, Motion, sample_bodies, simulate
from .render import render
from .sounds import loudness, synthesize

GENERATOR_VERSION = 1
MANIFEST = "manifest.csv"
MOVING_SPEED = 0.05  # picture heights / s: slower motion on the floor counts as resting
MIN_MOTION_SECONDS = 0.3  # shorter rolls or slides are not worth a caption


@dataclass(frozen=True)
class Event:
    """An impact: `time` in seconds from the clip's start, the bodies involved (indices into
    `Clip.objects`), their materials, the contact speed and the loudness it was synthesised at."""

    time: float
    kind: str  # "floor", "wall" or "collision"
    objects: tuple[int, ...]
    materials: tuple[str, ...]
    speed: float
    loudness: float


@dataclass(frozen=True)
class FloorMotion:
    """A stretch of rolling (ball) or sliding (block) on the floor; `audible` when the clip has motion noise."""

    object: int
    kind: str
    start: float
    end: float
    audible: bool


@dataclass
class Clip:
    frames: torch.Tensor  # uint8 [T, H, W, 3]
    audio: torch.Tensor  # float32 [1, N]
    sample_rate: int
    fps: Fraction
    events: list[Event]
    caption: str
    seed: int
    objects: list[dict] = field(default_factory=list)  # shape, material, colour, radius, enter_time
    motions: list[FloorMotion] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return float(self.frames.shape[0] / self.fps)

    def sidecar(self) -> dict:
        """The JSON-ready ground truth of the clip."""
        return {
            "caption": self.caption, "seed": self.seed, "fps": str(self.fps), "fps_float": float(self.fps),
            "frames": int(self.frames.shape[0]), "duration": float(self.duration),
            "size": [int(self.frames.shape[2]), int(self.frames.shape[1])], "sample_rate": self.sample_rate,
            "objects": self.objects, "events": [asdict(e) for e in self.events],
            "motions": [asdict(m) for m in self.motions],
            "generator": {"name": "syncfoley.demo.world", "version": GENERATOR_VERSION},
        }


def _motions(motion: Motion, bodies: list[Body], audible: bool) -> list[FloorMotion]:
    found = []
    for index, body in enumerate(bodies):
        moving = np.concatenate([[False], motion.floor_speed[:, index] > MOVING_SPEED, [False]])
        edges = np.flatnonzero(np.diff(moving.astype(np.int8)))
        for start, stop in zip(edges[::2], edges[1::2]):
            begin, end = float(motion.times[start]), float(motion.times[stop - 1])
            if end - begin >= MIN_MOTION_SECONDS:
                kind = "rolling" if body.shape == "ball" else "sliding"
                found.append(FloorMotion(index, kind, round(begin, 3), round(end, 3), audible))
    return found


def _name(body: Body) -> str:
    return f"{body.material.colour_name} {body.material.adjective} {body.shape}"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def describe(bodies: list[Body], events: list[Event], motions: list[FloorMotion]) -> str:
    """A caption from what happened, e.g. 'a red metal ball bounces on the floor, rolls and hits the wall'."""
    clauses = []
    for index, body in enumerate(bodies):
        mine = [e for e in events if index in e.objects]
        verbs: list[tuple[float, str]] = []
        floors = [e for e in mine if e.kind == "floor"]
        if floors:
            verb = ("bounces on the floor" if len(floors) > 1 else "drops on the floor") if body.shape == "ball" \
                else ("lands on the floor" if len(floors) == 1 else "tumbles onto the floor")
            verbs.append((floors[0].time, verb))
        moved = [m for m in motions if m.object == index]
        if moved:
            verbs.append((moved[0].start + 1e-3, "rolls" if body.shape == "ball" else "slides"))
        walls = [e for e in mine if e.kind == "wall"]
        if walls:
            verbs.append((walls[0].time, "hits the wall"))
        for event in mine:
            if event.kind == "collision" and event.objects[0] == index:
                other = _name(bodies[event.objects[1]])
                verbs.append((event.time, f"knocks into the {'other ' if other == _name(body) else ''}{other}"))
                break
        verbs = [v for _, v in sorted(verbs)] or ["falls"]
        clauses.append(f"a {_name(body)} {_join(verbs)}")
    return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + ", and " + clauses[-1]


def _parse_size(size: tuple[int, int] | str) -> tuple[int, int]:
    if isinstance(size, str):
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise ValueError(f"size must be WIDTHxHEIGHT such as 96x96, got {size!r}") from None
    else:
        width, height = (int(v) for v in size)
    if width < 8 or height < 8:
        raise ValueError(f"size must be at least 8x8 pixels, got {width}x{height}")
    return width, height


def generate_clip(seed: int, duration: float = 4.0, fps: int | float | Fraction = 25,
                  size: tuple[int, int] | str = (96, 96), sample_rate: int = 48000, objects: int | None = None,
                  materials: list[str] | None = None, continuous: bool | None = None,
                  background_noise: float = 0.0015) -> Clip:
    """One clip of the world, the same for the same arguments.

    duration: seconds (the clip holds round(duration * fps) frames and exactly as much audio).
    size: (width, height) in pixels, or "WxH". objects: 1..3 bodies (None: drawn, 1 most often).
    materials: one name per body from MATERIALS (None: drawn). continuous: motion noise for rolling
    and sliding (None: drawn, half the clips). background_noise: RMS of a white noise floor.
    """
    width, height = _parse_size(size)
    rate = as_rate(fps)
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if materials is not None:
        unknown = [m for m in materials if m not in MATERIALS]
        if unknown:
            raise ValueError(f"unknown material(s) {unknown}; choose from {', '.join(MATERIALS)}")
        objects = objects or len(materials)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    count = objects if objects is not None else int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    if not 1 <= count <= 3 or (materials is not None and len(materials) != count):
        raise ValueError(f"objects must be 1..3 and match the materials given, got {count} and {materials}")
    frame_count = max(1, round(duration * rate))
    seconds = float(frame_count / rate)
    aspect = width / height
    bodies = sample_bodies(rng, aspect, seconds, count, materials)
    frequencies = [float(rng.uniform(*b.material.frequency_range)) for b in bodies]
    audible = bool(rng.random() < 0.5) if continuous is None else continuous
    tint = rng.integers(-12, 13, size=3)
    background = tuple(int(v) for v in np.clip(np.array([232, 228, 220]) + tint, 0, 255))
    floor = tuple(int(v) for v in np.clip(np.array([118, 98, 82]) + tint, 0, 255))

    motion = simulate(bodies, seconds, aspect)
    events = [Event(round(c.time, 6), c.kind, c.bodies, tuple(bodies[i].material.name for i in c.bodies),
                    round(c.speed, 4), round(loudness(c.speed), 4)) for c in motion.contacts]
    length = round(seconds * sample_rate)
    audio = synthesize(motion, bodies, frequencies, length, sample_rate, rng, audible, background_noise)
    frames = render(motion, bodies, np.arange(frame_count) / float(rate), (width, height), background, floor)
    motions = _motions(motion, bodies, audible)
    described = [{"shape": b.shape, "material": b.material.name, "colour": b.material.colour_name,
                  "radius": round(b.radius, 4), "enter_time": round(b.enter_time, 4),
                  "frequency": round(f, 2)} for b, f in zip(bodies, frequencies)]
    return Clip(frames, torch.from_numpy(audio)[None], sample_rate, rate, events,
                describe(bodies, events, motions), int(seed), described, motions)


def clip_seed(dataset_seed: int, index: int) -> int:
    """The seed of clip `index` of a dataset: independent streams for different datasets and indices."""
    return int(np.random.SeedSequence([dataset_seed, index]).generate_state(1, np.uint32)[0])


def write_clip(clip: Clip, video_path: str | os.PathLike, overwrite: bool = False,
               extra: dict | None = None) -> Path:
    """Write `<stem>.mp4` (H.264 + AAC), `<stem>.json` (ground truth, plus `extra`) and `<stem>.txt` (caption)."""
    video = write_video(clip.frames, clip.fps, video_path, audio=clip.audio, sample_rate=clip.sample_rate,
                        overwrite=overwrite)
    sidecar = dict(video=video.name, **clip.sidecar(), **(extra or {}))
    video.with_suffix(".json").write_text(json.dumps(sidecar, indent=1) + "\n", encoding="utf-8")
    video.with_suffix(".txt").write_text(clip.caption + "\n", encoding="utf-8")
    return video


def write_dataset(folder: str | os.PathLike, count: int, seed: int = 0, duration: float = 4.0,
                  fps: int | float | Fraction = 25, size: tuple[int, int] | str = (96, 96),
                  sample_rate: int = 48000, overwrite: bool = False, prefix: str = "clip",
                  progress: Callable[[int, int], None] | None = None, **clip_options) -> Path:
    """Write `count` clips into `folder` and return the path of its `manifest.csv`.

    Clip i uses `clip_seed(seed, i)`, so datasets with different seeds do not share clips (a held-out
    set is a second seed). Other keyword arguments go to `generate_clip`.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / MANIFEST
    if manifest.exists() and not overwrite:
        raise FileExistsError(f"{manifest} exists; pass overwrite=True (--overwrite) or choose another folder")
    digits = max(5, len(str(count - 1)))
    rows = []
    for index in range(count):
        clip = generate_clip(clip_seed(seed, index), duration, fps, size, sample_rate, **clip_options)
        video = write_clip(clip, folder / f"{prefix}_{index:0{digits}d}.mp4", overwrite=overwrite,
                           extra={"dataset_seed": seed, "index": index})
        rows.append({"video": video.name, "prompt": clip.caption})
        if progress is not None:
            progress(index + 1, count)
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["video", "prompt"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def read_sidecar(video_path: str | os.PathLike) -> dict:
    """The ground truth written beside a world video (`<stem>.json`)."""
    path = Path(video_path).with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ground-truth sidecar beside {Path(video_path).name}; "
                                "generate clips with `syncfoley world`")
    return json.loads(path.read_text(encoding="utf-8"))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "world", description="Write synthetic clips (mp4 + JSON ground truth + caption) and a manifest.csv.")
    parser.add_argument("out_dir", help="folder to write into")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (use another one for a held-out set)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per clip")
    parser.add_argument("--fps", default="25", help="frame rate, e.g. 24, 25, 29.97, 30000/1001")
    parser.add_argument("--size", type=_size_argument, default=(96, 96), help="WIDTHxHEIGHT in pixels (default 96x96)")
    parser.add_argument("--sample-rate", type=int, default=48000)
    parser.add_argument("--objects", type=int, default=None, help="bodies per clip, 1..3 (default: drawn)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal)")
    parser.set_defaults(func=_run)


def _size_argument(text: str) -> tuple[int, int]:
    try:
        return _parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _run(args: argparse.Namespace) -> None:
    try:
        fps = Fraction(args.fps) if "/" in args.fps else float(args.fps)
    except (ValueError, ZeroDivisionError):
        raise SystemExit(f"world: --fps must be a number or a fraction such as 30000/1001, got {args.fps!r}") from None
    from ..cli.progress import bar

    started = time.perf_counter()
    progress = bar(args.count, "clips", unit="clip", enabled=None if not args.no_progress else False)

    def advance(done: int, total: int) -> None:
        progress.n = done
        progress.refresh()

    try:
        with progress:
            manifest = write_dataset(args.out_dir, args.count, args.seed, args.duration, fps, args.size,
                                     args.sample_rate, overwrite=args.overwrite, objects=args.objects, progress=advance)
    except (FileExistsError, ValueError) as error:
        raise SystemExit(f"world: {error}") from None
    print(f"wrote {args.count} clips in {time.perf_counter() - started:.1f} s; manifest: {manifest}")
