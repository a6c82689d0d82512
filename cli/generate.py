"""`syncfoley generate [VIDEO]`: sound for a video, written back into it (the package's main command).

Without a video it first makes a clip of the synthetic world (`demo.world`), so the command shows the
whole chain with nothing but the package installed: the built-in demo model (the default `--models
demo`) encodes the clip, samples the sound with CFG or SyncCFG, decodes it and muxes it onto the
picture (video packets copied). Writes a video with the new sound and a .wav beside it.

Nothing is overwritten: without --out the files are numbered (output/<video>_foley_00001.mp4, ...);
an existing --out is refused unless --overwrite, and the input video is never written over.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .edit import add_edit_arguments, describe, edit_options
from ..evaluation.takes import add_take_arguments, pick_takes, sidecars, write_sidecar
from .options import add_memory_arguments, add_model_arguments, guidance_from, load_models

OUTPUT_FOLDER = "output"
DEMO_STEM = "demo"
DEMO_CLIP_SECONDS = 3.84  # whole Synchformer segment steps, like the clips the demo model learned from
DEMO_CLIP_SIZE = (256, 256)
PROMPT_SHOWN = 60  # characters of the prompt echoed in the summary line


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", nargs="?", help="video file (default: generate a clip of the synthetic world)")
    p.add_argument("--prompt", help="what the sound is (default: the generated clip's caption, or none)")
    p.add_argument("--negative-prompt", default=None,
                   help="what to steer away from (default: the model's: HunyuanVideo-Foley 'noisy, harsh', MMAudio none)")
    p.add_argument("--out", help="output video (.mp4/.mkv/.mov/.webm; default: a new numbered file in "
                                 f"{OUTPUT_FOLDER}/ named after the video)")
    p.add_argument("--overwrite", action="store_true", help="replace --out (and its .wav) if they exist")
    add_model_arguments(p)
    p.add_argument("--guidance", choices=("cfg", "synccfg"), default="cfg",
                   help="cfg (default: the references' guidance) or synccfg (one more forward per step; on the "
                        "demo world it beats CFG with the shift anchor, README 'Measuring')")
    p.add_argument("--cfg-scale", type=float, default=None, help="default: the model's (4.5)")
    p.add_argument("--sync-scale", type=float, default=None, help="SyncCFG's sync term; default: the model's")
    p.add_argument("--anchor", choices=("static", "shift"), default=None,
                   help="SyncCFG's negative anchor: the first frame held, or the video shifted in time; "
                        "default: the model's (the demo: shift, the released models: static)")
    p.add_argument("--steps", type=int, default=None, help="default: the model's (HunyuanVideo-Foley 50, MMAudio "
                                                           "and the demo 25)")
    p.add_argument("--window-seconds", type=float, default=None,
                   help="long videos: sample in windows of this length (default: the model's; 0: the whole clip)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (and the generated clip's)")
    p.add_argument("--takes", type=int, default=1, help="variations; take k > 1 is written as <out stem>_take<k>")
    p.add_argument("--duration", type=float, default=None,
                   help=f"seconds (default: the video's; {DEMO_CLIP_SECONDS} s for a generated clip)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: CUDA when available)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the DiT's blocks (pays off on GPUs over many steps; the first step compiles)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they only show on a terminal)")
    add_memory_arguments(p)
    add_edit_arguments(p)
    add_take_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..media import MediaError
    from ..models.checkpoint import CheckpointError

    try:
        for line in generate(args):
            print(line, flush=True)
    except (MediaError, CheckpointError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"generate: {error}", file=sys.stderr)
        return 1
    return 0


def _check(args: argparse.Namespace) -> None:
    from ..media import VIDEO_CONTAINERS

    if args.out is not None and Path(args.out).suffix.lower() not in VIDEO_CONTAINERS:
        raise ValueError(f"--out must end in one of {', '.join(sorted(VIDEO_CONTAINERS))}, got '{args.out}'")
    if (args.steps is not None and args.steps < 1) or args.takes < 1:
        raise ValueError("--steps and --takes must be at least 1")
    if args.gpu_blocks is not None and args.gpu_blocks < 0:
        raise ValueError(f"--gpu-blocks must be 0 or more, got {args.gpu_blocks}")
    if args.duration is not None and args.duration <= 0:
        raise ValueError(f"--duration must be positive, got {args.duration:g}")
    if args.video is not None and not Path(args.video).is_file():
        raise FileNotFoundError(f"no video file at '{args.video}'")


def output_files(args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """(the generated input clip or the user's video, one output video per take), checked before any
    work: outputs never replace the input, and replace existing files only with --overwrite."""
    from ..media.files import next_free_stem

    if args.out is not None:
        first = Path(args.out)
    else:
        stem = f"{Path(args.video).stem}_foley" if args.video else DEMO_STEM
        first = Path(OUTPUT_FOLDER) / (next_free_stem(OUTPUT_FOLDER, stem) + ".mp4")
    takes = [first] + [first.with_name(f"{first.stem}_take{k}{first.suffix}") for k in range(2, args.takes + 1)]
    source = Path(args.video) if args.video else first.with_name(f"{first.stem}_input.mp4")
    written = [path for take in takes for path in (take, take.with_suffix(".wav"))] + sidecars(args, takes)
    if args.video is None:
        written.append(source)
    for path in written:
        if args.video is not None and path.resolve() == source.resolve():
            raise ValueError(f"the output '{path}' is the input video: writing there would destroy the original; "
                             "choose another --out")
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"'{path}' already exists; pass --overwrite to replace it, or choose another --out")
    return source, takes


def generate(args: argparse.Namespace):
    """Run the command; yields the lines it reports."""
    from .progress import StageProgress

    started = time.perf_counter()
    _check(args)
    edit = edit_options(args)
    video, takes = output_files(args)
    takes[0].parent.mkdir(parents=True, exist_ok=True)
    prompt = args.prompt
    if args.video is None:
        from ..demo.world import generate_clip, write_clip

        clip = generate_clip(args.seed, duration=args.duration or DEMO_CLIP_SECONDS, size=DEMO_CLIP_SIZE)
        write_clip(clip, video, overwrite=args.overwrite)
        prompt = clip.caption if prompt is None else prompt
        yield f"generated a {clip.duration:.2f} s clip of the synthetic world: {video} ('{clip.caption}')"
    models = load_models(args)
    from ..media import mux_audio, save_audio
    from ..pipeline import FoleyPipeline
    from ..sampling.generate import SamplingOptions

    guidance = guidance_from(args.guidance, models.model.defaults, args.cfg_scale, args.sync_scale, args.anchor)
    options = SamplingOptions(steps=args.steps, seed=args.seed, takes=args.takes,
                              window_seconds=args.window_seconds).resolved(models.model)
    pipeline = FoleyPipeline(models, device=args.device, offload=args.offload, gpu_blocks=args.gpu_blocks)
    with StageProgress(enabled=None if not args.no_progress else False, units={"video": "s", "sampling": "step"}) as bars:
        result = pipeline(str(video), prompt or "", args.negative_prompt, guidance, options, args.duration,
                          progress=bars, edit=edit)
    order, scores = list(range(len(result.waveform))), None
    if args.pick == "sync":
        offloaded = args.offload or args.gpu_blocks is not None
        order, scores = pick_takes(models.sync_encoder, video, result.waveform, result.sample_rate, result.duration,
                                   device=pipeline.device if offloaded else None)
    for rank, (target, take) in enumerate(zip(takes, order)):
        waveform = result.waveform[take]
        score = None if scores is None else json.dumps({"syncfoley_sync": scores[rank]}, separators=(",", ":"))
        mux_audio(video, waveform, result.sample_rate, target, overwrite=args.overwrite, offset_ms=args.offset_ms,
                  comment=score)
        wav = save_audio(target.with_suffix(".wav"), waveform, result.sample_rate, overwrite=args.overwrite)
        yield f"wrote {target} and {wav}"
        if scores is not None:
            sidecar = write_sidecar(target, scores[rank], overwrite=args.overwrite)
            yield f"  take {take + 1}, DeSync {scores[rank]['desync']:.2f} s (rank {rank + 1}): {sidecar}"
    if edit is not None:
        yield describe(edit, video)
    yield (f"{result.duration:.2f} s of sound by {models.model.variant}, {args.guidance} {options.steps} steps, "
           f"prompt '{shorten(prompt or '')}', in {time.perf_counter() - started:.1f} s")


def shorten(text: str, limit: int = PROMPT_SHOWN) -> str:
    """One line of at most `limit` characters, for echoing user text."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
