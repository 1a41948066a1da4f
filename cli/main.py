"""The `strata` command: one argparse tree; each command module of this package registers its own subcommands.

A command module exposes `register(subparsers)`; the subparser it adds sets `func`, a callable taking the
parsed namespace and returning an exit code. Errors derived from StrataError print as one line (and, under GitHub
Actions, as an `::error file=...,line=...` annotation when they name a place) and exit with their kind's code
(cli/exit_codes.py). Command modules are imported by name, only the one a command needs (`strata plan` never
imports the registry client or numpy).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from builder.errors import ErrorList, StrataError
from cli.common import resolve_matrix_arg
from cli.environment import environment_help
from cli.exit_codes import ExitCode, exit_code_for, exit_codes_help
from cli.github import github_error, under_github_actions

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
    # `completion` describes every command, so it loads them all (like `strata --help`).
}
SHELLS = ("bash", "zsh")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strata",
        description="Build, prove and publish reproducible TensorFlow images from one matrix.yaml.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="print the version and git commit, then exit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    owner = COMMAND_OWNERS.get(command or "")
    for name in [owner] if owner else COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    if not owner:
        _register_completion(sub, parser)
    parser.epilog = "\n\n".join(
        ["examples:\n" + "\n".join(_examples(sub)), environment_help(), exit_codes_help()]
    )
    return parser


def _register_completion(sub: argparse._SubParsersAction, parser: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for every command and option of strata.\n\n"
        "example: strata completion bash > /etc/bash_completion.d/strata\n"
        '         strata completion zsh > "${fpath[1]}/_strata"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=lambda args: _print_completion(parser, args.shell))


def _print_completion(parser: argparse.ArgumentParser, shell: str) -> int:
    # Loaded here, by name, so that only `strata completion` imports shtab.
    print(importlib.import_module("cli.completion").completion_script(parser, shell))
    return ExitCode.OK


class _VersionAction(argparse.Action):
    """`--version`: computed only when asked (it may run git)."""

    def __init__(
        self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object
    ) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=str(kwargs.get("help"))
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version_line())
        parser.exit()


def version_line() -> str:
    """`strata 0.1.0 (commit 1a2b3c4d5e6f)`: the installed package's version and the checkout's commit, when this
    code runs from a git checkout and git is installed (`+dirty` when tracked files changed)."""
    try:
        version = importlib.metadata.version("strata")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    commit = _git_commit(Path(__file__).resolve().parent.parent)
    return f"strata {version} (commit {commit or 'unknown'})"


def _git_commit(checkout: Path) -> str | None:
    if not (checkout / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if head and dirty else head or None


def _examples(sub: argparse._SubParsersAction) -> list[str]:
    """One example per subcommand, taken from the `example: strata ...` text of its help (or of its first child)."""
    lines = []
    for name, sp in sub.choices.items():
        example = _find_example(sp)
        lines.append(f"  {example or f'strata {name} --help'}")
    return lines


def _find_example(sp: argparse.ArgumentParser) -> str | None:
    # A long example continues on the next line after a backslash: join it, arguments and all.
    text = re.sub(r"\\\n\s*", "", f"{sp.description or ''}\n{sp.epilog or ''}")
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


def rewrite_matrix_path(argv: Sequence[str]) -> list[str]:
    """`argv` with the old `--matrix PATH` (or `--matrix=PATH`) form as `-f PATH`, warning once on stderr.

    A bare `--matrix` stays: on `build` it is the "whole matrix" switch, elsewhere it is accepted and does nothing.
    """
    out: list[str] = []
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            out += [arg, *rest]
            break
        path = None
        if arg.startswith("--matrix="):
            path = arg.removeprefix("--matrix=")
        elif arg == "--matrix" and rest and not rest[0].startswith("-"):
            path = rest.pop(0)
        if path is None:
            out.append(arg)
            continue
        print(
            f"strata: warning: `--matrix {path}` is deprecated: name the matrix file with `-f {path}` "
            "(select cells with --only)",
            file=sys.stderr,
        )
        out += ["-f", path]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = rewrite_matrix_path(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        print(version_line())  # without loading every command module for the parser
        return ExitCode.OK
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitCode.USAGE
    if args.command == "build" and args.whole_matrix and args.only:
        parser.error("build: --matrix (the whole matrix) cannot be combined with --only")
    annotate = under_github_actions()
    try:
        resolve_matrix_arg(args)
        return int(args.func(args) or 0)
    except StrataError as exc:
        for err in exc.errors if isinstance(exc, ErrorList) else [exc]:
            print(f"strata: {err}", file=sys.stderr)
            if annotate and err.location is not None and err.location.line is not None:
                print(github_error(err.location, err.message), file=sys.stderr)
        return exit_code_for(exc)
    except BrokenPipeError:
        # The reader went away (`strata plan | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except KeyboardInterrupt:
        print("strata: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
