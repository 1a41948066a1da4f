"""`strata catalog --format html`: a static site of every published tag, rendered from jinja2 templates.

Pages (templates in site_templates/, autoescaped, StrictUndefined; no timestamps, so the same inputs give the same
bytes):

    index.html              every version tag and alias of images.lock.json: digest, sizes, TF / CUDA / cuDNN /
                            Python / minimum NVIDIA driver, smoke and benchmark verdicts, signature status and
                            vulnerability counts
    tags/<anchor>.html      one tag: the same facts, its layers (size each, and the node that added it), the pull
                            line, and its packages from the SBOM stored next to the image in the registry
                            (`sha256-<hex>.sbom`, so a release keeps its list after the locks move on)
    releases.html           every release of the lock channel (`<namespace>/images-lock:r<N>`) and the package
                            diff between consecutive releases, node by node
    images.lock.json(.sig)  the lock the site shows (and its signature when there is one), to download

Nothing is made up: a smoke result that does not exist is "not run", an image `strata audit` has not reported on is
"not audited", an image without a stored SBOM says so instead of showing an empty package list.

Gathering (`gather_site`) reads the registry, the state root's results and the evidence directory; rendering
(`render_site`) is pure.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from securesystemslib.signer import SSlibKey

from builder.errors import StrataError
from builder.matrix.compat import TF_RULES
from builder.oci.digest import sha256_digest
from registry_sync.publish.attest import write_file
from registry_sync.publish.catalog import anchor, human_size
from registry_sync.publish.evidence import (
    VULNERABILITIES_FILE,
    evidence_dir,
    registry_documents,
    verify_image,
)
from registry_sync.publish.images_lock import ImagesLock, LockedImage
from registry_sync.publish.lock_channel import published_releases, read_channel_lock, release_tag
from registry_sync.publish.referrers import fetch_document
from registry_sync.registry.client import RegistryClient
from validate.bench.ledger import Ledger
from validate.smoke.results import load_report

TEMPLATES = Path(__file__).with_name("site_templates")
MAX_SBOM_COMPONENTS = 100_000  # a document with more is not one Strata wrote


@dataclass(frozen=True)
class Verdict:
    """A status for the page: `state` (a short word the page colours: pass, fail, none, warn) and its text."""

    state: str
    text: str


@dataclass(frozen=True)
class Package:
    kind: str  # pypi, deb, operating-system, container
    name: str
    version: str
    layer: str  # the node that installed it


@dataclass(frozen=True)
class PackageList:
    """The packages of one image from its stored SBOM, or None with the reason there is no list."""

    packages: tuple[Package, ...] | None
    source: str


@dataclass(frozen=True)
class LayerRow:
    digest: str
    size: int
    node: str  # the node whose build added the layer ("" when no entry of the lock has it first)


@dataclass(frozen=True)
class TagFacts:
    """Everything the site shows about one version tag."""

    entry: LockedImage
    aliases: tuple[str, ...]
    min_driver: str | None
    layers: tuple[LayerRow, ...] | None  # None: the registry does not have the manifest
    smoke: Verdict
    bench: Verdict
    signature: Verdict
    vulnerabilities: Verdict
    packages: PackageList

    @property
    def page(self) -> str:
        return f"tags/{anchor(self.entry.reference)}.html"


@dataclass(frozen=True)
class PackageChange:
    name: str
    kind: str
    old: str | None  # None: added
    new: str | None  # None: removed


@dataclass(frozen=True)
class NodeDiff:
    """How one node's image changed from one release to the next."""

    node: str
    old: str | None  # version reference in the older release (None: new in this release)
    new: str | None  # ... in the newer one (None: dropped)
    same_image: bool
    changes: tuple[PackageChange, ...]
    note: str = ""  # why no package diff could be made


@dataclass(frozen=True)
class Release:
    number: int | None
    source: str  # where the lock of this release was read
    lock: ImagesLock
    diff: tuple[NodeDiff, ...] | None = None  # against the previous release (None for the first)
    previous: int | None = None


