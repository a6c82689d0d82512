"""The `syncfoley` command line: each sub-package contributes its sub-commands."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from .demo import generate, world
    from .evaluation import cli as evaluation_cli
    from .perf import bench
    from .training import cli as training_cli
    from .training import vae as vae_training
    from .runner import cli as runner_cli

    parser = argparse.ArgumentParser(prog="syncfoley", description="Synchronized Foley audio for silent video.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    generate.add_parser(subparsers)
    bench.add_parser(subparsers)
    world.add_parser(subparsers)
    evaluation_cli.add_parser(subparsers)
    training_cli.add_parser(subparsers)
    vae_training.add_parser(subparsers)
    runner_cli.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
