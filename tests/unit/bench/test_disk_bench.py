"""The pure helpers of bench/disk.py: layer chain ids, unique bytes over shared layers and hard-linked files, what
is Strata's, the locked inputs, the table and the verdict."""

from __future__ import annotations

import doctest
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from builder.plan.retention import CachedFile, Needs
from builder.settings import Settings

REPO = Path(__file__).resolve().parents[3]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_disk", REPO / "bench" / "disk.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _load()

PREFIX = "127.0.0.1:5000/strata/"
HASH_LABEL = {"io.strata.content-hash": "abc"}
NEEDS = Needs(
    namespace_prefix=PREFIX,
    cache_refs=frozenset(),
    content_hashes=frozenset(),
    wheels=frozenset({"w" * 64}),
    rootfs=frozenset({"r" * 64}),
    debs=frozenset({"bash_5.2_amd64.deb"}),
)


def image(
    id: str, chains: tuple[str, ...], refs: tuple[str, ...] = (), labels: dict[str, str] | None = None
) -> Any:
    return bench.ImageLayers(id, refs, labels or {}, chains)


def test_chain_ids_are_the_layer_store_keys_computed_by_hand() -> None:
    # printf '%s' 'sha256:aaaa sha256:bbbb' | sha256sum, then the same with that result and sha256:cccc
    ab = "sha256:2c4d8760379f05d0ad1ed610712309f0114e7345e6e6a351494cff030ffdf197"
    abc = "sha256:10f847b3ece58353f298bec20c58125235b631360ad43ac162131980750211ff"
    assert bench.chain_ids(["sha256:aaaa", "sha256:bbbb", "sha256:cccc"]) == ["sha256:aaaa", ab, abc]


def test_a_layer_two_images_share_counts_once() -> None:
    sizes = {"base": 100, "tf": 5, "user": 7}
    parent = image("p", ("base", "tf"))
    child = image("c", ("base", "tf", "user"))
    sibling = image("s", ("base",))
    assert bench.unique_layer_bytes([parent, child, sibling], sizes) == 112  # not 100+5 + 100+5+7 + 100
    assert bench.unique_layer_bytes([parent], sizes) == 105
    assert bench.unique_layer_bytes([], sizes) == 0


def test_a_layer_without_a_size_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="c: no size for layer user"):
        bench.unique_layer_bytes([image("c", ("base", "user"))], {"base": 1})


@pytest.mark.parametrize(
    ("refs", "labels", "ours"),
    [
        ((PREFIX + "tensorflow:h-1", PREFIX + "tensorflow:2.13.1-cpu-r2"), HASH_LABEL, True),
        ((PREFIX + "tensorflow:h-1",), {}, False),  # no Strata label: someone else's image in our namespace
        ((PREFIX + "tensorflow:h-1", "strata-test/bench:slow"), HASH_LABEL, False),  # also someone else's tag
        (("strata-build/tf2.13.1-cpu-py3.11:run-1",), {}, True),  # raw build image, whatever its label
        (("strata-verify/x:1", "strata-build/x:1"), {}, True),
        (("strata-build/x:1", "other/x:1"), HASH_LABEL, False),
        ((), HASH_LABEL, False),  # untagged: nobody's for sure
        (("docker.io/library/debian:12",), {}, False),
    ],
)
def test_what_is_strata_s_follows_gc(refs: tuple[str, ...], labels: dict[str, str], ours: bool) -> None:
    assert bench.is_strata_scope(image("i", ("l",), refs, labels), NEEDS) is ours


def test_missing_nodes_and_images_of_go_by_reference() -> None:
    images = [
        image("a", ("l1",), (PREFIX + "base:h-1",)),
        image("b", ("l1", "l2"), (PREFIX + "tf:h-2", "x:1")),
    ]
    needed = [("base", PREFIX + "base:h-1"), ("tf", PREFIX + "tf:h-2"), ("user", PREFIX + "user:h-3")]
    assert bench.missing_nodes(needed, images) == ["user"]
    assert [i.id for i in bench.images_of([PREFIX + "tf:h-2", "x:1"], images)] == ["b"]


