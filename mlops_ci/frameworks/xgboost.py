"""XGBoost: native JSON / UBJSON boosters (data only, no code), converted by onnxmltools."""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ci.digest import verify_digest
from mlops_ci.errors import CheckFailed
from mlops_ci.frameworks import Artifact, Batch, Exported, _trees, outputs_by_role

if TYPE_CHECKING:
    from mlops_ci.manifest import Signature

HEAVY_IMPORTS = ("xgboost", "onnxmltools")


def load(artifact: Artifact) -> Any:
    """An xgboost.Booster from its JSON or UBJSON model file (never a pickle)."""
    verify_digest(artifact.path, artifact.sha256, what="artifact")
    if artifact.format not in ("xgboost-json", "xgboost-ubj"):
        raise CheckFailed(
            f"XGBoost models are read from their JSON or UBJ model files, not {artifact.format} "
            "(save with booster.save_model('model.json'))",
            path=artifact.path,
        )
    import xgboost

    try:
        return xgboost.Booster(model_file=str(artifact.path))
    except xgboost.core.XGBoostError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckFailed(f"XGBoost cannot read the model: {first}", path=artifact.path) from exc


_OBJECTIVES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def objective(booster: Any) -> str:
    """The booster's objective (binary:logistic, multi:softprob, reg:squarederror, ...), cached."""
    if booster not in _OBJECTIVES:
        config = json.loads(booster.save_config())
        _OBJECTIVES[booster] = str(config["learner"]["objective"]["name"])
    return _OBJECTIVES[booster]


def feature_names(model: Any) -> tuple[str, ...] | None:
    """The booster's feature names (set when it was trained on a DataFrame)."""
    names = model.feature_names
    return tuple(names) if names else None


def to_onnx(
    model: Any, signature: Signature, *, opset: int, options: Mapping[str, Any]
) -> Exported:
    import onnxmltools

    # onnxmltools reads features by position and accepts only XGBoost's own names (f0, f1, …);
    # a booster trained on a DataFrame carries its column names, which the stages map to the
    # input by name (data.input_columns), so the converter gets a copy without them.
    positional = model
    if model.feature_names:
        positional = model.copy()
        positional.feature_names = None
    onx = _trees.convert(
        onnxmltools.convert_xgboost,
        positional,
        signature,
        framework="XGBoost",
        opset=opset,
        options=options,
        about=f" (objective {objective(model)})",
    )
    classifier = objective(model).startswith(("binary:", "multi:"))
    roles = ("label", "probabilities") if classifier else ("prediction",)
    return Exported(onx, f"onnxmltools {onnxmltools.__version__} (xgboost)", roles)


def predict(model: Any, batch: Batch, signature: Signature) -> dict[str, np.ndarray]:
    import xgboost

    x = _trees.only_rows(batch.feeds)
    # the data's own column names, so XGBoost itself refuses columns in another order than the
    # booster was trained on, instead of the native model and ONNX agreeing on the wrong order
    (columns,) = batch.columns.values() if len(batch.columns) == 1 else (None,)
    names = list(columns) if model.feature_names and columns else model.feature_names
    try:
        matrix = xgboost.DMatrix(x, feature_names=names)
        scores = model.predict(matrix)
    except (ValueError, xgboost.core.XGBoostError) as exc:
        raise CheckFailed(f"XGBoost cannot predict on these columns: {exc}") from exc
    if objective(model).startswith(("binary:", "multi:")):
        return outputs_by_role(signature, _trees.class_values(scores))
    return outputs_by_role(signature, {"prediction": np.asarray(scores).reshape(len(x), -1)})
