"""The `syncfoley` command line.

Each command lives in the package that owns its work; this module only knows their names, their
one-line help and where they are, so `syncfoley --help` imports nothing heavy and a command imports
only its own module.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, relative to the package root; one-line help)
COMMANDS = {
    "generate": (".cli.generate", "generate synchronized sound for a video (default: a synthetic clip, the demo model)"),
    "run": (".runner.cli", "run a ComfyUI workflow file (API or UI format) without ComfyUI, or on a ComfyUI server"),
    "eval-sync": (".evaluation.cli", "onset F1 and AV-Align of generated audio on held-out world clips"),
    "world": (".demo.world", "write synthetic clips with known sound-event times"),
    "train": (".training.cli", "fine-tune (LoRA or full) or train a Foley model on a folder of videos"),
    "train-vae": (".training.vae", "train a small DAC-VAE from scratch on the audio of a video folder"),
    "bench": (".perf.bench", "time the DiT and sampling steps; print a table (and JSON)"),
    "fp8-quality": (".perf.fp8_quality", "fp8 weight storage against fp32: velocity and a sampled latent"),
    "convert": (".cli.convert", "rewrite a model checkpoint in another precision (scaled fp8), as .safetensors"),
}
_PACKAGE = __name__.rsplit(".", 1)[0]


class _Commands:
    """The sub-parser action as each command module sees it: `add_parser(name, ...)` with the
    command's one-line help from `COMMANDS`."""

    def __init__(self, action):
        self.action = action

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        return self.action.add_parser(name, help=COMMANDS[name][1], **kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with full arguments for `command` only (every command when None)."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="syncfoley", description="Synchronized Foley audio for silent video.")
    parser.add_argument("--version", action="version", version=f"syncfoley {__version__}")
    action = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = _Commands(action)
    for name, (module, help_line) in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(module, _PACKAGE).add_parser(commands)
        else:
            action.add_parser(name, help=help_line, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
