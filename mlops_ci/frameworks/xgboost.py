"""XGBoost: native JSON / UBJSON boosters (data only, no code), converted by onnxmltools."""

from __future__ import annotations

import itertools
import json
import re
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mlops_ci.errors import CheckFailed
from mlops_ci.frameworks import Artifact, Batch, Exported, _trees, outputs_by_role

if TYPE_CHECKING:
    from mlops_ci.manifest import Signature

HEAVY_IMPORTS = ("xgboost", "onnxmltools")


def load(artifact: Artifact) -> Any:
    """An xgboost.Booster from its JSON or UBJSON model file (never a pickle), loaded from the
    bytes that were checked."""
    raw = _trees.pinned_bytes(artifact)
    if artifact.format not in ("xgboost-json", "xgboost-ubj"):
        raise CheckFailed(
            f"XGBoost models are read from their JSON or UBJ model files, not {artifact.format} "
            "(save with booster.save_model('model.json'))",
            path=artifact.path,
        )
    # XGBoost's loader itself follows the file's parents, category segments and leaf sizes
    # without bounds checks: the file is checked before XGBoost reads a byte of it, and again
    # as XGBoost holds it (whatever it derived while loading)
    _refuse_if(lambda: _structure_problem(_document(raw, artifact.format), len(raw)), artifact)
    import xgboost

    try:
        booster = xgboost.Booster(model_file=bytearray(raw))
        doc = json.loads(booster.save_raw(raw_format="json"))
    except xgboost.core.XGBoostError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckFailed(f"XGBoost cannot read the model: {first}", path=artifact.path) from exc
    _refuse_if(lambda: _structure_problem(doc, len(raw)), artifact)
    return booster


def _refuse_if(check: Callable[[], str | None], artifact: Artifact) -> None:
    """Raise CheckFailed with what `check` finds, or with why it could not look."""
    try:
        problem = check()
    except _Unreadable as exc:
        problem = f"cannot be checked: {exc}"
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError) as exc:
        problem = f"has trees that cannot be checked ({type(exc).__name__}: {exc})"
    if problem:
        raise CheckFailed(
            f"refusing to load: the model {problem}; XGBoost's loader and predictor follow "
            "these arrays without bounds checks, so it would read or write memory out of "
            "bounds (a crash, or worse) or never finish. Re-save the model from a genuine "
            "training run",
            path=artifact.path,
        )


class _Unreadable(ValueError):
    """Bytes that XGBoost would read differently from the checks (or past their end)."""


def _document(raw: bytes, fmt: str) -> dict[str, Any]:
    """The model document as XGBoost's loader reads these bytes from a buffer: JSON when the
    first character after '{' is '"', UBJSON when it is a letter (c_api.cc,
    DispatchModelType). A key given twice is refused: the checks and XGBoost could keep
    different ones (its UBJSON reader keeps the first, Python's json the last)."""
    if raw[:1] != b"{":
        raise _Unreadable("the file does not start with '{'")
    second = raw[1:].lstrip(b" \t\n\v\f\r")[:1]
    if second == b'"' and fmt == "xgboost-json":
        doc = json.loads(raw, object_pairs_hook=_no_duplicates)
    elif second.isalpha() and fmt == "xgboost-ubj":
        doc = _Ubj(raw).document()
    else:
        kind = "JSON" if second == b'"' else "UBJSON" if second.isalpha() else "neither"
        raise _Unreadable(f"its content is {kind}, which is not what its {fmt} name says")
    if not isinstance(doc, dict):
        raise _Unreadable("the document is not an object")
    return doc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen = [k for k, _ in pairs]
        twice = next(k for k in seen if seen.count(k) > 1)
        raise _Unreadable(f"an object holds the key {twice!r} twice")
    return doc


