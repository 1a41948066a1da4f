"""Typed statuses and events: their words, their JSON shape, and the JSON-lines writer under threads."""

from __future__ import annotations

import json
import re
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from builder.errors import StrataError
from builder.events import (
    EVENT_TYPES,
    BuilderChosen,
    Event,
    FetchDone,
    FetchProgress,
    JsonLinesWriter,
    LockChecked,
    LockFinished,
    LockStarted,
    LockState,
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
    PushStatus,
    PushUploading,
    engine_output,
    event_from_json,
    read_events,
    tee,
)

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

# One of every event type (test_every_event_type_has_a_sample keeps this list complete).
SAMPLES: list[Event] = [
    BuilderChosen("buildkit-cli", "/usr/bin/docker 20.10 embeds BuildKit"),
    FetchProgress(200_000_000, "tensorflow_cpu-2.13.1-cp311-cp311-manylinux_2_17_x86_64.whl"),
    FetchDone(12, 300_000_000, 3),
    NodeStarted("base-bookworm"),
    NodeStep("base-bookworm", "#5 [1/2] ADD rootfs.tar /"),
    NodeOutput("base-bookworm", "#5 0.8 unpacking"),
    NodeCanonicalizing("base-bookworm"),
    NodeFinished("base-bookworm", NodeStatus.BUILT, 19.4, 139_800_000, "sha256:" + "a" * 64),
    NodeRebuilding("base-bookworm", 1, 2),
    NodeVerified("base-bookworm", True, ("sha256:" + "b" * 64, "sha256:" + "b" * 64)),
    PushMismatch("base-bookworm", "sha256:" + "c" * 64, "sha256:" + "d" * 64),
    PushReading("base-bookworm"),
    PushUploading("base-bookworm", "127.0.0.1:5000/strata/base"),
    PushFinished("base-bookworm", PushStatus.PUSHED, 3.25, "127.0.0.1:5000/strata/base:bookworm-r1", 1000),
    LockStarted("tools-tf2.13.1-cpu"),
    LockFinished("tools-tf2.13.1-cpu", "locks/hermetic/tools-tf2.13.1-cpu.lock", LockState.WRITTEN),
    LockChecked("tools-tf2.13.1-cpu", "locks/hermetic/tools-tf2.13.1-cpu.lock", LockState.STALE),
]


def test_statuses_are_the_words_the_output_always_used() -> None:
    assert [s.value for s in NodeStatus] == ["built", "cached", "pulled", "failed", "skipped"]
    assert [s.value for s in PushStatus] == ["pushed", "tagged", "skipped", "failed"]
    assert [s.value for s in LockState] == ["ok", "stale", "missing", "tampered", "written", "unchanged"]
    status = NodeStatus.PULLED
    assert (str(status), f"{status}", f"[{status:>8}]") == ("pulled", "pulled", "[  pulled]")
    assert json.dumps({"status": status}) == '{"status": "pulled"}'
    assert status == "pulled" and NodeStatus("pulled") is status


def test_only_built_cached_and_pulled_nodes_are_ok() -> None:
    assert {s for s in NodeStatus if s.ok} == {NodeStatus.BUILT, NodeStatus.CACHED, NodeStatus.PULLED}


def test_every_event_type_has_a_sample_and_a_unique_type() -> None:
    assert sorted(type(e).type for e in SAMPLES) == sorted(EVENT_TYPES)
    assert all(EVENT_TYPES[name].type == name for name in EVENT_TYPES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).type)
def test_json_shape_type_time_node_then_fields(event: Event) -> None:
    data = event.to_json()
    assert list(data)[:3] == ["type", "time", "node"]
    assert data["type"] == type(event).type
    assert ISO_UTC.match(data["time"]), data["time"]
    assert data["node"] == event.subject
    # Plain JSON values only (enums as their words, tuples as lists), and the event comes back whole.
    assert json.loads(json.dumps(data)) == data
    assert event_from_json(json.loads(json.dumps(data))) == event


