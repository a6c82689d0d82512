"""`syncfoley eval-sync`: is sound in sync with picture?

    syncfoley eval-sync VIDEO [AUDIO ...] --synchformer FILE   # any video: DeSync and the offset curve
    syncfoley eval-sync --data DIR [--synchformer FILE]        # held-out world clips: onset F1, AV-Align
    syncfoley eval-sync --data DIR --models demo --sweep [GRID] --seeds 0,1,2   # CFG vs SyncCFG, 95 % CIs

VIDEO mode scores the video's own soundtrack, or audio files, or every audio file of a folder (e.g.
generated takes) by DeSync (the Synchformer's offset head over 4.8 s windows, as papers report it)
and shows each window's offset; --suggest says by how much to shift a consistently offset sound.

World mode scores CFG and SyncCFG audio on clips whose event times are known. Sources, any mix:
the clips' own audio (always, unless --no-ground-truth), folders of audio already generated
(`--generated NAME=DIR`, files named after the clips), and a model run per guidance (`--models DIR`).
With --synchformer every source also gets DeSync. --sweep runs a grid of guidances over several
seeds and reports each one's onset F1 with a bootstrap interval and its paired difference to the
grid's first entry (`evaluation/sweep.py` says how).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..media import MediaError
from ..media.files import next_free_stem, write_report
from ..cli.options import add_model_arguments
from .cli_video import DEFAULT_SYNCHFORMER, evaluate_video, load_sync_model
from .desync import DEFAULT_STRIDE, SEGMENT_SECONDS
from .onsets import DEFAULT_TOLERANCE
from .sweep import DEFAULT_GRID, format_sweep, parse_grid, parse_interval, parse_seeds, run_sweep
from .sync_eval import AudioSource, evaluate, folder_source, format_table, ground_truth_source, load_held_out

GUIDANCES = ("cfg", "synccfg")
def _guidance(name: str, args: argparse.Namespace, defaults):
    from ..cli.options import guidance_from
    from ..sampling.guidance import SyncCFG

    guidance = guidance_from(name, defaults, args.cfg_scale, args.sync_scale, args.anchor)
    if not isinstance(guidance, SyncCFG):
        return guidance
    interval = parse_interval(args.interval) if args.interval else None
    return SyncCFG(guidance.scale, guidance.sync_scale, guidance.anchor, form=args.sync_form, interval=interval)


def _model_sources(args: argparse.Namespace, clips) -> tuple[dict[str, AudioSource], dict]:
    """A source per guidance sampling the model of --models, and the settings it runs with."""
    if not args.models:
        return {}, {}
    if args.save_audio and not args.overwrite:
        taken = [Path(args.save_audio) / name / f"{clip.stem}.wav" for name in args.guidance for clip in clips]
        taken = [path for path in taken if path.exists()]
        if taken:
            raise FileExistsError(f"--save-audio: {len(taken)} files already exist (e.g. '{taken[0]}'); pass "
                                  "--overwrite to replace them, or choose another folder")
    from ..media import save_audio
    from ..pipeline import FoleyModels, FoleyPipeline
    from ..sampling.generate import SamplingOptions

    models = FoleyModels.from_folder(args.models, precision=args.precision, device=args.device, family=args.family,
                                     model=args.model)
    pipeline = FoleyPipeline(models, device=args.device)
    options = SamplingOptions(steps=args.steps, seed=args.seed)
    encoded: dict[str, tuple] = {}  # the current clip's features, shared by every guidance

    def features(clip):
        if clip.stem not in encoded:
            encoded.clear()
            encoded[clip.stem] = (pipeline.encode_text(clip.caption),
                                  pipeline.encode_video(str(clip.video), static_anchor=True))
        return encoded[clip.stem]

    sources = {}
    for name in args.guidance:
        guidance = _guidance(name, args, models.model.defaults)

        def generate(clip, guidance=guidance, name=name):
            text, visual = features(clip)
            waveform, rate = pipeline.decode(pipeline.sample(text, visual, guidance, options), visual.duration)
            waveform = waveform[0].float().cpu()
            if args.save_audio:
                folder = Path(args.save_audio) / name
                folder.mkdir(parents=True, exist_ok=True)
                save_audio(folder / f"{clip.stem}.wav", waveform, rate, overwrite=args.overwrite)
            return waveform, rate

        sources[name] = generate
    settings = {"model": models.model.variant, "guidance": {name: repr(_guidance(name, args, models.model.defaults))
                                                             for name in args.guidance},
                "steps": options.resolved(models.model).steps, "seed": args.seed}
    return sources, settings


def _generated(spec: str) -> tuple[str, Path]:
    name, separator, folder = spec.partition("=")
    if not separator or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {spec!r}")
    if not Path(folder).is_dir():
        raise argparse.ArgumentTypeError(f"{folder} is not a folder")
    return name, Path(folder)


def _guidance_list(text: str) -> list[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in GUIDANCES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"guidance must be a list of {', '.join(GUIDANCES)}, got {text!r}")
    return names


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval-sync", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", nargs="?", help="a video to score (its own soundtrack unless AUDIO is given)")
    p.add_argument("audio", nargs="*", help="audio (or video) files, or folders of them, to score against VIDEO")
    p.add_argument("--synchformer", help="synchformer_state_dict.pth (its audio side and offset head give DeSync), "
                                         "or 'demo' (the demo model's stand-in, for world clips); VIDEO mode "
                                         f"default: {DEFAULT_SYNCHFORMER}")
    p.add_argument("--window-step", type=float, default=DEFAULT_STRIDE * SEGMENT_SECONDS,
                   help="seconds between 4.8 s DeSync windows (default 3.2: on 8 s, the benchmark's two)")
    p.add_argument("--suggest", action="store_true", help="VIDEO mode: say how far to shift a consistently offset sound")
    p.add_argument("--start", type=float, default=0.0, help="VIDEO mode: seconds into the video to start at")
    p.add_argument("--duration", type=float, default=None, help="VIDEO mode: seconds to score (default: to the end)")
    p.add_argument("--data", help="world mode: a folder written by `syncfoley world` (held-out seed)")
    p.add_argument("--clips", type=int, default=50, help="evaluate the first N clips (default 50; 0 = all)")
    p.add_argument("--generated", type=_generated, action="append", default=[], metavar="NAME=DIR",
                   help="score audio files named after the clips in DIR as source NAME (repeatable)")
    p.add_argument("--no-ground-truth", action="store_true", help="do not score the clips' own audio")
    add_model_arguments(p, default=None)
    p.add_argument("--guidance", type=_guidance_list, default=list(GUIDANCES), help="cfg,synccfg (default both)")
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--cfg-scale", type=float, default=None, help="default: the model's")
    p.add_argument("--sync-scale", type=float, default=None, help="default: the model's")
    p.add_argument("--anchor", choices=["static", "shift"], default=None, help="SyncCFG's anchor; default: the model's")
    p.add_argument("--sync-form", choices=["add", "harmony"], default="add",
                   help="SyncCFG's form: add (CFG + sync term) or harmony (the anchor as the base)")
    p.add_argument("--interval", metavar="LOW-HIGH", help="apply the sync term only at sigmas in LOW..HIGH "
                                                          "(1 = noise), plain CFG elsewhere; default all steps")
    p.add_argument("--sweep", nargs="?", const=DEFAULT_GRID, metavar="GRID",
                   help="world mode with --models: score a grid of guidances over --seeds with 95 %% intervals "
                        f"(default grid: {DEFAULT_GRID!r}; syntax in evaluation/sweep.py)")
    p.add_argument("--seeds", default="0,1,2", help="--sweep: sampling seeds (default 0,1,2)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed and baseline offsets")
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: 1 for the demo models, whose small operations only lose "
                        "time to threads waiting for each other, most of all on a busy machine; else torch's)")
    p.add_argument("--save-audio", help="also write the generated audio as DIR/<guidance>/<clip>.wav")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="onset match tolerance, s")
    p.add_argument("--draws", type=int, default=None,
                   help="random offsets per clip for the shifted baseline (default 10; with --sweep 0)")
    p.add_argument("--json", help="report file (default: a new DATA/sync_eval_NNNNN.json)")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file (and --save-audio files) if they exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> None:
    from ..models.checkpoint import CheckpointError

    if bool(args.video) == bool(args.data):
        raise SystemExit("eval-sync: give a VIDEO to score, or --data DIR of world clips (not both)")
    if args.window_step < SEGMENT_SECONDS:
        raise SystemExit(f"eval-sync: --window-step must be at least {SEGMENT_SECONDS} s (one segment)")
    import torch

    threads = torch.get_num_threads()
    _set_threads(args)
    try:
        if args.video:
            for line in evaluate_video(args):
                print(line, flush=True)
        else:
            _evaluate(args)
    except (FileNotFoundError, FileExistsError, MediaError, CheckpointError, ValueError) as error:
        raise SystemExit(f"eval-sync: {error}") from None
    finally:
        torch.set_num_threads(threads)  # the command may run inside a longer process (tests, scripts)


def _set_threads(args: argparse.Namespace) -> None:
    """--threads, or 1 where every model is the demo's (measured on 2 busy cores: 25 demo sampling steps
    take 1.0 s on one thread, 7 to 35 s on two)."""
    import torch

    demo = ("demo", "syncfoley-demo")
    demo_only = args.models in (None, *demo) and (args.synchformer in demo or (args.synchformer is None and args.data))
    threads = args.threads if args.threads is not None else (1 if demo_only else None)
    if threads is not None:
        if threads < 1:
            raise SystemExit(f"eval-sync: --threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def _evaluate(args: argparse.Namespace) -> None:
    if args.json and Path(args.json).exists() and not args.overwrite:
        raise FileExistsError(f"--json '{args.json}' already exists; pass --overwrite to replace it, or choose another name")
    clips = load_held_out(args.data, args.clips or None)
    if args.sweep is not None:
        return _sweep(args, clips)
    args.draws = 10 if args.draws is None else args.draws
    sources: dict[str, AudioSource] = {} if args.no_ground_truth else {"ground truth": ground_truth_source}
    sources.update({name: folder_source(folder) for name, folder in args.generated})
    generated, model_settings = _model_sources(args, clips)
    sources.update(generated)
    if not sources:
        raise SystemExit("eval-sync: nothing to score (ground truth disabled, no --generated, no model)")
    sync_model = load_sync_model(args.synchformer, args.precision, args.device) if args.synchformer else None
    from ..cli.progress import bar

    started = time.perf_counter()
    with bar(len(clips), "clips", unit="clip", enabled=None if not args.no_progress else False) as clip_bar:
        def progress(done: int, total: int, stem: str) -> None:
            clip_bar.n = done
            clip_bar.set_postfix_str(stem, refresh=True)

        report = evaluate(clips, sources, args.tolerance, args.draws, args.seed, progress=progress,
                          sync_model=sync_model, stride=max(1, round(args.window_step / SEGMENT_SECONDS)))
    import torch

    report["settings"] = {"data": str(args.data), "seconds": round(time.perf_counter() - started, 2),
                          "threads": torch.get_num_threads(),
                          "generated": {name: str(folder) for name, folder in args.generated}}
    if generated:
        report["settings"]["model"] = model_settings
    print(format_table(report))
    output = Path(args.json) if args.json else Path(args.data) / (next_free_stem(args.data, "sync_eval") + ".json")
    write_report(output, json.dumps(report, indent=1) + "\n", overwrite=args.overwrite)
    print(f"report: {output}")


def _sweep(args: argparse.Namespace, clips) -> None:
    if not args.models:
        raise SystemExit("eval-sync --sweep: give the model to sample with --models (e.g. --models demo)")
    from ..pipeline import FoleyModels, FoleyPipeline

    seeds = parse_seeds(args.seeds)
    output = Path(args.json) if args.json else Path(args.data) / (next_free_stem(args.data, "sync_sweep") + ".json")
    models = FoleyModels.from_folder(args.models, precision=args.precision, device=args.device, family=args.family,
                                     model=args.model)
    entries = parse_grid(args.sweep, models.model.defaults)
    sync_model = load_sync_model(args.synchformer, args.precision, args.device) if args.synchformer else None
    evaluate_kwargs = dict(tolerance=args.tolerance, draws=args.draws or 0, seed=0, sync_model=sync_model,
                           stride=max(1, round(args.window_step / SEGMENT_SECONDS)))
    report = run_sweep(FoleyPipeline(models, device=args.device), clips, entries, seeds, args.steps, evaluate_kwargs,
                       ground_truth=not args.no_ground_truth)
    import torch

    report["settings"] = {"data": str(args.data), "model": models.model.variant, "grid": args.sweep,
                          "steps": args.steps or models.model.defaults.steps, "threads": torch.get_num_threads()}
    print(format_sweep(report))
    write_report(output, json.dumps(report, indent=1) + "\n", overwrite=args.overwrite)
    print(f"report: {output}")