class _Ubj:
    """UBJSON exactly as XGBoost's UBJReader reads it (json.cc), with every length checked
    against the bytes that are left: XGBoost's own reader copies strings and typed arrays of
    whatever length the file claims."""

    #: typed-array markers and their big-endian element types (UBJReader::ParseArray)
    _TYPED: ClassVar[dict[bytes, str]] = {
        b"d": ">f4",
        b"D": ">f8",
        b"i": ">i1",
        b"U": ">u1",
        b"I": ">i2",
        b"l": ">i4",
        b"L": ">i8",
    }
    _SCALARS: ClassVar[dict[bytes, str]] = {**_TYPED, b"C": ">i1"}
    _MAX_DEPTH = 64

    def __init__(self, raw: bytes) -> None:
        self.raw, self.pos = raw, 0

    def document(self) -> Any:
        value = self._value(0)
        if self.pos != len(self.raw):
            raise _Unreadable(f"{len(self.raw) - self.pos} bytes follow the document")
        return value

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.raw):
            raise _Unreadable(f"a length of {n} at byte {self.pos} runs past the file's end")
        chunk = self.raw[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _int64(self) -> int:
        if self._take(1) != b"L":
            raise _Unreadable(f"byte {self.pos - 1}: a length is not an int64")
        return int.from_bytes(self._take(8), "big", signed=True)

    def _string(self) -> str:
        return self._take(self._int64()).decode("utf-8", "surrogateescape")

    def _value(self, depth: int) -> Any:
        if depth > self._MAX_DEPTH:
            raise _Unreadable("the document nests too deep")
        marker = self._take(1)
        if marker == b"{":
            obj: dict[str, Any] = {}
            while self.raw[self.pos : self.pos + 1] != b"}":
                key = self._string()
                if key in obj:
                    raise _Unreadable(f"an object holds the key {key!r} twice")
                obj[key] = self._value(depth + 1)
            self.pos += 1
            return obj
        if marker == b"[":
            return self._array(depth)
        if marker in (b"Z", b"T", b"F"):
            return {b"Z": None, b"T": True, b"F": False}[marker]
        if marker == b"S":
            return self._string()
        if marker in self._SCALARS:
            dtype = np.dtype(self._SCALARS[marker])
            return np.frombuffer(self._take(dtype.itemsize), dtype)[0].item()
        raise _Unreadable(f"byte {self.pos - 1}: unknown marker {marker!r}")

    def _array(self, depth: int) -> list[Any]:
        head = self.raw[self.pos : self.pos + 1]
        if head == b"$":
            self.pos += 1
            kind = self._take(1)
            if kind not in self._TYPED or self._take(1) != b"#":
                raise _Unreadable(f"byte {self.pos - 1}: a typed array XGBoost cannot read")
            dtype = np.dtype(self._TYPED[kind])
            count = self._int64()
            if count < 0:
                raise _Unreadable(f"a typed array of {count} values")
            return np.frombuffer(self._take(count * dtype.itemsize), dtype).tolist()
        if head == b"#":
            self.pos += 1
            count = self._int64()
            if not 0 <= count <= len(self.raw) - self.pos:  # every value takes a byte at least
                raise _Unreadable(f"an array of {count} values runs past the file's end")
            return [self._value(depth + 1) for _ in range(count)]
        values = []
        while self.raw[self.pos : self.pos + 1] != b"]":
            values.append(self._value(depth + 1))
        self.pos += 1
        return values


_COUNT = re.compile(r"[0-9]{1,9}")
#: XGBoost's own bound on a category (common/categorical.h, OutOfRangeCat: 2**24, the
#: integers a float32 holds exactly); larger ones are never produced by training.
_MAX_CATEGORY = 1 << 24
#: Category bitsets may take this much memory at most, plus 64 × the file's size: XGBoost
#: sizes each split's bitset by its largest category, so a few bytes of file can claim
#: megabytes (the ONNX loader bounds its tensors the same way).
_BITSET_FLOOR = 64 << 20


def _count(value: Any) -> int:
    """A count XGBoost parses from a string (dmlc parameters, std::stoul): plain digits only,
    so that Python and C++ cannot read two numbers from one value."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Unreadable(f"{value!r} is not a count")
    if isinstance(value, str) and not _COUNT.fullmatch(value):
        raise _Unreadable(f"{value[:20]!r} is not a count")
    return int(value)


def _structure_problem(doc: dict[str, Any], file_size: int) -> str | None:
    """What in the model's JSON (the file's, or XGBoost's own after loading) points outside
    its arrays: a child, a parent, a split feature, a category segment, a tree's output
    group, an iteration's trees; or sizes that the trees do not back (outputs no tree feeds,
    vector leaves, category bitsets far larger than the file)."""
    learner = doc["learner"]
    params = learner["learner_model_param"]
    n_features = _count(params["num_feature"])
    groups = max(_count(params.get("num_class", "0")), _count(params.get("num_target", "1")), 1)
    booster = learner["gradient_booster"]
    if booster.get("name") == "gblinear":
        weights = booster["model"]["weights"]
        if len(weights) != (n_features + 1) * groups:
            return f"holds {len(weights)} linear weights for {n_features} features"
        return None
    model = booster["gbtree"]["model"] if "gbtree" in booster else booster["model"]
    trees, info = model["trees"], model["tree_info"]
    for t, tree in enumerate(trees):  # first: they also break the output count below
        leaf_size = _count(tree["tree_param"].get("size_leaf_vector", "1"))
        if leaf_size > 1:  # multi_strategy="multi_output_tree": other arrays, no converter
            return (
                f"has tree {t} with vector leaves (size_leaf_vector {leaf_size}), which "
                "mlops-ci does not check or convert; train one tree per output "
                "(multi_strategy='one_output_per_tree')"
            )
    if len(info) != len(trees) or any(not 0 <= int(g) < groups for g in info):
        return f"assigns its {len(trees)} trees to output groups outside its {groups}"
    # every prediction holds one value per output group: outputs that no tree feeds are
    # claimed, not trained (num_target: 10**7 makes each row 40 MB)
    if {int(g) for g in info} != set(range(groups)) and (trees or groups > 1):
        return f"has {groups} outputs, but its trees feed only {len(set(info))}"
    indptr = model.get("iteration_indptr")
    if indptr is not None and (
        not indptr
        or indptr[0] != 0
        or indptr[-1] != len(trees)
        or any(b < a for a, b in itertools.pairwise(indptr))
    ):
        return (
            f"has an iteration_indptr ({_preview(indptr)}) that does not divide its "
            f"{len(trees)} trees into iterations from the first tree on"
        )
    budget = [_BITSET_FLOOR + 64 * file_size]
    for t, tree in enumerate(trees):
        problem = _tree_problem(tree, n_features, budget)
        if problem:
            return f"has tree {t} {problem}"
    return None


def _preview(values: list[Any]) -> str:
    shown = ", ".join(str(v) for v in values[:6])
    return f"[{shown}{', …' if len(values) > 6 else ''}]"


def _tree_problem(tree: dict[str, Any], n_features: int, budget: list[int]) -> str | None:
    param = tree["tree_param"]
    n = _count(param["num_nodes"])
    per_node = (
        "left_children",
        "right_children",
        "parents",
        "split_indices",
        "split_conditions",
        "default_left",
    )
    if any(len(tree[key]) != n for key in per_node) or len(tree.get("split_type", [0] * n)) != n:
        return f"whose node arrays do not all hold its {n} nodes"
    parents = tree["parents"]
    for i, (left, right) in enumerate(
        zip(tree["left_children"], tree["right_children"], strict=True)
    ):
        # the loader reads every node's parent (but the root's) unchecked
        if i and not 0 <= parents[i] < n:
            return f"whose node {i} has parent {parents[i]} of {n}"
        if left == -1:
            if right != -1:
                return f"whose leaf {i} has a right child"
            continue
        # children come after their parent: a loop, or a jump outside the tree, is refused
        if not (i < left < n and i < right < n):
            return f"whose node {i} has children {left} and {right} of {n}"
        if not 0 <= tree["split_indices"][i] < n_features:
            return f"whose node {i} splits on feature {tree['split_indices'][i]} of {n_features}"
    return _categories_problem(tree, n, budget)


def _categories_problem(tree: dict[str, Any], n: int, budget: list[int]) -> str | None:
    """Categorical splits as RegTree::LoadCategoricalSplit reads them: node i's segment
    [start, start + size) of `categories`, a bitset as wide as its largest category."""
    keys = ("categories_nodes", "categories_segments", "categories_sizes", "categories")
    nodes, starts, sizes, categories = (tree.get(k, []) for k in keys)
    if not len(nodes) == len(starts) == len(sizes):
        return "whose categorical splits are incomplete"
    if any(b <= a for a, b in itertools.pairwise(nodes)):
        return "whose categorical splits are not in node order"
    for node, start, size in zip(nodes, starts, sizes, strict=True):
        if not (0 <= node < n and start >= 0 and size > 0 and start + size <= len(categories)):
            return f"whose categorical split at node {node} lies outside its categories"
        largest = max(categories[start : start + size])
        if min(categories[start : start + size]) < 0 or largest >= _MAX_CATEGORY:
            return f"whose categorical split at node {node} names category {largest}"
        budget[0] -= 4 * (largest // 32 + 1)
        if budget[0] < 0:
            return "whose category bitsets would take far more memory than the file holds"
    return None


_OBJECTIVES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def objective(booster: Any) -> str:
    """The booster's objective (binary:logistic, multi:softprob, reg:squarederror, ...), cached."""
    if booster not in _OBJECTIVES:
        config = json.loads(booster.save_config())
        _OBJECTIVES[booster] = str(config["learner"]["objective"]["name"])
    return _OBJECTIVES[booster]


