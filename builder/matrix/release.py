"""Bump `release: N` in matrix.yaml in place, keeping comments and layout (`strata lock --bump-release`)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from builder.errors import Location, MatrixError


def bump_release(matrix_file: Path) -> int:
    """Increment the top-level `release: N` line in place (comments and layout are kept); returns the new N.

    The new text goes to a fresh temporary file (mkstemp: never a name planted in the checkout) in the matrix's
    directory and is renamed over the matrix, mode kept, so the matrix is never half-written.
    """
    text = matrix_file.read_text(encoding="utf-8")
    match = re.search(r"^release:[ \t]*([0-9]+)[ \t]*(?:#.*)?$", text, re.M)
    if not match:
        raise MatrixError("no top-level 'release: N' line to bump", Location(str(matrix_file)))
    new = int(match.group(1)) + 1
    target = matrix_file.resolve()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text[: match.start(1)] + str(new) + text[match.end(1) :])
        os.chmod(tmp, target.stat().st_mode & 0o7777)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise MatrixError(f"cannot write ({exc.strerror})", Location(str(matrix_file))) from None
    return new
