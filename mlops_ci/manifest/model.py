"""`Manifest`: typed read access to a validated manifest (signature, artifact, sections, task)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_ci.errors import CheckFailed
from mlops_ci.manifest.paths import resolve_inside

# Artifact formats by file suffix, and the formats each framework reads.
FORMAT_BY_SUFFIX = {
    ".skops": "skops",
    ".json": "xgboost-json",
    ".ubj": "xgboost-ubj",
    ".txt": "lightgbm-text",
    ".pt2": "torch-export",
    ".pt": "torchscript",
    ".torchscript": "torchscript",
    ".onnx": "onnx",
}
FORMATS_BY_FRAMEWORK = {
    "sklearn": ("skops",),
    "xgboost": ("xgboost-json", "xgboost-ubj"),
    "lightgbm": ("lightgbm-text",),
    "pytorch": ("torch-export", "torchscript"),
    "onnx": ("onnx",),
}
CLASSIFICATION_METRICS = frozenset(
    {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
)
REGRESSION_METRICS = frozenset({"rmse", "mae", "r2", "mape"})
#: spec.framework -> the pyproject extra that installs it, where that is not the framework's own
#: name ("": the core install reads ONNX models).
EXTRA_BY_FRAMEWORK = {"pytorch": "torch", "onnx": ""}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the model's signature."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    columns: tuple[str, ...] | None = None
    role: str | None = None


def fixed_columns(spec: Any) -> tuple[str, ...] | None:
    """The columns an input reads whatever the data: its `columns:`, or its own name when it is
    one wide; None for an input fed by "the other columns". Validate and `data.input_columns`
    share it (any object with `name`, `shape` and `columns`: the data layer's inputs too)."""
    if spec.columns:
        return tuple(spec.columns)
    if spec.shape[-1] == 1 or len(spec.shape) == 1:
        return (spec.name,)
    return None


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def output(self, role: str) -> TensorSpec | None:
        """The first output with this role (label, probabilities, prediction), if any."""
        return next((o for o in self.outputs if o.role == role), None)


def infer_task(spec: dict[str, Any]) -> str:
    """`spec.task`, else classification when an output is a label or probabilities.

    The one rule for every stage and for validate, so a metric that cannot apply is caught at
    commit time exactly as the test stage would read the manifest.
    """
    task = spec.get("task")
    if task:
        return str(task)
    signature = spec.get("signature")
    outputs = signature.get("outputs") if isinstance(signature, dict) else None
    roles = {o.get("role") for o in outputs or [] if isinstance(o, dict)}
    return "classification" if roles & {"label", "probabilities"} else "regression"


def artifact_format(artifact: dict[str, Any]) -> str | None:
    """`artifact.format`, else the format its file suffix names; None when neither tells."""
    fmt = artifact.get("format")
    if fmt:
        return str(fmt)
    return FORMAT_BY_SUFFIX.get(Path(str(artifact.get("path", ""))).suffix.lower())


@dataclass(frozen=True)
class Manifest:
    """A validated manifest; `data` is the document as plain JSON values."""

    path: Path
    root: Path
    data: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return str(self.data["metadata"]["name"])

    @property
    def version(self) -> str:
        return str(self.data["metadata"]["version"])

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(self.data["metadata"]["owners"])

    @property
    def risk(self) -> str:
        return str(self.data["metadata"]["risk"])

    @property
    def framework(self) -> str:
        return str(self.data["spec"]["framework"])

    @property
    def task(self) -> str:
        return infer_task(self.data["spec"])

    @property
    def artifact_path(self) -> Path:
        return self.resolve(self.data["spec"]["artifact"]["path"])

    @property
    def artifact_sha256(self) -> str:
        return str(self.data["spec"]["artifact"]["sha256"])

    @property
    def artifact_format(self) -> str:
        return artifact_format(self.data["spec"]["artifact"]) or "unknown"

    @property
    def signature(self) -> Signature:
        sig = self.data["spec"].get("signature") or {"inputs": [], "outputs": []}
        return Signature(
            inputs=tuple(tensor_spec(d) for d in sig["inputs"]),
            outputs=tuple(tensor_spec(d) for d in sig["outputs"]),
        )

    def section(self, name: str) -> dict[str, Any]:
        """A `spec` section (tests, conversion, benchmark, …) or {} when the manifest has none."""
        value = self.data["spec"].get(name)
        return value if isinstance(value, dict) else {}

    def resolve(self, relative: str) -> Path:
        """A manifest-relative path, checked to stay inside the repository."""
        resolved, problem = resolve_inside(self.path.parent, relative, self.root)
        if problem:
            raise CheckFailed(problem, path=self.path)
        assert resolved is not None
        return resolved


def tensor_spec(d: dict[str, Any]) -> TensorSpec:
    """A TensorSpec from a schema-valid signature entry."""
    cols = d.get("columns")
    return TensorSpec(
        name=d["name"],
        dtype=d["dtype"],
        shape=tuple(d["shape"]),
        columns=tuple(cols) if cols else None,
        role=d.get("role"),
    )


# --- versions ------------------------------------------------------------------------------------

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)


def semver_key(version: str) -> tuple[Any, ...]:
    """Sort key with semver 2.0 precedence (build metadata ignored); ValueError if not semver."""
    match = _SEMVER.fullmatch(version)  # `$` alone would let a trailing newline through
    if not match:
        raise ValueError(f"{version!r} is not a semantic version")
    major, minor, patch, pre = match.groups()
    core = (int(major), int(minor), int(patch))
    if pre is None:
        return (*core, 1, ())
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (*core, 0, ids)
