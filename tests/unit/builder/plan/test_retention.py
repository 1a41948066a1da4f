"""The deletion planner of `strata gc`: inventories in, what goes (and what it frees) out; no engine, no files."""

from __future__ import annotations

from pathlib import Path

from builder.plan.lockfile import DebPackage
from builder.plan.retention import (
    BUILD_CACHE,
    COMPRESSED_LAYERS,
    CONTAINERS,
    DEBS,
    IMAGES,
    ROOTFS,
    SCRATCH,
    WHEELS,
    CachedFile,
    EngineImage,
    Inventory,
    Needs,
    deb_file_name,
    freed_by_removing,
    needs_of,
    plan_gc,
    plans_of_every_profile,
    release_of,
)

REPO = Path(__file__).resolve().parents[4]
NS = "127.0.0.1:5000/strata/"
LABEL = "io.strata.content-hash"
NOW = 1_800_000_000.0


def image(
    name: str,
    refs: list[str],
    content_hash: str | None = "x",
    layers: list[tuple[str, int]] = (),  # type: ignore[assignment]
    in_use: bool = False,
    created: float = NOW - 86400,
) -> EngineImage:
    return EngineImage(
        id=f"sha256:{name}",
        refs=tuple(refs),
        labels={LABEL: content_hash} if content_hash else {},
        created=created,
        layers=tuple(layers),
        diff_ids=tuple(f"diff-{chain}" for chain, _ in layers),
        in_use=in_use,
    )


NEEDS = Needs(
    namespace_prefix=NS,
    cache_refs=frozenset({f"{NS}tensorflow:h-cur"}),
    content_hashes=frozenset({"cur"}),
    wheels=frozenset({"a" * 64}),
    rootfs=frozenset({"b" * 64}),
    debs=frozenset({"bash_5.2.15-2+b13_amd64.deb"}),
    keep_releases=0,
    now=NOW,
)


def test_release_of_reads_only_version_tags() -> None:
    assert release_of(f"{NS}tensorflow:2.13.1-cpu-py3.11-bookworm-r12") == 12
    assert release_of(f"{NS}base:bookworm-1700000000-r1") == 1
    assert release_of(f"{NS}tensorflow:h-0123abc-r1") is None  # a content tag never names a release
    assert release_of("127.0.0.1:5000/strata/tensorflow") is None  # the colon is the registry's port
    assert release_of(f"{NS}tensorflow:latest-gpu") is None


def test_images_of_the_plan_stay_and_unreachable_ones_go() -> None:
    current = image("cur", [f"{NS}tensorflow:h-cur", f"{NS}tensorflow:2.13.1-cpu-py3.11-bookworm-r3"], "cur")
    old = image("old", [f"{NS}tensorflow:h-old", f"{NS}tensorflow:2.13.1-cpu-py3.11-bookworm-r2"], "old")
    # Tagged only with an old content tag, but its label is a node's content hash: the plan needs it.
    relabelled = image("same", [f"{NS}tensorflow:h-elsewhere"], "cur")
    # Holding the node's version tag (the last build of this release) does not make an image the node's.
    moved_on = image("moved", [f"{NS}core:h-before", f"{NS}core:2.13.1-cpu-py3.11-bookworm-r3"], "before")
    plan = plan_gc(Inventory(images=[current, old, relabelled, moved_on]), NEEDS)
    assert plan.images == (old, moved_on)
    assert plan.kept.plan == 2


def test_only_strata_s_images_are_candidates() -> None:
    other_namespace = image("o1", ["127.0.0.1:5000/someone/tensorflow:h-old"])
    also_theirs = image("o2", [f"{NS}tensorflow:h-old2", "myteam/tf:latest"])
    unlabelled = image("o3", [f"{NS}tensorflow:handmade"], content_hash=None)
    other_registry = image("o4", ["registry.example/strata/tensorflow:h-old"])
    plan = plan_gc(Inventory(images=[other_namespace, also_theirs, unlabelled, other_registry]), NEEDS)
    assert plan.images == ()


def test_an_image_a_container_uses_stays() -> None:
    used = image("used", [f"{NS}tensorflow:h-old"], in_use=True)
    plan = plan_gc(Inventory(images=[used]), NEEDS)
    assert plan.images == () and plan.kept.in_use == 1


def test_keep_releases_keeps_the_newest_releases_images() -> None:
    images = [
        image(f"r{r}", [f"{NS}core:h-r{r}", f"{NS}core:2.13.1-cpu-py3.11-bookworm-r{r}"], f"r{r}")
        for r in (1, 2, 3, 5)
    ]
    keep_two = plan_gc(Inventory(images=images), Needs(**{**NEEDS.__dict__, "keep_releases": 2}))
    assert keep_two.kept_releases == (5, 3)
    assert {i.id for i in keep_two.images} == {"sha256:r1", "sha256:r2"}
    assert dict(keep_two.kept.releases) == {5: 1, 3: 1}
    assert {i.id for i in plan_gc(Inventory(images=images), NEEDS).images} == {i.id for i in images}


