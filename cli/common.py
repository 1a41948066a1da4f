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

from builder.events import EventSink, JsonLinesWriter, ignore_events
from builder.matrix.load import DEFAULT_PROFILE, load_matrix
from builder.plan.graph import Plan, build_plan
from builder.settings import DEFAULT_MATRIX, Settings, resolve_settings
from builder.state_lock import LockHolder, lock_paths, run_lock


def add_matrix_args(p: argparse.ArgumentParser, only: bool = True) -> None:
    """--matrix, --profile and (optionally) --only, shared by every command that reads the matrix."""
    p.add_argument(
        "--matrix",
        nargs="?",
        const=DEFAULT_MATRIX,
        default=DEFAULT_MATRIX,
        metavar="FILE",
        help="matrix file (default: matrix.yaml)",
    )
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
    """The run's settings: the environment this process started with, and the matrix file named (if any)."""
    matrix = getattr(args, "matrix", None)
    return resolve_settings(os.environ, Path(matrix) if matrix else None)


def load_plan(args: argparse.Namespace, settings: Settings) -> Plan:
    """The plan of `--matrix`/`--profile`, narrowed to `--only` (when the command has it)."""
    plan = build_plan(load_matrix(args.matrix, args.profile, settings.registry_override))
    return plan.select(getattr(args, "only", None))


def full_plan(args: argparse.Namespace, settings: Settings) -> Plan:
    """The whole plan of `--matrix`/`--profile`, ignoring `--only`."""
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