@dataclass(frozen=True)
class Site:
    lock_name: str
    lock_release: int | None
    tags: tuple[TagFacts, ...]
    aliases: tuple[tuple[str, str, str], ...]  # (alias reference, version reference, digest)
    releases: tuple[Release, ...]
    channel: str  # host/namespace/images-lock
    verified_with: str  # key ids, or "" when signatures were not checked
    extra_files: Mapping[str, bytes] = field(default_factory=dict)  # images.lock.json, its .sig


# ---------------------------------------------------------------------------------------------- reading SBOMs


def sbom_packages(document: bytes, source: str) -> tuple[Package, ...]:
    """The packages a CycloneDX JSON document lists (wheels, Debian packages, root filesystems, base images)."""
    try:
        doc = json.loads(document)
        components = doc.get("components") or []
    except (ValueError, AttributeError):
        raise StrataError(f"{source}: not a CycloneDX JSON document") from None
    if not isinstance(components, list) or len(components) > MAX_SBOM_COMPONENTS:
        raise StrataError(f"{source}: components is not a list of at most {MAX_SBOM_COMPONENTS}")
    packages = []
    for component in components:
        if not isinstance(component, dict):
            continue
        purl = str(component.get("purl") or "")
        kind = purl[4:].split("/", 1)[0] if purl.startswith("pkg:") else str(component.get("type") or "")
        layer = next(
            (
                str(p.get("value"))
                for p in component.get("properties") or []
                if isinstance(p, dict) and p.get("name") == "strata:layer"
            ),
            "",
        )
        packages.append(
            Package(kind, str(component.get("name") or ""), str(component.get("version") or ""), layer)
        )
    return tuple(sorted(packages, key=lambda p: (p.kind, p.name.lower(), p.version)))


def stored_packages(client: RegistryClient, entry: LockedImage) -> PackageList:
    """The packages of `entry` from the SBOM stored next to it (`sha256-<hex>.sbom`)."""
    tag = f"{entry.digest.replace(':', '-')}.sbom"
    try:
        document = fetch_document(client, entry.ref.repository, entry.digest, "sbom")
    except StrataError as exc:
        return PackageList(None, f"the stored SBOM cannot be read: {exc}")
    if document is None:
        return PackageList(None, f"no SBOM is stored next to this image ({tag}); `strata sign` stores one")
    recorded = entry.evidence.get("sbom")
    from_registry = f"CycloneDX SBOM {entry.ref.name}:{tag}"
    if recorded and recorded != sha256_digest(document):
        return PackageList(
            None, f"{from_registry} is not the SBOM images.lock.json records ({recorded[:19]}…)"
        )
    try:
        return PackageList(sbom_packages(document, from_registry), from_registry)
    except StrataError as exc:
        return PackageList(None, str(exc))


# ---------------------------------------------------------------------------------------------- verdicts


def min_driver(entry: LockedImage) -> str | None:
    """The minimum NVIDIA driver a gpu image needs (builder/matrix/compat.py), None for cpu images."""
    versions = entry.versions
    tf = versions.get("tensorflow") or ""
    rule = TF_RULES.get(".".join(tf.split(".")[:2]))
    return rule.min_driver if rule is not None and versions.get("flavor") == "gpu" else None


def smoke_verdict(results_dir: Path, entry: LockedImage) -> Verdict:
    """The latest `strata smoke` result of this exact image (by config digest), or "not run"."""
    try:
        report = load_report(results_dir, entry.config_digest)
    except (StrataError, ValueError, KeyError, TypeError) as exc:
        return Verdict("warn", f"unreadable result ({exc})")
    if report is None:
        return Verdict("none", "not run")
    counts = report.counts()
    gpu = " on a GPU" if report.expect_gpu else ""
    text = (
        f"{report.status}{gpu}: {counts['pass']} passed, {counts['fail']} failed, {counts['not-run']} not run"
    )
    return Verdict(report.status, text)


