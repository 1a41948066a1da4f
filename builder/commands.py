"""Planning subcommands: `strata render` and `strata plan` (pure: no Docker, no network)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from builder.matrix import DEFAULT_MATRIX, DEFAULT_PROFILE, load_matrix
from builder.plan import Plan, build_plan


def add_matrix_args(p: argparse.ArgumentParser, only: bool = True) -> None:
    """--matrix, --profile and (optionally) --only, shared by every command that reads the matrix."""
    p.add_argument("--matrix", default=DEFAULT_MATRIX, metavar="FILE", help="matrix file (default: matrix.yaml)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="where bases come from: hermetic (default) or upstream")
    if only:
        p.add_argument(
            "--only", action="append", metavar="GLOB", help="cells or nodes to select, e.g. 'tf2.13.1-*' (repeatable)"
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
        state = "-" if n.lock_path is None else ("ok" if n.lock and n.lock.inputs == n.lock_inputs else "stale")
        table.add_row(n.id, n.layer, n.parent or "-", ",".join(n.cells), n.content_hash[:12], state, n.tags[0].split("/", 1)[1])
    Console(width=200).print(table)
