"""`strata keygen | sbom | sign | verify-signature`: what a user pinning a tag can see and prove.

Register with `register(subparsers)`; every handler returns an exit code and raises StrataError subclasses for
one-line errors.
"""

from __future__ import annotations

import argparse
import fnmatch
import getpass
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from builder.errors import StrataError
from builder.plan.graph import LayerNode, Plan
from builder.settings import SIGNING_PASSPHRASE_ENV, Settings
from cli.common import add_matrix_file_arg, settings_for
from cli.output import add_format_arg, print_json, wants_json
from registry_sync.publish.attest import (
    SignatureInvalid,
    SigningError,
    generate_keypair,
    load_public_key,
    load_signer,
    sign_lock_file,
    verify_lock_file,
    write_file,
)
from registry_sync.publish.catalog import NodeSource, load_plans, sources_from_plans
from registry_sync.publish.evidence import (
    SBOM_FILE,
    SIGNATURE_FILE,
    ImageEvidence,
    checkout_of,
    directory_documents,
    evidence_dir,
    registry_documents,
    sign_image,
    update_lock_artifact,
    verify_image,
    write_evidence,
    write_index,
)
from registry_sync.publish.images_lock import (
    ImagesLock,
    LockedImage,
    lock_plan_digest,
    read_images_lock,
    write_images_lock,
)
from registry_sync.publish.sbom import sbom_bytes, validation_errors
from registry_sync.publish.tag_policy import AuditLog
from registry_sync.registry.client import RegistryClient
from registry_sync.registry.connect import open_registry
from registry_sync.registry.reference import ImageRef


def help_formatter() -> type[argparse.RawDescriptionHelpFormatter]:
    return argparse.RawDescriptionHelpFormatter


def add_lock_options(p: argparse.ArgumentParser, matrix_optional: bool = False) -> None:
    add_matrix_file_arg(p, optional=matrix_optional)
    p.add_argument(
        "--lock", type=Path, default=None, help="images lock (default: images.lock.json next to the matrix)"
    )


def register(subparsers: Any) -> None:
    """Add `keygen`, `sbom`, `sign`, `verify-signature`."""
    p = subparsers.add_parser(
        "keygen",
        help="make an ed25519 signing key pair for `strata sign`",
        description="Write strata-signing.key (PKCS#8 PEM, encrypted with $STRATA_SIGNING_PASSPHRASE or a passphrase\n"
        "asked on the terminal; mode 0600) and strata-signing.pub into DIR. Keep the private key offline;\n"
        "publish the public key and its key id next to images.lock.json.\n\n"
        "example: strata keygen --out ~/.strata-keys",
        formatter_class=help_formatter(),
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for the two key files")
    p.add_argument("--no-passphrase", action="store_true", help="leave the private key unencrypted")
    p.set_defaults(func=cmd_keygen)

    p = subparsers.add_parser(
        "sbom",
        help="write the CycloneDX SBOM of published images",
        description="Build the CycloneDX 1.6 JSON SBOM of an image of images.lock.json from what Strata pins: every\n"
        "wheel (sha256, URL), every Debian package (version, arch), the root filesystem digest, the image's\n"
        "manifest and config digests. IMAGE is a reference of images.lock.json (printed to stdout unless\n"
        "--out); --only GLOB selects by cell or node and writes <out>/<repository>/<tag>/sbom.cdx.json.\n\n"
        "example: strata sbom --only 'tf2.13.1-cpu' --out build/evidence",
        formatter_class=help_formatter(),
    )
    p.add_argument("image", nargs="?", metavar="IMAGE", help="a version reference of images.lock.json")
    p.add_argument("--only", action="append", metavar="GLOB", help="cells or nodes (repeatable)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="evidence directory (default: stdout for IMAGE, build/evidence for --only)",
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="check each SBOM against the CycloneDX schema (offline; about 0.1 s per wheel)",
    )
    add_format_arg(p, choices=("cyclonedx", "json"), default="cyclonedx")
    add_lock_options(p)
    p.set_defaults(func=cmd_sbom)

    p = subparsers.add_parser(
        "sign",
        help="sign pushed images and images.lock.json; store SBOM, provenance and signature in the registry",
        description="For every image of images.lock.json (or --only GLOB): build its SBOM and SLSA provenance, sign\n"
        "the provenance and a statement binding the manifest digest to both, with KEY (offline); push the\n"
        "three as OCI artifacts tagged sha256-<digest>.sbom / .att / .sig next to the image (plus the OCI 1.1\n"
        "referrers index sha256-<digest>), write them to --out, record their digests in images.lock.json,\n"
        "then sign images.lock.json into images.lock.json.sig. The key's passphrase: $STRATA_SIGNING_PASSPHRASE\n"
        "or the terminal.\n\n"
        "example: strata sign --key ~/.strata-keys/strata-signing.key",
        formatter_class=help_formatter(),
    )
    p.add_argument("--key", type=Path, required=True, metavar="KEY.pem", help="private key (strata keygen)")
    p.add_argument("--only", action="append", metavar="GLOB", help="cells or nodes (repeatable)")
    p.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="evidence directory (default: build/evidence)"
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, help="embedded registry state (default: <state root>/registry)"
    )
    add_lock_options(p)
    p.set_defaults(func=cmd_sign)

    p = subparsers.add_parser(
        "verify-signature",
        help="check an image's or images.lock.json's signature with the public key, offline",
        description="TARGET is images.lock.json (checked against images.lock.json.sig) or an image reference\n"
        "(tag@digest, or a tag of images.lock.json). For an image the signature must be over its manifest\n"
        "digest, and the SBOM and provenance must be the ones it names; they come from --evidence DIR (no\n"
        "network: the files `strata sign` wrote) or else from the registry's sha256-<digest>.sig/.sbom/.att.\n\n"
        "example: strata verify-signature images.lock.json --key strata-signing.pub",
        formatter_class=help_formatter(),
    )
    p.add_argument("target", metavar="REF|images.lock.json")
    p.add_argument("--key", type=Path, required=True, metavar="KEY.pub", help="public key")
    p.add_argument(
        "--evidence",
        type=Path,
        default=None,
        metavar="DIR",
        help="read the documents from this evidence directory instead of the registry",
    )
    p.add_argument(
        "--signature",
        type=Path,
        default=None,
        metavar="FILE",
        help="signature of images.lock.json (default: <lock>.sig)",
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, help="embedded registry state (default: <state root>/registry)"
    )
    add_format_arg(p, choices=("text", "json"), default="text")
    add_lock_options(p, matrix_optional=True)  # a user checking a lock may have no matrix
    p.set_defaults(func=cmd_verify_signature)


