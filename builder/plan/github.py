"""The plan as a GitHub Actions `strategy.matrix` (pure): one include entry per cell, for `strata plan --format github`."""

from __future__ import annotations

from builder.plan.graph import Plan


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
