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
    text = artifact.path.read_bytes().decode("utf-8", "replace")
    try:
        problem = _structure_problem(text)
    except (KeyError, ValueError, IndexError, OverflowError) as exc:
        problem = f"its trees cannot be checked ({type(exc).__name__}: {exc})"
    if problem:
        raise CheckFailed(
            f"refusing to load: the model {problem}; LightGBM's predictor follows these "
            "arrays without bounds checks, so it would crash the process or never finish. "
            "Re-save the model from a genuine training run",
            path=artifact.path,
        )
    import lightgbm

    try:
        return lightgbm.Booster(model_file=str(artifact.path))
    except lightgbm.basic.LightGBMError as exc:
        raise CheckFailed(f"LightGBM cannot read the model: {exc}", path=artifact.path) from exc


def _structure_problem(text: str) -> str | None:
    """What in a text model file points outside its own arrays: a child id (internal nodes are
    0.., leaves ~0..; a child comes after its parent, so there is no loop), a split feature, a
    categorical split's bitset, or more trees per iteration than classes."""
    head, _, body = text.partition("\nTree=")
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    features = int(header["max_feature_idx"]) + 1
    if int(header.get("num_tree_per_iteration", 1)) != int(header.get("num_class", 1)):
        return "has a number of trees per iteration other than its number of classes"
    body = body.split("\nend of trees", 1)[0]
    for block in body.split("\nTree=") if body else ():
        name, _, rest = block.partition("\n")
        fields = dict(line.split("=", 1) for line in rest.splitlines() if "=" in line)
        leaves = int(fields["num_leaves"])
        if leaves < 1 or len(fields.get("leaf_value", "").split()) != leaves:
            return f"has tree {name} whose leaves do not match its num_leaves"
        if leaves == 1:
            continue
        inner = leaves - 1
        arrays = {k: [int(v) for v in fields[k].split()] for k in _INNER_ARRAYS}
        thresholds = fields["threshold"].split()  # numbers; a bitset's index where categorical
        if len(thresholds) != inner:
            return f"has tree {name} whose node arrays do not all hold its {inner} nodes"
        if any(len(v) != inner for v in arrays.values()):
            return f"has tree {name} whose node arrays do not all hold its {inner} nodes"
        boundaries = [int(v) for v in fields.get("cat_boundaries", "0").split()]
        cats = len(fields.get("cat_threshold", "").split())
        if boundaries != sorted(boundaries) or boundaries[0] < 0 or boundaries[-1] > cats:
            return f"has tree {name} whose categorical bitsets lie outside it"
        for i in range(inner):
            for child in (arrays["left_child"][i], arrays["right_child"][i]):
                if not (i < child < inner if child >= 0 else ~child < leaves):
                    return f"has tree {name} whose node {i} has child {child} of {inner} nodes"
            if not 0 <= arrays["split_feature"][i] < features:
                feature = arrays["split_feature"][i]
                return f"has tree {name} whose node {i} splits on feature {feature} of {features}"
            if arrays["decision_type"][i] & 1 and not (
                0 <= int(float(thresholds[i])) < len(boundaries) - 1
            ):
                return f"has tree {name} whose categorical node {i} has no bitset"
    return None


#: The per-internal-node arrays of a text model's tree that the checks read.
_INNER_ARRAYS = ("split_feature", "decision_type", "left_child", "right_child")

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
