"""The build plan: shape, content hashes, tags, selection and output formats (pure, no Docker)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from builder.errors import MatrixError, StrataError
from builder.matrix.load import load_matrix
from builder.plan import graph
from builder.plan.github import github_matrix
from builder.plan.graph import Plan, build_plan
from builder.plan.layers import LAYER_KINDS
from builder.plan.lockfile import parse_lock
from cli.main import main

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A private copy of the matrix, templates and locks that a test may change."""
    for name in ("layers", "locks"):
        shutil.copytree(REPO / name, tmp_path / name)
    shutil.copy(REPO / "matrix.yaml", tmp_path / "matrix.yaml")
    return tmp_path


def plan_of(root: Path, profile: str = "hermetic") -> Plan:
    return build_plan(load_matrix(root / "matrix.yaml", profile))


def hashes(plan: Plan) -> dict[str, str]:
    return {n.id: n.content_hash for n in plan.nodes}


def downstream(plan: Plan, node_id: str) -> set[str]:
    out = {node_id}
    changed = True
    while changed:
        changed = False
        for n in plan.nodes:
            if n.parent in out and n.id not in out:
                out.add(n.id)
                changed = True
    return out


def test_default_plan_shape() -> None:
    plan = plan_of(REPO)
    ids = [n.id for n in plan.nodes]
    assert len(ids) == len(set(ids)) == 16
    base = plan.node("base-bookworm")
    assert base.parent is None and base.cells == ("tf2.13.1-cpu", "tf2.13.1-gpu")
    assert [
        plan.node(i).parent for i in ("cuda11.8-bookworm", "tf2.13.1-gpu-py3.11", "tools-tf2.13.1-gpu")
    ] == [
        "base-bookworm",
        "cuda11.8-bookworm",
        "tf2.13.1-gpu-py3.11",
    ]
    assert plan.node("tf2.13.1-cpu-py3.11").parent == "base-bookworm"
    assert plan.final_node("tf2.10.1-gpu").id == "user-example-tf2.10.1-gpu"
    # parents always come before children
    seen: set[str] = set()
    for n in plan.nodes:
        assert n.parent is None or n.parent in seen
        seen.add(n.id)


def test_upstream_profile_plans_without_cuda_wheels() -> None:
    plan = plan_of(REPO, "upstream")
    assert plan.node("tf2.13.1-gpu-py3.10").parent == "base-cuda11.8-ubuntu22.04"
    base = plan.node("base-cuda11.8-ubuntu22.04")
    assert base.base_image == (
        "127.0.0.1:5000/mirror/nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04"
        "@sha256:85fb7ac694079fff1061a0140fd5b5a641997880e12112d92589c3bbb1e8b7ca"
    )
    assert "FROM 127.0.0.1:5000/mirror/nvidia/cuda:11.8.0" in base.dockerfile
    assert "apt-get install" in base.dockerfile
    assert not any(n.layer == "cuda" for n in plan.nodes)


def test_apt_only_in_base_and_every_installing_layer_is_multistage() -> None:
    for profile in ("hermetic", "upstream"):
        for n in plan_of(REPO, profile).nodes:
            if n.layer != "base":
                assert "apt-get" not in n.dockerfile, n.id
                assert n.dockerfile.count("FROM ${PARENT_IMAGE}") == 2, n.id
                assert "--require-hashes" in n.dockerfile and "--no-index" in n.dockerfile
            assert not n.dockerfile.lstrip().lower().startswith("# syntax")


def test_tags_follow_the_scheme() -> None:
    plan = plan_of(REPO)
    tools = plan.node("tools-tf2.13.1-gpu")
    assert tools.tags == ("127.0.0.1:5000/strata/tensorflow:2.13.1-gpu-cuda11.8-cudnn8.6-py3.11-bookworm-r2",)
    assert set(tools.aliases) == {
        "127.0.0.1:5000/strata/tensorflow:2.13-gpu",
        "127.0.0.1:5000/strata/tensorflow:latest-gpu",
    }
    assert plan.node("tools-tf2.10.1-cpu").tags == (
        "127.0.0.1:5000/strata/tensorflow:2.10.1-cpu-py3.9-bullseye-r2",
    )
    assert plan.node("base-bullseye").tags == ("127.0.0.1:5000/strata/base:bullseye-1700000000-r2",)
    assert plan.node("user-example-tf2.13.1-cpu").tags == (
        "127.0.0.1:5000/strata/example:2.13.1-cpu-py3.11-bookworm-r2",
    )
    for n in plan.nodes:
        assert n.cache_ref == f"{n.tags[0].rsplit(':', 1)[0]}:h-{n.content_hash}"


