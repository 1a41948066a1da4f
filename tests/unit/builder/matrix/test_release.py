"""bump_release edits `release: N` in place, atomically, through no name a checkout could plant."""

from __future__ import annotations

from pathlib import Path

from builder.matrix.release import bump_release


def test_bump_keeps_layout_and_mode_and_follows_no_planted_temporary_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    matrix = repo / "matrix.yaml"
    matrix.write_text("schema: 1\nrelease: 9   # bumped by strata lock\nusers: []\n")
    matrix.chmod(0o640)
    (repo / "matrix.tmp").symlink_to(victim)  # the name the old code wrote through
    assert bump_release(matrix) == 10
    assert matrix.read_text() == "schema: 1\nrelease: 10   # bumped by strata lock\nusers: []\n"
    assert matrix.stat().st_mode & 0o777 == 0o640
    assert victim.read_text() == "keep\n"
    assert sorted(p.name for p in repo.iterdir()) == ["matrix.tmp", "matrix.yaml"]
