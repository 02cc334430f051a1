"""`mlops-ci convert`: every framework converts a model trained here, and parity is proven on data.

Models are trained once per module on scikit-learn's bundled data sets and written as real
artifacts (skops, XGBoost JSON, LightGBM text, torch.export, TorchScript, ONNX) beside a real
manifest and evaluation CSV.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import helper
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris

from mlops_ci import cli, convert, manifest
from mlops_ci.errors import CheckFailed
from mlops_ci.manifest import Manifest
from mlops_ci.report import markdown as report_md
from mlops_ci.report import terminal

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_csv(path: Path, columns: dict[str, Any]) -> Path:
    names = list(columns)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for row in zip(*(columns[n] for n in names), strict=True):
            writer.writerow(
                [repr(float(v)) if isinstance(v, float | np.floating) else v for v in row]
            )
    return path


def write_model(
    folder: Path,
    *,
    framework: str,
    artifact: Path,
    signature: dict[str, Any],
    data: dict[str, Any] | None,
    target: str | None,
    spec_extra: dict[str, Any] | None = None,
) -> Manifest:
    """A model folder with model.yaml, the artifact and eval.csv; returns the loaded manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {
        "framework": framework,
        "artifact": {"path": artifact.name, "sha256": sha256(artifact)},
        **({"signature": signature} if signature else {}),
        **(spec_extra or {}),
    }
    if data is not None:
        csv_path = write_csv(folder / "eval.csv", data)
        spec["evaluation"] = {
            "name": "held-out rows",
            "data": {"path": "eval.csv", "sha256": sha256(csv_path)},
            "target": target,
        }
    doc = {
        "apiVersion": "mlops-ci/v1",
        "kind": "Model",
        "metadata": {
            "name": folder.name,
            "version": "1.0.0",
            "owners": ["@alice"],
            "risk": "low",
        },
        "spec": spec,
    }
    path = folder / "model.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return manifest.load(path, root=folder.parent)


def classifier_outputs(n_classes: int) -> list[dict[str, Any]]:
    return [
        {"name": "label", "dtype": "int64", "shape": [-1], "role": "label"},
        {
            "name": "probabilities",
            "dtype": "float32",
            "shape": [-1, n_classes],
            "role": "probabilities",
        },
    ]


REGRESSOR_OUTPUTS = [
    {"name": "variable", "dtype": "float32", "shape": [-1, 1], "role": "prediction"}
]


def one_input(n: int, columns: list[str]) -> list[dict[str, Any]]:
    return [{"name": "input", "dtype": "float32", "shape": [-1, n], "columns": columns}]


# --- models trained once per module ------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-repo")


@pytest.fixture(scope="module")
def sklearn_mixed(repo: Path) -> Manifest:
    """ColumnTransformer(numeric, string) -> LogisticRegression, on iris plus a string column."""
    import pandas as pd
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    iris = load_iris()
    frame = pd.DataFrame(iris.data, columns=IRIS_COLUMNS)
    frame["size"] = np.where(frame.sepal_length > 5.8, "large", "small")
    model = Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [
                        ("numeric", StandardScaler(), IRIS_COLUMNS),
                        ("text", OneHotEncoder(handle_unknown="ignore"), ["size"]),
                    ]
                ),
            ),
            ("classifier", LogisticRegression(max_iter=500)),
        ]
    ).fit(frame, iris.target)
    folder = repo / "iris-mixed"
    folder.mkdir()
    sio.dump(model, folder / "model.skops")
    inputs = [{"name": c, "dtype": "float32", "shape": [-1, 1]} for c in IRIS_COLUMNS]
    inputs.append({"name": "size", "dtype": "string", "shape": [-1, 1]})
    data = {c: frame[c].to_numpy() for c in [*IRIS_COLUMNS, "size"]}
    data["species"] = iris.target
    return write_model(
        folder,
        framework="sklearn",
        artifact=folder / "model.skops",
        signature={"inputs": inputs, "outputs": classifier_outputs(3)},
        data=data,
        target="species",
    )


