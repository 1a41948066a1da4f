"""What each matrix.yaml field may hold: one constrained type per kind of value, checked where the matrix is read.

matrix.yaml is input Strata does not trust. Its values end up in file names (node ids, lock paths), image
references, Dockerfiles and shell commands, so each field admits only what its kind can hold, and nothing that
could end a line, start a command or leave a directory:

    Version         2.13 / 2.13.1            ASCII digits and dots (tf, python, cuda, cudnn)
    Name            bookworm, ubuntu22.04     a safe file-name component (OS keys, profile names, cell ids)
    UserName        example                   an OCI repository component (it names a repository)
    AbsolutePath    /opt/venv                 absolute POSIX path of plain components (venv, prefix, workdir)
    RelativePath    layers/x/requirements.in  a file of the repository, relative to the matrix file
    EnvName         TF_CPP_MIN_LOG_LEVEL      [A-Za-z_][A-Za-z0-9_]*
    EnvValue        cuda_malloc_async         printable text on one line
    DebianPackage   python3-venv, libc6=2.36  Debian package name, optional :arch and =version
    Port / Uid      8888 / 1000               1-65535 / 1-2147483647
    RegistryHost    127.0.0.1:5000            host[:port]
    RepositoryPath  strata, team/vision       OCI repository grammar (lower case)
    OciTag          2.13-gpu                  OCI tag grammar
    PinnedImage     ubuntu:22.04@sha256:...   an image reference pinned by sha256 digest
    TagTemplate     {version}-r{release}      known {placeholders} only, no format spec or attribute access
    PrunePattern    nvidia/*/include          a relative path glob of plain parts and '*' (files a layer drops)
    NodePattern     cuda11.8-*                a glob over node ids
    SizeBytes       3400000000                1 MB-1 TB, in bytes

Each type is `Annotated[base, AfterValidator(check)]`; a check raises ValueError with a message saying what the
field may hold and what it got (shortened, with escapes visible), which builder.matrix.load prints as
`matrix.yaml:LINE:COL: '<field>': <message>`. Templates still quote every value they place (layers/*.j2).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator

_SHOWN = 60  # characters of an offending value quoted in a message

# Characters that end a line somewhere (Dockerfile, shell, YAML, Python's splitlines) or are invisible controls.
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PROSE_BREAKING = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # prose may hold \t and \n

# OCI distribution grammar (distribution/reference): path components, tags, host[:port].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"(?:{_DNS_LABEL}(?:\.{_DNS_LABEL})*|\[[0-9A-Fa-f:.]+\])"
_HOST_PORT = re.compile(rf"(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?", re.ASCII)
_PINNED_IMAGE = re.compile(
    rf"(?:{_HOST}(?::[0-9]{{1,5}})?/)?{_REPOSITORY}(?::{_TAG})?@sha256:[0-9a-f]{{64}}", re.ASCII
)

# What a tag or repository template may name (builder.plan.tags.TagFacts.fields() provides exactly these).
TAG_PLACEHOLDERS: tuple[str, ...] = (
    "namespace",
    "epoch",
    "os",
    "user",
    "tf",
    "tf_minor",
    "flavor",
    "python",
    "cuda",
    "cudnn",
    "cuda_version",
    "cuda_prefix",
    "version",
    "release",
)

MAX_PORT = 65535
MAX_UID = 2**31 - 1
# The newest SOURCE_DATE_EPOCH a tar header, a Debian archive and a datetime all hold (2106-02-07).
MAX_EPOCH = 2**32 - 1


def show(value: object, limit: int = _SHOWN) -> str:
    """`value` as it appears in a message: repr (escapes visible, one line), shortened to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'" + f" ({len(str(value))} characters)"


def _pattern(regex: str, rule: str, max_len: int) -> Callable[[str], str]:
    """A check that `value` matches `regex` entirely (ASCII classes, no trailing newline) and has at most `max_len`
    characters; else ValueError '<rule>, got <value>'."""
    compiled = re.compile(regex, re.ASCII)

    def check(value: str) -> str:
        if len(value) > max_len or not compiled.fullmatch(value):
            raise ValueError(f"{rule}, got {show(value)}")
        return value

    return check


