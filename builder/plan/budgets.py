"""Size budgets: the most bytes a node's image may hold (matrix.yaml `budgets`), and the one-line verdict on a size.

Pure: the build (builder.build) measures each image and asks `over_budget`; an image over its budget fails the build.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from builder.matrix.load import Matrix


@dataclass(frozen=True)
class Budget:
    """A node's budget: `max_bytes` from the tightest matching entry, and where that entry is written."""

    max_bytes: int
    where: str  # matrix.yaml:LINE:COL of the entry's max_bytes


def node_budget(matrix: Matrix, node_id: str) -> Budget | None:
    """The tightest budget whose `nodes` glob matches `node_id`, or None when none does.

    Example: with `budgets: [{nodes: "cuda*", max_bytes: 3000000000}]`, node_budget(m, "cuda11.8-bookworm")
    is Budget(3000000000, "matrix.yaml:140:33").
    """
    found: Budget | None = None
    for i, entry in enumerate(matrix.model.budgets):
        if fnmatch.fnmatchcase(node_id, entry.nodes) and (found is None or entry.max_bytes < found.max_bytes):
            found = Budget(entry.max_bytes, str(matrix.locate("budgets", i, "max_bytes")))
    return found


def show_bytes(n: int) -> str:
    """2840000000 -> '2.84 GB' (decimal units, as `docker images` shows sizes)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def over_budget(node_id: str, size: int, budget: Budget | None) -> str | None:
    """The one-line message when an image of `size` bytes breaks the budget, else None."""
    if budget is None or size <= budget.max_bytes:
        return None
    return (
        f"node {node_id}: image is {show_bytes(size)} ({size} bytes), over its budget of "
        f"{show_bytes(budget.max_bytes)} ({budget.max_bytes} bytes, {budget.where})"
    )
