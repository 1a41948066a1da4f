"""Image references (`registry/repository[:tag][@digest]`): the OCI distribution grammar, parsed into a value.

Shared by every part of Strata that names an image in a registry: the push plan, the registry cache, pin and sync.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from builder.errors import StrataError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::\d+)?$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-f0-9]{32,}$")


@dataclass(frozen=True)
class ImageRef:
    """An image reference: `registry/repository`, an optional tag and an optional digest.

    Example: ImageRef.parse("127.0.0.1:5000/strata/base:bookworm@sha256:ab...") has registry "127.0.0.1:5000",
    repository "strata/base", tag "bookworm" and that digest. `registry` is None for a Docker Hub short name.
    """

    registry: str | None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef | None:
        """The reference `text` names, or None when it is not a literal image reference (`$BASE`, `{{ x }}`)."""
        rest, _, digest = text.partition("@")
        if digest and not _DIGEST.match(digest):
            return None
        registry: str | None = None
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
            if not _HOST.match(first):
                return None
            registry, rest = first, remainder
        tag: str | None = None
        last_slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > last_slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG.match(tag):
                return None
        if not rest or not _REPOSITORY.match(rest):
            return None
        return cls(registry, rest, tag, digest or None)

    @classmethod
    def require(cls, text: str, what: str) -> ImageRef:
        """Like `parse`, but a StrataError naming `what` when `text` is not a reference."""
        ref = cls.parse(text)
        if ref is None:
            raise StrataError(f"{what}: {text!r} is not an image reference like host:port/repository:tag")
        return ref

    @property
    def name(self) -> str:
        """`registry/repository` (or just the repository without a registry)."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def tagged(self) -> str:
        """`registry/repository:tag` without any digest (the key of images.lock.json)."""
        return f"{self.name}:{self.tag}" if self.tag else self.name

    def with_registry(self, registry: str) -> ImageRef:
        return replace(self, registry=registry)

    def __str__(self) -> str:
        text = self.tagged
        return f"{text}@{self.digest}" if self.digest else text
