"""BuildKit's cache records of Strata's builds: which they are, and removing them (the engine's build cache).

A BuildKit build leaves a record per step: the install stage's `pip install` (as big as the layer it adds) and the
final stage's `COPY --from` of that prefix (as big again). Strata never reuses them: its content hashes decide what
is built, and every install step's WHEELHOUSE_URL names a loopback port new each run, so each record would only
fill the disk (about twice the image size per build). The engine is shared, so records are removed only when they
are provably Strata's, by id (`POST /build/prune` with an `id` filter; engine 20.10 matches it as a regular
expression), never by age or size:

- after builds (`discard_build_image`, or `discard_build_images` for a batch): of the records created since the
  build started, the stage whose layers only the raw image (just removed) shared, and the stages holding one of
  the node's own RUN commands that started FROM the same image;
- by `strata gc` (`strata_records`): the stages of records whose step is a RUN of one of the matrix's Dockerfiles,
  the stages of copies only that started FROM the same image and were released with them (the final stage of that
  build: BuildKit releases all records of a build when it ends), and (`records_freed_by`) the stages whose layers
  only the raw leftovers gc removed shared.

A stage is followed up through its parents to the image it started FROM (records `from local ...`, which are
the engine's own images, never removed here) and down through its children, stopping at a RUN Strata did not
write (someone built on top). Records in use, or still shared with an image, are never selected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from builder.engine.client import ENGINE_ERRORS

EXEC_PREFIX = "mount / from exec "
SHELL_PREFIX = EXEC_PREFIX + "/bin/sh -c "
IMAGE_RECORD_PREFIXES = ("from local", "pulled from")  # the engine's images, as BuildKit sees them
# A record created this long before its build started (clock granularity, engine and client clocks) still counts.
CLOCK_SLACK_SECONDS = 2.0
# The records of one build are released together when it ends: its stages' last uses lie this close.
RELEASED_TOGETHER_SECONDS = 2.0
# Record ids per prune request: the filter travels in the URL.
PRUNE_BATCH = 64
_ID = re.compile(r"^[a-z0-9]+$")


@dataclass(frozen=True)
class BuildRecord:
    """One record of the engine's build cache (`GET /system/df`, BuildCache)."""

    id: str
    parent: str
    type: str
    description: str
    in_use: bool
    shared: bool
    size: int
    created: float
    last_used: float

    @property
    def is_image(self) -> bool:
        return self.description.startswith(IMAGE_RECORD_PREFIXES)

    @property
    def is_exec(self) -> bool:
        return self.description.startswith(EXEC_PREFIX)

    @property
    def freeable(self) -> int:
        """Bytes removing it gives back: none while an image shares its layer."""
        return 0 if self.shared else self.size


@dataclass(frozen=True)
class BuildTrace:
    """What is known of one build when it ends: when it started and the RUN steps its Dockerfile has."""

    started: float
    commands: frozenset[str]


def _timestamp(text: Any) -> float:
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def record_from_api(raw: Mapping[str, Any]) -> BuildRecord:
    return BuildRecord(
        id=str(raw.get("ID", "")),
        parent=str(raw.get("Parent") or ""),
        type=str(raw.get("Type", "")),
        description=str(raw.get("Description") or ""),
        in_use=bool(raw.get("InUse")),
        shared=bool(raw.get("Shared")),
        size=int(raw.get("Size") or 0),
        created=_timestamp(raw.get("CreatedAt")),
        last_used=_timestamp(raw.get("LastUsedAt")),
    )


def list_build_records(client: Any) -> list[BuildRecord]:
    """Every record of the engine's build cache (none on an engine without BuildKit)."""
    return [record_from_api(r) for r in client.api.df().get("BuildCache") or []]


def _normalize(text: str) -> str:
    return " ".join(text.split())


def run_commands(dockerfile: str) -> frozenset[str]:
    """The record descriptions the RUN steps of `dockerfile` give, whitespace-normalized (pure).

    >>> sorted(run_commands("FROM x\\nRUN a \\\\\\n  && b\\n"))
    ['mount / from exec /bin/sh -c a && b']
    """
    commands = set()
    for instruction in _instructions(dockerfile):
        keyword, _, rest = instruction.partition(" ")
        if keyword.upper() != "RUN":
            continue
        rest = rest.strip()
        while rest.startswith("--"):  # RUN --mount=... / --network=...: flags are not part of the command
            rest = rest.partition(" ")[2].strip()
        if rest.startswith("["):
            try:
                argv = json.loads(rest)
            except ValueError:
                argv = None
            if isinstance(argv, list):
                commands.add(_normalize(EXEC_PREFIX + " ".join(str(a) for a in argv)))
                continue
        commands.add(_normalize(SHELL_PREFIX + rest))
    return frozenset(commands)


