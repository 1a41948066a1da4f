"""images.lock.json: image references, stable rendering, merging, the plan digest of a lock."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from registry_sync.publish.images_lock import (
    ImageRef,
    ImagesLock,
    LockFileError,
    lock_plan_digest,
    parse_images_lock,
    read_images_lock,
    write_images_lock,
)

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        (
            "127.0.0.1:5000/strata/base:bookworm-1700000000",
            "127.0.0.1:5000",
            "strata/base",
            "bookworm-1700000000",
            None,
        ),
        (f"127.0.0.1:5000/strata/base@{D}", "127.0.0.1:5000", "strata/base", None, D),
        (
            f"127.0.0.1:5000/mirror/nvidia/cuda:11.8.0-cudnn8@{D}",
            "127.0.0.1:5000",
            "mirror/nvidia/cuda",
            "11.8.0-cudnn8",
            D,
        ),
        ("ubuntu:22.04", None, "ubuntu", "22.04", None),
        ("busybox", None, "busybox", None, None),
        ("localhost/app:1", "localhost", "app", "1", None),
        ("registry.example.com/team/app", "registry.example.com", "team/app", None, None),
        ("[::1]:5000/strata/base:x", "[::1]:5000", "strata/base", "x", None),
    ],
)
def test_parse_reference(text, registry, repository, tag, digest):
    ref = ImageRef.parse(text)
    assert ref == ImageRef(registry, repository, tag, digest)
    assert str(ref) == text


@pytest.mark.parametrize(
    "text", ["$BASE", "${REGISTRY}/x:1", "{{ .Values.image }}", "Upper/case:1", "a:b:c", "x@sha256:zz", ""]
)
def test_not_a_reference(text):
    assert ImageRef.parse(text) is None


def test_render_is_stable_sorted_and_has_no_time(kit):
    a = kit.locked("127.0.0.1:5000/t/b:2", node="b")
    b = kit.locked("127.0.0.1:5000/t/a:1", node="a")
    one = ImagesLock({a.reference: a, b.reference: b}).render()
    two = ImagesLock({b.reference: b, a.reference: a}).render()
    assert one == two
    doc = json.loads(one)
    assert list(doc["images"]) == ["127.0.0.1:5000/t/a:1", "127.0.0.1:5000/t/b:2"]
    assert doc["images"]["127.0.0.1:5000/t/a:1"]["size"] == {
        "compressed": 612_345_678,
        "uncompressed": 1_812_345_678,
    }
    assert "time" not in one and "date" not in one


def test_round_trip(kit, tmp_path):
    entry = kit.locked("127.0.0.1:5000/t/a:1", parent="p", cells=("c1", "c2"), uncompressed_size=None)
    lock = ImagesLock({entry.reference: entry})
    path = tmp_path / "images.lock.json"
    assert write_images_lock(path, lock) is True
    assert read_images_lock(path) == lock
    assert write_images_lock(path, lock) is False  # same bytes: not rewritten


def test_merge_replaces_and_drops_tags_no_longer_planned(kit):
    old_a = kit.locked("r/a:1", digest=D)
    old_gone = kit.locked("r/gone:1")
    new_a = kit.locked("r/a:1")
    merged = ImagesLock({old_a.reference: old_a, old_gone.reference: old_gone}).merged(
        [new_a], keep={"r/a:1"}
    )
    assert merged.images == {"r/a:1": new_a}


def test_lookup_by_tag_or_by_digest(kit):
    entry = kit.locked("127.0.0.1:5000/t/a:1")
    lock = ImagesLock({entry.reference: entry})
    assert lock.lookup(ImageRef.require("127.0.0.1:5000/t/a:1", "x")) == entry
    assert lock.lookup(ImageRef.require(f"127.0.0.1:5000/t/a@{entry.digest}", "x")) == entry
    assert lock.lookup(ImageRef.require(f"127.0.0.1:5000/t/other@{entry.digest}", "x")) is None
    assert lock.lookup(ImageRef.require("t/a:1", "x")) is None


def test_lock_plan_digest_equals_plan_digest_for_a_full_lock(kit):
    from builder.plan.graph import plan_digest

    nodes = [kit.node("base", "base", "t/base", "1"), kit.node("tools", "tools", "t/tf", "1", parent="base")]
    plan = kit.plan(nodes)
    lock = ImagesLock(
        {
            f"r/{n.id}:1": kit.locked(f"r/{n.id}:1", node=n.id, content_hash=n.content_hash)
            for n in reversed(nodes)
        }
    )
    assert lock_plan_digest(lock, [n.id for n in plan.nodes]) == plan_digest(plan)
    assert plan_digest(plan) == hashlib.sha256("".join(n.content_hash for n in nodes).encode()).hexdigest()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ('{"schema": 2, "images": {}}', "schema 1"),
        ('{"schema": 1, "images": {"r/a:1": {}}}', "r/a:1"),
    ],
)
def test_bad_lock_files_name_the_problem(text, message):
    with pytest.raises(LockFileError, match=message):
        parse_images_lock(text, "images.lock.json")


def test_missing_lock(tmp_path):
    with pytest.raises(LockFileError, match="strata push"):
        read_images_lock(tmp_path / "images.lock.json")
    assert read_images_lock(tmp_path / "images.lock.json", missing_ok=True).images == {}


def _entry(**change):
    entry = {
        "digest": "sha256:" + "a" * 64,
        "config_digest": "sha256:" + "b" * 64,
        "node": "tools-tf2.13.1-cpu",
        "layer": "tools",
        "parent": "tf2.13.1-cpu-py3.11",
        "cells": ["tf2.13.1-cpu"],
        "content_hash": "c" * 64,
        "profile": "hermetic",
        "versions": {"os": "bookworm", "cuda": None},
        "size": {"compressed": 1, "uncompressed": None},
    }
    entry.update(change)
    return entry


REF = "127.0.0.1:5000/strata/tensorflow:2.13.1-cpu"


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (
            {REF: _entry(digest="sha256:" + "a" * 64 + "\nRUN curl http://x | sh")},
            rf"images\['{REF}'\]\.digest: must be sha256: followed by 64 lower-case hex digits, got ",
        ),
        ({REF: _entry(digest="")}, r"\.digest: must be sha256: followed by 64 lower-case hex digits, got ''"),
        ({REF: _entry(digest=7)}, r"\.digest: must be string, got int 7"),
        ({REF: _entry(content_hash="xyz")}, r"\.content_hash: must be 64 lower-case hex digits"),
        ({REF: _entry(size={"compressed": "1"})}, r"\.size\.compressed: must be integer, got str '1'"),
        ({REF: _entry(surprise=1)}, r"\.surprise: unknown key"),
        ({"not a ref": _entry()}, r"images\['not a ref'\] \(key\): must be an image reference with a tag"),
        (
            {REF + "@sha256:" + "a" * 64: _entry()},
            r"\(key\): must be an image reference with a tag and no digest",
        ),
    ],
)
def test_the_whole_lock_is_checked_against_its_schema(images, message):
    text = json.dumps({"schema": 1, "images": images})
    with pytest.raises(LockFileError) as info:
        parse_images_lock(text, "images.lock.json")
    lines = str(info.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith("images.lock.json: images["), lines
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000, "nested too deeply"),
        ('{"schema": 1, "schema": 1, "images": {}}', "duplicate key 'schema'"),
        ('{"schema": 1, "images": {"r/a:1": {"size": {"compressed": NaN}}}}', "NaN is not a JSON number"),
        ('{"schema": 1, "images": {}, "n": ' + "9" * 5000 + "}", "not valid JSON"),
    ],
)
def test_json_that_could_hurt_the_reader_is_one_error(text, message):
    with pytest.raises(LockFileError, match=message):
        parse_images_lock(text, "images.lock.json")


def test_a_lock_that_is_not_utf8_or_not_a_file_is_one_error(tmp_path):
    path = tmp_path / "images.lock.json"
    path.write_bytes(b'{"schema": 1, "images": {"\xff": {}}}')
    with pytest.raises(LockFileError, match=r"not UTF-8 text \(byte 0xff at offset 26\)"):
        read_images_lock(path)
    with pytest.raises(LockFileError, match="not a regular file"):
        read_images_lock(tmp_path)


def _entry_doc(**extra):
    return {
        "digest": D,
        "config_digest": D,
        "node": "base-bookworm",
        "layer": "base",
        "content_hash": "c" * 64,
        **extra,
    }


def test_evidence_digests_are_optional_and_round_trip():
    ref = "127.0.0.1:5000/strata/base:bookworm-r1"
    evidence = {
        "provenance": "sha256:" + "1" * 64,
        "sbom": "sha256:" + "2" * 64,
        "signature": "sha256:" + "3" * 64,
    }
    plain = parse_images_lock(json.dumps({"schema": 1, "images": {ref: _entry_doc()}}), "x")
    assert plain.images[ref].evidence == {} and '"evidence"' not in plain.render()
    signed = parse_images_lock(json.dumps({"schema": 1, "images": {ref: _entry_doc(evidence=evidence)}}), "x")
    assert signed.images[ref].evidence == evidence
    assert parse_images_lock(signed.render(), "x") == signed


@pytest.mark.parametrize(
    "evidence", [{"sbom": "sha256:xyz"}, {"other": "sha256:" + "1" * 64}, ["sha256:" + "1" * 64], {"sbom": 1}]
)
def test_malformed_evidence_is_refused(evidence):
    ref = "127.0.0.1:5000/strata/base:bookworm-r1"
    with pytest.raises(LockFileError, match="evidence"):
        parse_images_lock(json.dumps({"schema": 1, "images": {ref: _entry_doc(evidence=evidence)}}), "x")


# ---------------------------------------------------------------------------------------------- release, aliases

TAG = "127.0.0.1:5000/strata/tensorflow:2.13.1-cpu-r2"
ALIAS = "127.0.0.1:5000/strata/tensorflow:2.13-cpu"


def _aliased(**alias_doc):
    doc = {"digest": D, "tag": TAG, **alias_doc}
    return {"schema": 1, "release": 2, "images": {TAG: _entry_doc()}, "aliases": {ALIAS: doc}}


def test_release_and_aliases_round_trip_and_an_alias_looks_up_its_entry():
    lock = parse_images_lock(json.dumps(_aliased()), "x")
    assert (
        lock.release == 2 and lock.aliases[ALIAS].tag == TAG and lock.aliases[ALIAS].pinned == f"{ALIAS}@{D}"
    )
    assert parse_images_lock(lock.render(), "x") == lock
    entry = lock.lookup(ImageRef.parse(ALIAS))
    assert entry is not None and entry.reference == TAG
    plain = ImagesLock(lock.images)
    assert '"aliases"' not in plain.render() and '"release"' not in plain.render()


def test_aliases_follow_their_entry_through_merge_and_evidence(kit):
    lock = parse_images_lock(json.dumps(_aliased()), "x")
    assert lock.merged([], keep={TAG}).aliases == lock.aliases
    assert (
        lock.merged([], keep=set()).aliases == {}
    )  # the tag left the matrix: its alias cannot be vouched for
    moved = kit.locked(TAG, node="base-bookworm", digest="sha256:" + "9" * 64)
    assert lock.merged([moved]).aliases == {}  # a force-pushed tag: the alias named the old digest
    assert lock.with_evidence({TAG: {"sbom": D}}).aliases == lock.aliases
    with pytest.raises(LockFileError, match="is not an entry of the lock"):
        ImagesLock(lock.images).with_aliases(
            [lock.aliases[ALIAS].__class__(ALIAS, TAG, "sha256:" + "8" * 64)], 2
        )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"release": True}, r"^x: release: must be integer, got bool True$"),
        ({"release": "2"}, r"^x: release: must be integer, got str '2'$"),
        ({"release": -1}, r"^x: release: Input should be greater than or equal to 0$"),
        ({"release": 10**7}, r"^x: release: Input should be less than or equal to 1000000$"),
        ({"aliases": []}, r"^x: aliases: must be dictionary, got list \[\]$"),
        ({"aliases": {ALIAS: {"tag": TAG}}}, r"\.digest: missing$"),
        ({"aliases": {ALIAS: {"tag": TAG, "digest": D, "x": 1}}}, r"\.x: unknown key$"),
        (
            {"aliases": {ALIAS: {"tag": TAG + "x", "digest": D}}},
            r"\.tag: '.*-r2x' is not an entry of images$",
        ),
        (
            {"aliases": {ALIAS: {"tag": TAG, "digest": "sha256:" + "0" * 64}}},
            r"\.digest: sha256:0+ is not the digest",
        ),
        (
            {"aliases": {ALIAS: {"tag": f"{TAG}@{D}", "digest": D}}},
            r"\.tag: must be an image reference with a tag",
        ),
        ({"aliases": {ALIAS + "\nRUN x": {"tag": TAG, "digest": D}}}, r"\(key\): must be an image reference"),
        (
            {"aliases": {TAG: {"tag": TAG, "digest": D}}},
            r"\(key\): is a version tag of images, not an alias$",
        ),
        (
            {"aliases": {"127.0.0.1:5000/strata/base:2.13-cpu": {"tag": TAG, "digest": D}}},
            r"\.tag: .* is in another repository than the alias$",
        ),
    ],
)
def test_malformed_release_or_aliases_are_one_line_each(doc, message):
    with pytest.raises(LockFileError) as caught:
        parse_images_lock(json.dumps({**_aliased(), **doc}), "x")
    errors = getattr(caught.value, "errors", [caught.value])
    assert len(errors) == 1 and "\n" not in str(errors[0]), errors
    assert re.search(message, str(errors[0])), str(errors[0])


def test_a_lock_with_too_many_aliases_is_refused():
    aliases = {f"{ALIAS}{i}": {"tag": TAG, "digest": D} for i in range(10_001)}
    with pytest.raises(LockFileError, match=r"aliases: Dictionary should have at most 10000 items"):
        parse_images_lock(json.dumps({**_aliased(), "aliases": aliases}), "x")
