"""`strata build`: turn the plan into canonical images on the local engine, parents first, skipping what exists.

Flow per node: the stores are asked first (the engine, then the caches of `BuildOptions.caches`, e.g. the
registry): a node the engine holds under its content tag is `cached`; one a cache holds is put into the engine
(`pulled`); only the others are built: context (Dockerfile + lock or root filesystem) → engine build (BuildKit or
legacy) → canonical image loaded back under the node's content tag and version tags. A failed node skips its
descendants and, without keep_going, everything not yet started.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from builder.build.wheelserver import WheelServer
from builder.engine.build_records import BuildTrace, discard_build_image, discard_build_images, run_commands
from builder.engine.caps import BuilderChoice, detect_builder
from builder.engine.image_build import BuildRequest, build_image
from builder.engine.images import load_canonical_in_worker, warm_up
from builder.engine.install_container import InstallContainer, local_overlay, run_install_stage, stage_exports
from builder.engine.store import EngineStore
from builder.errors import BuildError, ErrorList, MatrixError, StrataError
from builder.events import (
    BuilderChosen,
    EventSink,
    FetchDone,
    FetchProgress,
    LockState,
    NodeCanonicalizing,
    NodeFinished,
    NodeStarted,
    NodeStatus,
    engine_output,
    ignore_events,
)
from builder.lock.fetch import fetch_wheels, link_wheelhouse
from builder.lock.resolve import lock_states, rootfs_spec
from builder.lock.rootfs import build_rootfs
from builder.oci.canonical import CanonicalPolicy
from builder.oci.store import ImageMismatch, ImageStore, StoreList, StoreOpener, TargetStore
from builder.plan.budgets import over_budget
from builder.plan.graph import LABEL_HASH, LayerNode, Plan
from builder.plan.install_stage import STAGED_DIR, InstallStage, parse_install_stage, stand_in_dockerfile
from builder.settings import Settings

PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
# A raw build image (and the build cache records its build left) is removed once no node build has started for
# this long: deleting a gigabyte of records holds BuildKit up for seconds, and a build that just started is in its
# short steps (context, COPY of the lock), which wait for it, while one that runs pip for tens of seconds does not.
# Measured on the cpu cells: 5-8 s stalls of `COPY requirements.lock` when removing right as the child starts.
QUIET_AFTER_START_SECONDS = 4.0


def discard_pause(now: float, last_start: float, requested: float, quiet: float) -> float:
    """Seconds to wait before removing raw images asked for at `requested`, the last node build having started at
    `last_start` (monotonic clock): none once `quiet` seconds have passed since the later of the two (pure).

    >>> discard_pause(now=10.0, last_start=8.0, requested=9.0, quiet=4.0)
    3.0
    >>> discard_pause(now=20.0, last_start=8.0, requested=9.0, quiet=4.0)
    0.0
    """
    return max(0.0, quiet - (now - max(last_start, requested)))


@dataclass
class NodeOutcome:
    node: str
    status: NodeStatus
    seconds: float = 0.0
    size: int = 0
    image_id: str = ""
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "status": self.status,
            "seconds": round(self.seconds, 2),
            "size": self.size,
            "image_id": self.image_id,
            "message": self.message,
        }

    def finished(self) -> NodeFinished:
        """The event that reports this outcome."""
        return NodeFinished(self.node, self.status, self.seconds, self.size, self.image_id, self.message)


def warn_stderr(message: str) -> None:
    print(f"strata: warning: {message}", file=sys.stderr)


@dataclass
class BuildOptions:
    jobs: int = 1
    keep_going: bool = False
    force: bool = False  # ignore every store: build each node (used by verify)
    on_event: EventSink = ignore_events
    # Stores asked after the engine, in order, for a node the engine lacks (the registry cache). Each is opened
    # only when first asked: a no-op build never contacts the registry.
    caches: Sequence[StoreOpener] = ()
    warn: Callable[[str], None] = warn_stderr  # a cache that fails: one line, and the node is built instead


def check_buildable(plan: Plan) -> None:
    """Everything that must hold before touching the engine: fresh locks, real digests."""
    errors: list[StrataError] = []
    for s in lock_states(plan):
        if s.state is not LockState.OK:
            errors.append(MatrixError(f"{s.path} is {s.state} for node {s.node}: run `strata lock`"))
    for n in plan.nodes:
        if n.base_image and n.base_image.endswith(PLACEHOLDER_DIGEST):
            errors.append(
                MatrixError(
                    f"node {n.id}: base image {n.base_image} has a placeholder digest; set the real one"
                )
            )
    if errors:
        raise ErrorList(errors)


@dataclass
class Staged:
    """A node built as far as its stand-in, being canonicalized: its children may already run their install stages
    on `image` (the stand-in) with `binds` (its installed trees, read-only) mounted over the empty directories.

    Its install container (whose files are the trees) stays while anybody needs the trees: the node itself until it
    is canonicalized, and children until their install stages are over (`tree_holds`). Its stand-in image stays
    while a container made from it exists (`image_holds`: the engine keeps such an image). `done` is set once the
    node's canonical image is loaded (`ok`) or it failed.
    """

    node_id: str
    image: str
    binds: tuple[tuple[str, str], ...]
    container: InstallContainer
    tree_holds: int = 1
    image_holds: int = 1
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


@dataclass
class BuildSession:
    """What every node build in one run shares: engine, builder choice, wheelhouse server, directories."""

    plan: Plan
    client: docker.DockerClient
    settings: Settings
    choice: BuilderChoice
    server: WheelServer
    cache: Path
    work: Path
    # Removing a raw build image deletes gigabytes of files: done here, off the path of the next build.
    janitor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="strata-rmi")
    )
    # Canonicalizing holds the GIL for seconds per GB: each node's runs in a worker process of its own.
    canonicalizers: ProcessPoolExecutor | None = None
    # Raw image tag -> what its build was, so discarding it also removes the build cache records it left.
    traces: dict[str, BuildTrace] = field(default_factory=dict)
    # Raw images waiting for a quiet moment (QUIET_AFTER_START_SECONDS), then removed in one batch.
    deferred: list[tuple[str, BuildTrace | None]] = field(default_factory=list)
    deferred_lock: threading.Lock = field(default_factory=threading.Lock)
    last_start: float = 0.0  # monotonic time the last node build started
    closing: threading.Event = field(
        default_factory=threading.Event
    )  # the run is over: remove without waiting
    # Install stages run in containers whose files become the layer (builder/plan/install_stage.py) when the engine's
    # storage is readable here and STRATA_INSTALL_STAGE is not `build`; decided once per run.
    install_outside: bool = False
    # Finished install containers are removed here (their files are gigabytes), apart from raw images' janitor.
    container_janitor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="strata-rm-container")
    )
    # Nodes past their stand-in build whose children may start their install stages (see Staged).
    staged: dict[str, Staged] = field(default_factory=dict)
    settled: dict[str, bool] = field(default_factory=dict)  # node -> whether its canonical image got loaded
    released_with: dict[str, Staged] = field(
        default_factory=dict
    )  # container id -> the hold its removal ends
    staged_lock: threading.Lock = field(default_factory=threading.Lock)

    def offer(self, staged: Staged) -> None:
        """`staged`'s children may run their install stages on it from now on."""
        with self.staged_lock:
            self.staged[staged.node_id] = staged

    def is_staged(self, node_id: str) -> bool:
        """Whether `node_id` is being canonicalized with its stand-in offered (its children may start)."""
        with self.staged_lock:
            found = self.staged.get(node_id)
            return found is not None and not found.done.is_set()

    def borrow(self, node_id: str) -> Staged | None:
        """Hold `node_id`'s stand-in and trees for a child's install stage, if still offered and not yet done."""
        with self.staged_lock:
            found = self.staged.get(node_id)
            if found is None or found.done.is_set():
                return None
            found.tree_holds += 1
            found.image_holds += 1
            return found

    def give_back(
        self, staged: Staged, *, tree: bool = True, image: bool = True, inline: bool = False
    ) -> None:
        """Release holds on the trees and/or the stand-in image; the last of each removes the install container
        (`inline`: right here, on the container janitor's thread) or discards the stand-in image."""
        with self.staged_lock:
            staged.tree_holds -= int(tree)
            staged.image_holds -= int(image)
            drop_tree = tree and staged.tree_holds == 0
            drop_image = image and staged.image_holds == 0
            if staged.tree_holds == 0 and staged.image_holds == 0:
                self.staged.pop(staged.node_id, None)
        if drop_tree:
            if inline:
                self._remove_now(staged.container)
            else:
                self.remove_later(staged.container)
        if drop_image:
            self.discard_later(staged.image)

    def hold_until_removed(self, container: InstallContainer, staged: Staged) -> None:
        """`container` was made from `staged`'s stand-in image: the hold on it ends once the container is gone
        (the engine keeps an image a container uses)."""
        with self.staged_lock:
            self.released_with[container.container_id] = staged

    def _remove_now(self, container: InstallContainer) -> None:
        container.remove()
        with self.staged_lock:
            borrowed = self.released_with.pop(container.container_id, None)
        if borrowed is not None:
            self.give_back(borrowed, tree=False, inline=True)

    def settle(self, staged: Staged, ok: bool) -> None:
        """The node's own build is over (`ok`: its canonical image is in the engine): wake its waiting children."""
        staged.ok = ok
        with self.staged_lock:
            self.settled[staged.node_id] = ok
        staged.done.set()
        self.give_back(staged)

    def install_stage(self, node: LayerNode) -> InstallStage | None:
        """The node's install stage when it runs in a container this run, else None (the Dockerfile is built as is)."""
        if not self.install_outside or not node.parent or not (node.lock and node.lock.wheels):
            return None
        return parse_install_stage(node.dockerfile)

    def canonicalize(self, build_tag: str, node: LayerNode, grafts: Sequence[tuple[str, str]] = ()) -> str:
        """Load the canonical form of the raw image `build_tag` as `node.cache_ref`; returns its image ID.

        `grafts` (path in the image, directory on this host): `build_tag` is a stand-in build, each directory's tree
        goes under its path (builder.oci.graft)."""
        args = (
            self.settings,
            build_tag,
            canonical_policy(self.plan),
            node.cache_ref,
            _parent_ref(self.plan, node),
            tuple(grafts),
        )
        try:
            if self.canonicalizers is None:
                return load_canonical_in_worker(*args).config_digest
            return self.canonicalizers.submit(load_canonical_in_worker, *args).result().config_digest
        except BrokenProcessPool:
            raise StrataError(
                f"node {node.id}: the canonicalizing worker process died (out of memory?)"
            ) from None
        except StrataError as exc:
            raise StrataError(f"node {node.id}: canonicalizing: {exc}") from None

    def discard_later(self, ref: str) -> None:
        """Remove the raw image `ref` (and the build cache its build left) in the background, once no node build
        has started for QUIET_AFTER_START_SECONDS; the session removes what is left without waiting when it ends."""
        with self.deferred_lock:
            self.deferred.append((ref, self.traces.pop(ref, None)))
        self.janitor.submit(self._discard_deferred, time.monotonic())

    def _discard_deferred(self, requested: float) -> None:
        while not self.closing.is_set():
            pause = discard_pause(time.monotonic(), self.last_start, requested, QUIET_AFTER_START_SECONDS)
            if pause <= 0:
                break
            self.closing.wait(pause)
        with self.deferred_lock:
            batch, self.deferred = self.deferred, []
        discard_build_images(self.client, batch)  # an empty batch (an earlier task took it) does nothing

    def discard_now(self, ref: str) -> None:
        """Remove the raw image `ref` and the build cache its build left, before returning."""
        discard_build_image(self.client, ref, self.traces.pop(ref, None))

    def build_args(self, node: LayerNode) -> dict[str, str]:
        args = {"STRATA_CONTENT_HASH": node.content_hash, "WHEELHOUSE_URL": self.server.url_for(node.id)}
        if node.parent:
            args["PARENT_IMAGE"] = self.plan.node(node.parent).local_ref
        return args

    def engine_build(
        self,
        node: LayerNode,
        tag: str,
        *,
        no_cache: bool = False,
        log_name: str | None = None,
        on_line: Callable[[str], None] | None = None,
        stand_in: tuple[str, InstallContainer, InstallStage] | None = None,
    ) -> tuple[str, list[tuple[str, str]]]:
        """Build one node's Dockerfile into `tag` (raw, not canonical); returns the image id and the grafts.

        With `stand_in` (its Dockerfile, the finished install container, the stage), the stand-in Dockerfile is
        built from what the container left: the grafts returned put the installed trees back (builder.oci.graft).
        """
        # One directory per node (runs in one checkout take turns: builder/state_lock.py): BuildKit keys its record
        # of a context by the directory, so a stable one is reused instead of a new record per build.
        context_dir = self.work / "context" / (log_name or node.id)
        shutil.rmtree(context_dir, ignore_errors=True)
        grafts: list[tuple[str, str]] = []
        log = self.work / "logs" / f"{log_name or node.id}.log"  # after the install stage's output, if any
        try:
            if stand_in is None:
                dockerfile = node.dockerfile
                context = _prepare_context(self.plan, node, self.cache, context_dir, self.settings)
            else:
                dockerfile, container, stage = stand_in
                context = context_dir
                (context / STAGED_DIR).mkdir(parents=True)
                (context / "Dockerfile").write_text(dockerfile, encoding="utf-8")
                grafts = stage_exports(container, stage, context / STAGED_DIR, node.id)
            self.last_start = time.monotonic()
            args = self.build_args(node)
            appended = stand_in is not None
            request = BuildRequest(
                node.id, context, tag, args, log, self.settings.environ, no_cache, appended
            )
            started = time.time()
            image_id = build_image(self.client, self.choice, request, on_line)
            if self.choice.kind != "legacy":  # the legacy builder leaves no build cache records
                self.traces[tag] = BuildTrace(started, run_commands(dockerfile))
            return image_id, grafts
        finally:
            shutil.rmtree(context_dir, ignore_errors=True)

    def run_install(
        self,
        node: LayerNode,
        stage: InstallStage,
        *,
        log_name: str | None = None,
        on_line: Callable[[str], None] | None = None,
        on: Staged | None = None,
    ) -> InstallContainer:
        """Run `node`'s install stage in a container of its parent image (builder.engine.install_container), or,
        `on` a parent still being canonicalized, of its stand-in with its trees mounted: the same files."""
        assert node.parent and node.lock
        self.last_start = time.monotonic()
        return run_install_stage(
            self.client,
            node.id,
            on.image if on else self.plan.node(node.parent).local_ref,
            stage,
            {"requirements.lock": node.lock.render().encode("utf-8")},
            self.build_args(node),
            self.work / "logs" / f"{log_name or node.id}.log",
            on_line,
            binds=[(host, inside) for inside, host in on.binds] if on else (),
        )

    def remove_later(self, container: InstallContainer) -> None:
        """Remove a finished install container (and its files) in the background."""
        self.container_janitor.submit(self._remove_now, container)


