"""Size budgets and prune lists as the matrix declares them: typed and bounded in matrix.yaml, the tightest budget
per node, a one-line verdict, and prune patterns that reach the Dockerfile only as quoted words."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builder.errors import StrataError
from builder.matrix.load import load_matrix
from builder.plan.budgets import Budget, node_budget, over_budget, show_bytes
from builder.plan.graph import build_plan

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    for name in ("layers", "locks"):
        shutil.copytree(REPO / name, tmp_path / name)
    shutil.copy(REPO / "matrix.yaml", tmp_path / "matrix.yaml")
    return tmp_path


def edit(root: Path, old: str, new: str) -> Path:
    m = root / "matrix.yaml"
    text = m.read_text()
    assert text.count(old) == 1, old
    m.write_text(text.replace(old, new))
    return m


def load_error(root: Path) -> str:
    with pytest.raises(StrataError) as info:
        load_matrix(root / "matrix.yaml", "hermetic")
    return str(info.value)


def test_every_gpu_node_of_the_default_matrix_has_a_budget_and_the_213_gpu_image_meets_the_target() -> None:
    plan = build_plan(load_matrix(REPO / "matrix.yaml", "hermetic"))
    assert all(n.budget is not None for n in plan.nodes)
    framework = plan.node("tf2.13.1-gpu-py3.11").budget
    assert framework is not None and framework.max_bytes <= 4_564_000_000  # <= 0.7 x 6.52 GB and <= 4.6 GB
    assert framework.where.startswith(str(REPO / "matrix.yaml") + ":")


def test_the_tightest_matching_budget_wins_and_names_its_line(workspace: Path) -> None:
    m = edit(
        workspace,
        "budgets:\n",
        'budgets:\n  - {nodes: "cuda*", max_bytes: 1000000}\n  - {nodes: "cuda11.8-bookworm", max_bytes: 2000000}\n',
    )
    matrix = load_matrix(m, "hermetic")
    budget = node_budget(matrix, "cuda11.8-bookworm")
    line = next(i for i, t in enumerate(m.read_text().splitlines(), 1) if 'nodes: "cuda*"' in t)
    assert budget == Budget(1_000_000, f"{m}:{line}:33")
    assert node_budget(matrix, "no-such-node") is None


def test_over_budget_is_one_line_naming_node_size_and_budget() -> None:
    budget = Budget(4_600_000_000, "matrix.yaml:163:40")
    assert over_budget("tf2.13.1-gpu-py3.11", 4_600_000_000, budget) is None
    assert over_budget("tf2.13.1-gpu-py3.11", 4_600_000_001, None) is None
    assert over_budget("tf2.13.1-gpu-py3.11", 5_129_710_886, budget) == (
        "node tf2.13.1-gpu-py3.11: image is 5.13 GB (5129710886 bytes), over its budget of 4.60 GB"
        " (4600000000 bytes, matrix.yaml:163:40)"
    )
    assert show_bytes(999) == "999 B" and show_bytes(2_500_000) == "2.50 MB"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "max_bytes: 180000000,",
            "max_bytes: 12,",
            "must be a size in bytes from 1000000 to 1000000000000, got 12",
        ),
        ("max_bytes: 180000000,", 'max_bytes: "180000000",', "must be integer, got str"),
        ('{nodes: "base-*"', '{nodes: "base-*; rm -rf /"', "must be a glob over node ids"),
        ("      - nvidia/*/include", "      - nvidia/$(touch /x)/include", "must be a relative path glob"),
        ("      - nvidia/*/include", "      - ../../etc", "must be a relative path glob"),
        ("      - nvidia/*/include", "      - /opt/strata", "must be a relative path glob"),
        ("      - nvidia/*/include", "      - 'a b'", "must be a relative path glob"),
        ("      - nvidia/*/include", "      - nvidia/`id`", "must be a relative path glob"),
        ("      - nvidia/*/include", "      - nvidia/x;id", "must be a relative path glob"),
        ("      - nvidia/*/include", "      - " + "a" * 201, "must be a relative path glob"),
        (
            "    prune: [tensorflow/include]   #",
            '    prune: ["tensorflow/include\\n"]   #',
            "relative path glob",
        ),
    ],
)
def test_prune_and_budget_fields_are_typed_and_bounded(
    workspace: Path, old: str, new: str, message: str
) -> None:
    edit(workspace, old, new)
    assert message in load_error(workspace)


def test_prune_lists_are_bounded_and_only_for_wheels(workspace: Path) -> None:
    edit(workspace, "        prune:\n", "        prune:\n" + "          - x\n" * 200)
    assert "at most 200 items" in load_error(workspace)


def test_prune_is_refused_on_an_upstream_cuda_image(workspace: Path) -> None:
    edit(
        workspace,
        '        cudnn: "8.1"\n',
        '        cudnn: "8.1"\n        prune: [nvidia]\n',
    )
    with pytest.raises(StrataError, match="'prune' applies to source 'wheels' only"):
        load_matrix(workspace / "matrix.yaml", "upstream")


def test_prune_renders_one_quoted_word_per_pattern_in_the_install_stage() -> None:
    plan = build_plan(load_matrix(REPO / "matrix.yaml", "hermetic"))
    dockerfile = plan.node("cuda11.8-bookworm").dockerfile
    install, final = dockerfile.split("\nFROM ${PARENT_IMAGE}\n")
    # The removal runs in the install stage, before the final stage copies the prefix: the bytes never reach a layer.
    assert "for pattern in nvidia/nccl/lib/libnccl.so.2 " in install and "'nvidia/*/include'; do" in install
    assert "rm -rf" not in final and "COPY --from=install /opt/strata/cuda /opt/strata/cuda" in final
    assert 'NVIDIA_REQUIRE_CUDA="cuda>=11.8 driver>=450.80.02"' in final
    assert 'io.strata.min-driver="450.80.02"' in final
    # A layer without a prune list renders no removal step at all.
    assert "for pattern in" not in plan.node("tools-tf2.13.1-gpu").dockerfile
