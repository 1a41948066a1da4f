"""strata sync: endpoint parsing and what a SRC/DST/--only combination copies (no registry needed)."""

from __future__ import annotations

import pytest

from registry_sync.publish.sync import Endpoint, SyncError, SyncItem, parse_endpoint, plan_sync

D = "sha256:" + "cd" * 32


def no_tags() -> list[str]:
    raise AssertionError("tags must not be listed for a single image")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/strata/base:x", Endpoint("127.0.0.1:5000", "strata/base", "x")),
        (
            f"127.0.0.1:5000/mirror/nvidia/cuda:11.8@{D}",
            Endpoint("127.0.0.1:5000", "mirror/nvidia/cuda", "11.8", D),
        ),
        ("docker.io/ubuntu:22.04", Endpoint("registry-1.docker.io", "library/ubuntu", "22.04")),
        (f"docker.io/nvidia/cuda@{D}", Endpoint("registry-1.docker.io", "nvidia/cuda", None, D)),
    ],
)
def test_parse_endpoint(text, expected):
    assert parse_endpoint(text, "SRC") == expected


@pytest.mark.parametrize("text", ["ubuntu:22.04", "strata/base", "$X/y"])
def test_endpoint_needs_a_registry(text):
    with pytest.raises(SyncError, match="host:port/repository"):
        parse_endpoint(text, "SRC")


def test_single_tag_keeps_or_renames_it():
    src = parse_endpoint("a:1/r:v1", "SRC")
    assert plan_sync(src, parse_endpoint("b:2/r", "DST"), None, no_tags) == [SyncItem("v1", ("v1",))]
    assert plan_sync(src, parse_endpoint("b:2/r:v9", "DST"), None, no_tags) == [SyncItem("v1", ("v9",))]


def test_digest_copies_by_digest_and_tags_only_when_named():
    assert plan_sync(parse_endpoint(f"a:1/r@{D}", "SRC"), parse_endpoint("b:2/m", "DST"), None, no_tags) == [
        SyncItem(D, ())
    ]
    assert plan_sync(
        parse_endpoint(f"a:1/r:t@{D}", "SRC"), parse_endpoint("b:2/m", "DST"), None, no_tags
    ) == [SyncItem(D, ("t",))]


def test_globs_select_source_tags():
    items = plan_sync(
        parse_endpoint("a:1/r", "SRC"),
        parse_endpoint("b:2/r", "DST"),
        ["2.13*", "h-*"],
        lambda: ["2.10", "2.13.1", "h-1", "latest"],
    )
    assert items == [SyncItem("2.13.1", ("2.13.1",)), SyncItem("h-1", ("h-1",))]


@pytest.mark.parametrize(
    ("src", "dst", "only", "message"),
    [
        ("a:1/r", "b:2/r", None, "names no tag or digest"),
        ("a:1/r", "b:2/r:x", ["*"], "names a tag"),
        ("a:1/r:x", "b:2/r", ["*"], "already names one image"),
        ("a:1/r:x", f"b:2/r@{D}", None, "names a digest"),
        ("a:1/r", "b:2/r", ["nope*"], "no tag of a:1/r matches"),
    ],
)
def test_bad_combinations(src, dst, only, message):
    with pytest.raises(SyncError, match=message):
        plan_sync(parse_endpoint(src, "SRC"), parse_endpoint(dst, "DST"), only, lambda: ["1"])