class _FetchMeter:
    """Reports bytes fetched every 100 MB (downloads run on several threads)."""

    STEP = 100 * 10**6

    def __init__(self, on_event: EventSink) -> None:
        self.on_event = on_event
        self.total = 0
        self.next_report = self.STEP
        self.lock = threading.Lock()

    def __call__(self, filename: str, nbytes: int) -> None:
        with self.lock:
            self.total += nbytes
            if self.total >= self.next_report:
                self.next_report += self.STEP
                self.on_event(FetchProgress(self.total, filename))


@contextmanager
def build_session(
    plan: Plan,
    client: docker.DockerClient,
    settings: Settings,
    nodes: list[LayerNode],
    on_event: EventSink,
) -> Iterator[BuildSession]:
    """Detect the builder, fetch and verify every wheel `nodes` need, and serve them on loopback for the session."""
    choice = detect_builder(client, settings.environ)
    on_event(BuilderChosen(choice.kind, choice.reason))
    cache = settings.ensure(settings.cache_dir)
    work = plan.matrix.root / "build"
    (work / "wheelhouse").mkdir(parents=True, exist_ok=True)
    wheel_root = Path(tempfile.mkdtemp(prefix="session-", dir=work / "wheelhouse"))
    # Fetch once for the whole run: each wheel is downloaded at most once and verified before any build.
    # (Fetching while the base nodes build was measured slower: on two cores both are CPU-bound.)
    wheels = [w for n in nodes if n.lock for w in n.lock.wheels]
    if wheels:
        result = fetch_wheels(
            cache, wheels, repair=False, progress=_FetchMeter(on_event), environ=settings.environ
        )
        on_event(FetchDone(result.downloaded, result.bytes_downloaded, result.reused))
    for n in nodes:
        if n.lock and n.lock.wheels:
            link_wheelhouse(cache, n.lock.wheels, wheel_root / n.id)
    try:
        with WheelServer(wheel_root) as server:
            session = BuildSession(plan, client, settings, choice, server, cache, work)
            session.install_outside = (
                not settings.install_in_build and settings.layer_read != "save" and local_overlay(client)
            )
            try:
                yield session
            finally:
                session.closing.set()
                # Containers first: removing one may release a stand-in image for the other janitor to discard.
                session.container_janitor.shutdown(wait=True)
                session.janitor.shutdown(wait=True)
    finally:
        shutil.rmtree(wheel_root, ignore_errors=True)


