"""The engine side of `strata gc` that needs no engine: layer ids and sizes, removing listed cache entries."""

from __future__ import annotations

import hashlib
from pathlib import Path

from builder.engine.gc import LayerFacts, chain_ids, layer_sizes, remove_cached_files, tree_size
from builder.plan.retention import CachedFile


def test_chain_ids_follow_the_oci_image_spec() -> None:
    a, b, c = (f"sha256:{x * 64}" for x in "abc")
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == [a, ab, abc]
    assert chain_ids([]) == []


def test_layer_sizes_come_from_image_sizes_and_exact_histories() -> None:
    base = LayerFacts(("b1", "b2"), 147, (113, 0, 34, 0))
    # A Strata tools image on the base: metadata steps have size 0, every layer one sized step (oldest first).
    tools = LayerFacts(("b1", "b2", "t1", "t2"), 1817, (113, 0, 34, 0, 1131, 0, 539, 0))
    # A user image whose history has a layer of 0 bytes: its history cannot be matched to its layers.
    user = LayerFacts(("b1", "b2", "t1", "t2", "u1", "u2", "u3"), 1820, (113, 34, 1131, 539, 0, 2, 1, 0))
    sizes = layer_sizes([base, tools, user])
    assert sizes == {"b1": 113, "b2": 34, "t1": 1131, "t2": 539, "u1": 0, "u2": 0, "u3": 3}
    assert sum(sizes[c] for c in user.chains) == user.size
    # Two images sharing layers no image ends at: the shared part is known only from an exact history.
    left = LayerFacts(("s1", "l1"), 110, (100, 10))
    right = LayerFacts(("s1", "r1"), 120, (100, 0, 0))  # an empty layer: not matched
    assert layer_sizes([left, right]) == {"s1": 100, "l1": 10, "r1": 20}
    assert layer_sizes([]) == {}


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
