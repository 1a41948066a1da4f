"""Load matrix.yaml into a validated, typed Matrix and expand it into cells; every error names FILE:LINE:COL."""

from __future__ import annotations

import difflib
import fnmatch
import re
import stat
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from builder.errors import ErrorList, Location, MatrixError, StrataError
from builder.matrix import compat
from builder.matrix.positions import PositionedDocument, load_positioned
from builder.matrix.schema import CudaSpec, MatrixModel, OsSpec, UserLayer
from builder.matrix.types import check_registry_host, show
from builder.settings import DEFAULT_MATRIX, REGISTRY_ENV

DEFAULT_PROFILE = "hermetic"
MAX_MATRIX_BYTES = 256 << 10  # the default matrix is 6 kB, a 200-cell one 40 kB; parsing 256 kB takes ~0.2 s
MAX_REQUIREMENTS_BYTES = 1 << 20
MAX_ERRORS = 20  # errors listed one per line; more are counted in one last line
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]{1,63}", re.ASCII)


@dataclass(frozen=True)
class Cell:
    """One final image of the matrix, e.g. `tf2.13.1-gpu`: a TF version in one flavor under one profile."""

    id: str
    tf: str
    flavor: str
    python: str
    os_name: str
    os: OsSpec
    cuda: str | None
    cuda_spec: CudaSpec | None
    framework_index: int
    framework_requirements: str
    tools_requirements: str
    users: tuple[UserLayer, ...]

    @property
    def tf_minor(self) -> str:
        return compat.tf_minor(self.tf)

    @property
    def cudnn(self) -> str | None:
        return self.cuda_spec.cudnn if self.cuda_spec else None


@dataclass(frozen=True)
class Matrix:
    """A validated matrix with one profile chosen; `root` is the directory relative paths resolve against."""

    model: MatrixModel
    profile: str
    cells: tuple[Cell, ...]
    root: Path
    file: str
    doc: PositionedDocument

    def cell(self, cell_id: str) -> Cell:
        for c in self.cells:
            if c.id == cell_id:
                return c
        raise MatrixError(f"no cell '{cell_id}' (cells: {', '.join(c.id for c in self.cells)})")

    def locate(self, *path: str | int) -> Location:
        return self.doc.locate(path)


def load_matrix(
    path: str | Path = DEFAULT_MATRIX, profile: str = DEFAULT_PROFILE, registry_override: str | None = None
) -> Matrix:
    """Read, validate and expand a matrix file. Raises MatrixError/ErrorList with FILE:LINE:COL messages.

    `registry_override` (settings.registry_override, from STRATA_REGISTRY) replaces registry.address; it must be
    a registry host[:port] like the address it replaces.
    """
    path = Path(path)
    matrix = parse_matrix(_read_matrix(path), str(path), profile=profile, root=path.resolve().parent)
    override = (registry_override or "").strip()
    if override:
        try:
            check_registry_host(override)
        except ValueError as exc:
            raise MatrixError(f"{REGISTRY_ENV}: {exc}") from None
        # CI points the same matrix at its own registry; tags, cache look-ups and pushes all follow.
        registry = matrix.model.registry.model_copy(update={"address": override})
        matrix = replace(matrix, model=matrix.model.model_copy(update={"registry": registry}))
    return matrix


def _read_matrix(path: Path) -> str:
    """The text of a matrix file: a regular file of at most MAX_MATRIX_BYTES of UTF-8."""
    where = Location(str(path))
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # checked before opening: a FIFO would block the open
            raise MatrixError("not a regular file", where)
        with open(path, "rb") as f:
            raw = f.read(MAX_MATRIX_BYTES + 1)
    except FileNotFoundError:
        raise MatrixError("matrix file not found", where) from None
    except OSError as exc:
        raise MatrixError(f"cannot read matrix file: {exc.strerror}", where) from None
    if len(raw) > MAX_MATRIX_BYTES:
        raise MatrixError(f"matrix file is larger than {MAX_MATRIX_BYTES // 1024} kB", where)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise MatrixError(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", Location(str(path), line, col)
        ) from None


