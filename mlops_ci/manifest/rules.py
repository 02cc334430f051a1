"""Semantic checks: what the schema cannot say, each a small named function in one list.

`FILE_CHECKS` run on any parsed document (files, digests); `CHECKS` need a schema-valid one.
A check takes a `Context` and yields Problems; adding a rule is adding a function to a list.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_ci.digest import lfs_pointer, sha256_file
from mlops_ci.manifest.model import (
    CLASSIFICATION_METRICS,
    FORMATS_BY_FRAMEWORK,
    REGRESSION_METRICS,
    TensorSpec,
    artifact_format,
    fixed_columns,
    infer_task,
    tensor_spec,
)
from mlops_ci.manifest.paths import resolve_inside
from mlops_ci.manifest.problem import Problem, dotted, pointer
from mlops_ci.manifest.safe_yaml import is_plain_scalar, locate
from mlops_ci.manifest.schema import did_you_mean, type_name

_SHA256 = re.compile(r"[0-9a-f]{64}")
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".sav", ".bin", ".pth"}
# Numbers YAML 1.1 reads as strings: an exponent without a dot in the mantissa (2e-06).
_YAML11_FLOAT_TEXT = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")
# How the data layer reads a cell (data.py): what counts as missing, true and false.
_MISSING = frozenset({"", "nan", "NaN", "NA", "N/A", "null", "NULL"})
_BOOL_WORDS = frozenset({"true", "1", "yes", "false", "0", "no"})
#: The header of an evaluation CSV is read from at most this many bytes.
_HEADER_BYTES = 1 << 16


@dataclass(frozen=True)
class Context:
    """One parsed manifest and where it lives: what every check reads."""

    data: dict[str, Any]
    node: Any  # the YAML node tree, for lines
    manifest_path: Path  # absolute
    root: Path
    shown: str
    #: The first bytes of each pinned file, read once while hashing (the CSV header check).
    heads: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    _resolved: dict[str, tuple[Path | None, str | None]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def resolve(self, relative: str) -> tuple[Path | None, str | None]:
        """`paths.resolve_inside` from the manifest's folder, once per relative path."""
        found = self._resolved.get(relative)
        if found is None:
            found = resolve_inside(self.manifest_path.parent, relative, self.root)
            self._resolved[relative] = found
        return found

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.data.get("spec")
        return spec if isinstance(spec, dict) else {}

    def problem(
        self,
        parts: list[str | int],
        message: str,
        *,
        key: bool = False,
        named: list[str | int] | None = None,
    ) -> Problem:
        """A Problem at the line of `parts` (of its key when `key`), prefixed with the field
        (or with `named`, when the message itself names the key)."""
        line, col = locate(self.node, parts, key=key)
        label = dotted(parts if named is None else named)
        return Problem(self.shown, line, col, pointer(parts), f"{label}: {message}")


Check = Callable[[Context], Iterable[Problem]]


def file_refs(data: dict[str, Any]) -> Iterator[tuple[list[str | int], dict[str, Any]]]:
    """(pointer parts, {path, sha256}) of every digest-pinned file a manifest names."""
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return
    evaluation, monitoring = spec.get("evaluation"), spec.get("monitoring")
    candidates: list[tuple[list[str | int], Any]] = [
        (["spec", "artifact"], spec.get("artifact")),
        (
            ["spec", "evaluation", "data"],
            evaluation.get("data") if isinstance(evaluation, dict) else None,
        ),
    ]
    if isinstance(monitoring, dict) and isinstance(monitoring.get("drift"), dict):
        candidates.append(
            (["spec", "monitoring", "drift", "reference"], monitoring["drift"].get("reference"))
        )
    for parts, ref in candidates:
        if isinstance(ref, dict) and isinstance(ref.get("path"), str):
            yield parts, ref


def referenced_paths(data: dict[str, Any]) -> list[str]:
    """The manifest-relative paths of the files a manifest pins by digest."""
    return [ref["path"] for _, ref in file_refs(data)]


