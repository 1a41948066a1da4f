"""Errors as values a user can read: one line, naming the file, line or item at fault."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A place in a file; line and column are 1-based like editors show them."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        parts = [self.file]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)


class StrataError(Exception):
    """An error the CLI prints as one line (`strata: <message>`) and exits non-zero on.

    Raise it (or a subclass) for anything caused by input, the host or a remote service;
    let programming errors stay ordinary exceptions so they keep their traceback. The exit code is the CLI's
    business: cli/exit_codes.py maps each kind (this class or a subclass) to one code in one table.
    """

    def __init__(self, message: str, location: Location | None = None) -> None:
        self.message = message
        self.location = location
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class MatrixError(StrataError):
    """matrix.yaml is malformed or asks for a combination the rules forbid."""


class HostError(StrataError):
    """The host lacks something Strata needs (engine, disk, tools) and could not set it up."""


class BuildError(StrataError):
    """A node failed to build; the message names the node and its log."""


class ErrorList(StrataError):
    """Several independent errors found in one pass (all reported, one per line)."""

    def __init__(self, errors: list[StrataError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
