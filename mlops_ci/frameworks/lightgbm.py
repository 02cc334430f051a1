"""LightGBM: native text model files (data only, no code), converted by onnxmltools."""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ci.errors import CheckFailed
from mlops_ci.frameworks import Artifact, Batch, Exported, _trees, outputs_by_role

if TYPE_CHECKING:
    from mlops_ci.manifest import Signature

HEAVY_IMPORTS = ("lightgbm", "onnxmltools")


def load(artifact: Artifact) -> Any:
    """A lightgbm.Booster from its text model file (never a pickle), read as it was checked."""
    raw = _trees.pinned_bytes(artifact)
    if artifact.format != "lightgbm-text":
        raise CheckFailed(
            f"LightGBM models are read from their text model files, not {artifact.format} "
            "(save with booster.save_model('model.txt'))",
            path=artifact.path,
        )
    try:
        text = raw.decode("utf-8")
        model = _parse(text)
        problem = _structure_problem(model)
    except _Unreadable as exc:
        problem = f"cannot be checked: {exc}"
    except (KeyError, ValueError, IndexError, OverflowError) as exc:
        problem = f"cannot be checked ({type(exc).__name__}: {exc})"
    if problem:
        raise CheckFailed(
            f"refusing to load: the model {problem}; LightGBM's loader and predictor follow "
            "these values without bounds checks, so it would crash the process or never "
            "finish. Re-save the model from a genuine training run",
            path=artifact.path,
        )
    import lightgbm

    try:
        # the text that was checked, not the file again; without `tree_sizes`, which only
        # makes LightGBM parse the trees in parallel threads, where a tree it cannot read
        # aborts the process instead of raising (the checks mirror the sequential parse)
        return lightgbm.Booster(model_str=model.without_tree_sizes)
    except lightgbm.basic.LightGBMError as exc:
        raise CheckFailed(f"LightGBM cannot read the model: {exc}", path=artifact.path) from exc


class _Unreadable(ValueError):
    """Text that LightGBM would read differently from the checks (or past its end)."""


@dataclass(frozen=True)
class _Model:
    header: dict[str, str]
    trees: list[dict[str, str]]
    without_tree_sizes: str


#: How many key=value lines LightGBM's Tree parser reads at most (tree.cpp, max_num_line).
_MAX_TREE_LINES = 22
_NEWLINE = re.compile(r"[\r\n]")
_INT = re.compile(r" *[+-]?[0-9]+ *")
_INTS = re.compile(r"(?: *[+-]?[0-9]+)* *")
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")


def _line_end(text: str, pos: int) -> int:
    found = _NEWLINE.search(text, pos)
    return found.start() if found else len(text)


def _skip_newline(text: str, pos: int) -> int:
    # Common::SkipNewLine: one '\r', then one '\n'
    if text.startswith("\r", pos):
        pos += 1
    if text.startswith("\n", pos):
        pos += 1
    return pos


def _parse(text: str) -> _Model:
    """The header and the trees exactly as LightGBM's sequential loader finds them
    (GBDT::LoadModelFromString without tree_sizes, and Tree::Tree): the same line breaks
    ('\\r' or '\\n'), at most 22 lines per tree, a tree ending at its first empty line, the
    tree list ending at the first line that is not `Tree=`. Where LightGBM would read past
    the text, or keep one of two values for a key, the text is refused instead."""
    if "\0" in text:  # LightGBM stops reading lines at NUL and loops on it
        raise _Unreadable("the text holds a NUL character")
    header: dict[str, str] = {}
    pos, sizes_line = 0, None
    while pos < len(text):
        end = _line_end(text, pos)
        line = text[pos:end]
        if line.startswith("Tree="):
            break
        if line:
            parts = [p for p in line.split("=") if p]  # Common::Split drops empty pieces
            key = parts[0]
            if len(parts) > 2 and key not in ("feature_names", "monotone_constraints"):
                raise _Unreadable(f"header line {line[:40]!r} holds more than one '='")
            if key in header:
                raise _Unreadable(f"the header sets {key!r} twice")
            header[key] = line[len(key) + 1 :] if len(parts) > 2 else "".join(parts[1:2])
            if key == "tree_sizes":
                sizes_line = (pos, _skip_newline(text, end))
        pos = _skip_newline(text, end)
    trees: list[dict[str, str]] = []
    while pos < len(text):
        end = _line_end(text, pos)
        if end > pos:
            if not text.startswith("Tree=", pos):
                break
            fields, pos = _tree_fields(text, _skip_newline(text, end))
            trees.append(fields)
            continue
        pos = _skip_newline(text, end)
    plain = text if sizes_line is None else text[: sizes_line[0]] + text[sizes_line[1] :]
    return _Model(header, trees, plain)


