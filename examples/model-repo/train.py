#!/usr/bin/env python3
"""Retrain every example model reproducibly from scikit-learn's bundled data sets.

For each model under models/ this writes the artifact, the evaluation data (a seeded held-out
split) and the drift reference data (a seeded sample of the training split), then refreshes the
model's model.yaml in place: every sha256 and the expected outputs of its test cases. The edit is
textual (only those values change), so comments and layout survive.

    python train.py                       # retrain all models
    python train.py diabetes-risk         # retrain one
    python train.py --check               # retrain into a scratch copy, fail if any byte differs
    python train.py --export-training-data DIR   # also write the training splits as CSV

Needs scikit-learn, skops, xgboost, lightgbm, torch and pyyaml (`pip install "mlops-ci[all]"`).
mlops-ci never imports this file; tests/test_examples.py imports it to check the committed files
against the data preparation and the manifest editing, without training anything.
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
SEED = 20240601

# bmi bands after the WHO cut-offs; the three underweight rows of the data set fall into "normal".
BMI_BANDS = ((25.0, "normal"), (30.0, "overweight"), (float("inf"), "obese"))
# The diabetes data set codes sex as 1 and 2 without saying which is which; this mapping is
# an illustration of a string input, not a medical claim.
SEX_NAMES = {1.0: "female", 2.0: "male"}
DIABETES_NUMERIC = ["age", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
DIABETES_RISK_INPUTS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6", "bmi_band"]
DIABETES_INPUTS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
REFERENCE_ROWS = 200


# --------------------------------------------------------------------------------------------
# Data: pure and fast (no training), so tests can recompute the lineage digests.


@dataclass(frozen=True)
class Dataset:
    """A model's data: the split the model learns from, the held-out split, the drift sample."""

    inputs: list[str]
    target: str
    train: Any  # pandas.DataFrame: inputs + target
    eval: Any  # pandas.DataFrame: inputs + target
    reference: Any  # pandas.DataFrame: inputs only


def _split(frame: Any, inputs: list[str], target: str, test_size: float, stratify: bool) -> Dataset:
    from sklearn.model_selection import train_test_split

    frame = frame[[*inputs, target]]
    train, held_out = train_test_split(
        frame,
        test_size=test_size,
        random_state=SEED,
        stratify=frame[target] if stratify else None,
    )
    n = min(REFERENCE_ROWS, len(train))
    reference = train.sample(n=n, random_state=SEED)[inputs]
    return Dataset(inputs, target, train, held_out, reference)


def _bmi_band(bmi: float) -> str:
    return next(name for upper, name in BMI_BANDS if bmi < upper)


def diabetes_risk_data() -> Dataset:
    """Diabetes as binary classification: is progression after a year above the median?"""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame["sex"] = frame["sex"].map(SEX_NAMES).astype(object)
    frame["bmi_band"] = frame["bmi"].map(_bmi_band).astype(object)
    frame["high_progression"] = (frame["target"] > frame["target"].median()).astype("int64")
    return _split(frame, DIABETES_RISK_INPUTS, "high_progression", 0.25, stratify=True)


def tumor_data() -> Dataset:
    """Breast cancer (Wisconsin): 30 numeric features, benign = 1, malignant = 0."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: str(c).replace(" ", "_"))
    frame = frame.rename(columns={"target": "benign"})
    inputs = [str(c).replace(" ", "_") for c in bunch.feature_names]
    return _split(frame, inputs, "benign", 0.25, stratify=True)


def digits_data() -> Dataset:
    """8x8 hand-written digits: 64 pixel intensities 0..16 (integers), class 0..9."""
    from sklearn.datasets import load_digits

    bunch = load_digits(as_frame=True)
    inputs = [str(c) for c in bunch.feature_names]
    frame = bunch.frame.astype("int64").rename(columns={"target": "digit"})
    return _split(frame, inputs, "digit", 0.2, stratify=True)


def progression_data() -> Dataset:
    """Diabetes as regression: disease progression one year after baseline."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame = frame.rename(columns={"target": "progression"})
    return _split(frame, DIABETES_INPUTS, "progression", 0.25, stratify=False)


