"""What a person sees during long work: one live line per running node (its current step), then a summary.

The libraries report typed events (builder.events); this module turns them into the lines people read.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from builder.events import (
    BuilderChosen,
    Event,
    FetchDone,
    FetchProgress,
    LockStarted,
    NodeCanonicalizing,
    NodeOutput,
    NodeRebuilding,
    NodeStarted,
    NodeStatus,
    NodeStep,
    PushFinished,
    PushMismatch,
    PushReading,
    PushUploading,
)

STEP_WIDTH = 160  # a step line longer than this is cut (unless --verbose)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def build_message(event: Event, verbose: bool = False) -> str | None:
    """The progress line of a build or verify event (after the node's label), or None when it is not shown.

    Without `verbose`, a node shows its phases and the steps of its Dockerfile, not every line of the build.
    """
    if isinstance(event, BuilderChosen):
        return f"builder: {event.kind} ({event.reason})"
    if isinstance(event, FetchProgress):
        return f"wheelhouse: {event.bytes_fetched / 1e6:.0f} MB fetched (now {event.filename})"
    if isinstance(event, FetchDone):
        return (
            f"wheelhouse: {event.downloaded} downloaded ({event.bytes_downloaded / 1e6:.0f} MB), "
            f"{event.reused} reused"
        )
    if isinstance(event, NodeStarted):
        return "building"
    if isinstance(event, NodeCanonicalizing):
        return "canonicalizing"
    if isinstance(event, NodeStep):
        return event.step if verbose else event.step[:STEP_WIDTH]
    if verbose and isinstance(event, NodeOutput):
        return event.line
    if verbose and isinstance(event, NodeRebuilding):
        return f"rebuild {event.attempt}/{event.rebuilds} from scratch"
    return None


def push_message(event: Event) -> str | None:
    """The progress line of a push event (after `node: `), or None when it is not shown."""
    if isinstance(event, PushMismatch):
        return f"registry content tag holds config {event.registry_config}, engine has {event.engine_image}"
    if isinstance(event, PushReading):
        return "reading its layers from the engine"
    if isinstance(event, PushUploading):
        return f"pushing to {event.destination}"
    if isinstance(event, PushFinished):
        return f"{event.status} in {event.seconds:.1f}s"
    return None


def print_push_event(event: Event) -> None:
    """`node: message` on stderr, at once."""
    message = push_message(event)
    if message is not None:
        print(f"{event.subject}: {message}", file=sys.stderr, flush=True)


def print_lock_event(event: Event) -> None:
    """`locking NODE ...` on stdout when a node starts resolving."""
    if isinstance(event, LockStarted):
        print(f"locking {event.node} ...")


class BuildReporter:
    """Prints node steps (not every build line) to stderr; silent with quiet=True. An EventSink."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet
        self.verbose = verbose
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self._lock = threading.Lock()
        self._last: dict[str, str] = {}

    def event(self, event: Event) -> None:
        if self.quiet:
            return
        message = build_message(event, self.verbose)
        if message is None:
            return
        node = event.subject or "-"
        with self._lock:
            if self._last.get(node) == message:
                return
            self._last[node] = message
            label = "strata" if node == "-" else node
            self.console.log(f"{label} {message}", markup=False, highlight=False)

    def summary(self, outcomes: Sequence[Any]) -> None:
        table = Table(title="strata build")
        for col in ("node", "status", "duration", "size"):
            table.add_column(col)
        style = {
            NodeStatus.BUILT: "green",
            NodeStatus.CACHED: "cyan",
            NodeStatus.PULLED: "blue",
            NodeStatus.FAILED: "red",
            NodeStatus.SKIPPED: "yellow",
        }
        for o in outcomes:
            table.add_row(
                o.node,
                f"[{style.get(o.status, '')}]{o.status}[/]",
                f"{o.seconds:.1f}s" if o.seconds else "-",
                human_size(o.size) if o.size else "-",
            )
        Console(file=sys.stdout, width=120).print(table)
        for o in outcomes:
            if o.status is NodeStatus.FAILED:
                self.console.print(f"strata: {o.message}", style="red", markup=False, highlight=False)
