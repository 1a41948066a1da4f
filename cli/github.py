"""GitHub Actions: errors that name a file and line also become `::error` workflow commands (annotations on the
pull request's diff). Printed on stderr, which the runner reads for workflow commands like stdout, so that
`--format json` output on stdout stays a document.
"""

from __future__ import annotations

import os
from pathlib import Path

from builder.errors import Location
from cli.environment import GITHUB_ACTIONS_ENV


def under_github_actions() -> bool:
    """True on GitHub's runners ($GITHUB_ACTIONS is "true")."""
    return os.environ.get(GITHUB_ACTIONS_ENV, "").strip().lower() == "true"


def github_error(location: Location, message: str) -> str:
    """A GitHub Actions `::error` workflow command for `message` at `location`, escaped as the runner expects.

    Example: `::error file=matrix.yaml,line=14,col=7::tf 2.10 needs Python <=3.10`.
    """
    path = Path(location.file)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())  # annotations attach to paths relative to the checkout
    props = [f"file={_escape(str(path), prop=True)}", f"line={location.line}"]
    if location.column is not None:
        props.append(f"col={location.column}")
    return f"::error {','.join(props)}::{_escape(message)}"


def _escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text
