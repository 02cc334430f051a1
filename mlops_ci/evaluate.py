"""The test stage: a manifest's declared test cases, metric thresholds and the conversion's parity
verdict, checked on the ONNX model, with the results written to `test.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ci import atomic, data, runtime
from mlops_ci.errors import CheckFailed, MlopsCiError, UsageError

if TYPE_CHECKING:
    from mlops_ci.manifest import Manifest

#: Default absolute tolerance for numeric expectations (the schema documents it).
DEFAULT_TOLERANCE = 1e-6
#: Rows per onnxruntime call when predicting the evaluation data (bounds peak memory).
_CHUNK = 8192
_ROLES = ("label", "probabilities", "prediction")
PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass(frozen=True)
class Check:
    """One verdict: a test case, a metric threshold, the parity result or the data itself."""

    kind: str  # "case" | "metric" | "parity" | "data"
    name: str
    status: str  # pass | fail | skip
    detail: str
    value: float | None = None
    min: float | None = None
    max: float | None = None
    rows: int | None = None
    line: int | None = None  # of the case or metric in the manifest, for annotations

    @property
    def passed(self) -> bool:
        return self.status != FAIL

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "passed": self.passed,
            "detail": self.detail,
        }
        for key in ("value", "min", "max", "rows", "line"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        return doc


@dataclass(frozen=True)
class TestResult:
    """Everything `mlops-ci test` found for one model; failing checks come first."""

    __test__ = False  # not a pytest test class, despite the name

    model: str
    version: str
    manifest: str
    onnx: str
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    @property
    def summary(self) -> str:
        """One short line for progress output and tables: `5/6 checks, failed: accuracy`."""
        counted = [c for c in self.checks if c.status != SKIP]
        passed = sum(c.passed for c in counted)
        line = f"{passed}/{len(counted)} checks"
        if self.failures:
            line += ", failed: " + ", ".join(c.name for c in self.failures[:3])
            if len(self.failures) > 3:
                line += f" (+{len(self.failures) - 3})"
        return line

    def ordered(self) -> list[Check]:
        """Failing checks first, then the rest, each group in declaration order."""
        return [c for c in self.checks if not c.passed] + [c for c in self.checks if c.passed]

    def to_json(self) -> dict[str, Any]:
        counts = {s: sum(c.status == s for c in self.checks) for s in (PASS, FAIL, SKIP)}
        return {
            "stage": "test",
            "model": self.model,
            "version": self.version,
            "manifest": self.manifest,
            "onnx": self.onnx,
            "passed": self.passed,
            "counts": counts,
            "checks": [c.to_json() for c in self.ordered()],
        }


# --- the stage ----------------------------------------------------------------------------------


def run(
    manifest: Manifest, convert_dir: Path | None, out: Path, *, onnx: Path | None = None
) -> TestResult:
    """Run the manifest's tests on the ONNX model and write `out/test.json`.

    The model is `onnx` when given, else `convert_dir/model.onnx`; the parity verdict comes
    from `convert_dir/convert.json` when there is one.
    """
    model_path = model_to_load(onnx, convert_dir)
    session = onnx_session(model_path)
    manifest = data.stage_manifest(manifest, session)
    predict = _predictor(session)
    tests = manifest.section("tests")

    cases, metrics = tests.get("cases", []), tests.get("metrics", [])
    checks: list[Check] = []
    checks += [
        dataclasses.replace(_run_case(manifest, case, predict), line=line)
        for case, line in zip(cases, _lines(manifest, "cases", len(cases)), strict=True)
    ]
    metric_checks = _run_metrics(manifest, metrics, predict)
    # the last len(metrics) checks are the metrics, in order (a data check may come first)
    lines = [None] * (len(metric_checks) - len(metrics)) + _lines(manifest, "metrics", len(metrics))
    checks += [
        dataclasses.replace(c, line=line) for c, line in zip(metric_checks, lines, strict=True)
    ]
    checks.append(_parity(convert_dir))

    result = TestResult(
        model=manifest.name,
        version=manifest.version,
        manifest=repo_path(manifest),
        onnx=str(model_path),
        checks=tuple(checks),
    )
    atomic.write_json(out / "test.json", result.to_json())
    return result


def main(manifest_path: Path, *, onnx: Path | None, convert_dir: Path | None, out: Path) -> int:
    """`mlops-ci test`: print every check (failing first) and exit 1 when any failed."""
    from mlops_ci import manifest as manifest_mod
    from mlops_ci.report import terminal

    m = manifest_mod.load(manifest_path)
    result = run(m, convert_dir, out, onnx=onnx)
    print(terminal.tests(result))
    return 0 if result.passed else 1


def _lines(manifest: Manifest, section: str, count: int) -> list[int | None]:
    """The line of each entry of `spec.tests.<section>` in the manifest file (None where it
    cannot be told): annotations point at the failing case, not at the top of the file."""
    from mlops_ci.manifest import locate, parse_document

    try:
        _, _, node = parse_document(manifest.path.read_bytes(), str(manifest.path))
    except OSError:
        node = None
    if node is None:
        return [None] * count
    return [locate(node, ["spec", "tests", section, i])[0] for i in range(count)]


def repo_path(manifest: Manifest) -> str:
    """The manifest's path relative to the repository root, as GitHub annotations want it."""
    try:
        return manifest.path.relative_to(manifest.root).as_posix()
    except ValueError:
        return str(manifest.path)


