"""The lock channel on a real registry (distribution 2.8): images.lock.json under <namespace>/images-lock:r<N> and
:latest, latest never moving back, `strata lock pull` checking digest, schema and signature, aliases pinned."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest

from builder.oci.digest import sha256_digest
from builder.oci.media_types import LOCK_CONFIG_MEDIA_TYPE, OCI_MANIFEST
from registry_sync.publish.attest import (
    SignatureInvalid,
    generate_keypair,
    load_public_key,
    load_signer,
    sign_lock_file,
)
from registry_sync.publish.evidence import update_lock_artifact
from registry_sync.publish.images_lock import read_images_lock
from registry_sync.publish.lock_channel import (
    LATEST,
    LockChannelError,
    lock_repository,
    publish_channel,
    published_releases,
    pull_lock,
    verify_pulled,
)
from registry_sync.publish.push_plan import PushOptions, finish_lock, publish_plan, push_lock_artifact
from registry_sync.publish.tag_policy import AuditLog, TagPolicy

from .conftest import hand_plan

SCHEMAS = Path(__file__).resolve().parents[4] / "docs" / "schemas"

pytestmark = pytest.mark.engine
EPOCH = 1700000000


@pytest.fixture
def published(make_chain, engine, plain_registry, plain_client, tmp_path):
    """A chain pushed, its alias `9.9-cpu` set on the tool image, and its lock written for release 1."""
    chain = make_chain(plain_registry, aliases=[("9.9-cpu", "c-cpu")])
    options = PushOptions(
        registry=plain_registry,
        policy=TagPolicy(),
        audit=AuditLog(tmp_path / "audit.jsonl"),
        profile="hermetic",
        cache_dir=tmp_path / "layers",
        work_dir=tmp_path,
    )
    results = publish_plan(chain.plan, engine, plain_client, options)
    tool = results[-1]
    manifest = plain_client.get_manifest(tool.target.repository, tool.manifest_digest)
    plain_client.put_manifest(tool.target.repository, "9.9-cpu", manifest.body, manifest.media_type)
    return chain, results, options


def publish_release(chain, results, options, client, lock_path, release):
    plan = hand_plan(chain.nodes, chain.registry, chain.namespace, [("9.9-cpu", "c-cpu")], release=release)
    outcome = finish_lock(lock_path, plan, results, client, options)
    update = publish_channel(client, chain.namespace, outcome.artifact.rpartition("@")[2], options.audit)
    return outcome, update


def test_releases_are_kept_and_latest_never_moves_back(published, plain_client, tmp_path):
    chain, results, options = published
    lock_path = tmp_path / "images.lock.json"
    _, first = publish_release(chain, results, options, plain_client, lock_path, 1)
    assert first.tags == ("r1", LATEST) and first.release == 1
    lock = read_images_lock(lock_path)
    alias = f"{chain.registry}/{chain.namespace}/tool:9.9-cpu"
    assert lock.release == 1 and list(lock.aliases) == [alias]
    assert lock.aliases[alias].tag == chain.node("tools").tags[0]
    assert lock.aliases[alias].digest == results[-1].manifest_digest

    _, second = publish_release(chain, results, options, plain_client, lock_path, 2)
    assert second.tags == ("r2", LATEST)
    # Release 1 published again (say, from an old branch): r1 is refreshed, latest stays at release 2.
    _, again = publish_release(chain, results, options, plain_client, lock_path, 1)
    assert (
        again.tags == ("r1",) and again.latest_release == 2 and again.manifest_digest == first.manifest_digest
    )
    assert "latest stays at release 2" in again.describe(chain.registry, chain.namespace)

    assert published_releases(plain_client, chain.namespace) == [1, 2]
    assert pull_lock(plain_client, chain.namespace).lock.release == 2
    old = pull_lock(plain_client, chain.namespace, 1)
    assert old.lock.release == 1 and old.manifest_digest == first.manifest_digest
    assert old.data == lock_path.read_bytes() and old.signature is None
    with pytest.raises(
        LockChannelError, match=r"images-lock:r7: no images lock .* \(releases published: r1, r2\)$"
    ):
        pull_lock(plain_client, chain.namespace, 7)
    moves = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [m["tag"] for m in moves if m["action"] == "lock-channel"] == [LATEST]  # r1 -> r2, audited


def test_skopeo_reads_the_channel_as_an_oci_artifact(published, plain_client, tmp_path, require):
    chain, results, options = published
    publish_release(chain, results, options, plain_client, tmp_path / "images.lock.json", 1)
    skopeo = shutil.which("skopeo")
    require(skopeo is not None, "skopeo is not installed (scripts/setup-host.sh installs it)")
    ref = f"docker://{chain.registry}/{lock_repository(chain.namespace)}:{LATEST}"
    done = subprocess.run(
        [str(skopeo), "inspect", "--raw", "--tls-verify=false", ref],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert manifest["mediaType"] == OCI_MANIFEST and manifest["config"]["mediaType"] == LOCK_CONFIG_MEDIA_TYPE
    assert manifest["layers"][0]["digest"] == sha256_digest((tmp_path / "images.lock.json").read_bytes())


def test_the_signed_lock_is_pulled_with_its_signature_and_checked(
    published, plain_client, tmp_path, run_strata
):
    chain, results, options = published
    lock_path = tmp_path / "images.lock.json"
    outcome, _ = publish_release(chain, results, options, plain_client, lock_path, 1)
    private, public = generate_keypair(tmp_path / "keys", None)
    signature = sign_lock_file(lock_path, load_signer(private, None))
    signed = update_lock_artifact(
        plain_client,
        chain.namespace,
        lock_path.read_bytes(),
        signature.read_bytes(),
        outcome.plan_digest,
        options.audit,
        EPOCH,
    )
    assert signed is not None and f"{outcome.plan_digest},r1,latest@" in signed
    pulled = pull_lock(plain_client, chain.namespace)
    assert pulled.signature == signature.read_bytes()
    assert verify_pulled(pulled, [load_public_key(public)]).keyid == load_public_key(public).keyid
    _, other = generate_keypair(tmp_path / "other", None)
    with pytest.raises(SignatureInvalid, match="does not verify with the public key"):
        verify_pulled(pulled, [load_public_key(other)])

    out = tmp_path / "user" / "images.lock.json"
    out.parent.mkdir()
    pull = run_strata(
        *("lock", "pull", "--registry", chain.registry, "--namespace", chain.namespace, "--out", str(out)),
        *("--require-signature", str(public)),
    )
    assert pull.returncode == 0, pull.stderr
    assert "signature valid" in pull.stdout and out.read_bytes() == lock_path.read_bytes()
    as_json = run_strata(
        *("lock", "pull", "--registry", chain.registry, "--namespace", chain.namespace, "--out", str(out)),
        *("--require-signature", str(public), "--format", "json"),
    )
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    jsonschema.validate(document, json.loads((SCHEMAS / "strata.lock-pull.json").read_text()))
    assert document["signature"] == {"valid": True, "keyid": load_public_key(public).keyid}
    assert document["written"] == [str(out), f"{out}.sig"] and document["release"] == 1
    check = run_strata("verify-signature", str(out), "--key", str(public))
    assert check.returncode == 0, check.stderr
    dockerfile = out.parent / "Dockerfile"
    alias = f"{chain.registry}/{chain.namespace}/tool:9.9-cpu"
    dockerfile.write_text(f"FROM {alias}\n")
    pin = run_strata("pin", str(dockerfile), "--lock", str(out), "--require-signature", str(public))
    assert pin.returncode == 0, pin.stderr
    assert dockerfile.read_text() == f"FROM {alias}@{results[-1].manifest_digest}\n"

    refused = run_strata(
        *("lock", "pull", "--registry", chain.registry, "--namespace", chain.namespace, "--out", str(out)),
        *("--require-signature", str(other)),
    )
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "does not verify with the public key" in refused.stderr


def test_what_is_not_a_lock_of_that_release_is_refused_and_nothing_is_written(
    published, plain_client, tmp_path
):
    chain, results, options = published
    lock_path = tmp_path / "images.lock.json"
    publish_release(chain, results, options, plain_client, lock_path, 1)
    repository = lock_repository(chain.namespace)
    # Release 1's lock under the tag r3: the tag lies about the release.
    push_lock_artifact(plain_client, chain.namespace, lock_path.read_bytes(), "r3", options.audit)
    with pytest.raises(LockChannelError, match=r":r3: the lock under this tag is of release 1, not 3$"):
        pull_lock(plain_client, chain.namespace, 3)
    # Not an images lock at all (valid JSON, wrong shape) under r4.
    push_lock_artifact(plain_client, chain.namespace, b'{"schema": 1, "images": []}', "r4", options.audit)
    with pytest.raises(Exception, match=r"images-lock:r4: images: must be dictionary, got list"):
        pull_lock(plain_client, chain.namespace, 4)
    # An image manifest (the tool image's) under r5.
    tool = results[-1]
    body = plain_client.get_manifest(tool.target.repository, tool.manifest_digest)
    assert body is not None
    for blob in json.loads(body.body)["layers"] + [json.loads(body.body)["config"]]:
        plain_client.mount_blob(repository, blob["digest"], tool.target.repository)
    plain_client.put_manifest(repository, "r5", body.body, body.media_type)
    with pytest.raises(LockChannelError, match=r":r5: not an images lock artifact"):
        pull_lock(plain_client, chain.namespace, 5)
