"""ONNX: a given model is checked and passed through; its "native" runtime is onnxruntime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ci.data import verify_digest
from mlops_ci.errors import CheckFailed
from mlops_ci.frameworks import Artifact, Batch, Exported

if TYPE_CHECKING:
    import onnx

    from mlops_ci.manifest import Signature

HEAVY_IMPORTS = ("onnx", "onnxruntime")


def load(artifact: Artifact) -> onnx.ModelProto:
    """The model, refusing external data (its paths could read files outside the repository)."""
    verify_digest(artifact.path, artifact.sha256, what="artifact")
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load(str(artifact.path), load_external_data=False)
    except Exception as exc:
        raise CheckFailed(f"not a readable ONNX model: {exc}", path=artifact.path) from exc
    external = [t.name for t in _tensors(model.graph) if uses_external_data(t)]
    if external:
        raise CheckFailed(
            f"the model keeps tensor(s) {', '.join(external[:5])} in external files; mlops-ci "
            "takes self-contained ONNX files (save with save_as_external_data=False)",
            path=artifact.path,
        )
    return model


def _tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    found = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                found.append(attr.t)
            found.extend(attr.tensors)
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found.extend(_tensors(sub))
    return found


def to_onnx(
    model: onnx.ModelProto, signature: Signature, *, opset: int, options: Mapping[str, Any]
) -> Exported:
    """The model itself (a copy): nothing to convert."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return Exported(copy, "passthrough", passthrough=True)


# One cached session: `predict` is called repeatedly on the same model (parity, benchmarks).
_SESSION: list[tuple[Any, Any]] = []


def predict(model: onnx.ModelProto, batch: Batch, signature: Signature) -> dict[str, np.ndarray]:
    """The given model on onnxruntime: the reference the written model.onnx must match."""
    import onnxruntime as ort

    from mlops_ci.data import NUMPY_DTYPES

    if not _SESSION or _SESSION[0][0] is not model:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        _SESSION[:] = [(model, session)]
    session = _SESSION[0][1]
    feeds: dict[str, np.ndarray] = {
        s.name: np.asarray(batch.feeds[s.name], dtype=NUMPY_DTYPES[s.dtype])
        for s in signature.inputs
    }
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))