# --- running the ONNX model ---------------------------------------------------------------------

Predict = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def model_to_load(onnx: Path | None, convert_dir: Path | None) -> Path:
    """The ONNX file `test` and `bench` run: `--onnx` when given, else the convert output's.

    A missing file the user named is their typo; a missing convert output means the convert
    stage has not run, so only that message points at `mlops-ci convert`.
    """
    if onnx is not None:
        if not onnx.is_file():
            raise UsageError(f"--onnx {onnx}: no such file")
        return onnx
    if convert_dir is None:
        raise UsageError("give the ONNX model (--onnx PATH) or the convert output (--convert-dir)")
    model_path = convert_dir / "model.onnx"
    if not model_path.is_file():
        raise UsageError(f"{model_path} does not exist (run `mlops-ci convert` first)")
    return model_path


def onnx_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session; with `threads`, pinned for benchmarking (intra-op threads,
    one inter-op thread, sequential execution) so numbers are comparable between runs."""
    import onnxruntime as ort

    options = runtime.options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return runtime.session(str(path), options)
    except Exception as exc:  # onnxruntime raises its own exception types for bad models
        raise CheckFailed(f"onnxruntime cannot load the model: {exc}", path=path) from None


def _predictor(session: Any) -> Predict:
    names = [o.name for o in session.get_outputs()]

    def predict(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(feeds.values())))
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for start in range(0, max(n, 1), _CHUNK):
            chunk = {k: v[start : start + _CHUNK] for k, v in feeds.items()}
            try:
                outputs = session.run(names, chunk)
            except Exception as exc:  # onnxruntime's errors say what mismatched
                raise CheckFailed(f"onnxruntime failed to run the model: {exc}") from None
            for name, value in zip(names, outputs, strict=True):
                parts[name].append(np.asarray(value))
        return {name: np.concatenate(p) if len(p) > 1 else p[0] for name, p in parts.items()}

    return predict


def _output_for(manifest: Manifest, key: str, available: Sequence[str]) -> str | None:
    """The output an expectation or metric means: an output name, else the output with that role."""
    if key in available:
        return key
    if key in _ROLES:
        spec = manifest.signature.output(key)
        if spec is not None and spec.name in available:
            return spec.name
    return None


# --- test cases ---------------------------------------------------------------------------------


def run_cases(manifest: Manifest, session: Any) -> tuple[Check, ...]:
    """The manifest's test cases on an onnxruntime session (the deploy smoke test uses them)."""
    predict = _predictor(session)
    cases = manifest.section("tests").get("cases", [])
    return tuple(_run_case(manifest, case, predict) for case in cases)


def _run_case(manifest: Manifest, case: Mapping[str, Any], predict: Predict) -> Check:
    name = str(case["name"])
    tolerance = float(case.get("tolerance", DEFAULT_TOLERANCE))
    try:
        table = data.rows_table([case["input"]], source=f"test case {name!r}")
        outputs = predict(data.feeds(table, manifest.signature))
    except MlopsCiError as exc:
        return Check("case", name, FAIL, str(exc))
    problems: list[str] = []
    shown: list[str] = []
    for key, expected in case["expect"].items():
        output = _output_for(manifest, key, list(outputs))
        if output is None:
            problems.append(
                f"expects {key!r}, which is neither an output ({', '.join(outputs)}) "
                "nor the role of one (label, probabilities, prediction)"
            )
            continue
        actual = outputs[output][0]
        is_label = key == "label" or _role_of(manifest, output) == "label"
        ok, actual_text = _compare(actual, expected, tolerance, exact=is_label)
        if ok:
            shown.append(f"{key} = {actual_text}")
        else:
            bound = "" if is_label or not _is_numeric(expected) else f" ± {tolerance:g}"
            problems.append(f"{key}: expected {_text(expected)}{bound}, got {actual_text}")
    if problems:
        return Check("case", name, FAIL, "; ".join(problems))
    return Check("case", name, PASS, ", ".join(shown))


