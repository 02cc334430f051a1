"""Finds the files shipped with the package (the JSON Schemas), installed or from a checkout."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    """Path of `schemas/<name>`: inside the installed wheel, else in the source checkout."""
    for folder in (_PACKAGE / "schemas", _PACKAGE.parent / "schemas"):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"schema {name} is not installed with mlops_ci")


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed JSON Schema `schemas/<name>` (cached; treat as read-only)."""
    with schema_path(name).open("rb") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


MANIFEST_SCHEMA = "model-manifest.v1.json"
POLICY_SCHEMA = "policy.v1.json"