def test_labels_carry_versions_and_the_content_hash_argument() -> None:
    df = plan_of(REPO).node("tf2.13.1-gpu-py3.11").dockerfile
    for label in (
        'io.strata.tf="2.13.1"',
        'io.strata.cuda="11.8"',
        'io.strata.cudnn="8.6"',
        'io.strata.python="3.11"',
        'io.strata.cell="tf2.13.1-gpu"',
        "io.strata.content-hash=${STRATA_CONTENT_HASH}",
        'org.opencontainers.image.version="2.13.1-gpu-cuda11.8-cudnn8.6-py3.11-bookworm"',
    ):
        assert label in df


def test_rendering_twice_gives_identical_bytes(tmp_path: Path) -> None:
    assert main(["render", "-f", str(REPO / "matrix.yaml"), "--out", str(tmp_path / "a")]) == 0
    assert main(["render", "-f", str(REPO / "matrix.yaml"), "--out", str(tmp_path / "b")]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("Dockerfile"))
    assert len(files) == 16
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_tools_requirement_change_rehashes_exactly_the_tools_and_user_nodes_of_that_tf(
    workspace: Path,
) -> None:
    before = plan_of(workspace)
    req = workspace / "layers" / "tools" / "requirements-tf2.13.in"
    req.write_text(req.read_text() + "rich==13.7.0\n")
    after = plan_of(workspace)
    changed = {k for k, v in hashes(after).items() if hashes(before)[k] != v}
    assert changed == {
        "tools-tf2.13.1-cpu",
        "tools-tf2.13.1-gpu",
        "user-example-tf2.13.1-cpu",
        "user-example-tf2.13.1-gpu",
    }
    # ...and their locks are now stale, the others are not
    stale = {n.id for n in after.nodes if n.lock and n.lock.inputs != n.lock_inputs}
    assert {"tools-tf2.13.1-cpu"} <= stale
    assert not stale & {"tf2.13.1-cpu-py3.11", "base-bookworm", "tools-tf2.10.1-cpu"}


def test_lock_change_rehashes_the_node_and_only_its_descendants(workspace: Path) -> None:
    before = plan_of(workspace)
    lock = workspace / "locks" / "hermetic" / "tf2.13.1-cpu-py3.11.lock"
    pinned = parse_lock(lock.read_text(), str(lock))
    lock.write_text(
        dataclasses.replace(pinned, wheels=pinned.wheels[:-1]).render()
    )  # drop one pinned wheel, re-digested
    after = plan_of(workspace)
    changed = {k for k, v in hashes(after).items() if hashes(before)[k] != v}
    assert changed == downstream(before, "tf2.13.1-cpu-py3.11")


@pytest.mark.parametrize(
    ("what", "edit"),
    [
        (
            "base template",
            lambda root: (root / "layers/base/Dockerfile.j2").write_text(
                (root / "layers/base/Dockerfile.j2").read_text() + "# comment\n"
            ),
        ),
        (
            "epoch",
            lambda root: (root / "matrix.yaml").write_text(
                (root / "matrix.yaml")
                .read_text()
                .replace("source_date_epoch: 1700000000", "source_date_epoch: 1700000001")
            ),
        ),
    ],
)
def test_global_inputs_rehash_every_node_that_depends_on_them(workspace: Path, what: str, edit) -> None:  # type: ignore[no-untyped-def]
    before = hashes(plan_of(workspace))
    edit(workspace)
    after = hashes(plan_of(workspace))
    assert all(after[k] != before[k] for k in before), what


def test_user_layer_change_touches_only_user_nodes(workspace: Path) -> None:
    before = hashes(plan_of(workspace))
    tpl = workspace / "layers/user/Dockerfile.j2"
    tpl.write_text(tpl.read_text().replace("EXPOSE {{ port | df }}", "EXPOSE {{ port | df }}/tcp"))
    after = hashes(plan_of(workspace))
    assert {k for k in before if before[k] != after[k]} == {k for k in before if k.startswith("user-")}


def test_only_selects_cells_and_their_ancestors() -> None:
    plan = plan_of(REPO)
    sel = plan.select(["tf2.13.1-*"])
    assert {n.id for n in sel.nodes} == {
        n.id for n in plan.nodes if n.id.endswith(("bookworm", "py3.11")) or "tf2.13.1" in n.id
    }
    assert [n.id for n in plan.select(["tools-tf2.10.1-cpu"]).nodes] == [
        "base-bullseye",
        "tf2.10.1-cpu-py3.9",
        "tools-tf2.10.1-cpu",
    ]
    assert {n.id for n in plan.select(["*-cpu"]).nodes} == {
        "base-bookworm",
        "tf2.13.1-cpu-py3.11",
        "tools-tf2.13.1-cpu",
        "user-example-tf2.13.1-cpu",
        "base-bullseye",
        "tf2.10.1-cpu-py3.9",
        "tools-tf2.10.1-cpu",
        "user-example-tf2.10.1-cpu",
    }
    with pytest.raises(MatrixError, match=r"--only 'tf3\*' matches no cell or node"):
        plan.select(["tf3*"])