# --- checks on any parsed document ----------------------------------------------------------------


def pinned_files_exist_and_match(ctx: Context) -> Iterator[Problem]:
    """Every pinned file is inside the repository, exists, and has the digest written."""
    for parts, ref in file_refs(ctx.data):
        resolved, why = ctx.resolve(ref["path"])
        if why:
            yield ctx.problem([*parts, "path"], why)
            continue
        assert resolved is not None
        if not resolved.is_file():
            yield ctx.problem([*parts, "path"], f"file '{ref['path']}' does not exist")
            continue
        expected = ref.get("sha256")
        if isinstance(expected, str) and _SHA256.fullmatch(expected):
            actual = _digest_keeping_head(ctx, resolved)
            pointer = lfs_pointer(ctx.heads.get(str(resolved), b""))
            if actual != expected and pointer is not None:
                # The checkout holds Git LFS's stand-in, not the file: say so, not "mismatch".
                other = pointer.sha256 != expected
                same = f" (of another file, sha256 {pointer.sha256})" if other else ""
                yield ctx.problem(
                    [*parts, "path"],
                    f"'{ref['path']}' is a Git LFS pointer{same}, not the file: this checkout did "
                    "not fetch Git LFS files (run `git lfs pull`, or set the reusable workflow's "
                    "`lfs: true`)",
                )
            elif actual != expected:
                yield ctx.problem(
                    [*parts, "sha256"],
                    f"digest mismatch for '{ref['path']}': the file's sha256 is {actual} (if the "
                    "file changed on purpose, update the digest and raise metadata.version)",
                )


def _digest_keeping_head(ctx: Context, path: Path) -> str:
    """The file's SHA-256; a small file is read in one call and its start kept for later checks,
    so the evaluation CSV is opened once, not twice."""
    if path.stat().st_size > _HEADER_BYTES:
        return sha256_file(path)
    raw = path.read_bytes()
    ctx.heads[str(path)] = raw
    return hashlib.sha256(raw).hexdigest()


FILE_CHECKS: tuple[Check, ...] = (pinned_files_exist_and_match,)


# --- checks on a schema-valid document ------------------------------------------------------------


def artifact_format_fits_framework(ctx: Context) -> Iterator[Problem]:
    artifact, framework = ctx.spec["artifact"], ctx.spec["framework"]
    if framework not in FORMATS_BY_FRAMEWORK:
        return
    fmt = artifact_format(artifact)
    if fmt is None:
        hint = (
            "pickle files are refused (they run code when loaded); save with skops, the "
            "framework's native format, torch.export or ONNX"
            if Path(artifact["path"]).suffix.lower() in _PICKLE_SUFFIXES
            else "set spec.artifact.format"
        )
        yield ctx.problem(
            ["spec", "artifact", "path"], f"cannot tell the format of '{artifact['path']}': {hint}"
        )
    elif fmt not in FORMATS_BY_FRAMEWORK[framework]:
        allowed = ", ".join(FORMATS_BY_FRAMEWORK[framework])
        yield ctx.problem(
            ["spec", "artifact"],
            f"format {fmt} is not read by framework {framework} (expected {allowed})",
        )


def _tensors(ctx: Context, side: str) -> list[dict[str, Any]]:
    """The signature's inputs or outputs; none when the manifest has no signature (an ONNX
    model may leave it to the file)."""
    signature = ctx.spec.get("signature")
    return list(signature.get(side) or []) if isinstance(signature, dict) else []


def tensor_names_unique(ctx: Context) -> Iterator[Problem]:
    for side in ("inputs", "outputs"):
        seen: dict[str, int] = {}
        for i, tensor in enumerate(_tensors(ctx, side)):
            if tensor["name"] in seen:
                yield ctx.problem(
                    ["spec", "signature", side, i, "name"],
                    f"'{tensor['name']}' is also {side}[{seen[tensor['name']]}]",
                )
            seen.setdefault(tensor["name"], i)


