"""`mlops-ci test`: declared cases and metric thresholds on real models, digest refusal, parity."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sklearn import datasets, metrics
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge

from mlops_ci import cli, convert, evaluate, manifest
from mlops_ci.digest import sha256_file
from mlops_ci.errors import CheckFailed
from mlops_ci.report import terminal
from tests.stage_models import ModelRepo, make_repo


def _split(X: np.ndarray, y: np.ndarray, n_train: int) -> tuple[Any, Any, Any, Any]:
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


@pytest.fixture(scope="module")
def cancer(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRepo, Any, Any, Any]:
    X, y = datasets.load_breast_cancer(return_X_y=True)
    Xtr, ytr, Xte, yte = _split(X, y, 400)
    model = RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0).fit(Xtr, ytr)
    root = tmp_path_factory.mktemp("cancer")
    repo = make_repo(root, "tumor", model, Xte, yte)
    return repo, model, Xte, yte


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRepo, Any, Any, Any]:
    X, y = datasets.load_iris(return_X_y=True)
    Xtr, ytr, Xte, yte = _split(X, y, 90)
    model = LogisticRegression(max_iter=500).fit(Xtr, ytr)
    root = tmp_path_factory.mktemp("iris")
    # a slice column the model does not read: which greenhouse the flower came from
    site = np.where(np.arange(len(yte)) % 3 == 0, 1, 2)
    repo = make_repo(root, "iris", model, Xte, yte, extra_columns={"site": site})
    return repo, model, Xte, yte


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRepo, Any, Any, Any]:
    X, y = datasets.load_diabetes(return_X_y=True)
    Xtr, ytr, Xte, yte = _split(X, y, 300)
    model = Ridge(alpha=0.1).fit(Xtr, ytr)
    root = tmp_path_factory.mktemp("diabetes")
    repo = make_repo(root, "progression", model, Xte, yte.astype(np.float64))
    return repo, model, Xte, yte


def _with(repo: ModelRepo, tests: dict[str, Any], **spec: Any) -> manifest.Manifest:
    """The repo's manifest with `spec.tests` (and other spec keys) replaced, reloaded."""
    doc = yaml.safe_load(repo.manifest.read_text())
    doc["spec"]["tests"] = tests
    for key, value in spec.items():
        doc["spec"][key] = value
    repo.manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return manifest.load(repo.manifest)


def _row(X: np.ndarray, i: int) -> dict[str, float]:
    return {f"f{j}": float(v) for j, v in enumerate(X[i])}


def test_declared_cases_and_metrics_pass_on_a_good_model(cancer: Any, tmp_path: Path) -> None:
    repo, model, Xte, yte = cancer
    accuracy = metrics.accuracy_score(yte, model.predict(Xte))
    proba = model.predict_proba(Xte[:1])[0]
    m = _with(
        repo,
        {
            "cases": [
                {
                    "name": "first holdout row",
                    "input": _row(Xte, 0),
                    "expect": {"label": int(model.predict(Xte[:1])[0])},
                },
                {
                    "name": "probabilities of row 0",
                    "input": _row(Xte, 0),
                    "expect": {"probabilities": [float(p) for p in proba]},
                    "tolerance": 1e-5,
                },
            ],
            "metrics": [
                {"metric": "accuracy", "min": round(accuracy - 0.02, 3)},
                {"metric": "roc_auc", "min": 0.9},
                {"metric": "log_loss", "max": 0.5},
                {"metric": "f1", "min": 0.8},
            ],
        },
    )
    out = tmp_path / "out"
    result = evaluate.run(m, repo.onnx.parent, out)

    assert result.passed, terminal.tests(result)
    doc = json.loads((out / "test.json").read_text())
    assert doc["passed"] is True
    assert doc["counts"]["fail"] == 0
    by_name = {c["name"]: c for c in doc["checks"]}
    assert by_name["first holdout row"]["status"] == "pass"
    assert by_name["accuracy"]["value"] == pytest.approx(accuracy, abs=1e-9)
    assert by_name["evaluation data tumor holdout"]["detail"] == "169 rows, digest ok"
    assert by_name["native vs ONNX parity"]["status"] == "skip"