def parse_matrix(text: str, file: str, *, profile: str = DEFAULT_PROFILE, root: Path | None = None) -> Matrix:
    doc = load_positioned(text, file)
    if not isinstance(doc.data, dict):
        raise MatrixError(
            "the matrix must be a YAML mapping (schema:, registry:, frameworks:, ...)", doc.locate(())
        )
    try:
        model = MatrixModel.model_validate(doc.data)
    except ValidationError as exc:
        found = exc.errors()
        raise _error_list([_schema_error(doc, err) for err in found[:MAX_ERRORS]], file, len(found)) from None
    root = root or Path.cwd()
    errors: list[MatrixError] = []
    if profile not in model.profiles:
        raise MatrixError(
            f"unknown profile {show(profile)} (matrix defines: {', '.join(model.profiles)})",
            doc.locate(("profiles",), key=True),
        )
    cells = _expand_cells(model, profile, doc, root, errors)
    _check_references(model, cells, doc, root, errors)
    if errors:
        raise _error_list(errors, file)
    return Matrix(model=model, profile=profile, cells=tuple(cells), root=root, file=file, doc=doc)


# ---------------------------------------------------------------------------------------------- schema errors


def _error_list(errors: list[MatrixError], file: str, total: int | None = None) -> ErrorList:
    """The first MAX_ERRORS of `total` errors, one per line; the rest counted in a last line."""
    total = len(errors) if total is None else total
    shown: list[StrataError] = list(errors[:MAX_ERRORS])
    if total > len(shown):
        shown.append(MatrixError(f"... and {total - len(shown)} more errors", Location(file)))
    return ErrorList(shown)


def _schema_error(doc: PositionedDocument, err: Any) -> MatrixError:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "missing":
        field = loc[-1]
        return MatrixError(
            f"missing required key '{field}'" + _under(loc[:-1]), doc.locate(loc[:-1], key=True)
        )
    if loc and loc[-1] == "[key]":
        key = str(loc[-2])
        if kind != "literal_error":
            # A key that names a file, id or variable (profiles, OS names, env names) breaks its type's rule.
            msg = err["msg"].removeprefix("Value error, ")
            return MatrixError(f"key in '{_dotted(loc[:-2])}' {msg}", doc.locate(loc[:-1], key=True))
        expected = msg_choices = err["msg"].removeprefix("Input should be ")
        close = difflib.get_close_matches(
            key, [c.strip("' ") for c in re.split(r",| or ", msg_choices)], n=1, cutoff=0.5
        )
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return MatrixError(
            f"unknown key {show(key)} in '{_dotted(loc[:-2])}' (expected {expected}){hint}",
            doc.locate(loc[:-1], key=True),
        )
    if kind == "extra_forbidden":
        key = str(loc[-1])
        hint = ""
        choices = _fields_at(MatrixModel, loc[:-1])
        close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
        if close:
            hint = f"; did you mean '{close[0]}'?"
        elif choices:
            hint = f" (valid keys: {', '.join(sorted(choices))})"
        return MatrixError(f"unknown key {show(key)}" + _under(loc[:-1]) + hint, doc.locate(loc, key=True))
    value = _value_at(doc.data, loc)
    # A rule about a whole mapping points at the key that names it.
    where = doc.locate(loc, key=isinstance(value, dict))
    msg = err["msg"]
    if kind.endswith("_type") or kind in ("string_type", "int_type"):
        got = type(value).__name__
        expected = msg.removeprefix("Input should be ").removeprefix("a valid ")
        hint = ""
        if isinstance(value, float) and kind == "string_type":
            hint = f' (write it quoted, e.g. "{value}"; unquoted 2.10 reads as the number 2.1)'
        return MatrixError(f"'{_dotted(loc)}' must be {expected}, got {got} {show(value)}{hint}", where)
    if kind == "literal_error":
        return MatrixError(
            f"'{_dotted(loc)}': {msg.removeprefix('Input should be ')} expected, got {show(value)}", where
        )
    if kind == "value_error":
        return MatrixError(f"'{_dotted(loc)}': {msg.removeprefix('Value error, ')}", where)
    return MatrixError(f"'{_dotted(loc)}': {msg}", where)


def _under(loc: tuple[Any, ...]) -> str:
    return f" in '{_dotted(loc)}'" if loc else " at top level"


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        # Keys come from the file: anything but a plain word is shown quoted, escapes visible, shortened.
        text = part if _PLAIN_KEY.fullmatch(str(part)) else show(str(part))
        out += f".{text}" if out else text
    return out or "<top>"


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid keys of the mapping at `loc`, walking the schema (dicts and lists step through their values)."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _step(tp: Any, part: Any) -> Any:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, f in tp.model_fields.items():
            if part in (name, f.alias):
                return _unwrap(f.annotation)
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is dict and len(args) == 2:
        return _unwrap(args[1])
    if origin is list and args:
        return _unwrap(args[0])
    return None


