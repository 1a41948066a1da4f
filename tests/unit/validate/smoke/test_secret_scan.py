"""The layer secret scanner over real tar streams shaped like `docker save` output."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tarfile

import pytest

from validate.smoke.check_result import FAIL, NOT_RUN, PASS, CheckResult
from validate.smoke.secret_scan import (
    SecretScanner,
    credential_lines,
    docker_auths,
    private_key_hits,
    secret_checks,
)

HOST_BUNDLE = b"-----BEGIN CERTIFICATE-----\nMIIhostbundle\n-----END CERTIFICATE-----\n" * 40
DPKG_WITH_CA = b"Package: base-files\nStatus: install ok installed\n\nPackage: ca-certificates\nStatus: install ok installed\n"


@pytest.fixture(scope="module")
def real_key() -> bytes:
    return subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def saved_image(layers: list[dict[str, bytes]]) -> tuple[list[bytes], list[str]]:
    """A docker-save archive (layer dirs, config, manifest) cut into chunks, and its diff IDs."""
    blobs = [layer_tar(files) for files in layers]
    diff_ids = ["sha256:" + hashlib.sha256(b).hexdigest() for b in blobs]
    members = {
        f"{i:064x}/layer.tar": b for i, b in enumerate(reversed(blobs))
    }  # engine order is not layer order
    members["manifest.json"] = json.dumps([{"Layers": list(members)}]).encode()
    archive = layer_tar(members)
    return [archive[i : i + 1000] for i in range(0, len(archive), 1000)], diff_ids


def scan(layers: list[dict[str, bytes]], host_bundle: bytes | None = HOST_BUNDLE) -> dict[str, CheckResult]:
    chunks, diff_ids = saved_image(layers)
    result = SecretScanner(host_bundle).scan_saved(chunks, diff_ids)
    return {c.name: c for c in secret_checks(result, "/etc/ssl/certs/ca-certificates.crt")}


def test_clean_image_passes_every_secret_check() -> None:
    checks = scan(
        [{"usr/bin/tool": b"\x7fELF", "etc/os-release": b"ID=debian\n"}, {"opt/app.py": b"print(1)\n"}]
    )
    assert {c.status for c in checks.values()} == {PASS}


def test_key_deleted_in_a_later_layer_is_still_found(real_key: bytes) -> None:
    checks = scan(
        [{"etc/os-release": b"x"}, {"root/.ssh/id_ecdsa": real_key}, {"root/.ssh/.wh.id_ecdsa": b""}]
    )
    key = checks["secrets:private-key"]
    assert key.status == FAIL
    assert (key.found or "").startswith("PEM private key at /root/.ssh/id_ecdsa (layer 2/3 sha256:")
    assert real_key.decode() not in key.detail


def test_header_without_key_body_does_not_count() -> None:
    doc = b'"""Pass a key like:\n    -----BEGIN PRIVATE KEY-----\n    ...\n"""\n'
    assert scan([{"usr/lib/python3/site-packages/pkg/keys.py": doc}])["secrets:private-key"].status == PASS


def record_line(path: str, data: bytes) -> bytes:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}\n".encode()


def test_keys_a_package_ships_unmodified_are_public(real_key: bytes) -> None:
    site = "opt/venv/lib/python3.11/site-packages"
    library = b"\x7fELF" + real_key  # like GnuTLS, whose self-test keys are compiled in
    checks = scan([
        {"var/lib/dpkg/info/libgnutls30:amd64.md5sums":
            hashlib.md5(library).hexdigest().encode() + b"  usr/lib/x86_64-linux-gnu/libgnutls.so.30\n",
         "usr/lib/x86_64-linux-gnu/libgnutls.so.30": library},
        {f"{site}/tornado/test/test.key": real_key,
         f"{site}/tornado-6.4.dist-info/RECORD": record_line("tornado/test/test.key", real_key)},
    ])  # fmt: skip
    key = checks["secrets:private-key"]
    assert key.status == PASS
    assert "ignored 2 packaged file(s)" in key.detail
    assert "tornado/test/test.key" in key.detail and "libgnutls.so.30" in key.detail


def test_a_packaged_path_with_changed_content_is_not_exempt(real_key: bytes) -> None:
    site = "opt/venv/lib/python3.11/site-packages"
    checks = scan([{
        f"{site}/tornado/test/test.key": real_key,
        f"{site}/tornado-6.4.dist-info/RECORD": record_line("tornado/test/test.key", b"the original key"),
    }])  # fmt: skip
    assert checks["secrets:private-key"].status == FAIL


def test_private_key_in_a_large_file_is_found_across_chunks(real_key: bytes) -> None:
    big = b"\0" * (9 << 20) + real_key + b"\0" * 100
    assert private_key_hits(real_key)
    checks = scan([{"var/backup.img": big}])
    assert checks["secrets:private-key"].status == FAIL


def test_docker_auths_and_registry_credentials() -> None:
    config = json.dumps(
        {"auths": {"registry.example": {"auth": "dXNlcjpwYXNz"}, "empty.example": {}}}
    ).encode()
    checks = scan([{
        "root/.docker/config.json": config,
        "home/user/.netrc": b"machine pypi.example login u password hunter2\n",
        "etc/pip.conf": b"[global]\nindex-url = https://u:s3cret@pypi.example/simple\n",
        "home/user/.docker/config.json": json.dumps({"credsStore": "pass"}).encode(),
    }])  # fmt: skip
    auths = checks["secrets:docker-auths"]
    assert auths.status == FAIL
    assert (auths.found or "").startswith(
        "credentials for registry.example at /root/.docker/config.json (layer 1/1"
    )
    creds = checks["secrets:registry-credentials"]
    assert creds.status == FAIL
    assert "/home/user/.netrc" in (creds.found or "") and "/etc/pip.conf" in (creds.found or "")
    assert "hunter2" not in creds.detail and "s3cret" not in creds.detail


def test_credential_parsers() -> None:
    assert docker_auths('{"auths": {"r": {"identitytoken": "t"}}}') == ["r"]
    assert docker_auths("not json") == []
    assert credential_lines("[global]\nindex-url = https://pypi.org/simple\n") == []
    assert credential_lines("a\n//npm.example/:_authToken=abc\n") == [2]


def test_host_bundle_copied_verbatim_is_a_leak_anywhere() -> None:
    checks = scan([{"usr/local/share/ca-certificates/corp.crt": HOST_BUNDLE}])
    ca = checks["secrets:host-ca-bundle"]
    assert ca.status == FAIL
    assert "/usr/local/share/ca-certificates/corp.crt" in (ca.found or "")


def test_debian_bundle_built_by_the_images_own_ca_certificates_is_fine() -> None:
    # Same bytes as the host's (both stock Debian), but dpkg in the image says ca-certificates built it.
    ok = scan([{"var/lib/dpkg/status": DPKG_WITH_CA}, {"etc/ssl/certs/ca-certificates.crt": HOST_BUNDLE}])
    assert ok["secrets:host-ca-bundle"].status == PASS
    leaked = scan([{"var/lib/dpkg/status": b"Package: base-files\nStatus: install ok installed\n"},
                   {"etc/ssl/certs/ca-certificates.crt": HOST_BUNDLE}])  # fmt: skip
    assert leaked["secrets:host-ca-bundle"].status == FAIL


def test_no_host_bundle_means_that_check_did_not_run() -> None:
    checks = scan([{"a": b"b"}], host_bundle=None)
    assert checks["secrets:host-ca-bundle"].status == NOT_RUN
