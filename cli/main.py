"""The `strata` command: one argparse tree; each command module of this package registers its own subcommands.

A command module exposes `register(subparsers)`; the subparser it adds sets `func`, a callable taking the
parsed namespace and returning an exit code. Errors derived from StrataError print as one line. Command modules
are imported by name, only the one a command needs (`strata plan` never imports the registry client or numpy).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence

from builder.errors import ErrorList, StrataError

# Each module registers one or more subcommands; order is the order `strata --help` lists them.
COMMAND_MODULES = [
    "cli.plan",
    "cli.lock",
    "cli.build",
    "cli.images",
    "cli.registry",
    "cli.publish",
    "cli.evidence",
    "cli.audit",
    "cli.smoke",
    "cli.bench",
    "cli.gc",
]
# Which module owns a command, so `strata plan` does not import the registry client, numpy or matplotlib.
COMMAND_OWNERS = {
    "render": "cli.plan",
    "plan": "cli.plan",
    "lock": "cli.lock",
    "fetch": "cli.lock",
    "build": "cli.build",
    "verify": "cli.build",
    "canonicalize": "cli.images",
    "diff": "cli.images",
    "registry": "cli.registry",
    "push": "cli.publish",
    "pin": "cli.publish",
    "catalog": "cli.publish",
    "sync": "cli.publish",
    "promote": "cli.publish",
    "keygen": "cli.evidence",
    "sbom": "cli.evidence",
    "sign": "cli.evidence",
    "verify-signature": "cli.evidence",
    "audit": "cli.audit",
    "smoke": "cli.smoke",
    "bench": "cli.bench",
    "gc": "cli.gc",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strata",
        description="Build, prove and publish reproducible TensorFlow images from one matrix.yaml.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    owner = COMMAND_OWNERS.get(command or "")
    for name in [owner] if owner else COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    parser.epilog = "examples:\n" + "\n".join(_examples(sub))
    return parser


def _examples(sub: argparse._SubParsersAction) -> list[str]:
    """One example per subcommand, taken from the `example: strata ...` text of its help (or of its first child)."""
    lines = []
    for name, sp in sub.choices.items():
        example = _find_example(sp)
        lines.append(f"  {example or f'strata {name} --help'}")
    return lines


def _find_example(sp: argparse.ArgumentParser) -> str | None:
    text = f"{sp.description or ''}\n{sp.epilog or ''}"
    match = re.search(r"example:\s*(strata [^\n]+?)(\s{2,}\(|\s*\\?$)", text, re.M)
    if match:
        return match.group(1).strip()
    for action in sp._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found = _find_example(child)
                if found:
                    return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first)
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
    except BrokenPipeError:
        # The reader went away (`strata plan | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("strata: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
