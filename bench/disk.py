"""Strata's disk use after whole-matrix builds and `strata gc`, against what the matrix needs (issue 18 item 3).

    python bench/disk.py              # measure; build --matrix; measure; build --matrix; measure; gc; measure
    python bench/disk.py --skip-gc    # the same without gc (no verdict)
    python bench/disk.py --no-build   # measure once: no build, no gc, nothing written but the log directory

Run from anywhere as root on a host set up for Strata, with no other Strata run using the engine (the builds and gc
wait for the run lock; the measurements in between do not). The target: after `strata gc`, Strata's disk use is no
more than the images the matrix needs plus the locked inputs (total / reference <= 1.00).

What each measuring point counts, in bytes:

- Strata images: the unique layers of every engine image that is Strata's: every reference under the matrix's
  `<registry>/<namespace>/` and Strata's content-hash label (`builder.plan.retention.is_strata_image`, the test gc
  applies), or every reference a raw build image's (`strata-build/`, `strata-verify/`). A layer that parent and
  child images share is counted once: layers are keyed by chain id (`chainID(1) = diff_id(1)`,
  `chainID(n) = sha256(chainID(n-1) + " " + diff_id(n))`, from each image's RootFS diff_ids) and each one's bytes
  are read from `<DockerRootDir>/image/overlay2/layerdb/sha256/<chain id>/size` (the bytes of the layer's diff, what
  the engine sums into an image's Size: each image's layers are checked to add up to its Size, and all images'
  unique layers to the engine's own `LayersSize` of `GET /system/df`).
- Build cache (Strata's): the BuildKit records (`GET /system/df`, BuildCache) gc attributes to Strata's builds
  (`builder.engine.build_records.strata_records`); the other records of the engine (`all` in the second table, not
  shared with an image, as `docker system df` counts them) are printed but not counted: gc leaves them alone.
- State cache: every file under the state root's cache/ (wheels, root filesystems, debs, compressed layers, other)
  and the scratch directories (`builder.build.scratch.scratch_dirs`, verify's `build/strata-verify-*`): apparent
  sizes (st_size), each inode once (hard links counted once).
- Reference: the unique layers of the images the matrix needs (every node's cache_ref in the default profile's
  plan, what `strata build --matrix` makes) + the locked inputs: the cache entries every lock under locks/ names
  (wheels by sha256, root filesystems by sha256, .debs by file name: what gc keeps), each inode once.

Also printed: the whole DockerRootDir (`du -sxb`; other images and containers live there too) and the unique
layers of every image of the engine. Logs (each strata run's output, gc's JSON, results.json with every figure in
bytes) stay in build/bench/disk-<time>/. Exits 1 when a step fails or when, after a build, an image the matrix
needs is not in the engine (the figures would flatter Strata).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: the measurements use Strata's own helpers

from builder.build.scratch import scratch_dirs  # noqa: E402
from builder.engine.build_records import (  # noqa: E402
    BuildRecord,
    record_from_api,
    run_commands,
    strata_records,
)
from builder.engine.client import ENGINE_ERRORS, engine_client  # noqa: E402
from builder.engine.gc import chain_ids  # noqa: E402
from builder.errors import StrataError  # noqa: E402
from builder.lock.fetch import list_wheelhouse  # noqa: E402
from builder.lock.rootfs import list_debs, list_rootfs  # noqa: E402
from builder.plan.graph import LABEL_HASH, Plan  # noqa: E402
from builder.plan.retention import (  # noqa: E402
    COMPRESSED_LAYERS,
    DEBS,
    RAW_REPOSITORIES,
    ROOTFS,
    SCRATCH,
    WHEELS,
    CachedFile,
    EngineImage,
    Needs,
    is_strata_image,
    needs_of,
    plans_of_every_profile,
)
from builder.settings import Settings, matrix_file, resolve_settings  # noqa: E402
from cli.gc import human_bytes  # noqa: E402

OTHER = "other"
STATE_CATEGORIES = (WHEELS, ROOTFS, DEBS, COMPRESSED_LAYERS, SCRATCH, OTHER)
BEFORE, AFTER_BUILD_1, AFTER_BUILD_2, AFTER_GC, NOW = (
    "before",
    "after build 1",
    "after build 2",
    "after gc",
    "now",
)
TARGET_POINT = AFTER_GC
TARGET_RATIO = 1.0
DU_TIMEOUT_SECONDS = 600


class BenchError(Exception):
    """A one-line reason the benchmark cannot go on."""


# ---------------------------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class ImageLayers:
    """One engine image: its id, references, labels and layer chain ids, bottom first."""

    id: str
    refs: tuple[str, ...]
    labels: Mapping[str, str]
    chains: tuple[str, ...]


def is_strata_scope(image: ImageLayers, needs: Needs) -> bool:
    """Strata's image as gc tells it (namespace and label), or a raw build image (every reference `strata-build/`
    or `strata-verify/`, whatever its age or content). Untagged images are nobody's for sure: not counted."""
    as_gc = EngineImage(id=image.id, refs=image.refs, labels=dict(image.labels))
    raw = bool(image.refs) and all(r.startswith(RAW_REPOSITORIES) for r in image.refs)
    return raw or is_strata_image(as_gc, needs)


