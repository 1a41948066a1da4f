"""Render layers/<layer>/Dockerfile.j2 into Dockerfiles with StrictUndefined: a missing variable is an error.

Values reach the templates already checked by the matrix schema (builder.matrix.types); the templates quote
them again where they land, so that even a value the schema let through cannot add an instruction or a command:

    {{ x | sh }}         a word of a RUN line: shlex quoting, a safe string (/opt/venv, python3-venv) unchanged
    {{ x | sh_text }}    text inside "..." of a RUN line: \\ " $ ` escaped
    {{ x | df }}         a word of a Dockerfile instruction (FROM, COPY, WORKDIR, USER, EXPOSE, ENV/LABEL key or
                         unquoted value): every character outside [A-Za-z0-9_@%+=:,./-] escaped with a backslash;
                         whitespace refused (COPY splits on it whatever the escapes), and backslashes (one that
                         ends a line continues it, escaped or not)
    {{ x | df_text }}    text inside "..." of ENV or LABEL: \\ " $ escaped (Docker's rules inside double quotes)
    {{ x | env_name }}   an environment variable name, refused unless [A-Za-z_][A-Za-z0-9_]*

and every string of the context (and each filter's input) is refused when it holds a control character: nothing
in a Dockerfile can carry a newline without starting a new line, so such a value is an error naming the node
and the value's key, never a rendered file.
"""

from __future__ import annotations

import re
import shlex
import traceback
from pathlib import Path
from typing import Any

import jinja2

from builder.errors import Location, MatrixError
from builder.matrix.types import show

TEMPLATE_NAME = "Dockerfile.j2"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_DOCKERFILE_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]", re.ASCII)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)


class UnsafeValueError(ValueError):
    """A value that cannot be placed in a Dockerfile without changing its structure."""


def shell_word(value: object) -> str:
    """One word of a POSIX shell command. Example: shell_word("a b") == "'a b'", shell_word("/opt/venv") unchanged."""
    return shlex.quote(_refuse_control(str(value)))


def shell_text(value: object) -> str:
    """Text for inside a double-quoted shell string: `\\`, `"`, `$` and backquote escaped."""
    return re.sub(r'([\\"$`])', r"\\\1", _refuse_control(str(value)))


def dockerfile_word(value: object) -> str:
    """One word of a Dockerfile instruction, read back by Docker's word processing as exactly `value`.

    Example: dockerfile_word("/opt/venv") == "/opt/venv"; dockerfile_word("$HOME") == "\\$HOME".
    Whitespace and backslashes are refused (UnsafeValueError): no escaping makes them safe everywhere.
    """
    text = _refuse_control(str(value))
    if any(ch.isspace() for ch in text):
        raise UnsafeValueError(
            f"{show(text)} holds whitespace and cannot be one word of a Dockerfile instruction"
        )
    if "\\" in text:
        # At the end of a line even an escaped backslash reads as a line continuation to Docker's parser.
        raise UnsafeValueError(
            f"{show(text)} holds a backslash and cannot be one word of a Dockerfile instruction"
        )
    return "".join(ch if _DOCKERFILE_SAFE.fullmatch(ch) else "\\" + ch for ch in text)


def dockerfile_text(value: object) -> str:
    """Text for inside a double-quoted ENV or LABEL value: `\\`, `"` and `$` escaped (all Docker unescapes there)."""
    return re.sub(r'([\\"$])', r"\\\1", _refuse_control(str(value)))


def env_name(value: object) -> str:
    text = str(value)
    if not _ENV_NAME.fullmatch(text):
        raise UnsafeValueError(f"{show(text)} is not an environment variable name")
    return text


def _refuse_control(text: str) -> str:
    if _CONTROL.search(text):
        raise UnsafeValueError(f"{show(text)} holds a control character, which no Dockerfile line can carry")
    return text


def check_context(value: Any, path: str = "") -> None:
    """Raise UnsafeValueError naming the key path of the first string in `value` (a template context: nested
    dicts, lists and scalars) that holds a control character."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_context(str(key), f"{path}[key]")
            check_context(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_context(item, f"{path}[{i}]")
    elif isinstance(value, str) and _CONTROL.search(value):
        raise UnsafeValueError(
            f"{path}: {show(value)} holds a control character, which no Dockerfile line can carry"
        )


class _CompiledTemplates(jinja2.BytecodeCache):
    """Compiled templates kept for the life of the process (every plan of `strata catalog`, the tests), keyed by
    template file; Jinja drops an entry whose source checksum no longer matches, so an edited template recompiles."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_COMPILED = _CompiledTemplates()  # every renderer compiles with the same settings below


class TemplateRenderer:
    """Loads templates from a layers/ directory once and renders them per node."""

    def __init__(self, layers_dir: Path) -> None:
        self.layers_dir = layers_dir
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(layers_dir)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            bytecode_cache=_COMPILED,
        )
        self.env.filters.update(
            sh=shell_word, sh_text=shell_text, df=dockerfile_word, df_text=dockerfile_text, env_name=env_name
        )

    def render(self, layer: str, context: dict[str, Any], node_id: str) -> str:
        """Render one layer's template for one node; errors name template, line and variable."""
        # Node ids are made of matrix values: one that is not plain is shown quoted, escapes visible.
        node_id = node_id if _PLAIN_ID.fullmatch(node_id) else show(node_id)
        name = f"{layer}/{TEMPLATE_NAME}"
        where = self.layers_dir / name
        try:
            template = self.env.get_template(name)
        except jinja2.TemplateNotFound:
            raise MatrixError(
                f"template for layer '{layer}' not found (node {node_id})", Location(str(where))
            ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise MatrixError(
                f"template syntax error: {exc.message}", Location(str(where), exc.lineno)
            ) from None
        try:
            check_context(context)
            text = template.render(**context)
        except UnsafeValueError as exc:
            raise MatrixError(
                f"node {node_id}: value not placed: {exc}",
                Location(str(where), _template_line(exc, str(where))),
            ) from None
        except jinja2.UndefinedError as exc:
            line = _template_line(exc, str(where))
            raise MatrixError(
                f"undefined variable while rendering node {node_id}: {exc.message}",
                Location(str(where), line),
            ) from None
        except jinja2.TemplateError as exc:
            raise MatrixError(
                f"template error while rendering node {node_id}: {exc}", Location(str(where))
            ) from None
        if any(line.lstrip().lower().startswith("# syntax=") for line in text.splitlines()[:3]):
            raise MatrixError(
                "templates must not start with a '# syntax=' line (it pulls a frontend image)",
                Location(str(where), 1),
            )
        return text


def _template_line(exc: BaseException, filename: str) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith(TEMPLATE_NAME):
            line = frame.lineno
    return line
