"""`syncfoley eval-sync`: onset F1 and AV-Align of CFG and SyncCFG audio on held-out world clips.

Sources, any mix: the clips' own audio (always, unless --no-ground-truth), folders of audio already
generated (`--generated NAME=DIR`, files named after the clips), and a model run per guidance
(`--models DIR` or the five `--dit/--vae/--synchformer/--clap/--siglip` paths).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..media import MediaError
from ..media.files import next_free_stem, write_report
from ..pipeline.foley import MODEL_PARTS, find_model_files
from .onsets import DEFAULT_TOLERANCE
from .sync_eval import AudioSource, evaluate, folder_source, format_table, ground_truth_source, load_held_out

GUIDANCES = ("cfg", "synccfg")
def _guidance(name: str, args: argparse.Namespace):
    from ..sampling.guidance import CFG, SyncCFG

    if name == "cfg":
        return CFG(args.cfg_scale)
    return SyncCFG(args.cfg_scale, args.sync_scale, args.anchor)


def _model_sources(args: argparse.Namespace) -> dict[str, AudioSource]:
    explicit = {part: getattr(args, part) for part in MODEL_PARTS if getattr(args, part)}
    if not args.models and not explicit:
        return {}
    try:
        paths = find_model_files(args.models) if args.models else {}
    except FileNotFoundError as exc:
        raise SystemExit(f"eval-sync: --models: {exc}") from None
    paths.update({part: Path(path) for part, path in explicit.items()})
    missing = [part for part in MODEL_PARTS if part not in paths]
    if missing:
        raise SystemExit(f"eval-sync: model part(s) missing: {', '.join(missing)} (give --models DIR or each path)")
    from ..media import save_audio
    from ..pipeline import FoleyModels, FoleyPipeline
    from ..sampling.generate import SamplingOptions

    models = FoleyModels.from_files(paths["dit"], paths["vae"], paths["synchformer"], paths["clap"],
                                    paths["siglip"], precision=args.precision, device=args.device)
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
        guidance = _guidance(name, args)

        def generate(clip, guidance=guidance, name=name):
            text, visual = features(clip)
            waveform, rate = pipeline.decode(pipeline.sample(text, visual, guidance, options), visual.duration)
            waveform = waveform[0].float().cpu()
            if args.save_audio:
                folder = Path(args.save_audio) / name
                folder.mkdir(parents=True, exist_ok=True)
                save_audio(folder / f"{clip.stem}.wav", waveform, rate, overwrite=True)
            return waveform, rate

        sources[name] = generate
    return sources


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
    p.add_argument("--data", required=True, help="folder written by `syncfoley world` (held-out seed)")
    p.add_argument("--clips", type=int, default=50, help="evaluate the first N clips (default 50; 0 = all)")
    p.add_argument("--generated", type=_generated, action="append", default=[], metavar="NAME=DIR",
                   help="score audio files named after the clips in DIR as source NAME (repeatable)")
    p.add_argument("--no-ground-truth", action="store_true", help="do not score the clips' own audio")
    p.add_argument("--models", help="folder holding the DiT, VAE, Synchformer files and CLAP, SigLIP folders")
    for part in MODEL_PARTS:
        p.add_argument(f"--{part}", help=f"path of the {part} (overrides --models)")
    p.add_argument("--guidance", type=_guidance_list, default=list(GUIDANCES), help="cfg,synccfg (default both)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--cfg-scale", type=float, default=4.5)
    p.add_argument("--sync-scale", type=float, default=1.0)
    p.add_argument("--anchor", choices=["static", "shift"], default="static")
    p.add_argument("--seed", type=int, default=0, help="sampling seed and baseline offsets")
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default=None)
    p.add_argument("--save-audio", help="also write the generated audio as DIR/<guidance>/<clip>.wav")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="onset match tolerance, s")
    p.add_argument("--draws", type=int, default=10, help="random offsets per clip for the shifted baseline")
    p.add_argument("--json", help="report file (default: a new DATA/sync_eval_NNNNN.json)")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> None:
    try:
        _evaluate(args)
    except (FileNotFoundError, FileExistsError, MediaError) as error:
        raise SystemExit(f"eval-sync: {error}") from None


def _evaluate(args: argparse.Namespace) -> None:
    clips = load_held_out(args.data, args.clips or None)
    sources: dict[str, AudioSource] = {} if args.no_ground_truth else {"ground truth": ground_truth_source}
    sources.update({name: folder_source(folder) for name, folder in args.generated})
    generated = _model_sources(args)
    sources.update(generated)
    if not sources:
        raise SystemExit("eval-sync: nothing to score (ground truth disabled, no --generated, no model)")
    from ..cli.progress import bar

    started = time.perf_counter()
    with bar(len(clips), "clips", unit="clip", enabled=None if not args.no_progress else False) as clip_bar:
        def progress(done: int, total: int, stem: str) -> None:
            clip_bar.n = done
            clip_bar.set_postfix_str(stem, refresh=True)

        report = evaluate(clips, sources, args.tolerance, args.draws, args.seed, progress=progress)
    report["settings"] = {"data": str(args.data), "seconds": round(time.perf_counter() - started, 2),
                          "generated": {name: str(folder) for name, folder in args.generated}}
    if generated:
        report["settings"]["model"] = {"guidance": args.guidance, "steps": args.steps, "cfg_scale": args.cfg_scale,
                                       "sync_scale": args.sync_scale, "anchor": args.anchor, "seed": args.seed}
    print(format_table(report))
    output = Path(args.json) if args.json else Path(args.data) / (next_free_stem(args.data, "sync_eval") + ".json")
    write_report(output, json.dumps(report, indent=1) + "\n", overwrite=args.overwrite)
    print(f"report: {output}")