def build_images(
    plan: Plan, client: docker.DockerClient, settings: Settings, options: BuildOptions
) -> list[NodeOutcome]:
    """Build every node of the plan that no store already has; return one outcome per node."""
    check_buildable(plan)
    outcomes, todo = gather_from_stores(plan.nodes, EngineStore(client, settings.layer_read), options)
    for outcome in outcomes.values():
        options.on_event(outcome.finished())
    if todo:
        # The worker processes start first: their start-up overlaps the wheel fetch.
        with canonicalizer_pool(options.jobs) as pool:
            with build_session(plan, client, settings, todo, options.on_event) as session:
                session.canonicalizers = pool
                _run_dag(
                    todo,
                    options,
                    outcomes,
                    lambda node: _build_one(session, node, options),
                    session.is_staged,
                )
    return [outcomes[n.id] for n in plan.nodes]


def gather_from_stores(
    nodes: Sequence[LayerNode], target: TargetStore, options: BuildOptions
) -> tuple[dict[str, NodeOutcome], list[LayerNode]]:
    """Ask `target` (the engine), then `options.caches`, for each node by its content tag: (outcomes of the nodes
    a store had, now in `target` under all their tags; the nodes to build). With `options.force`, every node."""
    outcomes: dict[str, NodeOutcome] = {}
    if options.force:
        return outcomes, list(nodes)
    todo: list[LayerNode] = []
    stores = StoreList([lambda: target, *options.caches])
    try:
        for node in nodes:
            outcome = _from_stores(node, target, stores, options.warn)
            if outcome is None:
                todo.append(node)
            else:
                outcomes[node.id] = _within_budget(target, node, outcome)
    finally:
        stores.close()
    return outcomes, todo


