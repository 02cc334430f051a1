"""The convert stage: native model -> model.onnx, with the checker, the signature check and a parity
proof on data; results as `convert.json` (schema `mlops-ci/convert/v1`) and a Markdown section.

The stage is framework-agnostic: loading, conversion and native prediction come from the module
that `frameworks.get(spec.framework)` returns.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ci import __version__, atomic, data, digest, runtime
from mlops_ci.errors import CheckFailed, MlopsCiError, UsageError
from mlops_ci.manifest.model import EXTRA_BY_FRAMEWORK

if TYPE_CHECKING:
    import onnx

    from mlops_ci.manifest import Manifest, Signature, TensorSpec

SCHEMA = "mlops-ci/convert/v1"
DEFAULT_OPSET = 17
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
DEFAULT_MIN_LABEL_AGREEMENT = 1.0
MAX_SAMPLES = 10_000
#: rows drawn when a manifest has neither evaluation data nor test cases (numeric inputs only)
SYNTHETIC_ROWS = 256
WORST_ROWS = 5
COMPARED_ROLES = ("label", "probabilities", "prediction")


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputParity:
    """Native-versus-ONNX agreement of one output."""

    name: str
    role: str
    passed: bool
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    mismatched_values: int = 0
    label_agreement: float | None = None
    problem: str | None = None


@dataclass(frozen=True)
class WorstRow:
    """One disagreeing row, native and ONNX values side by side (vectors cut to 10 values)."""

    row: int
    where: str
    output: str
    native: Any
    onnx: Any
    abs_diff: float | None


@dataclass(frozen=True)
class Parity:
    status: str  # passed | failed | not-run
    data: str
    rows: int
    atol: float
    rtol: float
    min_label_agreement: float
    outputs: tuple[OutputParity, ...] = ()
    label_agreement: float | None = None
    worst_rows: tuple[WorstRow, ...] = ()
    reason: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class ConvertResult:
    """What `convert.run` did; `to_json()` is the convert.json document."""

    name: str
    version: str
    framework: str
    task: str
    artifact: str
    artifact_sha256: str
    artifact_format: str
    onnx_path: Path | None = None
    onnx_sha256: str | None = None
    onnx_bytes: int | None = None
    converter: str | None = None
    opset: int | None = None
    checker: str = "not-run"  # passed | failed | not-run
    checker_message: str | None = None
    signature_problems: tuple[str, ...] = ()
    parity: Parity | None = None
    notes: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    #: the exception behind `error`, for --debug; never serialised
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and self.checker == "passed"
            and not self.signature_problems
            and self.parity is not None
            and self.parity.passed
        )

    @property
    def summary(self) -> str:
        """One short line for progress output and tables."""
        if self.error:
            return self.error.splitlines()[0]
        if self.checker != "passed":
            return f"onnx.checker failed: {self.checker_message}"
        if self.signature_problems:
            return self.signature_problems[0]
        parity = self.parity
        if parity is None or parity.status == "not-run":
            return f"parity not run: {parity.reason if parity else 'no result'}"
        diffs = [o.max_abs_diff for o in parity.outputs if o.max_abs_diff is not None]
        parts = [f"parity {parity.status} on {parity.rows} rows"]
        if diffs:
            parts.append(f"max |Δ| {max(diffs):.2g}")
        if parity.label_agreement is not None:
            parts.append(f"labels {parity.label_agreement:.1%}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        parity = self.parity
        return {
            "schema": SCHEMA,
            "passed": self.passed,
            "error": self.error,
            "model": {
                "name": self.name,
                "version": self.version,
                "framework": self.framework,
                "task": self.task,
            },
            "artifact": {
                "path": self.artifact,
                "sha256": self.artifact_sha256,
                "format": self.artifact_format,
            },
            "onnx": None
            if self.onnx_path is None
            else {
                "path": self.onnx_path.name,
                "sha256": self.onnx_sha256,
                "bytes": self.onnx_bytes,
                "opset": self.opset,
                "converter": self.converter,
                "checker": self.checker,
                "checker_message": self.checker_message,
            },
            "signature": {
                "passed": not self.signature_problems and self.onnx_path is not None,
                "problems": list(self.signature_problems),
            },
            "parity": None if parity is None else _parity_json(parity),
            "notes": list(self.notes),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


def _parity_json(parity: Parity) -> dict[str, Any]:
    return {
        "status": parity.status,
        "data": parity.data,
        "rows": parity.rows,
        "tolerances": {
            "atol": parity.atol,
            "rtol": parity.rtol,
            "min_label_agreement": parity.min_label_agreement,
        },
        "label_agreement": parity.label_agreement,
        "outputs": [dataclasses.asdict(o) for o in parity.outputs],
        "worst_rows": [dataclasses.asdict(w) for w in parity.worst_rows],
        "reason": parity.reason,
    }


# --- the stage -----------------------------------------------------------------------------------


def load_plugins(modules: Sequence[str]) -> None:
    """Import modules that register custom converters (skl2onnx.update_registered_converter)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UsageError(f"cannot import converter plugin {name!r}: {exc}") from exc


