"""Image references: version tags (exact, immutable), content tags (for build avoidance) and floating aliases."""

from __future__ import annotations

import re
from dataclasses import dataclass

from builder.errors import MatrixError
from builder.matrix.types import REPOSITORY_TEXT, TAG_TEXT, parse_template, show

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*", re.ASCII)


@dataclass(frozen=True)
class TagFacts:
    """What a tag template may name: `{version}` is the exact cell version string."""

    namespace: str
    epoch: int
    os: str
    user: str = ""
    tf: str = ""
    flavor: str = ""
    python: str = ""
    cuda: str = ""
    cudnn: str = ""
    release: int = 1

    @property
    def cuda_version(self) -> str:
        return f"cuda{self.cuda}-cudnn{self.cudnn}" if self.cuda else ""

    @property
    def version(self) -> str:
        """The exact version string, e.g. `2.13.1-gpu-cuda11.8-cudnn8.6-py3.11-bookworm`."""
        accel = f"-{self.cuda_version}" if self.cuda else ""
        return f"{self.tf}-{self.flavor}{accel}-py{self.python}-{self.os}"

    def fields(self) -> dict[str, str]:
        tf_minor = ".".join(self.tf.split(".")[:2]) if self.tf else ""
        return {
            "namespace": self.namespace,
            "epoch": str(self.epoch),
            "os": self.os,
            "user": self.user,
            "tf": self.tf,
            "tf_minor": tf_minor,
            "flavor": self.flavor,
            "python": self.python,
            "cuda": self.cuda,
            "cudnn": self.cudnn,
            "cuda_version": self.cuda_version,
            "cuda_prefix": f"{self.cuda_version}-" if self.cuda else "",
            "version": self.version if self.tf else "",
            "release": str(self.release),
        }


def expand(template: str, facts: TagFacts, what: str) -> str:
    """Fill a tag or repository template. Example: expand("{tf}-{flavor}", facts, "tags.version.tools").

    Only plain `{placeholder}`s are filled (no format spec, conversion, attribute or index access: the schema
    refuses those and this refuses them again), and the result must be a valid OCI tag (`tags.version.*`) or
    repository path (`tags.repositories.*`).
    """
    repository = what.startswith("tags.repositories")
    try:
        parts = parse_template(template, REPOSITORY_TEXT if repository else TAG_TEXT)
    except ValueError as exc:
        raise MatrixError(f"{what}: {exc}") from None
    values = facts.fields()
    out = "".join(text + (values[name] if name else "") for text, name in parts)
    if repository:
        if len(out) > 255 or not _REPOSITORY.fullmatch(out):
            raise MatrixError(
                f"{what}: {show(out)} (from {show(template)}) is not a valid repository path"
                " (lower-case parts separated by '/')"
            )
        return out
    if what.startswith("tags.version"):
        check_tag(out, what)
    return out


def check_tag(tag: str, what: str) -> str:
    if not _TAG.fullmatch(tag):
        raise MatrixError(f"{what}: {show(tag)} is not a valid tag (letters, digits, _ . -, at most 128)")
    return tag


def content_tag(content_hash: str) -> str:
    """The tag a node's image carries for build avoidance and registry cache look-ups."""
    return f"h-{content_hash}"
