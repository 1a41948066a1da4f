"""`strata render` and `strata plan`: planning only (no Docker, no network)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from builder.events import LockState
from builder.plan.github import github_matrix
from builder.plan.graph import Plan
from builder.plan.write import write_dockerfiles
from cli.common import add_matrix_args, load_plan, settings_for
from cli.output import add_format_arg, console, print_json


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
    add_format_arg(p, choices=("table", "json", "github"))
    p.set_defaults(func=cmd_plan)


def cmd_render(args: argparse.Namespace) -> int:
    plan = load_plan(args, settings_for(args))
    out = Path(args.out)
    written = write_dockerfiles(plan, out)
    print(f"rendered {len(written)} Dockerfiles under {out}/")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    plan = load_plan(args, settings_for(args))
    if args.format == "json":
        print_json("plan", {"profile": plan.matrix.profile, "nodes": [n.to_json() for n in plan.nodes]})
    elif args.format == "github":
        json.dump(github_matrix(plan), sys.stdout, separators=(",", ":"))
        print()
    else:
        print_plan_table(plan)
    return 0


def print_plan_table(plan: Plan) -> None:
    table = Table(title=f"strata plan ({plan.matrix.profile}, {len(plan.nodes)} nodes)", show_lines=False)
    for col in ("node", "layer", "parent", "cells", "hash", "lock", "tag"):
        table.add_column(col, overflow="fold")
    for n in plan.nodes:
        state: str = "-"
        if n.lock_path is not None:
            state = LockState.OK if n.lock and n.lock.inputs == n.lock_inputs else LockState.STALE
        table.add_row(
            n.id,
            n.layer,
            n.parent or "-",
            ",".join(n.cells),
            n.content_hash[:12],
            state,
            n.tags[0].split("/", 1)[1],
        )
    console().print(table)
