"""Which BuildKit records are Strata's, decided on a real listing of this project's engine (`GET /system/df`).

The fixture is the build cache a cold `strata build --only '*-cpu'` left next to other users' builds (records of a
test that built `rm /gone && ...` FROM a scratch image, and of one that appended `RUN echo house-events probe` to a
Strata user layer), and small probe builds at the top level. Record ids are the engine's.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from builder.engine.build_records import (
    BuildRecord,
    BuildTrace,
    prune_build_records,
    record_from_api,
    records_freed_by,
    records_of_build,
    run_commands,
    strata_records,
)

DATA = Path(__file__).parent / "data" / "buildkit-records.json"
GOLDEN = Path(__file__).resolve().parents[3] / "golden" / "hermetic"
MB = 1_000_000


@pytest.fixture
def records() -> list[BuildRecord]:
    return [record_from_api(raw) for raw in json.loads(DATA.read_text())]


@pytest.fixture
def commands() -> frozenset[str]:
    return frozenset(c for path in GOLDEN.glob("*/Dockerfile") for c in run_commands(path.read_text()))


def ids(records: list[BuildRecord]) -> set[str]:
    return {r.id[:12] for r in records}


def by_id(records: list[BuildRecord], prefix: str) -> BuildRecord:
    return next(r for r in records if r.id.startswith(prefix))


def at(text: str) -> float:
    return datetime.fromisoformat(f"2026-12-02T{text}+00:00").timestamp()


def test_run_commands_are_the_descriptions_buildkit_gives_run_steps() -> None:
    tools = run_commands((GOLDEN / "tools-tf2.13.1-cpu" / "Dockerfile").read_text())
    (command,) = tools
    assert command.startswith(
        "mount / from exec /bin/sh -c SOURCE_DATE_EPOCH=1700000000 PYTHONHASHSEED=0 pip "
    )
    assert "--no-index --find-links" in command  # the continuation joined, whitespace normalized
    assert "--prefix /opt/strata/tools -r /tmp/strata/requirements.lock" in command
    base = run_commands((GOLDEN / "base-bookworm" / "Dockerfile").read_text())
    assert len(base) == 1 and "python3 -m venv /opt/venv" in next(iter(base))
    assert run_commands('FROM x\nRUN ["/bin/echo", "hi"]\nRUN --network=host a \\\n  # a comment\n  b\n') == {
        "mount / from exec /bin/echo hi",
        "mount / from exec /bin/sh -c a b",
    }


def test_gc_finds_the_stages_of_strata_builds_and_leaves_everything_else(
    records: list[BuildRecord], commands: frozenset[str]
) -> None:
    found = strata_records(records, commands)
    by_id = {r.id[:12]: r for r in records}
    # Both halves of every cpu framework and tools build: the install stage and its final-stage COPY, as big.
    for install, final in [
        ("lsvkvv0flep2", "9fnkohq4l3oi"),  # tf2.13.1 framework, 1131 MB each
        ("0ytpn1y6iwb5", "0p04fab815vr"),  # tf2.10.1 framework
        ("kck3j2sf9lty", "c037jbvcj5jy"),  # tools tf2.13.1
        ("7flxqp8hm1hc", "ev168ffwiedr"),  # tools tf2.10.1
    ]:
        assert {install, final} <= ids(found)
        assert abs(by_id[install].size - by_id[final].size) < MB and by_id[final].size > 400 * MB
    # The bases (ADD rootfs.tar + venv) and the user layers.
    assert {"kidxfpqte3gb", "6cxs3wrk2poi", "i2ndxwv53mbx", "qrstlj9jkfi1", "k75uiol7vf5m"} <= ids(found)
    # The user layer a test extended with its own RUN (hocvvfkgayuv): its Strata steps (the user RUN, then the
    # WORKDIR) carry that foreign child, so the engine keeps them while it exists: not taken.
    assert not {"jspvepplqeaq", "4o7t6i6ty1zq"} & ids(found)
    # Not Strata's: the engine's images, contexts, other users' RUNs (also the one on top of a Strata step), probes.
    foreign = {"hocvvfkgayuv", "adorg39f0a5n", "3tdkgll6q6rl", "rd2gm2zwbuw0", "djr7jejqs13f", "ytwao2u6qpqt"}
    assert not ids(found) & foreign
    assert all(r.type == "regular" and not r.is_image and not r.shared and not r.in_use for r in found)
    assert sum(r.size for r in found) > 6_500 * MB
    assert sum(r.size for r in records if r.id[:12] not in ids(found) and not r.shared) < 250 * MB


def test_gc_without_the_matrix_s_commands_finds_nothing(records: list[BuildRecord]) -> None:
    assert strata_records(records, frozenset()) == []


def test_a_stage_of_copies_released_at_another_time_is_not_taken(
    records: list[BuildRecord], commands: frozenset[str]
) -> None:
    # The tf2.13.1 framework's final-stage COPY, had its build ended a minute apart from the install stage's.
    moved = [
        BuildRecord(**{**r.__dict__, "last_used": r.last_used + 60}) if r.id.startswith("9fnkohq4l3oi") else r
        for r in records
    ]
    assert "9fnkohq4l3oi" not in ids(strata_records(moved, commands))
    assert "lsvkvv0flep2" in ids(strata_records(moved, commands))


def test_a_build_s_own_records_are_its_stages_and_those_its_raw_image_alone_shared(
    records: list[BuildRecord],
) -> None:
    # tools-tf2.13.1-cpu built from 00:53:24; its raw image held the final stage until it was removed.
    trace = BuildTrace(
        at("00:53:24.5"), run_commands((GOLDEN / "tools-tf2.13.1-cpu" / "Dockerfile").read_text())
    )
    raw_layers = {"c037jbvcj5jy", "e0jj2ddz7i5c"}
    before = [
        BuildRecord(**{**r.__dict__, "shared": True}) if r.id[:12] in raw_layers else r for r in records
    ]
    assert ids(records_of_build(before, records, trace)) == {
        "jgbqro89ad9c",
        "kck3j2sf9lty",
        "c037jbvcj5jy",
        "e0jj2ddz7i5c",
    }
    # With the raw image still there (not removed, or in use), nothing is tied to this build: nothing goes.
    assert records_of_build(before, before, trace) == []
    # An install stage with the same RUN from another parent image (the same node of another matrix) is not this
    # build's, even when created in its time.
    twin = BuildRecord(**{**by_id(records, "kck3j2sf9lty").__dict__, "id": "twin", "parent": "elsewhere"})
    assert "twin" not in ids(records_of_build(before, [*records, twin], trace))
    # Builds that ran at the same time (the user layers from 00:54) are left to their own runs.
    assert not ids(records_of_build(before, records, trace)) & {
        "x7na4wrve724",
        "051imu1dc1br",
        "k75uiol7vf5m",
    }


def test_a_build_whose_steps_came_from_the_cache_takes_only_what_its_image_held_and_its_new_steps(
    records: list[BuildRecord],
) -> None:
    # At 01:39:50 a test rebuilt the tf2.13.1 user layer with `RUN echo house-events probe` appended: BuildKit took
    # the install stage's COPY and the whole final stage from the cache (records of 00:54), ran pip install again
    # (a new port) and the probe.
    user = (GOLDEN / "user-example-tf2.13.1-cpu" / "Dockerfile").read_text()
    trace = BuildTrace(at("01:39:49"), run_commands(user + "RUN echo house-events probe > /tmp/probe\n"))
    image_layers = {"8wrk6wn2sf9b", "i1cvytn3hfuy", "jspvepplqeaq", "4o7t6i6ty1zq", "hocvvfkgayuv"}
    before = [
        BuildRecord(**{**r.__dict__, "shared": True}) if r.id[:12] in image_layers else r for r in records
    ]
    assert ids(records_of_build(before, records, trace)) == image_layers | {"mix7f0qm08bi"}
    # The cached install-stage COPY (xls6ebd5epz8) and the first build's pip install (zc60mxnlvwoq) are older:
    # the first build's, not this one's.


def test_gc_takes_the_stages_only_removed_raw_images_shared(
    records: list[BuildRecord], commands: frozenset[str]
) -> None:
    before = [
        BuildRecord(**{**r.__dict__, "shared": True}) if r.id.startswith("ev168ffwiedr") else r
        for r in records
    ]
    assert ids(records_freed_by(before, records, commands)) == {"ev168ffwiedr", "r4s3th2aoca9"}
    assert records_freed_by(records, records, commands) == []


class PruneRecorder:
    """The engine API's prune call, as the tests see it: which filters were sent."""

    def __init__(self) -> None:
        self.filters: list[dict[str, list[str]]] = []
        self.api = self

    def prune_builds(self, filters: dict[str, list[str]]) -> dict[str, object]:
        self.filters.append(filters)
        (pattern,) = filters["id"]
        wanted = pattern.removeprefix("^(").removesuffix(")$").split("|")
        return {"CachesDeleted": wanted[:1], "SpaceReclaimed": 10}


def test_prune_names_exact_ids_in_batches_and_never_an_open_filter() -> None:
    engine = PruneRecorder()
    removed, reclaimed = prune_build_records(engine, [f"id{i:03d}x" for i in range(100)] + ["bad id!", ""])
    assert [len(f["id"][0].split("|")) for f in engine.filters] == [64, 36]
    assert all(f["id"][0].startswith("^(") and f["id"][0].endswith(")$") for f in engine.filters)
    assert removed == ["id000x", "id064x"] and reclaimed == 20
    assert prune_build_records(engine, []) == ([], 0) and len(engine.filters) == 2