def _unwrap(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if (
        typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None))
        and len(args) == 1
    ):
        return args[0]
    return tp


# ---------------------------------------------------------------------------------------------- expansion


def cell_id(tf: str, flavor: str) -> str:
    return f"tf{tf}-{flavor}"


def _expand_cells(
    model: MatrixModel, profile: str, doc: PositionedDocument, root: Path, errors: list[MatrixError]
) -> list[Cell]:
    prof = model.profiles[profile]
    cells: list[Cell] = []
    seen: dict[str, tuple[Any, ...]] = {}
    for i, fw in enumerate(model.frameworks):
        fw_path = ("frameworks", i)
        if profile not in fw.profiles:
            errors.append(
                MatrixError(
                    f"framework tf {fw.tf} has no settings for profile '{profile}'"
                    f" (add frameworks[{i}].profiles.{profile})",
                    doc.locate(fw_path + ("profiles",)),
                )
            )
            continue
        fp = fw.profiles[profile]
        fp_path = fw_path + ("profiles", profile)
        os_spec = prof.os.get(fp.os)
        if os_spec is None:
            errors.append(
                MatrixError(
                    f"os '{fp.os}' is not defined in profiles.{profile}.os" + _suggest(fp.os, prof.os),
                    doc.locate(fp_path + ("os",)),
                )
            )
            continue
        if compat.tf_minor(fw.tf) not in compat.TF_RULES:
            known = ", ".join(sorted(compat.TF_RULES))
            errors.append(
                MatrixError(
                    f"no compatibility rules for tf {fw.tf} (known: {known})", doc.locate(fw_path + ("tf",))
                )
            )
            continue
        tools_req = model.tools.requirements.get(compat.tf_minor(fw.tf))
        if tools_req is None:
            errors.append(
                MatrixError(
                    f"no tools requirements for tf {compat.tf_minor(fw.tf)}"
                    f' (add tools.requirements."{compat.tf_minor(fw.tf)}")',
                    doc.locate(("tools", "requirements")),
                )
            )
            continue
        for j, flavor in enumerate(fw.flavors):
            cid = cell_id(fw.tf, flavor)
            if cid in seen:
                errors.append(
                    MatrixError(
                        f"duplicate cell id '{cid}' (also defined at {doc.locate(seen[cid])})",
                        doc.locate(fw_path + ("flavors", j)),
                    )
                )
                continue
            seen[cid] = fw_path + ("flavors", j)
            cuda_spec: CudaSpec | None = None
            cuda = None
            if flavor == "gpu":
                if fp.cuda is None:
                    errors.append(
                        MatrixError(
                            f"cell {cid} is gpu but names no cuda version", doc.locate(fp_path, key=True)
                        )
                    )
                    continue
                cuda = fp.cuda
                cuda_spec = prof.cuda.get(fp.cuda)
                if cuda_spec is None:
                    errors.append(
                        MatrixError(
                            f"cuda '{fp.cuda}' is not defined in profiles.{profile}.cuda"
                            + _suggest(fp.cuda, prof.cuda),
                            doc.locate(fp_path + ("cuda",)),
                        )
                    )
                    continue
                if cuda_spec.source == "image" and cuda_spec.os != fp.os:
                    errors.append(
                        MatrixError(
                            f"cell {cid} runs on os {fp.os} but cuda {fp.cuda} image is built on {cuda_spec.os}",
                            doc.locate(fp_path + ("os",)),
                        )
                    )
                    continue
            violations = compat.check_cell(
                cid, fw.tf, os_spec.python, flavor, cuda, cuda_spec.cudnn if cuda_spec else None
            )
            for v in violations:
                field_path = {"python": fp_path + ("os",), "tf": fw_path + ("tf",)}.get(
                    v.field, fp_path + ("cuda",)
                )
                if v.deviation and fp.allow is not None:
                    continue
                suffix = (
                    " (allowed only with 'allow: {reason: ...}' on this profile entry)" if v.deviation else ""
                )
                errors.append(MatrixError(v.message + suffix, doc.locate(field_path)))
            if fp.allow is not None and not any(v.deviation for v in violations) and flavor == "gpu":
                errors.append(
                    MatrixError(
                        f"cell {cid}: 'allow' given but nothing deviates from the tested configuration; remove it",
                        doc.locate(fp_path + ("allow",), key=True),
                    )
                )
            users = tuple(u for u in model.users if any(fnmatch.fnmatchcase(cid, pat) for pat in u.cells))
            cells.append(
                Cell(
                    id=cid,
                    tf=fw.tf,
                    flavor=flavor,
                    python=os_spec.python,
                    os_name=fp.os,
                    os=os_spec,
                    cuda=cuda,
                    cuda_spec=cuda_spec,
                    framework_index=i,
                    framework_requirements=fw.requirements,
                    tools_requirements=tools_req,
                    users=users,
                )
            )
    return cells