def _instructions(dockerfile: str) -> list[str]:
    """Instructions with line continuations joined; comment and blank lines inside a continuation dropped."""
    out: list[str] = []
    current: list[str] = []
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if current and (not stripped or stripped.startswith("#")):
            continue
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current.append(line.rstrip()[:-1])
            continue
        current.append(line)
        out.append("".join(current).strip())
        current = []
    if current:
        out.append("".join(current).strip())
    return out


def _is_strata_step(record: BuildRecord, commands: frozenset[str]) -> bool:
    return record.is_exec and _normalize(record.description) in commands


class _Graph:
    """Records by id and by parent, for walking stages."""

    def __init__(self, records: Sequence[BuildRecord]) -> None:
        self.by_id = {r.id: r for r in records}
        self.children: dict[str, list[BuildRecord]] = {}
        for r in records:
            self.children.setdefault(r.parent, []).append(r)

    def root_of(self, record: BuildRecord, within: Callable[[BuildRecord], bool]) -> BuildRecord:
        """The first record of `record`'s stage: its ancestors up to (not including) an image record."""
        while (
            (parent := self.by_id.get(record.parent)) is not None and within(parent) and not parent.is_image
        ):
            record = parent
        return record

    def below(
        self, root: BuildRecord, commands: frozenset[str], within: Callable[[BuildRecord], bool]
    ) -> list[BuildRecord]:
        """`root` and what was built on it, stopping at a RUN Strata did not write (theirs, with what follows)."""
        found: list[BuildRecord] = []
        todo = [root]
        while todo:
            record = todo.pop()
            if record.is_image or not within(record):
                continue
            if record.is_exec and not _is_strata_step(record, commands):
                continue
            found.append(record)
            todo.extend(self.children.get(record.id, ()))
        return found


def _stages(
    records: Sequence[BuildRecord],
    starts: Iterable[BuildRecord],
    commands: frozenset[str],
    within: Callable[[BuildRecord], bool],
) -> dict[str, BuildRecord]:
    """Every record of the stages `starts` belong to (in use and shared ones too)."""
    graph = _Graph(records)
    chosen: dict[str, BuildRecord] = {}
    for start in starts:
        if start.id not in chosen:
            chosen.update((r.id, r) for r in graph.below(graph.root_of(start, within), commands, within))
    return chosen


def _removable(chosen: Iterable[BuildRecord], records: Sequence[BuildRecord]) -> list[BuildRecord]:
    """The chosen records the engine can remove: not in use, not shared with an image, and with no child outside
    the choice (a step someone else built on it, e.g. a plain `docker build` of the same Dockerfile: the record is
    theirs too, and the engine keeps it while that child exists)."""
    kept = {r.id: r for r in chosen if not r.in_use and not r.shared}
    children: dict[str, list[str]] = {}
    for record in records:
        children.setdefault(record.parent, []).append(record.id)
    changed = True
    while changed:  # dropping a record makes its parent's child foreign in turn
        changed = False
        for record_id in list(kept):
            if any(child not in kept for child in children.get(record_id, ())):
                del kept[record_id]
                changed = True
    return list(kept.values())


def strata_records(records: Sequence[BuildRecord], commands: frozenset[str]) -> list[BuildRecord]:
    """The records of Strata's builds gc can recognize later (pure).

    The stages holding one of `commands`, and the stages released with them: a build's records are all released
    when it ends, so a stage of COPY steps only (the final stage of a Strata image: `COPY --from` the install
    stage) started FROM the same image as a Strata stage and last used within RELEASED_TOGETHER_SECONDS of it
    is that build's final stage.
    """
    regular: Callable[[BuildRecord], bool] = lambda r: r.type == "regular"  # noqa: E731
    graph = _Graph(records)
    chosen = _stages(records, [r for r in records if _is_strata_step(r, commands)], commands, regular)
    ends: dict[str, list[float]] = {}  # image record -> when each Strata stage started FROM it was last used
    for record in chosen.values():
        if (parent := graph.by_id.get(record.parent)) is not None and parent.is_image:
            stage = graph.below(record, commands, regular)
            ends.setdefault(parent.id, []).append(max(r.last_used for r in stage))
    for image_id, times in ends.items():
        for sibling in graph.children.get(image_id, ()):
            if sibling.id in chosen or sibling.is_image or not regular(sibling) or not sibling.last_used:
                continue
            stage = graph.below(sibling, frozenset(), regular)  # no RUN at all: a stage of copies
            copies_only = not any(r.is_exec for r in _subtree(graph, sibling))
            released = any(abs(sibling.last_used - t) <= RELEASED_TOGETHER_SECONDS for t in times)
            if copies_only and released:
                chosen.update((r.id, r) for r in stage)
    return _removable(chosen.values(), records)