def bench_verdict(ledger_path: Path, entry: LockedImage) -> Verdict:
    """Steady-state benchmark results of this exact image in the ledger (median samples/s per workload)."""
    if not ledger_path.is_file():
        return Verdict("none", "not run")
    try:
        with Ledger.open(ledger_path, create=False) as ledger:
            reps = [r for r in ledger.repetitions(image_id=entry.config_digest) if r.steady]
    except StrataError as exc:
        return Verdict("warn", f"ledger unreadable ({exc})")
    if not reps:
        return Verdict("none", "not run")
    by_workload: dict[str, list[float]] = {}
    for rep in reps:
        by_workload.setdefault(rep.workload, []).append(rep.samples_per_s)
    parts = [f"{w} {statistics.median(v):.1f} samples/s" for w, v in sorted(by_workload.items())]
    return Verdict("pass", f"{len(reps)} steady repetitions: " + ", ".join(parts))


def vulnerability_verdict(evidence: Path, entry: LockedImage) -> Verdict:
    """The counts of `strata audit`'s vulnerabilities.json for this image, or "not audited"."""
    path = evidence_dir(evidence, entry.reference) / VULNERABILITIES_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        summary = doc["summary"]
        if doc.get("digest") not in (None, entry.digest):
            return Verdict("none", f"not audited (the report is about {str(doc.get('digest'))[:19]}…)")
        python, debian = summary["python"], summary["debian"]
        findings, not_audited = int(python["findings"]), int(python["not_audited"])
        updates = int(debian["updates"])
    except FileNotFoundError:
        return Verdict("none", "not audited")
    except (OSError, ValueError, KeyError, TypeError):
        return Verdict("warn", f"{path.name} is unreadable")
    text = f"{findings} Python advisories, {updates} Debian security updates"
    if not_audited:
        text += f"; {not_audited} packages NOT AUDITED"
    state = "fail" if findings or updates else ("warn" if not summary.get("complete") else "pass")
    return Verdict(state, text)


SignatureCheck = Callable[[LockedImage], Verdict]


def signature_verdict(client: RegistryClient, keys: Sequence[SSlibKey]) -> SignatureCheck:
    """Signature status from the registry: verified with `keys` when given, else whether a signature is stored."""

    def check(entry: LockedImage) -> Verdict:
        documents = registry_documents(client, entry.ref.repository)
        if not keys:
            try:
                stored = documents(entry.digest, "signature") is not None
            except StrataError as exc:
                return Verdict("warn", f"unreadable: {exc}")
            if stored:
                return Verdict("warn", "signed, not checked here (strata verify-signature checks it)")
            return Verdict("none", "not signed")
        try:
            result = verify_image(
                entry.reference,
                entry.digest,
                keys,
                documents,
                digest_from="images.lock.json",
                source=f"registry {client.host}",
                recorded=dict(entry.evidence) or None,
            )
        except StrataError as exc:
            missing = "no signature in" in str(exc)
            return Verdict("none" if missing else "fail", "not signed" if missing else f"INVALID: {exc}")
        return Verdict("pass", f"valid (key {result.keyid[:16]}), SBOM and provenance match")

    return check


# ---------------------------------------------------------------------------------------------- layers


def _manifest_layers(client: RegistryClient, entry: LockedImage) -> list[tuple[str, int]] | None:
    manifest = client.get_manifest(entry.ref.repository, entry.digest)
    if manifest is None:
        return None
    try:
        layers = json.loads(manifest.body)["layers"]
        return [(str(layer["digest"]), int(layer["size"])) for layer in layers]
    except (ValueError, KeyError, TypeError):
        return None


def layer_rows(
    entry: LockedImage, lock: ImagesLock, layers_of: Callable[[LockedImage], list[tuple[str, int]] | None]
) -> tuple[LayerRow, ...] | None:
    """The image's layers, each credited to the node (this one or an ancestor) whose image has it first."""
    layers = layers_of(entry)
    if layers is None:
        return None
    by_node = {(e.node, e.profile): e for e in lock.entries()}
    chain = [entry]
    while chain[0].parent and (chain[0].parent, entry.profile) in by_node and len(chain) < 64:
        chain.insert(0, by_node[(chain[0].parent, entry.profile)])
    owner: dict[int, str] = {}
    for node_entry in chain:
        own = layers if node_entry is entry else (layers_of(node_entry) or [])
        for index, (digest, _) in enumerate(own):
            if index < len(layers) and layers[index][0] == digest and index not in owner:
                owner[index] = node_entry.node
    return tuple(LayerRow(d, s, owner.get(i, "")) for i, (d, s) in enumerate(layers))


