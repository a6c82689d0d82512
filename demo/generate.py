"""`syncfoley generate [VIDEO]`: sound for a video, written back into it (the package's main command).

Without a video it first makes a clip of the synthetic world (`demo.world`), so the command shows the
whole chain with nothing but the package installed: the built-in demo model (the default `--models
demo`) encodes the clip, samples the sound with CFG or SyncCFG, decodes it and muxes it onto the
picture (video packets copied). Writes `<out>` (video with the new sound) and `<out stem>.wav`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_OUT = "output/syncfoley.mp4"
DEMO_CLIP_SECONDS = 3.84  # whole Synchformer segment steps, like the clips the demo model learned from
DEMO_CLIP_SIZE = (256, 256)
DEMO_CFG_SCALE = 4.5
DEMO_SYNC_SCALE = 0.5  # the best of 0.5, 1, 2, 3 on the validation clips (demo/manifest.json)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate", help="generate synchronized sound for a video (default: a synthetic clip, the demo model)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", nargs="?", help="video file (default: generate a clip of the synthetic world)")
    p.add_argument("--prompt", help="what the sound is (default: the generated clip's caption, or none)")
    p.add_argument("--negative-prompt", default=None, help="what to steer away from (default 'noisy, harsh')")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output video (.mp4/.mkv/.mov/.webm; default {DEFAULT_OUT})")
    p.add_argument("--models", default="demo", help="'demo' (the built-in model) or a folder holding the five parts")
    p.add_argument("--guidance", choices=("cfg", "synccfg"), default="cfg",
                   help="cfg (default: the demo model's best on held-out clips) or synccfg")
    p.add_argument("--cfg-scale", type=float, default=DEMO_CFG_SCALE)
    p.add_argument("--sync-scale", type=float, default=DEMO_SYNC_SCALE, help="SyncCFG's sync term (static anchor)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (and the generated clip's)")
    p.add_argument("--takes", type=int, default=1, help="variations; take k > 1 is written as <out stem>_k")
    p.add_argument("--duration", type=float, default=None,
                   help=f"seconds (default: the video's; {DEMO_CLIP_SECONDS} s for a generated clip)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: CUDA when available)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the DiT's blocks (pays off on GPUs over many steps; the first step compiles)")
    add_memory_arguments(p)
    p.set_defaults(func=_run)


def add_memory_arguments(p: argparse.ArgumentParser) -> None:
    memory = p.add_argument_group("low memory (GPU)")
    memory.add_argument("--offload", action="store_true",
                        help="keep every model in CPU memory and move each to the GPU only for its stage")
    memory.add_argument("--gpu-blocks", type=int, default=None, metavar="N",
                        help="sample with only N DiT blocks on the GPU, streaming the others one block ahead "
                             "(XXL has 54 blocks, XL 36; 0 streams all); implies --offload for the DiT")


def _run(args: argparse.Namespace) -> int:
    from ..media import MediaError
    from ..models.checkpoint import CheckpointError

    try:
        for line in generate(args):
            print(line, flush=True)
    except (MediaError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"generate: {error}", file=sys.stderr)
        return 1
    return 0


def _check(args: argparse.Namespace) -> Path:
    from ..media import VIDEO_CONTAINERS

    out = Path(args.out)
    if out.suffix.lower() not in VIDEO_CONTAINERS:
        raise ValueError(f"--out must end in one of {', '.join(sorted(VIDEO_CONTAINERS))}, got '{out}'")
    if args.steps < 1 or args.takes < 1:
        raise ValueError("--steps and --takes must be at least 1")
    if args.gpu_blocks is not None and args.gpu_blocks < 0:
        raise ValueError(f"--gpu-blocks must be 0 or more, got {args.gpu_blocks}")
    if args.duration is not None and args.duration <= 0:
        raise ValueError(f"--duration must be positive, got {args.duration:g}")
    if args.video is not None and not Path(args.video).is_file():
        raise FileNotFoundError(f"no video file at '{args.video}'")
    return out


def generate(args: argparse.Namespace):
    """Run the command; yields the lines it reports."""
    started = time.perf_counter()
    out = _check(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    prompt = args.prompt
    if args.video is None:
        from .world import generate_clip, write_clip

        clip = generate_clip(args.seed, duration=args.duration or DEMO_CLIP_SECONDS, size=DEMO_CLIP_SIZE)
        video = write_clip(clip, out.with_name(f"{out.stem}_input.mp4"), overwrite=True)
        prompt = clip.caption if prompt is None else prompt
        yield f"generated a {clip.duration:.2f} s clip of the synthetic world: {video} ('{clip.caption}')"
    else:
        video = Path(args.video)
    models = load_models(args)
    from ..media import mux_audio, save_audio
    from ..pipeline import DEFAULT_NEGATIVE_PROMPT, FoleyPipeline
    from ..sampling.generate import SamplingOptions
    from ..sampling.guidance import CFG, SyncCFG

    guidance = CFG(args.cfg_scale) if args.guidance == "cfg" else SyncCFG(args.cfg_scale, args.sync_scale)
    options = SamplingOptions(steps=args.steps, seed=args.seed, takes=args.takes)
    result = FoleyPipeline(models, device=args.device, offload=args.offload, gpu_blocks=args.gpu_blocks)(
        str(video), prompt or "", args.negative_prompt or DEFAULT_NEGATIVE_PROMPT, guidance, options, args.duration)
    for take, waveform in enumerate(result.waveform):
        stem = out.stem if take == 0 else f"{out.stem}_{take + 1}"
        target = out.with_name(stem + out.suffix)
        mux_audio(video, waveform, result.sample_rate, target, overwrite=True)
        wav = save_audio(target.with_suffix(".wav"), waveform, result.sample_rate, overwrite=True)
        yield f"wrote {target} and {wav}"
    yield (f"{result.duration:.2f} s of sound, {args.guidance} {args.steps} steps, prompt '{prompt or ''}', "
           f"in {time.perf_counter() - started:.1f} s")


def load_models(args: argparse.Namespace, compile_backend: str | None = "inductor"):
    """The models of `--models`, `--precision` and `--device`; with `--offload` or `--gpu-blocks` in
    CPU memory (in the GPU's precision) until each stage needs them; `--compile` compiles the DiT."""
    from ..pipeline import FoleyModels
    from ..pipeline.loaders import default_device

    if args.offload or args.gpu_blocks is not None:
        models = FoleyModels.from_folder(args.models, precision=args.precision, device="cpu",
                                         compute_device=args.device or default_device())
    else:
        models = FoleyModels.from_folder(args.models, precision=args.precision, device=args.device)
    if args.compile:
        models.dit.compile_blocks(backend=compile_backend)
    return models
