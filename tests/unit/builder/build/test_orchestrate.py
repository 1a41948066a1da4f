"""The build's decisions without an engine: which nodes the stores already have (in-memory stores stand in for
the engine and the registry cache) and the order `_run_dag` builds the rest in (a build function stands in for
the engine build)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO

import pytest

from builder.build.orchestrate import (
    BuildOptions,
    NodeOutcome,
    _run_dag,
    _within_budget,
    discard_pause,
    gather_from_stores,
)
from builder.errors import StrataError
from builder.events import NodeStatus
from builder.oci.image import Image, LayerReader, make_image
from builder.oci.store import ImageStore, Stored
from builder.plan.budgets import Budget
from builder.plan.graph import LABEL_HASH, LayerNode

REGISTRY = "127.0.0.1:5000"


def node(node_id: str, parent: str | None = None) -> LayerNode:
    content_hash = f"{node_id}-hash"
    return LayerNode(
        id=node_id,
        layer="tools",
        parent=parent,
        cells=("c-cpu",),
        dockerfile="",
        requirements=(),
        lock_path=None,
        lock=None,
        lock_inputs="",
        content_hash=content_hash,
        tags=(f"{REGISTRY}/strata/{node_id}:1.0-r1",),
        aliases=(),
        cache_ref=f"{REGISTRY}/strata/{node_id}:h-{content_hash}",
        python="3.11",
        os_name="bookworm",
        base_image=None,
        rootfs=None,
    )


class NoLayers:
    """Storage of an image without layers: nothing to open."""

    def open_layer(self, index: int) -> AbstractContextManager[LayerReader]:
        raise AssertionError("the build never reads a layer of a stored image")

    def open_layer_tar(self, index: int) -> AbstractContextManager[IO[bytes]]:
        raise AssertionError("the build never reads a layer of a stored image")

    def stored_layer_size(self, index: int) -> tuple[int, bool]:
        raise AssertionError("the build never reads a layer of a stored image")


def image_of(n: LayerNode, label: str | None = None) -> Image:
    labels = {LABEL_HASH: n.content_hash if label is None else label}
    config = json.dumps({"config": {"Labels": labels}, "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    return make_image(n.cache_ref, config, NoLayers(), 0)


@dataclass
class MemoryStore:
    """An image store in a dict: content tag or tag -> image."""

    name: str
    images: dict[str, Image] = field(default_factory=dict)
    fail_lookups: bool = False
    puts: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    closed: bool = False

    def find(self, content_ref: str) -> str | None:
        if self.fail_lookups:
            raise StrataError(f"registry {REGISTRY} unreachable (connection refused)")
        return content_ref if content_ref in self.images else None

    def get(self, ref: str) -> Image:
        return self.images[ref]

    def put(self, image: Image, tags: Sequence[str]) -> Stored:
        self.puts.append((image.config_digest, tuple(tags)))
        for tag in tags:
            self.images[tag] = image
        return Stored(image.config_digest, 7)

    def tag(self, ref: str, tags: Sequence[str]) -> Stored:
        return self.put(self.images[ref], tags)

    def untag(self, image_id: str, tags: Sequence[str]) -> None:
        for tag in tags:
            if tag in self.images and self.images[tag].config_digest == image_id:
                del self.images[tag]

    def close(self) -> None:
        self.closed = True


def opener(store: ImageStore, opened: list[str]) -> Callable[[], ImageStore]:
    def open_store() -> ImageStore:
        opened.append(store.name)
        return store

    return open_store


def test_nothing_is_built_that_a_store_has() -> None:
    held, cached, missing = node("held"), node("cached", "held"), node("missing", "cached")
    engine = MemoryStore("engine", {held.cache_ref: image_of(held)})
    registry = MemoryStore("registry cache", {cached.cache_ref: image_of(cached)})
    opened: list[str] = []
    options = BuildOptions(caches=[opener(registry, opened)])

    outcomes, todo = gather_from_stores([held, cached, missing], engine, options)

    assert [n.id for n in todo] == ["missing"]
    assert {k: o.status for k, o in outcomes.items()} == {"held": "cached", "cached": "pulled"}
    # Both now hold every tag a build gives them; the pulled one went into the engine by `put`.
    assert engine.puts == [
        (image_of(held).config_digest, (held.cache_ref, *held.tags)),
        (image_of(cached).config_digest, (cached.cache_ref, *cached.tags)),
    ]
    assert outcomes["cached"].image_id == image_of(cached).config_digest
    assert opened == ["registry cache"] and registry.closed


def test_a_build_the_engine_answers_never_opens_the_registry() -> None:
    nodes = [node("a"), node("b", "a")]
    engine = MemoryStore("engine", {n.cache_ref: image_of(n) for n in nodes})
    opened: list[str] = []
    registry = MemoryStore("registry cache")

    outcomes, todo = gather_from_stores(nodes, engine, BuildOptions(caches=[opener(registry, opened)]))

    assert todo == [] and [o.status for o in outcomes.values()] == ["cached", "cached"]
    assert opened == []


def test_force_asks_no_store() -> None:
    a = node("a")
    engine = MemoryStore("engine", {a.cache_ref: image_of(a)})
    outcomes, todo = gather_from_stores([a], engine, BuildOptions(force=True))
    assert (outcomes, todo) == ({}, [a]) and engine.puts == []


def test_a_cache_that_is_off_or_failing_is_one_warning_and_the_node_is_built() -> None:
    a, b = node("a"), node("b", "a")
    down = MemoryStore("registry cache", {a.cache_ref: image_of(a)}, fail_lookups=True)
    warnings: list[str] = []
    options = BuildOptions(caches=[lambda: None, lambda: down], warn=warnings.append)

    outcomes, todo = gather_from_stores([a, b], MemoryStore("engine"), options)

    assert (outcomes, [n.id for n in todo]) == ({}, ["a", "b"])
    assert warnings[0] == (
        f"registry cache for a unavailable, building instead: registry {REGISTRY} unreachable (connection refused)"
    )
    assert len(warnings) == 2 and "\n" not in "".join(warnings)


def test_an_image_under_the_content_tag_with_another_hash_is_not_put_but_built() -> None:
    a = node("a")
    registry = MemoryStore("registry cache", {a.cache_ref: image_of(a, label="someone-else")})
    engine = MemoryStore("engine")
    warnings: list[str] = []

    outcomes, todo = gather_from_stores(
        [a], engine, BuildOptions(caches=[lambda: registry], warn=warnings.append)
    )

    assert (outcomes, todo) == ({}, [a]) and engine.puts == []
    assert warnings == [
        f"registry cache for a: {a.cache_ref} is not this node's image "
        f"(its {LABEL_HASH} label is 'someone-else', not a-hash); building instead"
    ]


class Builds:
    """A build function that records what it built, when, and fails the nodes it is told to."""

    def __init__(
        self, failing: Sequence[str] = (), during: Callable[[LayerNode], None] = lambda n: None
    ) -> None:
        self.failing = set(failing)
        self.during = during
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []

    def __call__(self, n: LayerNode) -> NodeOutcome:
        with self.lock:
            self.events.append(("start", n.id))
        self.during(n)
        with self.lock:
            self.events.append(("end", n.id))
        status = NodeStatus.FAILED if n.id in self.failing else NodeStatus.BUILT
        return NodeOutcome(n.id, status, message=f"node {n.id}: boom" if status is NodeStatus.FAILED else "")

    def started(self) -> list[str]:
        return [node_id for what, node_id in self.events if what == "start"]


def run(nodes: list[LayerNode], build: Builds, **options: object) -> dict[str, NodeOutcome]:
    outcomes: dict[str, NodeOutcome] = {}
    _run_dag(nodes, BuildOptions(**options), outcomes, build)  # type: ignore[arg-type]
    return outcomes


def test_a_failed_node_skips_its_descendants() -> None:
    base, mid, top = node("base"), node("mid", "base"), node("top", "mid")
    build = Builds(failing=["base"])

    outcomes = run([base, mid, top], build, keep_going=True)

    assert build.started() == ["base"]
    assert {k: (o.status, o.message) for k, o in outcomes.items()} == {
        "base": ("failed", "node base: boom"),
        "mid": ("skipped", "parent base failed"),
        "top": ("skipped", "parent mid skipped"),
    }


@pytest.mark.parametrize("keep_going", [False, True])
def test_keep_going_builds_independent_nodes_after_a_failure(keep_going: bool) -> None:
    broken, broken_child, other, other_child = (
        node("broken"),
        node("bc", "broken"),
        node("other"),
        node("oc", "other"),
    )
    build = Builds(failing=["broken"])

    outcomes = run([broken, broken_child, other, other_child], build, jobs=1, keep_going=keep_going)

    assert outcomes["broken"].status == "failed" and outcomes["bc"].status == "skipped"
    if keep_going:
        assert build.started() == ["broken", "other", "oc"]
        assert (outcomes["other"].status, outcomes["oc"].status) == ("built", "built")
    else:
        assert build.started() == ["broken"]
        assert {outcomes[k].message for k in ("other", "oc")} == {"stopped after an earlier failure"}


def test_nodes_outside_the_run_count_as_parents_by_their_outcome() -> None:
    child = node("child", "held")
    outcomes = {"held": NodeOutcome("held", NodeStatus.PULLED)}
    _run_dag([child], BuildOptions(), outcomes, Builds())
    assert outcomes["child"].status == "built"


def test_jobs_build_independent_nodes_side_by_side_and_children_after_their_parents() -> None:
    base = node("base")
    left, right = node("left", "base"), node("right", "base")
    left_top, right_top = node("left-top", "left"), node("right-top", "right")
    both_running = threading.Barrier(2, timeout=10)

    def during(n: LayerNode) -> None:
        if n.id in ("left", "right"):
            both_running.wait()  # raises BrokenBarrierError unless the two really run at once
        time.sleep(0.01)

    build = Builds(during=during)
    outcomes = run([base, left, left_top, right, right_top], build, jobs=2)

    assert {o.status for o in outcomes.values()} == {"built"}
    position = {event: i for i, event in enumerate(build.events)}
    for n in (left, right, left_top, right_top):
        assert position[("end", str(n.parent))] < position[("start", n.id)], build.events


def test_a_child_starts_once_its_running_parent_is_staged_and_the_staged_parent_leaves_its_slot() -> None:
    # jobs=1: the parent offers its stand-in (staged), then waits until its child has started; without the early
    # start the child would wait for the parent's end, and the parent's wait would time out.
    parent, child = node("parent"), node("child", "parent")
    staged: set[str] = set()
    child_started = threading.Event()

    def during(n: LayerNode) -> None:
        if n.id == "parent":
            staged.add("parent")
            assert child_started.wait(10), "the child did not start while its parent was staged"
            staged.discard("parent")
        else:
            child_started.set()

    build = Builds(during=during)
    outcomes: dict[str, NodeOutcome] = {}
    _run_dag([parent, child], BuildOptions(jobs=1), outcomes, build, lambda node_id: node_id in staged)

    assert {o.status for o in outcomes.values()} == {"built"}
    assert build.events.index(("start", "child")) < build.events.index(("end", "parent"))


def test_a_staged_parent_s_child_still_waits_for_a_free_slot() -> None:
    # jobs=1 with another node running unstaged: the child of the staged parent waits for it.
    parent, child, other = node("parent"), node("child", "parent"), node("other")
    staged: set[str] = set()
    other_running, parent_staged = threading.Event(), threading.Event()

    def during(n: LayerNode) -> None:
        if n.id == "parent":
            staged.add("parent")
            parent_staged.set()
            assert other_running.wait(10)
            time.sleep(0.6)  # the scheduler looks every 0.25 s: the child would have started by now
            staged.discard("parent")
        elif n.id == "other":
            other_running.set()
            time.sleep(0.6)

    build = Builds(during=during)
    outcomes: dict[str, NodeOutcome] = {}
    _run_dag([parent, other, child], BuildOptions(jobs=1), outcomes, build, lambda node_id: node_id in staged)

    assert {o.status for o in outcomes.values()} == {"built"}
    assert build.events.index(("end", "other")) < build.events.index(("start", "child")), build.events


def test_an_image_over_its_budget_fails_in_one_line_and_keeps_no_tag() -> None:
    """MemoryStore.put reports 7 bytes: a budget of 6 fails the node, a budget of 7 keeps it."""
    fat = dataclasses.replace(node("fat"), budget=Budget(6, "matrix.yaml:150:33"))
    fits = dataclasses.replace(node("fits"), budget=Budget(7, "matrix.yaml:151:33"))
    engine = MemoryStore("engine", {fat.cache_ref: image_of(fat), fits.cache_ref: image_of(fits)})

    outcomes, todo = gather_from_stores([fat, fits], engine, BuildOptions())

    assert todo == []
    assert outcomes["fits"].status is NodeStatus.CACHED
    failed = outcomes["fat"]
    assert failed.status is NodeStatus.FAILED
    assert failed.message == (
        "node fat: image is 7 B (7 bytes), over its budget of 6 B (6 bytes, matrix.yaml:150:33)"
    )
    assert "\n" not in failed.message
    # Neither the content tag nor a version tag of the oversized image is left; the other node keeps its tags.
    assert fat.cache_ref not in engine.images and not any(t in engine.images for t in fat.tags)
    assert fits.cache_ref in engine.images and all(t in engine.images for t in fits.tags)


def test_a_budget_never_removes_a_tag_that_names_another_image() -> None:
    fat = dataclasses.replace(node("fat"), budget=Budget(6, "matrix.yaml:150:33"))
    other = image_of(node("other"), label="other")
    engine = MemoryStore("engine", {fat.cache_ref: image_of(fat), fat.tags[0]: other})
    built = NodeOutcome(fat.id, NodeStatus.BUILT, 1.0, 7, image_of(fat).config_digest)

    assert _within_budget(engine, fat, built).status is NodeStatus.FAILED
    assert fat.cache_ref not in engine.images and engine.images[fat.tags[0]] is other
    unlimited = dataclasses.replace(fat, budget=None)
    assert _within_budget(engine, unlimited, built) is built


def test_raw_images_wait_for_a_quiet_moment_after_the_last_node_start() -> None:
    # asked at 9.0, a node started at 8.0: removal waits until 13.0 (4 s after the later of the two)
    assert discard_pause(now=10.0, last_start=8.0, requested=9.0, quiet=4.0) == 3.0
    # a node that started after the request pushes the removal back
    assert discard_pause(now=12.0, last_start=11.5, requested=9.0, quiet=4.0) == 3.5
    # quiet long enough: at once, never negative
    assert discard_pause(now=13.0, last_start=8.0, requested=9.0, quiet=4.0) == 0.0
    assert discard_pause(now=99.0, last_start=8.0, requested=9.0, quiet=4.0) == 0.0
