"""The SBOM of a published image: a CycloneDX 1.6 JSON document built from what Strata already pins.

Nothing is read from the image or the network: the image's facts come from its images.lock.json entry
(reference, manifest digest, config digest, content hash) and its contents from the lock files of its node and
every ancestor, root first (the plan's `LayerNode.lock`):

    metadata.component   the image: type container, purl `pkg:oci/<name>@<manifest digest>?repository_url=..&tag=..`,
                         its manifest sha256, properties strata:config_digest, strata:content_hash, strata:node
    components           the Debian root filesystem (type operating-system, its sha256 from the base lock), every
                         Debian package in it (`pkg:deb/debian/<name>@<version>?arch=..&distro=debian-12`), an
                         upstream base image pinned by digest (type container), and every wheel of every layer
                         (`pkg:pypi/<name>@<version>?file_name=..`, its sha256, and its download URL as a
                         distribution reference with the same sha256); each carries strata:layer (the node id)
    dependencies         image -> root filesystem / base image and wheels; root filesystem -> its Debian packages

The document is reproducible: serialNumber is a uuid5 of the image's reference and manifest digest and
metadata.timestamp is the matrix's source_date_epoch, so the same lock entry and locks give the same bytes.

Validation against the CycloneDX schema (`validation_errors`) uses the library's own JSON validator, offline (the
schemas ship inside cyclonedx-python-lib). It is slow (about 0.1 s per wheel URL: the IRI format check of the
non-GPL format checker), so `strata sbom --validate` asks for it and the tests always do it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone

from cyclonedx.model import (
    ExternalReference,
    ExternalReferenceType,
    HashAlgorithm,
    HashType,
    Property,
    XsUri,
)
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packageurl import PackageURL

from builder.errors import StrataError
from builder.oci.media_types import CYCLONEDX_JSON
from builder.plan.graph import LayerNode
from builder.plan.lockfile import canonical_name
from registry_sync.publish.images_lock import LockedImage
from registry_sync.registry.reference import ImageRef

SPEC = SchemaVersion.V1_6
SPEC_VERSION = "1.6"
MEDIA_TYPE = CYCLONEDX_JSON
TOOL_NAME = "strata"
TOOL_VERSION = "0.1.0"
# Debian release numbers of the codenames matrix.yaml uses (purl's distro qualifier is `debian-<release>`).
DEBIAN_RELEASES = {"bookworm": "12", "bullseye": "11", "trixie": "13", "buster": "10"}


class SbomError(StrataError):
    """An SBOM cannot be built for an image: its plan node or locks do not describe what was published."""


def image_chain(node: LayerNode, nodes_by_id: dict[str, LayerNode]) -> tuple[LayerNode, ...]:
    """`node` and its ancestors, root first."""
    chain = [node]
    while chain[0].parent:
        chain.insert(0, nodes_by_id[chain[0].parent])
    return tuple(chain)


def _sha256(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64:
        raise SbomError(f"not a sha256 digest: {digest}")
    return hexdigest


def _prop(name: str, value: str) -> Property:
    return Property(name=f"strata:{name}", value=value)


def _image_component(entry: LockedImage) -> Component:
    ref = ImageRef.require(entry.reference, "images.lock.json")
    repository_url = ref.name
    purl = PackageURL(
        type="oci",
        name=ref.repository.rsplit("/", 1)[-1],
        version=entry.digest,
        qualifiers={"repository_url": repository_url, "tag": ref.tag or ""},
    )
    return Component(
        type=ComponentType.CONTAINER,
        name=repository_url,
        version=ref.tag or entry.digest,
        bom_ref=str(purl),
        purl=purl,
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=_sha256(entry.digest))],
        properties=[
            _prop("config_digest", entry.config_digest),
            _prop("content_hash", entry.content_hash),
            _prop("node", entry.node),
            _prop("profile", entry.profile or "-"),
        ],
    )


def _base_image_component(node: LayerNode) -> Component | None:
    """An upstream base image the node starts FROM, pinned by digest (upstream profile)."""
    ref = ImageRef.parse(node.base_image or "")
    if ref is None or not ref.digest:
        return None
    repository_url = ref.name
    qualifiers = {"repository_url": repository_url, **({"tag": ref.tag} if ref.tag else {})}
    purl = PackageURL(
        type="oci", name=ref.repository.rsplit("/", 1)[-1], version=ref.digest, qualifiers=qualifiers
    )
    return Component(
        type=ComponentType.CONTAINER,
        name=repository_url,
        version=ref.tag or ref.digest,
        bom_ref=str(purl),
        purl=purl,
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=_sha256(ref.digest))],
        properties=[_prop("layer", node.id)],
    )


def build_sbom(entry: LockedImage, chain: Sequence[LayerNode], epoch: int) -> Bom:
    """The CycloneDX BOM of the published image `entry`, whose node and ancestors are `chain` (root first).

    Example: build_sbom(lock.images[ref], image_chain(plan.node(entry.node), nodes), matrix.source_date_epoch).
    """
    if not chain or chain[-1].id != entry.node:
        raise SbomError(f"{entry.reference}: the chain given does not end at node {entry.node}")
    if chain[-1].content_hash != entry.content_hash:
        raise SbomError(
            f"{entry.reference}: published with content hash {entry.content_hash[:12]}, the plan now has "
            f"{chain[-1].content_hash[:12]}: the locks no longer describe this image"
        )
    image = _image_component(entry)
    components: list[Component] = []
    image_deps: list[Component] = []
    os_deps: list[tuple[Component, list[Component]]] = []
    for node in chain:
        base = _base_image_component(node)
        if base is not None:
            components.append(base)
            image_deps.append(base)
        lock = node.lock
        if lock is None:
            if node.lock_path:
                raise SbomError(f"{entry.reference}: {node.lock_path} is missing; run `strata lock`")
            continue
        if lock.rootfs is not None:
            codename = (node.rootfs or {}).get("suite") or node.os_name
            release = DEBIAN_RELEASES.get(codename, codename)
            rootfs = Component(
                type=ComponentType.OPERATING_SYSTEM,
                name="debian",
                version=release,
                bom_ref=f"rootfs:sha256:{lock.rootfs.sha256}",
                description=f"Debian {codename} root filesystem built by mmdebstrap (node {node.id})",
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=lock.rootfs.sha256)],
                properties=[_prop("layer", node.id), _prop("rootfs_size", str(lock.rootfs.size))],
            )
            debs = []
            for deb in sorted(lock.debs, key=lambda d: (d.name, d.arch)):
                purl = PackageURL(
                    type="deb",
                    namespace="debian",
                    name=deb.name,
                    version=deb.version,
                    qualifiers={"arch": deb.arch, "distro": f"debian-{release}"},
                )
                debs.append(
                    Component(
                        type=ComponentType.LIBRARY,
                        name=deb.name,
                        version=deb.version,
                        bom_ref=str(purl),
                        purl=purl,
                        properties=[_prop("layer", node.id)],
                    )
                )
            components += [rootfs, *debs]
            image_deps.append(rootfs)
            os_deps.append((rootfs, debs))
        for wheel in sorted(lock.wheels, key=lambda w: canonical_name(w.name)):
            purl = PackageURL(
                type="pypi",
                name=canonical_name(wheel.name),
                version=wheel.version,
                qualifiers={"file_name": wheel.filename},
            )
            digest = HashType(alg=HashAlgorithm.SHA_256, content=wheel.sha256)
            component = Component(
                type=ComponentType.LIBRARY,
                name=wheel.name,
                version=wheel.version,
                bom_ref=str(purl),
                purl=purl,
                hashes=[digest],
                external_references=[
                    ExternalReference(
                        type=ExternalReferenceType.DISTRIBUTION, url=XsUri(wheel.url), hashes=[digest]
                    )
                ],
                properties=[_prop("layer", node.id)],
            )
            components.append(component)
            image_deps.append(component)
    bom = Bom(
        components=components,
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"strata-sbom:{entry.reference}@{entry.digest}"),
        metadata=BomMetaData(
            component=image,
            timestamp=datetime.fromtimestamp(epoch, tz=timezone.utc),
            tools=ToolRepository(
                components=[Component(type=ComponentType.APPLICATION, name=TOOL_NAME, version=TOOL_VERSION)]
            ),
        ),
    )
    bom.register_dependency(image, image_deps)
    for rootfs, debs in os_deps:
        bom.register_dependency(rootfs, debs)
    return bom


def render_sbom(bom: Bom) -> bytes:
    """The BOM as CycloneDX 1.6 JSON bytes (two-space indent, trailing newline): same BOM, same bytes."""
    bom.validate()  # the library's own consistency checks (every dependency names a component of the BOM)
    text = make_outputter(bom, OutputFormat.JSON, SPEC).output_as_string(indent=2)
    return (text + "\n").encode("utf-8")


def sbom_bytes(entry: LockedImage, chain: Sequence[LayerNode], epoch: int) -> bytes:
    """build_sbom + render_sbom."""
    return render_sbom(build_sbom(entry, chain, epoch))


def validation_errors(document: bytes) -> list[str]:
    """Every way `document` breaks the CycloneDX 1.6 JSON schema (strict: no unknown properties); [] when valid.

    Uses cyclonedx-python-lib's JsonStrictValidator with the schemas bundled in the library (no network).
    """
    # Imported here: jsonschema's IRI format checker builds its parsers for ~2 s at import; only validation pays.
    from cyclonedx.validation.json import JsonStrictValidator  # optional: json-validation extra, slow import

    errors = JsonStrictValidator(SPEC).validate_str(document.decode("utf-8"), all_errors=True)
    return [str(e.data.message if hasattr(e.data, "message") else e) for e in errors or ()]