def test_run_level_events_have_no_node_and_node_events_name_theirs() -> None:
    assert BuilderChosen("legacy", "no buildx").to_json()["node"] is None
    finished = NodeFinished("tf2.13.1-cpu-py3.11", NodeStatus.FAILED, 2.5, message="node failed: exit 3")
    assert finished.to_json() == {
        "type": "node-finished",
        "time": finished.to_json()["time"],
        "node": "tf2.13.1-cpu-py3.11",
        "status": "failed",
        "seconds": 2.5,
        "size": 0,
        "image_id": "",
        "message": "node failed: exit 3",
    }


def test_the_time_is_when_the_event_happened_in_utc() -> None:
    before = datetime.now(timezone.utc)
    event = NodeStarted("a")
    after = datetime.now(timezone.utc)
    assert before <= event.time <= after
    parsed = datetime.strptime(event.to_json()["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert parsed == event.time


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Step 3/7 : RUN pip install -r /tmp/strata/requirements.lock", NodeStep),
        ("#8 [install 3/3] RUN SOURCE_DATE_EPOCH=1700000000 pip install", NodeStep),
        ("#8 3.1 Processing ./tensorflow_cpu-2.13.1.whl", NodeOutput),
        (" ---> Running in 4f2a", NodeOutput),
        ("#11 exporting to image", NodeOutput),
    ],
)
def test_engine_output_tells_steps_from_other_lines(line: str, expected: type[Event]) -> None:
    event = engine_output("n", line)
    assert type(event) is expected and event.node == "n"
    assert (event.step if isinstance(event, NodeStep) else event.line) == line


def test_tee_hands_each_event_to_every_sink_in_order() -> None:
    seen: list[tuple[str, Event]] = []
    send = tee(lambda e: seen.append(("a", e)), lambda e: seen.append(("b", e)))
    event = NodeStarted("n")
    send(event)
    assert seen == [("a", event), ("b", event)]


def test_writer_truncates_and_each_line_is_on_disk_at_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("left over from an earlier run\n" * 3)
    with JsonLinesWriter(path) as write:
        assert path.read_text() == ""
        write(SAMPLES[0])
        # Before close: the complete line is already in the file (a crash now would keep it).
        assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 1
        for event in SAMPLES[1:]:
            write(event)
    assert list(read_events(path)) == SAMPLES


def test_writer_keeps_lines_whole_when_many_threads_write(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    threads, per_thread = 8, 150
    noise = "x" * 20000  # lines longer than io's buffers: a writer that splits them would interleave them
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, inside writes too
    try:
        _write_from_threads(path, threads, per_thread, noise)
    finally:
        sys.setswitchinterval(interval)
    lines = path.read_text().splitlines()
    assert len(lines) == threads * per_thread
    by_node: dict[str, list[int]] = {}
    for line in lines:
        data = json.loads(line)  # every line one whole object
        by_node.setdefault(data["node"], []).append(int(data["line"].split()[0]))
    assert by_node == {f"node-{w}": list(range(per_thread)) for w in range(threads)}


def _write_from_threads(path: Path, threads: int, per_thread: int, noise: str) -> None:
    with JsonLinesWriter(path) as write:

        def emit(worker: int) -> None:
            for i in range(per_thread):
                write(NodeOutput(f"node-{worker}", f"{i} {noise}"))

        workers = [threading.Thread(target=emit, args=(w,)) for w in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()


def test_writer_that_cannot_open_its_file_says_where(tmp_path: Path) -> None:
    with pytest.raises(StrataError, match=r"^.*/missing/events\.jsonl: cannot write events: "):
        JsonLinesWriter(tmp_path / "missing" / "events.jsonl")


def test_reading_a_line_that_is_no_event_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(SAMPLES[3].to_json()) + "\n" + '{"type": "no-such-event"}\n')
    events = read_events(path)
    assert next(events) == SAMPLES[3]
    with pytest.raises(StrataError, match=r"events\.jsonl:2: not a Strata event"):
        next(events)