def test_failing_case_and_threshold_exit_1_and_are_listed_first(
    cancer: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, model, Xte, _ = cancer
    predicted = int(model.predict(Xte[:1])[0])
    _with(
        repo,
        {
            "cases": [
                {"name": "right label", "input": _row(Xte, 0), "expect": {"label": predicted}},
                {"name": "wrong label", "input": _row(Xte, 0), "expect": {"label": 1 - predicted}},
            ],
            "metrics": [
                {"metric": "accuracy", "min": 0.5},
                {"metric": "accuracy", "min": 0.999},
            ],
        },
    )
    out = tmp_path / "out"
    code = cli.main(["test", str(repo.manifest), "--onnx", str(repo.onnx), "--out", str(out)])

    assert code == 1
    doc = json.loads((out / "test.json").read_text())
    statuses = [c["status"] for c in doc["checks"]]
    assert statuses[:2] == ["fail", "fail"]
    assert "fail" not in statuses[2:]
    failing = {c["name"]: c["detail"] for c in doc["checks"] if c["status"] == "fail"}
    assert failing.keys() == {"wrong label", "accuracy"}
    assert f"expected {1 - predicted}, got {predicted}" in failing["wrong label"]
    assert "outside ≥ 0.999" in failing["accuracy"]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("FAIL")
    assert printed[-1] == "tumor 1.0.0: tests FAILED (2 of 6 checks)"


def test_multiclass_per_class_and_slice_metrics_match_scikit_learn(
    iris: Any, tmp_path: Path
) -> None:
    repo, model, Xte, yte = iris
    site = np.where(np.arange(len(yte)) % 3 == 0, 1, 2)
    pred = model.predict(Xte)
    proba = model.predict_proba(Xte)
    expected = {
        "f1": metrics.f1_score(yte, pred, average="macro"),
        "recall[class=2]": metrics.recall_score(yte == 2, pred == 2),
        "roc_auc/weighted": metrics.roc_auc_score(
            yte, proba, multi_class="ovr", average="weighted"
        ),
        "log_loss": metrics.log_loss(yte, proba),
        "accuracy[site=1]": metrics.accuracy_score(yte[site == 1], pred[site == 1]),
        "balanced_accuracy": metrics.balanced_accuracy_score(yte, pred),
        "precision/micro": metrics.precision_score(yte, pred, average="micro"),
    }
    m = _with(
        repo,
        {
            "metrics": [
                {"metric": "f1", "min": 0.0},
                {"metric": "recall", "class": 2, "min": 0.0},
                {"metric": "roc_auc", "average": "weighted", "min": 0.0},
                {"metric": "log_loss", "max": 10.0},
                {"metric": "accuracy", "slice": {"column": "site", "value": 1}, "min": 0.0},
                {"metric": "balanced_accuracy", "min": 0.0},
                {"metric": "precision", "average": "micro", "min": 0.0},
                {"metric": "accuracy", "slice": {"column": "site", "value": 7}, "min": 0.0},
            ]
        },
    )
    result = evaluate.run(m, None, tmp_path, onnx=repo.onnx)

    values = {c.name: c.value for c in result.checks if c.kind == "metric"}
    for name, want in expected.items():
        # ONNX computes in float32, so probabilities differ from sklearn's in the 7th digit
        assert values[name] == pytest.approx(want, abs=1e-4), name
    empty = next(c for c in result.checks if c.name == "accuracy[site=7]")
    assert empty.status == "fail" and "no evaluation row has site=7" in empty.detail
    assert [c.name for c in result.failures] == ["accuracy[site=7]"]


def test_regression_thresholds_and_tolerance_cases(diabetes: Any, tmp_path: Path) -> None:
    repo, model, Xte, yte = diabetes
    pred = model.predict(Xte)
    rmse = float(np.sqrt(metrics.mean_squared_error(yte, pred)))
    m = _with(
        repo,
        {
            "cases": [
                {
                    "name": "close enough",
                    "input": _row(Xte, 3),
                    "expect": {"prediction": float(pred[3]) + 0.01},
                    "tolerance": 0.05,
                },
                {
                    "name": "too far",
                    "input": _row(Xte, 3),
                    "expect": {"variable": float(pred[3]) + 1.0},
                    "tolerance": 0.05,
                },
            ],
            "metrics": [
                {"metric": "rmse", "max": rmse + 1},
                {"metric": "rmse", "max": rmse - 1},
                {"metric": "mae", "max": 100},
                {"metric": "r2", "min": 0.2, "max": 1.0},
                {"metric": "mape", "max": 1.0},
            ],
        },
    )
    result = evaluate.run(m, None, tmp_path, onnx=repo.onnx)

    assert [c.name for c in result.failures] == ["too far", "rmse"]
    failed_rmse = result.failures[1]
    assert failed_rmse.value == pytest.approx(rmse, rel=1e-4)
    assert "± 0.05" in result.failures[0].detail
    r2 = next(c for c in result.checks if c.name == "r2")
    assert r2.value == pytest.approx(metrics.r2_score(yte, pred), abs=1e-4)


def test_wrong_evaluation_data_digest_is_refused(cancer: Any, tmp_path: Path) -> None:
    repo, *_ = cancer
    _with(repo, {"metrics": [{"metric": "accuracy", "min": 0.5}]})
    copy = tmp_path / "repo"
    shutil.copytree(repo.root, copy)
    manifest_path = copy / repo.manifest.relative_to(repo.root)
    m = manifest.load(manifest_path)
    # the data changes after the manifest was read: the stage itself must refuse it
    data_path = manifest_path.parent / "eval.csv"
    data_path.write_text(data_path.read_text().replace("\n", "\n\n", 1))
    result = evaluate.run(m, None, tmp_path / "out", onnx=repo.onnx)

    assert not result.passed
    refused = result.failures[0]
    assert refused.kind == "data"
    assert "evaluation data digest mismatch" in refused.detail
    accuracy = next(c for c in result.checks if c.name == "accuracy")
    assert accuracy.status == "fail" and accuracy.value is None
    assert "was refused" in accuracy.detail


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda lines: [*lines[:2], lines[2].rsplit(",", 1)[0] + ",nan", *lines[3:]], "eval.csv:3"),
        (lambda lines: lines[:1], "has no rows"),
    ],
    ids=["nan-target", "header-only"],
)
def test_evaluation_data_no_metric_is_defined_on_is_refused_not_an_internal_error(
    diabetes: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, expected: str
) -> None:
    repo, *_ = diabetes
    copy = tmp_path / "repo"
    shutil.copytree(repo.root, copy)
    manifest_path = copy / repo.manifest.relative_to(repo.root)
    data_path = manifest_path.parent / "eval.csv"
    data_path.write_text("\n".join(edit(data_path.read_text().splitlines())) + "\n")
    doc = yaml.safe_load(manifest_path.read_text())
    doc["spec"]["evaluation"]["data"]["sha256"] = sha256_file(data_path)
    doc["spec"]["tests"] = {"metrics": [{"metric": "rmse", "max": 1e9}]}
    manifest_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "out"
    # scikit-learn raised (on a NaN, on no rows): "internal error", exit 2, and no test.json
    code = cli.main(["test", str(manifest_path), "--onnx", str(repo.onnx), "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 1 and "internal error" not in printed.err
    checks = json.loads((out / "test.json").read_text())["checks"]
    refused = next(c for c in checks if c["kind"] == "data")
    assert refused["status"] == "fail" and expected in refused["detail"]


def test_a_model_that_predicts_nan_fails_its_metrics_instead_of_passing_or_crashing(
    cancer: Any, diabetes: Any, tmp_path: Path
) -> None:
    import onnx
    from onnx import TensorProto, helper

    def nan_model(width: int, output: str, columns: int) -> Path:
        # every prediction NaN: x @ W, with a NaN in every column of W
        nans = [np.nan] * (width * columns)
        w = helper.make_tensor("w", TensorProto.FLOAT, [width, columns], nans)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["input", "w"], [output])],
            "nan",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, width])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, columns])],
            [w],
        )
        path = tmp_path / f"{output}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return path

    # regression: scikit-learn raised on the NaN, an "internal error" with no verdict
    repo, *_ = diabetes
    m = _with(repo, {"metrics": [{"metric": "mae", "max": 1e9}]})
    result = evaluate.run(m, None, tmp_path / "reg", onnx=nan_model(10, "variable", 1))
    (mae,) = result.failures
    assert "NaN" in mae.detail and "'variable'" in mae.detail
    # a case may expect the NaN (validate lets expectations hold .nan): NaN - NaN is NaN, which
    # is within no tolerance, so such a case could never pass
    cases = [
        {"name": name, "input": {f"f{i}": 0.0 for i in range(10)}, "expect": {"prediction": v}}
        for name, v in (("nan", float("nan")), ("number", 1.0))
    ]
    m = _with(repo, {"cases": cases})
    result = evaluate.run(m, None, tmp_path / "cases", onnx=nan_model(10, "variable", 1))
    assert [c.name for c in result.failures] == ["number"]

    # classification without a label output: argmax read every NaN row as class 0, so the
    # accuracy was the share of class 0 and passed a low bar
    repo, _, _, yte = cancer
    m = _with(repo, {"metrics": [{"metric": "accuracy", "min": 0.3}]})
    assert (yte == 0).mean() > 0.3
    result = evaluate.run(m, None, tmp_path / "cls", onnx=nan_model(30, "probabilities", 2))
    (accuracy,) = result.failures
    assert accuracy.value is None and "'probabilities'" in accuracy.detail