def _role_of(manifest: Manifest, output: str) -> str | None:
    return next((o.role for o in manifest.signature.outputs if o.name == output), None)


def _is_numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def _scalar(value: Any) -> Any:
    """A numpy scalar or 0-d/1-element array as a plain Python value."""
    arr = np.asarray(value)
    if arr.size == 1:
        item = arr.reshape(()).item()
        return item.decode() if isinstance(item, bytes) else item
    return arr


def _same_label(actual: Any, expected: Any) -> bool:
    # Labels compare as numbers when both are numbers (1 == 1.0 == True is not wanted: bools
    # compare as words), else as text, so a manifest may write `label: 1` or `label: "1"`.
    if isinstance(expected, bool) or isinstance(actual, bool):
        return str(actual).lower() == str(expected).lower()
    if isinstance(actual, int | np.integer) and isinstance(expected, int | np.integer):
        return int(actual) == int(expected)  # exactly: a float holds integers only to 2**53
    try:
        return float(actual) == float(expected)
    except (TypeError, ValueError):
        return str(actual) == str(expected)


def _compare(actual: Any, expected: Any, tolerance: float, *, exact: bool) -> tuple[bool, str]:
    value = _scalar(actual)
    if isinstance(expected, list):
        got = np.asarray(actual).ravel()
        text = _text([_scalar(v) for v in got])
        if got.size != len(expected):
            return False, f"{text} ({got.size} values, expected {len(expected)})"
        if exact:
            return all(_same_label(a, e) for a, e in zip(got, expected, strict=True)), text
        try:
            close = np.allclose(
                got.astype(np.float64), expected, rtol=0.0, atol=tolerance, equal_nan=True
            )
        except (TypeError, ValueError):
            return False, text
        return bool(close), text
    if isinstance(value, np.ndarray):
        return False, f"{_text(value.ravel().tolist())} (expected one value)"
    if exact or not _is_numeric(expected) or isinstance(value, str):
        return _same_label(value, expected), _text(value)
    try:
        number, wanted = float(value), float(expected)
    except (TypeError, ValueError):
        return False, _text(value)
    # an expected NaN (a missing value) or infinity is met by the same value only
    same = number == wanted or (math.isnan(number) and math.isnan(wanted))
    return same or abs(number - wanted) <= tolerance, _text(value)


# --- metrics ------------------------------------------------------------------------------------


def metric_name(spec: Mapping[str, Any]) -> str:
    """How a threshold is shown: `f1`, `f1/weighted`, `recall[class=1]`, `mae[sex=female]`."""
    name = str(spec["metric"])
    if spec.get("average"):
        name += f"/{spec['average']}"
    if "class" in spec:
        name += f"[class={spec['class']}]"
    if spec.get("slice"):
        name += f"[{spec['slice']['column']}={_text(spec['slice']['value'])}]"
    return name


def _bounds(spec: Mapping[str, Any]) -> str:
    parts = []
    if spec.get("min") is not None:
        parts.append(f"≥ {spec['min']:g}")
    if spec.get("max") is not None:
        parts.append(f"≤ {spec['max']:g}")
    return " and ".join(parts)