@pytest.fixture(scope="module")
def sklearn_regressor(repo: Path) -> Manifest:
    """StandardScaler -> Ridge on diabetes, fitted on a plain array (one [-1, 10] input)."""
    import skops.io as sio
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    diabetes = load_diabetes()
    model = make_pipeline(StandardScaler(), Ridge(alpha=0.5)).fit(diabetes.data, diabetes.target)
    folder = repo / "diabetes-ridge"
    folder.mkdir()
    sio.dump(model, folder / "model.skops")
    data = {n: diabetes.data[:, i] for i, n in enumerate(diabetes.feature_names)}
    data["progression"] = diabetes.target
    return write_model(
        folder,
        framework="sklearn",
        artifact=folder / "model.skops",
        signature={
            "inputs": one_input(10, list(diabetes.feature_names)),
            "outputs": REGRESSOR_OUTPUTS,
        },
        data=data,
        target="progression",
        spec_extra={"conversion": {"parity": {"atol": 1e-3, "rtol": 1e-4}}},
    )


@pytest.fixture(scope="module")
def xgboost_binary(repo: Path) -> Manifest:
    import xgboost

    cancer = load_breast_cancer()
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3},
        xgboost.DMatrix(cancer.data, label=cancer.target),
        num_boost_round=20,
    )
    folder = repo / "cancer-xgb"
    folder.mkdir()
    booster.save_model(folder / "model.json")
    columns = [f"f{i}" for i in range(30)]
    data: dict[str, Any] = {c: cancer.data[:, i] for i, c in enumerate(columns)}
    data["malignant"] = cancer.target
    return write_model(
        folder,
        framework="xgboost",
        artifact=folder / "model.json",
        signature={"inputs": one_input(30, columns), "outputs": classifier_outputs(2)},
        data=data,
        target="malignant",
        spec_extra={"conversion": {"opset": 15}},
    )


@pytest.fixture(scope="module")
def lightgbm_multiclass(repo: Path) -> Manifest:
    import lightgbm

    iris = load_iris()
    booster = lightgbm.train(
        {"objective": "multiclass", "num_class": 3, "num_leaves": 7, "verbose": -1},
        lightgbm.Dataset(iris.data, label=iris.target),
        num_boost_round=15,
    )
    folder = repo / "iris-lgbm"
    folder.mkdir()
    booster.save_model(folder / "model.txt")
    data: dict[str, Any] = {c: iris.data[:, i] for i, c in enumerate(IRIS_COLUMNS)}
    data["species"] = iris.target
    return write_model(
        folder,
        framework="lightgbm",
        artifact=folder / "model.txt",
        signature={"inputs": one_input(4, IRIS_COLUMNS), "outputs": classifier_outputs(3)},
        data=data,
        target="species",
        spec_extra={"conversion": {"opset": 15, "parity": {"atol": 1e-5}}},
    )


@pytest.fixture(scope="module")
def digits_module() -> Any:
    """A small MLP trained briefly on digits: scaling inside, softmax probabilities out."""
    import torch

    digits = load_digits()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10), torch.nn.Softmax(dim=-1)
    )
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimiser.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(model(x) + 1e-9), y)
        loss.backward()
        optimiser.step()
    return model.eval()


def _digits_manifest(
    repo: Path, name: str, artifact_name: str, save: Callable[[Path], None]
) -> Manifest:
    digits = load_digits()
    folder = repo / name
    folder.mkdir()
    save(folder / artifact_name)
    columns = [f"px{i}" for i in range(64)]
    data: dict[str, Any] = {c: digits.data[:300, i] / 16.0 for i, c in enumerate(columns)}
    data["digit"] = digits.target[:300]
    return write_model(
        folder,
        framework="pytorch",
        artifact=folder / artifact_name,
        signature={
            "inputs": one_input(64, columns),
            "outputs": [
                {
                    "name": "probabilities",
                    "dtype": "float32",
                    "shape": [-1, 10],
                    "role": "probabilities",
                }
            ],
        },
        data=data,
        target="digit",
        spec_extra={"conversion": {"opset": 18}},
    )


