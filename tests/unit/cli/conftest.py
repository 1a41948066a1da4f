"""`json_contract`: parse a command's stdout and validate it against its schema in docs/schemas/."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

SCHEMAS = Path(__file__).resolve().parents[3] / "docs" / "schemas"


def validate_document(text: str) -> dict[str, Any]:
    """The one JSON document `text` holds, validated against docs/schemas/strata.<command>.json."""
    doc = json.loads(text)
    name = doc["schema"]  # strata.<command>/1
    schema = json.loads((SCHEMAS / (name.rsplit("/", 1)[0] + ".json")).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)
    return dict(doc)


@pytest.fixture
def json_contract() -> Callable[[str], dict[str, Any]]:
    return validate_document