def _run_metrics(
    manifest: Manifest, specs: Sequence[Mapping[str, Any]], predict: Predict
) -> list[Check]:
    if not specs:
        return []
    evaluation = manifest.section("evaluation")
    if not evaluation:
        return [
            Check("metric", metric_name(s), FAIL, "the manifest declares no evaluation data")
            for s in specs
        ]
    shown = evaluation.get("name") or Path(evaluation["data"]["path"]).name
    try:
        # load_csv verifies the digest before it parses a byte of the file
        path = manifest.resolve(evaluation["data"]["path"])
        table = data.load_csv(path, evaluation["data"]["sha256"])
        if not table.n_rows:  # a header alone: no metric is defined on no rows
            raise CheckFailed("the evaluation data has no rows", path=path)
        target = data.target(table, evaluation["target"])
        outputs = predict(data.feeds(table, manifest.signature, target=evaluation["target"]))
    except MlopsCiError as exc:
        refused = Check("data", f"evaluation data {shown}", FAIL, str(exc))
        not_run = [
            Check("metric", metric_name(s), FAIL, f"not computed: {shown} was refused")
            for s in specs
        ]
        return [refused, *not_run]
    checks = [Check("data", f"evaluation data {shown}", PASS, f"{table.n_rows} rows, digest ok")]
    for spec in specs:
        checks.append(_metric_check(manifest, spec, table, target, outputs))
    return checks


def _metric_check(
    manifest: Manifest,
    spec: Mapping[str, Any],
    table: data.Table,
    y_true: np.ndarray,
    outputs: Mapping[str, np.ndarray],
) -> Check:
    name = metric_name(spec)
    lo, hi = spec.get("min"), spec.get("max")
    try:
        rows = np.ones(table.n_rows, dtype=bool)
        if spec.get("slice"):
            rows = _slice_rows(table, spec["slice"]["column"], spec["slice"]["value"])
            if not rows.any():
                raise _MetricError(f"no evaluation row has {name.split('[', 1)[1][:-1]}")
        picked = {k: v[rows] for k, v in outputs.items()}
        value = compute_metric(manifest, spec, y_true[rows], picked)
    except _MetricError as exc:
        return Check("metric", name, FAIL, str(exc), min=lo, max=hi)
    n = int(rows.sum())
    if not math.isfinite(value):
        return Check("metric", name, FAIL, f"{value} is not a number", None, lo, hi, n)
    ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    detail = f"{value:.4g} {'within' if ok else 'outside'} {_bounds(spec)} ({n} rows)"
    return Check("metric", name, PASS if ok else FAIL, detail, value, lo, hi, n)


class _MetricError(Exception):
    """A metric that cannot be computed; reported as a failing check, never as a traceback."""


def _slice_rows(table: data.Table, column: str, value: Any) -> np.ndarray:
    if column not in table.columns:
        raise _MetricError(
            f"slice column {column!r} is not in the evaluation data "
            f"(it has: {', '.join(table.columns)})"
        )
    text = np.char.strip(table.columns[column])
    if isinstance(value, bool):
        words = {"true", "1", "yes"} if value else {"false", "0", "no"}
        return np.isin(np.char.lower(text), list(words))
    if _is_numeric(value):
        numbers = np.array([_float_or_nan(t) for t in text])
        return np.asarray(numbers == float(value))
    return np.asarray(text == str(value))


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def compute_metric(
    manifest: Manifest,
    spec: Mapping[str, Any],
    y_true: np.ndarray,
    outputs: Mapping[str, np.ndarray],
) -> float:
    """The value of one metric on the given rows (raises _MetricError when it is undefined)."""
    try:
        from sklearn import metrics as skm
    except ImportError:  # pragma: no cover - every framework extra installs scikit-learn
        raise UsageError("metrics need scikit-learn: pip install 'mlops-ci[sklearn]'") from None
    metric = spec["metric"]
    if metric in ("rmse", "mae", "r2", "mape"):
        pred = _regression_output(manifest, outputs)
        truth = _as_float(y_true, "target")
        if metric == "rmse":
            return float(np.sqrt(skm.mean_squared_error(truth, pred)))
        if metric == "mae":
            return float(skm.mean_absolute_error(truth, pred))
        if metric == "mape":
            return float(skm.mean_absolute_percentage_error(truth, pred))
        if len(truth) < 2:
            raise _MetricError("r2 needs at least two rows")
        return float(skm.r2_score(truth, pred))
    return _classification_metric(manifest, spec, y_true, outputs, skm)


