"""The kinds of layer, declared once, in the order they stack: base, cuda, framework, tools, user.

Each row of `LAYER_KINDS` says when a cell has the layer, the id of its node, what it adds on top of its parent
(requirements and the files they come from, a root filesystem recipe, an external base image), the facts its tag
templates may name, the context its template (layers/<name>/Dockerfile.j2) renders with, and the labels it
carries besides the ones every node carries. Each of those is one small function below; graph.py walks the table
for every cell and never asks which layer it is looking at.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packaging.version import Version

from builder.errors import MatrixError
from builder.matrix import compat
from builder.matrix.load import Cell, Matrix
from builder.matrix.schema import LayerName, UserLayer
from builder.plan.render import TEMPLATE_NAME
from builder.plan.tags import TagFacts

# Which CUDA wheel directories hold shared libraries TensorFlow dlopens (nvidia-<name>-cu11 → nvidia/<dir>/lib).
_NO_LIB_DIR = {"cuda-nvcc"}


@dataclass(frozen=True)
class CellLayer:
    """One layer of one cell: what every function of a layer kind reads (`user` only for user layers)."""

    matrix: Matrix
    cell: Cell
    user: UserLayer | None = None

    @property
    def upstream_cuda(self) -> bool:
        """The cell's CUDA comes inside an upstream image (its base), not as a layer of wheels."""
        return self.cell.cuda_spec is not None and self.cell.cuda_spec.source == "image"

    @property
    def settings(self) -> dict[str, Any]:
        build = self.matrix.model.build
        return {
            "venv": build.venv,
            "prefix": build.prefix,
            "epoch": self.matrix.model.source_date_epoch,
            "platform": build.platform,
        }

    @property
    def python(self) -> dict[str, str]:
        return {"version": self.cell.python, "site": f"lib/python{self.cell.python}/site-packages"}

    @property
    def os_facts(self) -> TagFacts:
        m = self.matrix.model
        return TagFacts(
            namespace=m.registry.namespace, epoch=m.source_date_epoch, os=self.cell.os_name, release=m.release
        )

    @property
    def cuda_facts(self) -> TagFacts:
        return dataclasses.replace(self.os_facts, cuda=self.cell.cuda or "", cudnn=self.cell.cudnn or "")

    @property
    def cell_facts(self) -> TagFacts:
        c = self.cell
        return dataclasses.replace(self.cuda_facts, tf=c.tf, flavor=c.flavor, python=c.python)

    @property
    def cell_context(self) -> dict[str, Any]:
        c = self.cell
        gpu = c.flavor == "gpu"
        return {
            "id": c.id,
            "tf": c.tf,
            "tf_package": _tf_package(c),
            "flavor": c.flavor,
            "cuda": c.cuda,
            "cudnn": c.cudnn,
            "os": c.os_name,
            "min_driver": compat.TF_RULES[c.tf_minor].min_driver if gpu else None,
            "xla_gpu": gpu,
        }

    def requirement_lines(self, rel: str, *where: str | int) -> list[str]:
        """The requirement lines of a file the matrix names at `where` (comments and blank lines dropped)."""
        try:
            text = (self.matrix.root / rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MatrixError(
                f"cannot read requirements file '{rel}': {exc}", self.matrix.locate(*where)
            ) from None
        return [line for raw in text.splitlines() if (line := raw.split("#", 1)[0].strip())]


@dataclass(frozen=True)
class Adds:
    """What one layer puts on top of its parent; each field is an input of the node's identity and hashes."""

    requirements: tuple[str, ...] = ()  # pip requirement lines (resolved into the node's lock)
    requirement_files: tuple[str, ...] = ()  # where they come from, relative to the matrix file
    base_image: str | None = None  # external image the node starts FROM, pinned by digest
    rootfs: dict[str, Any] | None = None  # mmdebstrap recipe of a hermetic base


# A labeller adds a layer's own labels (every node also gets the common ones, see graph._labels).
Labeller = Callable[[CellLayer, TagFacts], dict[str, str]]


@dataclass(frozen=True)
class LayerKind:
    """One row of the table: how a cell's layer of this kind becomes a node."""

    name: LayerName  # the template directory layers/<name>/, the key under tags.repositories and tags.version
    when: Callable[[Cell], bool]  # does a cell have this layer
    node_id: Callable[[CellLayer], str]
    adds: Callable[[CellLayer], Adds]
    facts: Callable[[CellLayer], TagFacts]
    context: Callable[[CellLayer, Adds], dict[str, Any]]
    labels: tuple[Labeller, ...] = ()
    per_user: bool = False  # one node per user layer that selects the cell, stacked in matrix order

    @property
    def template(self) -> str:
        """The template path under layers/."""
        return f"{self.name}/{TEMPLATE_NAME}"

    def of(self, matrix: Matrix, cell: Cell) -> tuple[CellLayer, ...]:
        """This kind's layers in one cell, bottom to top: none, one, or one per user layer."""
        if not self.when(cell):
            return ()
        if self.per_user:
            return tuple(CellLayer(matrix, cell, user) for user in cell.users)
        return (CellLayer(matrix, cell),)

    def own_labels(self, at: CellLayer, facts: TagFacts) -> dict[str, str]:
        out: dict[str, str] = {}
        for labeller in self.labels:
            out.update(labeller(at, facts))
        return out


# ---------------------------------------------------------------------------------------------- base


def _base_id(at: CellLayer) -> str:
    c = at.cell
    return f"base-cuda{c.cuda}-{c.os_name}" if at.upstream_cuda else f"base-{c.os_name}"


def _base_adds(at: CellLayer) -> Adds:
    """The OS: hermetic, an mmdebstrap root filesystem; upstream, Ubuntu or NVIDIA's CUDA image by digest."""
    c, m = at.cell, at.matrix.model
    if at.upstream_cuda:
        assert c.cuda_spec is not None and c.cuda_spec.image is not None
        return Adds(base_image=_mirrored(at.matrix, c.cuda_spec.image))
    base_image = _mirrored(at.matrix, c.os.image) if c.os.image and c.os.source == "image" else None
    rootfs = None
    if c.os.source == "mmdebstrap":
        rootfs = {
            "suite": c.os.suite,
            "mirror": c.os.mirror,
            "variant": "minbase",
            "packages": sorted(c.os.packages),
            "epoch": m.source_date_epoch,
            "security": c.os.security,
            "updates": c.os.updates,
        }
    return Adds(base_image=base_image, rootfs=rootfs)


def _base_facts(at: CellLayer) -> TagFacts:
    return at.cuda_facts if at.upstream_cuda else at.os_facts


def _base_context(at: CellLayer, adds: Adds) -> dict[str, Any]:
    c = at.cell
    return {
        "settings": at.settings,
        "python": at.python,
        "os": {
            "name": c.os_name,
            "source": "image" if adds.base_image else "mmdebstrap",
            "packages": sorted(c.os.packages),
        },
        "base_image": adds.base_image,
        "cuda": {"version": c.cuda, "cudnn": c.cudnn} if at.upstream_cuda else None,
    }


def _mirrored(matrix: Matrix, image: str) -> str:
    """External bases are pulled through the private registry's mirror (see `strata sync`)."""
    return f"{matrix.model.registry.address}/mirror/{image}"


# ---------------------------------------------------------------------------------------------- cuda


def _hermetic_gpu(cell: Cell) -> bool:
    """CUDA is a layer of its own only where it comes from wheels; upstream cells get it with their base."""
    return cell.flavor == "gpu" and cell.cuda_spec is not None and cell.cuda_spec.source != "image"


def _cuda_id(at: CellLayer) -> str:
    return f"cuda{at.cell.cuda}-{at.cell.os_name}"


def _cuda_adds(at: CellLayer) -> Adds:
    spec = at.cell.cuda_spec
    assert spec is not None and spec.requirements is not None
    where = ("profiles", at.matrix.profile, "cuda", at.cell.cuda or "", "requirements")
    reqs = at.requirement_lines(spec.requirements, *where)
    return Adds(requirements=tuple(reqs), requirement_files=(spec.requirements,))


def _cuda_context(at: CellLayer, adds: Adds) -> dict[str, Any]:
    c = at.cell
    cuda_site = f"{at.matrix.model.build.prefix}/cuda/{at.python['site']}"
    names = [r.split("==")[0].split("<")[0].split(">")[0].strip() for r in adds.requirements]
    lib_dirs = [
        f"{cuda_site}/nvidia/{_wheel_dir(n)}/lib"
        for n in sorted(names)
        if n.startswith("nvidia-") and _strip_nvidia(n) not in _NO_LIB_DIR
    ]
    nvcc = any(_strip_nvidia(n) == "cuda-nvcc" for n in names)
    assert c.cuda_spec is not None
    return {
        "settings": at.settings,
        "python": at.python,
        "cuda": {
            "version": c.cuda,
            "cudnn": c.cudnn,
            "lib_dirs": lib_dirs,
            "nvcc_dir": f"{cuda_site}/nvidia/cuda_nvcc" if nvcc else None,
            "min_driver": cuda_min_driver(at),
        },
        "prune": list(c.cuda_spec.prune),
    }


def cuda_min_driver(at: CellLayer) -> str:
    """The oldest driver every cell on this CUDA layer runs on: the highest minimum of their TensorFlow rules
    (a CUDA layer is shared by the cells of one CUDA version and OS, so it must serve the most demanding)."""
    c = at.cell
    drivers = [
        compat.TF_RULES[other.tf_minor].min_driver
        for other in at.matrix.cells
        if _hermetic_gpu(other) and other.cuda == c.cuda and other.os_name == c.os_name
    ]
    return max(drivers or [compat.TF_RULES[c.tf_minor].min_driver], key=Version)


def _strip_nvidia(name: str) -> str:
    return name.removeprefix("nvidia-").removesuffix("-cu11").removesuffix("-cu12")


def _wheel_dir(name: str) -> str:
    return _strip_nvidia(name).replace("-", "_")


# ---------------------------------------------------------------------------------------------- framework


def _tf_package(cell: Cell) -> str:
    return "tensorflow-cpu" if cell.flavor == "cpu" else "tensorflow"


def _framework_id(at: CellLayer) -> str:
    c = at.cell
    return f"tf{c.tf}-{c.flavor}-py{c.python}"


def _framework_adds(at: CellLayer) -> Adds:
    c = at.cell
    where = ("frameworks", c.framework_index, "requirements")
    reqs = (f"{_tf_package(c)}=={c.tf}", *at.requirement_lines(c.framework_requirements, *where))
    return Adds(requirements=reqs, requirement_files=(c.framework_requirements,))


def _framework_context(at: CellLayer, adds: Adds) -> dict[str, Any]:
    return {
        "settings": at.settings,
        "python": at.python,
        "cell": at.cell_context,
        "env": dict(sorted(at.matrix.model.env.items())),
        "prune": list(at.matrix.model.frameworks[at.cell.framework_index].prune),
    }


# ---------------------------------------------------------------------------------------------- tools


def _tools_id(at: CellLayer) -> str:
    return f"tools-tf{at.cell.tf}-{at.cell.flavor}"


def _tools_adds(at: CellLayer) -> Adds:
    c = at.cell
    where = ("tools", "requirements", c.tf_minor)
    reqs = at.requirement_lines(c.tools_requirements, *where)
    return Adds(requirements=tuple(reqs), requirement_files=(c.tools_requirements,))


def _cell_layer_context(at: CellLayer, adds: Adds) -> dict[str, Any]:
    return {"settings": at.settings, "python": at.python, "cell": at.cell_context}


# ---------------------------------------------------------------------------------------------- user


def _user_of(at: CellLayer) -> UserLayer:
    assert at.user is not None, "user layer functions run only for a cell's user layers"
    return at.user


def _has_users(cell: Cell) -> bool:
    return bool(cell.users)


def _user_id(at: CellLayer) -> str:
    return f"user-{_user_of(at).name}-tf{at.cell.tf}-{at.cell.flavor}"


def _user_adds(at: CellLayer) -> Adds:
    user = _user_of(at)
    index = next(i for i, u in enumerate(at.matrix.model.users) if u.name == user.name)
    reqs = at.requirement_lines(user.requirements, "users", index, "requirements")
    return Adds(requirements=tuple(reqs), requirement_files=(user.requirements,))


def _user_facts(at: CellLayer) -> TagFacts:
    return dataclasses.replace(at.cell_facts, user=_user_of(at).name)


def _user_context(at: CellLayer, adds: Adds) -> dict[str, Any]:
    user = _user_of(at)
    return {
        **_cell_layer_context(at, adds),
        "user": {
            "name": user.name,
            "uid": user.uid,
            "workdir": user.workdir,
            "ports": list(user.ports),
            "shadow_days": at.matrix.model.source_date_epoch // 86400,
        },
    }


# ---------------------------------------------------------------------------------------------- labels


def cuda_labels(at: CellLayer, facts: TagFacts) -> dict[str, str]:
    """The CUDA and cuDNN versions of every node whose tags name them."""
    return {"io.strata.cuda": facts.cuda, "io.strata.cudnn": facts.cudnn} if facts.cuda else {}


PRUNED_LABEL = (
    "io.strata.pruned."  # + layer name: what the layer dropped (JSON list), checked by strata smoke
)


def _pruned(patterns: list[str] | tuple[str, ...], layer: str) -> dict[str, str]:
    return {PRUNED_LABEL + layer: json.dumps(list(patterns), separators=(",", ":"))} if patterns else {}


def cuda_layer_labels(at: CellLayer, facts: TagFacts) -> dict[str, str]:
    """The minimum driver (also in NVIDIA_REQUIRE_CUDA) and what the CUDA layer dropped."""
    spec = at.cell.cuda_spec
    assert spec is not None
    return {"io.strata.min-driver": cuda_min_driver(at), **_pruned(spec.prune, "cuda")}


def framework_layer_labels(at: CellLayer, facts: TagFacts) -> dict[str, str]:
    return _pruned(at.matrix.model.frameworks[at.cell.framework_index].prune, "framework")


def cell_labels(at: CellLayer, facts: TagFacts) -> dict[str, str]:
    """What a cell's image promises: its TF version and flavor, its exact version string and its environment."""
    return {
        "io.strata.cell": at.cell.id,
        "io.strata.tf": facts.tf,
        "io.strata.flavor": facts.flavor,
        "org.opencontainers.image.version": facts.version,
        "io.strata.env": json.dumps(
            dict(sorted(at.matrix.model.env.items())), sort_keys=True, separators=(",", ":")
        ),
        "io.strata.xla-gpu": "true" if facts.flavor == "gpu" else "false",
    }


def user_labels(at: CellLayer, facts: TagFacts) -> dict[str, str]:
    return {"io.strata.user-layer": _user_of(at).name}


def _always(cell: Cell) -> bool:
    return True


# ---------------------------------------------------------------------------------------------- the table

LAYER_KINDS: tuple[LayerKind, ...] = (
    # The OS, Python and the shared venv (upstream gpu cells: NVIDIA's CUDA image, so no cuda layer follows).
    LayerKind(
        name="base",
        when=_always,
        node_id=_base_id,
        adds=_base_adds,
        facts=_base_facts,
        context=_base_context,
        labels=(cuda_labels,),
    ),
    # CUDA / cuDNN user-space libraries from pinned nvidia-* wheels.
    LayerKind(
        name="cuda",
        when=_hermetic_gpu,
        node_id=_cuda_id,
        adds=_cuda_adds,
        facts=lambda at: at.cuda_facts,
        context=_cuda_context,
        labels=(cuda_labels, cuda_layer_labels),
    ),
    # tensorflow (gpu) or tensorflow-cpu and the framework's requirements.
    LayerKind(
        name="framework",
        when=_always,
        node_id=_framework_id,
        adds=_framework_adds,
        facts=lambda at: at.cell_facts,
        context=_framework_context,
        labels=(cuda_labels, cell_labels, framework_layer_labels),
    ),
    # What a researcher expects next to TensorFlow, per TF minor version.
    LayerKind(
        name="tools",
        when=_always,
        node_id=_tools_id,
        adds=_tools_adds,
        facts=lambda at: at.cell_facts,
        context=_cell_layer_context,
        labels=(cuda_labels, cell_labels),
    ),
    # A team's own packages, run as an unprivileged user.
    LayerKind(
        name="user",
        when=_has_users,
        node_id=_user_id,
        adds=_user_adds,
        facts=_user_facts,
        context=_user_context,
        labels=(cuda_labels, cell_labels, user_labels),
        per_user=True,
    ),
)
