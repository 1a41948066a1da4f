"""How every command prints what it reports: one JSON document per run (`--format json`), tables sized to the
terminal, and the `--progress` mode of long commands.

The machine-readable contract (docs/cli-json.md): with `--format json`, a command prints exactly one JSON object
on stdout, `{"schema": "strata.<command>/1", ...}`; progress and warnings go to stderr. docs/schemas/ holds the
JSON Schema of each document, and tests validate the real output against it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

from rich.console import Console

SCHEMA_VERSION = 1
# A table printed to a pipe or file is as wide as its content needs (CI logs do not wrap), up to this.
UNBOUNDED_WIDTH = 100_000
PROGRESS_MODES = ("auto", "plain", "tty", "quiet")


def schema_id(command: str) -> str:
    """`strata.<command>/1`: the `schema` value of a command's JSON document."""
    return f"strata.{command}/{SCHEMA_VERSION}"


def envelope(command: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The command's document: `schema` first, then the body's keys."""
    return {"schema": schema_id(command), **body}


def print_json(command: str, body: Mapping[str, Any], out: IO[str] | None = None) -> None:
    """Print the command's one JSON document (indented, one trailing newline) on stdout."""
    stream = out or sys.stdout
    json.dump(envelope(command, body), stream, indent=2, default=str)
    stream.write("\n")
    stream.flush()


class _RetiredJsonFlag(argparse.Action):
    """`--json`, kept hidden for old scripts: it means `--format json` and says so on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *_: Any) -> None:
        print("strata: --json is retired; use --format json", file=sys.stderr)
        namespace.format = "json"


def add_format_arg(
    p: argparse.ArgumentParser,
    choices: Sequence[str] = ("table", "json"),
    default: str = "table",
    retired_json: bool = False,
) -> None:
    """`--format` (json prints the command's schema document, docs/cli-json.md); `retired_json` keeps a hidden
    `--json` that warns."""
    p.add_argument(
        "--format",
        choices=list(choices),
        default=default,
        help=f"what to print: {' | '.join(choices)} (default {default}); json: one document, docs/cli-json.md",
    )
    if retired_json:
        p.add_argument("--json", action=_RetiredJsonFlag, dest="format")


def wants_json(args: argparse.Namespace) -> bool:
    return getattr(args, "format", None) == "json"


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_width(stream: IO[str]) -> int | None:
    """The terminal's width when `stream` is one (COLUMNS wins), else None (no wrapping)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if not is_terminal(stream):
        return None
    return shutil.get_terminal_size().columns


def console(stderr: bool = False) -> Console:
    """A rich Console for tables: the terminal's width, or as wide as the content when printing to a pipe."""
    stream = sys.stderr if stderr else sys.stdout
    width = terminal_width(stream)
    return Console(
        file=stream,
        width=width or UNBOUNDED_WIDTH,
        highlight=False,
        soft_wrap=width is None,
        force_terminal=None if width else False,
    )


def add_progress_arg(p: argparse.ArgumentParser) -> None:
    """`--progress auto|plain|tty|quiet` of a long command."""
    p.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="auto (default): a live view on a terminal, else plain; plain: one timestamped line per step; "
        "tty: the live view; quiet: nothing but the result",
    )


def progress_mode(args: argparse.Namespace, stream: IO[str] | None = None) -> str:
    """plain, tty or quiet: what `--progress` (and `--quiet`, and JSON on stdout) asks for on `stream`."""
    mode = getattr(args, "progress", "auto") or "auto"
    if getattr(args, "quiet", False):
        return "quiet"
    if mode != "auto":
        return mode
    return "tty" if is_terminal(stream or sys.stderr) else "plain"
