"""The pull request's regression baseline: the ONNX model the registry serves now, per changed
model, fetched by a job that runs no pull-request code and handed to the model jobs.

Per model it writes `<out>/<name>/baseline.onnx` (digest-checked against its release.json) and
`<out>/<name>/baseline.json`: the serving version's release (semver, results) or, when there is
nothing to compare with, the reason (not deployed yet; no read credentials, because the
read-only key's secrets are not set or a fork's pull request gets none; the registry unreachable).
The baseline job holds only the read-only key: a job a pull request triggers never gets one that
can publish.
It never fails the run: a missing baseline is a line in the report, not an error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlops_ci import atomic
from mlops_ci.errors import EXIT_OK, MlopsCiError, UsageError
from mlops_ci.manifest.paths import MODEL_NAME

_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE")


def _names(matrix: str) -> list[str]:
    try:
        doc = json.loads(matrix)
        return [str(m["name"]) for m in doc.get("include", [])]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UsageError(f"--matrix is not plan's JSON matrix: {exc}") from None


def fetch(registry: str, names: list[str], out: Path) -> dict[str, dict[str, Any]]:
    """Write each model's baseline (or the reason there is none) under `out`."""
    from mlops_ci.registry import open_registry

    found: dict[str, dict[str, Any]] = {}
    if registry.startswith("s3://") and not any(os.environ.get(n) for n in _CREDENTIALS):
        reason = (
            "no read credentials for the registry (set the registry-read-access-key-id and "
            "registry-read-secret-access-key secrets; a fork's pull request gets no secrets), so "
            "there is no deployed version to compare with"
        )
        found = {name: {"model": name, "reason": reason} for name in names}
    else:
        try:
            reg = open_registry(registry)
            if not reg.exists():  # a folder that is not there: a wrong path, not "no deploy yet"
                raise MlopsCiError(f"{registry}: no such folder")
        except MlopsCiError as exc:
            reason = f"the registry could not be read ({exc}), so there is no comparison"
            found = {name: {"model": name, "reason": reason} for name in names}
        else:
            for name in names:  # one model's failure is its own line, not everyone's
                try:
                    found[name] = _one(reg, name, out)
                except MlopsCiError as exc:
                    reason = f"the registry could not be read ({exc}), so there is no comparison"
                    found[name] = {"model": name, "reason": reason}
    for name, doc in found.items():
        if MODEL_NAME.fullmatch(name):  # the matrix comes from the pull request's plan
            atomic.write_json(out / name / "baseline.json", doc)
    return found


def _one(reg: Any, name: str, out: Path) -> dict[str, Any]:
    if not MODEL_NAME.fullmatch(name):
        return {"model": name, "reason": f"{name!r} is not a model name: nothing to compare with"}
    n = reg.serving_version(name)
    if n is None:
        return {"model": name, "reason": f"{name} is not deployed yet: nothing to compare with"}
    release = reg.release(name, n)
    atomic.write_bytes(out / name / "baseline.onnx", reg.model_onnx(name, n, release))
    return {
        "model": name,
        "reason": None,
        "registry_version": n,
        "version": release.get("version"),
        "commit": release.get("commit"),
        "results": release.get("results", {}),
    }


def main(registry: str, matrix: str, out: Path) -> int:
    for name, doc in fetch(registry, _names(matrix), out).items():
        line = (
            doc["reason"]
            or f"version {doc['version']} (registry version {doc['registry_version']})"
        )
        print(f"{name}: {line}")
    return EXIT_OK