def csv_bytes(frame: Any) -> bytes:
    """The CSV bytes of a frame: header row, '\\n' line ends, floats as repr (exact round trip).

    Written by hand rather than with DataFrame.to_csv so the bytes do not depend on the pandas
    version, and so no float is rounded on the way to the file (float32 parity stays exact).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([str(c) for c in frame.columns])
    for row in frame.itertuples(index=False, name=None):
        writer.writerow([_cell(v) for v in row])
    return out.getvalue().encode("utf-8")


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    if hasattr(value, "item"):  # numpy scalar -> Python scalar
        value = value.item()
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise TypeError(f"cannot write {type(value).__name__} to CSV: {value!r}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Models: train, save, load back. Expected outputs are computed from the loaded-back artifact,
# so they describe exactly the bytes that are committed.


@dataclass(frozen=True)
class Trained:
    """A saved artifact and a predictor over its loaded-back copy."""

    artifact: bytes
    # rows (DataFrame with the input columns) -> {output name: per-row values}
    predict: Callable[[Any], dict[str, list[Any]]]
    # evaluation metrics, printed so a retrain shows how far the thresholds are
    metrics: dict[str, float]


def _classifier_outputs(labels: Any, probabilities: Any) -> dict[str, list[Any]]:
    return {
        "label": [int(v) for v in labels],
        "probabilities": [[round(float(p), 6) for p in row] for row in probabilities],
    }


def _classification_metrics(y: Any, probabilities: Any) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    labels = probabilities.argmax(axis=1)
    binary = probabilities.shape[1] == 2
    return {
        "accuracy": float(accuracy_score(y, labels)),
        "f1": float(f1_score(y, labels, average="binary" if binary else "macro")),
        "roc_auc": float(
            roc_auc_score(y, probabilities[:, 1])
            if binary
            else roc_auc_score(y, probabilities, multi_class="ovr", average="macro")
        ),
    }


def train_diabetes_risk(data: Dataset) -> Trained:
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    strings = [c for c in data.inputs if c not in DIABETES_NUMERIC]
    model = Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [
                        ("numeric", StandardScaler(), DIABETES_NUMERIC),
                        (
                            "categorical",
                            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                            strings,
                        ),
                    ]
                ),
            ),
            ("classifier", LogisticRegression(C=1.0, max_iter=1000)),
        ]
    )
    model.fit(data.train[data.inputs], data.train[data.target])
    artifact = normalize_skops(sio.dumps(model, compression=zipfile.ZIP_DEFLATED))
    # Loading back our own, just-written file: trusting what it declares is safe here. The
    # policy lists the same types in .mlops/policy.yaml's trusted_types (checked below).
    loaded = sio.loads(artifact, trusted=sio.get_untrusted_types(data=artifact))

    def predict(rows: Any) -> dict[str, list[Any]]:
        frame = rows[data.inputs]
        return _classifier_outputs(loaded.predict(frame), loaded.predict_proba(frame))

    proba = loaded.predict_proba(data.eval[data.inputs])
    return Trained(artifact, predict, _classification_metrics(data.eval[data.target], proba))


def skops_untrusted_types(artifact: bytes) -> list[str]:
    import skops.io as sio

    return sorted(sio.get_untrusted_types(data=artifact))


def normalize_skops(data: bytes) -> bytes:
    """Make a .skops file byte-reproducible.

    skops names array files and memo keys after Python's id() of the objects, and zip entries
    carry the wall-clock time; all three change on every run. Renumber ids and files in order of
    first appearance (consistently, so shared objects stay shared) and stamp every entry with a
    fixed time. The result loads to the same object (build() predicts from the loaded copy).
    """
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        schema = json.loads(source.read("schema.json"))
        members = {name: source.read(name) for name in source.namelist() if name != "schema.json"}

    ids: dict[int, int] = {}
    files: dict[str, str] = {}

    def renumber(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                if key == "__id__" and isinstance(value, int):
                    out[key] = ids.setdefault(value, len(ids) + 1)
                elif key == "file" and isinstance(value, str) and value in members:
                    _, dot, suffix = value.partition(".")
                    files.setdefault(value, f"{len(files) + 1}{dot}{suffix}")
                    out[key] = files[value]
                else:
                    out[key] = renumber(value)
            return out
        if isinstance(node, list):
            return [renumber(item) for item in node]
        return node

    schema = renumber(schema)
    if set(files) != set(members):
        unnamed = sorted(set(members) - set(files))
        raise RuntimeError(f"skops file holds entries its schema does not name: {unnamed}")

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        entries = [("schema.json", json.dumps(schema, indent=2).encode())]
        entries += sorted((files[old], blob) for old, blob in members.items())
        for name, blob in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, blob, compresslevel=9)
    return buffer.getvalue()


def train_tumor(data: Dataset) -> Trained:
    import numpy as np
    import xgboost as xgb

    model = xgb.XGBClassifier(
        n_estimators=50,
        max_depth=3,
        learning_rate=0.2,
        tree_method="hist",
        n_jobs=1,
        random_state=SEED,
        eval_metric="logloss",
    )
    # A plain array, not a DataFrame: onnxmltools reads the tree dump and expects the f0, f1, ...
    # feature names XGBoost uses when it was not given column names.
    model.fit(data.train[data.inputs].to_numpy(np.float32), data.train[data.target].to_numpy())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.json"
        model.save_model(path)
        artifact = path.read_bytes()
        loaded = xgb.XGBClassifier()
        loaded.load_model(path)

    def predict(rows: Any) -> dict[str, list[Any]]:
        x = rows[data.inputs].to_numpy(np.float32)
        return _classifier_outputs(loaded.predict(x), loaded.predict_proba(x))

    proba = loaded.predict_proba(data.eval[data.inputs].to_numpy(np.float32))
    return Trained(artifact, predict, _classification_metrics(data.eval[data.target], proba))


def train_digits(data: Dataset) -> Trained:
    import numpy as np
    import torch

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    class DigitMLP(torch.nn.Module):
        """64 pixels (0..16) -> 32 hidden -> 10 class probabilities."""

        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(64, 32)
            self.out = torch.nn.Linear(32, 10)

        def logits(self, pixels: torch.Tensor) -> torch.Tensor:
            # Scaling lives in the model so that callers send raw pixel intensities.
            return self.out(torch.relu(self.hidden(pixels / 16.0)))

        # The argument is named `input` because torch.export names the graph input after it,
        # and the manifest's signature calls the ONNX input `input`.
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.logits(input), dim=-1)

    x = torch.tensor(data.train[data.inputs].to_numpy(np.float32))
    y = torch.tensor(data.train[data.target].to_numpy(np.int64))
    model = DigitMLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    shuffle = torch.Generator().manual_seed(SEED)
    for _epoch in range(40):
        for batch in torch.randperm(len(x), generator=shuffle).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model.logits(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
    model.eval()

    batch = torch.export.Dim("batch", min=1, max=65536)
    # clone(): the archive stores the example input's whole storage, and x[:8] is a view of all
    # of x (which would add 370 KB of training data to the artifact).
    example = x[:8].clone()
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes={"input": {0: batch}})
    # Source locations (absolute path and line numbers of this file) are debugging metadata; left
    # in, they would change the artifact's bytes with every edit of train.py or clone location.
    for node in program.graph.nodes:
        node.meta.pop("stack_trace", None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt2"
        torch.export.save(program, path)
        artifact = path.read_bytes()
        loaded = torch.export.load(path).module()

    def run(frame: Any) -> Any:
        with torch.no_grad():
            return loaded(torch.tensor(frame[data.inputs].to_numpy(np.float32))).numpy()

    def predict(rows: Any) -> dict[str, list[Any]]:
        return {"probabilities": _classifier_outputs([], run(rows))["probabilities"]}

    proba = run(data.eval)
    return Trained(artifact, predict, _classification_metrics(data.eval[data.target], proba))


def train_progression(data: Dataset) -> Trained:
    import lightgbm as lgb
    import numpy as np
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    model = lgb.LGBMRegressor(
        n_estimators=60,
        num_leaves=6,
        learning_rate=0.08,
        min_child_samples=10,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        random_state=SEED,
        deterministic=True,
        force_row_wise=True,
        n_jobs=1,
        verbose=-1,
    )
    model.fit(
        data.train[data.inputs].to_numpy(np.float64),
        data.train[data.target].to_numpy(np.float64),
        feature_name=data.inputs,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.txt"
        model.booster_.save_model(path)
        artifact = path.read_bytes()
        loaded = lgb.Booster(model_file=path)

    def run(frame: Any) -> Any:
        return loaded.predict(frame[data.inputs].to_numpy(np.float64), num_threads=1)

    def predict(rows: Any) -> dict[str, list[Any]]:
        return {"variable": [round(float(v), 4) for v in run(rows)]}

    y, pred = data.eval[data.target], run(data.eval)
    metrics = {
        "rmse": float(mean_squared_error(y, pred) ** 0.5),
        "mae": float(mean_absolute_error(y, pred)),
        "r2": float(r2_score(y, pred)),
    }
    return Trained(artifact, predict, metrics)


@dataclass(frozen=True)
class Recipe:
    """How one example model is made."""

    name: str
    data: Callable[[], Dataset]
    train: Callable[[Dataset], Trained]


RECIPES = (
    Recipe("diabetes-risk", diabetes_risk_data, train_diabetes_risk),
    Recipe("tumor-classifier", tumor_data, train_tumor),
    Recipe("digit-recognizer", digits_data, train_digits),
    Recipe("disease-progression", progression_data, train_progression),
)


# --------------------------------------------------------------------------------------------
# Manifest: targeted, comment-keeping edits.

YamlPath = tuple[str | int, ...]


class ManifestEditError(Exception):
    """The manifest is not laid out as train.py can edit it."""


def _child(node: yaml.Node, key: str | int) -> yaml.Node | None:
    if isinstance(key, int):
        if isinstance(node, yaml.SequenceNode) and key < len(node.value):
            return node.value[key]
        return None
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def find_node(root: yaml.Node, path: YamlPath) -> yaml.Node | None:
    node: yaml.Node | None = root
    for key in path:
        if node is None:
            return None
        node = _child(node, key)
    return node


def yaml_value(value: Any) -> str:
    """A value as one line of flow-style YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # YAML 1.1 (PyYAML) reads 2e-06 as a string: its floats need a dot in the mantissa.
        mantissa, e, exponent = repr(value).partition("e")
        return f"{mantissa}.0{e}{exponent}" if e and "." not in mantissa else repr(value)
    if isinstance(value, int | str):
        return json.dumps(value) if isinstance(value, str) and not value.isalnum() else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} into a manifest")


