"""The `syncfoley` command line: each sub-package contributes its sub-commands."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from .perf import bench

    parser = argparse.ArgumentParser(prog="syncfoley", description="Synchronized Foley audio for silent video.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    bench.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