def test_integer_labels_beyond_a_floats_precision_compare_exactly() -> None:
    big = 123456789012345678
    assert float(big) == float(big + 1)  # compared as floats, the two labels were one
    label = np.array([big], dtype=np.int64)
    assert evaluate._compare(label, big + 1, 0.0, exact=True)[0] is False
    assert evaluate._compare(label, big, 0.0, exact=True)[0] is True
    assert evaluate._compare(np.array([[big, 2]]), [big + 1, 2], 0.0, exact=True)[0] is False
    assert evaluate._compare(label, float(big), 0.0, exact=True)[0] is True  # `label: 1.0`


def test_parity_verdict_comes_from_convert_json(cancer: Any, tmp_path: Path) -> None:
    repo, *_ = cancer
    m = _with(repo, {})
    convert_dir = tmp_path / "convert"
    assert convert.run(m, convert_dir).passed
    result = evaluate.run(m, convert_dir, tmp_path / "out")

    (parity,) = [c for c in result.checks if c.kind == "parity"]
    assert parity.status == "pass"
    assert parity.detail.startswith("169 rows of tumor holdout, max |Δ| ")
    assert "label agreement 1" in parity.detail

    report = convert_dir / "convert.json"
    doc = json.loads(report.read_text())
    doc["parity"]["status"] = "failed"
    doc["parity"]["label_agreement"] = 0.97
    doc["parity"]["outputs"][0].update(passed=False, problem="5 labels differ")
    report.write_text(json.dumps(doc))
    result = evaluate.run(m, convert_dir, tmp_path / "out")

    assert not result.passed
    parity = result.failures[0]
    assert parity.kind == "parity"
    assert "label agreement 0.97" in parity.detail and "label: 5 labels differ" in parity.detail


