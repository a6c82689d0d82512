"""`generate`'s editing options: start from existing sound (--audio, --denoise), regenerate time ranges
(--regenerate, repeatable), extend it to the video (--extend)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..sampling.edit import DEFAULT_FEATHER

RANGE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*[-:,]\s*(\d+(?:\.\d*)?|\.\d+)\s*$")


def time_range(text: str) -> tuple[float, float]:
    """'3.2-5.0' (seconds) -> (3.2, 5.0)."""
    found = RANGE.match(text)
    if not found or float(found[1]) >= float(found[2]):
        raise argparse.ArgumentTypeError(f"'{text}' is not a range of seconds START-END with START < END, "
                                         "e.g. 3.2-5.0")
    return float(found[1]), float(found[2])


def add_edit_arguments(p: argparse.ArgumentParser) -> None:
    edit = p.add_argument_group("editing existing sound")
    edit.add_argument("--audio", metavar="FILE",
                      help="existing sound to edit (any audio file, or a video's soundtrack; default with "
                           "--denoise/--regenerate: the video's own)")
    edit.add_argument("--denoise", type=float, default=None, metavar="D",
                      help="how much of the existing sound to redo, in (0, 1]: 1 all new, 0.3 a light variation "
                           "that keeps its timing (of all of it, or of the --regenerate ranges: default 1 there)")
    edit.add_argument("--regenerate", type=time_range, action="append", default=[], metavar="START-END",
                      help="seconds to make anew, keeping the rest of the existing sound (repeatable)")
    edit.add_argument("--feather", type=float, default=DEFAULT_FEATHER, metavar="SECONDS",
                      help=f"crossfade into the kept sound at each edge (default {DEFAULT_FEATHER})")
    edit.add_argument("--extend", choices=("after", "before"), default="after",
                      help="audio shorter than the video: new sound after its end (default) or before its start")


def edit_options(args: argparse.Namespace):
    """The pipeline's EditOptions for the command's arguments, or None when nothing is edited."""
    from ..pipeline.edit import EditOptions

    if args.audio is None and args.denoise is None and not args.regenerate:
        return None
    if args.audio is not None and not Path(args.audio).is_file():
        raise FileNotFoundError(f"--audio: no file at '{args.audio}'")
    try:
        return EditOptions(audio=args.audio, denoise=args.denoise,
                           regenerate=tuple(args.regenerate), feather=args.feather, extend=args.extend)
    except ValueError as error:
        raise ValueError(f"--{error}") from None


def describe(edit, video) -> str:
    """One line saying what the edit did, for the command's report."""
    source = edit.audio or f"the soundtrack of {video}"
    if edit.regenerate:
        spans = ", ".join(f"{start:g}-{end:g} s" for start, end in edit.regenerate)
        what = f"regenerated {spans}" + (f" at denoise {edit.denoise:g}" if edit.denoise is not None else "")
    elif edit.denoise is not None:
        what = f"restyled at denoise {edit.denoise:g}"
    else:
        what = f"kept, and extended {edit.extend} it where the video is longer"
    return f"edited {source}: {what}"
