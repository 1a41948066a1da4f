"""The payload tar put into containers, and reading one file back out of a get_archive tar."""

from __future__ import annotations

import io
import tarfile

import pytest

from validate.container.payload import Payload, file_from_archive, payload_archive


def members(archive: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_archive_holds_the_directory_and_its_files_readable_by_any_uid() -> None:
    payload = Payload("/tmp/strata-x", {"run.py": b"print(1)\n", "context.json": b"{}"})
    archive = payload_archive(payload, mtime=1_700_000_000)
    found = members(archive)
    assert list(found) == ["tmp/strata-x", "tmp/strata-x/run.py", "tmp/strata-x/context.json"]
    assert found["tmp/strata-x"].isdir() and found["tmp/strata-x"].mode == 0o755
    for name in ("tmp/strata-x/run.py", "tmp/strata-x/context.json"):
        assert found[name].isfile() and found[name].mode == 0o644  # others may read: images run as uid 1000
    assert {m.mtime for m in found.values()} == {1_700_000_000}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        script = tar.extractfile("tmp/strata-x/run.py")
        assert script is not None and script.read() == b"print(1)\n"


def test_path_names_where_a_file_lands() -> None:
    assert Payload("/opt/strata-bench/", {}).path("workloads.py") == "/opt/strata-bench/workloads.py"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (Payload("tmp/x", {"a": b""}), "must be absolute, not 'tmp/x'"),
        (Payload("/tmp/x", {"sub/a": b""}), "plain names, not 'sub/a'"),
        (Payload("/tmp/x", {"..": b""}), "plain names, not '..'"),
    ],
)
def test_payloads_that_would_land_elsewhere_are_refused(payload: Payload, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        payload_archive(payload)


def test_file_from_archive_reads_the_one_file_and_none_without_one() -> None:
    one = payload_archive(Payload("/tmp/r", {"result.json": b'{"ok": true}'}))
    assert file_from_archive(one) == b'{"ok": true}'  # the first regular file, past the directory entry
    assert file_from_archive(payload_archive(Payload("/tmp/r", {}))) is None
