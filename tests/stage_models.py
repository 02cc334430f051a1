"""Builds small model repositories for the test, bench and report tests: a real scikit-learn
model trained on a bundled data set, its skops artifact, its ONNX conversion, the evaluation CSV
and a model.yaml that pins every digest.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml


@dataclass(frozen=True)
class ModelRepo:
    root: Path
    manifest: Path
    onnx: Path
    data: Path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_csv(path: Path, columns: list[str], X: np.ndarray, target: str, y: np.ndarray) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*columns, target])
        for row, label in zip(X, y, strict=True):
            writer.writerow([*(repr(float(v)) for v in row), label.item()])


def to_onnx(estimator: Any, n_features: int, path: Path) -> None:
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "classes_") else None
    model = skl_to_onnx(
        estimator,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options=options,
        target_opset=17,
    )
    path.write_bytes(model.SerializeToString())


def make_repo(
    root: Path,
    name: str,
    estimator: Any,
    X: np.ndarray,
    y: np.ndarray,
    *,
    tests: dict[str, Any] | None = None,
    benchmark: dict[str, Any] | None = None,
    extra_columns: dict[str, np.ndarray] | None = None,
) -> ModelRepo:
    """A model folder `root/models/name` with everything a manifest pins; returns its paths."""
    import skops.io as sio

    folder = root / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    columns = [f"f{i}" for i in range(X.shape[1])]
    artifact = folder / "model.skops"
    sio.dump(estimator, artifact)
    out = root / "out" / name  # what `mlops-ci convert --out` would hold
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    to_onnx(estimator, X.shape[1], onnx_path)
    data = folder / "eval.csv"
    if extra_columns:
        header = [*columns, *extra_columns]
        X_all = np.column_stack([X, *extra_columns.values()])
    else:
        header, X_all = columns, X
    write_csv(data, header, X_all, "target", y)
    classifier = hasattr(estimator, "classes_")
    outputs: list[dict[str, Any]]
    if classifier:
        outputs = [
            {"name": "label", "dtype": "int64", "shape": [-1], "role": "label"},
            {
                "name": "probabilities",
                "dtype": "float32",
                "shape": [-1, len(estimator.classes_)],
                "role": "probabilities",
            },
        ]
    else:
        outputs = [{"name": "variable", "dtype": "float32", "shape": [-1, 1], "role": "prediction"}]
    spec: dict[str, Any] = {
        "framework": "sklearn",
        "task": "classification" if classifier else "regression",
        "artifact": {"path": "model.skops", "sha256": sha256(artifact)},
        "signature": {
            "inputs": [
                {"name": "input", "dtype": "float32", "shape": [-1, X.shape[1]], "columns": columns}
            ],
            "outputs": outputs,
        },
        "evaluation": {
            "name": f"{name} holdout",
            "data": {"path": "eval.csv", "sha256": sha256(data)},
            "target": "target",
        },
    }
    if tests:
        spec["tests"] = tests
    if benchmark:
        spec["benchmark"] = benchmark
    doc = {
        "apiVersion": "mlops-ci/v1",
        "kind": "Model",
        "metadata": {"name": name, "version": "1.0.0", "owners": ["@alice"], "risk": "low"},
        "spec": spec,
    }
    manifest = folder / "model.yaml"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return ModelRepo(root, manifest, onnx_path, data)
