"""Bump `release: N` in matrix.yaml in place, keeping comments and layout (`strata lock --bump-release`)."""

from __future__ import annotations

import re
from pathlib import Path

from builder.errors import Location, MatrixError


def bump_release(matrix_file: Path) -> int:
    """Increment the top-level `release: N` line in place (comments and layout are kept); returns the new N."""
    text = matrix_file.read_text(encoding="utf-8")
    match = re.search(r"^release:[ \t]*(\d+)", text, re.M)
    if not match:
        raise MatrixError("no top-level 'release: N' line to bump", Location(str(matrix_file)))
    new = int(match.group(1)) + 1
    tmp = matrix_file.with_suffix(".tmp")
    tmp.write_text(text[: match.start(1)] + str(new) + text[match.end(1) :], encoding="utf-8")
    tmp.replace(matrix_file)
    return new