def run(manifest: Manifest, out: Path, *, plugins: Sequence[str] = ()) -> ConvertResult:
    """Convert one model into `out/model.onnx`, prove parity, write `out/convert.json`.

    A refused artifact or a failing converter comes back as a result with `error` set (and
    convert.json says so); configuration mistakes raise UsageError.
    """
    load_plugins(plugins)
    base = _base_result(manifest)
    # a model.onnx left by an earlier run must not pass for this run's output
    (out / "model.onnx").unlink(missing_ok=True)
    try:
        result = _convert(manifest, out, base)
    except UsageError:
        raise
    except MlopsCiError as exc:
        result = dataclasses.replace(base, error=str(exc), exception=exc)
    except ImportError as exc:  # the machine lacks the framework: configuration, not a verdict
        extra = EXTRA_BY_FRAMEWORK.get(manifest.framework) or manifest.framework
        raise UsageError(
            f"converting a {manifest.framework} model needs {exc.name or 'a module'}, which is "
            f"not installed: pip install 'mlops-ci[{extra}]'"
        ) from exc
    write_reports(result, out)
    return result


def _base_result(m: Manifest) -> ConvertResult:
    try:
        artifact = str(m.artifact_path.relative_to(m.root))
    except (ValueError, CheckFailed):
        artifact = str(m.data["spec"]["artifact"]["path"])
    task = m.data["spec"].get("task") or (m.task if m.data["spec"].get("signature") else "unknown")
    return ConvertResult(
        name=m.name,
        version=m.version,
        framework=m.framework,
        task=str(task),
        artifact=artifact,
        artifact_sha256=m.artifact_sha256,
        artifact_format=m.artifact_format,
    )


def _convert(m: Manifest, out: Path, base: ConvertResult) -> ConvertResult:
    from mlops_ci import frameworks, trust
    from mlops_ci.frameworks import _graph, _options

    framework = frameworks.get(m.framework)
    settings = m.section("conversion")
    opset = int(settings.get("opset", DEFAULT_OPSET))
    timings: dict[str, float] = {}

    # options come from the pull request: only names that cannot point at files or code
    options = _options.checked(m.framework, settings.get("options"))
    started = time.perf_counter()
    native = framework.load(trust.artifact(m))
    timings["load"] = time.perf_counter() - started

    # read once: its header names the inputs' columns, its rows prove parity
    evaluation = _read_evaluation(m)
    signature = _with_columns(m, framework, native, _signature(m, native), evaluation)
    started = time.perf_counter()
    exported = framework.to_onnx(native, signature, opset=opset, options=options)
    model = exported.model
    notes = list(exported.notes)
    if not exported.passthrough:
        notes += _graph.align_outputs(model, exported.output_roles, signature)
        notes += _graph.set_opset(model, opset)
        # onnxmltools names every graph with a random UUID; the same artifact and settings must
        # give the same bytes (and sha256), or a repeated deploy would look like a new model
        model.graph.name = m.name
    _stamp(model, m, signature)
    timings["convert"] = time.perf_counter() - started

    started = time.perf_counter()
    checker, checker_message = _check(model)
    problems = tuple(_graph.signature_problems(model, signature))
    timings["check"] = time.perf_counter() - started

    payload = model.SerializeToString()
    onnx_path = atomic.write_bytes(out / "model.onnx", payload)
    result = dataclasses.replace(
        base,
        onnx_path=onnx_path,
        onnx_sha256=digest.sha256_file(onnx_path),
        onnx_bytes=len(payload),
        converter=exported.converter,
        opset=_default_opset(model),
        checker=checker,
        checker_message=checker_message,
        signature_problems=problems,
        notes=tuple(notes),
    )
    started = time.perf_counter()
    try:
        if problems:
            parity = _not_run(m, "the ONNX model does not match the signature")
        elif isinstance(evaluation, CheckFailed):
            raise evaluation  # unreadable data, reported now that model.onnx is written
        else:
            parity = check_parity(m, framework, native, payload, signature, evaluation)
    except UsageError:
        raise
    except MlopsCiError as exc:  # unreadable data, a native model that cannot predict, ...
        return dataclasses.replace(result, error=str(exc), exception=exc, timings=timings)
    timings["parity"] = time.perf_counter() - started
    return dataclasses.replace(result, parity=parity, timings=timings)


