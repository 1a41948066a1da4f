"""Pure parts of pushing: reading a docker-save archive through the shared image reader, compressing its
layers checked against their diff_ids, building deterministic manifests."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import sysconfig
import tarfile
import threading
import time
from pathlib import Path

import pytest

from builder.errors import StrataError
from builder.oci.archive import read_image
from builder.oci.image import make_image
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


def real_layers() -> list[bytes]:
    """Layer tars of real files (this Python's standard library and extension modules), of uneven sizes."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    groups = [
        ["json"],
        ["email", "asyncio"],
        ["ctypes", "logging", "http", "multiprocessing"],
        ["encodings", "xml", "unittest"],
        ["json"],
    ]
    layers = []
    for names in groups:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                if (stdlib / name).exists():
                    tar.add(
                        stdlib / name,
                        arcname=name,
                        filter=lambda info: info if "__pycache__" not in info.name else None,
                    )
        layers.append(out.getvalue())
    return layers


def test_digests_are_the_same_for_one_and_many_workers(tmp_path):
    config = make_archive(tmp_path / "a.tar", real_layers())  # the last layer repeats the first one
    image = read_image(tmp_path / "a.tar")
    one = compress_layers(image, CompressedLayerCache(tmp_path / "one"), workers=1)
    many = compress_layers(image, CompressedLayerCache(tmp_path / "many"), workers=3)
    assert [layer.diff_id for layer in one] == json.loads(config)["rootfs"]["diff_ids"]
    assert [(c.digest, c.size, c.uncompressed_size) for c in many] == [
        (c.digest, c.size, c.uncompressed_size) for c in one
    ]
    assert [c.path.read_bytes() for c in many] == [c.path.read_bytes() for c in one]
    assert sum(c.size for c in one) > 100_000  # real data, not a toy
    assert build_manifest(image.config_digest, len(config), many, {}) == build_manifest(
        image.config_digest, len(config), one, {}
    )


class _Layers:
    """Layer storage for tests: layer i streams `bodies[i]` slowly, or raises `fail` on its first read."""

    def __init__(self, bodies: list[bytes], fail: dict[int, Exception]) -> None:
        self.bodies, self.fail = bodies, fail

    @contextlib.contextmanager
    def open_layer_tar(self, index: int):  # type: ignore[no-untyped-def]
        body, error = self.bodies[index], self.fail.get(index)

        class Slow(io.BytesIO):
            def read(self, size: int = -1) -> bytes:
                if error is not None:
                    raise error
                time.sleep(0.01)
                return super().read(min(size, 4096) if size > 0 else 4096)

        yield Slow(body)

    def open_layer(self, index: int):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def stored_layer_size(self, index: int) -> tuple[int, bool]:
        return len(self.bodies[index]), False


def fake_image(bodies: list[bytes], fail: dict[int, Exception]):  # type: ignore[no-untyped-def]
    diff_ids = ["sha256:" + hashlib.sha256(body).hexdigest() for body in bodies]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    return make_image("app:1", config, _Layers(bodies, fail), len(bodies))


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(5, "Input/output error"), r"app:1: layer 1: \[Errno 5\] Input/output error"),
        (
            StrataError("app:1: layer 1 could not be read from the engine"),
            "could not be read from the engine",
        ),
    ],
)
def test_a_failing_layer_is_one_error_line_and_leaves_no_partial_entry(tmp_path, error, message):
    slow = os.urandom(4096) * 200  # 200 slow reads: still running when layer 1 fails
    image = fake_image([slow, b"broken", slow + b"2", b"queued"], {1: error})
    cache = CompressedLayerCache(tmp_path / "cache")
    started = time.monotonic()
    with pytest.raises(StrataError, match=message) as caught:
        compress_layers(image, cache, workers=2)
    assert "\n" not in str(caught.value)
    assert time.monotonic() - started < 1.5  # the slow layer stopped instead of finishing (2 s of reads)
    leftovers = (
        sorted(p.name for p in (tmp_path / "cache").iterdir()) if (tmp_path / "cache").exists() else []
    )
    assert not [name for name in leftovers if name.startswith(".partial")]
    for layer in image.layers:  # whatever is cached is complete
        entry = cache.get(layer.diff_id)
        assert entry is None or hashlib.sha256(gzip.decompress(entry.path.read_bytes())).hexdigest() == (
            layer.diff_id.removeprefix("sha256:")
        )
    assert cache.get(image.layers[0].diff_id) is None
    assert not [t for t in threading.enumerate() if t.name.startswith(("strata-gzip", "strata-layer-read"))]


def test_one_worker_or_many_give_the_same_error(tmp_path):
    image = fake_image([b"fine", b"broken"], {1: OSError(5, "Input/output error")})
    for workers in (1, 2):
        with pytest.raises(StrataError, match=r"^app:1: layer 1: \[Errno 5\] Input/output error$"):
            compress_layers(image, CompressedLayerCache(tmp_path / f"cache{workers}"), workers=workers)
