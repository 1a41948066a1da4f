"""The engine side of `strata gc` that needs no engine: layer ids and sizes, removing listed cache entries."""

from __future__ import annotations

import hashlib
from pathlib import Path

from builder.engine.gc import chain_ids, layer_sizes, remove_cached_files, tree_size
from builder.plan.retention import CachedFile


def test_chain_ids_follow_the_oci_image_spec() -> None:
    a, b, c = (f"sha256:{x * 64}" for x in "abc")
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == [a, ab, abc]
    assert chain_ids([]) == []


def test_layer_sizes_come_from_history_when_its_sized_steps_are_the_layers() -> None:
    # A Strata tools image: metadata steps have size 0, every layer a size (oldest first).
    history = [113_045_897, 0, 34_244_079, 0, 0, 0, 1_131_665_582, 51, 0, 0, 0, 538_116_231, 47, 0, 0, 0]
    sizes = layer_sizes(history, 6, sum(history))
    assert sizes == [113_045_897, 34_244_079, 1_131_665_582, 51, 538_116_231, 47]
    # An empty layer makes the count differ: the whole size goes on the top layer.
    assert layer_sizes([10, 0, 5], 3, 15) == [0, 0, 15]
    assert layer_sizes([], 0, 0) == []


def test_remove_cached_files_deletes_files_and_trees_and_counts_their_listed_size(tmp_path: Path) -> None:
    tree = tmp_path / "session-1"
    (tree / "node").mkdir(parents=True)
    (tree / "node" / "w.whl").write_bytes(b"x" * 10)
    file = tmp_path / "f.gz"
    file.write_bytes(b"y" * 4)
    assert tree_size(tree) == 10 and tree_size(file) == 4
    kept = tmp_path / "kept"
    kept.write_text("k")
    freed = remove_cached_files([CachedFile("", (tree,), 10), CachedFile("", (file, tmp_path / "gone"), 4)])
    assert freed == 14
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
