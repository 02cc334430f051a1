"""The framework table: `spec.framework` -> the module that loads, converts and runs that framework.

Every framework module has the same surface (`load`, `to_onnx`, `predict`), so the stages never
branch on framework names. Modules are imported on first use: `mlops-ci validate` pays for none.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from mlops_ci.errors import UsageError

if TYPE_CHECKING:
    import onnx

    from mlops_ci.manifest import Signature

#: spec.framework -> module path. Adding a framework is adding a module and a line here.
FRAMEWORKS: Mapping[str, str] = {
    "sklearn": "mlops_ci.frameworks.sklearn",
    "xgboost": "mlops_ci.frameworks.xgboost",
    "lightgbm": "mlops_ci.frameworks.lightgbm",
    "pytorch": "mlops_ci.frameworks.pytorch",
    "onnx": "mlops_ci.frameworks.onnx",
}


@dataclass(frozen=True)
class Artifact:
    """The model file as the manifest pins it; `load` verifies the digest before reading."""

    path: Path
    sha256: str
    format: str
    trusted_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Batch:
    """Native-model inputs: arrays per signature input (floats widened to float64) and the
    data columns behind each input, so a framework can rebuild a DataFrame where it needs one."""

    feeds: Mapping[str, np.ndarray]
    columns: Mapping[str, tuple[str, ...]]

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.feeds.values()))) if self.feeds else 0


@dataclass(frozen=True)
class Exported:
    """A converter's ONNX model before it is aligned to the signature.

    `output_roles` names what each graph output holds (label, probabilities, prediction) or None
    when the converter cannot tell; outputs are then matched to the signature by position.
    `passthrough` marks a model that was ONNX already: it is checked, never edited (beyond
    provenance metadata), so its outputs and opset stay as the author made them.
    """

    model: onnx.ModelProto
    converter: str
    output_roles: tuple[str | None, ...] = ()
    notes: tuple[str, ...] = field(default=())
    passthrough: bool = False


class Framework(Protocol):
    """The surface every module in FRAMEWORKS provides."""

    #: the third-party modules the framework imports (for the import-cost benchmark)
    HEAVY_IMPORTS: tuple[str, ...]

    def load(self, artifact: Artifact) -> Any:
        """Verify the digest, refuse unsafe content, and return the native model."""
        ...

    def to_onnx(
        self, model: Any, signature: Signature, *, opset: int, options: Mapping[str, Any]
    ) -> Exported:
        """Convert the native model; inputs are named and typed as the signature says."""
        ...

    def predict(self, model: Any, batch: Batch, signature: Signature) -> dict[str, np.ndarray]:
        """Native predictions keyed by signature output name (outputs it can compute)."""
        ...

    def feature_names(self, model: Any) -> tuple[str, ...] | None:
        """The columns the model was trained on, in order, when it recorded them (a model
        fitted on a DataFrame); None when it did not."""
        ...


def get(framework: str) -> Framework:
    """The module for `spec.framework`, imported now."""
    try:
        module_name = FRAMEWORKS[framework]
    except KeyError:
        known = ", ".join(FRAMEWORKS)
        raise UsageError(f"unknown framework {framework!r} (known: {known})") from None
    return cast(Framework, importlib.import_module(module_name))


def outputs_by_role(
    signature: Signature, values: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Native values keyed by role -> keyed by the signature output that has that role."""
    out: dict[str, np.ndarray] = {}
    for spec in signature.outputs:
        if spec.role is not None and spec.role in values:
            out[spec.name] = values[spec.role]
    return out
