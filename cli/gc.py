"""`strata gc`: remove what Strata made that nothing needs any more, and say what it freed.

Each store lists its own entries (engine images and build records in builder/engine, wheels and root filesystems
in builder/lock, compressed layers in registry_sync/publish, scratch in builder/build); builder/plan/retention.py
decides what goes; this module prints the plan and, without --dry-run, deletes it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from builder.build.scratch import list_scratch
from builder.engine.build_records import (
    list_build_records,
    prune_build_records,
    records_freed_by,
    run_commands,
    strata_records,
)
from builder.engine.client import engine_client
from builder.engine.gc import (
    list_images,
    list_install_containers,
    remove_cached_files,
    remove_containers,
    remove_images,
)
from builder.lock.fetch import list_wheelhouse
from builder.lock.rootfs import list_debs, list_rootfs
from builder.plan.retention import (
    BUILD_CACHE,
    CATEGORIES,
    CONTAINERS,
    IMAGES,
    CachedFile,
    GcPlan,
    Inventory,
    freed_by_removing,
    needs_of,
    plan_gc,
    plans_of_every_profile,
)
from cli.common import add_matrix_file_arg, add_wait_args, settings_for, with_run_lock
from cli.output import add_format_arg, print_json, wants_json
from registry_sync.publish.compress import list_compressed_layers


def register(sub: Any) -> None:
    p = sub.add_parser(
        "gc",
        help="remove Strata's images, build cache and cached files that nothing needs any more",
        description="Remove Strata's engine images that no node of the matrix (any profile) is, BuildKit records of\n"
        "Strata's builds, compressed layers of images no longer in the engine, wheels, root filesystems and .debs no\n"
        "lock names, and scratch of killed runs; print one line per kind with counts and bytes, and a total.\n"
        "Never removes an image a container uses, one the matrix needs, or anything outside Strata's namespace.\n\n"
        "example: strata gc --keep-releases 2 --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_matrix_file_arg(p)
    p.add_argument(
        "--keep-releases",
        type=int,
        default=0,
        metavar="N",
        help="also keep the images of the N most recent releases (version tags ending in -r<release>)",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would go and its size; delete nothing")
    p.add_argument(
        "--keep-build-cache",
        action="store_true",
        help="leave the engine's build cache alone (on an engine other checkouts build on, their Strata builds'"
        " records look like this one's)",
    )
    add_format_arg(p, choices=("text", "json"), default="text")
    add_wait_args(p)
    p.set_defaults(func=with_run_lock(cmd_gc, unless=lambda args: args.dry_run))


def cmd_gc(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    plans = plans_of_every_profile(Path(args.matrix), settings.registry_override)
    needs = needs_of(
        plans, settings.matrix_root / "locks", keep_releases=max(0, args.keep_releases), now=time.time()
    )
    commands = frozenset(c for plan in plans for node in plan.nodes for c in run_commands(node.dockerfile))
    client = engine_client(settings)
    records = [] if args.keep_build_cache else list_build_records(client)
    attributed = strata_records(records, commands)
    inventory = Inventory(
        images=list_images(client),
        records=[CachedFile(r.id, (), r.freeable) for r in attributed],
        compressed_layers=list_compressed_layers(settings.compressed_layers_dir),
        wheels=list_wheelhouse(settings.cache_dir),
        rootfs=list_rootfs(settings.cache_dir),
        debs=list_debs(settings.cache_dir),
        scratch=list_scratch(settings),
        containers=list_install_containers(client),
    )
    plan = plan_gc(inventory, needs)
    attributed_ids = {r.id for r in attributed}
    foreign = [r for r in records if r.id not in attributed_ids and not r.in_use and r.freeable]
    problems: list[str] = []
    if args.dry_run:
        freed = {c: plan.bytes(c) for c in CATEGORIES}
    else:
        freed, problems = _delete(client, plan, inventory, records, commands, not args.keep_build_cache)
    if wants_json(args):
        print_json("gc", _gc_json(plan, freed, problems, args, foreign))
        return 0
    _report(plan, freed, "would free" if args.dry_run else "freed")
    for problem in problems:
        print(f"strata: {problem}")
    _notes(plan, args.keep_releases, foreign)
    return 0


def _gc_json(
    plan: GcPlan, freed: dict[str, int], problems: list[str], args: argparse.Namespace, foreign: list[Any]
) -> dict[str, Any]:
    kept = plan.kept
    return {
        "dry_run": bool(args.dry_run),
        "categories": {c: {"count": plan.count(c), "bytes": freed[c]} for c in CATEGORIES},
        "total": {"count": sum(plan.count(c) for c in CATEGORIES), "bytes": sum(freed.values())},
        "kept": {
            "plan": kept.plan,
            "releases": {f"r{r}": n for r, n in sorted(kept.releases.items())},
            "in_use": kept.in_use,
        },
        "keep_releases": args.keep_releases,
        "foreign_build_cache": {"records": len(foreign), "bytes": sum(r.freeable for r in foreign)},
        "problems": problems,
    }


def _delete(
    client: Any,
    plan: GcPlan,
    inventory: Inventory,
    records_before: list[Any],
    commands: frozenset[str],
    build_cache: bool,
) -> tuple[dict[str, int], list[str]]:
    """Delete the plan; returns the bytes freed per category (of what was really removed) and what was not."""
    containers = remove_containers(client, plan.files[CONTAINERS])  # first: they hold images in use
    removed, problems = remove_images(client, plan.images)
    gone = set(removed)
    image_bytes = freed_by_removing(
        [i for i in plan.images if i.id in gone], [i for i in inventory.images if i.id not in gone]
    )
    reclaimed = 0
    if build_cache:
        # Records whose layers only the raw leftovers just removed shared are Strata's too, and now free to go.
        after = list_build_records(client)
        freed_records = records_freed_by(records_before, after, commands)
        ids = [f.key for f in plan.files[BUILD_CACHE]] + [r.id for r in freed_records]
        _, reclaimed = prune_build_records(client, ids)
        reclaimed += _prune_until_settled(client, commands)
    freed = {IMAGES: image_bytes, BUILD_CACHE: reclaimed, CONTAINERS: containers}
    for category in CATEGORIES:
        if category not in freed:
            freed[category] = remove_cached_files(plan.files.get(category, ()))
    return freed, problems


def _prune_until_settled(client: Any, commands: frozenset[str], rounds: int = 4) -> int:
    """Prune the records that only became recognizable as Strata's once others went (a stage of copies is tied to
    its build by the records around it); at most `rounds` more listings. Returns the bytes reclaimed."""
    reclaimed = 0
    for _ in range(rounds):
        left = strata_records(list_build_records(client), commands)
        if not left:
            break
        removed, freed = prune_build_records(client, [r.id for r in left])
        reclaimed += freed
        if not removed:
            break  # the engine kept them (in use): listing again would find the same
    return reclaimed


def _report(plan: GcPlan, freed: dict[str, int], verb: str) -> None:
    print(f"strata gc: {verb}")
    for category in CATEGORIES:
        print(f"  {category:<18} {plan.count(category):>6}  {human_bytes(freed[category]):>10}")
    total = sum(plan.count(c) for c in CATEGORIES)
    print(f"  {'total':<18} {total:>6}  {human_bytes(sum(freed.values())):>10}")


def _notes(plan: GcPlan, keep_releases: int, foreign: list[Any]) -> None:
    kept = plan.kept
    parts = [f"{kept.plan} image(s) the matrix needs"]
    if kept.releases:
        releases = ", ".join(f"{n} of r{r}" for r, n in sorted(kept.releases.items(), reverse=True))
        parts.append(f"{releases} (--keep-releases {keep_releases})")
    if kept.in_use:
        parts.append(f"{kept.in_use} used by a container")
    print("kept: " + ", ".join(parts))
    if foreign:
        size = sum(r.freeable for r in foreign)
        print(
            f"not touched: {human_bytes(size)} of build cache in {len(foreign)} record(s) not tied to a Strata build "
            "(on an engine only Strata uses, `docker builder prune` frees them)"
        )


def human_bytes(size: int) -> str:
    """Decimal units, as `docker system df` prints them: 1.2 GB, 340.0 MB, 12 B."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