def _signature(m: Manifest, native: Any) -> Signature:
    """The manifest's signature; for an ONNX artifact without one, the model's own interface."""
    from mlops_ci.manifest import Signature, TensorSpec

    if m.data["spec"].get("signature"):
        return m.signature
    from mlops_ci.frameworks import _graph

    found = _graph.signature_of(native)

    def spec(d: dict[str, Any], role: str | None) -> TensorSpec:
        return TensorSpec(d["name"], d["dtype"], tuple(d["shape"]), None, role)

    outputs = found["outputs"]
    return Signature(
        tuple(spec(d, None) for d in found["inputs"]),
        tuple(spec(d, "prediction" if d["dtype"] != "string" else "label") for d in outputs),
    )


def _read_evaluation(m: Manifest) -> data.Table | CheckFailed | None:
    """The evaluation table (digest checked), why it cannot be read, or None without one."""
    try:
        return evaluation_table(m)
    except CheckFailed as exc:
        return exc


def _with_columns(
    m: Manifest,
    framework: Any,
    native: Any,
    signature: Signature,
    evaluation: data.Table | CheckFailed | None,
) -> Signature:
    """The signature with the columns behind each input made explicit, by the one rule in
    `data.input_columns`: the manifest's, else what the model was trained on, else the data's
    (the evaluation table's header, else the test cases' input keys)."""
    if isinstance(evaluation, data.Table):
        header = list(evaluation.columns)
    elif evaluation is None:
        header = data.data_columns(m)  # no evaluation data: the test cases, no file read
    else:
        header = []  # unreadable data: parity reports it, after model.onnx is written
    columns = data.input_columns(
        signature,
        header,
        target=m.section("evaluation").get("target"),
        feature_names=framework.feature_names(native),
    )
    inputs = tuple(
        dataclasses.replace(s, columns=columns[s.name]) if not s.columns and columns[s.name] else s
        for s in signature.inputs
    )
    return dataclasses.replace(signature, inputs=inputs)