@pytest.fixture(scope="module")
def pytorch_export(repo: Path, digits_module: Any) -> Manifest:
    import torch

    def save(path: Path) -> None:
        program = torch.export.export(
            digits_module,
            (torch.zeros(2, 64),),
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
        torch.export.save(program, str(path))

    return _digits_manifest(repo, "digits-export", "model.pt2", save)


@pytest.fixture(scope="module")
def pytorch_torchscript(repo: Path, digits_module: Any) -> Manifest:
    import torch

    def save(path: Path) -> None:
        torch.jit.save(torch.jit.trace(digits_module, torch.zeros(2, 64)), str(path))

    return _digits_manifest(repo, "digits-script", "model.pt", save)


@pytest.fixture(scope="module")
def converted(repo: Path) -> dict[str, convert.ConvertResult]:
    """Conversion results by fixture name, so each model converts once per module."""
    return {}


def converted_result(
    request: pytest.FixtureRequest, cache: dict[str, convert.ConvertResult], fixture: str, out: Path
) -> tuple[Manifest, convert.ConvertResult]:
    m: Manifest = request.getfixturevalue(fixture)
    if fixture not in cache:
        cache[fixture] = convert.run(m, out / fixture)
    return m, cache[fixture]


ALL_MODELS = [
    "sklearn_mixed",
    "sklearn_regressor",
    "xgboost_binary",
    "lightgbm_multiclass",
    "pytorch_export",
    "pytorch_torchscript",
]


# --- every framework ---------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ALL_MODELS)
def test_model_trained_here_converts_with_parity_proven(
    fixture: str,
    request: pytest.FixtureRequest,
    converted: dict[str, convert.ConvertResult],
    repo: Path,
) -> None:
    m, result = converted_result(request, converted, fixture, repo / "out")
    assert result.error is None, result.error
    assert result.checker == "passed"
    assert result.signature_problems == ()
    assert result.parity is not None
    assert result.parity.status == "passed", terminal.conversion(result)
    assert result.parity.rows > 100
    assert all(o.passed for o in result.parity.outputs)
    if m.task == "classification":
        assert result.parity.label_agreement == 1.0
    assert result.passed


@pytest.mark.parametrize("fixture", ALL_MODELS)
def test_written_onnx_model_exposes_exactly_the_signature_and_its_provenance(
    fixture: str,
    request: pytest.FixtureRequest,
    converted: dict[str, convert.ConvertResult],
    repo: Path,
) -> None:
    m, result = converted_result(request, converted, fixture, repo / "out")
    assert result.onnx_path is not None
    model = onnx.load(str(result.onnx_path))
    onnx.checker.check_model(model, full_check=True)
    initializers = {i.name for i in model.graph.initializer}
    assert [i.name for i in model.graph.input if i.name not in initializers] == [
        s.name for s in m.signature.inputs
    ]
    assert [o.name for o in model.graph.output] == [s.name for s in m.signature.outputs]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["model_name"] == m.name
    assert props["model_version"] == "1.0.0"
    assert props["source_artifact_sha256"] == m.artifact_sha256
    assert "mlops_ci_version" in props
    # no ZipMap: outputs are plain tensors, which is what Triton and the signature expect
    assert "ZipMap" not in {n.op_type for n in model.graph.node}


def test_convert_json_has_the_documented_shape(
    request: pytest.FixtureRequest, converted: dict[str, convert.ConvertResult], repo: Path
) -> None:
    converted_result(request, converted, "sklearn_mixed", repo / "out")
    doc = json.loads((repo / "out" / "sklearn_mixed" / "convert.json").read_text())
    assert doc["schema"] == "mlops-ci/convert/v1"
    assert doc["passed"] is True and doc["error"] is None
    assert doc["onnx"]["path"] == "model.onnx" and doc["onnx"]["checker"] == "passed"
    assert doc["onnx"]["sha256"] == sha256(repo / "out" / "sklearn_mixed" / "model.onnx")
    assert doc["signature"] == {"passed": True, "problems": []}
    parity = doc["parity"]
    assert parity["status"] == "passed" and parity["rows"] == 150
    assert {o["name"] for o in parity["outputs"]} == {"label", "probabilities"}
    assert set(doc["timings_s"]) == {"load", "convert", "check", "parity"}
    assert (
        "### ✅ Conversion: <code>iris-mixed</code>"
        in (repo / "out" / "sklearn_mixed" / "convert.md").read_text()
    )


def test_pytorch_records_which_exporter_was_used(
    request: pytest.FixtureRequest, converted: dict[str, convert.ConvertResult], repo: Path
) -> None:
    for fixture in ("pytorch_export", "pytorch_torchscript"):
        _, result = converted_result(request, converted, fixture, repo / "out")
        assert result.converter is not None and result.converter.startswith("torch.onnx")
        dims = onnx.load(str(result.onnx_path)).graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and dims[1].dim_value == 64  # dynamic batch, fixed features


def test_onnx_artifact_is_checked_and_passed_through(
    request: pytest.FixtureRequest, converted: dict[str, convert.ConvertResult], repo: Path
) -> None:
    source, first = converted_result(request, converted, "sklearn_regressor", repo / "out")
    folder = repo / "ridge-onnx"
    folder.mkdir()
    assert first.onnx_path is not None
    (folder / "model.onnx").write_bytes(first.onnx_path.read_bytes())
    diabetes = load_diabetes()
    data: dict[str, Any] = {n: diabetes.data[:, i] for i, n in enumerate(diabetes.feature_names)}
    data["progression"] = diabetes.target
    m = write_model(
        folder,
        framework="onnx",
        artifact=folder / "model.onnx",
        signature=source.data["spec"]["signature"],
        data=data,
        target="progression",
    )
    result = convert.run(m, repo / "out" / "ridge-onnx")
    assert result.passed, terminal.conversion(result)
    assert result.converter == "passthrough"
    assert result.parity is not None and result.parity.outputs[0].max_abs_diff == 0.0


def test_onnx_artifact_without_signature_is_passed_through_unedited(
    request: pytest.FixtureRequest, converted: dict[str, convert.ConvertResult], repo: Path
) -> None:
    _, first = converted_result(request, converted, "xgboost_binary", repo / "out")
    assert first.onnx_path is not None
    original = onnx.load(str(first.onnx_path))
    del original.opset_import[:]
    original.opset_import.extend(
        [helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)]
    )
    folder = repo / "cancer-onnx"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(original.SerializeToString())
    m = write_model(
        folder,
        framework="onnx",
        artifact=folder / "model.onnx",
        signature={},
        data=None,
        target=None,
    )
    result = convert.run(m, repo / "out" / "cancer-onnx")
    assert result.passed, terminal.conversion(result)
    assert result.parity is not None and result.parity.data.startswith("synthetic")
    written = onnx.load(str(result.onnx_path))
    assert result.opset == 13  # not raised to the default 17: an ONNX artifact is not edited
    assert written.graph == original.graph