# ---------------------------------------------------------------------------------------------- releases


def package_diff(old: tuple[Package, ...], new: tuple[Package, ...]) -> tuple[PackageChange, ...]:
    """Added, removed and changed packages (by kind and name), sorted by name."""
    before = {(p.kind, p.name.lower()): p for p in old}
    after = {(p.kind, p.name.lower()): p for p in new}
    changes = []
    for key in sorted(before.keys() | after.keys(), key=lambda k: (k[1], k[0])):
        a, b = before.get(key), after.get(key)
        if a is not None and b is not None and a.version == b.version:
            continue
        name = (b or a).name  # type: ignore[union-attr]
        changes.append(PackageChange(name, key[0], a.version if a else None, b.version if b else None))
    return tuple(changes)


def release_diff(
    older: ImagesLock, newer: ImagesLock, packages_of: Callable[[LockedImage], PackageList]
) -> tuple[NodeDiff, ...]:
    """Node by node (and profile): what changed between two releases' images."""
    old = {(e.node, e.profile): e for e in older.entries()}
    new = {(e.node, e.profile): e for e in newer.entries()}
    diffs = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if a is None or b is None:
            diffs.append(NodeDiff(key[0], a.reference if a else None, b.reference if b else None, False, ()))
            continue
        if a.digest == b.digest:
            diffs.append(NodeDiff(key[0], a.reference, b.reference, True, ()))
            continue
        before, after = packages_of(a), packages_of(b)
        if before.packages is None or after.packages is None:
            note = before.source if before.packages is None else after.source
            diffs.append(NodeDiff(key[0], a.reference, b.reference, False, (), f"no package diff: {note}"))
            continue
        diffs.append(
            NodeDiff(key[0], a.reference, b.reference, False, package_diff(before.packages, after.packages))
        )
    return tuple(diffs)


def channel_releases(
    client: RegistryClient,
    namespace: str,
    current: ImagesLock,
    lock_name: str,
    packages_of: Callable[[LockedImage], PackageList],
) -> tuple[Release, ...]:
    """Every release the lock channel holds (plus the local lock's, when the channel lacks it), oldest first,
    each with its diff against the one before."""
    found: list[tuple[int | None, str, ImagesLock]] = []
    for number in published_releases(client, namespace):
        read = read_channel_lock(client, namespace, release_tag(number))
        if read is not None:
            found.append((number, f"{client.host}/{namespace}/images-lock:{release_tag(number)}", read[2]))
    if current.release is None or current.release not in {n for n, _, _ in found}:
        found.append((current.release, f"{lock_name} (not in the lock channel)", current))
    found.sort(key=lambda item: -1 if item[0] is None else item[0])
    releases = []
    for i, (release, source, lock) in enumerate(found):
        if i == 0:
            releases.append(Release(release, source, lock))
            continue
        previous, _, prev = found[i - 1]
        releases.append(Release(release, source, lock, release_diff(prev, lock, packages_of), previous))
    return tuple(releases)


# ---------------------------------------------------------------------------------------------- gather, render


@dataclass(frozen=True)
class SiteInputs:
    """Where the site's facts come from, besides images.lock.json and the registry."""

    lock_path: Path
    namespace: str
    smoke_dir: Path
    ledger_path: Path
    evidence_dir: Path
    keys: tuple[SSlibKey, ...] = ()