def unique_layer_bytes(images: Iterable[ImageLayers], sizes: Mapping[str, int]) -> int:
    """Bytes of the layers of `images`, each chain id once (parent and child images share their lower layers).

    >>> a, b = ImageLayers("a", (), {}, ("L1",)), ImageLayers("b", (), {}, ("L1", "L2"))
    >>> unique_layer_bytes([a, b], {"L1": 100, "L2": 5})
    105
    """
    seen: set[str] = set()
    for image in images:
        for chain in image.chains:
            if chain not in sizes:
                raise ValueError(f"{image.id}: no size for layer {chain}")
            seen.add(chain)
    return sum(sizes[chain] for chain in seen)


def missing_nodes(needed: Iterable[tuple[str, str]], images: Iterable[ImageLayers]) -> list[str]:
    """The ids of the nodes of `needed` ((node id, cache_ref) pairs) whose cache_ref no image has, in their order."""
    present = {ref for image in images for ref in image.refs}
    return [node for node, ref in needed if ref not in present]


def images_of(refs: Iterable[str], images: Iterable[ImageLayers]) -> list[ImageLayers]:
    """The images holding any of `refs` (each image once)."""
    wanted = set(refs)
    return [image for image in images if wanted & set(image.refs)]


@dataclass(frozen=True)
class FileStat:
    """One regular file: its inode's identity and apparent size."""

    dev: int
    ino: int
    size: int


def walk_files(paths: Iterable[Path]) -> Iterator[FileStat]:
    """Every regular file at or under `paths` (symbolic links neither followed nor counted); gone ones skipped."""
    for path in paths:
        try:
            st = path.lstat()
        except OSError:
            continue
        if path.is_symlink():
            continue
        if not path.is_dir():
            yield FileStat(st.st_dev, st.st_ino, st.st_size)
            continue
        for directory, _, names in os.walk(path):
            for name in names:
                try:
                    st = os.lstat(os.path.join(directory, name))
                except OSError:
                    continue  # went away while we counted
                if not os.path.islink(os.path.join(directory, name)):
                    yield FileStat(st.st_dev, st.st_ino, st.st_size)


def bytes_by_category(groups: Mapping[str, Iterable[FileStat]]) -> dict[str, int]:
    """Bytes per category, every inode counted once, in the first category (in `groups`' order) that has it.

    >>> bytes_by_category({"a": [FileStat(1, 7, 10)], "b": [FileStat(1, 7, 10), FileStat(1, 8, 3)]})
    {'a': 10, 'b': 3}
    """
    seen: set[tuple[int, int]] = set()
    totals: dict[str, int] = {}
    for category, files in groups.items():
        totals[category] = 0
        for f in files:
            if (f.dev, f.ino) not in seen:
                seen.add((f.dev, f.ino))
                totals[category] += f.size
    return totals


def locked_entries(
    wheels: Iterable[CachedFile], rootfs: Iterable[CachedFile], debs: Iterable[CachedFile], needs: Needs
) -> list[CachedFile]:
    """The cache entries the locks name (what gc keeps): wheels and root filesystems by sha256, .debs by file name.
    Partial downloads and strays (key "") are never locked."""
    return [
        *(e for e in wheels if e.key and e.key in needs.wheels),
        *(e for e in rootfs if e.key and e.key in needs.rootfs),
        *(e for e in debs if e.key and e.key in needs.debs),
    ]