# --- deliberately wrong conversions --------------------------------------------------------------


def _coefficients_scaled(onnx_path: Path, op_type: str) -> onnx.ModelProto:
    """The converted model with its `op_type` node's coefficients × 1.5: tampered after the
    conversion."""
    model = onnx.load(str(onnx_path))
    node = next(n for n in model.graph.node if n.op_type == op_type)
    coefficients = next(a for a in node.attribute if a.name == "coefficients")
    coefficients.floats[:] = [c * 1.5 for c in coefficients.floats]
    return model


def _native_sklearn(m: Manifest) -> tuple[Any, Any]:
    """The scikit-learn framework and the manifest's model loaded natively."""
    from mlops_ci import frameworks

    framework = frameworks.get("sklearn")
    return framework, framework.load(
        frameworks.Artifact(m.artifact_path, m.artifact_sha256, m.artifact_format)
    )


def test_model_altered_after_conversion_fails_parity_with_worst_rows(
    request: pytest.FixtureRequest, converted: dict[str, convert.ConvertResult], repo: Path
) -> None:

    m, result = converted_result(request, converted, "sklearn_mixed", repo / "out")
    assert result.onnx_path is not None
    model = _coefficients_scaled(result.onnx_path, "LinearClassifier")
    framework, native = _native_sklearn(m)
    parity = convert.check_parity(m, framework, native, model.SerializeToString(), m.signature)
    assert parity.status == "failed"
    probabilities = next(o for o in parity.outputs if o.name == "probabilities")
    assert not probabilities.passed and probabilities.max_abs_diff is not None
    assert probabilities.max_abs_diff > 1e-2
    assert 0 < len({w.row for w in parity.worst_rows}) <= convert.WORST_ROWS
    worst = parity.worst_rows[0]
    assert worst.where.endswith(f"eval.csv:{worst.row + 2}")  # header is line 1
    assert worst.native != worst.onnx
    section = report_md.conversion(
        convert.ConvertResult(**{**result.__dict__, "parity": parity})  # type: ignore[arg-type]
    )
    assert "Worst rows" in section and "❌ **parity failed**" in section