def gather_site(client: RegistryClient, lock: ImagesLock, inputs: SiteInputs) -> Site:
    """Read everything the pages show (registry, results, evidence) for `lock`."""
    manifests: dict[str, list[tuple[str, int]] | None] = {}
    sboms: dict[str, PackageList] = {}

    def layers_of(entry: LockedImage) -> list[tuple[str, int]] | None:
        if entry.digest not in manifests:
            manifests[entry.digest] = _manifest_layers(client, entry)
        return manifests[entry.digest]

    def packages_of(entry: LockedImage) -> PackageList:
        key = f"{entry.ref.name}@{entry.digest}"
        if key not in sboms:
            sboms[key] = stored_packages(client, entry)
        return sboms[key]

    signature = signature_verdict(client, inputs.keys)
    aliases_of: dict[str, list[str]] = {}
    for alias in lock.aliases.values():
        aliases_of.setdefault(alias.tag, []).append(alias.reference)
    tags = tuple(
        TagFacts(
            entry=entry,
            aliases=tuple(sorted(aliases_of.get(entry.reference, []))),
            min_driver=min_driver(entry),
            layers=layer_rows(entry, lock, layers_of),
            smoke=smoke_verdict(inputs.smoke_dir, entry),
            bench=bench_verdict(inputs.ledger_path, entry),
            signature=signature(entry),
            vulnerabilities=vulnerability_verdict(inputs.evidence_dir, entry),
            packages=packages_of(entry),
        )
        for entry in sorted(lock.entries(), key=_reading_order)
    )
    releases = channel_releases(client, inputs.namespace, lock, inputs.lock_path.name, packages_of)
    extra = {inputs.lock_path.name: lock.render().encode()}
    signature_file = inputs.lock_path.with_name(inputs.lock_path.name + ".sig")
    if signature_file.is_file():
        extra[signature_file.name] = signature_file.read_bytes()
    return Site(
        lock_name=inputs.lock_path.name,
        lock_release=lock.release,
        tags=tags,
        aliases=tuple(
            (a.reference, a.tag, a.digest) for a in sorted(lock.aliases.values(), key=lambda a: a.reference)
        ),
        releases=releases,
        channel=f"{client.host}/{inputs.namespace}/images-lock",
        verified_with=", ".join(k.keyid[:16] for k in inputs.keys),
        extra_files=extra,
    )


READING_ORDER = ("tools", "user", "framework", "cuda", "base")


def _reading_order(entry: LockedImage) -> tuple[int, str]:
    rank = READING_ORDER.index(entry.layer) if entry.layer in READING_ORDER else len(READING_ORDER)
    return rank, entry.reference


def _short(reference: str) -> str:
    """`strata/base:bookworm-r1` for `127.0.0.1:5000/strata/base:bookworm-r1`."""
    return reference.split("/", 1)[-1]


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = human_size
    env.filters["short"] = _short
    env.filters["anchor"] = anchor
    env.filters["digest12"] = lambda d: (d or "")[:19]
    return env


def render_site(site: Site) -> dict[str, str | bytes]:
    """Every file of the site: relative path -> text (pages) or bytes (the lock and its signature)."""
    env = environment()
    pages: dict[str, str | bytes] = {}
    common: dict[str, Any] = {"site": site}
    pages["index.html"] = env.get_template("index.html.j2").render(common, root="")
    pages["releases.html"] = env.get_template("releases.html.j2").render(common, root="")
    tag_template = env.get_template("tag.html.j2")
    for facts in site.tags:
        pages[facts.page] = tag_template.render(common, tag=facts, root="../")
    pages.update(site.extra_files)
    return pages


def write_site(out: Path, files: Mapping[str, str | bytes]) -> tuple[int, int]:
    """Write the site under `out` (each file atomically; a page of a tag no longer listed is removed).
    Returns (files written or changed, files removed)."""
    changed = 0
    for relative, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        path = out / relative
        try:
            if path.read_bytes() == data:
                continue
        except OSError:
            pass
        write_file(path, data)
        changed += 1
    removed = 0
    tags_dir = out / "tags"
    if tags_dir.is_dir():
        for page in tags_dir.glob("*.html"):
            if f"tags/{page.name}" not in files:
                page.unlink()
                removed += 1
    return changed, removed
