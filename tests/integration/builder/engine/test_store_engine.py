"""The engine as an image store, against the real engine: find by content tag and label, get from storage or
`docker save`, put an image read from a file (loaded through a layout), tag."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from builder.engine.store import EngineStore
from builder.engine.transfer import save_image
from builder.oci.archive import read_image
from builder.plan.graph import LABEL_HASH

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def labelled(engine: Any, namespace: str, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`<namespace>:h-abc`, labelled with content hash `abc`, as a build leaves a node."""
    context = tmp_path_factory.mktemp("labelled")
    (context / "Dockerfile").write_text(f"FROM {base_image}\nLABEL {LABEL_HASH}=abc\nRUN echo x > /x\n")
    ref = f"{namespace}:h-abc"
    engine.images.build(path=str(context), tag=ref, rm=True)
    return ref


def test_find_needs_the_content_tag_and_a_label_that_agrees(
    engine: Any, namespace: str, labelled: str
) -> None:
    store = EngineStore(engine)
    assert store.find(labelled) == engine.images.get(labelled).id
    assert store.find(f"{namespace}:h-nothing-tagged-so") is None
    engine.images.get(labelled).tag(namespace, "h-def")  # the same image under another content tag
    assert store.find(f"{namespace}:h-def") is None


def test_an_image_from_a_file_is_put_under_its_config_digest_and_tagged(
    engine: Any, namespace: str, labelled: str, tmp_path: Path
) -> None:
    image = read_image(save_image(engine, labelled, tmp_path / "saved.tar"))
    engine.images.remove(labelled)
    with EngineStore(engine) as store:
        stored = store.put(image, [f"{namespace}:put-1", f"{namespace}:put-2"])
    assert stored.ref == image.config_digest
    loaded = engine.images.get(f"{namespace}:put-2")
    assert loaded.id == image.config_digest and f"{namespace}:put-1" in loaded.tags
    assert stored.size == int(loaded.attrs["Size"])
    engine.images.get(stored.ref).tag(namespace, "h-abc")  # as the labelled fixture left it


def test_a_saved_image_lives_as_long_as_it_is_read(engine: Any, labelled: str, tmp_path: Path) -> None:
    store = EngineStore(engine, layer_read="save", scratch=tmp_path)
    image = store.get(labelled)
    assert image.label == labelled and json.loads(image.config_bytes)["config"]["Labels"][LABEL_HASH] == "abc"
    assert len(list(tmp_path.iterdir())) == 1
    with image.open_layer(len(image.layers) - 1) as top:
        assert "x" in top.getnames()
    del image, top
    assert list(tmp_path.iterdir()) == []  # the archive went with the image
    store.get(labelled)
    store.close()
    assert list(tmp_path.iterdir()) == []