def _subtree(graph: _Graph, root: BuildRecord) -> list[BuildRecord]:
    found, todo = [], [root]
    while todo:
        record = todo.pop()
        found.append(record)
        todo.extend(graph.children.get(record.id, ()))
    return found


def records_freed_by(
    before: Sequence[BuildRecord], after: Sequence[BuildRecord], commands: frozenset[str]
) -> list[BuildRecord]:
    """The stages whose layers only images removed between the two listings shared (pure)."""
    was_shared = {r.id for r in before if r.shared}
    flipped = [r for r in after if r.id in was_shared and not r.shared and not r.is_image]
    return _removable(_stages(after, flipped, commands, lambda r: r.type == "regular").values(), after)


def records_of_build(
    before: Sequence[BuildRecord], after: Sequence[BuildRecord], trace: BuildTrace
) -> list[BuildRecord]:
    """The records one build left, listed before and after its raw image was removed (pure).

    The image's own stage is the records only the raw image shared (shared before the removal, not after), with the
    records of their stage created since the build started. The build's other stages are those holding one of its
    RUN steps, created since it started, that started FROM the same image. Nothing is taken when no layer was freed:
    no record is then tied to this build (another run may have built the same node at the same time).
    """
    since = trace.started - CLOCK_SLACK_SECONDS
    regular: Callable[[BuildRecord], bool] = lambda r: r.type == "regular"  # noqa: E731
    was_shared = {r.id for r in before if r.shared}
    freed = [r for r in after if regular(r) and not r.is_image and r.id in was_shared and not r.shared]
    freed_ids = {r.id for r in freed}
    # A step BuildKit took from its cache is older than the build; it is this build's only if the image held it.
    ours: Callable[[BuildRecord], bool] = lambda r: regular(r) and (r.created >= since or r.id in freed_ids)  # noqa: E731
    graph = _Graph(after)
    bases = {graph.root_of(r, regular).parent for r in freed} - {""}
    installs = [
        r
        for r in after
        if ours(r) and _is_strata_step(r, trace.commands) and graph.root_of(r, regular).parent in bases
    ]
    return _removable(_stages(after, freed + installs, trace.commands, ours).values(), after)


def prune_build_records(client: Any, ids: Iterable[str]) -> tuple[list[str], int]:
    """Remove exactly the records `ids` (those in use stay); returns the ids removed and the bytes reclaimed."""
    wanted = sorted({i for i in ids if _ID.match(i)})
    removed: list[str] = []
    reclaimed = 0
    for start in range(0, len(wanted), PRUNE_BATCH):
        batch = wanted[start : start + PRUNE_BATCH]
        answer = client.api.prune_builds(filters={"id": [f"^({'|'.join(batch)})$"]}) or {}
        removed += [i for i in answer.get("CachesDeleted") or [] if i in batch]
        reclaimed += int(answer.get("SpaceReclaimed") or 0)
    return removed, reclaimed


def discard_build_image(client: Any, ref: str, trace: BuildTrace | None) -> None:
    """Remove the raw image `ref` of a finished build and, with a trace (BuildKit builds), the records it left.

    Best effort: the image may be gone or in use, the engine may refuse; `strata gc` finds what stays.
    """
    discard_build_images(client, [(ref, trace)])


def discard_build_images(client: Any, builds: Sequence[tuple[str, BuildTrace | None]]) -> None:
    """`discard_build_image` for several finished builds at once: the build cache is listed twice in all (before
    and after every raw image is removed) and pruned once, instead of twice and once per build.

    Listing the build cache makes BuildKit size the records a build just left, and pruning deletes their files:
    both hold up the steps of builds running meanwhile, so `strata build` batches its discards (see
    builder/build/orchestrate.py). The records taken are the union of `records_of_build` for each trace.
    """
    if not builds:
        return
    traces = [trace for _, trace in builds if trace is not None]
    try:
        before = list_build_records(client) if traces else []
        for ref, _ in builds:
            try:
                client.images.remove(ref, noprune=False)
            except ENGINE_ERRORS:
                pass  # already gone or still used by a container: its records stay shared, so none are taken
        if traces:
            after = list_build_records(client)
            doomed = {r.id for trace in traces for r in records_of_build(before, after, trace)}
            prune_build_records(client, doomed)
    except ENGINE_ERRORS:
        pass  # the engine went away: nothing a build depends on, and `strata gc` finds what stays
