"""The lock file format: v2 files verify themselves (a digest of every other line), v1 files are still read."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from builder.plan.lockfile import (
    DebPackage,
    Lock,
    LockError,
    PinnedRootfs,
    PinnedWheel,
    parse_lock,
    read_lock,
)

REPO = Path(__file__).resolve().parents[4]
SHA_A = "a" * 64
SHA_B = "b" * 64
WHEELS = (  # in the order a lock lists them: by name
    PinnedWheel("absl-py", "2.0.0", SHA_B, "https://files.pythonhosted.org/p/absl_py-2.0.0-py3-none-any.whl"),
    PinnedWheel(
        "numpy", "1.24.3", SHA_A, "https://files.pythonhosted.org/p/numpy-1.24.3-cp311-cp311-linux.whl"
    ),
)
LOCK = Lock(node="tf-x", profile="hermetic", inputs="1" * 64, wheels=WHEELS)


def test_render_writes_a_header_with_the_digest_of_every_other_line() -> None:
    text = LOCK.render()
    lines = text.splitlines(keepends=True)
    assert lines[0] == "# strata lock v2 node=tf-x profile=hermetic\n"
    assert lines[1] == f"# inputs=sha256:{'1' * 64}\n"
    expected = hashlib.sha256("".join([lines[0], lines[1], *lines[3:]]).encode()).hexdigest()
    assert lines[2] == f"# digest=sha256:{expected}\n"
    assert lines[3].startswith("absl-py==2.0.0 ") and lines[4].startswith("numpy==1.24.3 ")  # sorted by name


def test_parse_round_trips_and_records_the_line_of_each_pin() -> None:
    lock = parse_lock(LOCK.render(), "x.lock")
    assert lock == LOCK
    assert [(w.name, w.line) for w in lock.wheels] == [("absl-py", 4), ("numpy", 5)]
    rootfs = Lock(
        "base", "hermetic", "2" * 64, rootfs=PinnedRootfs(SHA_A, 10), debs=(DebPackage("a", "1", "all"),)
    )
    assert parse_lock(rootfs.render(), "b.lock") == rootfs


@pytest.mark.parametrize(
    ("what", "edit"),
    [
        ("zeroed sha256", lambda t: t.replace(SHA_A, "0" * 64)),
        ("deleted wheel line", lambda t: "".join(t.splitlines(keepends=True)[:-1])),
        ("URL on another host", lambda t: t.replace("files.pythonhosted.org", "files.example.net")),
        ("changed version", lambda t: t.replace("numpy==1.24.3", "numpy==1.24.4")),
        ("changed inputs", lambda t: t.replace("1" * 64, "3" * 64)),
        ("changed node", lambda t: t.replace("node=tf-x", "node=tf-y")),
        ("missing trailing newline", lambda t: t.rstrip("\n")),
    ],
)
def test_any_edit_breaks_the_digest_and_names_the_file(what: str, edit) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LockError) as failed:
        parse_lock(edit(LOCK.render()), "locks/hermetic/tf-x.lock")
    assert str(failed.value).startswith("locks/hermetic/tf-x.lock:3: the file does not match its digest"), (
        what
    )


def test_v2_body_allows_nothing_but_entries() -> None:
    lines = LOCK.render().splitlines(keepends=True)
    for extra in ("\n", "# a comment\n", "--index-url https://evil.example/simple\n"):
        text = "".join(lines[:4] + [extra] + lines[4:])
        # even with a digest recomputed over the extra line, the line itself is refused
        body = "".join(lines[:2] + text.splitlines(keepends=True)[3:])
        text = (
            lines[0]
            + lines[1]
            + f"# digest=sha256:{hashlib.sha256(body.encode()).hexdigest()}\n"
            + "".join(text.splitlines(keepends=True)[3:])
        )
        with pytest.raises(LockError, match=r"^x.lock:5: unrecognised lock line"):
            parse_lock(text, "x.lock")


def test_header_lines_are_required_in_order() -> None:
    lines = LOCK.render().splitlines(keepends=True)
    with pytest.raises(LockError, match=r"^x.lock:1: missing '# strata lock v2"):
        parse_lock("".join(lines[1:]), "x.lock")
    with pytest.raises(LockError, match=r"^x.lock:2: line 2 must be '# inputs="):
        parse_lock(lines[0] + lines[2] + lines[1] + "".join(lines[3:]), "x.lock")
    with pytest.raises(LockError, match=r"^x.lock:3: line 3 must be '# digest="):
        parse_lock(lines[0] + lines[1] + "".join(lines[3:]), "x.lock")
    with pytest.raises(LockError, match=r"^x.lock:1: lock format v3 is not one this Strata reads"):
        parse_lock(LOCK.render().replace("lock v2", "lock v3"), "x.lock")


def test_a_wheel_url_must_end_in_a_plain_wheel_file_name() -> None:
    for url in ("https://files.pythonhosted.org/p/..", "https://files.pythonhosted.org/p/numpy.tar.gz"):
        bad = dataclasses.replace(LOCK, wheels=(dataclasses.replace(WHEELS[1], url=url),))
        with pytest.raises(LockError, match=r"^x.lock:4: .* does not name a wheel file"):
            parse_lock(bad.render(), "x.lock")


def test_v1_locks_are_read_and_marked_as_the_old_format() -> None:
    v1 = LOCK.pinned_text()
    assert v1.startswith("# strata lock v1 node=tf-x profile=hermetic\n# inputs=sha256:")
    lock = parse_lock(v1, "x.lock")
    assert lock.format_version == 1 and lock.wheels == LOCK.wheels
    assert [w.line for w in lock.wheels] == [3, 4]
    assert dataclasses.replace(lock, format_version=2).render() == LOCK.render()


def test_pinned_text_does_not_depend_on_the_file_format() -> None:
    """Content hashes are computed from pinned_text: the v1 layout, so v1 -> v2 moved no content hash."""
    assert parse_lock(LOCK.render(), "x").pinned_text() == parse_lock(LOCK.pinned_text(), "y").pinned_text()


def test_committed_locks_verify() -> None:
    paths = sorted((REPO / "locks").rglob("*.lock"))
    assert paths
    for path in paths:
        lock = read_lock(path)
        assert lock is not None and lock.format_version == 2, path
        assert lock.render() == path.read_text(), path
