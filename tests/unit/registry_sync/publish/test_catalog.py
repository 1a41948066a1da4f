"""strata catalog: one Markdown page of every tag, packages from the node's and its ancestors' locks."""

from __future__ import annotations

from registry_sync.publish.catalog import human_size, render_catalog, sources_from_plans, write_catalog
from registry_sync.publish.images_lock import ImagesLock

TOOLS = "127.0.0.1:5000/strata/tensorflow:2.13.1-cpu-py3.11-bookworm"
FRAMEWORK = "127.0.0.1:5000/strata/tensorflow-core:2.13.1-cpu-py3.11-bookworm"


def fixture_plan_and_lock(kit, *, stale: bool = False):
    framework = kit.node(
        "tf2.13.1-cpu-py3.11",
        "framework",
        "strata/tensorflow-core",
        "2.13.1-cpu-py3.11-bookworm",
        cells=("tf2.13.1-cpu",),
        wheels=(("tensorflow-cpu", "2.13.1"), ("numpy", "1.24.3")),
    )
    tools = kit.node(
        "tools-tf2.13.1-cpu",
        "tools",
        "strata/tensorflow",
        "2.13.1-cpu-py3.11-bookworm",
        parent=framework.id,
        cells=("tf2.13.1-cpu",),
        wheels=(("pandas", "2.0.3"), ("jupyterlab", "4.0.9")),
        aliases=("2.13-cpu", "latest-cpu"),
    )
    plan = kit.plan([framework, tools])
    entries = [
        kit.locked(FRAMEWORK, node=framework.id, layer="framework", content_hash=framework.content_hash),
        kit.locked(
            TOOLS,
            node=tools.id,
            parent=framework.id,
            content_hash="f" * 64 if stale else tools.content_hash,
        ),
    ]
    return plan, ImagesLock({e.reference: e for e in entries})


def test_page_lists_every_tag_with_pull_line_and_packages_of_the_chain(kit):
    plan, lock = fixture_plan_and_lock(kit)
    page = render_catalog(lock, sources_from_plans(lock, {"hermetic": plan}))
    tools_section = page[page.index("## strata/tensorflow:2.13.1-cpu-py3.11-bookworm") :]
    tools_section = tools_section[: tools_section.find("\n## ") if "\n## " in tools_section else None]
    assert f"docker pull {lock.images[TOOLS].pinned}" in tools_section
    assert "### Python packages (4)" in tools_section
    assert "| jupyterlab | 4.0.9 | tools (`tools-tf2.13.1-cpu`) |" in tools_section
    assert "| tensorflow-cpu | 2.13.1 | framework (`tf2.13.1-cpu-py3.11`) |" in tools_section
    assert "`2.13-cpu`, `latest-cpu`" in tools_section
    assert "612.3 MB compressed, 1.81 GB uncompressed" in tools_section
    # The table of contents lists the full TensorFlow image before the framework layer it is built on.
    assert page.index("[`strata/tensorflow:") < page.index("[`strata/tensorflow-core:")


def test_stale_locks_are_not_presented_as_the_image_contents(kit):
    plan, lock = fixture_plan_and_lock(kit, stale=True)
    page = render_catalog(lock, sources_from_plans(lock, {"hermetic": plan}))
    assert "_Package list unavailable: the matrix or locks changed since this image was published" in page
    assert page.count("### Python packages") == 1  # only the framework image's list


def test_unknown_profile_or_node(kit):
    _plan, lock = fixture_plan_and_lock(kit)
    assert set(sources_from_plans(lock, {}).values()) == {"profile 'hermetic' is not in matrix.yaml"}
    other = kit.plan([])
    assert "no longer in the matrix" in str(sources_from_plans(lock, {"hermetic": other})[TOOLS])


def test_same_inputs_same_bytes(kit, tmp_path):
    plan, lock = fixture_plan_and_lock(kit)
    text = render_catalog(lock, sources_from_plans(lock, {"hermetic": plan}))
    assert text == render_catalog(lock, sources_from_plans(lock, {"hermetic": plan}))
    out = tmp_path / "docs" / "catalog.md"
    assert write_catalog(out, text) is True
    assert write_catalog(out, text) is False


def test_human_size():
    assert [human_size(n) for n in (None, 999, 612_345_678, 1_812_345_678)] == [
        "–",
        "1.0 kB",
        "612.3 MB",
        "1.81 GB",
    ]


def test_cli_on_the_default_matrix_lists_locked_wheels_and_debian_packages(kit, tmp_path, capsys):
    from pathlib import Path

    from builder.matrix.load import load_matrix
    from builder.plan.graph import build_plan
    from cli.main import main
    from registry_sync.publish.images_lock import write_images_lock

    repo = Path(__file__).resolve().parents[4]
    plan = build_plan(load_matrix(repo / "matrix.yaml"))
    tools = plan.node("tools-tf2.13.1-cpu")
    entry = kit.locked(tools.tags[0], node=tools.id, parent=tools.parent, content_hash=tools.content_hash)
    lock_path = tmp_path / "images.lock.json"
    write_images_lock(lock_path, ImagesLock({entry.reference: entry}))
    out = tmp_path / "catalog.md"

    assert (
        main(["catalog", "-f", str(repo / "matrix.yaml"), "--lock", str(lock_path), "--out", str(out)]) == 0
    )
    assert capsys.readouterr().out == f"{out}: written (1 tags)\n"
    page = out.read_text()
    assert "| tensorflow-cpu | 2.13.1 | framework (`tf2.13.1-cpu-py3.11`) |" in page
    assert "<summary>Debian packages of <code>base-bookworm</code>" in page
    assert "| python3.11 |" in page
