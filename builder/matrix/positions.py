"""YAML loading that remembers where every key and value came from, so errors can say FILE:LINE:COL."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from builder.errors import Location, MatrixError

Path_ = tuple[str | int, ...]


@dataclass
class PositionedDocument:
    """Plain Python data plus the source position of each key (`keys`) and each value (`values`)."""

    data: Any
    file: str
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path_, *, key: bool = False) -> Location:
        """The nearest known position for `path` (walking up to the parent when the item is missing)."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                line, col = table[probe]
                return Location(self.file, line, col)
            if probe in self.values:
                line, col = self.values[probe]
                return Location(self.file, line, col)
            probe = probe[:-1]
        line, col = self.values.get((), (1, 1))
        return Location(self.file, line, col)


def load_positioned(text: str, file: str) -> PositionedDocument:
    """Parse YAML text; reject duplicate keys and non-scalar keys; record 1-based positions."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        raise MatrixError(f"invalid YAML: {exc.problem}", where) from None
    except yaml.YAMLError as exc:
        raise MatrixError(f"invalid YAML: {exc}", Location(file)) from None
    doc = PositionedDocument(data=None, file=file)
    if root is None:
        doc.data = None
        return doc
    constructor = yaml.SafeLoader("")
    doc.data = _convert(root, (), doc, constructor)
    return doc


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _convert(node: yaml.Node, path: Path_, doc: PositionedDocument, ctor: yaml.SafeLoader) -> Any:
    doc.values[path] = _pos(node)
    if isinstance(node, yaml.MappingNode):
        ctor.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise MatrixError("mapping keys must be plain strings", Location(doc.file, *_pos(key_node)))
            key = str(ctor.construct_object(key_node))
            if key in out:
                raise MatrixError(f"duplicate key '{key}'", Location(doc.file, *_pos(key_node)))
            doc.keys[path + (key,)] = _pos(key_node)
            out[key] = _convert(value_node, path + (key,), doc, ctor)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), doc, ctor) for i, item in enumerate(node.value)]
    return ctor.construct_object(node)
