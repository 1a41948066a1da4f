"""Typed statuses and events: what build, push and lock report while they work, and how they end.

Statuses are str-valued enums, so JSON output and console text print exactly the words they always did
(`built`, `cached`, ...). Events are frozen dataclasses, each with a `type` and the time it happened (UTC);
the libraries hand them to an `EventSink` (any callable taking an Event) and never print. The CLI renders
them for people (cli/progress.py) and, with `--events FILE`, writes them as JSON lines (`JsonLinesWriter`),
one object per line:

    {"type": "node-finished", "time": "2024-05-01T12:00:03.120000Z", "node": "base-bookworm",
     "status": "built", "seconds": 19.4, "size": 139800000, "image_id": "sha256:...", "message": ""}

Run-level events (the builder chosen, wheels fetched) have `"node": null`. `read_events(path)` turns such a
file back into events. Imports only builder.errors.
"""

from __future__ import annotations

import json
import re
import threading
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from builder.errors import Location, StrataError

# ---------------------------------------------------------------------------------------------- statuses


class _Word(str, Enum):
    """An enum whose members are their words everywhere: str(), f-strings, JSON and rich tables."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class NodeStatus(_Word):
    """How a node of `strata build` ended."""

    BUILT = "built"
    CACHED = "cached"  # the engine already had the node's content hash
    PULLED = "pulled"  # the registry had it: pulled instead of built
    FAILED = "failed"
    SKIPPED = "skipped"  # a parent failed, or the run stopped after a failure

    @property
    def ok(self) -> bool:
        """The node's image is in the engine (built, cached or pulled): its children may build on it."""
        return self in (NodeStatus.BUILT, NodeStatus.CACHED, NodeStatus.PULLED)


class PushStatus(_Word):
    """How a node of `strata push` ended (in the order the summary counts them)."""

    PUSHED = "pushed"
    TAGGED = "tagged"  # nothing uploaded, the version tag added
    SKIPPED = "skipped"  # the registry had it all
    FAILED = "failed"


class LockState(_Word):
    """A node's lock file: as checked (ok, stale, missing, tampered) or after `strata lock` (written, unchanged)."""

    OK = "ok"
    STALE = "stale"
    MISSING = "missing"
    TAMPERED = (
        "tampered"  # its body digest, header, hosts or pins are not what a resolution could have written
    )
    WRITTEN = "written"
    UNCHANGED = "unchanged"


# ---------------------------------------------------------------------------------------------- events


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Event:
    """Something a run reports about itself as a whole (no node)."""

    type: ClassVar[str] = "event"
    time: datetime = field(default_factory=_now, kw_only=True, repr=False)

    @property
    def subject(self) -> str | None:
        """The node the event is about; None for the run as a whole."""
        return None

    def to_json(self) -> dict[str, Any]:
        """`type`, `time` (ISO-8601 UTC), `node` (or None), then the event's own fields."""
        out: dict[str, Any] = {"type": self.type, "time": _iso(self.time), "node": self.subject}
        for f in fields(self):
            if f.name not in ("time", "node"):
                out[f.name] = _json_value(getattr(self, f.name))
        return out


@dataclass(frozen=True)
class NodeEvent(Event):
    """Something about one node of the plan."""

    node: str

    @property
    def subject(self) -> str | None:
        return self.node


def _json_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    return value


EventSink = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    """The sink that drops everything (the default of every library call)."""


def tee(*sinks: EventSink) -> EventSink:
    """One sink that hands each event to every one of `sinks`, in order."""

    def send(event: Event) -> None:
        for sink in sinks:
            sink(event)

    return send


# Build (builder.build): the run, then each node.


@dataclass(frozen=True)
class BuilderChosen(Event):
    type: ClassVar[str] = "builder-chosen"
    kind: str  # buildkit-cli | legacy ...
    reason: str


@dataclass(frozen=True)
class FetchProgress(Event):
    """Wheels fetched so far (reported every 100 MB)."""

    type: ClassVar[str] = "fetch-progress"
    bytes_fetched: int
    filename: str  # the wheel that crossed the mark


@dataclass(frozen=True)
class FetchDone(Event):
    type: ClassVar[str] = "fetch-done"
    downloaded: int
    bytes_downloaded: int
    reused: int


@dataclass(frozen=True)
class NodeStarted(NodeEvent):
    """The node's build began (context, then the engine build)."""

    type: ClassVar[str] = "node-started"


@dataclass(frozen=True)
class NodeStep(NodeEvent):
    """The engine began a step of the node's Dockerfile (`Step 2/5 : RUN ...`, `#8 [install 3/3] RUN ...`)."""

    type: ClassVar[str] = "node-step"
    step: str


@dataclass(frozen=True)
class NodeOutput(NodeEvent):
    """Any other line the engine printed while building the node."""

    type: ClassVar[str] = "node-output"
    line: str


@dataclass(frozen=True)
class NodeCanonicalizing(NodeEvent):
    type: ClassVar[str] = "node-canonicalizing"


@dataclass(frozen=True)
class NodeFinished(NodeEvent):
    """The node's outcome; every node of a build gets exactly one."""

    type: ClassVar[str] = "node-finished"
    status: NodeStatus
    seconds: float = 0.0
    size: int = 0
    image_id: str = ""
    message: str = ""


