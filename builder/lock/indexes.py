"""Where wheels may come from: PyPI's file host and the package indexes (mirrors) set in pip's configuration.

A lock names each wheel by sha256 and by the URL it was resolved from. The sha256 is the identity; the URL says
where to fetch it first, and must be on a host Strata was told about:

    https://files.pythonhosted.org            PyPI's files, always
    the origin of each configured index       scheme, host and port of pip's index-url / extra-index-url
    a file: index (file:///srv/pypi/simple)   files under its root (/srv/pypi: the directory that holds simple/)

pip's configuration is read once by the CLI (`read_pip_indexes`, running `python -m pip config list`) into
Settings; everything else here is pure.
"""

from __future__ import annotations

import ast
import posixpath
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

PYPI_FILES = "https://files.pythonhosted.org"
PIP_CONFIG_TIMEOUT_SECONDS = 60
_DEFAULT_PORTS = {"http": 80, "https": 443}
# `pip config list` prints `<scope>.<key>='<value>'`; install.* and :env:.* win over global.* for `pip install`.
_PIP_CONFIG_LINE = re.compile(r"^(?P<scope>global|install|:env:)\.(?P<key>[a-z-]+)=(?P<value>.*)$")
_PRECEDENCE = {"global": 0, "install": 1, ":env:": 2}


@dataclass(frozen=True)
class PipIndexes:
    """pip's index-url (None: PyPI) and extra-index-urls, in pip's order."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()


def parse_pip_config_list(text: str) -> PipIndexes:
    """The indexes in the output of `pip config list` (pure).

    Example: "global.extra-index-url='file:///opt/pypi/simple https://m.example/simple'" ->
    PipIndexes(None, ('file:///opt/pypi/simple', 'https://m.example/simple')).
    """
    best: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        m = _PIP_CONFIG_LINE.match(line.strip())
        if m is None or m["key"] not in ("index-url", "extra-index-url"):
            continue
        try:
            value = ast.literal_eval(m["value"].strip())  # pip prints repr(value)
        except (ValueError, SyntaxError):
            continue
        if not isinstance(value, str):
            continue
        rank = _PRECEDENCE[m["scope"]]
        if m["key"] not in best or rank >= best[m["key"]][0]:
            best[m["key"]] = (rank, value)
    index = best.get("index-url", (0, ""))[1].strip() or None
    extras = tuple(best.get("extra-index-url", (0, ""))[1].split())
    return PipIndexes(
        None if index in (None, "https://pypi.org/simple", "https://pypi.org/simple/") else index, extras
    )


def read_pip_indexes(environ: Mapping[str, str], python: str = sys.executable) -> PipIndexes:
    """pip's configured indexes as `python -m pip config list` reports them in `environ`; none when pip cannot say."""
    try:
        done = subprocess.run(
            [python, "-m", "pip", "config", "list"],
            env=dict(environ),
            capture_output=True,
            text=True,
            timeout=PIP_CONFIG_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return PipIndexes()
    return parse_pip_config_list(done.stdout) if done.returncode == 0 else PipIndexes()


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


def file_index_root(index: str) -> str:
    """The directory a file: index serves wheels from: the parent of its `simple` directory, else itself.

    Example: file_index_root('file:///opt/pypi/simple/') == '/opt/pypi'.
    """
    path = posixpath.normpath(unquote(urlsplit(index).path))
    return posixpath.dirname(path) if posixpath.basename(path) == "simple" else path


def wheel_url_problem(url: str, indexes: Sequence[str]) -> str | None:
    """None when `url` is on PyPI's file host or under one of `indexes`, else why it is not allowed.

    Example: wheel_url_problem('https://evil.example/x.whl', ()) ==
    "host evil.example is neither https://files.pythonhosted.org nor a configured package index".
    """
    parts = urlsplit(url)
    if parts.username or parts.password:
        return "the URL carries credentials"
    if parts.scheme == "file":
        path = posixpath.normpath(unquote(parts.path))
        for index in indexes:
            if urlsplit(index).scheme == "file":
                root = file_index_root(index)
                if path.startswith(root.rstrip("/") + "/"):
                    return None
        return f"file {path} is not under a configured file: package index"
    origin = _origin(url)
    if origin == _origin(PYPI_FILES) or any(origin == _origin(i) for i in indexes if "://" in i):
        return None
    where = f"{origin[0]}://{origin[1]}" + (
        f":{origin[2]}" if origin[2] != _DEFAULT_PORTS.get(origin[0]) else ""
    )
    return f"{where} is neither {PYPI_FILES} nor a configured package index"


def project_page_url(index: str, project: str) -> str:
    """The PEP 503 page of `project` (a canonical name) on `index`: '<index>/<project>/'."""
    return index.rstrip("/") + "/" + project + "/"