def _as_float(values: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise _MetricError(f"the {what} holds values that are not numbers") from None


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    """`values`, or _MetricError when the model gave a NaN or an infinity: scikit-learn raises
    on them, and an argmax reads a row of NaN as the first class, which can pass a bar."""
    bad = (~np.isfinite(values)).any(axis=tuple(range(1, values.ndim)))  # per row
    if bad.any():
        raise _MetricError(
            f"{what} is NaN or infinite on {int(bad.sum())} of {len(bad)} rows; the metric is "
            "undefined"
        )
    return values


def _regression_output(manifest: Manifest, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    name = _output_for(manifest, "prediction", list(outputs))
    if name is None and len(outputs) == 1:
        name = next(iter(outputs))
    if name is None:
        raise _MetricError("regression metrics need an output with role: prediction")
    pred = np.asarray(outputs[name])
    if pred.ndim > 1 and pred.shape[1] != 1:
        raise _MetricError(f"output {name!r} has {pred.shape[1]} values per row, expected one")
    return _finite(_as_float(pred, f"output {name!r}"), f"output {name!r}")


def _classification_metric(
    manifest: Manifest,
    spec: Mapping[str, Any],
    y_true: np.ndarray,
    outputs: Mapping[str, np.ndarray],
    skm: Any,
) -> float:
    metric = spec["metric"]
    proba = _probabilities(manifest, outputs)
    labels = _labels(manifest, outputs, proba)
    y, p = _align(y_true, labels)
    classes = _classes(y, p, proba)
    average = spec.get("average") or ("binary" if len(classes) == 2 else "macro")
    if "class" in spec:
        positive = _find_class(classes, spec["class"])
        yb, pb = (y == positive), (p == positive)
        if metric == "accuracy":
            return float(np.mean(yb == pb))
        if metric == "balanced_accuracy":
            return float(skm.balanced_accuracy_score(yb, pb))
        if metric in ("precision", "recall", "f1"):
            fn = getattr(skm, f"{metric}_score")
            return float(fn(yb, pb, zero_division=0))
        column = _proba_column(proba, classes, positive, metric)
        if metric == "roc_auc":
            _need_both(yb)
            return float(skm.roc_auc_score(yb, column))
        return float(skm.log_loss(yb, np.clip(column, 1e-15, 1 - 1e-15), labels=[False, True]))
    if metric == "accuracy":
        return float(skm.accuracy_score(y, p))
    if metric == "balanced_accuracy":
        return float(skm.balanced_accuracy_score(y, p))
    if metric in ("precision", "recall", "f1"):
        fn = getattr(skm, f"{metric}_score")
        if average == "binary":
            if len(classes) != 2:
                raise _MetricError(f"average: binary needs two classes, found {len(classes)}")
            return float(fn(y, p, average="binary", pos_label=classes[1], zero_division=0))
        return float(fn(y, p, average=average, labels=classes, zero_division=0))
    if proba is None:
        raise _MetricError(f"{metric} needs an output with role: probabilities")
    if metric == "roc_auc":
        if len(classes) == 2:
            column = _proba_column(proba, classes, classes[1], metric)
            yb = y == classes[1]
            _need_both(yb)
            return float(skm.roc_auc_score(yb, column))
        try:
            return float(
                skm.roc_auc_score(
                    y,
                    _full_proba(proba, classes),
                    multi_class="ovr",
                    average="macro" if average == "binary" else average,
                    labels=classes,
                )
            )
        except ValueError as exc:
            raise _MetricError(f"roc_auc is undefined here: {exc}") from None
    return float(skm.log_loss(y, _full_proba(proba, classes), labels=classes))


def _need_both(binary: np.ndarray) -> None:
    if binary.all() or not binary.any():
        raise _MetricError("roc_auc is undefined: the rows hold only one class")


def _probabilities(manifest: Manifest, outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    name = _output_for(manifest, "probabilities", list(outputs))
    if name is None:
        return None
    proba = _finite(np.asarray(outputs[name], dtype=np.float64), f"output {name!r}")
    proba = proba.reshape(len(proba), -1)
    if proba.shape[1] > 1:
        # float32 rows sum to 1 only within ~1e-7; log_loss wants them exact
        sums = proba.sum(axis=1, keepdims=True)
        proba = np.divide(proba, sums, out=proba.copy(), where=sums > 0)
    return proba


def _labels(
    manifest: Manifest, outputs: Mapping[str, np.ndarray], proba: np.ndarray | None
) -> np.ndarray:
    name = _output_for(manifest, "label", list(outputs))
    if name is not None:
        labels = np.asarray(outputs[name]).ravel()
        return _finite(labels, f"output {name!r}") if labels.dtype.kind == "f" else labels
    if proba is not None:
        # no label output: the most probable column is the class (index order, as every
        # supported framework orders its classes)
        if proba.shape[1] == 1:
            return (proba[:, 0] >= 0.5).astype(np.int64)
        return np.argmax(proba, axis=1).astype(np.int64)
    raise _MetricError("classification metrics need an output with role: label or probabilities")


def _align(y_true: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The true and predicted labels in one type: numbers when both are, else text."""

    def numeric(a: np.ndarray) -> np.ndarray | None:
        if a.dtype.kind in "biuf":
            return a.astype(np.float64)
        try:
            return np.array([float(v) for v in a], dtype=np.float64)
        except (TypeError, ValueError):
            return None

    y_num, p_num = numeric(y_true), numeric(labels)
    if y_num is not None and p_num is not None:
        return y_num, p_num
    as_text = np.vectorize(
        lambda v: v.decode() if isinstance(v, bytes) else str(v), otypes=[object]
    )
    return as_text(y_true), as_text(labels)


def _classes(y: np.ndarray, p: np.ndarray, proba: np.ndarray | None) -> list[Any]:
    # sklearn, xgboost, lightgbm and torch all order probability columns by sorted class
    classes = sorted(set(y.tolist()) | set(p.tolist()))
    if proba is not None and proba.shape[1] > len(classes) and y.dtype.kind == "f":
        # a class the model knows that neither the data nor the predictions show: integer
        # labels 0..k-1 still name the columns
        classes = sorted(set(classes) | set(range(proba.shape[1])))
    return classes


def _find_class(classes: list[Any], wanted: Any) -> Any:
    for c in classes:
        if _same_label(c, wanted):
            return c
    raise _MetricError(f"class {wanted!r} is not among the classes {[_text(c) for c in classes]}")


def _full_proba(proba: np.ndarray, classes: list[Any]) -> np.ndarray:
    if proba.shape[1] == 1 and len(classes) == 2:
        return np.column_stack([1 - proba[:, 0], proba[:, 0]])
    if proba.shape[1] != len(classes):
        raise _MetricError(
            f"the probabilities have {proba.shape[1]} columns but the data and predictions "
            f"show {len(classes)} classes; columns cannot be matched to classes"
        )
    return proba


def _proba_column(proba: np.ndarray | None, classes: list[Any], positive: Any, metric: str) -> Any:
    if proba is None:
        raise _MetricError(f"{metric} needs an output with role: probabilities")
    return _full_proba(proba, classes)[:, classes.index(positive)]


# --- parity (from the convert stage) ------------------------------------------------------------


def _parity(convert_dir: Path | None) -> Check:
    name = "native vs ONNX parity"
    report = convert_dir / "convert.json" if convert_dir else None
    if report is None or not report.is_file():
        return Check("parity", name, SKIP, "no convert.json (use --convert-dir)")
    try:
        doc = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Check("parity", name, FAIL, f"cannot read {report}: {exc}")
    parity = doc.get("parity") if isinstance(doc, dict) else None
    if not isinstance(parity, dict):
        reason = (doc.get("error") if isinstance(doc, dict) else None) or "no parity result"
        return Check("parity", name, FAIL, f"convert.json: {reason}")
    status = {"passed": PASS, "failed": FAIL}.get(str(parity.get("status")), SKIP)
    return Check("parity", name, status, parity_text(parity), rows=parity.get("rows"))


def parity_text(parity: Mapping[str, Any]) -> str:
    """One line on a convert.json parity result: rows, worst differences, label agreement."""
    if parity.get("status") not in ("passed", "failed"):
        return f"not run: {parity.get('reason') or 'no reason given'}"
    parts = []
    if parity.get("rows") is not None:
        parts.append(f"{parity['rows']} rows of {parity.get('data') or 'data'}")
    outputs = [o for o in parity.get("outputs") or [] if isinstance(o, Mapping)]
    diffs = [o["max_abs_diff"] for o in outputs if isinstance(o.get("max_abs_diff"), int | float)]
    if diffs:
        parts.append(f"max |Δ| {max(diffs):.3g}")
    agreement = parity.get("label_agreement")
    if isinstance(agreement, int | float):
        parts.append(f"label agreement {agreement:.4g}")
    for o in outputs:
        if not o.get("passed"):
            parts.append(f"{o.get('name')}: {o.get('problem') or 'outside tolerance'}")
    if parity.get("reason"):
        parts.append(str(parity["reason"]))
    return ", ".join(parts) or str(parity.get("status"))
