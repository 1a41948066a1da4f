"""What a person sees during long work, rendered from the typed events the libraries report (builder.events).

Three modes (`--progress`, cli/output.py):
- plain: one line per step on stderr, never wrapped, the way `docker buildx build --progress=plain` reads:
  `#3 08:14:03 tf2.13.1-cpu-py3.11 built 41.2s 812.4 MB` (`#N` numbers the nodes in the order they first
  report; `#0` is the run itself; the time is UTC, as in `--events`);
- tty: a live view: nodes done of all, bytes transferred, time left, and one line per running node;
- quiet: nothing (the summary or the JSON document still prints).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from builder.events import (
    BuilderChosen,
    Event,
    FetchDone,
    FetchProgress,
    LockChecked,
    LockFinished,
    LockStarted,
    NodeCanonicalizing,
    NodeFinished,
    NodeOutput,
    NodeRebuilding,
    NodeStarted,
    NodeStatus,
    NodeStep,
    NodeVerified,
    PushFinished,
    PushMismatch,
    PushReading,
    PushUploading,
)
from cli.output import console

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
    if isinstance(event, NodeFinished):
        parts = [str(event.status), f"{event.seconds:.1f}s" if event.seconds else ""]
        parts.append(human_size(event.size) if event.size else "")
        parts.append(event.message if event.status is NodeStatus.FAILED else "")
        return " ".join(p for p in parts if p)
    if isinstance(event, NodeVerified):
        return ("reproducible" if event.reproducible else "NOT reproducible") + (
            f": {event.error}" if event.error else ""
        )
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
        uploaded = f", {human_size(event.bytes_uploaded)} uploaded" if event.bytes_uploaded else ""
        return f"{event.status} in {event.seconds:.1f}s{uploaded}"
    return None


def lock_message(event: Event) -> str | None:
    """The progress line of a lock event, or None when it is not shown."""
    if isinstance(event, LockStarted):
        return "locking ..."
    if isinstance(event, LockFinished):
        return f"{event.state} {event.path}"
    if isinstance(event, LockChecked):
        return f"{event.state}" + (f": {event.reason}" if event.reason else "")
    return build_message(event)


FINISHING: tuple[type[Event], ...] = (NodeFinished, PushFinished, LockFinished)


class Reporter:
    """An EventSink that renders events in one of the three `--progress` modes; use it as a context manager
    (the live view runs inside it). `message` turns an event into its line (build_message, push_message, ...)."""

    def __init__(
        self,
        mode: str = "plain",
        *,
        total: int = 0,
        message: Callable[[Event], str | None] = build_message,
        title: str = "nodes",
        stream: IO[str] | None = None,
        finishing: tuple[type[Event], ...] = FINISHING,
    ) -> None:
        self.mode = mode
        self.finishing = finishing  # the events that count a node done in the live view
        self.total = total
        self.message = message
        self.title = title
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._last: dict[str, str] = {}
        self._numbers: dict[str, int] = {}
        self._progress: Progress | None = None
        self._overall: TaskID | None = None
        self._rows: dict[str, TaskID] = {}
        self._started = time.monotonic()
        self._done = 0
        self._fetched = 0
        self._pushed = 0
        self.title_unit = "nodes done"

    # -- the live view
    def __enter__(self) -> Reporter:
        if self.mode == "tty":
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                _ExtraColumn(self),
                console=Console(file=self.stream, highlight=False),
                transient=False,
            )
            self._progress.start()
            self._started = time.monotonic()
            self._overall = self._progress.add_task(
                f"strata {self.title}", total=self.total or None, extra=""
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- events
    def event(self, event: Event) -> None:
        if self.mode == "quiet":
            return
        text = self.message(event)
        node = event.subject
        with self._lock:
            if self._progress is not None:
                self._live(event, node, text)
                return
            if text is None:
                return
            key = node or "-"
            if self._last.get(key) == text:
                return
            self._last[key] = text
            self.stream.write(self.plain_line(event, text) + "\n")
            self.stream.flush()

    __call__ = event

    def plain_line(self, event: Event, text: str) -> str:
        """`#N HH:MM:SS label text`: one unwrapped line, no source location."""
        node = event.subject
        number = 0
        if node is not None:
            number = self._numbers.setdefault(node, len(self._numbers) + 1)
        stamp = event.time.strftime("%H:%M:%S")
        return f"#{number} {stamp} {node or 'strata'} {text}"

    def _live(self, event: Event, node: str | None, text: str | None) -> None:
        progress = self._progress
        assert progress is not None and self._overall is not None
        if isinstance(event, FetchProgress):
            self._fetched = event.bytes_fetched
        if isinstance(event, PushFinished):
            self._pushed += event.bytes_uploaded
        if node is not None and isinstance(event, self.finishing):
            row = self._rows.pop(node, None)
            if row is not None:
                progress.remove_task(row)
            self._done += 1
            progress.update(self._overall, completed=self._done)
        elif node is not None and text is not None:
            short = text if len(text) <= 100 else text[:99] + "…"
            if node not in self._rows:
                self._rows[node] = progress.add_task(f"  {node}", total=None, extra=short)
            else:
                progress.update(self._rows[node], extra=short)
        if (
            text is not None
            and (node is None or isinstance(event, self.finishing))
            and not isinstance(event, FetchProgress)
        ):
            line = f"{node} {text}" if node else text
            progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def overall(self) -> str:
        """The overall line: nodes done of all, bytes transferred, time spent and left (computed when drawn)."""
        elapsed = time.monotonic() - self._started
        parts = [f"{self._done}/{self.total or '?'} {self.title_unit}"]
        moved = self._fetched + self._pushed
        if moved:
            parts.append(f"{human_size(moved)} transferred")
        parts.append(f"{_clock(elapsed)} elapsed")
        if self._done and self.total > self._done:
            parts.append(f"~{_clock(elapsed / self._done * (self.total - self._done))} left")
        return ", ".join(parts)


class _ExtraColumn(ProgressColumn):
    """The overall task's line from its reporter, each node's current step from its `extra` field."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__()
        self.reporter = reporter

    def render(self, task: Task) -> Text:
        if task.id == self.reporter._overall:
            return Text(self.reporter.overall())
        return Text(str(task.fields.get("extra", "")))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class BuildReporter(Reporter):
    """The reporter of `strata build` and `strata verify`, with the build summary table."""

    def __init__(
        self,
        mode: str = "plain",
        verbose: bool = False,
        total: int = 0,
        stream: IO[str] | None = None,
        verify: bool = False,
    ) -> None:
        super().__init__(
            mode,
            total=total,
            message=lambda e: build_message(e, verbose),
            title="verify" if verify else "build",
            stream=stream,
            finishing=(NodeVerified,) if verify else FINISHING,
        )

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
        console().print(table)
        for o in outcomes:
            if o.status is NodeStatus.FAILED:
                print(f"strata: {o.message}", file=sys.stderr)


