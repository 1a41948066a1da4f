"""Image references: version tags (exact, immutable), content tags (for build avoidance) and floating aliases."""

from __future__ import annotations

import re
from dataclasses import dataclass

from builder.errors import MatrixError

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


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
    """Fill a tag or repository template. Example: expand("{tf}-{flavor}", facts, "tags.version.tools")."""
    try:
        out = template.format(**facts.fields())
    except (KeyError, IndexError) as exc:
        raise MatrixError(f"{what}: unknown placeholder {exc} in '{template}'") from None
    except ValueError as exc:
        raise MatrixError(f"{what}: malformed template '{template}': {exc}") from None
    return out


def check_tag(tag: str, what: str) -> str:
    if not _TAG.match(tag):
        raise MatrixError(f"{what}: '{tag}' is not a valid tag (letters, digits, _ . -, at most 128)")
    return tag


def content_tag(content_hash: str) -> str:
    """The tag a node's image carries for build avoidance and registry cache look-ups."""
    return f"h-{content_hash}"
