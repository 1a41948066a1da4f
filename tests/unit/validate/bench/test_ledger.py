"""The SQLite ledger: repetitions round-trip, tags and digests resolve, history and fair sample pairing."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import StrataError
from validate.bench.ledger import Ledger, RunInfo, paired_samples
from validate.bench.metrics import DeviceKey, Repetition

CPU = {"cpu_model": "AMD EPYC", "tf_version": "2.13.1", "python": "3.11.7"}


def rep(
    run_id: str,
    image: str,
    image_id: str,
    value: float,
    n: int,
    *,
    workload: str = "matmul",
    started: str = "2025-01-01T00:00:00+00:00",
    env: dict[str, str] | None = None,
) -> Repetition:
    doc = {
        "workload": workload,
        "size": "tiny",
        "device": "cpu",
        "samples_per_step": 1,
        "device_count": 1,
        "steady_median_step_s": 1.0 / value,
        "step_times_s": [1.0 / value] * 8,
        "warmup_steps": 0,
        "steady": True,
        "cold_start_s": 5.0,
        "env": env or CPU,
    }
    return Repetition.from_result(
        doc,
        run_id=run_id,
        image=image,
        image_id=image_id,
        repo_digest=None,
        repetition=n,
        order_index=n,
        started_at=started,
    )


def run_info(run_id: str, images: list[str], created: str = "2025-01-01T00:00:00+00:00") -> RunInfo:
    return RunInfo(run_id, created, "cpu", "tiny", 3, 42, images, ["matmul"], [(images[0], "matmul", 0)])


def test_repetitions_round_trip_with_environment(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with Ledger.open(path) as ledger:
        ledger.record_run(run_info("r1", ["img:a"]))
        for i in range(3):
            ledger.add(rep("r1", "img:a", "sha256:aaaa1111", 100.0 + i, i))
    with Ledger.open(path, create=False) as ledger:
        stored = ledger.repetitions(image_id="sha256:aaaa1111")
        assert [r.samples_per_s for r in stored] == pytest.approx([100.0, 101.0, 102.0])
        assert stored[0].device == DeviceKey("cpu", "AMD EPYC", "")
        assert stored[0].result["env"]["tf_version"] == "2.13.1"
        assert [r.run_id for r in ledger.runs()] == ["r1"]
        assert ledger.runs()[0].schedule == [("img:a", "matmul", 0)]


def test_a_repetition_is_stored_once(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        ledger.record_run(run_info("r1", ["img:a"]))
        ledger.add(rep("r1", "img:a", "sha256:aaaa1111", 100.0, 0))
        with pytest.raises(Exception, match="UNIQUE"):
            ledger.add(rep("r1", "img:a", "sha256:aaaa1111", 100.0, 0))


def test_a_run_id_is_recorded_once(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        ledger.record_run(run_info("r1", ["img:a"]))
        with pytest.raises(StrataError, match="run r1 is already recorded"):
            ledger.record_run(run_info("r1", ["img:a"]))


def test_resolve_by_tag_full_id_short_id_and_ambiguity(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        ledger.record_run(run_info("r1", ["img:a"]))
        ledger.add(rep("r1", "img:a", "sha256:abcdef111111", 1.0, 0, started="2025-01-01T00:00:00+00:00"))
        ledger.record_run(run_info("r2", ["img:a"], "2025-02-01T00:00:00+00:00"))
        ledger.add(rep("r2", "img:a", "sha256:abcdef222222", 1.0, 0, started="2025-02-01T00:00:00+00:00"))
        assert ledger.resolve("img:a") == "sha256:abcdef222222"  # the tag moved; latest wins
        assert ledger.resolve("sha256:abcdef111111") == "sha256:abcdef111111"
        assert ledger.resolve("abcdef1111") == "sha256:abcdef111111"
        with pytest.raises(StrataError, match="several images"):
            ledger.resolve("abcdef")
        with pytest.raises(StrataError, match="img:missing: no benchmark results"):
            ledger.resolve("img:missing")


def test_history_follows_a_tag_across_digests(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        ledger.record_run(run_info("r1", ["img:a"]))
        ledger.record_run(run_info("r2", ["img:a"], "2025-02-01T00:00:00+00:00"))
        for i, v in enumerate([100.0, 102.0, 101.0]):
            ledger.add(rep("r1", "img:a", "sha256:old", v, i, started="2025-01-01T00:00:00+00:00"))
            ledger.add(rep("r2", "img:a", "sha256:new", v * 0.9, i, started="2025-02-01T00:00:00+00:00"))
        points = ledger.history("img:a")
    assert [(p.image_id, p.run_id, p.repetitions) for p in points] == [
        ("sha256:old", "r1", 3),
        ("sha256:new", "r2", 3),
    ]
    assert points[0].median_samples_per_s == pytest.approx(101.0)
    assert points[1].median_samples_per_s == pytest.approx(90.9)


def test_opening_a_missing_ledger_without_create_is_a_one_line_error(tmp_path: Path) -> None:
    with (
        pytest.raises(StrataError, match="no benchmark ledger here"),
        Ledger.open(tmp_path / "absent.sqlite", create=False),
    ):
        pass


def test_a_file_that_is_not_a_ledger_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_text("not sqlite at all, just text " * 100)
    with pytest.raises(StrataError, match="not a usable benchmark ledger"), Ledger.open(path):
        pass


def test_pairing_prefers_the_latest_shared_interleaved_run() -> None:
    ref = [rep("r1", "a", "sha256:a", 1.0, i) for i in range(3)] + [
        rep("r2", "a", "sha256:a", 2.0, i) for i in range(3)
    ]
    cand = [rep("r2", "b", "sha256:b", 2.0, i, started="2025-03-01T00:00:00+00:00") for i in range(3)]
    ref_s, cand_s, source = paired_samples(ref, cand)
    assert {r.run_id for r in ref_s} == {"r2"} and len(cand_s) == 3 and source == "run r2"


def test_pairing_across_runs_requires_the_same_device() -> None:
    other = {"cpu_model": "Intel Xeon"}
    ref = [rep("r1", "a", "sha256:a", 1.0, i, env=other) for i in range(3)]
    cand = [rep("r2", "b", "sha256:b", 1.0, i) for i in range(3)]
    assert paired_samples(ref, cand)[2] == "no device and size in common"
    ref += [rep("r1", "a", "sha256:a", 1.0, i + 3) for i in range(3)]
    ref_s, cand_s, source = paired_samples(ref, cand)
    assert len(ref_s) == len(cand_s) == 3 and all(r.device.model == "AMD EPYC" for r in ref_s)
    assert "not interleaved" in source