def test_hard_linked_files_count_once_symlinks_not_at_all(tmp_path: Path) -> None:
    wheels, scratch = tmp_path / "wheels", tmp_path / "scratch"
    wheels.mkdir()
    scratch.mkdir()
    (wheels / "tf.whl").write_bytes(b"x" * 1000)
    os.link(wheels / "tf.whl", scratch / "tf.whl")  # a served wheelhouse hard-links the cache
    (scratch / "ctx.tar").write_bytes(b"y" * 30)
    (scratch / "link").symlink_to(wheels / "tf.whl")
    totals = bench.bytes_by_category(
        {"wheels": bench.walk_files([wheels]), "scratch": bench.walk_files([scratch, tmp_path / "gone"])}
    )
    assert totals == {"wheels": 1000, "scratch": 30}
    assert list(bench.walk_files([scratch / "link"])) == []  # a symlink named directly is not followed either


def test_the_state_cache_is_split_by_kind(tmp_path: Path) -> None:
    settings = Settings(state_root=tmp_path / "home", matrix_file=tmp_path / "matrix.yaml")
    for name in ("wheels", "rootfs", "debs", "compressed-layers", "tmp", "mystery"):
        (settings.cache_dir / name).mkdir(parents=True)
    (tmp_path / "build" / "strata-verify-1").mkdir(parents=True)
    groups = bench.state_cache_groups(settings)
    assert groups["other"] == [settings.cache_dir / "mystery"]
    assert settings.cache_dir / "tmp" in groups["scratch"]
    assert tmp_path / "build" / "strata-verify-1" in groups["scratch"]
    assert groups["compressed layers"] == [settings.cache_dir / "compressed-layers"]
    assert list(groups) == list(bench.STATE_CATEGORIES)


def test_locked_entries_are_what_the_locks_name() -> None:
    def entry(key: str) -> CachedFile:
        return CachedFile(key, (Path(f"/c/{key or 'partial'}"),), 1)

    wheels = [entry("w" * 64), entry("v" * 64), entry("")]
    rootfs = [entry("r" * 64), entry("s" * 64)]
    debs = [entry("bash_5.2_amd64.deb"), entry("bash_5.1_amd64.deb")]
    locked = bench.locked_entries(wheels, rootfs, debs, NEEDS)
    assert [e.key for e in locked] == ["w" * 64, "r" * 64, "bash_5.2_amd64.deb"]


def point(name: str, images: int, build_cache: int, wheels: int, needed: int, locked: int, **kw: Any) -> Any:
    return bench.Measurement(name, images, build_cache, 0, {"wheels": wheels}, needed, locked, **kw)


GB = 10**9


def test_total_reference_and_ratio() -> None:
    m = point(bench.AFTER_BUILD_2, 10 * GB, 3 * GB, 2 * GB, 8 * GB, 2 * GB)
    assert (m.total, m.reference, m.ratio) == (15 * GB, 10 * GB, 1.5)
    table = bench.summary_table([m])
    assert table.splitlines()[2].split() == [
        "after",
        "build",
        "2",
        "10.0",
        "GB",
        "3.0",
        "GB",
        "2.0",
        "GB",
    ] + [
        "15.0",
        "GB",
        "10.0",
        "GB",
        "1.50",
    ]