def _from_stores(
    node: LayerNode, target: TargetStore, stores: StoreList, warn: Callable[[str], None]
) -> NodeOutcome | None:
    """The node's outcome when a store has its image (`cached` in the target, else `pulled` into it), or None."""
    refs = [node.cache_ref, *node.tags]

    def unavailable(store: ImageStore, exc: Exception) -> None:
        warn(f"{store.name} for {node.id} unavailable, building instead: {exc}")

    found = stores.find(node.cache_ref, unavailable)
    if found is None:
        return None
    if found.store is target:
        stored = target.tag(found.ref, refs)
        return NodeOutcome(node.id, NodeStatus.CACHED, size=stored.size, image_id=stored.ref)
    where = f"{found.store.name} for {node.id}"
    try:
        image = found.store.get(found.ref)
        label = image.labels.get(LABEL_HASH)
        if label != node.content_hash:
            raise ImageMismatch(f"its {LABEL_HASH} label is {label!r}, not {node.content_hash}")
        stored = target.put(image, refs)
    except ImageMismatch as exc:
        warn(f"{where}: {found.ref} is not this node's image ({exc}); building instead")
        return None
    except StrataError as exc:
        unavailable(found.store, exc)
        return None
    return NodeOutcome(node.id, NodeStatus.PULLED, size=stored.size, image_id=stored.ref)