@dataclass(frozen=True)
class Measurement:
    """Every figure of one measuring point, in bytes."""

    point: str
    strata_images: int
    build_cache_strata: int
    build_cache_all: int
    state_cache: Mapping[str, int]  # STATE_CATEGORIES -> bytes
    needed_images: int  # unique layers of the matrix's images found in the engine
    locked_inputs: int
    missing: tuple[str, ...] = ()  # ids of the matrix's nodes whose image is not in the engine
    engine_layers: int = 0  # unique layers of every image of the engine
    docker_root: int | None = None  # du of DockerRootDir
    untagged_labelled: int = 0  # layers only untagged images with Strata's label hold (not counted)
    other_profiles: int = 0  # layers of the other profiles' nodes (gc keeps them) beyond the needed images
    notes: tuple[str, ...] = ()

    @property
    def state_total(self) -> int:
        return sum(self.state_cache.values())

    @property
    def total(self) -> int:
        return self.strata_images + self.build_cache_strata + self.state_total

    @property
    def reference(self) -> int:
        return self.needed_images + self.locked_inputs

    @property
    def ratio(self) -> float | None:
        return self.total / self.reference if self.reference else None


def ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain fixed-width table: first column left-aligned, the others right-aligned.

    >>> print(format_table(["a", "bb"], [["x", "1.0"]]))
    a   bb
    -  ---
    x  1.0
    """
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def summary_table(points: Sequence[Measurement]) -> str:
    """Rows: the measuring points; columns: what `total` adds up, the reference and their ratio."""
    header = ["point", "strata images", "build cache", "state cache", "total", "reference", "total/reference"]
    rows = [
        [
            m.point,
            human_bytes(m.strata_images),
            human_bytes(m.build_cache_strata),
            human_bytes(m.state_total),
            human_bytes(m.total),
            human_bytes(m.reference) + ("*" if m.missing else ""),
            ratio_text(m.ratio),
        ]
        for m in points
    ]
    return format_table(header, rows)


def detail_table(points: Sequence[Measurement]) -> str:
    """The state cache by kind, the reference's two parts, and what else the engine holds."""
    header = [
        "point",
        *STATE_CATEGORIES,
        "needed images",
        "locked inputs",
        "all build cache",
        "all images",
        "docker root",
    ]
    rows = [
        [
            m.point,
            *(human_bytes(m.state_cache.get(c, 0)) for c in STATE_CATEGORIES),
            human_bytes(m.needed_images),
            human_bytes(m.locked_inputs),
            human_bytes(m.build_cache_all),
            human_bytes(m.engine_layers),
            "-" if m.docker_root is None else human_bytes(m.docker_root),
        ]
        for m in points
    ]
    return format_table(header, rows)


def verdict(points: Sequence[Measurement], why_not: str = "") -> str:
    """The target line: after gc, total <= reference (MET or MISSED with the ratio), or why it was not measured."""
    target = next((m for m in points if m.point == TARGET_POINT), None)
    name = f"target ({TARGET_POINT}: total <= reference, ratio <= {TARGET_RATIO:.2f})"
    if target is None:
        return f"{name}: not measured{f' ({why_not})' if why_not else ''}"
    if target.missing:
        return f"{name}: not measured ({len(target.missing)} image(s) the matrix needs are not in the engine)"
    if target.ratio is None:
        return f"{name}: not measured (the reference is empty)"
    met = target.ratio <= TARGET_RATIO
    return (
        f"{name}: {'MET' if met else 'MISSED'}: total {human_bytes(target.total)}, "
        f"reference {human_bytes(target.reference)}, ratio {target.ratio:.2f}"
    )


def gc_freed_line(document: Mapping[str, Any]) -> str:
    """One line of what `strata gc --format json` (strata.gc/1) says it freed, by kind, and what it left alone."""
    categories = document.get("categories") or {}
    parts = [
        f"{name} {int(c.get('count', 0))} ({human_bytes(int(c.get('bytes', 0)))})"
        for name, c in categories.items()
        if int(c.get("count", 0)) or int(c.get("bytes", 0))
    ]
    total = document.get("total") or {}
    line = f"gc freed {human_bytes(int(total.get('bytes', 0)))}: " + (", ".join(parts) or "nothing")
    foreign = document.get("foreign_build_cache") or {}
    if int(foreign.get("records", 0)):
        line += (
            f"; left {int(foreign['records'])} build cache record(s) not tied to a Strata build "
            f"({human_bytes(int(foreign.get('bytes', 0)))})"
        )
    problems = document.get("problems") or []
    if problems:
        line += f"; {len(problems)} problem(s): {problems[0]}"
    return line