def test_a_native_nan_or_infinity_is_matched_only_by_the_same_value() -> None:
    from mlops_ci import data
    from mlops_ci.manifest import Signature, TensorSpec

    signature = Signature(
        (TensorSpec("x", "float32", (-1, 1)),),
        (TensorSpec("y", "float32", (-1, 1), role="prediction"),),
    )
    table = data.rows_table([{"x": 1.0}] * 6)
    inf, nan = np.inf, np.nan
    native = np.array([[nan], [nan], [inf], [-inf], [inf], [1.0]])
    onnx_out = np.array([[0.0], [nan], [0.0], [inf], [inf], [1.0]])

    def parity(rows: list[int]) -> convert.Parity:
        return convert.compare(
            table.select(np.array(rows)),
            "rows",
            signature,
            {"y": native[rows]},
            {"y": onnx_out[rows]},
            atol=1e-4,
            rtol=1e-3,
            min_label_agreement=1.0,
        )

    # a NaN or an infinite native value allowed any difference (atol + rtol × |native| is NaN
    # or infinite): NaN against 0, inf against 0, -inf against inf all "passed"
    for row in (0, 2, 3):
        assert parity([row]).status == "failed", row
    # the same NaN, the same infinity: the values agree
    assert parity([1, 4, 5]).status == "passed"
    (y,) = parity([0, 1, 2, 3, 4, 5]).outputs
    assert y.mismatched_values == 3


@pytest.mark.parametrize("field", ["atol", "rtol"])
def test_nan_tolerance_cannot_pass_a_model_whose_outputs_differ(
    field: str,
    request: pytest.FixtureRequest,
    converted: dict[str, convert.ConvertResult],
    repo: Path,
    tmp_path: Path,
) -> None:

    m, result = converted_result(request, converted, "sklearn_regressor", repo / "out")
    assert result.onnx_path is not None
    model = _coefficients_scaled(result.onnx_path, "LinearRegressor")
    # the same model and data, with a tolerance of NaN (YAML .nan: the schema's minimum: 0
    # does not refuse it, since NaN < 0 is false)
    parity = {"atol": 1e-3, "rtol": 1e-4, field: float("nan")}
    folder = tmp_path / "diabetes-ridge"
    folder.mkdir()
    text = m.path.read_text().replace("rtol: 0.0001", f"rtol: {parity['rtol']}")
    text = text.replace("atol: 0.001", f"atol: {parity['atol']}").replace("nan", ".nan")
    (folder / "model.yaml").write_text(text)
    for name in ("model.skops", "eval.csv"):
        (folder / name).write_bytes((m.path.parent / name).read_bytes())
    # validate refuses it now; convert, handed such a manifest all the same, refuses it too
    with pytest.raises(CheckFailed, match=rf"parity\.{field}: must be a finite number"):
        manifest.load(folder / "model.yaml", root=tmp_path)
    data = yaml.safe_load(text)
    nan_manifest = Manifest((folder / "model.yaml").absolute(), tmp_path, data)
    assert nan_manifest.section("conversion")["parity"][field] != parity[field]  # NaN
    framework, native = _native_sklearn(m)
    tampered = model.SerializeToString()
    assert convert.check_parity(m, framework, native, tampered, m.signature).status == "failed"
    with pytest.raises(CheckFailed, match=rf"spec\.conversion\.parity\.{field} is NaN"):
        convert.check_parity(nan_manifest, framework, native, tampered, m.signature)
    refused = convert.run(nan_manifest, tmp_path / "out")
    assert not refused.passed and f"parity.{field} is NaN" in (refused.error or "")


@pytest.mark.parametrize(("dtype", "passes"), [("float32", False), ("float64", True)])
def test_signature_with_too_narrow_a_dtype_fails_parity_with_worst_rows(
    dtype: str, passes: bool, repo: Path
) -> None:
    """Timestamps near 1.7e9 lose up to 64 s in float32: parity shows it, float64 is fine."""
    import skops.io as sio
    from sklearn.linear_model import LinearRegression

    diabetes = load_diabetes()
    seen_at = 1.7e9 + diabetes.data[:, 2] * 1e4  # a timestamp column carrying the bmi signal
    x = np.column_stack([diabetes.data[:, :2], seen_at])
    model = LinearRegression().fit(x, diabetes.target)
    folder = repo / f"timestamps-{dtype}"
    folder.mkdir()
    sio.dump(model, folder / "model.skops")
    columns = ["age", "sex", "seen_at"]
    data: dict[str, Any] = {c: x[:, i] for i, c in enumerate(columns)}
    data["progression"] = diabetes.target
    m = write_model(
        folder,
        framework="sklearn",
        artifact=folder / "model.skops",
        signature={
            "inputs": [{"name": "input", "dtype": dtype, "shape": [-1, 3], "columns": columns}],
            "outputs": [
                {"name": "variable", "dtype": dtype, "shape": [-1, 1], "role": "prediction"}
            ],
        },
        data=data,
        target="progression",
    )
    result = convert.run(m, repo / "out" / f"timestamps-{dtype}")
    assert result.checker == "passed" and result.signature_problems == ()
    assert result.parity is not None
    assert result.passed is passes, terminal.conversion(result)
    if not passes:
        assert result.parity.status == "failed"
        (variable,) = result.parity.outputs
        assert variable.max_abs_diff is not None and variable.max_abs_diff > 0.1
        assert len(result.parity.worst_rows) == convert.WORST_ROWS
        worst = result.parity.worst_rows[0]
        assert worst.abs_diff == pytest.approx(variable.max_abs_diff)
        assert f"eval.csv:{worst.row + 2}" in worst.where
        assert "worst" in terminal.conversion(result)


