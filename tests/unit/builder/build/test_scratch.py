"""What a killed run leaves: gc lists every entry of the scratch directories, and nothing else of build/."""

from __future__ import annotations

from pathlib import Path

from builder.build.scratch import list_scratch
from builder.settings import resolve_settings


def test_scratch_is_the_served_wheelhouses_contexts_temporaries_and_verify_scratch(tmp_path: Path) -> None:
    settings = resolve_settings({"STRATA_HOME": str(tmp_path / "home")}, tmp_path / "repo" / "matrix.yaml")
    leftovers = [
        settings.work_dir / "wheelhouse" / "session-abc" / "node" / "w.whl",
        settings.work_dir / "context" / "tools-tf2.13.1-cpu" / "requirements.lock",
        settings.work_dir / "strata-verify-xyz" / "n" / "index.json",
        settings.cache_dir / "tmp" / "rootfs-0123-abcd" / "hook.sh",
        settings.tmp_dir / "push-1" / "blob",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 5)
    (settings.work_dir / "logs").mkdir()
    (settings.work_dir / "logs" / "base-bookworm.log").write_text("kept: a log is the last run's record")
    entries = list_scratch(settings)
    assert {p for e in entries for p in e.paths} == {
        settings.work_dir / "wheelhouse" / "session-abc",
        settings.work_dir / "context" / "tools-tf2.13.1-cpu",
        settings.work_dir / "strata-verify-xyz",
        settings.cache_dir / "tmp" / "rootfs-0123-abcd",
        settings.tmp_dir / "push-1",
    }
    assert all(e.key == "" and e.size == 5 for e in entries)


def test_no_scratch_when_nothing_ran(tmp_path: Path) -> None:
    settings = resolve_settings({"STRATA_HOME": str(tmp_path / "home")}, tmp_path / "repo" / "matrix.yaml")
    assert list_scratch(settings) == []
