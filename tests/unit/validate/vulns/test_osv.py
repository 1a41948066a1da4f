"""OSV advisory files: the range semantics of the PyPI ecosystem, withdrawn records, names, other ecosystems."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

from validate.vulns.osv import AdvisoryFileError, in_range, matches, read_advisories

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def records():
    return read_advisories(DATA / "advisories.osv.json").records


@pytest.mark.parametrize(
    ("version", "events", "affected"),
    [
        ("1.0", [{"introduced": "0"}, {"fixed": "1.1"}], True),
        ("1.1", [{"introduced": "0"}, {"fixed": "1.1"}], False),  # fixed is exclusive
        ("0.9", [{"introduced": "1.0"}, {"fixed": "1.1"}], False),
        ("1.0", [{"introduced": "1.0"}, {"fixed": "1.1"}], True),  # introduced is inclusive
        ("2.0", [{"introduced": "1.0"}, {"last_affected": "2.0"}], True),  # last_affected is inclusive
        ("2.0.1", [{"introduced": "1.0"}, {"last_affected": "2.0"}], False),
        ("2.2", [{"introduced": "0"}, {"fixed": "1.0"}, {"introduced": "2.0"}, {"fixed": "2.5"}], True),
        ("1.5", [{"introduced": "0"}, {"fixed": "1.0"}, {"introduced": "2.0"}, {"fixed": "2.5"}], False),
        ("3.0", [{"introduced": "2.0"}], True),  # no upper bound: every later release
    ],
)
def test_range(version, events, affected):
    assert in_range(Version(version), events) is affected


def test_matching_by_canonical_name_versions_list_and_ranges(records):
    assert [m.id for m in matches(records, "seaborn", "0.12.2")] == ["TEST-2026-0001"]
    assert [m.fixed for m in matches(records, "seaborn", "0.12.2")] == [("0.13.0",)]
    assert [m.id for m in matches(records, "einops", "0.7.0")] == ["TEST-2026-0002"]  # versions list
    assert [m.id for m in matches(records, "jinja2", "3.1.4")] == ["TEST-2026-0003"]  # Jinja2 in the record
    assert list(matches(records, "jinja2", "3.1.6")) == []
    assert [m.id for m in matches(records, "anyio", "4.14.2")] == ["TEST-2026-0005"]
    assert list(matches(records, "anyio", "4.14.3")) == []  # and not the Debian:12 record of the same name


def test_withdrawn_records_never_match(records):
    assert all(m.id != "TEST-2026-0004" for m in matches(records, "einops", "0.1.0"))


def test_a_zip_of_records_like_osv_dev_exports(tmp_path, records):
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for record in records:
            z.writestr(f"{record['id']}.json", json.dumps(record))
    advisories = read_advisories(archive)
    assert len(advisories.records) == len(records)
    assert [m.id for m in matches(advisories.records, "seaborn", "0.1")] == ["TEST-2026-0001"]


def test_unreadable_or_foreign_files_are_named(tmp_path):
    with pytest.raises(AdvisoryFileError, match="cannot read"):
        read_advisories(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(AdvisoryFileError, match="not OSV JSON"):
        read_advisories(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text('[{"summary": "no id"}]')
    with pytest.raises(AdvisoryFileError, match="record 0 is not an OSV record"):
        read_advisories(tmp_path / "list.json")
