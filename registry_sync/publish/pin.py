"""`strata pin`: rewrite image references in Dockerfiles, compose files and Kubernetes YAML to `tag@digest`.

Rewriting is line based (never a YAML round trip), so comments, quoting, indentation and line endings stay as
they are; only the reference text changes. Which references count:

    Dockerfile / Containerfile (name starts with Dockerfile or Containerfile, or ends with .Dockerfile):
        FROM [--platform=...] REF [AS name]          COPY --from=REF ...   (when REF names an image)
    anything else (compose files, Kubernetes manifests, Helm values):
        image: REF          at any indentation, also as `- image: REF`, quoted or not, with a trailing comment

Each reference gets one outcome: pinned, re-pinned (its digest was not the locked one), already pinned, or
unknown (not in the lock, or not a literal reference such as `$BASE` or `{{ .Values.image }}`), left untouched.
A floating alias the lock records (`...:2.13-gpu`, its `aliases`) is pinned to the digest it named when the lock
was published, keeping the alias as written: `...:2.13-gpu@sha256:...`.

What is written is what the lock vouches for and nothing else: only a `sha256:` + 64 lower-case hex digest
(images.lock.json is checked against its schema when read, and each digest again here). Files are written only
where they are: a file reached through a symlink is edited in place (the link stays) when it lies inside the
tree being pinned (the current directory), else refused; only regular files are read; every file is read and
computed before the first is written, and each is written to a temporary file in its own directory and renamed
over it (mode kept), so no file is ever left half-written. `--check` writes nothing.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.errors import StrataError
from builder.matrix.types import show
from registry_sync.publish.images_lock import ImagesLock
from registry_sync.registry.reference import ImageRef

PINNED = "pinned"
REPINNED = "re-pinned"
ALREADY = "already pinned"
UNKNOWN = "unknown"

_FROM = re.compile(r"^(?P<lead>\s*FROM\s+(?:--\S+\s+)*)(?P<ref>\S+)(?P<rest>.*)$", re.IGNORECASE)
_COPY_FROM = re.compile(
    r"^(?P<lead>\s*(?:COPY|ADD)\s+(?:--\S+\s+)*?--from=)(?P<ref>[^\s]+)(?P<rest>.*)$", re.IGNORECASE
)
_IMAGE = re.compile(
    r"""^(?P<lead>\s*(?:-\s+)?["']?image["']?\s*:\s*)(?P<q>["']?)(?P<ref>[^\s"'#]+)(?P=q)(?P<rest>\s*(?:\#.*)?)$"""
)
# An `image:` key with some value the strict pattern did not take (templated, several words): reported as unknown.
_IMAGE_ANY = re.compile(r"""^\s*(?:-\s+)?["']?image["']?\s*:\s*(?P<ref>[^\s#].*?)\s*(?:\s#.*)?$""")
_STAGE = re.compile(r"\s+AS\s+(?P<name>\S+)\s*$", re.IGNORECASE)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
MAX_PIN_BYTES = 16 << 20  # a Dockerfile or manifest larger than this is not one


class PinError(StrataError):
    """A file to pin cannot be read or written."""


@dataclass(frozen=True)
class PinOutcome:
    """What happened to one reference: file, 1-based line, the reference as written, outcome and the new text."""

    file: str
    line: int
    original: str
    outcome: str
    replacement: str | None = None
    note: str = ""

    @property
    def changes(self) -> bool:
        return self.outcome in (PINNED, REPINNED)

    def describe(self) -> str:
        """One line for the terminal, e.g. 'Dockerfile:1: pinned 127.0.0.1:5000/strata/base:x@sha256:…'."""
        where = f"{self.file}:{self.line}"
        if self.outcome in (PINNED, REPINNED):
            return f"{where}: {self.outcome} {self.replacement}" + (f" ({self.note})" if self.note else "")
        return f"{where}: {self.outcome} {self.original}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class PinnedFile:
    """A file's new text and the outcome of each reference in it. `path` is the file as named, `target` the
    regular file that is written (the same, or the file a symlink inside the pinned tree points at)."""

    path: Path
    text: str
    outcomes: tuple[PinOutcome, ...]
    target: Path | None = None

    @property
    def changed(self) -> bool:
        return any(o.changes for o in self.outcomes)


def is_dockerfile(path: Path) -> bool:
    """Dockerfile, Dockerfile.gpu, Containerfile, app.Dockerfile (case-insensitive)."""
    name = path.name.lower()
    return name.startswith(("dockerfile", "containerfile")) or name.endswith(".dockerfile")


def pin_reference(text: str, lock: ImagesLock) -> tuple[str, str | None, str]:
    """The outcome for one reference as written: (outcome, replacement or None, note).

    Example: pin_reference("127.0.0.1:5000/strata/base:bookworm", lock) -> ("pinned", "...:bookworm@sha256:...", "").
    """
    ref = ImageRef.parse(text)
    if ref is None:
        return UNKNOWN, None, "not a literal image reference"
    entry = lock.lookup(ref)
    if entry is None:
        return UNKNOWN, None, "not in the lock"
    if not _DIGEST.fullmatch(entry.digest):
        # read_images_lock refuses such a lock; a lock built in code must not slip one through either.
        raise PinError(
            f"images.lock.json: {entry.reference}: digest {show(entry.digest)} is not sha256:<64 hex>"
        )
    # An alias (`...:2.13-cpu`) keeps its name and gets the digest it had when the lock was published.
    via = f"alias of {entry.reference}" if ref.tag and ref.tagged != entry.reference else ""
    if ref.digest == entry.digest:
        return ALREADY, None, via
    pinned = f"{ref.tagged}@{entry.digest}"
    if ref.digest:
        return REPINNED, pinned, "; ".join(filter(None, [f"was {ref.digest}", via]))
    return PINNED, pinned, via


def pin_text(
    text: str, lock: ImagesLock, *, dockerfile: bool, file: str = "-"
) -> tuple[str, list[PinOutcome]]:
    """Rewrite every reference in `text` (a Dockerfile when `dockerfile`, else YAML); returns the text and outcomes."""
    lines = text.splitlines(keepends=True)
    outcomes: list[PinOutcome] = []
    out: list[str] = []
    stages = {"scratch"}  # names a Dockerfile FROM or COPY --from may use that are not images
    for number, line in enumerate(lines, start=1):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        match = _match_reference(body, dockerfile)
        if match is not None:
            written = match.group("ref")
            is_stage = written.lower() in stages or (match.re is _COPY_FROM and written.isdigit())
            if match.re is _FROM and (stage := _STAGE.search(match.group("rest"))):
                stages.add(stage.group("name").lower())
            if is_stage:
                out.append(line)
                continue
            if match.re is _IMAGE_ANY:
                outcome, replacement, note = UNKNOWN, None, "not a literal image reference"
            else:
                outcome, replacement, note = pin_reference(written, lock)
            outcomes.append(PinOutcome(file, number, written, outcome, replacement, note))
            if replacement is not None:
                start, end = match.span("ref")
                body = body[:start] + replacement + body[end:]
        out.append(body + ending)
    return "".join(out), outcomes


def _match_reference(line: str, dockerfile: bool) -> re.Match[str] | None:
    patterns = (_FROM, _COPY_FROM) if dockerfile else (_IMAGE, _IMAGE_ANY)
    for pattern in patterns:
        match = pattern.match(line)
        if match:
            return match
    return None


def pin_target(path: Path, root: Path) -> Path:
    """The regular file `path` names, to be read and written: `path` itself, or the file a symlink (anywhere
    along `path`) leads to when that file is inside `root` (the tree being pinned). Raises PinError otherwise."""
    try:
        resolved = path.resolve(strict=True)
        info = resolved.stat()
    except FileNotFoundError:
        raise PinError(f"{path}: no such file") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop before Python 3.13
        raise PinError(f"{path}: cannot resolve ({getattr(exc, 'strerror', None) or exc})") from None
    through_link = resolved != Path(os.path.abspath(path))
    if through_link and not resolved.is_relative_to(root.resolve()):
        raise PinError(f"{path}: leads through a symlink to {resolved}, outside {root}; not pinned")
    if not stat.S_ISREG(info.st_mode):
        raise PinError(f"{path}: not a regular file")
    if info.st_size > MAX_PIN_BYTES:
        raise PinError(f"{path}: larger than {MAX_PIN_BYTES >> 20} MB; not a Dockerfile or manifest")
    return resolved


def pin_file(path: Path, lock: ImagesLock, root: Path | None = None) -> PinnedFile:
    """Read `path` and compute its pinned text (nothing is written)."""
    target = pin_target(path, root or Path.cwd())
    try:
        raw = target.read_bytes()
    except OSError as exc:
        raise PinError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PinError(f"{path}: not UTF-8 text") from None
    if "\0" in text:
        raise PinError(f"{path}: not text (it holds NUL characters)")
    new_text, outcomes = pin_text(text, lock, dockerfile=is_dockerfile(path), file=str(path))
    return PinnedFile(path, new_text, tuple(outcomes), target)


def write_pinned(pinned: PinnedFile) -> None:
    """Replace the file with its pinned text atomically (a temporary file in its directory, then a rename),
    keeping its permissions."""
    path = pinned.path
    target = pinned.target or path
    try:
        mode = target.stat().st_mode & 0o7777
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".strata-pin")
    except OSError as exc:
        raise PinError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(pinned.text)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise PinError(f"{path}: cannot write ({exc.strerror})") from None


def pin_files(
    paths: list[Path], lock: ImagesLock, *, check: bool, root: Path | None = None
) -> list[PinnedFile]:
    """Pin every file (all are read and checked before any is written); with `check`, nothing is written.

    `root` (default: the current directory) is the tree a symlinked file must lead into to be edited.
    """
    root = root or Path.cwd()
    results = [pin_file(p, lock, root) for p in paths]
    if not check:
        done: set[Path] = set()
        for result in results:
            target = result.target or result.path
            if result.changed and target not in done:  # a file named twice (or by a link too) is written once
                write_pinned(result)
                done.add(target)
    return results