def _tree_fields(text: str, pos: int) -> tuple[dict[str, str], int]:
    """One tree's key=value lines from `pos`, as Tree::Tree(const char*) reads them, and where
    the loader goes on (after one line break)."""
    fields: dict[str, str] = {}
    for _ in range(_MAX_TREE_LINES):
        if pos >= len(text):  # LightGBM would read on past the end of the text
            raise _Unreadable("the last tree does not end with a line break")
        if text[pos] in "\r\n":
            break
        end = _line_end(text, pos)
        key, eq, value = text[pos:end].partition("=")
        if not eq:  # LightGBM looks for '=' across line breaks, and past the text's end
            raise _Unreadable(f"tree line {text[pos:end][:40]!r} has no '='")
        if end == len(text):
            raise _Unreadable("the last tree does not end with a line break")
        if key in fields:
            raise _Unreadable(f"a tree sets {key!r} twice")
        fields[key] = value
        pos = _skip_newline(text, end)
    return fields, _skip_newline(text, pos)


def _int(value: str, what: str) -> int:
    """A number as Common::Atoi reads it, refused where Atoi would read it differently
    (trailing text, digits Python reads and C does not, values that wrap in 32 bits)."""
    if not _INT.fullmatch(value):
        raise _Unreadable(f"{what} is {value[:40]!r}, not an integer")
    number = int(value)
    if not -(2**31) <= number < 2**31:
        raise _Unreadable(f"{what} is {number}, outside 32 bits")
    return number


def _ints(
    value: str, count: int, what: str, *, low: int = -(2**31), high: int = 2**31
) -> list[int]:
    """`count` integers as StringToArrayFast reads them (Atoi after Atoi: spaces only, and
    zeros, without a word, where the text runs short), each in [low, high)."""
    if not _INTS.fullmatch(value):
        raise _Unreadable(f"{what} holds something other than integers separated by spaces")
    numbers = [int(v) for v in value.split()]
    if len(numbers) != count:
        raise _Unreadable(f"{what} holds {len(numbers)} values, not {count}")
    bad = next((n for n in numbers if not low <= n < high), None)
    if bad is not None:
        raise _Unreadable(f"{what} holds {bad}, outside [{low}, {high})")
    return numbers


def _count_numbers(value: str) -> int:
    # StringToArray<double>: the pieces between spaces, which LightGBM counts itself
    return len([v for v in value.split(" ") if v])


def _structure_problem(model: _Model) -> str | None:
    """What in a text model points outside its own arrays: a child id (internal nodes are
    0.., leaves ~0..; a child comes after its parent, so there is no loop), a split feature,
    a categorical split's bitset, a linear leaf's features, or a number of classes that the
    trees per iteration or the objective's own count contradicts."""
    header = model.header
    classes = _int(header["num_class"], "num_class")
    if classes < 1:
        return f"has {classes} classes"
    if _int(header.get("num_tree_per_iteration", header["num_class"]), "trees") != classes:
        return "has a number of trees per iteration other than its number of classes"
    objective = [v for v in header.get("objective", "").split(" ") if v]
    declared = [v.partition(":")[2] for v in objective[1:] if v.startswith("num_class:")]
    # a multiclass objective converts as many scores per row as it says, into a buffer of
    # one per class of the model: more overwrite the heap
    if any(_int(v, "the objective's num_class") != classes for v in declared):
        return f"has an objective ({' '.join(objective)[:60]}) for another number of classes"
    features = _int(header["max_feature_idx"], "max_feature_idx") + 1
    if features < 1:
        return f"reads {features} features"
    for t, fields in enumerate(model.trees):
        problem = _tree_problem(fields, features)
        if problem:
            return f"has tree {t} {problem}"
    return None