def test_github_matrix_has_one_entry_per_cell() -> None:
    out = github_matrix(plan_of(REPO))
    assert set(out) == {"include"}
    cells = [e["cell"] for e in out["include"]]
    assert cells == ["tf2.13.1-cpu", "tf2.13.1-gpu", "tf2.10.1-cpu", "tf2.10.1-gpu"]
    gpu = out["include"][1]
    assert gpu["cuda"] == "11.8" and gpu["runner"] == "gpu"
    assert gpu["image"].endswith(":2.13.1-gpu-cuda11.8-cudnn8.6-py3.11-bookworm-r2")
    assert all(isinstance(v, str) for e in out["include"] for v in e.values())


def test_plan_json_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-f", str(REPO / "matrix.yaml"), "--only", "tf2.10.1-cpu", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "strata.plan/1" and doc["profile"] == "hermetic"
    nodes = doc["nodes"]
    assert [n["id"] for n in nodes] == [
        "base-bullseye",
        "tf2.10.1-cpu-py3.9",
        "tools-tf2.10.1-cpu",
        "user-example-tf2.10.1-cpu",
    ]
    assert set(nodes[0]) >= {"id", "layer", "parent", "cells", "content_hash", "tags"}
    assert nodes[1]["parent"] == "base-bullseye" and len(nodes[1]["content_hash"]) == 64


