"""scikit-learn: .skops files loaded through an explicit trusted-type list; skl2onnx converts."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
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
        model = sio.load(artifact.path, trusted=found)
    except Exception as exc:
        raise CheckFailed(
            f"skops could not load the model: {type(exc).__name__}: {exc}", path=artifact.path
        ) from exc
    try:
        problem = _unsafe_state(model)
    except Exception as exc:  # state shaped so that even checking it fails: not a genuine fit
        problem = f"the model's fitted state cannot be checked ({type(exc).__name__}: {exc})"
    if problem:
        raise CheckFailed(f"refusing to load: {problem}", path=artifact.path)
    return model


def _walk(model: Any) -> Iterator[tuple[str, Any]]:
    """Every object reachable from the loaded model, each once, with where it sits. The whole
    graph, not get_params(): predict uses fitted attributes (a ColumnTransformer's
    `transformers_`, a forest's `estimators_`) that the parameters need not show."""
    seen: set[int] = set()
    pending: list[tuple[str, Any]] = [("the model", model)]
    while pending:
        where, item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield where, item
        if isinstance(item, dict):
            pending += [(f"{where}[{k!r}]", v) for k, v in item.items()]
        elif isinstance(item, list | tuple | set | frozenset):
            pending += [(f"{where}[{i}]", v) for i, v in enumerate(item)]
        elif isinstance(item, np.ndarray):
            if item.dtype == object:
                pending += [(f"{where}[{i}]", v) for i, v in enumerate(item.flat)]
        elif not isinstance(item, type) and isinstance(getattr(item, "__dict__", None), dict):
            pending += [(f"{where}.{k}", v) for k, v in vars(item).items()]


def _unsafe_state(model: Any) -> str | None:
    """Why the loaded model must not run, or None. skops rebuilds only trusted types, but their
    state is the file's: a text vectorizer can be told to open the files its inputs name, and
    scikit-learn's compiled tree code follows node ids and reads feature columns without
    bounds checks, so a crafted tree reads memory out of bounds (a crash, or worse) or loops
    forever."""
    from sklearn.feature_extraction.text import _VectorizerMixin

    for where, item in _walk(model):
        if isinstance(item, _VectorizerMixin) and getattr(item, "input", None) != "content":
            return (
                f"{where} ({type(item).__name__}, input={item.input!r}) opens the file each "
                "input names instead of reading the input as the text, so predicting would "
                "read files of the machine that runs the check; set input='content' (the "
                "default) and re-save the model"
            )
        problem = _tree_problem(item) or _width_problem(item) or _metric_params_problem(item)
        if problem:
            return (
                f"{where} ({type(item).__name__}) {problem}; scikit-learn's compiled tree, "
                "neighbour and distance code (and SciPy's) trusts these arrays, so it would "
                "read memory out of bounds or never finish. Re-save the model from a genuine fit"
            )
    return None


def _children_problem(left: np.ndarray, right: np.ndarray, inner: np.ndarray) -> str | None:
    """Children of inner nodes must come after their parent (no cycles) and exist."""
    index = np.arange(len(left))
    for name, child in (("left", left), ("right", right)):
        bad = inner & ((child <= index) | (child >= len(left)))
        if bad.any():
            node = int(np.flatnonzero(bad)[0])
            return f"has node {node} whose {name} child is {int(child[node])} of {len(left)}"
    return None


def _tree_problem(item: Any) -> str | None:
    """A fitted tree whose node arrays point outside themselves or outside the features."""
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.tree._tree import Tree

    if isinstance(item, Tree):
        state = item.__getstate__()
        nodes = state["nodes"]
        if state["node_count"] != len(nodes):
            return f"claims {state['node_count']} nodes but holds {len(nodes)}"
        left, right, feature = nodes["left_child"], nodes["right_child"], nodes["feature"]
        inner = left != -1  # _tree.TREE_LEAF: a node is a leaf when its left child is
        if (right[~inner] != -1).any():
            return "has a leaf with a right child"
        bad = inner & ((feature < 0) | (feature >= item.n_features))
        if bad.any():
            node = int(np.flatnonzero(bad)[0])
            return f"splits node {node} on feature {int(feature[node])} of {item.n_features}"
        return _children_problem(left, right, inner)
    if _is_neighbour_index(item):
        return _neighbour_index_problem(item)
    if isinstance(item, TreePredictor):
        nodes = item.nodes
        inner = nodes["is_leaf"] == 0
        categorical = inner & (nodes["is_categorical"] != 0)
        bitsets = min(len(item.raw_left_cat_bitsets), len(item.binned_left_cat_bitsets))
        if (categorical & (nodes["bitset_idx"] >= bitsets)).any():
            return "has a categorical split whose bitset it does not hold"
        return _children_problem(nodes["left"], nodes["right"], inner)
    return None


def _is_neighbour_index(item: Any) -> bool:
    """A KDTree or BallTree (float64 or float32: the classes share no base class)."""
    module = type(item).__module__
    return module in ("sklearn.neighbors._kd_tree", "sklearn.neighbors._ball_tree") and hasattr(
        item, "get_arrays"
    )


def _neighbour_index_problem(tree: Any) -> str | None:
    """A KDTree / BallTree whose index arrays point outside its data: its queries follow them
    unchecked."""
    data, idx_array, node_data, bounds = (np.asarray(a) for a in tree.get_arrays())
    n = len(data)
    if data.ndim != 2 or len(idx_array) != n or ((idx_array < 0) | (idx_array >= n)).any():
        return f"indexes points outside its {n} data points"
    start, end = node_data["idx_start"], node_data["idx_end"]
    if ((start < 0) | (start > end) | (end > n)).any():
        return f"has a node whose points lie outside its {n} data points"
    inner = np.flatnonzero(node_data["is_leaf"] == 0)
    if len(inner) and 2 * int(inner.max()) + 2 >= len(node_data):
        return f"has a node whose children lie outside its {len(node_data)} nodes"
    # a node's bounds (KDTree: lower and upper corner; BallTree: centroid) per feature, read
    # at [k, node, feature] for every node and feature
    width = data.shape[1]
    corners = 2 if type(tree).__module__ == "sklearn.neighbors._kd_tree" else 1
    if np.shape(bounds) != (corners, len(node_data), width):
        return (
            f"holds node bounds of shape {list(np.shape(bounds))} for {len(node_data)} nodes "
            f"of {width} features"
        )
    return _metric_problem(tree.__getstate__()[11], width)


def _metric_problem(metric: Any, width: int) -> str | None:
    """A DistanceMetric whose parameters do not fit the data's width: its distances read
    them at every feature unchecked (only its `pairwise` checks, which the trees never call)."""
    name = type(metric).__name__.rstrip("0123456789")
    _, vec, mat = (np.asarray(v) for v in metric.__getstate__()[:3])
    if name == "MinkowskiDistance" and vec.size not in (0, width):
        return f"weighs {vec.size} features of {width} in its {name}"
    if name == "SEuclideanDistance" and vec.shape != (width,):
        return f"holds variances of shape {list(vec.shape)} for {width} features in its {name}"
    if name == "MahalanobisDistance" and mat.shape != (width, width):
        return f"holds a matrix of shape {list(mat.shape)} for {width} features in its {name}"
    if name == "HaversineDistance" and width != 2:
        return f"reads 2 features of {width} in its {name}"
    return None


#: Parameters of a neighbours estimator's metric that are read per feature, or per pair of
#: features: scipy's cdist reads a Mahalanobis `VI` of any shape as width × width.
_METRIC_ARRAYS = ("w", "V", "VI")


def _metric_params_problem(item: Any) -> str | None:
    """A neighbours estimator whose metric parameters do not fit the features it takes."""
    width = getattr(item, "n_features_in_", None)
    if not isinstance(width, int | np.integer):
        return None
    for attribute in ("metric_params", "effective_metric_params_"):
        params = getattr(item, attribute, None)
        if not isinstance(params, dict):
            continue
        for key in _METRIC_ARRAYS:
            if params.get(key) is None:
                continue
            shape = np.shape(params[key])
            square = (width, width)
            if shape != square and (key == "VI" or shape != (width,)):
                return f"has {attribute}[{key!r}] of shape {list(shape)} for its {width} features"
    return None


def _width_problem(item: Any) -> str | None:
    """Trees read as many columns as their owner says it takes: the widths must agree where
    scikit-learn checks the data against the owner only (a tree's `n_features_in_`, gradient
    boosting's, which hands the rows to every tree unchecked)."""
    from sklearn.ensemble._gb import BaseGradientBoosting
    from sklearn.tree._tree import Tree

    width = getattr(item, "n_features_in_", None)
    tree = getattr(item, "tree_", None)
    if isinstance(tree, Tree) and tree.n_features != width:
        return f"takes {width} features but its tree reads {tree.n_features}"
    if isinstance(item, BaseGradientBoosting):
        shape = np.shape(item.estimators_)
        if len(shape) != 2 or shape[1] != item.n_trees_per_iteration_:
            return f"holds trees of shape {list(shape)} for {item.n_trees_per_iteration_} outputs"
        for i, sub in enumerate(np.asarray(item.estimators_, dtype=object).flat):
            if getattr(sub, "n_features_in_", None) != width:
                return f"takes {width} features but its tree {i} takes {sub.n_features_in_}"
    predictors = getattr(item, "_predictors", None)
    if isinstance(predictors, list) and width is not None:
        for stage in predictors:
            for predictor in stage:
                nodes = predictor.nodes
                inner = nodes["is_leaf"] == 0
                if (inner & (nodes["feature_idx"] >= width)).any():
                    return f"takes {width} features but a tree splits on a feature beyond them"
    return None


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
