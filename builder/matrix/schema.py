"""The typed shape of matrix.yaml (pydantic models: unknown keys, wrong types and missing fields are errors).

Every field has a type from builder.matrix.types that says what it may hold; keys that become file names or
ids (profiles, OS names, CUDA versions, environment names) are constrained as much as values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from builder.matrix.types import (
    AbsolutePath,
    CellPattern,
    DebianPackage,
    DebianSuite,
    EnvName,
    EnvValue,
    Epoch,
    MirrorUrl,
    Name,
    NodePattern,
    OciTag,
    PinnedImage,
    Port,
    Prose,
    PrunePattern,
    RegistryHost,
    RelativePath,
    Release,
    RepositoryPath,
    RepositoryTemplate,
    SizeBytes,
    TagTemplate,
    Uid,
    UserName,
    Version,
)

LayerName = Literal["base", "cuda", "framework", "tools", "user"]
LAYER_ORDER: tuple[str, ...] = ("base", "cuda", "framework", "tools", "user")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Allow(Strict):
    reason: Prose = Field(min_length=10)


class Registry(Strict):
    address: RegistryHost
    namespace: RepositoryPath


class BuildSettings(Strict):
    platform: Literal["linux/amd64"] = "linux/amd64"
    venv: AbsolutePath = "/opt/venv"
    prefix: AbsolutePath = "/opt/strata"


class OsSpec(Strict):
    source: Literal["mmdebstrap", "image"]
    python: Version
    packages: list[DebianPackage] = Field(min_length=1, max_length=1000)
    suite: DebianSuite | None = None
    mirror: MirrorUrl | None = None
    # Off by default: the main suite changes only at point releases, so a committed lock stays valid;
    # turn on for security fixes and refresh the lock (the weekly rebuild does) whenever the archive moves.
    security: bool = False
    updates: bool = False
    image: PinnedImage | None = None

    @model_validator(mode="after")
    def _source_fields(self) -> OsSpec:
        if self.source == "mmdebstrap" and (not self.suite or not self.mirror):
            raise ValueError("source 'mmdebstrap' needs 'suite' and 'mirror'")
        if self.source == "image" and not self.image:
            raise ValueError("source 'image' needs 'image' pinned by digest (name:tag@sha256:<64 hex>)")
        return self


class CudaSpec(Strict):
    source: Literal["wheels", "image"]
    cudnn: Version
    requirements: RelativePath | None = None
    image: PinnedImage | None = None
    os: Name | None = None
    # Files of the wheels TensorFlow never loads, removed before the layer is committed (source 'wheels' only).
    prune: list[PrunePattern] = Field(default=[], max_length=200)

    @model_validator(mode="after")
    def _source_fields(self) -> CudaSpec:
        if self.source == "wheels" and not self.requirements:
            raise ValueError(
                "source 'wheels' needs 'requirements' (a requirements file of nvidia-*-cu11 wheels)"
            )
        if self.source == "image":
            if not self.image:
                raise ValueError("source 'image' needs 'image' pinned by digest (name:tag@sha256:<64 hex>)")
            if not self.os:
                raise ValueError("source 'image' needs 'os' (the OS the CUDA image is built on)")
            if self.prune:
                raise ValueError("'prune' applies to source 'wheels' only (an image's files are its own)")
        return self


class Profile(Strict):
    description: Prose = ""
    os: dict[Name, OsSpec] = Field(min_length=1)
    cuda: dict[Version, CudaSpec] = {}


class FrameworkProfile(Strict):
    os: Name
    cuda: Version | None = None
    allow: Allow | None = None


class Framework(Strict):
    tf: Version
    flavors: list[Literal["cpu", "gpu"]] = Field(min_length=1)
    requirements: RelativePath
    profiles: dict[Name, FrameworkProfile] = Field(min_length=1)
    # Files of the framework's wheels no image uses (e.g. C++ headers: the images carry no compiler).
    prune: list[PrunePattern] = Field(default=[], max_length=200)


class Tools(Strict):
    requirements: dict[Version, RelativePath] = Field(min_length=1)


class UserLayer(Strict):
    name: UserName
    requirements: RelativePath
    cells: list[CellPattern] = ["*"]
    uid: Uid = 1000
    workdir: AbsolutePath = "/home/user/work"
    ports: list[Port] = Field(default=[], max_length=100)


class Tags(Strict):
    repositories: dict[LayerName, RepositoryTemplate]
    version: dict[LayerName, TagTemplate]


class Alias(Strict):
    tag: OciTag
    cell: Name
    layer: LayerName = "tools"


class SizeBudget(Strict):
    """The most bytes (uncompressed, as the engine counts them) the image of every node matching `nodes` may hold."""

    nodes: NodePattern
    max_bytes: SizeBytes
    reason: Prose = ""


class MatrixModel(Strict):
    schema_: Literal[1] = Field(alias="schema")
    source_date_epoch: Epoch
    # Bumped whenever the images' content changes (lock refresh, template edit): version tags carry it, so an
    # immutable tag never has to move. `strata lock --refresh --bump-release` bumps it when a lock changed.
    release: Release = 1
    registry: Registry
    build: BuildSettings = BuildSettings()
    profiles: dict[Name, Profile] = Field(min_length=1)
    env: dict[EnvName, EnvValue] = {}
    frameworks: list[Framework] = Field(min_length=1)
    tools: Tools
    users: list[UserLayer] = []
    tags: Tags
    aliases: list[Alias] = []
    # Checked after every build: an image over its budget fails the build and keeps no content tag.
    budgets: list[SizeBudget] = Field(default=[], max_length=1000)