def test_raw_leftovers_of_the_matrix_s_nodes_go_once_no_run_can_still_need_them() -> None:
    stale = image("raw1", ["strata-build/tools-tf2.13.1-cpu:0123456789abcdef"], "cur", created=NOW - 7200)
    fresh = image("raw2", ["strata-build/tools-tf2.13.1-cpu:fedcba9876543210"], "cur", created=NOW - 60)
    foreign = image("raw3", ["strata-verify/someone-else:1"], "unknown", created=NOW - 7200)
    plan = plan_gc(Inventory(images=[stale, fresh, foreign]), NEEDS)
    assert plan.images == (stale,)


def test_freed_bytes_count_layers_only_removed_images_have_once() -> None:
    base = ("chain-base", 100)
    removed = [
        image("a", [f"{NS}x:h-a"], layers=[base, ("chain-a", 10), ("chain-shared", 7)]),
        image("b", [f"{NS}x:h-b"], layers=[base, ("chain-a", 10), ("chain-shared", 7)]),
    ]
    remaining = [image("c", [f"{NS}x:h-cur"], "cur", layers=[base])]
    assert freed_by_removing(removed, remaining) == 17
    plan = plan_gc(Inventory(images=[*removed, *remaining]), NEEDS)
    assert plan.bytes(IMAGES) == 17 and plan.count(IMAGES) == 2


def test_compressed_layers_of_images_that_stay_are_kept() -> None:
    current = image("cur", [f"{NS}x:h-cur"], "cur", layers=[("base", 1), ("top", 1)])
    old = image("old", [f"{NS}x:h-old"], "old", layers=[("base", 1), ("oldtop", 1)])
    entries = [CachedFile(f"diff-{c}", (Path(f"/c/{c}.gz"),), 5) for c in ("base", "top", "oldtop", "gone")]
    entries.append(CachedFile("", (Path("/c/.partial-x"),), 3))
    plan = plan_gc(Inventory(images=[current, old], compressed_layers=entries), NEEDS)
    assert [e.key for e in plan.files[COMPRESSED_LAYERS]] == ["diff-oldtop", "diff-gone", ""]
    assert plan.bytes(COMPRESSED_LAYERS) == 13


def test_cached_files_go_unless_a_lock_names_them() -> None:
    inventory = Inventory(
        records=[CachedFile("rec1", (), 500)],
        wheels=[CachedFile("a" * 64, (Path("/w/a"),), 10), CachedFile("c" * 64, (Path("/w/c"),), 20)],
        rootfs=[CachedFile("b" * 64, (Path("/r/b.tar"),), 30), CachedFile("d" * 64, (Path("/r/d.tar"),), 40)],
        debs=[
            CachedFile("bash_5.2.15-2+b13_amd64.deb", (Path("/d/1"),), 1),
            CachedFile("bash_5.2.15-2+b12_amd64.deb", (Path("/d/2"),), 2),
        ],
        scratch=[CachedFile("", (Path("/build/wheelhouse/session-x"),), 4)],
        containers=[CachedFile("c0ffee", (), 8)],
    )
    plan = plan_gc(inventory, NEEDS)
    assert [e.key for e in plan.files[WHEELS]] == ["c" * 64]
    assert [e.key for e in plan.files[ROOTFS]] == ["d" * 64]
    assert [e.key for e in plan.files[DEBS]] == ["bash_5.2.15-2+b12_amd64.deb"]
    assert plan.count(SCRATCH) == 1 and plan.bytes(BUILD_CACHE) == 500
    assert [e.key for e in plan.files[CONTAINERS]] == ["c0ffee"]  # every stopped install container goes
    assert plan.total_bytes == 500 + 20 + 40 + 2 + 4 + 8


def test_deb_file_names_are_apt_s() -> None:
    assert (
        deb_file_name(DebPackage("bsdutils", "1:2.38.1-5+deb12u3", "amd64"))
        == "bsdutils_1%3a2.38.1-5+deb12u3_amd64.deb"
    )


def test_the_real_matrix_needs_every_profile_s_nodes_and_every_lock_s_inputs() -> None:
    plans = plans_of_every_profile(REPO / "matrix.yaml")
    assert {p.matrix.profile for p in plans} == {"hermetic", "upstream"}
    needs = needs_of(plans, REPO / "locks", keep_releases=1, now=NOW)
    assert needs.namespace_prefix == "127.0.0.1:5000/strata/"
    for plan in plans:
        for node in plan.nodes:
            assert node.cache_ref in needs.cache_refs
            assert node.content_hash in needs.content_hashes
            if node.lock:
                assert {w.sha256 for w in node.lock.wheels} <= needs.wheels
    assert len(needs.rootfs) == 2 and "bash_5.2.15-2+b13_amd64.deb" in needs.debs