def test_the_verdict_is_on_the_point_after_gc() -> None:
    builds = point(bench.AFTER_BUILD_2, 12 * GB, 3 * GB, 2 * GB, 8 * GB, 2 * GB)
    met = point(bench.AFTER_GC, 8 * GB, 0, 2 * GB, 8 * GB, 2 * GB)
    missed = point(bench.AFTER_GC, 8 * GB, GB // 2, 2 * GB, 8 * GB, 2 * GB)
    assert bench.verdict([builds, met]).endswith(": MET: total 10.0 GB, reference 10.0 GB, ratio 1.00")
    assert bench.verdict([builds, missed]).endswith(": MISSED: total 10.5 GB, reference 10.0 GB, ratio 1.05")
    assert bench.verdict([builds], "--skip-gc").endswith(": not measured (--skip-gc)")
    incomplete = point(bench.AFTER_GC, 8 * GB, 0, 2 * GB, 4 * GB, 2 * GB, missing=("tf2.13.1-gpu-py3.11",))
    assert "not measured (1 image(s) the matrix needs are not in the engine)" in bench.verdict([incomplete])
    table = bench.summary_table([incomplete])
    assert "6.0 GB*" in table  # a reference without a needed image is marked


def test_only_a_missing_image_after_a_build_fails_the_run() -> None:
    before = point(bench.BEFORE, 0, 0, 0, 0, 0, missing=("base-bookworm",))
    built = point(bench.AFTER_BUILD_1, 1, 0, 0, 1, 0)
    assert bench.failed_after_build([before, built]) == []
    gone = point(bench.AFTER_GC, 1, 0, 0, 1, 0, missing=("user-example-tf2.13.1-gpu",))
    assert bench.failed_after_build([before, built, gone]) == [gone]


def test_gc_freed_line_reads_gc_s_json_document() -> None:
    document = {
        "schema": "strata.gc/1",
        "dry_run": False,
        "categories": {
            "images": {"count": 3, "bytes": 4_200_000_000},
            "build cache": {"count": 12, "bytes": 1_500_000_000},
            "wheels": {"count": 0, "bytes": 0},
        },
        "total": {"count": 15, "bytes": 5_700_000_000},
        "foreign_build_cache": {"records": 4, "bytes": 700_000_000},
        "problems": [],
    }
    assert bench.gc_freed_line(document) == (
        "gc freed 5.7 GB: images 3 (4.2 GB), build cache 12 (1.5 GB); "
        "left 4 build cache record(s) not tied to a Strata build (700.0 MB)"
    )


class _Api:
    """The two calls read_engine makes, answering from a table (the integration is the real engine's run)."""

    def __init__(self, images: dict[str, tuple[list[str], list[str], int]]) -> None:
        self._images = images  # id -> (tags, diff_ids, Size)

    def images(self, all: bool = False) -> list[dict[str, Any]]:
        return [{"Id": i, "RepoTags": tags, "Labels": {}} for i, (tags, _, _) in self._images.items()]

    def inspect_image(self, image_id: str) -> dict[str, Any]:
        _, diff_ids, size = self._images[image_id]
        return {"RootFS": {"Layers": diff_ids}, "Size": size}


def test_read_engine_takes_layer_sizes_from_the_layer_store_and_checks_them(tmp_path: Path) -> None:
    a, b = "sha256:aaaa", "sha256:bbbb"
    ab = "sha256:2c4d8760379f05d0ad1ed610712309f0114e7345e6e6a351494cff030ffdf197"
    for chain, size in ((a, 100), (ab, 5)):
        (tmp_path / chain.removeprefix("sha256:")).mkdir()
        (tmp_path / chain.removeprefix("sha256:") / "size").write_text(f"{size}")
    client = SimpleNamespace(
        api=_Api({"base": (["b:1"], [a], 100), "tf": (["t:1", "<none>:<none>"], [a, b], 104)})
    )
    images, sizes, notes = bench.read_engine(client, tmp_path)
    assert sizes == {a: 100, ab: 5}
    assert [(i.id, i.refs, i.chains) for i in images] == [("base", ("b:1",), (a,)), ("tf", ("t:1",), (a, ab))]
    assert notes == ["tf: layers add up to 105 bytes, the engine says 104"]


def test_the_doc_examples_hold() -> None:
    result = doctest.testmod(bench, verbose=False)
    assert result.attempted >= 3 and result.failed == 0


def test_a_missing_matrix_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert bench.main(["-f", str(tmp_path / "none.yaml"), "--no-build"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bench: {tmp_path / 'none.yaml'}: matrix file not found"]


def test_run_strata_logs_the_command_and_its_output(tmp_path: Path) -> None:
    log, out = tmp_path / "logs" / "help.log", tmp_path / "logs" / "help.out"
    assert bench.run_strata("strata gc --help", ["gc", "--help"], log, out) >= 0
    assert log.read_text().startswith(f"# {sys.executable} -m cli.main gc --help\n")
    assert "--keep-releases N" in out.read_text() and "--keep-releases" not in log.read_text()
    together = tmp_path / "together.log"
    bench.run_strata("strata gc --help", ["gc", "--help"], together)
    text = together.read_text()
    assert text.startswith("# ") and "--keep-releases N" in text  # the header is kept, not overwritten


def test_a_failed_strata_run_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(bench.BenchError, match=r"^strata frobnicate failed \(exit 2\): .*invalid choice"):
        bench.run_strata("strata frobnicate", ["frobnicate"], tmp_path / "f.log")
