"""What the XGBoost and LightGBM modules share: the pinned bytes of the model file, one float
input, onnxmltools, class outputs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ci.digest import verify_digest
from mlops_ci.errors import CheckFailed

if TYPE_CHECKING:
    from mlops_ci.frameworks import Artifact
    from mlops_ci.manifest import Signature


def pinned_bytes(artifact: Artifact) -> bytes:
    """The artifact's bytes, read once and checked against its digest: the structure checks
    and the loader then see the same bytes, whatever happens to the file in between."""
    verify_digest(artifact.path, artifact.sha256, what="artifact")
    raw = artifact.path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != artifact.sha256.lower():
        raise CheckFailed("artifact changed while it was being read", path=artifact.path)
    return raw


def initial_types(signature: Signature, framework: str) -> list[tuple[str, Any]]:
    """onnxmltools input declaration: a single float32 [-1, n_features] input."""
    from onnxmltools.convert.common.data_types import FloatTensorType

    if len(signature.inputs) != 1 or signature.inputs[0].dtype != "float32":
        raise CheckFailed(
            f"{framework} models take one float32 input of shape [-1, n_features]; the "
            f"signature lists {len(signature.inputs)} input(s)"
            + (f" of dtype {signature.inputs[0].dtype}" if len(signature.inputs) == 1 else "")
        )
    spec = signature.inputs[0]
    return [(spec.name, FloatTensorType([None if d < 0 else d for d in spec.shape]))]


def opset_for(opset: int) -> int:
    """The highest opset onnxmltools supports, up to the requested one (set_opset raises it)."""
    from onnxmltools.convert.common.onnx_ex import get_maximum_opset_supported

    return min(opset, int(get_maximum_opset_supported()))


def convert(
    converter: Callable[..., Any],
    model: Any,
    signature: Signature,
    *,
    framework: str,
    opset: int,
    options: Mapping[str, Any],
    about: str = "",
) -> Any:
    """Run an onnxmltools converter; its failures become one CheckFailed naming the framework."""
    try:
        return converter(
            model,
            initial_types=initial_types(signature, framework),
            target_opset=opset_for(opset),
            **options,
        )
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(
            f"onnxmltools failed to convert the {framework} model{about}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def class_values(scores: np.ndarray) -> dict[str, np.ndarray]:
    """label and probabilities from a booster's output: [n] for binary, [n, k] for multiclass."""
    scores = np.asarray(scores, dtype=np.float64)
    probabilities = np.column_stack([1.0 - scores, scores]) if scores.ndim == 1 else scores
    return {"label": probabilities.argmax(axis=1), "probabilities": probabilities}


def only_rows(batch_feeds: dict[str, np.ndarray] | Any) -> np.ndarray:
    """The single input's rows as a 2-D float64 matrix."""
    (array,) = batch_feeds.values()
    return np.asarray(array, dtype=np.float64).reshape(len(array), -1)