def _suggest(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f" (defined: {', '.join(choices) or 'none'})"


def _check_references(
    model: MatrixModel, cells: list[Cell], doc: PositionedDocument, root: Path, errors: list[MatrixError]
) -> None:
    ids = {c.id for c in cells}
    # Requirements files: regular UTF-8 text files inside the matrix's directory.
    files: list[tuple[str, tuple[Any, ...]]] = []
    for i, fw in enumerate(model.frameworks):
        files.append((fw.requirements, ("frameworks", i, "requirements")))
    for minor, req in model.tools.requirements.items():
        files.append((req, ("tools", "requirements", minor)))
    for i, u in enumerate(model.users):
        files.append((u.requirements, ("users", i, "requirements")))
    for pname, prof in model.profiles.items():
        for cname, cs in prof.cuda.items():
            if cs.requirements:
                files.append((cs.requirements, ("profiles", pname, "cuda", cname, "requirements")))
    for rel, path in files:
        problem = requirements_problem(root, rel)
        if problem:
            errors.append(MatrixError(f"requirements '{rel}': {problem}", doc.locate(path)))
    # User layers must select at least one cell and have unique names.
    names: dict[str, int] = {}
    for i, u in enumerate(model.users):
        if u.name in names:
            errors.append(MatrixError(f"duplicate user layer '{u.name}'", doc.locate(("users", i, "name"))))
        names[u.name] = i
        for k, pat in enumerate(u.cells):
            if cells and not any(fnmatch.fnmatchcase(c, pat) for c in ids):
                errors.append(
                    MatrixError(
                        f"user layer '{u.name}': pattern '{pat}' selects no cell",
                        doc.locate(("users", i, "cells", k)),
                    )
                )
    # Aliases point at cells that exist; one alias tag per repository.
    seen_alias: dict[tuple[str, str], int] = {}
    for i, a in enumerate(model.aliases):
        if ids and a.cell not in ids:
            errors.append(
                MatrixError(
                    f"alias '{a.tag}' points at unknown cell '{a.cell}'" + _suggest(a.cell, sorted(ids)),
                    doc.locate(("aliases", i, "cell")),
                )
            )
        key = (a.layer, a.tag)
        if key in seen_alias:
            errors.append(
                MatrixError(
                    f"alias '{a.tag}' is declared twice for layer {a.layer} (first at aliases[{seen_alias[key]}])",
                    doc.locate(("aliases", i, "tag")),
                )
            )
        seen_alias[key] = i
    # Every layer needs a repository and a version tag template.
    for table in ("repositories", "version"):
        declared = getattr(model.tags, table)
        for layer in ("base", "cuda", "framework", "tools", "user"):
            if layer not in declared:
                errors.append(
                    MatrixError(
                        f"tags.{table} has no entry for layer '{layer}'",
                        doc.locate(("tags", table), key=True),
                    )
                )


def requirements_problem(root: Path, rel: str) -> str | None:
    """Why `rel` (relative to the matrix directory `root`) cannot be read as a requirements file, or None.

    It must stay inside `root` once symlinks are resolved, be a regular file of at most MAX_REQUIREMENTS_BYTES
    and hold UTF-8 text without NUL characters.
    """
    base = root.resolve()
    try:
        resolved = (base / rel).resolve(strict=True)
    except FileNotFoundError:
        return "not found (relative to the matrix file)"
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop before Python 3.13
        return f"cannot be resolved ({getattr(exc, 'strerror', None) or exc})"
    if not resolved.is_relative_to(base):
        return "resolves outside the matrix file's directory (through a symlink)"
    try:
        info = resolved.stat()
        if not stat.S_ISREG(info.st_mode):
            return "is not a regular file"
        if info.st_size > MAX_REQUIREMENTS_BYTES:
            return f"is larger than {MAX_REQUIREMENTS_BYTES // 1024} kB"
        raw = resolved.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if b"\0" in raw:
        return "is not text (it holds NUL bytes)"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
    return None