# ---------------------------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Matrix:
    """What the measurements need of the matrix, computed once."""

    settings: Settings
    needs: Needs  # gc's: namespace, every lock's inputs
    needed: tuple[tuple[str, str], ...]  # (node id, cache_ref) of every node of the default profile's plan
    commands: frozenset[str]  # every RUN of every profile's Dockerfiles (build record attribution)


def load_matrix_facts(file: str | None) -> Matrix:
    try:
        path = matrix_file(file, os.environ, Path.cwd())
        settings = resolve_settings(os.environ, path.absolute())
        plans: list[Plan] = plans_of_every_profile(settings.matrix_file, settings.registry_override)
        needs = needs_of(plans, settings.matrix_root / "locks")
    except StrataError as exc:
        raise BenchError(str(exc)) from None
    return Matrix(
        settings=settings,
        needs=needs,
        needed=tuple((n.id, n.cache_ref) for n in plans[0].nodes),
        commands=frozenset(c for plan in plans for node in plan.nodes for c in run_commands(node.dockerfile)),
    )


def layerdb_dir(info: Mapping[str, Any]) -> Path:
    root = Path(str(info.get("DockerRootDir") or "/var/lib/docker"))
    driver = str(info.get("Driver") or "")
    path = root / "image" / driver / "layerdb" / "sha256"
    if not path.is_dir():
        raise BenchError(
            f"{path}: not readable (the bench reads a local engine's layer store; run it as root)"
        )
    return path


def read_engine(client: Any, layerdb: Path) -> tuple[list[ImageLayers], dict[str, int], list[str]]:
    """Every image of the engine (untagged ones too), each layer's bytes, and notes on what did not add up."""
    images: list[ImageLayers] = []
    sizes: dict[str, int] = {}
    notes: list[str] = []
    for summary in client.api.images(all=True):
        image_id = str(summary["Id"])
        try:
            inspected = client.api.inspect_image(image_id)
        except ENGINE_ERRORS:
            continue  # removed while we looked
        chains = tuple(chain_ids((inspected.get("RootFS") or {}).get("Layers") or ()))
        try:
            for chain in chains:
                if chain not in sizes:
                    sizes[chain] = int((layerdb / chain.removeprefix("sha256:") / "size").read_text().strip())
        except (OSError, ValueError) as exc:
            try:
                client.api.inspect_image(image_id)
            except ENGINE_ERRORS:
                continue  # its layers went with it
            raise BenchError(f"{image_id[:19]}: layer size unreadable ({exc})") from None
        own = sum(sizes[c] for c in chains)
        if own != int(inspected.get("Size") or 0):
            notes.append(
                f"{image_id[:19]}: layers add up to {own} bytes, the engine says {inspected.get('Size')}"
            )
        refs = tuple(t for t in summary.get("RepoTags") or () if t != "<none>:<none>")
        images.append(ImageLayers(image_id, refs, dict(summary.get("Labels") or {}), chains))
    return images, sizes, notes


