"""An OCI layout as an image store: put under tags, find by content tag, get back the same image."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from builder.errors import StrataError
from builder.oci.archive import blob_path, read_image
from builder.oci.canonical import CanonicalPolicy, canonicalize_archive
from builder.oci.layout_store import LayoutStore
from builder.oci.media_types import OCI_LAYER_TAR


def test_put_then_find_and_get_give_the_same_image(docker_archive, member, tmp_path):
    saved = read_image(docker_archive([member("etc/a", b"1")], [member("etc/b", b"2" * 5000)]))
    store = LayoutStore(tmp_path / "layout")

    stored = store.put(saved, ["s/t:h-abc", "s/t:1.0"])

    found = store.find("s/t:h-abc")
    assert found == stored.ref and store.find("s/t:h-other") is None
    image = store.get("s/t:1.0")
    assert image.config_bytes == saved.config_bytes and image.diff_ids == saved.diff_ids
    assert store.get(stored.ref).config_digest == saved.config_digest
    # Layers are stored uncompressed: each blob's digest is its diff_id, and it is the layer's tar.
    assert [layer.digest for layer in image.layers] == list(saved.diff_ids)
    assert {layer.media_type for layer in image.layers} == {OCI_LAYER_TAR}
    for diff_id in saved.diff_ids:
        data = (tmp_path / "layout" / blob_path(diff_id)).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id
    assert stored.size == sum(layer.size or 0 for layer in image.layers)


def test_a_second_image_keeps_the_first_and_a_tag_moves(docker_archive, member, tmp_path):
    one = read_image(docker_archive([member("a", b"1")]))
    two = read_image(docker_archive([member("a", b"2")]))
    store = LayoutStore(tmp_path / "layout")
    store.put(one, ["s/one:1", "s/latest:1"])
    store.put(two, ["s/two:1", "s/latest:1"])

    assert store.get("s/one:1").config_digest == one.config_digest
    assert store.get("s/two:1").config_digest == two.config_digest
    assert store.get("s/latest:1").config_digest == two.config_digest
    loads = json.loads((tmp_path / "layout" / "manifest.json").read_bytes())
    assert sorted(tag for entry in loads for tag in entry["RepoTags"]) == ["s/latest:1", "s/one:1", "s/two:1"]


def test_a_layer_that_is_not_its_diff_id_is_not_stored(docker_archive, member, tmp_path):
    saved = read_image(docker_archive([member("a", b"1")]))
    lying = dataclasses.replace(
        saved, layers=(dataclasses.replace(saved.layers[0], diff_id="sha256:" + "0" * 64),)
    )
    with pytest.raises(StrataError, match="layer 0 hashes to sha256:.*its diff_id is sha256:0000"):
        LayoutStore(tmp_path / "layout").put(lying, ["s/t:1"])
    assert not (tmp_path / "layout" / blob_path("sha256:" + "0" * 64)).exists()


def test_a_canonical_layout_is_a_store_too(docker_archive, member, tmp_path):
    policy = CanonicalPolicy(compression="none")
    canonical = canonicalize_archive(
        docker_archive([member("a", b"1")]), tmp_path / "c", policy, tag="s/t:h-1"
    )
    store = LayoutStore(tmp_path / "c")
    assert store.find("s/t:h-1") == canonical.manifest_digest
    assert store.get("s/t:h-1").config_digest == canonical.config_digest