def test_undefined_template_variable_names_template_line_and_variable(workspace: Path) -> None:
    tpl = workspace / "layers/tools/Dockerfile.j2"
    lines = tpl.read_text().splitlines()
    lines.insert(5, "ENV X={{ cell.no_such_thing }}")
    tpl.write_text("\n".join(lines) + "\n")
    with pytest.raises(StrataError) as info:
        plan_of(workspace)
    assert str(info.value) == (
        f"{tpl}:6: undefined variable while rendering node tools-tf2.13.1-cpu: 'dict object' has no attribute 'no_such_thing'"
    )


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str], workspace: Path) -> None:
    m = workspace / "matrix.yaml"
    m.write_text(m.read_text().replace("schema: 1", "schema: 2"))
    assert main(["plan", "-f", str(m)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"strata: {m}:3:9: 'schema': 1 expected, got 2"]


def test_release_bump_changes_version_tags_but_not_content(workspace: Path) -> None:
    from builder.matrix.release import bump_release

    before = plan_of(workspace)
    assert bump_release(workspace / "matrix.yaml") == 3
    after = plan_of(workspace)
    assert hashes(after) == hashes(before)
    assert after.node("tools-tf2.13.1-cpu").tags == (
        "127.0.0.1:5000/strata/tensorflow:2.13.1-cpu-py3.11-bookworm-r3",
    )
    assert "release: 3\n" in (workspace / "matrix.yaml").read_text()


# ---------------------------------------------------------------------------------------------- errors name matrix.yaml:line:col


def edit_matrix(root: Path, old: str, new: str) -> Path:
    m = root / "matrix.yaml"
    text = m.read_text()
    assert text.count(old) == 1, f"{old!r} is not unique in matrix.yaml"
    m.write_text(text.replace(old, new))
    return m


def position(path: Path, anchor: str, token: str) -> str:
    """`path:line:col` of `token` on the one line of the file that contains `anchor`."""
    hits = [(no, line) for no, line in enumerate(path.read_text().splitlines(), start=1) if anchor in line]
    assert len(hits) == 1, f"anchor {anchor!r} found {len(hits)} times"
    no, line = hits[0]
    return f"{path}:{no}:{line.index(token) + 1}"


PLACEHOLDERS = (
    "{namespace}, {epoch}, {os}, {user}, {tf}, {tf_minor}, {flavor}, {python}, {cuda}, {cudnn}, {cuda_version}, {cuda_prefix}, {version}, {release}"
    " (written plainly: no format spec, conversion, attribute or index)"
)


def plan_error(root: Path, profile: str = "hermetic") -> str:
    # StrataError: the schema reports what it finds while loading the matrix as an ErrorList (one line each).
    with pytest.raises(StrataError) as info:
        plan_of(root, profile)
    return str(info.value)


def test_tag_collision_names_the_version_template_that_makes_it(workspace: Path) -> None:
    m = edit_matrix(workspace, '    tools: "{version}-r{release}"', '    tools: "{tf}"')
    where = position(m, 'tools: "{tf}"', '"{tf}"')
    assert plan_error(workspace) == (
        f"{where}: tag collision: '127.0.0.1:5000/strata/tensorflow:2.13.1'"
        " would be published by both tools-tf2.13.1-cpu and tools-tf2.13.1-gpu"
    )


def test_tag_collision_with_an_alias_names_the_alias(workspace: Path) -> None:
    # The alias is published by tools-tf2.13.1-cpu, planned before the node whose version tag it takes.
    m = edit_matrix(
        workspace,
        "  - {tag: latest-cpu, cell: tf2.13.1-cpu}\n",
        "  - {tag: latest-cpu, cell: tf2.13.1-cpu}\n  - {tag: 2.10.1-cpu-py3.9-bullseye-r2, cell: tf2.13.1-cpu}\n",
    )
    assert plan_error(workspace) == (
        f"{position(m, 'tag: 2.10.1-cpu-py3.9-bullseye-r2', '2.10.1')}: tag collision:"
        " '127.0.0.1:5000/strata/tensorflow:2.10.1-cpu-py3.9-bullseye-r2'"
        " would be published by both tools-tf2.13.1-cpu and tools-tf2.10.1-cpu"
    )


@pytest.mark.parametrize(
    ("old", "new", "anchor", "message"),
    [
        (
            '    tools: "{version}-r{release}"',
            '    tools: "{version}-{nope}"',
            "{nope}",
            "'tags.version.tools': placeholder '{nope}' is not one of " + PLACEHOLDERS,
        ),
        (
            '    base: "{cuda_prefix}{os}-{epoch}-r{release}"',
            '    base: "{os}-{epoch"',
            '{epoch"',
            "'tags.version.base': malformed template '{os}-{epoch' (expected '}' before end of string)",
        ),
        (
            '    framework: "{version}-r{release}"',
            '    framework: "{version}/r{release}"',
            "{version}/r",
            "'tags.version.framework': text '/r' in template '{version}/r{release}' may hold only [A-Za-z0-9_.-]",
        ),
        (
            '    user: "{namespace}/{user}"',
            '    user: "{namespace}/{team}"',
            "{team}",
            "'tags.repositories.user': placeholder '{team}' is not one of " + PLACEHOLDERS,
        ),
    ],
)
def test_tag_template_errors_name_the_template(
    workspace: Path, old: str, new: str, anchor: str, message: str
) -> None:
    m = edit_matrix(workspace, old, new)
    value = new.split(": ", 1)[1]
    assert plan_error(workspace) == f"{position(m, anchor, value)}: {message}"


@pytest.mark.parametrize(
    ("requirements", "profile"),
    [
        ("layers/cuda/requirements-cu118.in", "hermetic"),
        ("layers/framework/requirements-tf2.13.in", "hermetic"),
        ("layers/tools/requirements-tf2.13.in", "upstream"),
        ("layers/user/example/requirements.in", "upstream"),
    ],
)
def test_unreadable_requirements_name_the_matrix_entry(
    workspace: Path, requirements: str, profile: str
) -> None:
    (workspace / requirements).write_bytes(b"\xff\xfe not utf-8\n")
    assert plan_error(workspace, profile) == (
        f"{position(workspace / 'matrix.yaml', requirements, requirements)}: requirements"
        f" '{requirements}': is not UTF-8 text (byte 0xff at offset 0)"
    )


def test_two_cells_defining_one_node_differently_names_the_second_cells_framework(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Node ids built from the matrix are unique per definition today; a framework id without the flavor makes
    # the cpu and gpu cells of one framework ask for the same node with different requirements.
    kinds = tuple(
        dataclasses.replace(k, node_id=lambda at: f"tf{at.cell.tf}-py{at.cell.python}")
        if k.name == "framework"
        else k
        for k in LAYER_KINDS
    )
    monkeypatch.setattr(graph, "LAYER_KINDS", kinds)
    where = position(workspace / "matrix.yaml", '- tf: "2.13.1"', "tf")
    assert plan_error(workspace) == (
        f"{where}: two cells define node 'tf2.13.1-py3.11' differently (tf2.13.1-cpu and tf2.13.1-gpu)"
    )


def test_plan_errors_print_as_one_located_line(capsys: pytest.CaptureFixture[str], workspace: Path) -> None:
    m = edit_matrix(workspace, '    tools: "{version}-r{release}"', '    tools: "{nope}"')
    where = position(m, "{nope}", '"{nope}"')
    assert main(["plan", "-f", str(m)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"strata: {where}: 'tags.version.tools': placeholder '{{nope}}' is not one of {PLACEHOLDERS}"
    ]
