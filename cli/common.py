"""What every command shares: the matrix options, the run's Settings, the plan they select, and the run lock.

The CLI is the one place that reads the process environment: `settings_for(args)` turns it and the command's
flags into the frozen `Settings` every library call receives. Commands that write shared state wrap their handler
in `with_run_lock` (builder/state_lock.py): a second run waits for the first, saying so once.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from builder.errors import MatrixError
from builder.events import EventSink, JsonLinesWriter, ignore_events
from builder.matrix.load import DEFAULT_PROFILE, load_matrix
from builder.plan.graph import Plan, build_plan
from builder.settings import DEFAULT_MATRIX, MATRIX_ENV, Settings, matrix_file, resolve_settings
from builder.state_lock import LockHolder, lock_paths, run_lock


def add_matrix_file_arg(
    p: argparse.ArgumentParser, whole_matrix: bool = False, optional: bool = False
) -> None:
    """-f/--file PATH: the matrix file, for every command that reads the matrix (resolved by `resolve_matrix_arg`).

    The bare `--matrix` the README's build line uses is accepted everywhere (on build it is the "whole matrix"
    switch, listed in its help when `whole_matrix`); the old `--matrix PATH` form is rewritten to `-f PATH` with
    a warning (cli.main). `optional`: the command works without a matrix (then `matrix.yaml` in the current
    directory stands for it, e.g. for the default images.lock.json next to it).
    """
    named = p.add_argument(
        "-f",
        "--file",
        dest="matrix",
        metavar="PATH",
        default=None,
        help=f"matrix file (default: ${MATRIX_ENV}, else {DEFAULT_MATRIX} in the current directory or a parent)",
    )
    named.complete = {"bash": "_shtab_compgen_files", "zsh": "_files"}  # type: ignore[attr-defined]  # shtab.FILE
    p.add_argument(
        "--matrix",
        dest="whole_matrix",
        action="store_true",
        help="build the whole matrix (as without --only; not with --only)"
        if whole_matrix
        else argparse.SUPPRESS,
    )
    p.set_defaults(matrix_optional=optional)


def add_matrix_args(p: argparse.ArgumentParser, only: bool = True, whole_matrix: bool = False) -> None:
    """-f/--file, --profile and (optionally) --only, shared by every command that reads the matrix."""
    add_matrix_file_arg(p, whole_matrix)
    p.add_argument(
        "--profile", default=DEFAULT_PROFILE, help="where bases come from: hermetic (default) or upstream"
    )
    if only:
        p.add_argument(
            "--only",
            action="append",
            metavar="GLOB",
            help="cells or nodes to select, e.g. 'tf2.13.1-*' (repeatable)",
        )


def resolve_matrix_arg(args: argparse.Namespace) -> None:
    """Set `args.matrix` to the run's matrix file (-f, else $STRATA_MATRIX, else matrix.yaml found upward).

    Raises MatrixError (exit 2) when there is none; a no-op for commands without a matrix or once resolved.
    """
    if hasattr(args, "matrix") and args.matrix is None:
        try:
            args.matrix = str(matrix_file(None, os.environ, Path.cwd()))
        except MatrixError:
            if not getattr(args, "matrix_optional", False):
                raise
            args.matrix = DEFAULT_MATRIX


def add_events_arg(p: argparse.ArgumentParser) -> None:
    """--events FILE: what the command reports, as JSON lines (builder.events)."""
    p.add_argument(
        "--events",
        type=Path,
        metavar="FILE",
        help="also write what the run reports (each node's steps and outcome) to FILE, one JSON object a line",
    )


@contextmanager
def open_events(args: argparse.Namespace) -> Iterator[EventSink]:
    """The sink `--events FILE` asks for (FILE created or truncated now), or one that drops everything."""
    path = getattr(args, "events", None)
    if path is None:
        yield ignore_events
        return
    with JsonLinesWriter(path) as writer:
        yield writer


def settings_for(args: argparse.Namespace) -> Settings:
    """The run's settings: the environment this process started with, and the matrix file. Commands without a
    matrix use the one found as `-f` would (for the state root next to it), else the current directory's."""
    if hasattr(args, "matrix"):
        resolve_matrix_arg(args)
        return resolve_settings(os.environ, Path(args.matrix))
    try:
        found: Path | None = matrix_file(None, os.environ, Path.cwd())
    except MatrixError:
        found = None
    return resolve_settings(os.environ, found)


def load_plan(args: argparse.Namespace, settings: Settings) -> Plan:
    """The plan of `-f`/`--profile`, narrowed to `--only` (when the command has it)."""
    resolve_matrix_arg(args)
    plan = build_plan(load_matrix(args.matrix, args.profile, settings.registry_override))
    return plan.select(getattr(args, "only", None))


def full_plan(args: argparse.Namespace, settings: Settings) -> Plan:
    """The whole plan of `-f`/`--profile`, ignoring `--only`."""
    resolve_matrix_arg(args)
    return build_plan(load_matrix(args.matrix, args.profile, settings.registry_override))


Handler = Callable[[argparse.Namespace], int]


def add_wait_args(p: argparse.ArgumentParser) -> None:
    """--no-wait and --wait-timeout, for commands that take the run lock."""
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="if another strata run holds the state root or the checkout, exit 75 at once instead of waiting",
    )
    p.add_argument(
        "--wait-timeout",
        type=float,
        metavar="SECONDS",
        help="wait at most this long for another strata run, then exit 75 (default: wait until it ends)",
    )


def with_run_lock(
    handler: Handler, unless: Callable[[argparse.Namespace], bool] = lambda a: False, checkout: bool = True
) -> Handler:
    """`handler`, run while this process holds the run lock (unless `unless(args)`: read-only uses); `checkout`
    False for commands that use no matrix (they lock the state root only)."""

    @functools.wraps(handler)
    def locked(args: argparse.Namespace) -> int:
        if unless(args):
            return handler(args)
        settings = settings_for(args)
        with run_lock(
            lock_paths(settings, checkout),
            shlex.join(["strata", *sys.argv[1:]]),
            wait=not getattr(args, "no_wait", False),
            timeout=getattr(args, "wait_timeout", None),
            on_wait=_say_waiting,
        ):
            return handler(args)

    return locked


def _say_waiting(holder: LockHolder) -> None:
    print(f"strata: waiting for the other strata run ({holder.describe()})", file=sys.stderr, flush=True)