@dataclass(frozen=True)
class NodeRebuilding(NodeEvent):
    """`strata verify` rebuilds the node from scratch, the `attempt`th of `rebuilds` times."""

    type: ClassVar[str] = "node-rebuilding"
    attempt: int
    rebuilds: int


@dataclass(frozen=True)
class NodeVerified(NodeEvent):
    type: ClassVar[str] = "node-verified"
    reproducible: bool
    digests: tuple[str, ...]
    error: str = ""


_STEP = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[[^\]]+\] .*)$")


def engine_output(node: str, line: str) -> NodeStep | NodeOutput:
    """One line of a node's engine build output, as a step when it starts one (legacy or BuildKit format).

    >>> engine_output("base", "#5 [1/2] ADD rootfs.tar /")
    NodeStep(node='base', step='#5 [1/2] ADD rootfs.tar /')
    """
    match = _STEP.match(line.strip())
    return NodeStep(node, match.group(1)) if match else NodeOutput(node, line)


# Push (registry_sync.publish).


@dataclass(frozen=True)
class PushMismatch(NodeEvent):
    """The registry's content tag names another image than the engine's: the engine's is pushed."""

    type: ClassVar[str] = "push-mismatch"
    registry_config: str
    engine_image: str


@dataclass(frozen=True)
class PushReading(NodeEvent):
    type: ClassVar[str] = "push-reading"


@dataclass(frozen=True)
class PushUploading(NodeEvent):
    type: ClassVar[str] = "push-uploading"
    destination: str  # registry/repository


@dataclass(frozen=True)
class PushFinished(NodeEvent):
    type: ClassVar[str] = "push-finished"
    status: PushStatus
    seconds: float
    reference: str
    bytes_uploaded: int = 0
    manifest_digest: str = ""
    message: str = ""


# Lock (builder.lock).


@dataclass(frozen=True)
class LockStarted(NodeEvent):
    """The node's inputs are being resolved (it was stale, missing or refreshed)."""

    type: ClassVar[str] = "lock-started"


@dataclass(frozen=True)
class LockFinished(NodeEvent):
    type: ClassVar[str] = "lock-finished"
    path: str
    state: LockState  # written | unchanged


@dataclass(frozen=True)
class LockChecked(NodeEvent):
    """`strata lock --check`: the node's lock as found."""

    type: ClassVar[str] = "lock-checked"
    path: str
    state: LockState  # ok | stale | missing | tampered
    line: int = 0  # the line of the lock file the reason is about (0: the file as a whole)
    reason: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        BuilderChosen,
        FetchProgress,
        FetchDone,
        NodeStarted,
        NodeStep,
        NodeOutput,
        NodeCanonicalizing,
        NodeFinished,
        NodeRebuilding,
        NodeVerified,
        PushMismatch,
        PushReading,
        PushUploading,
        PushFinished,
        LockStarted,
        LockFinished,
        LockChecked,
    )
}


# ---------------------------------------------------------------------------------------------- JSON lines


class JsonLinesWriter:
    """An EventSink writing each event as one JSON object on one line of `path` (created or truncated).

    Each line goes to the file in one write, at once, under a lock: events from several build threads never
    interleave, and a run that dies leaves only complete lines. Use as a context manager, or call close().
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = open(path, "wb", buffering=0)
        except OSError as exc:
            raise StrataError(f"cannot write events: {exc.strerror}", Location(str(path))) from None
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = (json.dumps(event.to_json(), separators=(",", ":")) + "\n").encode("ascii")
        with self._lock:
            view = memoryview(line)
            while view:
                written = self._file.write(view) or 0
                view = view[written:]

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def event_from_json(data: dict[str, Any]) -> Event:
    """The event a `to_json()` object describes (KeyError or ValueError when it describes none)."""
    cls = EVENT_TYPES[data["type"]]
    hints = _hints(cls)
    values = {f.name: _from_json_value(hints[f.name], data[f.name]) for f in fields(cls) if f.name != "time"}
    return cls(**values, time=_parse_time(str(data["time"])))


def read_events(path: Path) -> Iterator[Event]:
    """The events of a JSON-lines file `JsonLinesWriter` wrote, in order."""
    with open(path, encoding="ascii") as lines:
        for number, line in enumerate(lines, 1):
            try:
                yield event_from_json(json.loads(line))
            except (KeyError, TypeError, ValueError) as exc:
                raise StrataError(f"not a Strata event ({exc!r})", Location(str(path), number)) from None


_HINTS: dict[str, dict[str, Any]] = {}


def _hints(cls: type[Event]) -> dict[str, Any]:
    if cls.type not in _HINTS:
        _HINTS[cls.type] = typing.get_type_hints(cls)
    return _HINTS[cls.type]


def _from_json_value(hint: Any, value: Any) -> Any:
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if typing.get_origin(hint) is tuple:
        return tuple(value)
    return value


def _parse_time(text: str) -> datetime:
    # Python 3.10's fromisoformat does not read the `Z` suffix.
    return datetime.fromisoformat(text.removesuffix("Z") + "+00:00" if text.endswith("Z") else text)
