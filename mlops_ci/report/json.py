"""JSON for machines: `validate --format json` (DESIGN.md: `{"manifests": [{path, valid,
errors: [{line, column, pointer, message}]}]}`), also each model's validate.json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mlops_ci.manifest import Checked


def validation(results: Sequence[Checked]) -> str:
    doc: dict[str, Any] = {
        "manifests": [
            {"path": r.shown, "valid": r.valid, "errors": [p.to_json() for p in r.problems]}
            for r in results
        ]
    }
    return json.dumps(doc, indent=2)