def feature_names(model: Any) -> tuple[str, ...] | None:
    """The booster's feature names (set when it was trained on a DataFrame)."""
    names = model.feature_names
    return tuple(names) if names else None


def to_onnx(
    model: Any, signature: Signature, *, opset: int, options: Mapping[str, Any]
) -> Exported:
    import onnxmltools

    # onnxmltools reads features by position and accepts only XGBoost's own names (f0, f1, …);
    # a booster trained on a DataFrame carries its column names, which the stages map to the
    # input by name (data.input_columns), so the converter gets a copy without them.
    positional = model
    if model.feature_names:
        positional = model.copy()
        positional.feature_names = None
    onx = _trees.convert(
        onnxmltools.convert_xgboost,
        positional,
        signature,
        framework="XGBoost",
        opset=opset,
        options=options,
        about=f" (objective {objective(model)})",
    )
    classifier = objective(model).startswith(("binary:", "multi:"))
    roles = ("label", "probabilities") if classifier else ("prediction",)
    return Exported(onx, f"onnxmltools {onnxmltools.__version__} (xgboost)", roles)


def predict(model: Any, batch: Batch, signature: Signature) -> dict[str, np.ndarray]:
    import xgboost

    x = _trees.only_rows(batch.feeds)
    # the data's own column names, so XGBoost itself refuses columns in another order than the
    # booster was trained on, instead of the native model and ONNX agreeing on the wrong order
    (columns,) = batch.columns.values() if len(batch.columns) == 1 else (None,)
    names = list(columns) if model.feature_names and columns else model.feature_names
    try:
        matrix = xgboost.DMatrix(x, feature_names=names)
        scores = model.predict(matrix)
    except (ValueError, xgboost.core.XGBoostError) as exc:
        raise CheckFailed(f"XGBoost cannot predict on these columns: {exc}") from exc
    if objective(model).startswith(("binary:", "multi:")):
        return outputs_by_role(signature, _trees.class_values(scores))
    return outputs_by_role(signature, {"prediction": np.asarray(scores).reshape(len(x), -1)})