def _stamp(model: onnx.ModelProto, m: Manifest, signature: Signature) -> None:
    props = {
        "model_name": m.name,
        "model_version": m.version,
        "source_artifact_sha256": m.artifact_sha256,
        "mlops_ci_version": __version__,
    }
    columns = {s.name: list(s.columns) for s in signature.inputs if s.columns}
    if columns:
        props[data.COLUMNS_KEY] = json.dumps(columns, separators=(",", ":"))
    # an artifact's own `mlops_ci.*` keys never survive: only convert says what the columns are
    kept = [p for p in model.metadata_props if p.key not in props and p.key != data.COLUMNS_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _check(model: onnx.ModelProto) -> tuple[str, str | None]:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return "failed", str(exc).strip().splitlines()[0]
    return "passed", None


def _default_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def write_reports(result: ConvertResult, out: Path) -> None:
    """convert.json and convert.md into `out`, each written atomically."""
    atomic.write_json(out / "convert.json", result.to_json())
    from mlops_ci.report import markdown

    atomic.write_text(out / "convert.md", markdown.conversion(result))


# --- parity --------------------------------------------------------------------------------------


def _tolerances(m: Manifest) -> tuple[float, float, float, int]:
    p = m.section("conversion").get("parity") or {}
    atol, rtol, agreement = (
        float(p.get(name, default))
        for name, default in (
            ("atol", DEFAULT_ATOL),
            ("rtol", DEFAULT_RTOL),
            ("min_label_agreement", DEFAULT_MIN_LABEL_AGREEMENT),
        )
    )
    # YAML's .nan passes the schema's `minimum` (NaN < 0 is false), and no difference exceeds
    # a NaN tolerance: parity would pass whatever the ONNX model computes
    for name, value in (("atol", atol), ("rtol", rtol), ("min_label_agreement", agreement)):
        if math.isnan(value):
            raise CheckFailed(
                f"spec.conversion.parity.{name} is NaN, which no difference exceeds, so parity "
                "could never fail; give a number",
                path=m.path,
            )
    return atol, rtol, agreement, min(int(p.get("samples", MAX_SAMPLES)), MAX_SAMPLES)


def _not_run(m: Manifest, reason: str) -> Parity:
    atol, rtol, agreement, _ = _tolerances(m)
    return Parity("not-run", "", 0, atol, rtol, agreement, reason=reason)


@dataclass(frozen=True)
class ParityData:
    """The rows parity runs on, and the signature (with explicit columns) that feeds them."""

    table: data.Table | None
    name: str
    target: str | None
    signature: Signature
    reason: str | None = None


def _width(spec: TensorSpec) -> int:
    return int(np.prod([d for d in spec.shape[1:] if d > 0] or [1]))


def evaluation_table(m: Manifest) -> data.Table | None:
    """The manifest's evaluation CSV, digest checked, its rows shown as repository paths
    (models/x/eval.csv:17, the way a reviewer sees them); None when it names none."""
    section = m.section("evaluation")
    return _evaluation_rows(m, section["data"]) if section else None


def _evaluation_rows(m: Manifest, ref: Mapping[str, Any]) -> data.Table:
    path = m.resolve(ref["path"])
    table = data.load_csv(path, ref["sha256"])
    shown = path.relative_to(m.root) if path.is_relative_to(m.root) else path
    return dataclasses.replace(table, source=str(shown))


def parity_data(
    m: Manifest, signature: Signature, evaluation: data.Table | None = None
) -> ParityData:
    """Evaluation data (`evaluation` when the caller has read it already), else the test cases'
    inputs, else seeded synthetic rows."""
    _, _, _, samples = _tolerances(m)
    section = m.section("evaluation")
    if section:
        table = evaluation if evaluation is not None else _evaluation_rows(m, section["data"])
        name = str(section.get("name") or Path(section["data"]["path"]).name)
        return ParityData(table.take(samples), name, section.get("target"), signature)
    cases = m.section("tests").get("cases") or []
    if cases:
        return ParityData(
            data.rows_table([c["input"] for c in cases]), "test cases", None, signature
        )
    if any(s.dtype == "string" for s in signature.inputs):
        reason = "no evaluation data or test cases, and string inputs cannot be synthesised"
        return ParityData(None, "", None, signature, reason)
    rng = np.random.default_rng(0)  # seeded: the same manifest always gets the same rows
    columns: dict[str, np.ndarray] = {}
    specs = []
    for spec in signature.inputs:
        names = spec.columns or tuple(f"{spec.name}_{i}" for i in range(_width(spec)))
        specs.append(dataclasses.replace(spec, columns=names))
        for column in names:
            values: np.ndarray = rng.normal(size=SYNTHETIC_ROWS)
            if spec.dtype.startswith(("int", "uint")):
                values = np.round(np.abs(values) * 4)
            elif spec.dtype == "bool":
                values = values > 0
            columns[column] = np.array([_text(v) for v in values], dtype=str)
    return ParityData(
        data.Table(columns, SYNTHETIC_ROWS, "synthetic rows"),
        "synthetic rows (standard normal)",
        None,
        dataclasses.replace(signature, inputs=tuple(specs)),
    )


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, np.bool_) else repr(float(value))


def _widened(signature: Signature) -> Signature:
    """The signature with float inputs as float64: the native model sees the data unrounded."""
    inputs = tuple(
        dataclasses.replace(s, dtype="float64") if s.dtype.startswith("float") else s
        for s in signature.inputs
    )
    return dataclasses.replace(signature, inputs=inputs)


