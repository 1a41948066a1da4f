"""Render layers/<layer>/Dockerfile.j2 into Dockerfiles with StrictUndefined: a missing variable is an error."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import jinja2

from builder.errors import Location, MatrixError

TEMPLATE_NAME = "Dockerfile.j2"


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
        )

    def render(self, layer: str, context: dict[str, Any], node_id: str) -> str:
        """Render one layer's template for one node; errors name template, line and variable."""
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
            text = template.render(**context)
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
