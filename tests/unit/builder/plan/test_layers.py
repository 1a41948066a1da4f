"""The table of layer kinds: its order, its templates, and which cells have which layers."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.matrix.load import load_matrix, parse_matrix
from builder.matrix.schema import LAYER_ORDER
from builder.plan.layers import LAYER_KINDS, CellLayer, LayerKind
from builder.plan.render import TEMPLATE_NAME

REPO = Path(__file__).resolve().parents[4]


def stack(profile: str, cell_id: str) -> list[tuple[str, str]]:
    """(layer kind, node id) of one cell's layers, bottom to top, as the table declares them."""
    matrix = load_matrix(REPO / "matrix.yaml", profile)
    cell = matrix.cell(cell_id)
    return [(kind.name, kind.node_id(at)) for kind in LAYER_KINDS for at in kind.of(matrix, cell)]


def test_the_table_stacks_in_the_schema_order() -> None:
    assert tuple(kind.name for kind in LAYER_KINDS) == LAYER_ORDER


def test_every_layer_kind_has_its_template_and_every_template_a_kind() -> None:
    layers = REPO / "layers"
    for kind in LAYER_KINDS:
        assert (layers / kind.template).is_file(), kind.template
    templates = {p.parent.name for p in layers.glob(f"*/{TEMPLATE_NAME}")}
    assert templates == {kind.name for kind in LAYER_KINDS}


@pytest.mark.parametrize(
    ("profile", "cell", "expected"),
    [
        (
            "hermetic",
            "tf2.13.1-gpu",
            [
                ("base", "base-bookworm"),
                ("cuda", "cuda11.8-bookworm"),
                ("framework", "tf2.13.1-gpu-py3.11"),
                ("tools", "tools-tf2.13.1-gpu"),
                ("user", "user-example-tf2.13.1-gpu"),
            ],
        ),
        (
            "hermetic",
            "tf2.10.1-cpu",
            [
                ("base", "base-bullseye"),
                ("framework", "tf2.10.1-cpu-py3.9"),
                ("tools", "tools-tf2.10.1-cpu"),
                ("user", "user-example-tf2.10.1-cpu"),
            ],
        ),
        # Upstream gpu cells get CUDA with their base image: no cuda layer, a base of its own per CUDA version.
        (
            "upstream",
            "tf2.13.1-gpu",
            [
                ("base", "base-cuda11.8-ubuntu22.04"),
                ("framework", "tf2.13.1-gpu-py3.10"),
                ("tools", "tools-tf2.13.1-gpu"),
                ("user", "user-example-tf2.13.1-gpu"),
            ],
        ),
    ],
)
def test_which_layers_a_cell_has(profile: str, cell: str, expected: list[tuple[str, str]]) -> None:
    assert stack(profile, cell) == expected


def test_what_each_layer_adds() -> None:
    matrix = load_matrix(REPO / "matrix.yaml", "hermetic")
    gpu = matrix.cell("tf2.13.1-gpu")
    adds = {kind.name: [kind.adds(at) for at in kind.of(matrix, gpu)] for kind in LAYER_KINDS}
    (base,) = adds["base"]
    assert base.base_image is None and base.requirements == ()
    assert base.rootfs is not None and base.rootfs["suite"] == "bookworm"
    (cuda,) = adds["cuda"]
    assert cuda.requirement_files == ("layers/cuda/requirements-cu118.in",) and cuda.rootfs is None
    assert all(r.startswith("nvidia-") for r in cuda.requirements)
    (framework,) = adds["framework"]
    assert framework.requirements[0] == "tensorflow==2.13.1"
    assert framework.requirement_files == ("layers/framework/requirements-tf2.13.in",)
    (user,) = adds["user"]
    assert user.requirement_files == ("layers/user/example/requirements.in",)

    upstream = load_matrix(REPO / "matrix.yaml", "upstream")
    kind = LAYER_KINDS[0]
    (at,) = kind.of(upstream, upstream.cell("tf2.13.1-gpu"))
    assert kind.adds(at).base_image == (
        "127.0.0.1:5000/mirror/nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04"
        "@sha256:85fb7ac694079fff1061a0140fd5b5a641997880e12112d92589c3bbb1e8b7ca"
    )
    assert kind.adds(at).rootfs is None


def test_each_user_layer_selecting_a_cell_is_one_layer_in_matrix_order() -> None:
    text = (REPO / "matrix.yaml").read_text()
    second = (
        "  - name: second\n    requirements: layers/user/example/requirements.in\n    cells: [tf2.13.1-gpu]\n"
    )
    text = text.replace("\n# Published references.", f"{second}\n# Published references.")
    matrix = parse_matrix(text, "matrix.yaml", root=REPO)
    kind = LAYER_KINDS[-1]
    ids = [kind.node_id(at) for at in kind.of(matrix, matrix.cell("tf2.13.1-gpu"))]
    assert ids == ["user-example-tf2.13.1-gpu", "user-second-tf2.13.1-gpu"]
    assert [kind.node_id(at) for at in kind.of(matrix, matrix.cell("tf2.13.1-cpu"))] == [
        "user-example-tf2.13.1-cpu"
    ]


def _labels(kind: LayerKind, at: CellLayer) -> dict[str, str]:
    return kind.own_labels(at, kind.facts(at))


def test_each_layer_kind_adds_its_own_labels() -> None:
    matrix = load_matrix(REPO / "matrix.yaml", "hermetic")
    cpu, gpu = matrix.cell("tf2.13.1-cpu"), matrix.cell("tf2.13.1-gpu")
    base, cuda, framework, tools, user = LAYER_KINDS
    assert _labels(base, CellLayer(matrix, cpu)) == {}
    cuda_labels = _labels(cuda, CellLayer(matrix, gpu))
    assert cuda_labels.pop("io.strata.pruned.cuda").startswith('["nvidia/nccl/lib/libnccl.so.2",')
    assert cuda_labels == {
        "io.strata.cuda": "11.8",
        "io.strata.cudnn": "8.6",
        "io.strata.min-driver": "450.80.02",
    }
    fw = _labels(framework, CellLayer(matrix, cpu))
    assert fw["io.strata.pruned.framework"] == '["tensorflow/include"]'
    assert fw["io.strata.cell"] == "tf2.13.1-cpu" and fw["io.strata.xla-gpu"] == "false"
    assert "io.strata.cuda" not in fw
    assert _labels(tools, CellLayer(matrix, gpu))["org.opencontainers.image.version"] == (
        "2.13.1-gpu-cuda11.8-cudnn8.6-py3.11-bookworm"
    )
    (at,) = user.of(matrix, gpu)
    assert _labels(user, at)["io.strata.user-layer"] == "example"