def test_expectation_naming_no_output_fails_with_the_choices(cancer: Any, tmp_path: Path) -> None:
    repo, _, Xte, _ = cancer
    # validate refuses this manifest already; the stage must not trust that it ran
    good = _with(repo, {})
    doc = copy.deepcopy(good.data)
    doc["spec"]["tests"] = {
        "cases": [{"name": "typo", "input": _row(Xte, 0), "expect": {"lable": 1}}]
    }
    m = manifest.Manifest(good.path, good.root, doc)
    result = evaluate.run(m, None, tmp_path, onnx=repo.onnx)

    (typo,) = result.failures
    assert "'lable'" in typo.detail and "label, probabilities" in typo.detail


def test_case_missing_an_input_column_fails_instead_of_crashing(
    cancer: Any, tmp_path: Path
) -> None:
    repo, _, Xte, _ = cancer
    row = _row(Xte, 0)
    del row["f3"]
    # validate now catches this at commit time, with the case's line ...
    with pytest.raises(
        CheckFailed,
        match=r"model\.yaml:\d+:\d+: spec\.tests\.cases\[0\]\.input: "
        r"missing column 'f3'",
    ):
        _with(repo, {"cases": [{"name": "short row", "input": row, "expect": {"label": 1}}]})
    # ... and the test stage, handed such a manifest anyway, still fails the case cleanly.
    doc = yaml.safe_load(repo.manifest.read_text())
    m = manifest.Manifest(repo.manifest.absolute(), repo.manifest.parent.resolve(), doc)
    result = evaluate.run(m, None, tmp_path, onnx=repo.onnx)

    (short,) = result.failures
    assert "'f3'" in short.detail
