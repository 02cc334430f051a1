"""scikit-learn: .skops files loaded through an explicit trusted-type list; skl2onnx converts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ci.digest import verify_digest
from mlops_ci.errors import CheckFailed
from mlops_ci.frameworks import Artifact, Batch, Exported, _safe, outputs_by_role

if TYPE_CHECKING:
    from mlops_ci.manifest import Signature

HEAVY_IMPORTS = ("sklearn", "skops.io", "skl2onnx", "pandas")

#: Types beyond skops' defaults that we checked: fitted-state containers and pure functions of
#: scikit-learn and numpy that take no code from the file (tree arrays, neighbour indexes,
#: calibrators, kernels, optimiser state). Nothing here can call a function the file names.
VETTED_TYPES = frozenset(
    {
        "numpy.dtype",
        "builtins.slice",
        "collections.OrderedDict",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.ChebyshevDistance64",
        "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.isotonic.IsotonicRegression",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn.gaussian_process.kernels.RBF",
        "sklearn.gaussian_process.kernels.ConstantKernel",
        "sklearn.gaussian_process.kernels.WhiteKernel",
        "sklearn.gaussian_process.kernels.Matern",
        "sklearn.gaussian_process.kernels.DotProduct",
        "sklearn.gaussian_process.kernels.Sum",
        "sklearn.gaussian_process.kernels.Product",
        "sklearn._loss.loss.HalfTweedieLossIdentity",
        "sklearn.feature_selection._univariate_selection.f_classif",
        "sklearn.feature_selection._univariate_selection.f_regression",
        "sklearn.feature_selection._univariate_selection.chi2",
        "scipy.interpolate._bsplines.BSpline",
    }
)


def load(artifact: Artifact) -> Any:
    """The estimator in a .skops file, after the digest and trusted-type checks."""
    verify_digest(artifact.path, artifact.sha256, what="artifact")
    if artifact.format != "skops":
        raise CheckFailed(
            f"scikit-learn models are read from .skops files, not {artifact.format}; "
            f"{_safe.PICKLE_FIX}",
            path=artifact.path,
        )
    _safe.open_zip(artifact.path, "skops file").close()
    import skops.io as sio

    try:
        found = sio.get_untrusted_types(file=artifact.path)
    except Exception as exc:
        raise CheckFailed(f"not a readable skops file: {exc}", path=artifact.path) from exc
    allowed = VETTED_TYPES | set(artifact.trusted_types)
    refused = sorted(t for t in found if t not in allowed)
    if refused:
        raise CheckFailed(
            f"refusing to load: the file uses type(s) that are not trusted: {', '.join(refused)}. "
            "A type that is not trusted can run code while loading. If a reviewer has checked "
            "a class, list it under trusted_types in .mlops/policy.yaml, in a pull request of "
            "its own (the policy is read at the base commit and its changes need the highest "
            "tier); otherwise re-save the model with types skops trusts",
            path=artifact.path,
        )
    try:
        return sio.load(artifact.path, trusted=found)
    except Exception as exc:
        raise CheckFailed(
            f"skops could not load the model: {type(exc).__name__}: {exc}", path=artifact.path
        ) from exc


def _tensor_type(dtype: str, shape: tuple[int, ...]) -> Any:
    from skl2onnx.common import data_types as t

    types = {
        "float32": t.FloatTensorType,
        "float64": t.DoubleTensorType,
        "int64": t.Int64TensorType,
        "int32": t.Int32TensorType,
        "bool": t.BooleanTensorType,
        "string": t.StringTensorType,
    }
    if dtype not in types:
        raise CheckFailed(f"skl2onnx cannot take {dtype} inputs (use one of {', '.join(types)})")
    return types[dtype]([None if d < 0 else d for d in shape])


def _final_estimator(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    return steps[-1][1] if steps else model


def to_onnx(
    model: Any, signature: Signature, *, opset: int, options: Mapping[str, Any]
) -> Exported:
    """skl2onnx conversion, ZipMap always off, inputs named and typed per the signature."""
    import skl2onnx
    from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator
    from sklearn.base import is_classifier

    final = _final_estimator(model)
    classifier = is_classifier(final)
    estimator_options = {**options, "zipmap": False} if classifier else dict(options)
    initial_types = [(s.name, _tensor_type(s.dtype, s.shape)) for s in signature.inputs]
    try:
        onx = skl2onnx.convert_sklearn(
            model,
            initial_types=initial_types,
            target_opset=opset,
            options={id(final): estimator_options} if estimator_options else None,
        )
    except (MissingConverter, MissingShapeCalculator) as exc:
        found = re.search(r"<class '([^']+)'>", str(exc))
        name = found.group(1) if found else type(final).__name__
        raise CheckFailed(
            f"skl2onnx has no converter for {name}. Register one with "
            "skl2onnx.update_registered_converter(...) in a module of yours and pass it to "
            "`mlops-ci convert --plugin MODULE` (see docs/conversion.md, 'Custom converters')"
        ) from exc
    except Exception as exc:
        raise CheckFailed(
            f"skl2onnx failed to convert {type(model).__name__}: {type(exc).__name__}: {exc}"
        ) from exc
    roles = ("label", "probabilities") if classifier else ("prediction",)
    return Exported(onx, f"skl2onnx {skl2onnx.__version__}", roles)


def feature_names(model: Any) -> tuple[str, ...] | None:
    """`feature_names_in_` of a model fitted on a DataFrame (a Pipeline has its first step's)."""
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else tuple(str(n) for n in names)


def _native_input(model: Any, batch: Batch) -> Any:
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        arrays = [np.asarray(a).reshape(len(a), -1) for a in batch.feeds.values()]
        return np.hstack(arrays) if len(arrays) > 1 else arrays[0]
    import pandas as pd

    frame: dict[str, np.ndarray] = {}
    for name, array in batch.feeds.items():
        matrix = np.asarray(array).reshape(len(array), -1)
        for j, column in enumerate(batch.columns[name]):
            frame[column] = matrix[:, j]
    missing = [str(n) for n in names if n not in frame]
    if missing:
        raise CheckFailed(
            f"the model was trained on column(s) {', '.join(missing)}, which no signature "
            "input provides (set `columns:` on the inputs)"
        )
    return pd.DataFrame({str(n): frame[str(n)] for n in names})


def predict(model: Any, batch: Batch, signature: Signature) -> dict[str, np.ndarray]:
    """predict / predict_proba on the same rows, keyed by the signature's output names."""
    x = _native_input(model, batch)
    roles = {o.role for o in signature.outputs}
    values: dict[str, np.ndarray] = {}
    if roles & {"label", "prediction"}:
        predicted = np.asarray(model.predict(x))
        values["label"] = predicted
        values["prediction"] = predicted.reshape(len(predicted), -1)
    if "probabilities" in roles:
        values["probabilities"] = np.asarray(model.predict_proba(x))
    return outputs_by_role(signature, values)