def check_parity(
    m: Manifest,
    framework: Any,
    native: Any,
    onnx_bytes: bytes,
    signature: Signature,
    evaluation: data.Table | None = None,
) -> Parity:
    """Run the native and the ONNX model on the same rows and compare every compared output
    (the evaluation rows are read here unless the caller passes them)."""

    from mlops_ci.frameworks import Batch

    atol, rtol, min_agreement, _ = _tolerances(m)
    rows = parity_data(m, signature, evaluation)
    table, name, target = rows.table, rows.name, rows.target
    if table is None:
        return Parity("not-run", "", 0, atol, rtol, min_agreement, reason=rows.reason)
    if table.n_rows == 0:
        return Parity("not-run", name, 0, atol, rtol, min_agreement, reason=f"{name} has no rows")
    columns = data.input_columns(rows.signature, list(table.columns), target=target)
    onnx_feeds = data.feeds(table, rows.signature, target=target)
    native_feeds = data.feeds(table, _widened(rows.signature), target=target)

    try:
        session = runtime.session(onnx_bytes)
        names = [o.name for o in session.get_outputs()]
        onnx_out = dict(zip(names, session.run(None, onnx_feeds), strict=True))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise CheckFailed(
            f"onnxruntime could not run the converted model on {name}: {exc}"
        ) from exc
    try:
        native_out = framework.predict(native, Batch(native_feeds, columns), signature)
    except MlopsCiError:
        raise
    except Exception as exc:
        raise CheckFailed(
            f"the native model failed to predict on {name}: {type(exc).__name__}: {exc}"
        ) from exc
    return compare(
        table,
        name,
        signature,
        native_out,
        onnx_out,
        atol=atol,
        rtol=rtol,
        min_label_agreement=min_agreement,
    )


def compare(
    table: data.Table,
    data_name: str,
    signature: Signature,
    native: Mapping[str, np.ndarray],
    onnx_out: Mapping[str, np.ndarray],
    *,
    atol: float,
    rtol: float,
    min_label_agreement: float,
) -> Parity:
    """Per-output differences, label agreement, and the worst rows when something disagrees."""
    outputs: list[OutputParity] = []
    row_badness = np.zeros(table.n_rows)
    bad_cells: dict[int, list[tuple[str, Any, Any, float | None]]] = {}
    agreements: list[float] = []
    has_label_output = any(o.role == "label" for o in signature.outputs)
    for spec in signature.outputs:
        role = spec.role or "other"
        if role not in COMPARED_ROLES or spec.name not in native or spec.name not in onnx_out:
            continue
        a, b = np.asarray(onnx_out[spec.name]), np.asarray(native[spec.name])
        if role == "label":
            result, mismatch = _labels(spec.name, a, b, min_label_agreement)
            if result.label_agreement is not None:
                agreements.append(result.label_agreement)
            for i in np.flatnonzero(mismatch):
                row_badness[i] += np.inf
                bad_cells.setdefault(int(i), []).append((spec.name, _show(b[i]), _show(a[i]), None))
            outputs.append(result)
            continue
        result, excess, abs_rows = _values(spec.name, role, a, b, atol, rtol)
        if role == "probabilities" and not has_label_output and result.problem is None:
            agree = a.reshape(len(a), -1).argmax(axis=1) == b.reshape(len(b), -1).argmax(axis=1)
            share = float(agree.mean())
            agreements.append(share)
            result = dataclasses.replace(
                result,
                label_agreement=share,
                passed=result.passed and share >= min_label_agreement,
            )
        if excess is not None:
            for i in np.flatnonzero(excess > 0):
                row_badness[i] += float(excess[i])
                bad_cells.setdefault(int(i), []).append(
                    (spec.name, _show(b[i]), _show(a[i]), float(abs_rows[i]))
                )
        outputs.append(result)
    passed = bool(outputs) and all(o.passed for o in outputs)
    reason = (
        None if outputs else "no output with role label, probabilities or prediction to compare"
    )
    worst: list[WorstRow] = []
    if not passed:
        for i in np.argsort(-row_badness, kind="stable")[:WORST_ROWS]:
            for output, nat, onx, diff in bad_cells.get(int(i), []):
                worst.append(WorstRow(int(i), table.where(int(i)), output, nat, onx, diff))
    return Parity(
        status="passed" if passed else "failed",
        data=data_name,
        rows=table.n_rows,
        atol=atol,
        rtol=rtol,
        min_label_agreement=min_label_agreement,
        outputs=tuple(outputs),
        label_agreement=min(agreements) if agreements else None,
        worst_rows=tuple(worst),
        reason=reason,
    )