def _tree_problem(fields: dict[str, str], features: int) -> str | None:
    leaves = _int(fields["num_leaves"], "num_leaves")
    if leaves < 1 or _count_numbers(fields.get("leaf_value", "")) != leaves:
        return "whose leaves do not match its num_leaves"
    linear = _int(fields.get("is_linear", "0"), "is_linear") != 0
    if linear:
        problem = _linear_problem(fields, leaves, features)
        if problem:
            return problem
    if leaves == 1:
        return None
    inner = leaves - 1
    left = _ints(fields["left_child"], inner, "left_child")
    right = _ints(fields["right_child"], inner, "right_child")
    split = _ints(fields["split_feature"], inner, "split_feature")
    decision = (  # LightGBM takes all-numerical splits when the line is missing
        _ints(fields["decision_type"], inner, "decision_type", low=0, high=128)
        if "decision_type" in fields
        else [0] * inner
    )
    thresholds = [v for v in fields["threshold"].split(" ") if v]
    if len(thresholds) != inner:
        return f"whose node arrays do not all hold its {inner} nodes"
    cats = _int(fields["num_cat"], "num_cat")
    boundaries: list[int] = []
    if cats > 0:
        boundaries = _ints(fields["cat_boundaries"], cats + 1, "cat_boundaries", low=0)
        bits = _count_numbers(fields.get("cat_threshold", ""))
        if boundaries != sorted(boundaries) or boundaries[-1] != bits:
            return "whose categorical bitsets lie outside it"
        _ints(fields["cat_threshold"], bits, "cat_threshold", low=0, high=2**32)
    for i in range(inner):
        for child in (left[i], right[i]):
            if not (i < child < inner if child >= 0 else ~child < leaves):
                return f"whose node {i} has child {child} of {inner} nodes"
        if not 0 <= split[i] < features:
            return f"whose node {i} splits on feature {split[i]} of {features}"
        if decision[i] & 1:
            if not _NUMBER.fullmatch(thresholds[i]):
                return f"whose categorical node {i} has no bitset"
            if not 0 <= int(float(thresholds[i])) < len(boundaries) - 1:
                return f"whose categorical node {i} has no bitset"
    return None


def _linear_problem(fields: dict[str, str], leaves: int, features: int) -> str | None:
    """A linear tree's leaves: each adds coefficient × feature for the features it lists,
    read from the row without a bounds check."""
    if "leaf_const" in fields and _count_numbers(fields["leaf_const"]) != leaves:
        return f"whose linear leaves do not match its {leaves} leaves"
    if "num_features" not in fields:
        return None  # LightGBM gives every leaf no features then
    counts = _ints(fields["num_features"], leaves, "num_features", low=0)
    total = sum(counts)
    if total == 0:
        return None
    listed = _ints(fields.get("leaf_features", ""), total, "leaf_features")
    bad = next((f for f in listed if not 0 <= f < features), None)
    if bad is not None:
        return f"whose linear leaves read feature {bad} of {features}"
    if _count_numbers(fields.get("leaf_coeff", "")) != total:
        return f"whose linear leaves list {total} features but not as many coefficients"
    return None


_CLASSIFIER: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _is_classifier(booster: Any) -> bool:
    # dump_model() walks every tree: read the objective once per booster, not per prediction
    if booster not in _CLASSIFIER:
        objective = str(booster.dump_model(num_iteration=0)["objective"])
        _CLASSIFIER[booster] = objective.split()[0] in ("binary", "multiclass", "multiclassova")
    return _CLASSIFIER[booster]


def feature_names(model: Any) -> tuple[str, ...] | None:
    """The booster's feature names, unless LightGBM made them up (Column_0, Column_1, …)."""
    names = tuple(model.feature_name())
    generated = tuple(f"Column_{i}" for i in range(len(names)))
    return None if not names or names == generated else names


def to_onnx(
    model: Any, signature: Signature, *, opset: int, options: Mapping[str, Any]
) -> Exported:
    import onnxmltools

    onx = _trees.convert(
        onnxmltools.convert_lightgbm,
        model,
        signature,
        framework="LightGBM",
        opset=opset,
        options={**options, "zipmap": False},
    )
    roles = ("label", "probabilities") if _is_classifier(model) else ("prediction",)
    return Exported(onx, f"onnxmltools {onnxmltools.__version__} (lightgbm)", roles)


def predict(model: Any, batch: Batch, signature: Signature) -> dict[str, np.ndarray]:
    x = _trees.only_rows(batch.feeds)
    scores = np.asarray(model.predict(x))
    if _is_classifier(model):
        return outputs_by_role(signature, _trees.class_values(scores))
    return outputs_by_role(signature, {"prediction": scores.reshape(len(x), -1)})