def docker_root_bytes(info: Mapping[str, Any]) -> int | None:
    """`du -sxb` of the engine's root directory (hard links once), or None when du fails."""
    root = str(info.get("DockerRootDir") or "/var/lib/docker")
    try:
        done = subprocess.run(
            ["du", "-sxb", root],
            capture_output=True,
            text=True,
            check=False,
            timeout=DU_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    try:
        return int(done.stdout.split()[0])
    except (IndexError, ValueError):
        return None


def state_cache_groups(settings: Settings) -> dict[str, list[Path]]:
    """The state cache's directories by kind; everything else under cache/ is `other`."""
    cache = settings.cache_dir
    known = {
        WHEELS: [cache / "wheels"],
        ROOTFS: [cache / "rootfs"],
        DEBS: [cache / "debs"],
        COMPRESSED_LAYERS: [settings.compressed_layers_dir],
        SCRATCH: [*scratch_dirs(settings), *sorted(settings.work_dir.glob("strata-verify-*"))],
    }
    listed = {p.absolute() for paths in known.values() for p in paths}
    others = [p for p in sorted(cache.iterdir()) if p.absolute() not in listed] if cache.is_dir() else []
    return {**known, OTHER: others}


def measure(point: str, client: Any, matrix: Matrix) -> Measurement:
    """Every figure of one measuring point (see the module docstring for what each counts)."""
    info = client.info()
    images, sizes, notes = read_engine(client, layerdb_dir(info))
    df = client.api.df()
    engine_layers = unique_layer_bytes(images, sizes)
    if engine_layers != int(df.get("LayersSize") or 0):
        notes.append(
            f"all images' layers add up to {engine_layers} bytes, the engine's LayersSize is "
            f"{df.get('LayersSize')} (an image came or went while measuring)"
        )
    records: list[BuildRecord] = [record_from_api(r) for r in df.get("BuildCache") or []]
    ours = strata_records(records, matrix.commands)
    strata = [i for i in images if is_strata_scope(i, matrix.needs)]
    labelled_untagged = [i for i in images if not i.refs and i.labels.get(LABEL_HASH)]
    strata_bytes = unique_layer_bytes(strata, sizes)
    needed = images_of((ref for _, ref in matrix.needed), images)
    needed_bytes = unique_layer_bytes(needed, sizes)
    every_profile = images_of(matrix.needs.cache_refs, images)
    settings = matrix.settings
    cache = settings.cache_dir
    locked = locked_entries(list_wheelhouse(cache), list_rootfs(cache), list_debs(cache), matrix.needs)
    groups = state_cache_groups(settings)
    if not cache.is_dir():
        notes.append(f"{cache}: no such directory (is STRATA_HOME the one the builds use?)")
    return Measurement(
        point=point,
        strata_images=strata_bytes,
        build_cache_strata=sum(r.size for r in ours),
        build_cache_all=sum(r.size for r in records if not r.shared),
        state_cache=bytes_by_category({k: walk_files(v) for k, v in groups.items()}),
        needed_images=needed_bytes,
        locked_inputs=sum(bytes_by_category({"": walk_files(p for e in locked for p in e.paths)}).values()),
        missing=tuple(missing_nodes(matrix.needed, images)),
        engine_layers=engine_layers,
        docker_root=docker_root_bytes(info),
        untagged_labelled=unique_layer_bytes([*strata, *labelled_untagged], sizes) - strata_bytes,
        other_profiles=unique_layer_bytes([*needed, *every_profile], sizes) - needed_bytes,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------------------------- the steps


def shorten(line: str, width: int = 200) -> str:
    """`line`, cut to `width` characters with `...` when longer."""
    return line if len(line) <= width else line[: width - 3] + "..."


def strata_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def run_strata(what: str, args: Sequence[str], log: Path, stdout: Path | None = None) -> float:
    """Run `strata ARGS` from the repository, output to `log` (stdout to `stdout` when given); seconds taken."""
    print(f"bench: {what} (log: {log})", file=sys.stderr, flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "1000"}
    start = time.monotonic()
    with open(log, "w", encoding="utf-8") as err:
        err.write(f"# {' '.join(strata_argv(*args))}\n")
        err.flush()
        try:
            with open(stdout, "w", encoding="utf-8") if stdout else contextlib.nullcontext() as out:
                done = subprocess.run(
                    strata_argv(*args),
                    stdout=out if out is not None else err,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    cwd=REPO,
                    env=env,
                    check=False,
                )
        except OSError as exc:
            raise BenchError(f"{what}: cannot run {sys.executable}: {exc}") from None
    seconds = time.monotonic() - start
    if done.returncode != 0:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        raise BenchError(
            f"{what} failed (exit {done.returncode}): {shorten(lines[-1]) if lines else 'no output'}"
        )
    return seconds


@dataclass
class Run:
    """What one bench run measured and did."""

    logs: Path
    points: list[Measurement] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)  # "build 1: 812.3 s"
    gc_document: dict[str, Any] | None = None
    state_root: Path | None = None


def run_bench(run: Run, matrix: Matrix, no_build: bool, skip_gc: bool, file_args: Sequence[str]) -> None:
    try:
        client = engine_client(matrix.settings)
    except StrataError as exc:
        raise BenchError(str(exc)) from None

    def point(name: str) -> None:
        print(f"bench: measuring ({name})", file=sys.stderr, flush=True)
        run.points.append(measure(name, client, matrix))

    if no_build:
        point(NOW)
        return
    point(BEFORE)
    for number, name in ((1, AFTER_BUILD_1), (2, AFTER_BUILD_2)):
        build = ["build", *file_args, "--matrix", "--progress", "plain"]
        seconds = run_strata(f"strata build --matrix (run {number})", build, run.logs / f"build-{number}.log")
        run.steps.append(f"build {number}: {seconds:.1f} s")
        point(name)
    if skip_gc:
        return
    gc_json = run.logs / "gc.json"
    seconds = run_strata("strata gc", ["gc", *file_args, "--format", "json"], run.logs / "gc.log", gc_json)
    run.steps.append(f"gc: {seconds:.1f} s")
    try:
        run.gc_document = json.loads(gc_json.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"{gc_json}: not gc's JSON document ({exc})") from None
    point(AFTER_GC)


def report(run: Run, why_no_verdict: str) -> str:
    lines = [summary_table(run.points), "", detail_table(run.points), ""]
    if run.gc_document is not None:
        lines.append(gc_freed_line(run.gc_document))
    if run.steps:
        lines.append("steps: " + ", ".join(run.steps))
    for m in run.points:
        if m.missing:
            lines.append(
                f"{m.point}: * reference without {len(m.missing)} image(s) the matrix needs, not in the engine: "
                + ", ".join(m.missing)
            )
        if m.untagged_labelled:
            lines.append(
                f"{m.point}: untagged images with Strata's label hold {human_bytes(m.untagged_labelled)} more "
                "(not counted: an untagged image is nobody's for sure)"
            )
        if m.other_profiles:
            lines.append(
                f"{m.point}: images of the matrix's other profiles hold {human_bytes(m.other_profiles)} more "
                "(counted in Strata images: gc keeps every profile's nodes; not in the reference)"
            )
        lines += [f"{m.point}: note: {note}" for note in m.notes]
    lines.append(f"state root: {run.state_root}; logs and results.json: {run.logs}")
    lines.append(verdict(run.points, why_no_verdict))
    return "\n".join(lines)


def failed_after_build(points: Sequence[Measurement]) -> list[Measurement]:
    """Points after a build (or gc) at which an image the matrix needs was not in the engine."""
    return [m for m in points if m.point in (AFTER_BUILD_1, AFTER_BUILD_2, AFTER_GC) and m.missing]


def write_results(run: Run) -> None:
    body = {
        "points": [
            {
                **asdict(m),
                "total": m.total,
                "reference": m.reference,
                "ratio": m.ratio,
                "state_total": m.state_total,
            }
            for m in run.points
        ],
        "steps": run.steps,
        "gc": run.gc_document,
    }
    (run.logs / "results.json").write_text(json.dumps(body, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-f", "--file", metavar="PATH", help="matrix file (as for strata; default: its own lookup)"
    )
    parser.add_argument("--no-build", action="store_true", help="measure once: no build, no gc (read-only)")
    parser.add_argument("--skip-gc", action="store_true", help="build twice and measure, but do not run gc")
    args = parser.parse_args(argv)
    run = Run(logs=REPO / "build" / "bench" / f"disk-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        matrix = load_matrix_facts(args.file)
        file_args = ["-f", str(matrix.settings.matrix_file.absolute())]
        run.state_root = matrix.settings.state_root
        run.logs.mkdir(parents=True, exist_ok=True)
        run_bench(run, matrix, args.no_build, args.skip_gc, file_args)
    except BenchError as exc:
        if run.points:
            print(report(run, "the run stopped"))
            write_results(run)
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    print(report(run, "--no-build" if args.no_build else "--skip-gc" if args.skip_gc else ""))
    write_results(run)
    missing = failed_after_build(run.points)
    if missing:
        print(
            f"bench: {missing[-1].point}: {len(missing[-1].missing)} image(s) the matrix needs are not in the "
            f"engine: {', '.join(missing[-1].missing)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