# ---------------------------------------------------------------------------------------------- helpers


def images_lock_path(args: argparse.Namespace) -> Path:
    return args.lock or Path(args.matrix).resolve().parent / "images.lock.json"


def select_entries(lock: ImagesLock, image: str | None, only: Sequence[str] | None) -> list[LockedImage]:
    """The lock entries IMAGE names (a reference of the lock) or --only GLOBs match (node or cell)."""
    if image:
        ref = ImageRef.parse(image)
        entry = lock.lookup(ref) if ref else None
        if entry is None:
            raise StrataError(f"{image}: not a reference of images.lock.json (see `strata catalog`)")
        return [entry]
    entries = lock.entries()
    if not only:
        return entries
    chosen = []
    for pattern in only:
        hit = [
            e
            for e in entries
            if fnmatch.fnmatchcase(e.node, pattern) or any(fnmatch.fnmatchcase(c, pattern) for c in e.cells)
        ]
        if not hit:
            raise StrataError(f"--only '{pattern}' matches no image of images.lock.json")
        chosen += [e for e in hit if e not in chosen]
    return sorted(chosen, key=lambda e: e.reference)


def plan_sources(
    args: argparse.Namespace, settings: Settings, lock: ImagesLock
) -> tuple[dict[str, NodeSource | str], dict[str, Plan]]:
    """Each entry's plan node and ancestors (or why the locks no longer describe it), and the plan per profile."""
    plans = load_plans(Path(args.matrix), {e.profile for e in lock.entries()}, settings.registry_override)
    return sources_from_plans(lock, plans), plans


def chain_of(entry: LockedImage, source: NodeSource | str) -> tuple[LayerNode, ...]:
    if isinstance(source, str):
        raise StrataError(f"{entry.reference}: cannot describe it from the locks: {source}")
    return (*source.ancestors, source.node)


def _epoch(plans: dict[str, Plan], entry: LockedImage) -> int:
    return int(plans[entry.profile].matrix.model.source_date_epoch)