def _roles(ctx: Context) -> dict[str, int]:
    roles: dict[str, int] = {}
    for i, out in enumerate(_tensors(ctx, "outputs")):
        if out.get("role") in ("label", "probabilities", "prediction"):
            roles.setdefault(out["role"], i)
    return roles


def output_roles_unique(ctx: Context) -> Iterator[Problem]:
    roles = _roles(ctx)
    for i, out in enumerate(_tensors(ctx, "outputs")):
        role = out.get("role")
        if role in roles and roles[role] != i:
            yield ctx.problem(
                ["spec", "signature", "outputs", i, "role"],
                f"only one output may have role {role}",
            )


def _cases(ctx: Context) -> list[dict[str, Any]]:
    tests = ctx.spec.get("tests")
    return (tests.get("cases") if isinstance(tests, dict) else None) or []


def case_expectations_name_outputs(ctx: Context) -> Iterator[Problem]:
    roles = _roles(ctx)
    names = {o["name"] for o in _tensors(ctx, "outputs")}
    known = sorted(names | set(roles))
    for i, case in enumerate(_cases(ctx)):
        for key in case["expect"]:
            if key not in names and key not in roles:
                yield ctx.problem(
                    ["spec", "tests", "cases", i, "expect", key],
                    f"'{key}' is neither an output nor a role of the signature "
                    f"({', '.join(known)}){did_you_mean(key, known)}",
                    key=True,
                    named=["spec", "tests", "cases", i, "expect"],
                )


def numbers_not_read_as_text(ctx: Context) -> Iterator[Problem]:
    """`2e-06` unquoted is a string to YAML 1.1: say so rather than compare text with numbers."""
    for i, case in enumerate(_cases(ctx)):
        for section in ("input", "expect"):
            for key, value in case[section].items():
                where: list[str | int] = ["spec", "tests", "cases", i, section, key]
                if (
                    isinstance(value, str)
                    and _YAML11_FLOAT_TEXT.match(value)
                    and is_plain_scalar(ctx.node, where)
                ):
                    mantissa, _, exponent = value.lower().partition("e")
                    yield ctx.problem(
                        where,
                        f"YAML reads {value} as text, not a number; write {mantissa}.0e{exponent}",
                    )


def numbers_are_finite(ctx: Context) -> Iterator[Problem]:
    """`.nan` and `.inf` are YAML numbers but no JSON ones, and the schema's bounds cannot see
    them (NaN is neither below a minimum nor above a maximum): a NaN tolerance made every parity
    check pass. Only a test case's inputs and expectations may hold them (a missing value)."""

    def walk(value: Any, where: list[str | int]) -> Iterator[list[str | int]]:
        if isinstance(value, float) and not math.isfinite(value):
            yield where
        elif isinstance(value, dict):
            case = len(where) == 4 and where[:3] == ["spec", "tests", "cases"]
            for key, item in value.items():
                if not (case and key in ("input", "expect")):
                    yield from walk(item, [*where, key])
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from walk(item, [*where, i])

    for where in walk(ctx.data, []):
        yield ctx.problem(where, "must be a finite number (not .nan or .inf)")


def metrics_fit_task(ctx: Context) -> Iterator[Problem]:
    """A regression metric on a classifier (or the reverse), with the task written or inferred."""
    tests = ctx.spec.get("tests")
    if not isinstance(tests, dict) or not (ctx.spec.get("task") or _tensors(ctx, "outputs")):
        return  # no task written and no signature to infer it from: the stage reads the file
    task = infer_task(ctx.spec)
    wrong = REGRESSION_METRICS if task == "classification" else CLASSIFICATION_METRICS
    how = "" if ctx.spec.get("task") else " (inferred from the signature's output roles)"
    for i, threshold in enumerate(tests.get("metrics") or []):
        if threshold["metric"] in wrong:
            yield ctx.problem(
                ["spec", "tests", "metrics", i, "metric"],
                f"{threshold['metric']} does not apply to a {task} model{how}",
            )