def test_signature_with_wrong_dtype_fails_naming_the_output(
    repo: Path, sklearn_regressor: Manifest
) -> None:
    folder = repo / "ridge-wrong-dtype"
    folder.mkdir()
    artifact = folder / "model.skops"
    artifact.write_bytes(sklearn_regressor.artifact_path.read_bytes())
    signature = json.loads(json.dumps(sklearn_regressor.data["spec"]["signature"]))
    signature["outputs"][0]["dtype"] = "int64"
    m = write_model(
        folder, framework="sklearn", artifact=artifact, signature=signature, data=None, target=None
    )
    result = convert.run(m, repo / "out" / "wrong-dtype")
    assert not result.passed
    assert result.signature_problems == (
        "output 'variable': the signature says dtype int64, the ONNX model has float32",
    )
    assert result.parity is not None and result.parity.status == "not-run"
    doc = json.loads((repo / "out" / "wrong-dtype" / "convert.json").read_text())
    assert doc["signature"]["passed"] is False


def test_manifest_without_data_proves_parity_on_synthetic_rows(
    repo: Path, xgboost_binary: Manifest
) -> None:
    folder = repo / "xgb-no-data"
    folder.mkdir()
    artifact = folder / "model.json"
    artifact.write_bytes(xgboost_binary.artifact_path.read_bytes())
    m = write_model(
        folder,
        framework="xgboost",
        artifact=artifact,
        signature=xgboost_binary.data["spec"]["signature"],
        data=None,
        target=None,
        spec_extra={"conversion": {"opset": 15}},
    )
    result = convert.run(m, repo / "out" / "xgb-no-data")
    assert result.parity is not None and result.parity.data.startswith("synthetic")
    assert result.passed, terminal.conversion(result)


