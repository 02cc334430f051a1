"""LightGBM: native text model files (data only, no code), converted by onnxmltools."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ci.digest import verify_digest
from mlops_ci.errors import CheckFailed
from mlops_ci.frameworks import Artifact, Batch, Exported, _trees, outputs_by_role

if TYPE_CHECKING:
    from mlops_ci.manifest import Signature

HEAVY_IMPORTS = ("lightgbm", "onnxmltools")


def load(artifact: Artifact) -> Any:
    """A lightgbm.Booster from its text model file (never a pickle)."""
    verify_digest(artifact.path, artifact.sha256, what="artifact")
    if artifact.format != "lightgbm-text":
        raise CheckFailed(
            f"LightGBM models are read from their text model files, not {artifact.format} "
            "(save with booster.save_model('model.txt'))",
            path=artifact.path,
        )
    import lightgbm

    try:
        return lightgbm.Booster(model_file=str(artifact.path))
    except lightgbm.basic.LightGBMError as exc:
        raise CheckFailed(f"LightGBM cannot read the model: {exc}", path=artifact.path) from exc


_CLASSIFIER: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _is_classifier(booster: Any) -> bool:
    # dump_model() walks every tree: read the objective once per booster, not per prediction
    if booster not in _CLASSIFIER:
        objective = str(booster.dump_model(num_iteration=0)["objective"])
        _CLASSIFIER[booster] = objective.split()[0] in ("binary", "multiclass", "multiclassova")
    return _CLASSIFIER[booster]


def feature_names(model: Any) -> tuple[str, ...] | None:
    """The booster's feature names, unless LightGBM made them up (Column_0, Column_1, …)."""
    names = tuple(model.feature_name())
    generated = tuple(f"Column_{i}" for i in range(len(names)))
    return None if not names or names == generated else names


def to_onnx(
    model: Any, signature: Signature, *, opset: int, options: Mapping[str, Any]
) -> Exported:
    import onnxmltools

    onx = _trees.convert(
        onnxmltools.convert_lightgbm,
        model,
        signature,
        framework="LightGBM",
        opset=opset,
        options={**options, "zipmap": False},
    )
    roles = ("label", "probabilities") if _is_classifier(model) else ("prediction",)
    return Exported(onx, f"onnxmltools {onnxmltools.__version__} (lightgbm)", roles)


def predict(model: Any, batch: Batch, signature: Signature) -> dict[str, np.ndarray]:
    x = _trees.only_rows(batch.feeds)
    scores = np.asarray(model.predict(x))
    if _is_classifier(model):
        return outputs_by_role(signature, _trees.class_values(scores))
    return outputs_by_role(signature, {"prediction": scores.reshape(len(x), -1)})