def edit_manifest(text: str, edits: dict[YamlPath, Any]) -> str:
    """Replace the values at the given paths, leaving every other character of text as it is.

    Each target must exist and be a scalar or a flow-style collection ([a, b], {k: v}); block
    collections span lines whose ends YAML does not mark precisely enough to splice safely.
    """
    root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if root is None:
        raise ManifestEditError("the manifest is empty")
    spans: list[tuple[int, int, str]] = []
    for path, value in edits.items():
        node = find_node(root, path)
        where = ".".join(str(p) for p in path)
        if node is None:
            raise ManifestEditError(f"{where} is missing")
        if isinstance(node, yaml.CollectionNode) and not node.flow_style:
            line = node.start_mark.line + 1
            raise ManifestEditError(
                f"{where} (line {line}) must be in flow style, e.g. [1, 2] or {{a: 1}}"
            )
        spans.append((node.start_mark.index, node.end_mark.index, yaml_value(value)))
    for start, end, new in sorted(spans, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def case_edits(
    document: dict[str, Any], trained: Trained, data: Dataset, name: str
) -> dict[YamlPath, Any]:
    """New expected values for every output each test case pins (the manifest picks which)."""
    import pandas as pd

    edits: dict[YamlPath, Any] = {}
    cases = document.get("spec", {}).get("tests", {}).get("cases", [])
    for index, case in enumerate(cases):
        given = set(case["input"])
        if given != set(data.inputs):
            missing, extra = sorted(set(data.inputs) - given), sorted(given - set(data.inputs))
            raise ManifestEditError(
                f"{name}: test case {case['name']!r} must give exactly the input columns"
                f" (missing {missing}, unknown {extra})"
            )
        row = pd.DataFrame([{c: case["input"][c] for c in data.inputs}])
        for column in data.inputs:
            if data.train[column].dtype != object:
                row[column] = row[column].astype(data.train[column].dtype)
        outputs = trained.predict(row)
        aliases = {"prediction": "variable"}
        for key in case["expect"]:
            output = aliases.get(key, key)
            if output not in outputs:
                raise ManifestEditError(
                    f"{name}: test case {case['name']!r} expects {key!r}, which the model does not"
                    f" output (it has {sorted(outputs)})"
                )
            edits[("spec", "tests", "cases", index, "expect", key)] = outputs[output][0]
    return edits


# --------------------------------------------------------------------------------------------
# Driver.


@dataclass(frozen=True)
class Build:
    """What retraining one model will write, computed before anything is written."""

    writes: tuple[tuple[Path, bytes], ...]
    summary: str


def _referenced(spec: dict[str, Any], keys: YamlPath, folder: Path, name: str) -> Path:
    """The file a manifest's {path, sha256} entry names; it must lie in the model's folder."""
    node: Any = spec
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    where = ".".join(["spec", *map(str, keys)])
    if not isinstance(node, str):
        raise ManifestEditError(f"{name}: {where} is missing")
    target = (folder / node).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise ManifestEditError(f"{name}: {where} ({node}) points outside {folder}")
    return target


def build(recipe: Recipe, folder: Path, export_dir: Path | None) -> Build:
    """Train one model and work out its files and manifest edits; writes nothing."""
    manifest_path = folder / "model.yaml"
    text = manifest_path.read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    spec = document.get("spec", {}) if isinstance(document, dict) else {}

    data = recipe.data()
    trained = recipe.train(data)
    files = {
        ("artifact",): trained.artifact,
        ("evaluation", "data"): csv_bytes(data.eval),
        ("monitoring", "drift", "reference"): csv_bytes(data.reference),
    }
    writes: list[tuple[Path, bytes]] = []
    edits: dict[YamlPath, Any] = {}
    for keys, blob in files.items():
        writes.append((_referenced(spec, (*keys, "path"), folder, recipe.name), blob))
        edits[("spec", *keys, "sha256")] = sha256_bytes(blob)
    training_csv = csv_bytes(data.train)
    if "sha256" in spec.get("lineage", {}).get("training_data", {}):
        edits[("spec", "lineage", "training_data", "sha256")] = sha256_bytes(training_csv)
    edits.update(case_edits(document, trained, data, recipe.name))
    writes.append((manifest_path, edit_manifest(text, edits).encode("utf-8")))
    if export_dir is not None:
        writes.append((export_dir / f"{recipe.name}.train.csv", training_csv))

    if spec.get("framework") == "sklearn":
        wanted = skops_untrusted_types(trained.artifact)
        policy = yaml.safe_load((HERE / ".mlops" / "policy.yaml").read_text()) or {}
        listed = set(policy.get("trusted_types") or [])
        if not set(wanted) <= listed:
            raise ManifestEditError(
                f"{recipe.name}: the artifact needs these types trusted: {wanted}; the policy's"
                f" trusted_types (.mlops/policy.yaml) lists {sorted(listed)}. Review them, then"
                " add them there in a pull request of its own."
            )

    metrics = ", ".join(f"{k} {v:.4f}" for k, v in trained.metrics.items())
    summary = (
        f"{recipe.name}: {len(trained.artifact):,} bytes; eval {len(data.eval)} rows: {metrics}"
    )
    return Build(tuple(writes), summary)


def build_all(recipes: Sequence[Recipe], models: Path, export_dir: Path | None) -> None:
    """Retrain the models, then write: a failure in any model leaves every file as it was."""
    builds = [build(recipe, models / recipe.name, export_dir) for recipe in recipes]
    for done in builds:
        for path, blob in done.writes:
            _write(path, blob)
        print(done.summary)


def _write(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(blob)
    partial.replace(path)


def _differences(a: Path, b: Path) -> Iterable[str]:
    for path in sorted(p for p in a.rglob("*") if p.is_file()):
        other = b / path.relative_to(a)
        if not other.is_file() or not filecmp.cmp(path, other, shallow=False):
            yield f"{a.name}/{path.relative_to(a)}"


def main(argv: Sequence[str] | None = None) -> int:
    # Single-threaded BLAS/OpenMP, set before numpy and the frameworks load (they are imported
    # lazily): thread-count dependent reductions are the usual reason two runs differ in the
    # last bits.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="models to retrain (default: all)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="retrain into a scratch copy and list the files whose bytes differ (exit 1 if any)",
    )
    parser.add_argument(
        "--export-training-data",
        type=Path,
        metavar="DIR",
        help="also write each training split as DIR/<model>.train.csv",
    )
    args = parser.parse_args(argv)

    known = {r.name: r for r in RECIPES}
    unknown = sorted(set(args.models) - set(known))
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)} (known: {', '.join(known)})")
    recipes = [known[n] for n in args.models] if args.models else list(RECIPES)

    try:
        if not args.check:
            build_all(recipes, MODELS, args.export_training_data)
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp) / "models"
            shutil.copytree(MODELS, scratch)
            build_all(recipes, scratch, args.export_training_data)
            changed = [d for r in recipes for d in _differences(MODELS / r.name, scratch / r.name)]
    except ManifestEditError as error:
        print(f"train.py: {error}", file=sys.stderr)
        return 2
    for name in changed:
        print(f"differs after retraining: models/{name}")
    if changed:
        print(f"{len(changed)} file(s) differ")
        return 1
    print("reproducible: every file is byte-identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
