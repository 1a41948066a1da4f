"""GitHub Actions' job summary: when `$GITHUB_STEP_SUMMARY` names a file, build, smoke and push append a short
Markdown table to it (https://docs.github.com/actions/reference/workflow-commands-for-github-actions).

Only the CLI reads the environment; the tables are built from the commands' results, pure functions of them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cli.progress import human_size

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def markdown_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """`### title`, then a Markdown table (cells with `|` escaped), then a blank line."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(str(c)) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n\n"


def build_summary(outcomes: Sequence[Any], smoke: Sequence[Any] | None = None) -> str:
    """`strata build`: node, status, time, size (and the smoke result of each image, if smoke ran)."""
    text = markdown_table(
        f"strata build: {len(outcomes)} nodes",
        ("node", "status", "time", "size"),
        [
            (
                o.node,
                str(o.status) + (f": {o.message}" if o.message and not o.status.ok else ""),
                f"{o.seconds:.1f}s" if o.seconds else "-",
                human_size(o.size) if o.size else "-",
            )
            for o in outcomes
        ],
    )
    return text + (smoke_summary(smoke) if smoke else "")


def smoke_summary(reports: Sequence[Any]) -> str:
    """`strata smoke`: image, status, checks passed / failed / not run, time."""
    rows = []
    for r in reports:
        counts = r.counts()
        rows.append(
            (
                r.image,
                r.status,
                f"{counts['pass']} / {counts['fail']} / {counts['not-run']}",
                f"{r.duration_s:.1f}s",
            )
        )
    return markdown_table(
        f"strata smoke: {len(reports)} images", ("image", "status", "pass / fail / not-run", "time"), rows
    )


def push_summary(results: Sequence[Any], seconds: float) -> str:
    """`strata push`: node, status, bytes uploaded, time, version reference and manifest digest."""
    return markdown_table(
        f"strata push: {len(results)} nodes in {seconds:.1f}s",
        ("node", "status", "uploaded", "time", "reference", "digest"),
        [
            (
                r.node,
                str(r.status) + (f": {r.message}" if str(r.status) == "failed" and r.message else ""),
                human_size(r.bytes_uploaded) if r.bytes_uploaded else "0",
                f"{r.seconds:.1f}s",
                r.target.version_ref,
                f"`{r.manifest_digest}`" if r.manifest_digest else "-",
            )
            for r in results
        ],
    )


def write_step_summary(markdown: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Append `markdown` to the file `$GITHUB_STEP_SUMMARY` names; None (and nothing written) without it.

    A summary that cannot be written is a warning on stderr, never a failed build.
    """
    env = os.environ if environ is None else environ
    target = env.get(STEP_SUMMARY_ENV, "")
    if not target:
        return None
    path = Path(target)
    try:
        with path.open("a", encoding="utf-8") as out:
            out.write(markdown)
    except OSError as exc:
        print(
            f"strata: warning: cannot append to ${STEP_SUMMARY_ENV} {path}: {exc.strerror}", file=sys.stderr
        )
        return None
    return path