def _passphrase(settings: Settings, key: Path, *, new: bool = False) -> bytes | None:
    """$STRATA_SIGNING_PASSPHRASE, else a terminal prompt when the key needs one (twice for a new key)."""
    if settings.signing_passphrase is not None:
        return settings.signing_passphrase
    if not new:
        try:
            encrypted = b"ENCRYPTED" in key.read_bytes()[:200]
        except OSError:
            return None  # load_signer reports the unreadable file
        if not encrypted:
            return None
    if not sys.stdin.isatty():
        raise SigningError(f"{key}: needs a passphrase; set {SIGNING_PASSPHRASE_ENV} (no terminal to ask on)")
    first = getpass.getpass(f"passphrase for {key}: ").encode()
    if new and getpass.getpass("again: ").encode() != first:
        raise SigningError("the two passphrases differ")
    return first or None


def _client(address: str, settings: Settings, data_dir: Path | None) -> RegistryClient:
    client = open_registry(address, settings, data_dir or settings.registry_dir)
    try:
        client.ping()
    except StrataError:
        client.close()
        raise
    return client


# ---------------------------------------------------------------------------------------------- commands


def cmd_keygen(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    passphrase = (
        None if args.no_passphrase else _passphrase(settings, args.out / "strata-signing.key", new=True)
    )
    if passphrase is None and not args.no_passphrase:
        raise SigningError("empty passphrase; pass --no-passphrase to leave the key unencrypted")
    private, public = generate_keypair(args.out, passphrase)
    keyid = load_public_key(public).keyid
    state = "encrypted" if passphrase else "NOT encrypted"
    print(f"{private}: private key ({state}); keep it offline")
    print(f"{public}: public key, key id {keyid}")
    return 0


def cmd_sbom(args: argparse.Namespace) -> int:
    if bool(args.image) == bool(args.only):
        raise StrataError("name one IMAGE or --only GLOB")
    settings = settings_for(args)
    lock = read_images_lock(images_lock_path(args))
    entries = select_entries(lock, args.image, args.only)
    sources, plans = plan_sources(args, settings, lock)
    out = args.out or (None if args.image else settings.evidence_dir)
    invalid = 0
    reported: list[dict[str, Any]] = []
    for entry in entries:
        document = sbom_bytes(entry, chain_of(entry, sources[entry.reference]), _epoch(plans, entry))
        errors: list[str] = []
        if args.validate:
            errors = [str(e) for e in validation_errors(document)]
            for error in errors[:10]:
                print(
                    f"strata: {entry.reference}: SBOM does not follow CycloneDX 1.6: {error}", file=sys.stderr
                )
            invalid += bool(errors)
        item: dict[str, Any] = {
            "reference": entry.reference,
            "digest": entry.digest,
            "path": None,
            "components": len(json.loads(document).get("components", [])),
            "valid": (not errors) if args.validate else None,
            "errors": errors[:10],
        }
        reported.append(item)
        if out is None:
            if wants_json(args):
                item["sbom"] = json.loads(document)
            else:
                sys.stdout.write(document.decode())
            continue
        path = evidence_dir(out, entry.reference) / SBOM_FILE
        write_file(path, document)
        item["path"] = str(path)
        if not wants_json(args):
            checked = ", valid CycloneDX 1.6" if args.validate and not errors else ""
            print(f"{path}: {entry.reference}@{entry.digest[:19]}…{checked}")
    if wants_json(args):
        print_json("sbom", {"images": reported})
    return 1 if invalid else 0


def cmd_sign(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    lock_path = images_lock_path(args)
    lock = read_images_lock(lock_path)
    entries = select_entries(lock, None, args.only)
    sources, plans = plan_sources(args, settings, lock)
    signer = load_signer(args.key, _passphrase(settings, args.key))
    checkout = checkout_of(Path(args.matrix))
    out = args.out or settings.evidence_dir
    if checkout.dirty:
        print(f"note: {checkout.root} has uncommitted changes; the provenance says so", file=sys.stderr)
    signed: list[ImageEvidence] = []
    failures: list[str] = []
    clients: dict[str, RegistryClient] = {}
    try:
        for entry in entries:
            try:
                chain = chain_of(entry, sources[entry.reference])
                host = entry.ref.registry or ""
                if host not in clients:
                    clients[host] = _client(host, settings, args.data_dir)
                evidence = sign_image(
                    entry, chain, lock, checkout, clients[host], signer, _epoch(plans, entry)
                )
            except StrataError as exc:
                failures.append(str(exc))
                print(f"strata: {exc}", file=sys.stderr)
                continue
            signed.append(evidence)
            print(f"{entry.reference}@{entry.digest[:19]}…: signed; sbom, provenance, signature pushed")
    finally:
        for client in clients.values():
            client.close()
    if failures:
        raise SignatureInvalid(
            f"sign failed for {len(failures)} of {len(entries)} images; {lock_path.name} and {out} not changed"
        )
    for evidence in signed:
        write_evidence(out, evidence)
    lock = lock.with_evidence({e.entry.reference: e.digests for e in signed})
    write_images_lock(lock_path, lock)
    signature = sign_lock_file(lock_path, signer)
    index = write_index(out, lock)
    print(
        f"{lock_path}: evidence digests recorded; signed into {signature.name} (key {signer.public_key.keyid[:16]})"
    )
    print(f"{index.parent}: evidence of {len(signed)} images ({index.name} lists them)")
    hosts = {e.ref.registry for e in lock.entries()}
    if len(hosts) == 1 and signed:
        plan = plans[signed[0].entry.profile]
        plan_digest = lock_plan_digest(lock, [n.id for n in plan.nodes])
        with _client(hosts.pop() or "", settings, args.data_dir) as client:
            artifact = update_lock_artifact(
                client,
                plan.matrix.model.registry.namespace,
                lock_path.read_bytes(),
                signature.read_bytes(),
                plan_digest,
                AuditLog(settings.audit_log_path),
                plan.matrix.model.source_date_epoch,
            )
        if artifact:
            print(f"lock artifact: {artifact} (signature next to it)")
    return 0


def cmd_verify_signature(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    key = load_public_key(args.key)
    target = Path(args.target)
    if target.suffix == ".json" or target.is_file():
        checked = verify_lock_file(target, [key], args.signature)
        if wants_json(args):
            print_json(
                "verify-signature",
                {
                    "kind": "lock",
                    "valid": True,
                    "path": str(checked.path),
                    "signature": str(checked.signature),
                    "keyid": checked.keyid,
                    "images": checked.images,
                },
            )
            return 0
        print(
            f"{checked.path}: signature valid (key {checked.keyid[:16]}; {checked.images} images; "
            f"{checked.signature.name})"
        )
        return 0
    ref = ImageRef.parse(args.target)
    if ref is None or not ref.tag and not ref.digest:
        raise StrataError(
            f"{args.target}: neither a file nor an image reference like host:port/repository:tag"
        )
    lock_path = images_lock_path(args)
    lock = read_images_lock(lock_path) if lock_path.is_file() else ImagesLock()
    entry = lock.lookup(ref)
    if ref.digest:
        digest, digest_from = ref.digest, "the reference"
    elif entry is not None:
        digest, digest_from = entry.digest, lock_path.name
    else:
        digest, digest_from = "", "the registry's tag"
    recorded = dict(entry.evidence) if entry is not None and entry.digest == digest else None
    if args.evidence is not None:
        if not digest:
            raise StrataError(f"{args.target}: give tag@digest (or --lock with this tag) to verify offline")
        directory = (
            args.evidence
            if (args.evidence / SIGNATURE_FILE).is_file()
            else evidence_dir(args.evidence, ref.tagged)
        )
        result = verify_image(
            ref.tagged,
            digest,
            [key],
            directory_documents(directory),
            digest_from=digest_from,
            source=str(directory),
            recorded=recorded,
        )
    else:
        if not ref.registry:
            raise StrataError(f"{args.target}: name the registry (host:port/repository:tag)")
        with _client(ref.registry, settings, args.data_dir) as client:
            if not digest:
                digest = client.manifest_digest(ref.repository, ref.tag or "") or ""
                if not digest:
                    raise StrataError(f"{args.target}: no such tag in {ref.registry}")
            result = verify_image(
                ref.tagged,
                digest,
                [key],
                registry_documents(client, ref.repository),
                digest_from=digest_from,
                source=f"registry {ref.registry}",
                recorded=recorded,
            )
    if wants_json(args):
        print_json(
            "verify-signature",
            {
                "kind": "image",
                "valid": True,
                "reference": result.reference,
                "digest": result.digest,
                "digest_from": result.digest_from,
                "keyid": result.keyid,
                "sbom_digest": result.sbom_digest,
                "sbom_components": result.sbom_components,
                "provenance_digest": result.provenance_digest,
                "matrix_commit": result.matrix_commit,
                "source": result.source,
            },
        )
        return 0
    print("\n".join(result.lines()))
    return 0
