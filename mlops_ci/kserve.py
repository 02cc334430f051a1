"""KServe's InferenceService for one registry model: Open Inference Protocol v2, ONNX format,
`storageUri` the model's folder. The checks KServe makes only in its admission webhook (the name
as a DNS label, replica bounds) are made here, so a bad manifest fails at deploy, not in-cluster.
"""

from __future__ import annotations

import re
from typing import Any

from mlops_ci.errors import CheckFailed

API_VERSION = "serving.kserve.io/v1beta1"
#: KServe names an InferenceService's Knative service and DNS host after it: an RFC 1035 label.
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_MAX_NAME = 63
#: minReplicas and maxReplicas are int32 in KServe's CRD (format: int32)
_INT32_MAX = 2**31 - 1


def render(name: str, storage_uri: str, serving: dict[str, Any] | None = None) -> dict[str, Any]:
    """The InferenceService document; CheckFailed for what KServe's webhook would refuse."""
    serving = serving or {}
    problems = []
    if not _DNS_LABEL.fullmatch(name) or len(name) > _MAX_NAME:
        problems.append(
            f"name {name!r} must be a DNS label (lowercase letters, digits and '-', starting with "
            f"a letter, at most {_MAX_NAME} characters)"
        )
    low, high = serving.get("min_replicas"), serving.get("max_replicas")
    if low is not None and low < 0:
        problems.append("spec.serving.min_replicas must be 0 or more")
    if high is not None and high < 1:
        problems.append("spec.serving.max_replicas must be 1 or more")
    if low is not None and high is not None and low > high:
        problems.append(f"spec.serving.min_replicas ({low}) exceeds max_replicas ({high})")
    for key, value in (("min_replicas", low), ("max_replicas", high)):
        if value is not None and value > _INT32_MAX:  # the CRD's int32: the API server refuses
            problems.append(f"spec.serving.{key} {value} is more than KServe's {_INT32_MAX}")
    if problems:
        raise CheckFailed(f"InferenceService for {name}: " + "; ".join(problems))

    model: dict[str, Any] = {
        "modelFormat": {"name": "onnx"},
        "protocolVersion": "v2",
        "storageUri": storage_uri,
    }
    resources = serving.get("resources") or {}
    if resources:
        quantities = {k: str(v) for k, v in resources.items() if k in ("cpu", "memory")}
        model["resources"] = {"requests": quantities, "limits": dict(quantities)}
    predictor: dict[str, Any] = {"model": model}
    if low is not None:
        predictor["minReplicas"] = int(low)
    if high is not None:
        predictor["maxReplicas"] = int(high)
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "mlops-ci"}},
        "spec": {"predictor": predictor},
    }


def to_yaml(doc: dict[str, Any]) -> str:
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: 20× faster when built in
    return str(yaml.dump(doc, Dumper=dumper, sort_keys=False, default_flow_style=False))