def _path(absolute: bool) -> Callable[[str], str]:
    rule = (
        "must be an absolute path like /opt/venv"
        if absolute
        else "must be a path relative to the matrix file"
    ) + " (parts of letters, digits, '.', '_', '+', '@', '-'; no '.' or '..' part)"
    part = r"[A-Za-z0-9._+@-]+"
    shape = re.compile(rf"(?:/{part})+" if absolute else rf"{part}(?:/{part})*", re.ASCII)

    def check(value: str) -> str:
        if len(value) > 255 or not shape.fullmatch(value) or any(p in (".", "..") for p in value.split("/")):
            raise ValueError(f"{rule}, got {show(value)}")
        return value

    return check


def _single_line(max_len: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if len(value) > max_len:
            raise ValueError(f"must be at most {max_len} characters, got {len(value)}")
        if _LINE_BREAKING.search(value):
            raise ValueError(f"must be one line of printable text (no control characters), got {show(value)}")
        return value

    return check


def _prose(value: str) -> str:
    if len(value) > 2000:
        raise ValueError(f"must be at most 2000 characters, got {len(value)}")
    if _PROSE_BREAKING.search(value):
        raise ValueError(f"must be printable text (no control characters), got {show(value)}")
    return value


def _int_range(low: int, high: int, what: str) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be {what} from {low} to {high}, got {value}")
        return value

    return check


def _registry_host(value: str) -> str:
    """host[:port] with a port in 1-65535; what STRATA_REGISTRY must hold too."""
    match = _HOST_PORT.fullmatch(value) if len(value) <= 253 else None
    port = match.group("port") if match else None
    if match is None or (port is not None and not 1 <= int(port) <= MAX_PORT):
        raise ValueError(
            f"must be a registry host[:port] like 127.0.0.1:5000 or registry.example.com (port 1-{MAX_PORT}),"
            f" got {show(value)}"
        )
    return value


def parse_template(template: str, literal: str) -> list[tuple[str, str | None]]:
    """Split a tag or repository template into (literal text, placeholder or None) pairs; ValueError unless every
    placeholder is a plain known `{name}` and the literal text matches the character class `literal`.

    Example: parse_template("{version}-r{release}", "[A-Za-z0-9_.-]") == [("", "version"), ("-r", "release")].
    """
    known = ", ".join("{" + p + "}" for p in TAG_PLACEHOLDERS)
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"malformed template {show(template)} ({exc})") from None
    out: list[tuple[str, str | None]] = []
    text_ok = re.compile(f"{literal}*", re.ASCII)
    for text, name, spec, conversion in parts:
        if not text_ok.fullmatch(text):
            raise ValueError(f"text {show(text)} in template {show(template)} may hold only {literal}")
        if name is None:
            out.append((text, None))
            continue
        if name not in TAG_PLACEHOLDERS or spec or conversion:
            written = (
                "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            )
            raise ValueError(
                f"placeholder {show(written)} is not one of {known}"
                " (written plainly: no format spec, conversion, attribute or index)"
            )
        out.append((text, name))
    return out


def _template(literal: str, max_len: int, result: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if len(value) > max_len:
            raise ValueError(f"must be at most {max_len} characters, got {len(value)}")
        parts = parse_template(value, literal)
        # Filled with a plain sample value, the template must already be a valid tag / repository path (the
        # planner checks the real result again: a placeholder can also be empty).
        sample = "".join(text + ("x0" if name else "") for text, name in parts)
        if not result.fullmatch(sample):
            raise ValueError(
                f"{show(value)} does not make a valid {what} (filled in, it reads like {show(sample)})"
            )
        return value

    return check


# Literal text a template may hold around its placeholders: what the tag / repository grammar allows.
TAG_TEXT = "[A-Za-z0-9_.-]"
REPOSITORY_TEXT = "[a-z0-9._/-]"

Version = Annotated[
    str,
    AfterValidator(
        _pattern(r"[0-9]{1,4}(?:\.[0-9]{1,4}){1,2}", "must look like 2.13 or 2.13.1 (ASCII digits)", 16)
    ),
]
Name = Annotated[
    str,
    AfterValidator(
        _pattern(
            r"[a-z0-9][a-z0-9._-]{0,62}",
            "must be a name of lower-case letters, digits, '.', '_' and '-', starting with a letter or digit,"
            " at most 63 characters",
            63,
        )
    ),
]
UserName = Annotated[
    str,
    AfterValidator(
        _pattern(
            _COMPONENT, "must be a repository name part like 'example' or 'team-vision' (lower case)", 63
        )
    ),
]
AbsolutePath = Annotated[str, AfterValidator(_path(absolute=True))]
RelativePath = Annotated[str, AfterValidator(_path(absolute=False))]
EnvName = Annotated[
    str,
    AfterValidator(
        _pattern(
            r"[A-Za-z_][A-Za-z0-9_]*", "must be an environment variable name [A-Za-z_][A-Za-z0-9_]*", 128
        )
    ),
]
EnvValue = Annotated[str, AfterValidator(_single_line(1024))]
Prose = Annotated[str, AfterValidator(_prose)]
DebianPackage = Annotated[
    str,
    AfterValidator(
        _pattern(
            r"[a-z0-9][a-z0-9+.-]+(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+)?",
            "must be a Debian package name like python3-venv (optionally :arch and =version)",
            128,
        )
    ),
]
DebianSuite = Annotated[
    str, AfterValidator(_pattern(r"[a-z][a-z0-9-]*", "must be a Debian suite name like bookworm", 32))
]
MirrorUrl = Annotated[
    str,
    AfterValidator(
        _pattern(r"(?:https?|file)://[A-Za-z0-9._~:/%+@-]+", "must be an http(s):// or file:// URL", 512)
    ),
]
Port = Annotated[int, AfterValidator(_int_range(1, MAX_PORT, "a port"))]
Uid = Annotated[int, AfterValidator(_int_range(1, MAX_UID, "a uid (not root)"))]
Epoch = Annotated[int, AfterValidator(_int_range(0, MAX_EPOCH, "a Unix time"))]
Release = Annotated[int, AfterValidator(_int_range(1, 999_999, "a release number"))]
RegistryHost = Annotated[str, AfterValidator(_registry_host)]
RepositoryPath = Annotated[
    str,
    AfterValidator(
        _pattern(_REPOSITORY, "must be a repository path like 'strata' or 'team/vision' (lower case)", 200)
    ),
]
OciTag = Annotated[
    str,
    AfterValidator(
        _pattern(
            _TAG,
            "must be a tag of letters, digits, '_', '.', '-' (at most 128, not starting with . or -)",
            128,
        )
    ),
]
PinnedImage = Annotated[
    str,
    AfterValidator(
        _pattern(
            _PINNED_IMAGE.pattern, "must be an image pinned by digest, like name:tag@sha256:<64 hex>", 512
        )
    ),
]
# A file or directory a layer drops before it is committed, relative to the layer's site-packages; matched like
# `find -path` (a '*' also crosses '/'). Plain parts only: no '..', no leading '/', nothing a shell would read.
PrunePattern = Annotated[
    str,
    AfterValidator(
        _pattern(
            r"(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9_+*-][A-Za-z0-9._+*-]*(?:/[A-Za-z0-9_+*-][A-Za-z0-9._+*-]*)*",
            "must be a relative path glob like nvidia/*/include (parts of letters, digits, '.', '_', '+', '-',"
            " '*'; no '.' or '..' part, no leading '/')",
            200,
        )
    ),
]
NodePattern = Annotated[
    str,
    AfterValidator(_pattern(r"[A-Za-z0-9._*?-]+", "must be a glob over node ids like 'cuda11.8-*'", 128)),
]
SizeBytes = Annotated[int, AfterValidator(_int_range(10**6, 10**12, "a size in bytes"))]
CellPattern = Annotated[
    str,
    AfterValidator(_pattern(r"[A-Za-z0-9._*?\[\]!-]+", "must be a glob over cell ids like 'tf2.13*'", 128)),
]
TagTemplate = Annotated[
    str, AfterValidator(_template(TAG_TEXT, 128, re.compile(_TAG, re.ASCII), "tag (letters, digits, _ . -)"))
]
RepositoryTemplate = Annotated[
    str,
    AfterValidator(
        _template(
            REPOSITORY_TEXT,
            200,
            re.compile(_REPOSITORY, re.ASCII),
            "repository path (lower-case parts and /)",
        )
    ),
]


def check_registry_host(value: str) -> str:
    """`value` if it is a registry host[:port], else ValueError (for STRATA_REGISTRY, which is not in the file)."""
    return _registry_host(value)
