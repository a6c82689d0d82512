"""`syncfoley train RECIPE`: prepare the feature cache if needed, then train, checkpoint and export."""
from __future__ import annotations

import argparse
import threading
from pathlib import Path

EPILOG = """\
The recipe is a TOML file (see `python -c "import syncfoley.training.config as c; print(c.__doc__)"` for
every key and its default). Outputs go to the recipe's `output` folder: <name>.safetensors (a LoRA the
model loader applies, or a full model with the released key names), checkpoints/step-*/ and
train_log.jsonl. [model] family picks the network's family: "hunyuanvideo-foley" (default) or
"mmaudio" (from a released network: [model] models = "FOLDER" finds every part by its file name).

Several GPUs or machines: start the same command through accelerate, e.g.
  accelerate launch --multi_gpu --num_processes 8 -m syncfoley train recipe.toml
  accelerate launch --num_machines 2 --machine_rank 0 --main_process_ip HOST --main_process_port 29500 \\
      --multi_gpu --num_processes 16 -m syncfoley train recipe.toml
  torchrun --nproc_per_node 4 -m syncfoley train recipe.toml   (also works; on CPUs too, with cpu = true)
Ctrl-C stops after the current step and writes a checkpoint; --resume continues from it."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", description="Train on a folder of videos: cache encoder features and VAE latents once, then train with "
                    "flow matching, condition dropout and REPA.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="training recipe (.toml, or .json with the same structure)")
    p.add_argument("--prepare-only", action="store_true", help="build the feature cache and stop")
    p.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                   help="continue from the run's latest checkpoint, or from the given step-* folder")
    p.add_argument("--max-steps", type=int, metavar="N", help="override [train] max_steps")
    p.add_argument("--output", metavar="DIR", help="override the run folder (output)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal)")
    p.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> None:
    from .config import ConfigError, load_config

    overrides: dict = {}
    if args.output:
        overrides["output"] = str(Path(args.output).resolve())
    if args.max_steps is not None:
        overrides["train"] = {"max_steps": args.max_steps}
    try:
        config = load_config(args.recipe, overrides)
        config.model.require_start()  # before the (long) preparation step
    except (ConfigError, FileNotFoundError) as exc:
        raise SystemExit(f"syncfoley train: {exc}") from None
    try:
        _run(config, args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"syncfoley train: {exc}") from None


def _run(config, args) -> None:
    from accelerate import PartialState

    from .run import ensure_cache

    state = PartialState(cpu=config.train.cpu)
    say = print if state.is_main_process else (lambda *a, **k: None)
    with state.main_process_first():  # one process builds the cache, the others then find it current
        ensure_cache(config, log=say)
    if args.prepare_only:
        return
    stop = threading.Event()
    result = _train(config, args, state.is_main_process and not args.no_progress, say, stop)
    say(f"done: {result.steps} steps in {result.seconds:.1f} s; "
        + (f"model written to {result.output}" if result.output else f"checkpoint {result.checkpoint}"))


def _train(config, args, show_progress: bool, say, stop: threading.Event):
    import signal

    from .trainer import Trainer, TrainingStopped

    trainer = Trainer(config, log=say)
    bar = None
    if show_progress:
        from ..cli.progress import bar as progress_bar

        bar = progress_bar(config.train.max_steps, "training", unit="step")

    def on_step(info) -> None:
        if bar is not None:
            bar.n = info.step
            bar.set_postfix(loss=f"{info.loss:.4f}", refresh=True)

    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is threading.main_thread():
        def request_stop(*_) -> None:  # first Ctrl-C: checkpoint after this step; second: stop now
            stop.set()
            signal.signal(signal.SIGINT, previous)

        signal.signal(signal.SIGINT, request_stop)
    try:
        return trainer.train(resume=args.resume, callback=on_step, should_stop=stop.is_set)
    except TrainingStopped as stopped:
        say(str(stopped))
        raise
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
