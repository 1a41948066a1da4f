"""Pure parts of pushing: reading a docker-save archive through the shared image reader, compressing its
layers checked against their diff_ids, building deterministic manifests."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from builder.errors import StrataError
from builder.oci.archive import read_image
from registry_sync.publish.compress import CompressedLayer, CompressedLayerCache
from registry_sync.publish.push import build_manifest, compress_layers


def make_archive(path, layers, *, config_name=None, diff_ids=None):
    diff_ids = diff_ids or ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_name = config_name or hashlib.sha256(config).hexdigest() + ".json"
    members = {config_name: config}
    names = []
    for i, layer in enumerate(layers):
        names.append(f"{i}/layer.tar")
        members[names[-1]] = layer
    members["manifest.json"] = json.dumps([{"Config": config_name, "RepoTags": [], "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return config


def test_reads_config_and_layers(tmp_path):
    config = make_archive(tmp_path / "a.tar", [b"one", b"two"])
    image = read_image(tmp_path / "a.tar")
    assert image.config_bytes == config
    assert [layer.size for layer in image.layers] == [3, 3]
    with image.open_layer_tar(1) as layer:
        assert layer.read() == b"two"
    assert image.config_digest == "sha256:" + hashlib.sha256(config).hexdigest()


def test_config_with_wrong_name_is_refused(tmp_path):
    make_archive(tmp_path / "a.tar", [b"one"], config_name="f" * 64 + ".json")
    with pytest.raises(StrataError, match="hashes to"):
        read_image(tmp_path / "a.tar")


def test_config_listing_other_layers_than_the_archive_is_refused(tmp_path):
    make_archive(tmp_path / "a.tar", [b"one"], diff_ids=["sha256:" + "0" * 64, "sha256:" + "1" * 64])
    with pytest.raises(StrataError, match="config lists 2 layers but the archive has 1"):
        read_image(tmp_path / "a.tar")


def test_layer_that_does_not_match_its_diff_id_is_refused_and_not_cached(tmp_path):
    make_archive(tmp_path / "a.tar", [b"one"], diff_ids=["sha256:" + "0" * 64])
    image = read_image(tmp_path / "a.tar")
    with pytest.raises(StrataError, match=r"a.tar: layer 0: layer content hashes to sha256:7692"):
        compress_layers(image, CompressedLayerCache(tmp_path / "cache"))
    assert CompressedLayerCache(tmp_path / "cache").get("sha256:" + "0" * 64) is None


def test_a_cached_layer_is_not_read(tmp_path):
    make_archive(tmp_path / "a.tar", [b"one"])
    cache = CompressedLayerCache(tmp_path / "cache")
    [first] = compress_layers(read_image(tmp_path / "a.tar"), cache)
    (tmp_path / "a.tar").unlink()
    make_archive(tmp_path / "a.tar", [b"???"], diff_ids=[first.diff_id])  # same diff_id, unreadable as it
    assert compress_layers(read_image(tmp_path / "a.tar"), cache) == [first]


def test_not_an_archive(tmp_path):
    (tmp_path / "x.tar").write_text("nope")
    with pytest.raises(StrataError, match="x.tar"):
        read_image(tmp_path / "x.tar")


def test_manifest_bytes_are_deterministic_and_schema2(tmp_path):
    layers = [CompressedLayer("sha256:" + "1" * 64, 10, "sha256:" + "2" * 64, 7, tmp_path / "l")]
    one = build_manifest("sha256:" + "3" * 64, 99, layers, {"b": "2", "a": "1"})
    two = build_manifest("sha256:" + "3" * 64, 99, layers, {"a": "1", "b": "2"})
    assert one == two
    parsed = json.loads(one)
    assert parsed["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert parsed["config"] == {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "size": 99,
        "digest": "sha256:" + "3" * 64,
    }
    assert parsed["layers"][0]["digest"] == "sha256:" + "2" * 64
    assert list(parsed["annotations"]) == ["a", "b"]
