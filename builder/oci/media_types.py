"""Every media type Strata reads or writes, named once: OCI and Docker schema2 images, and Strata's own artifacts."""

from __future__ import annotations

# OCI image-spec
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER = {"gzip": OCI_LAYER_GZIP, "none": OCI_LAYER_TAR}  # by canonical compression

# Docker image manifest v2, schema 2 (what `strata push` writes: every engine pulls it)
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# What a registry is asked for (Accept), in order of preference; and which of them list other manifests.
MANIFEST_MEDIA_TYPES = (DOCKER_MANIFEST_V2, OCI_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX)
INDEX_MEDIA_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)

# Layers registries never store (pulled from their URLs): a copy skips them.
FOREIGN_LAYER_MEDIA_TYPES = (
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
)

# Strata's images.lock.json, pushed as an OCI artifact
LOCK_ARTIFACT_MEDIA_TYPE = "application/vnd.strata.images-lock.v1+json"
LOCK_CONFIG_MEDIA_TYPE = "application/vnd.strata.images-lock.config.v1+json"

# The evidence `strata sign` stores next to an image (OCI 1.1 artifacts: empty config, one layer)
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
CYCLONEDX_JSON = "application/vnd.cyclonedx+json"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
