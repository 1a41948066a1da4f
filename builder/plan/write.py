"""Write the plan's rendered Dockerfiles to a directory: `<out>/<node-id>/Dockerfile`, each replaced atomically."""

from __future__ import annotations

from pathlib import Path

from builder.plan.graph import Plan


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
