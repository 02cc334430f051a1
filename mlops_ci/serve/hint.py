"""What `mlops-ci run` prints at its end: the command that serves the local registry and a
`curl` call of one model, built from that model's first test case (no server is started)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops_ci.serve.defaults import DEFAULTS

#: Manifest dtype -> Open Inference Protocol datatype.
DATATYPES = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "int8": "INT8",
    "uint8": "UINT8",
    "bool": "BOOL",
    "string": "BYTES",
}


def example_request(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """One inference request (JSON) from the manifest's first test case, or None without one."""
    spec = manifest.get("spec") or {}
    cases = (spec.get("tests") or {}).get("cases") or []
    inputs = (spec.get("signature") or {}).get("inputs") or []
    if not cases or not inputs or not isinstance(cases[0].get("input"), dict):
        return None
    values = cases[0]["input"]
    tensors = []
    for tensor in inputs:
        columns = tensor.get("columns") or [tensor["name"]]
        if any(c not in values for c in columns):
            return None
        rank = len(tensor.get("shape") or [-1, 1])
        shape = [1, len(columns)] if rank == 2 else [1] * rank
        tensors.append(
            {
                "name": tensor["name"],
                "shape": shape,
                "datatype": DATATYPES.get(str(tensor.get("dtype")), "FP32"),
                "data": [values[c] for c in columns],
            }
        )
    return {"inputs": tensors}


def run_hint(registry: Path | str, port: int = DEFAULTS.port) -> str:
    """The lines `run` ends with: how to serve `registry` and a curl call of the deployed model
    with the shortest first test case; or, when nothing is deployed there, why not to serve it."""
    deployed = _deployed(registry)
    if not deployed:
        return (
            f"\nNothing is deployed to {registry} yet, so there is nothing to serve: the deploy "
            "stage publishes each model that passes (run without --stages, or include deploy)."
        )
    command = f"mlops-ci serve --registry {shlex.quote(str(registry))} --port {port}"
    lines = ["", "Serve the local registry (Open Inference Protocol v2, Ctrl-C to stop):",
             f"  {command}"]  # fmt: skip
    calls = []
    for doc in deployed:
        request = example_request(doc)
        if request is not None:
            body = shlex.quote(json.dumps(request, separators=(",", ":")))
            calls.append((len(body), str(doc["metadata"]["name"]), body))
    if calls:
        _, name, body = min(calls)
        url = f"http://127.0.0.1:{port}/v2/models/{name}/infer"
        lines += ["then, in another terminal:", f"  curl -s {url} -d {body}"]
    return "\n".join(lines)


def _deployed(registry: Path | str) -> list[dict[str, Any]]:
    """The manifests the registry serves, read without loading anything heavy."""
    if "://" not in str(registry) and not Path(registry).is_dir():
        return []
    import yaml

    from mlops_ci.registry import open_registry

    found = []
    try:
        reg = open_registry(registry)
        for name in reg.models():
            n = reg.serving_version(name)
            if n is not None:
                doc = yaml.safe_load(reg.manifest_text(name, n))
                if isinstance(doc, dict):
                    found.append(doc)
    except Exception:  # a hint must never fail the run
        return []
    return found
