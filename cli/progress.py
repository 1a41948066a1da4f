"""What a person sees during long work: one live line per running node (its current step), then a summary."""

from __future__ import annotations

import re
import sys
import threading
from typing import Any

from rich.console import Console
from rich.table import Table

_STEP = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[[^\]]+\] .*)$")


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


class BuildReporter:
    """Prints node steps (not every build line) to stderr; silent with quiet=True."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet
        self.verbose = verbose
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self._lock = threading.Lock()
        self._last: dict[str, str] = {}

    def event(self, node: str, message: str) -> None:
        if self.quiet:
            return
        if (
            not self.verbose
            and node != "-"
            and message not in ("preparing context", "building", "canonicalizing")
        ):
            match = _STEP.match(message.strip())
            if not match:
                return
            message = match.group(1)[:160]
        with self._lock:
            if self._last.get(node) == message:
                return
            self._last[node] = message
            label = "strata" if node == "-" else node
            self.console.log(f"{label} {message}", markup=False, highlight=False)

    def summary(self, outcomes: list[Any]) -> None:
        table = Table(title="strata build")
        for col in ("node", "status", "duration", "size"):
            table.add_column(col)
        style = {"built": "green", "cached": "cyan", "pulled": "blue", "failed": "red", "skipped": "yellow"}
        for o in outcomes:
            table.add_row(
                o.node,
                f"[{style.get(o.status, '')}]{o.status}[/]",
                f"{o.seconds:.1f}s" if o.seconds else "-",
                human_size(o.size) if o.size else "-",
            )
        Console(file=sys.stdout, width=120).print(table)
        for o in outcomes:
            if o.status == "failed":
                self.console.print(f"strata: {o.message}", style="red", markup=False, highlight=False)
