"""YAML loading that remembers where every key and value came from, so errors can say FILE:LINE:COL.

The loader is safe and bounded, whatever the file holds: only plain YAML (no explicit tags such as `!env` or
`!!python/object`: nothing but the implicit types of the safe loader), at most MAX_DEPTH levels of nesting, at most
MAX_VALUES values counted after alias expansion (a "billion laughs" document stops after MAX_VALUES steps, not a
billion), and no RecursionError or MemoryError from recursive aliases or deep nesting: every refusal is one
MatrixError at the line and column that caused it. The size of the file is bounded by its reader
(builder.matrix.load.MAX_MATRIX_BYTES).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from builder.errors import Location, MatrixError
from builder.matrix.types import show

Path_ = tuple[str | int, ...]

MAX_DEPTH = 32  # nesting of mappings and sequences (matrix.yaml needs 6)
MAX_VALUES = 10_000  # values in the document, every alias expansion counted (the default matrix has ~400)
_MERGE_TAG = "tag:yaml.org,2002:merge"


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
    """Parse YAML text; reject explicit tags, duplicate and non-scalar keys, too deep or too large documents;
    record 1-based positions."""
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text, file)  # the reader refuses non-printable characters right here
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        raise MatrixError(f"invalid YAML: {exc.problem}", where) from None
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        raise MatrixError(
            f"invalid YAML: character U+{exc.character:04X} is not allowed", Location(file, line, col)
        ) from None
    except yaml.YAMLError as exc:
        raise MatrixError(f"invalid YAML: {exc}", Location(file)) from None
    finally:
        if loader is not None:
            loader.dispose()
    doc = PositionedDocument(data=None, file=file)
    if root is None:
        return doc
    doc.data = _Converter(doc, loader.first_alias if loader else None).convert(root, (), 1)
    return doc


def _line_col(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _pos(node: yaml.Node | yaml.Event) -> tuple[int, int]:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader's composer with limits checked before each node is built (so its recursion stays shallow)."""

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self.file = file
        self.depth = 0
        self.count = 0
        self.first_alias: tuple[int, int] | None = None

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        self.count += 1
        if self.count > MAX_VALUES:
            raise MatrixError(f"the document holds more than {MAX_VALUES} values", self._at(event))
        if isinstance(event, yaml.AliasEvent):
            if self.first_alias is None:
                self.first_alias = _pos(event)
            return super().compose_node(parent, index)
        if event.tag is not None:
            raise MatrixError(
                f"explicit YAML tag {event.tag!r} is not allowed (write the value plainly; quote it for a string)",
                self._at(event),
            )
        if isinstance(event, yaml.CollectionStartEvent):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise MatrixError(f"nesting deeper than {MAX_DEPTH} levels", self._at(event))
        try:
            return super().compose_node(parent, index)
        finally:
            if isinstance(event, yaml.CollectionStartEvent):
                self.depth -= 1

    def _at(self, event: yaml.Event) -> Location:
        return Location(self.file, *_pos(event))


class _Converter:
    """Composed nodes to plain data, recording positions; aliases are expanded within the same budget and depth
    limits as written values, and merge keys (`<<: *defaults`) are expanded here rather than by PyYAML."""

    def __init__(self, doc: PositionedDocument, first_alias: tuple[int, int] | None) -> None:
        self.doc = doc
        self.first_alias = first_alias
        self.count = 0
        self.ctor = yaml.SafeLoader("")

    def convert(self, node: yaml.Node, path: Path_, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_VALUES or depth > MAX_DEPTH:
            # Only aliases can get here: the loader bounded what is written. Point at the first one.
            where = self.first_alias or _pos(node)
            what = (
                f"more than {MAX_VALUES} values"
                if self.count > MAX_VALUES
                else f"more than {MAX_DEPTH} levels"
            )
            raise MatrixError(
                f"aliases expand to {what} (recursive or exponential aliases?)", self._at(where)
            )
        self.doc.values[path] = _pos(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _mapping(self, node: yaml.MappingNode, path: Path_, depth: int) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise MatrixError("'<<' merges mappings only", self._at(_pos(source)))
                for key, value in self.convert(source, path, depth + 1).items():
                    merged.setdefault(key, value)  # the first mapping named wins, as YAML's merge key says
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise MatrixError("mapping keys must be plain strings", self._at(_pos(key_node)))
            key = str(self._scalar(key_node))
            if key in out:
                raise MatrixError(f"duplicate key '{key}'", self._at(_pos(key_node)))
            self.doc.keys[path + (key,)] = _pos(key_node)
            out[key] = self.convert(value_node, path + (key,), depth + 1)
        for key, value in merged.items():
            out.setdefault(key, value)  # keys written in the mapping override merged ones
        self.doc.values[path] = _pos(node)
        return out

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            return self.ctor.construct_object(node)
        except (ValueError, OverflowError, yaml.YAMLError) as exc:
            # e.g. an integer of 5,000 digits, or a date like 2023-02-30
            reason = str(exc).split(";")[0].split("\n")[0]
            raise MatrixError(
                f"cannot read value {show(node.value)}: {reason}", self._at(_pos(node))
            ) from None

    def _at(self, pos: tuple[int, int]) -> Location:
        return Location(self.doc.file, *pos)
