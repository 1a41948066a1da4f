"""Planning subcommands: `strata render` and `strata plan` (pure: no Docker, no network)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from builder.errors import Location
from builder.matrix.load import DEFAULT_MATRIX, DEFAULT_PROFILE, load_matrix
from builder.plan.graph import Plan, build_plan


def add_matrix_args(p: argparse.ArgumentParser, only: bool = True) -> None:
    """--matrix, --profile and (optionally) --only, shared by every command that reads the matrix."""
    p.add_argument(
        "--matrix",
        nargs="?",
        const=DEFAULT_MATRIX,
        default=DEFAULT_MATRIX,
        metavar="FILE",
        help="matrix file (default: matrix.yaml)",
    )
    p.add_argument(
        "--profile", default=DEFAULT_PROFILE, help="where bases come from: hermetic (default) or upstream"
    )
    if only:
        p.add_argument(
            "--only",
            action="append",
            metavar="GLOB",
            help="cells or nodes to select, e.g. 'tf2.13.1-*' (repeatable)",
        )


def load_plan(args: argparse.Namespace) -> Plan:
    plan = build_plan(load_matrix(args.matrix, args.profile))
    return plan.select(getattr(args, "only", None))


def register(sub: Any) -> None:
    p = sub.add_parser(
        "render",
        help="write one Dockerfile per layer node",
        description="Render layers/<layer>/Dockerfile.j2 for every node.\n\nexample: strata render --out build/dockerfiles",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_matrix_args(p)
    p.add_argument("--out", default="build/dockerfiles", help="output directory (default: build/dockerfiles)")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser(
        "plan",
        help="print the DAG of layer builds",
        description="Print the build plan: nodes, parents, cells, content hashes and tags.\n\n"
        "example: strata plan --only 'tf2.13.1-*' --format json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_matrix_args(p)
    p.add_argument("--format", choices=["table", "json", "github"], default="table")
    p.set_defaults(func=cmd_plan)
    register_lock(sub)
    register_build(sub)
    register_verify(sub)


def cmd_render(args: argparse.Namespace) -> int:
    plan = load_plan(args)
    out = Path(args.out)
    written = write_dockerfiles(plan, out)
    print(f"rendered {len(written)} Dockerfiles under {out}/")
    return 0


def write_dockerfiles(plan: Plan, out: Path) -> list[Path]:
    """Write <out>/<node-id>/Dockerfile for each node; files are replaced atomically."""
    written = []
    for node in plan.nodes:
        target = out / node.id / "Dockerfile"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(node.dockerfile, encoding="utf-8")
        tmp.replace(target)
        written.append(target)
    return written


def cmd_plan(args: argparse.Namespace) -> int:
    plan = load_plan(args)
    if args.format == "json":
        json.dump([n.to_json() for n in plan.nodes], sys.stdout, indent=2)
        print()
    elif args.format == "github":
        json.dump(github_matrix(plan), sys.stdout, separators=(",", ":"))
        print()
    else:
        print_plan_table(plan)
    return 0


def github_matrix(plan: Plan) -> dict[str, list[dict[str, str]]]:
    """The `strategy.matrix` object for GitHub Actions: one include entry per cell."""
    include = []
    for cell in plan.matrix.cells:
        if cell.id not in plan.cell_ids():
            continue
        final = plan.final_node(cell.id)
        include.append(
            {
                "cell": cell.id,
                "tf": cell.tf,
                "flavor": cell.flavor,
                "python": cell.python,
                "os": cell.os_name,
                "cuda": cell.cuda or "",
                "cudnn": cell.cudnn or "",
                "profile": plan.matrix.profile,
                "image": final.tags[0],
                "release": str(plan.matrix.model.release),
                # floating aliases of the cell's published (tools) image, for promotion jobs
                "aliases": " ".join(a for n in plan.nodes if cell.id in n.cells for a in n.aliases),
                "runner": "gpu" if cell.flavor == "gpu" else "cpu",
            }
        )
    return {"include": include}


def print_plan_table(plan: Plan) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"strata plan ({plan.matrix.profile}, {len(plan.nodes)} nodes)", show_lines=False)
    for col in ("node", "layer", "parent", "cells", "hash", "lock", "tag"):
        table.add_column(col, overflow="fold")
    for n in plan.nodes:
        state = (
            "-" if n.lock_path is None else ("ok" if n.lock and n.lock.inputs == n.lock_inputs else "stale")
        )
        table.add_row(
            n.id,
            n.layer,
            n.parent or "-",
            ",".join(n.cells),
            n.content_hash[:12],
            state,
            n.tags[0].split("/", 1)[1],
        )
    Console(width=200).print(table)


def register_lock(sub: Any) -> None:
    p = sub.add_parser(
        "lock",
        help="pin every input: wheels with sha256, base root filesystems and their Debian packages",
        description="Resolve each node's requirements for its Python and platform into locks/<profile>/<node>.lock.\n"
        "Re-running with nothing changed writes nothing.\n\nexample: strata lock --check",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_matrix_args(p)
    p.add_argument("--check", action="store_true", help="only report; exit 1 if any lock is missing or stale")
    p.add_argument(
        "--refresh", action="store_true", help="re-resolve even fresh locks (picks up new releases)"
    )
    p.add_argument(
        "--bump-release",
        action="store_true",
        help="if any lock changed, increment `release` in the matrix so new version tags never collide with old ones",
    )
    p.set_defaults(func=cmd_lock)


def cmd_lock(args: argparse.Namespace) -> int:
    from builder.lock.resolve import lock_states, write_locks
    from builder.paths import cache_dir

    plan = load_plan(args)
    if args.check:
        bad = [s for s in lock_states(plan) if s.state != "ok"]
        for s in bad:
            print(f"{s.path}: {s.state} (run: strata lock)", file=sys.stderr)
        if not bad:
            print(f"all {len(lock_states(plan))} locks are current")
        return 1 if bad else 0
    results = write_locks(plan, cache_dir(plan.matrix.root), refresh=args.refresh)
    written = [r for r in results if r.state == "written"]
    for r in written:
        print(f"wrote {r.path}")
    print(f"{len(written)} lock(s) written, {len(results) - len(written)} unchanged")
    if args.bump_release and written:
        new = bump_release(Path(args.matrix))
        print(f"release bumped to {new} in {args.matrix}: new version tags end in -r{new}")
    return 0


def bump_release(matrix_file: Path) -> int:
    """Increment the top-level `release: N` line in place (comments and layout are kept)."""
    import re

    from builder.errors import MatrixError

    text = matrix_file.read_text(encoding="utf-8")
    match = re.search(r"^release:[ \t]*(\d+)", text, re.M)
    if not match:
        raise MatrixError("no top-level 'release: N' line to bump", Location(str(matrix_file)))
    new = int(match.group(1)) + 1
    tmp = matrix_file.with_suffix(".tmp")
    tmp.write_text(text[: match.start(1)] + str(new) + text[match.end(1) :], encoding="utf-8")
    tmp.replace(matrix_file)
    return new


def register_build(sub: Any) -> None:
    p = sub.add_parser(
        "fetch",
        help="download every locked wheel once into the content-addressed wheelhouse",
        description="Download and sha256-verify every wheel the selected locks name; corrupt files are re-fetched.\n\n"
        "example: strata fetch --only 'tf2.13.1-*'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_matrix_args(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser(
        "build",
        help="build the plan's images on the local Docker engine",
        description="Build every node of the plan that the engine does not already have, parents first;\n"
        "sets up the host (engine, mmdebstrap) when missing.\n\nexample: strata build --matrix --only 'tf2.13.1-*'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_matrix_args(p)
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="independent nodes (e.g. the chains of two TensorFlow versions) to build at once (default 2)",
    )
    p.add_argument("--keep-going", action="store_true", help="after a failure, still build independent nodes")
    p.add_argument("--quiet", action="store_true", help="no progress, only the summary")
    p.add_argument("--verbose", action="store_true", help="stream every build log line")
    p.add_argument("--format", choices=["table", "json"], default="table", help="summary format")
    p.add_argument(
        "--smoke", action="store_true", help="run `strata smoke` on every freshly built cell's final image"
    )
    p.add_argument("--expect-gpu", action="store_true", help="with --smoke: a missing GPU fails gpu cells")
    p.set_defaults(func=cmd_build)


def cmd_fetch(args: argparse.Namespace) -> int:
    from builder.lock.fetch import fetch_wheels
    from builder.paths import cache_dir

    plan = load_plan(args)
    wheels = [w for n in plan.nodes if n.lock for w in n.lock.wheels]
    result = fetch_wheels(cache_dir(plan.matrix.root), wheels, repair=True)
    for name in result.repaired:
        print(f"re-fetched {name}: the stored file failed its sha256 check")
    print(
        f"{result.downloaded} downloaded ({result.bytes_downloaded / 1e6:.1f} MB), {result.reused} already verified"
    )
    return 0


def engine_client_for_builds() -> Any:
    """A client whose reads may take as long as saving or loading a multi-GB image does."""
    import docker

    return docker.from_env(timeout=3600)


def cmd_build(args: argparse.Namespace) -> int:
    from builder.build.orchestrate import BuildOptions, build_images, check_buildable
    from builder.engine.host import ensure_engine
    from cli.progress import BuildReporter

    plan = load_plan(args)
    check_buildable(plan)
    reporter = BuildReporter(quiet=args.quiet or args.format == "json", verbose=args.verbose)
    ensure_engine(auto_start=True).close()
    client = engine_client_for_builds()
    outcomes = build_images(
        plan, client, BuildOptions(jobs=args.jobs, keep_going=args.keep_going, on_event=reporter.event)
    )
    if args.format == "json":
        json.dump([o.to_json() for o in outcomes], sys.stdout, indent=2)
        print()
    else:
        reporter.summary(outcomes)
    failed = any(o.status in ("failed", "skipped") for o in outcomes)
    if args.smoke and not failed:
        failed = not smoke_fresh_cells(plan, client, outcomes, args.expect_gpu, quiet=args.format == "json")
    return 1 if failed else 0


def smoke_fresh_cells(plan: Plan, client: Any, outcomes: list[Any], expect_gpu: bool, quiet: bool) -> bool:
    """Smoke-test the final image of every cell whose final node this run built; True when nothing failed."""
    from validate.smoke.runner import smoke_images
    from validate.smoke.report import render

    built = {o.node for o in outcomes if o.status == "built"}
    refs = [plan.final_node(c).tags[0] for c in plan.cell_ids() if plan.final_node(c).id in built]
    if not refs:
        print("smoke: no cell was freshly built", file=sys.stderr)
        return True
    reports = smoke_images(client, refs, expect_gpu=expect_gpu)
    print(render(reports, "table"), file=sys.stderr if quiet else sys.stdout)
    return all(r.status != "fail" for r in reports)


def register_verify(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="rebuild nodes twice from scratch and prove their images are identical",
        description="Rebuild each selected node twice, isolated from every cache, canonicalize both and compare\n"
        "config digests and diff_ids; differences are explained file by file. Exit 1 if any node differs.\n\n"
        "example: strata verify --only tf2.13.1-cpu --format json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_matrix_args(p)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--rebuilds",
        type=int,
        choices=[1, 2],
        default=2,
        help="2 (default): two isolated rebuilds; 1: compare one rebuild with the image the last build made",
    )
    p.add_argument("--keep", metavar="DIR", help="keep both canonical OCI layouts per node under DIR/<node>/")
    p.set_defaults(func=cmd_verify)


def verify_targets(plan: Plan, patterns: list[str] | None) -> set[str] | None:
    """Nodes to verify: those a pattern names directly, and every node of a cell a pattern names (ancestors of a
    directly named node are only built, not verified)."""
    import fnmatch

    if not patterns:
        return None
    cells = {c for c in plan.cell_ids() if any(fnmatch.fnmatchcase(c, p) for p in patterns)}
    return {
        n.id
        for n in plan.nodes
        if set(n.cells) & cells or any(fnmatch.fnmatchcase(n.id, p) for p in patterns)
    }


def cmd_verify(args: argparse.Namespace) -> int:
    from builder.engine.host import ensure_engine
    from cli.progress import BuildReporter
    from builder.build.verify import verify_nodes

    plan = load_plan(args)
    ensure_engine(auto_start=True).close()
    reporter = BuildReporter(quiet=args.quiet or args.format == "json")
    results = verify_nodes(
        plan,
        engine_client_for_builds(),
        on_event=reporter.event,
        rebuilds=args.rebuilds,
        targets=verify_targets(plan, args.only),
        keep=Path(args.keep).absolute() if args.keep else None,
    )
    if args.format == "json":
        json.dump({"nodes": [r.to_json() for r in results]}, sys.stdout, indent=2, default=str)
        print()
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="strata verify")
        for col in ("node", "reproducible", "digest (1st)", "digest (2nd)", "differences"):
            table.add_column(col, overflow="fold")
        for r in results:
            table.add_row(
                r.id,
                "yes" if r.reproducible else "NO",
                r.digests[0][7:19] if r.digests else "-",
                r.digests[1][7:19] if len(r.digests) > 1 else "-",
                r.error or "; ".join(f"{d['path']} ({', '.join(d['fields'])})" for d in r.differences[:8]),
            )
        Console(width=160).print(table)
    return 0 if all(r.reproducible for r in results) else 1