class FetchMeter:
    """The `progress(filename, chunk_bytes)` callback of fetch_wheels, reported per file: a line when a file
    starts, a running total every `step` bytes, and (`finish`) each file with its size."""

    def __init__(self, mode: str, stream: IO[str] | None = None, step: int = 100 * 10**6) -> None:
        self.mode = mode
        self.stream = stream or sys.stderr
        self.step = step
        self.files: dict[str, int] = {}
        self.total = 0
        self._next = step
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> FetchMeter:
        if self.mode == "tty":
            self._progress = Progress(
                TextColumn("{task.description}"),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stream, highlight=False),
            )
            self._progress.start()
            self._task = self._progress.add_task("strata fetch: 0 files", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __call__(self, filename: str, nbytes: int) -> None:
        with self._lock:
            first = filename not in self.files
            self.files[filename] = self.files.get(filename, 0) + nbytes
            self.total += nbytes
            if self._progress is not None and self._task is not None:
                self._progress.update(
                    self._task,
                    completed=self.total,
                    description=f"strata fetch: {len(self.files)} files, now {filename}",
                )
                return
            if self.mode != "plain":
                return
            if first:
                self._line(f"fetching {filename}")
            if self.total >= self._next:
                self._next += self.step
                self._line(f"{human_size(self.total)} fetched")

    def finish(self) -> None:
        """One line per downloaded file with its size (plain and tty)."""
        if self.mode == "quiet":
            return
        for name, size in sorted(self.files.items()):
            self._line(f"fetched {name} {human_size(size)}")

    def _line(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        self.stream.write(f"#0 {stamp} strata {text}\n")
        self.stream.flush()


class Lines:
    """Free-form progress lines of commands without typed events (smoke, bench run, sync), in the plain format:
    `#N HH:MM:SS label text`; silent in quiet mode. A terminal gets the same lines (no live view)."""

    def __init__(self, mode: str, stream: IO[str] | None = None) -> None:
        self.mode = mode
        self.stream = stream or sys.stderr
        self._numbers: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, text: str, label: str | None = None) -> None:
        if self.mode == "quiet":
            return
        with self._lock:
            number = self._numbers.setdefault(label, len(self._numbers) + 1) if label else 0
            stamp = time.strftime("%H:%M:%S", time.gmtime())
            self.stream.write(f"#{number} {stamp} {label or 'strata'} {text}\n")
            self.stream.flush()
