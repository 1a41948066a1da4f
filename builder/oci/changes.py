"""What kind of change one entry of two compared images is: shared by file diffs and package diffs."""

from __future__ import annotations


def change_kind(a: object | None, b: object | None) -> str:
    """`added` (only in b), `removed` (only in a) or `changed`: shared by file and package changes."""
    if a is None:
        return "added"
    if b is None:
        return "removed"
    return "changed"
