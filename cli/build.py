"""`strata build` and `strata verify`: build the plan on the local engine; prove images are reproducible."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from builder.build.orchestrate import BuildOptions, NodeOutcome, build_images, check_buildable
from builder.build.verify import verify_nodes, verify_targets
from builder.engine.client import BUILD_TIMEOUT_SECONDS, engine_client
from builder.engine.host import ensure_engine
from builder.events import EventSink, NodeStatus, tee
from builder.plan.graph import Plan
from builder.settings import Settings
from cli.common import (
    add_events_arg,
    add_matrix_args,
    add_wait_args,
    load_plan,
    open_events,
    settings_for,
    with_run_lock,
)
from cli.output import add_format_arg, add_progress_arg, console, print_json, progress_mode, wants_json
from cli.progress import BuildReporter
from cli.summary import build_summary, write_step_summary
from registry_sync.publish.cache import open_registry_cache
from validate.smoke.report import render
from validate.smoke.results import ImageReport
from validate.smoke.runner import smoke_images


def register(sub: Any) -> None:
    p = sub.add_parser(
        "build",
        help="build the plan's images on the local Docker engine",
        description="Build every node of the plan that the engine does not already have, parents first;\n"
        "sets up the host (engine, mmdebstrap) when missing.\n\nexample: strata build --only 'tf2.13.1-*'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_matrix_args(p, whole_matrix=True)
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="independent nodes (e.g. the chains of two TensorFlow versions) to build at once (default 2)",
    )
    p.add_argument("--keep-going", action="store_true", help="after a failure, still build independent nodes")
    p.add_argument("--quiet", action="store_true", help="no progress, only the summary")
    p.add_argument("--verbose", action="store_true", help="stream every build log line")
    add_format_arg(p)
    add_progress_arg(p)
    p.add_argument(
        "--smoke", action="store_true", help="run `strata smoke` on every freshly built cell's final image"
    )
    p.add_argument("--expect-gpu", action="store_true", help="with --smoke: a missing GPU fails gpu cells")
    add_events_arg(p)
    add_wait_args(p)
    p.set_defaults(func=with_run_lock(cmd_build))

    p = sub.add_parser(
        "verify",
        help="rebuild nodes twice from scratch and prove their images are identical",
        description="Rebuild each selected node twice, isolated from every cache, canonicalize both and compare\n"
        "config digests and diff_ids; differences are explained file by file. Exit 1 if any node differs.\n\n"
        "example: strata verify --only tf2.13.1-cpu --format json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_matrix_args(p)
    add_format_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines (same as --progress quiet)")
    add_progress_arg(p)
    p.add_argument(
        "--rebuilds",
        type=int,
        choices=[1, 2],
        default=2,
        help="2 (default): two isolated rebuilds; 1: compare one rebuild with the image the last build made",
    )
    p.add_argument("--keep", metavar="DIR", help="keep both canonical OCI layouts per node under DIR/<node>/")
    add_events_arg(p)
    add_wait_args(p)
    p.set_defaults(func=with_run_lock(cmd_verify))


def cmd_build(args: argparse.Namespace) -> int:
    with open_events(args) as record:
        return _build(args, record)


def _build(args: argparse.Namespace, record: EventSink) -> int:
    settings = settings_for(args)
    plan = load_plan(args, settings)
    check_buildable(plan)
    reporter = BuildReporter(progress_mode(args), verbose=args.verbose, total=len(plan.nodes))
    ensure_engine(settings, auto_start=True).close()
    client = engine_client(settings, BUILD_TIMEOUT_SECONDS)
    options = BuildOptions(
        jobs=args.jobs,
        keep_going=args.keep_going,
        on_event=tee(reporter.event, record),
        caches=[lambda: open_registry_cache(plan.matrix, settings)],
    )
    with reporter:
        outcomes = build_images(plan, client, settings, options)
    if not wants_json(args):
        reporter.summary(outcomes)
    failed = any(not o.status.ok for o in outcomes)
    reports: list[ImageReport] | None = None
    if args.smoke and not failed:
        reports = smoke_fresh_cells(plan, client, settings, outcomes, args.expect_gpu, quiet=wants_json(args))
        failed = any(r.status == "fail" for r in reports)
    if wants_json(args):
        smoked = None if reports is None else [r.to_dict() for r in reports]
        print_json("build", {"ok": not failed, "nodes": [o.to_json() for o in outcomes], "smoke": smoked})
    write_step_summary(build_summary(outcomes, reports))
    return 1 if failed else 0


def smoke_fresh_cells(
    plan: Plan, client: Any, settings: Settings, outcomes: list[NodeOutcome], expect_gpu: bool, quiet: bool
) -> list[ImageReport]:
    """Smoke-test the final image of every cell whose final node this run built; the reports."""
    built = {o.node for o in outcomes if o.status is NodeStatus.BUILT}
    refs = [plan.final_node(c).tags[0] for c in plan.cell_ids() if plan.final_node(c).id in built]
    if not refs:
        print("smoke: no cell was freshly built", file=sys.stderr)
        return []
    reports = smoke_images(client, refs, expect_gpu=expect_gpu, results_dir=settings.smoke_results_dir)
    print(render(reports, "table"), file=sys.stderr if quiet else sys.stdout)
    return reports


def cmd_verify(args: argparse.Namespace) -> int:
    with open_events(args) as record:
        return _verify(args, record)


def _verify(args: argparse.Namespace, record: EventSink) -> int:
    settings = settings_for(args)
    plan = load_plan(args, settings)
    ensure_engine(settings, auto_start=True).close()
    targets = verify_targets(plan, args.only)
    reporter = BuildReporter(progress_mode(args), total=len(targets or plan.nodes), verify=True)
    with reporter:
        results = verify_nodes(
            plan,
            engine_client(settings, BUILD_TIMEOUT_SECONDS),
            settings,
            on_event=tee(reporter.event, record),
            rebuilds=args.rebuilds,
            targets=targets,
            keep=Path(args.keep).absolute() if args.keep else None,
            caches=[lambda: open_registry_cache(plan.matrix, settings)],
        )
    if wants_json(args):
        print_json(
            "verify",
            {"reproducible": all(r.reproducible for r in results), "nodes": [r.to_json() for r in results]},
        )
    else:
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
        console().print(table)
    return 0 if all(r.reproducible for r in results) else 1
