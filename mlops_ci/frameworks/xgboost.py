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
        booster = xgboost.Booster(model_file=str(artifact.path))
        doc = json.loads(booster.save_raw(raw_format="json"))
    except xgboost.core.XGBoostError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckFailed(f"XGBoost cannot read the model: {first}", path=artifact.path) from exc
    try:
        problem = _structure_problem(doc)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        problem = f"its trees cannot be checked ({type(exc).__name__}: {exc})"
    if problem:
        raise CheckFailed(
            f"refusing to load: the model {problem}; XGBoost's predictor follows these arrays "
            "without bounds checks, so it would read or write memory out of bounds (a crash, "
            "or worse) or never finish. Re-save the model from a genuine training run",
            path=artifact.path,
        )
    return booster


def _structure_problem(doc: dict[str, Any]) -> str | None:
    """What in the model's own JSON (XGBoost's, whatever format the file had) points outside
    its arrays: a child id, a split feature, a category segment, a tree's output group."""
    learner = doc["learner"]
    params = learner["learner_model_param"]
    n_features = int(params["num_feature"])
    groups = max(int(params.get("num_class", 0)), int(params.get("num_target", 1)), 1)
    booster = learner["gradient_booster"]
    if booster.get("name") == "gblinear":
        weights = booster["model"]["weights"]
        if len(weights) != (n_features + 1) * groups:
            return f"holds {len(weights)} linear weights for {n_features} features"
        return None
    model = booster["gbtree"]["model"] if "gbtree" in booster else booster["model"]
    trees, info = model["trees"], model["tree_info"]
    if len(info) != len(trees) or any(not 0 <= int(g) < groups for g in info):
        return f"assigns its {len(trees)} trees to output groups outside its {groups}"
    for t, tree in enumerate(trees):
        problem = _tree_problem(tree, n_features)
        if problem:
            return f"has tree {t} {problem}"
    return None


def _tree_problem(tree: dict[str, Any], n_features: int) -> str | None:
    n = int(tree["tree_param"]["num_nodes"])
    per_node = (
        "left_children",
        "right_children",
        "parents",
        "split_indices",
        "split_type",
        "split_conditions",
        "default_left",
    )
    if any(len(tree[key]) != n for key in per_node):
        return f"whose node arrays do not all hold its {n} nodes"
    for i, (left, right) in enumerate(
        zip(tree["left_children"], tree["right_children"], strict=True)
    ):
        if left == -1:
            if right != -1:
                return f"whose leaf {i} has a right child"
            continue
        # children come after their parent: a loop, or a jump outside the tree, is refused
        if not (i < left < n and i < right < n):
            return f"whose node {i} has children {left} and {right} of {n}"
        if not 0 <= tree["split_indices"][i] < n_features:
            return f"whose node {i} splits on feature {tree['split_indices'][i]} of {n_features}"
    nodes, starts, sizes = (
        tree[k] for k in ("categories_nodes", "categories_segments", "categories_sizes")
    )
    if not len(nodes) == len(starts) == len(sizes):
        return "whose categorical splits are incomplete"
    for node, start, size in zip(nodes, starts, sizes, strict=True):
        if not (
            0 <= node < n and start >= 0 and size >= 0 and start + size <= len(tree["categories"])
        ):
            return f"whose categorical split at node {node} lies outside its categories"
    return None


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
