"""The wheelhouse as `strata gc` lists it: one entry per wheel keyed by its sha256, partial downloads apart."""

from __future__ import annotations

from pathlib import Path

from builder.lock.fetch import list_wheelhouse, prune_wheelhouse


def test_wheels_are_keyed_by_sha256_and_partial_downloads_by_nothing(tmp_path: Path) -> None:
    kept, gone = "a" * 64, "b" * 64
    for sha, size in ((kept, 100), (gone, 50)):
        (tmp_path / "wheels" / sha).mkdir(parents=True)
        (tmp_path / "wheels" / sha / f"pkg-{sha[:1]}-1.0-py3-none-any.whl").write_bytes(b"w" * size)
    (tmp_path / "wheels" / kept / ".part-x1").write_bytes(b"p" * 7)
    (tmp_path / "wheels" / "stray-file").write_bytes(b"s" * 3)
    entries = list_wheelhouse(tmp_path)
    by_key = {e.key: e for e in entries if e.key}
    assert {k: e.size for k, e in by_key.items()} == {kept: 100, gone: 50}
    assert sorted((p.name, e.size) for e in entries if not e.key for p in e.paths) == [
        (".part-x1", 7),
        ("stray-file", 3),
    ]
    assert prune_wheelhouse([by_key[gone], *(e for e in entries if not e.key)]) == 60
    assert [e.key for e in list_wheelhouse(tmp_path)] == [kept]
    assert (tmp_path / "wheels" / kept / "pkg-a-1.0-py3-none-any.whl").is_file()
    assert list_wheelhouse(tmp_path / "nowhere") == []