def metrics_need_evaluation(ctx: Context) -> Iterator[Problem]:
    tests = ctx.spec.get("tests")
    if isinstance(tests, dict) and tests.get("metrics") and "evaluation" not in ctx.spec:
        yield ctx.problem(
            ["spec", "tests", "metrics"],
            "metric thresholds need spec.evaluation (the data to measure on)",
        )


def _csv_header(ctx: Context) -> list[str] | None:
    """The evaluation CSV's column names, or None when the file is missing or unreadable
    (the file checks report that)."""
    evaluation = ctx.spec.get("evaluation")
    if not isinstance(evaluation, dict):
        return None
    path, why = ctx.resolve(evaluation["data"]["path"])
    if why or path is None:
        return None
    try:
        head = ctx.heads.get(str(path))
        if head is None:
            with path.open("rb") as fh:
                head = fh.read(_HEADER_BYTES)
        first = head.split(b"\n", 1)[0]
        row = next(csv.reader([first.decode("utf-8-sig").rstrip("\r")]), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return [name.strip() for name in row]


def evaluation_target_in_header(ctx: Context) -> Iterator[Problem]:
    header = _csv_header(ctx)
    if header is None:
        return
    target = ctx.spec["evaluation"]["target"]
    if target not in header:
        shown = ", ".join(header) or "no columns"
        yield ctx.problem(
            ["spec", "evaluation", "target"],
            f"column '{target}' is not in the header of "
            f"'{ctx.spec['evaluation']['data']['path']}' (it has: {shown})"
            f"{did_you_mean(target, header)}",
        )


def _fits(value: Any, dtype: str) -> bool:
    """Whether the data layer can read `value` as `dtype` (data.py's casts, without numpy)."""
    if dtype == "string":
        return True
    text = ("true" if value else "false") if isinstance(value, bool) else str(value).strip()
    if dtype == "bool":
        return text.lower() in _BOOL_WORDS
    if isinstance(value, bool):
        return False
    if dtype.startswith("float"):
        if text in _MISSING:
            return True
        try:
            float(text)
        except ValueError:
            return False
        return True
    number = _as_int(text)
    low, high = _INT_RANGES.get(dtype, (-math.inf, math.inf))
    return number is not None and low <= number <= high


def _as_int(text: str) -> int | None:
    """An integer as data.py reads one: exactly, else through a float (`1e3`, `2.0`)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        real = float(text)
    except ValueError:
        return None
    return int(real) if math.isfinite(real) and real.is_integer() else None


#: The integer dtypes' ranges: a value outside one is refused by `test`, so by validate too.
_INT_RANGES = {
    f"{sign}int{bits}": ((0, 2**bits - 1) if sign else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    for sign in ("", "u")
    for bits in (8, 16, 32, 64)
}


def case_inputs_fit_signature(ctx: Context) -> Iterator[Problem]:
    """Each case gives every column the signature reads, no other, each of a readable type."""
    cases = _cases(ctx)
    if not cases or not _tensors(ctx, "inputs"):
        return
    inputs = [tensor_spec(d) for d in _tensors(ctx, "inputs")]
    dtype_of: dict[str, tuple[str, str]] = {}  # column -> (input, dtype)
    rest = [s for s in inputs if fixed_columns(s) is None]
    for s in inputs:
        for column in fixed_columns(s) or ():
            dtype_of.setdefault(column, (s.name, s.dtype))
    # An input fed by "the other columns" takes them from the evaluation CSV when there is one.
    header = _csv_header(ctx) if rest else None
    if rest and header is not None:
        target = ctx.spec["evaluation"]["target"]
        for column in header:
            if column not in dtype_of and column != target:
                dtype_of[column] = (rest[0].name, rest[0].dtype)
    closed = not rest or header is not None
    for i, case in enumerate(cases):
        where: list[str | int] = ["spec", "tests", "cases", i, "input"]
        given = case["input"]
        missing = [c for c in dtype_of if c not in given]
        if missing:
            readers = sorted({dtype_of[c][0] for c in missing})
            yield ctx.problem(
                where,
                f"missing column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))} (read by input "
                f"{', '.join(map(repr, readers))})",
                key=True,
            )
        for key, value in given.items():
            if key not in dtype_of:
                if closed:
                    known = list(dtype_of)
                    yield ctx.problem(
                        [*where, key],
                        f"no input of the signature reads '{key}' (they read: "
                        f"{', '.join(known) or 'nothing'}){did_you_mean(key, known)}",
                        key=True,
                        named=where,
                    )
                continue
            name, dtype = dtype_of[key]
            if not _fits(value, dtype):
                bounds = _INT_RANGES.get(dtype)
                whole = not isinstance(value, bool) and _as_int(str(value).strip()) is not None
                why = (
                    f"is out of {dtype}'s range, {bounds[0]} to {bounds[1]}"
                    if bounds is not None and whole
                    else f"cannot be read as {dtype}"
                )
                yield ctx.problem(
                    [*where, key], f"{type_name(value)} {value!r} {why} (input '{name}')"
                )
        yield from _rest_width(ctx, where, rest, given, dtype_of, closed)


def _rest_width(
    ctx: Context,
    where: list[str | int],
    rest: list[TensorSpec],
    given: dict[str, Any],
    dtype_of: dict[str, tuple[str, str]],
    closed: bool,
) -> Iterator[Problem]:
    """Without data to name them, the other columns must at least be as many as the shape."""
    if closed or len(rest) != 1 or not all(d > 0 for d in rest[0].shape[1:]):
        return
    width = math.prod(rest[0].shape[1:])
    others = [k for k in given if k not in dtype_of]
    if len(others) != width:
        yield ctx.problem(
            where,
            f"input '{rest[0].name}' has shape {list(rest[0].shape)} ({width} values per row) "
            f"but the case gives {len(others)} column(s) for it",
            key=True,
        )


def budgets_measured(ctx: Context) -> Iterator[Problem]:
    bench = ctx.spec.get("benchmark")
    if not isinstance(bench, dict):
        return
    sizes = bench.get("batch_sizes") or [1, 64]
    for i, budget in enumerate(bench.get("budgets") or []):
        if budget.get("batch_size") not in sizes and isinstance(budget.get("batch_size"), int):
            yield ctx.problem(
                ["spec", "benchmark", "budgets", i, "batch_size"],
                f"{budget['batch_size']} is not among the measured batch_sizes {sizes}",
            )


def refresh_by_is_a_date(ctx: Context) -> Iterator[Problem]:
    monitoring = ctx.spec.get("monitoring")
    if isinstance(monitoring, dict) and isinstance(monitoring.get("refresh_by"), str):
        try:
            _dt.date.fromisoformat(monitoring["refresh_by"])
        except ValueError:
            yield ctx.problem(
                ["spec", "monitoring", "refresh_by"],
                f"'{monitoring['refresh_by']}' is not a real date",
            )


CHECKS: tuple[Check, ...] = (
    artifact_format_fits_framework,
    tensor_names_unique,
    output_roles_unique,
    case_expectations_name_outputs,
    numbers_not_read_as_text,
    numbers_are_finite,
    metrics_fit_task,
    metrics_need_evaluation,
    evaluation_target_in_header,
    case_inputs_fit_signature,
    budgets_measured,
    refresh_by_is_a_date,
)


def semantic_problems(ctx: Context, *, schema_ok: bool) -> list[Problem]:
    """The file checks always; the consistency checks only on a schema-valid document."""
    checks = FILE_CHECKS + CHECKS if schema_ok else FILE_CHECKS
    return [problem for check in checks for problem in check(ctx)]
