"""The house rules, checked on the source: rooms (sub-packages) import only the rooms below them, no import
circles between files, and no import hidden inside a function.

The table `ROOMS` is the map the README's "How it fits together" section draws: each room with the rooms it
may import. A new import that runs upward, or a new circle, fails here with the file and line that made it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("builder", "registry_sync", "validate", "cli")

# room -> rooms it may import (besides itself). Lower rooms never name higher ones.
ROOMS: dict[str, set[str]] = {
    "builder.errors": set(),
    "builder.settings": {"builder.errors"},
    "builder.state_lock": {"builder.errors", "builder.settings"},
    "builder.events": {"builder.errors"},
    "builder.matrix": {"builder.errors", "builder.settings"},
    "builder.plan": {"builder.errors", "builder.settings", "builder.matrix"},
    "builder.oci": {"builder.errors", "builder.settings"},
    "builder.engine": {"builder.errors", "builder.settings", "builder.events", "builder.oci", "builder.plan"},
    "builder.lock": {
        "builder.errors",
        "builder.settings",
        "builder.events",
        "builder.matrix",
        "builder.plan",
        "builder.oci",
        "builder.engine",
    },
    "registry_sync.registry": {"builder.errors", "builder.settings", "builder.oci"},
    "validate.container": {"builder.errors", "builder.settings", "builder.engine"},
    "builder.build": {
        "builder.errors",
        "builder.settings",
        "builder.events",
        "builder.matrix",
        "builder.plan",
        "builder.oci",
        "builder.engine",
        "builder.lock",
    },
    "validate.smoke": {
        "builder.errors",
        "builder.settings",
        "builder.events",
        "builder.oci",
        "builder.engine",
        "validate.container",
    },
    "validate.bench": {"builder.errors", "builder.settings", "builder.engine", "validate.container"},
    "validate.vulns": {"builder.errors", "builder.settings", "builder.matrix", "builder.plan"},
    "registry_sync.publish": {
        "builder.errors",
        "builder.settings",
        "builder.events",
        "builder.matrix",
        "builder.plan",
        "builder.oci",
        "builder.engine",
        "builder.lock",
        "registry_sync.registry",
        "validate.smoke",
        "validate.bench",
    },
    "cli": {
        "builder.errors",
        "builder.settings",
        "builder.state_lock",
        "builder.events",
        "builder.matrix",
        "builder.plan",
        "builder.oci",
        "builder.engine",
        "builder.lock",
        "builder.build",
        "registry_sync.registry",
        "registry_sync.publish",
        "validate.container",
        "validate.smoke",
        "validate.bench",
        "validate.vulns",
    },
}
# Copied into images and run there with the stdlib only: they import nothing of the project but each other.
IN_CONTAINER = {
    "validate.smoke.checks",
    "validate.smoke.check_result",
    "validate.smoke.gpu_checks",
    "validate.bench.workloads",
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (resolved to a module of the project, or a third-party name)
    line: int
    in_function: bool
    comment: str

    def where(self) -> str:
        return f"{self.source.replace('.', '/')}.py:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def room_of(module: str) -> str | None:
    for room in sorted(ROOMS, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    return None


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The longest project module that `name` (a.b.c, maybe a.b.function) names."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return name


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text)
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                comment = lines[child.lineno - 1].partition("#")[2].strip()
                names: list[str] = []
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                elif child.level == 0 and child.module:
                    names = [f"{child.module}.{a.name}" for a in child.names]
                for name in names:
                    found.append(Import(module, _resolve(name, modules), child.lineno, in_function, comment))
            visit(child, inner)

    visit(tree, False)
    return found


def all_imports() -> list[Import]:
    modules = project_modules()
    return [imp for mod, path in sorted(modules.items()) for imp in imports_of(mod, path, modules)]


def _is_project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def test_every_module_lives_in_a_room() -> None:
    homeless = [m for m in project_modules() if room_of(m) is None and m not in PACKAGES]
    assert not homeless, f"modules outside every room of ROOMS: {homeless}"


def test_rooms_form_no_circle() -> None:
    seen: dict[str, int] = {}

    def walk(room: str, stack: list[str]) -> None:
        if seen.get(room) == 1:
            pytest.fail(f"ROOMS itself has a circle: {' -> '.join(stack + [room])}")
        if seen.get(room) == 2:
            return
        seen[room] = 1
        for lower in ROOMS[room]:
            walk(lower, stack + [room])
        seen[room] = 2

    for room in ROOMS:
        walk(room, [])


def test_no_import_runs_upward_or_sideways() -> None:
    bad = []
    for imp in all_imports():
        if not _is_project(imp.target):
            continue
        src, dst = room_of(imp.source), room_of(imp.target)
        if imp.source in IN_CONTAINER:
            if imp.target not in IN_CONTAINER:
                bad.append(f"{imp.where()}: code run inside images imports {imp.target}")
            continue
        if src is None or dst is None or src == dst:
            continue
        if dst not in ROOMS[src]:
            bad.append(f"{imp.where()}: {src} may not import {dst} ({imp.target})")
    assert not bad, "imports against the house rules:\n" + "\n".join(bad)


def test_no_import_inside_a_function() -> None:
    """Imports sit at the top of a module; the one exception is an optional dependency, marked `# optional:`."""
    bad = [
        f"{imp.where()}: imports {imp.target} inside a function"
        for imp in all_imports()
        if imp.in_function and imp.source not in IN_CONTAINER and not imp.comment.startswith("optional:")
    ]
    assert not bad, "\n".join(bad)


def test_no_circle_between_files() -> None:
    graph: dict[str, set[str]] = {}
    for imp in all_imports():
        if _is_project(imp.target) and imp.target != imp.source:
            graph.setdefault(imp.source, set()).add(imp.target)
    state: dict[str, int] = {}
    circles: list[str] = []

    def walk(mod: str, stack: list[str]) -> None:
        if state.get(mod) == 1:
            circles.append(" -> ".join(stack[stack.index(mod) :] + [mod]))
            return
        if state.get(mod) == 2:
            return
        state[mod] = 1
        for nxt in sorted(graph.get(mod, ())):
            walk(nxt, stack + [mod])
        state[mod] = 2

    for mod in sorted(graph):
        walk(mod, [])
    assert not circles, "import circles:\n" + "\n".join(circles)
