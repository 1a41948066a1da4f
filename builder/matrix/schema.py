"""The typed shape of matrix.yaml (pydantic models: unknown keys, wrong types and missing fields are errors)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LayerName = Literal["base", "cuda", "framework", "tools", "user"]
LAYER_ORDER: tuple[str, ...] = ("base", "cuda", "framework", "tools", "user")

_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _version(value: str, what: str) -> str:
    if not _VERSION.match(value):
        raise ValueError(f"{what} must look like 2.13 or 2.13.1, got '{value}'")
    return value


class Allow(Strict):
    reason: str = Field(min_length=10)


class Registry(Strict):
    address: str = Field(min_length=1)
    namespace: str = Field(pattern=r"^[a-z0-9]+([._/-][a-z0-9]+)*$")


class BuildSettings(Strict):
    platform: Literal["linux/amd64"] = "linux/amd64"
    venv: str = "/opt/venv"
    prefix: str = "/opt/strata"


class OsSpec(Strict):
    source: Literal["mmdebstrap", "image"]
    python: str
    packages: list[str] = Field(min_length=1)
    suite: str | None = None
    mirror: str | None = None
    # Off by default: the main suite changes only at point releases, so a committed lock stays valid;
    # turn on for security fixes and refresh the lock (the weekly rebuild does) whenever the archive moves.
    security: bool = False
    updates: bool = False
    image: str | None = None

    @field_validator("python")
    @classmethod
    def _python(cls, v: str) -> str:
        return _version(v, "python")

    @model_validator(mode="after")
    def _source_fields(self) -> OsSpec:
        if self.source == "mmdebstrap" and (not self.suite or not self.mirror):
            raise ValueError("source 'mmdebstrap' needs 'suite' and 'mirror'")
        if self.source == "image" and not (self.image and _DIGEST_REF.match(self.image)):
            raise ValueError("source 'image' needs 'image' pinned by digest (name:tag@sha256:<64 hex>)")
        return self


class CudaSpec(Strict):
    source: Literal["wheels", "image"]
    cudnn: str
    requirements: str | None = None
    image: str | None = None
    os: str | None = None

    @field_validator("cudnn")
    @classmethod
    def _cudnn(cls, v: str) -> str:
        return _version(v, "cudnn")

    @model_validator(mode="after")
    def _source_fields(self) -> CudaSpec:
        if self.source == "wheels" and not self.requirements:
            raise ValueError(
                "source 'wheels' needs 'requirements' (a requirements file of nvidia-*-cu11 wheels)"
            )
        if self.source == "image":
            if not (self.image and _DIGEST_REF.match(self.image)):
                raise ValueError("source 'image' needs 'image' pinned by digest (name:tag@sha256:<64 hex>)")
            if not self.os:
                raise ValueError("source 'image' needs 'os' (the OS the CUDA image is built on)")
        return self


class Profile(Strict):
    description: str = ""
    os: dict[str, OsSpec] = Field(min_length=1)
    cuda: dict[str, CudaSpec] = {}


class FrameworkProfile(Strict):
    os: str
    cuda: str | None = None
    allow: Allow | None = None


class Framework(Strict):
    tf: str
    flavors: list[Literal["cpu", "gpu"]] = Field(min_length=1)
    requirements: str
    profiles: dict[str, FrameworkProfile] = Field(min_length=1)

    @field_validator("tf")
    @classmethod
    def _tf(cls, v: str) -> str:
        return _version(v, "tf")


class Tools(Strict):
    requirements: dict[str, str] = Field(min_length=1)


class UserLayer(Strict):
    name: str = Field(pattern=_NAME.pattern)
    requirements: str
    cells: list[str] = ["*"]
    uid: int = Field(default=1000, ge=1)
    workdir: str = "/home/user/work"
    ports: list[int] = []


class Tags(Strict):
    repositories: dict[LayerName, str]
    version: dict[LayerName, str]


class Alias(Strict):
    tag: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    cell: str
    layer: LayerName = "tools"


class MatrixModel(Strict):
    schema_: Literal[1] = Field(alias="schema")
    source_date_epoch: int = Field(ge=0)
    # Bumped whenever the images' content changes (lock refresh, template edit): version tags carry it, so an
    # immutable tag never has to move. `strata lock --refresh --bump-release` bumps it when a lock changed.
    release: int = Field(default=1, ge=1)
    registry: Registry
    build: BuildSettings = BuildSettings()
    profiles: dict[str, Profile] = Field(min_length=1)
    env: dict[str, str] = {}
    frameworks: list[Framework] = Field(min_length=1)
    tools: Tools
    users: list[UserLayer] = []
    tags: Tags
    aliases: list[Alias] = []
