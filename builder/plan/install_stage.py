"""A rendered Dockerfile's install stage, read as data, so it can run outside the image build (pure).

Every install layer (cuda, framework, tools, user) renders `layers/_macros.j2`'s `install_stage`: a first stage
`FROM ${PARENT_IMAGE} AS install` that copies the lock in and runs pip (and the prune), then a final stage
`FROM ${PARENT_IMAGE}` that copies the installed tree and the .pth file out of it with `COPY --from=install`.

Building that through BuildKit writes the installed gigabyte three times: pip into the install stage's snapshot,
`COPY --from` into the final stage's, and the export into the raw image; and leaves two build cache records and a
raw image of that size to delete. `strata build` instead runs the install stage's RUN lines, unchanged, in a
container of the parent image (`builder.engine.install_container`), and builds a *stand-in* Dockerfile with the
engine: the same text from the final stage on (so the same config, history and small layers), whose install stage
only copies in the small files and an empty directory for each tree. The canonical image then takes each tree from
the container's own files (`builder.oci.graft`). The result is the image the plain Dockerfile gives, byte for byte;
the integration tests build both ways and compare image IDs.

Only the shape `install_stage` renders is recognized; anything else (other instructions or flags, JSON forms,
more stages) gives None, and the node is built from its Dockerfile as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INSTALL_FROM = "FROM ${PARENT_IMAGE} AS install"
FINAL_FROM = "FROM ${PARENT_IMAGE}"
STAGED_DIR = "staged"  # the stand-in's build context directory holding what the install stage left
_ARG = re.compile(r"ARG ([A-Z_][A-Z0-9_]*)")
_PLAIN_PATH = re.compile(r"/?[A-Za-z0-9._+-]+(?:/[A-Za-z0-9._+-]+)*")
_CONTINUATION = re.compile(r"\\[ \t]*$")


@dataclass(frozen=True)
class Instruction:
    """One logical Dockerfile line: its physical lines `first`..`last` (0-based, inclusive) and its text."""

    first: int
    last: int
    keyword: str  # upper case
    rest: str  # the text after the keyword, continuation lines joined as the Dockerfile parser joins them


@dataclass(frozen=True)
class InstallStage:
    """What the install stage does, and what the final stage takes from it.

    `runs` are shell texts for `/bin/sh -c`, in order; `args` the ARGs the stage declares (the RUN lines see
    them as environment variables); `context_copies` (source in the build context, destination) happen first;
    `exports` are the final stage's `COPY --from=install` (source in the install stage, destination).
    """

    args: tuple[str, ...]
    context_copies: tuple[tuple[str, str], ...]
    runs: tuple[str, ...]
    exports: tuple[tuple[str, str], ...]
    install_from_line: int  # physical line of `FROM ${PARENT_IMAGE} AS install`
    final_from_line: int  # physical line of the final stage's FROM


def instructions(dockerfile: str) -> list[Instruction]:
    """The Dockerfile's logical lines, comments and blank lines left out (pure).

    >>> [i.rest for i in instructions("RUN a \\\\\\n # note\\n  b\\nENV X=1")]
    ['a   b', 'X=1']
    """
    lines = dockerfile.split("\n")
    result: list[Instruction] = []
    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        first = index
        text = lines[index].lstrip()
        while _CONTINUATION.search(text) and index + 1 < len(lines):
            text = _CONTINUATION.sub("", text)
            index += 1
            while index < len(lines) and (not lines[index].strip() or lines[index].lstrip().startswith("#")):
                index += 1  # comment and empty lines inside a continued instruction are skipped
            if index >= len(lines):
                break
            text += lines[index]
        keyword, _, rest = text.partition(" ")
        result.append(Instruction(first, index, keyword.upper(), rest.lstrip()))
        index += 1
    return result


def parse_install_stage(dockerfile: str) -> InstallStage | None:
    """The install stage of a Dockerfile rendered from `install_stage`, or None for any other shape (pure)."""
    parsed = instructions(dockerfile)
    froms = [i for i in parsed if i.keyword == "FROM"]
    if len(froms) != 2 or f"FROM {froms[0].rest}" != INSTALL_FROM or f"FROM {froms[1].rest}" != FINAL_FROM:
        return None
    install_from, final_from = froms
    if any(i.keyword != "ARG" for i in parsed if i.first < install_from.first):
        return None
    args: list[str] = []
    copies: list[tuple[str, str]] = []
    runs: list[str] = []
    for item in parsed:
        if not install_from.first < item.first < final_from.first:
            continue
        if item.keyword == "ARG" and (match := _ARG.fullmatch(f"ARG {item.rest}")):
            args.append(match.group(1))
        elif item.keyword == "COPY" and (pair := _plain_pair(item.rest)) is not None:
            copies.append(pair)
        elif item.keyword == "RUN" and item.rest and not item.rest.startswith(("[", "--")):
            runs.append(item.rest)
        else:
            return None
    exports: list[tuple[str, str]] = []
    for item in parsed:
        if (
            item.first > final_from.first
            and item.keyword == "COPY"
            and item.rest.startswith("--from=install ")
        ):
            pair = _plain_pair(item.rest.removeprefix("--from=install "))
            if pair is None or not pair[0].startswith("/"):
                return None
            exports.append(pair)
        elif item.first > final_from.first and "--from" in item.rest and item.keyword in ("COPY", "ADD"):
            return None
    if not runs or not exports:
        return None
    return InstallStage(
        tuple(args), tuple(copies), tuple(runs), tuple(exports), install_from.first, final_from.first
    )


def stand_in_dockerfile(dockerfile: str, stage: InstallStage) -> str:
    """`dockerfile` with the install stage replaced by one that copies in `staged/` (pure).

    The lines before the install stage's FROM and everything from the final stage's FROM on are kept byte for byte:
    the final stage, and so the image config and history, is the same text.
    """
    lines = dockerfile.split("\n")
    head = lines[: stage.install_from_line]
    tail = lines[stage.final_from_line :]
    return "\n".join([*head, INSTALL_FROM, f"COPY {STAGED_DIR}/ /", "", *tail])


def _plain_pair(rest: str) -> tuple[str, str] | None:
    words = rest.split()
    if len(words) != 2 or not all(_PLAIN_PATH.fullmatch(w) for w in words):
        return None
    if any(part == ".." for w in words for part in w.split("/")):
        return None
    return words[0], words[1]
