"""The `strata` command: one argparse tree; each command module registers its own subcommand.

A command module exposes `register(subparsers)`; the subparser it adds sets `func`, a callable taking the
parsed namespace and returning an exit code. Errors derived from StrataError print as one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from builder.errors import ErrorList, StrataError

# Each module registers one or more subcommands; order is the order `strata --help` lists them.
COMMAND_MODULES = [
    "builder.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strata",
        description="Build, prove and publish reproducible TensorFlow images from one matrix.yaml.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ErrorList as exc:
        for err in exc.errors:
            print(f"strata: {err}", file=sys.stderr)
        return exc.exit_code
    except StrataError as exc:
        print(f"strata: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("strata: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