def _labels(
    name: str, onnx_labels: np.ndarray, native_labels: np.ndarray, minimum: float
) -> tuple[OutputParity, np.ndarray]:
    a, b = onnx_labels.reshape(-1), native_labels.reshape(-1)
    if a.shape != b.shape:
        problem = f"ONNX gives {a.shape[0]} labels, the native model {b.shape[0]}"
        return OutputParity(name, "label", False, problem=problem), np.zeros(0, dtype=bool)
    if a.dtype.kind != b.dtype.kind:
        # int64 from ONNX against numpy int32, or str labels against object: compare as text
        a, b = a.astype(str), b.astype(str)
    mismatch = a != b
    share = float(1.0 - mismatch.mean()) if len(a) else 1.0
    return OutputParity(name, "label", share >= minimum, label_agreement=share), mismatch


def _values(
    name: str,
    role: str,
    onnx_values: np.ndarray,
    native_values: np.ndarray,
    atol: float,
    rtol: float,
) -> tuple[OutputParity, np.ndarray | None, np.ndarray]:
    try:
        a = onnx_values.astype(np.float64)
        b = native_values.astype(np.float64)
    except (TypeError, ValueError):
        return OutputParity(name, role, False, problem="values are not numeric"), None, np.zeros(0)
    if a.size != b.size or len(a) != len(b):
        problem = f"ONNX shape {list(a.shape)} against native shape {list(b.shape)}"
        return OutputParity(name, role, False, problem=problem), None, np.zeros(0)
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    # the same value agrees, NaN and the infinities too (inf - inf is NaN); any other difference
    # from a NaN or an infinity is infinite, and a native NaN or infinity allows none: its
    # atol + rtol × |native| (NaN, inf) would let every value pass
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(a - b))
        diff = np.where(np.isnan(diff), np.inf, diff)
        allowed = np.where(np.isfinite(b), atol + rtol * np.abs(b), 0.0)
        rel = diff / np.maximum(np.abs(b), np.finfo(np.float64).tiny)
    rel = np.where(diff == 0, 0.0, np.where(np.isnan(rel), np.inf, rel))
    excess = (
        np.where(diff > allowed, diff - allowed, 0.0).max(axis=1) if diff.size else np.zeros(len(a))
    )
    bad = int((diff > allowed).sum())
    result = OutputParity(
        name,
        role,
        bad == 0,
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        max_rel_diff=float(rel.max()) if rel.size else 0.0,
        mismatched_values=bad,
    )
    return result, excess, diff.max(axis=1) if diff.size else np.zeros(len(a))


def _show(value: Any) -> Any:
    """A JSON-friendly rendering of one row's value (vectors cut to their first 10 entries).

    Floats keep 9 significant digits: enough to see where native and ONNX differ (a float32
    difference at the 7th digit, on a value of 1e-8 or of 1e6), which rounding to a fixed
    number of decimals would hide."""
    array = np.asarray(value)
    if array.ndim == 0:
        item = array.item()
        return float(f"{item:.9g}") if isinstance(item, float) else item
    if array.size == 1:
        return _show(array.reshape(()))
    flat = array.reshape(-1)[:10].tolist()
    return [float(f"{v:.9g}") if isinstance(v, float) else v for v in flat]


def main(
    manifest_path: Path, *, out: Path, plugins: Sequence[str] = (), debug: bool = False
) -> int:
    """`mlops-ci convert`: exit 0 when conversion, checks and parity pass, 1 when they do not."""
    from mlops_ci import manifest as manifest_module
    from mlops_ci.report import terminal

    m = manifest_module.load(manifest_path)
    result = run(m, out, plugins=plugins)
    # a refused or unconvertible model is an error message; a finished check is a report
    print(terminal.conversion(result), file=sys.stderr if result.error else sys.stdout)
    if result.exception is not None and debug:
        traceback.print_exception(result.exception)
    return 0 if result.passed else 1
