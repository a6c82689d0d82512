"""Best take by sync for `syncfoley generate --takes N --pick sync`, and the offset repair `--offset-ms`.

The takes are ranked by DeSync against the video (`desync.rank_takes`: the first take stays first
unless another is strictly better) and written best first: `<out>` is the best, `<out>_take2` the
next. Each take's score goes into a JSON sidecar beside its video, `<out stem>.sync.json`: its rank,
which sampled take it was, DeSync and the offset of every window.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PICKS = ("first", "sync")
SIDECAR_SUFFIX = ".sync.json"


def add_take_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pick", choices=PICKS, default="first",
                   help="with --takes N: 'sync' ranks the takes by DeSync (the Synchformer's offset head; the demo's "
                        "stand-in for the demo model) and writes the best first, each take's score in "
                        f"<out stem>{SIDECAR_SUFFIX}; 'first' (default) keeps the sampled order")
    p.add_argument("--offset-ms", type=float, default=0.0,
                   help="move the sound later (positive) or earlier (negative) against the picture in the written "
                        "video, e.g. by what `syncfoley eval-sync --suggest` says (the picture is still copied)")


def sidecar_path(video: Path) -> Path:
    return video.with_name(video.stem + SIDECAR_SUFFIX)


def sidecars(args: argparse.Namespace, takes: list[Path]) -> list[Path]:
    """The score files `--pick sync` will write (none otherwise), for the output checks."""
    return [sidecar_path(take) for take in takes] if getattr(args, "pick", "first") == "sync" else []


def pick_takes(sync_model, video: str | Path, waveforms: torch.Tensor, sample_rate: int, duration: float,
               device=None) -> tuple[list[int], list[dict]]:
    """(take indices best first, each ranked take's score as written to its sidecar). `device`: run the
    model there and send it back to the CPU afterwards (offloaded model sets)."""
    from contextlib import nullcontext

    from ..models.offload import moved_to
    from .desync import rank_takes, suggest_offset
    from .sync_media import measure_video_sync

    with moved_to([sync_model], device) if device is not None else nullcontext():
        curve = measure_video_sync(sync_model, str(video), waveforms, sample_rate, duration=duration)
    order = rank_takes(curve)
    scores = []
    for rank, take in enumerate(order):
        shift = suggest_offset(curve, take)
        scores.append({"rank": rank + 1, "sampled_take": take + 1, "takes": len(order), **curve.as_dict(take),
                       "suggested_shift_ms": None if shift is None else round(shift * 1000),
                       "model": getattr(sync_model, "kind", type(sync_model).__name__), "video": str(video)})
    return order, scores


def write_sidecar(video: Path, score: dict, overwrite: bool = False) -> Path:
    from ..media.files import write_report

    return write_report(sidecar_path(video), json.dumps(score, indent=1) + "\n", overwrite=overwrite)