@contextmanager
def canonicalizer_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """Worker processes for canonicalizing, started at once so their start-up overlaps other work."""
    # spawn: forking a process that runs threads (server, janitor, progress) could copy a held lock.
    pool = ProcessPoolExecutor(max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn"))
    try:
        for _ in range(max(1, workers)):
            pool.submit(warm_up)
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dag(
    todo: list[LayerNode],
    options: BuildOptions,
    outcomes: dict[str, NodeOutcome],
    build: Callable[[LayerNode], NodeOutcome],
    staged: Callable[[str], bool] = lambda node_id: False,
) -> None:
    """Build `todo` with `build`, parents first, `options.jobs` at a time. `outcomes` holds every node already
    decided (parents outside `todo`) and receives each node's; a node whose parent did not end up built, cached
    or pulled is skipped, and after a failure nothing new starts unless `options.keep_going`.

    A running node for which `staged(id)` holds is being canonicalized with its stand-in offered: its children may
    start (their builds wait for it where they must), and it no longer counts against `options.jobs`."""
    pending = {n.id: n for n in todo}
    running: dict[Future[NodeOutcome], str] = {}
    stop = False
    with ThreadPoolExecutor(max_workers=2 * max(1, options.jobs)) as pool:
        while pending or running:
            if not stop:
                for node_id, node in list(pending.items()):
                    parent = node.parent
                    if parent and (parent in pending or (parent in running.values() and not staged(parent))):
                        continue  # wait for the parent (or for its stand-in)
                    parent_state = outcomes[parent].status if parent in outcomes else None
                    if parent_state is not None and not parent_state.ok:
                        outcomes[node_id] = NodeOutcome(
                            node_id, NodeStatus.SKIPPED, message=f"parent {parent} {parent_state}"
                        )
                        options.on_event(outcomes[node_id].finished())
                        del pending[node_id]
                        continue
                    if sum(1 for n in running.values() if not staged(n)) >= max(1, options.jobs):
                        break
                    del pending[node_id]
                    running[pool.submit(build, node)] = node_id
            if not running:
                for node_id in list(pending):
                    outcomes[node_id] = NodeOutcome(
                        node_id, NodeStatus.SKIPPED, message="stopped after an earlier failure"
                    )
                    options.on_event(outcomes[node_id].finished())
                    del pending[node_id]
                continue
            # A running node may offer its stand-in at any time: look again every quarter second.
            done, _ = wait(list(running), timeout=0.25, return_when=FIRST_COMPLETED)
            for fut in done:
                node_id = running.pop(fut)
                outcomes[node_id] = fut.result()
                options.on_event(outcomes[node_id].finished())
                if outcomes[node_id].status is NodeStatus.FAILED and not options.keep_going:
                    stop = True


def canonical_policy(plan: Plan) -> CanonicalPolicy:
    return CanonicalPolicy(epoch=plan.matrix.model.source_date_epoch, compression="none")


def _build_one(session: BuildSession, node: LayerNode, options: BuildOptions) -> NodeOutcome:
    start = time.monotonic()
    staged: Staged | None = None
    try:
        build_tag = f"strata-build/{node.id}:{node.content_hash[:16]}"
        options.on_event(NodeStarted(node.id))

        def on_line(line: str) -> None:
            options.on_event(engine_output(node.id, line))

        stage = session.install_stage(node)
        container = _install(session, node, stage, on_line) if stage else None
        try:
            stand_in = (
                (stand_in_dockerfile(node.dockerfile, stage), container, stage)
                if stage and container
                else None
            )
            _, grafts = session.engine_build(node, build_tag, on_line=on_line, stand_in=stand_in)
        except BaseException:
            if container is not None:
                session.remove_later(container)
            raise
        if container is not None:
            staged = Staged(node.id, build_tag, tuple(grafts), container)
            session.offer(staged)  # its children may start their install stages now
        options.on_event(NodeCanonicalizing(node.id))
        # Streamed into the engine as it is rewritten; the parent's layers are neither read nor sent.
        image_id = session.canonicalize(build_tag, node, grafts)
        if staged is None:
            session.discard_later(build_tag)
        engine = EngineStore(session.client)
        # Measured before the version tags are given: an image over its budget leaves no tag behind.
        size = int(session.client.images.get(image_id).attrs.get("Size", 0))
        outcome = NodeOutcome(node.id, NodeStatus.BUILT, time.monotonic() - start, size, image_id)
        checked = _within_budget(engine, node, outcome)
        if checked.status is NodeStatus.FAILED:
            return checked
        stored = engine.tag(image_id, [node.cache_ref, *node.tags])
        if staged is not None:
            session.settle(staged, ok=True)
            staged = None
        return NodeOutcome(node.id, NodeStatus.BUILT, time.monotonic() - start, stored.size, stored.ref)
    except _ParentFailed:
        return NodeOutcome(
            node.id, NodeStatus.SKIPPED, time.monotonic() - start, message=f"parent {node.parent} failed"
        )
    except StrataError as exc:
        return NodeOutcome(node.id, NodeStatus.FAILED, time.monotonic() - start, message=str(exc))
    except (docker.errors.DockerException, OSError) as exc:
        return NodeOutcome(
            node.id,
            NodeStatus.FAILED,
            time.monotonic() - start,
            message=f"node {node.id}: {type(exc).__name__}: {exc}",
        )
    finally:
        if staged is not None:  # failed after offering its stand-in: children waiting on it stop
            session.settle(staged, ok=False)


class _ParentFailed(Exception):
    """The parent whose stand-in a child's install stage ran on did not end up in the engine."""


def _install(
    session: BuildSession, node: LayerNode, stage: InstallStage, on_line: Callable[[str], None]
) -> InstallContainer:
    """Run the node's install stage: on its parent's stand-in while the parent is canonicalized, else on the parent.

    On the stand-in, the parent's trees are mounted read-only: an install stage that would write into them (pip
    uninstalling from the parent's prefix) fails there and runs again on the parent once it is loaded. Returns once
    the parent's canonical image is in the engine (the stand-in build is FROM it).
    """
    on = session.borrow(node.parent) if node.parent else None
    if on is None:
        if node.parent and session.settled.get(node.parent) is False:
            raise _ParentFailed  # it offered its stand-in, then failed
        return session.run_install(node, stage, on_line=on_line)
    try:
        container = session.run_install(node, stage, on_line=on_line, on=on)
    except (StrataError, docker.errors.DockerException, OSError) as exc:
        on.done.wait()
        session.give_back(on)
        if not on.ok:
            raise _ParentFailed from None
        on_line(
            f"strata: the install stage on {node.parent}'s stand-in failed ({exc}); running it on {node.parent}"
        )
        return session.run_install(node, stage, on_line=on_line)
    session.give_back(
        on, image=False
    )  # its trees are no longer needed; the image is, while the container exists
    session.hold_until_removed(container, on)
    on.done.wait()
    if not on.ok:
        session.remove_later(container)
        raise _ParentFailed
    return container


def _within_budget(target: TargetStore, node: LayerNode, outcome: NodeOutcome) -> NodeOutcome:
    """`outcome` unchanged when the node's image fits its budget (matrix.yaml `budgets`); else a failure whose
    message names node, size and budget, with every tag of the node that names this image removed."""
    message = over_budget(node.id, outcome.size, node.budget)
    if message is None:
        return outcome
    target.untag(outcome.image_id, [node.cache_ref, *node.tags])
    return NodeOutcome(node.id, NodeStatus.FAILED, outcome.seconds, outcome.size, "", message)


def _parent_ref(plan: Plan, node: LayerNode) -> str | None:
    """The parent's canonical image in the engine: its layers need not be rewritten or loaded again."""
    parents = [n for n in plan.nodes if n.id == node.parent]
    return parents[0].cache_ref if parents else None


def _prepare_context(plan: Plan, node: LayerNode, cache: Path, context: Path, settings: Settings) -> Path:
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(node.dockerfile, encoding="utf-8")
    if node.lock and node.lock.wheels:
        (context / "requirements.lock").write_text(node.lock.render(), encoding="utf-8")
    if node.rootfs is not None:
        assert node.lock is not None and node.lock.rootfs is not None
        art = build_rootfs(
            rootfs_spec(node), cache, expected_sha256=node.lock.rootfs.sha256, environ=settings.environ
        )
        try:
            os.link(art.path, context / "rootfs.tar")
        except OSError:
            shutil.copy2(art.path, context / "rootfs.tar")
    return context


def raise_if_failed(outcomes: list[NodeOutcome]) -> None:
    failed = [o for o in outcomes if o.status is NodeStatus.FAILED]
    if failed:
        raise BuildError("; ".join(o.message for o in failed))


def ensure_base_image(
    engine: docker.DockerClient,
    plan: Plan,
    base: LayerNode,
    settings: Settings,
    caches: Sequence[StoreOpener] = (),
    on_event: EventSink = ignore_events,
) -> str:
    """The engine reference of base node `base`, built (or pulled) first when the engine lacks it: locking
    resolves in it."""
    options = BuildOptions(on_event=on_event, caches=caches)
    outcomes = build_images(plan.select([base.id]), engine, settings, options)
    failed = [o for o in outcomes if not o.status.ok]
    if failed:
        raise StrataError(f"{base.id}: cannot resolve without this base image: {failed[0].message}")
    return base.cache_ref