def test_evaluation_csv_is_read_once_for_columns_and_parity(
    repo: Path, sklearn_regressor: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_ci import data

    reads: list[Path] = []
    read = data.load_csv

    def counting(path: Path, sha256: str) -> data.Table:
        reads.append(path)
        return read(path, sha256)

    monkeypatch.setattr(data, "load_csv", counting)
    result = convert.run(sklearn_regressor, repo / "out" / "read-once")
    assert result.passed, terminal.conversion(result)
    assert result.parity is not None and result.parity.data == "held-out rows"
    assert result.parity.rows == 442  # every row of the file: its header and its rows, one read
    assert reads == [sklearn_regressor.resolve("eval.csv")]


# --- errors that help ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel_ridge(repo: Path) -> Manifest:
    """KernelRidge: a real estimator that skl2onnx has no converter for."""
    import skops.io as sio
    from sklearn.kernel_ridge import KernelRidge

    diabetes = load_diabetes()
    folder = repo / "kernel-ridge"
    folder.mkdir()
    sio.dump(KernelRidge().fit(diabetes.data, diabetes.target), folder / "model.skops")
    return write_model(
        folder,
        framework="sklearn",
        artifact=folder / "model.skops",
        signature={
            "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 10]}],
            "outputs": REGRESSOR_OUTPUTS,
        },
        data=None,
        target=None,
    )


def test_estimator_without_converter_names_it_and_how_to_register_one(
    repo: Path, kernel_ridge: Manifest
) -> None:
    m = kernel_ridge
    result = convert.run(m, repo / "out" / "kernel-ridge")
    assert not result.passed
    assert result.error is not None
    assert "sklearn.kernel_ridge.KernelRidge" in result.error
    assert "update_registered_converter" in result.error and "--plugin" in result.error
    doc = json.loads((repo / "out" / "kernel-ridge" / "convert.json").read_text())
    assert doc["passed"] is False and doc["error"] == result.error
    assert doc["onnx"] is None and doc["parity"] is None


def test_debug_flag_shows_the_converter_traceback(
    repo: Path, kernel_ridge: Manifest, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kernel_ridge.path
    assert cli.main(["convert", str(path), "--out", str(repo / "out" / "kr")]) == 1
    quiet = capsys.readouterr().err
    assert "no converter for sklearn.kernel_ridge.KernelRidge" in quiet
    assert "Traceback" not in quiet
    assert cli.main(["convert", str(path), "--out", str(repo / "out" / "kr"), "--debug"]) == 1
    assert "MissingShapeCalculator" in capsys.readouterr().err


def test_evaluation_data_missing_a_column_is_one_clear_error(
    repo: Path, sklearn_mixed: Manifest
) -> None:
    folder = repo / "iris-missing-column"
    folder.mkdir()
    artifact = folder / "model.skops"
    artifact.write_bytes(sklearn_mixed.artifact_path.read_bytes())
    iris = load_iris()
    data: dict[str, Any] = {c: iris.data[:, i] for i, c in enumerate(IRIS_COLUMNS)}
    data["species"] = iris.target  # no "size" column
    m = write_model(
        folder,
        framework="sklearn",
        artifact=artifact,
        signature=sklearn_mixed.data["spec"]["signature"],
        data=data,
        target="species",
    )
    result = convert.run(m, repo / "out" / "missing-column")
    assert not result.passed and result.onnx_path is not None and result.parity is None
    assert result.error is not None
    assert "input 'size' needs column(s) 'size'" in result.error
    assert "parity could not run" in terminal.conversion(result)


def test_cli_exit_codes_and_one_line_errors(
    repo: Path, sklearn_regressor: Manifest, capsys: pytest.CaptureFixture[str]
) -> None:
    out = repo / "out" / "cli"
    assert cli.main(["convert", str(sklearn_regressor.path), "--out", str(out)]) == 0
    assert (out / "model.onnx").is_file() and (out / "convert.json").is_file()
    assert "passed" in capsys.readouterr().out

    tampered = repo / "tampered"
    tampered.mkdir()
    (tampered / "model.skops").write_bytes(sklearn_regressor.artifact_path.read_bytes())
    m = write_model(
        tampered,
        framework="sklearn",
        artifact=tampered / "model.skops",
        signature=sklearn_regressor.data["spec"]["signature"],
        data=None,
        target=None,
    )
    with (tampered / "model.skops").open("ab") as fh:
        fh.write(b"\0")  # the artifact changes after the manifest pinned it
    code = cli.main(["convert", str(m.path), "--out", str(repo / "out" / "tampered")])
    captured = capsys.readouterr()
    assert code == 1
    # manifest.load already compares digests; the framework loader checks again before reading
    assert "digest mismatch" in captured.err and str(m.artifact_path.name) in captured.err
    assert len(captured.err.strip().splitlines()) <= 3
    assert "Traceback" not in captured.out + captured.err

    with pytest.raises(SystemExit) as usage:
        cli.main(["convert", str(m.path)])  # --out is required
    assert usage.value.code == 2


def test_pt2_exported_with_a_fixed_batch_fails_the_signature_check_with_a_hint(
    repo: Path,
) -> None:
    import torch

    folder = repo / "fixed-batch"
    folder.mkdir()
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=-1)).eval()
    torch.export.save(torch.export.export(module, (torch.zeros(1, 4),)), str(folder / "model.pt2"))
    m = write_model(
        folder,
        framework="pytorch",
        artifact=folder / "model.pt2",
        signature={
            "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
            "outputs": [
                {
                    "name": "probabilities",
                    "dtype": "float32",
                    "shape": [-1, 3],
                    "role": "probabilities",
                }
            ],
        },
        data=None,
        target=None,
        spec_extra={"conversion": {"opset": 18}},
    )
    result = convert.run(m, repo / "out" / "fixed-batch")
    assert not result.passed
    assert "input 'input': the signature says shape [-1, 4], the ONNX model has [1, 4]" in (
        result.signature_problems
    )
    assert "Dim('batch')" in terminal.conversion(result)
