"""Evaluation data: digest-pinned CSV files and test-case rows, turned into ONNX input feeds.

A `Table` keeps every column as strings until a signature says how to type it, so one file
serves string and numeric inputs alike and a bad value is reported with its line number.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mlops_ci.dtypes import NUMPY_DTYPES
from mlops_ci.errors import CheckFailed
from mlops_ci.manifest.model import fixed_columns

if TYPE_CHECKING:
    from mlops_ci.manifest import Manifest

_MISSING = frozenset({"", "nan", "NaN", "NA", "N/A", "null", "NULL"})
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
#: A column is a fixed-width numpy array: every value is padded to the column's longest, at 4
#: bytes a character, so one long value in a column of many rows asks for gigabytes from a few
#: kilobytes of CSV. A table that would take more than this many bytes, or MAX_EXPANSION times
#: the file's size where that is more, is refused before a column is built.
MAX_TABLE_BYTES = 1 << 30
MAX_EXPANSION = 64


class InputSpec(Protocol):
    """What `feeds` needs from a signature input (manifest.TensorSpec satisfies it)."""

    @property
    def name(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def columns(self) -> tuple[str, ...] | None: ...


class SignatureLike(Protocol):
    """What `feeds` needs from a signature (manifest.Signature satisfies it)."""

    @property
    def inputs(self) -> Sequence[InputSpec]: ...


@dataclass(frozen=True)
class Table:
    """Columns of equal length, as str arrays; `lines` maps rows to source lines for messages."""

    columns: dict[str, np.ndarray]
    n_rows: int
    source: str = "<rows>"
    lines: np.ndarray | None = field(default=None, repr=False)

    def take(self, n: int) -> Table:
        """The first `n` rows (all of them when n >= n_rows)."""
        return self.select(np.arange(min(n, self.n_rows)))

    def select(self, rows: np.ndarray) -> Table:
        """The rows picked by a boolean mask or an index array, in that order."""
        index = np.flatnonzero(rows) if rows.dtype == np.bool_ else np.asarray(rows)
        return Table(
            columns={name: col[index] for name, col in self.columns.items()},
            n_rows=len(index),
            source=self.source,
            lines=None if self.lines is None else self.lines[index],
        )

    def where(self, row: int) -> str:
        """`file:line` (or `row N` for in-memory rows) of a row, for error messages."""
        if self.lines is not None:
            return f"{self.source}:{int(self.lines[row])}"
        return f"{self.source} row {row + 1}"


def load_csv(path: Path, sha256: str) -> Table:
    """Read a CSV with a header row after verifying its digest; every column stays str.

    The digest is computed on the very bytes that are parsed, so the file cannot change between
    the check and the read.
    """
    if not path.is_file():
        raise CheckFailed("evaluation data not found", path=path)
    raw = path.read_bytes()
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha256.lower():
        raise CheckFailed(
            f"evaluation data digest mismatch: expected sha256 {sha256}, actual {actual} "
            "(update the manifest's sha256 if the change is intended)",
            path=path,
        )
    return parse_csv(raw, path)


def parse_csv(raw: bytes, path: Path) -> Table:
    """`load_csv` on bytes already read and checked (`path` names them in messages)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise CheckFailed(f"not UTF-8 text: {exc.reason}", path=path, line=line) from None
    with io.StringIO(text, newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise CheckFailed("empty CSV file: a header row is required", path=path) from None
        except csv.Error as exc:
            raise CheckFailed(f"cannot parse CSV: {exc}", path=path, line=1) from None
        names = [h.strip() for h in header]
        _check_header(names, path)
        rows: list[list[str]] = []
        lines: list[int] = []
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise CheckFailed(f"cannot parse CSV: {exc}", path=path, line=line) from None
            if not row:  # csv yields [] for blank lines; a trailing newline is not a row
                continue
            if len(row) != len(names):
                raise CheckFailed(
                    f"row has {len(row)} fields, the header has {len(names)}",
                    path=path,
                    line=line,
                )
            rows.append(row)
            lines.append(line)
    columns = _text_columns(
        {name: [r[i] for r in rows] for i, name in enumerate(names)},
        len(raw),
        lambda row: {"path": path, "line": lines[row]},
    )
    return Table(columns, len(rows), str(path), np.array(lines, dtype=np.int64))


def _text_columns(
    values: Mapping[str, list[str]], size: int, where: Callable[[int], dict[str, Any]]
) -> dict[str, np.ndarray]:
    """The columns as fixed-width text arrays; refused, naming the longest value (`where` its
    row is, as CheckFailed's keywords), when padding would take more than the budget."""
    budget = max(MAX_TABLE_BYTES, MAX_EXPANSION * size)
    total = 0
    columns: dict[str, np.ndarray] = {}
    for name, column in values.items():
        longest = max(map(len, column), default=0)
        total += 4 * max(longest, 1) * len(column)
        if total > budget:
            row = next(k for k, v in enumerate(column) if len(v) == longest)
            raise CheckFailed(
                f"column {name!r} holds a value of {longest:,} characters; every value of a "
                f"column is held at the length of its longest, so the table would take over "
                f"{total:,} bytes in memory for {size:,} bytes of data (at most {budget:,}). "
                "Shorten the value or drop the column",
                **where(row),
            )
        columns[name] = np.array(column, dtype=str)
    return columns


def _check_header(names: list[str], path: Path) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names, 1):
        if not name:
            raise CheckFailed(f"header column {i} has no name", path=path, line=1)
        if name in seen:
            raise CheckFailed(f"header names column {name!r} twice", path=path, line=1)
        seen.add(name)


def rows_table(rows: Sequence[Mapping[str, object]], *, source: str = "test cases") -> Table:
    """A Table from rows of column -> value (manifest test cases); every row needs every column."""
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names)
    for i, row in enumerate(rows):
        missing = [n for n in names if n not in row]
        if missing:
            raise CheckFailed(f"{source} row {i + 1} lacks column(s) {', '.join(missing)}")
    texts = {name: [_to_text(row[name]) for row in rows] for name in names}
    size = sum(len(v) for column in texts.values() for v in column)
    columns = _text_columns(texts, size, lambda row: {"path": f"{source} row {row + 1}"})
    return Table(columns, len(rows), source)


def _to_text(value: object) -> str:
    # bool before int: bool is an int subclass, and "True" would not read back as 1 for int inputs
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def input_columns(
    signature: SignatureLike,
    table_columns: Sequence[str],
    *,
    target: str | None,
    feature_names: Sequence[str] | None = None,
) -> dict[str, tuple[str, ...]]:
    """The columns feeding each input: the one rule every stage applies.

    An input's `columns:` when the manifest lists them; else its own name when its last
    dimension is 1; else the columns the model was trained on (`feature_names`: scikit-learn's
    `feature_names_in_`, an XGBoost booster's feature names), in training order; else every
    data column not used by another input and not the target, in file order.
    """
    explicit = {s.name: c for s in signature.inputs if (c := fixed_columns(s)) is not None}
    used = {c for cols in explicit.values() for c in cols}
    # a model fitted on a DataFrame knows its columns and their order; the CSV's order may differ
    names = feature_names if feature_names else table_columns
    rest = tuple(c for c in names if c not in used and c != target)
    return {spec.name: explicit.get(spec.name, rest) for spec in signature.inputs}


#: ONNX metadata key under which `convert` records the columns behind each input (JSON), so the
#: test and bench stages feed the ONNX model exactly as parity did, without the native model.
COLUMNS_KEY = "mlops_ci.input_columns"


def resolved(manifest: Manifest, columns: Mapping[str, Sequence[str]]) -> Manifest:
    """The manifest with `columns:` filled in on every input that lacks them."""
    doc = copy.deepcopy(manifest.data)
    for spec in (doc["spec"].get("signature") or {}).get("inputs", []):
        if not spec.get("columns") and columns.get(spec["name"]):
            spec["columns"] = list(columns[spec["name"]])
    return dataclasses.replace(manifest, data=doc)


def data_columns(manifest: Manifest) -> list[str]:
    """The column names the manifest's data offers: the evaluation CSV's header (digest checked),
    else the test cases' input keys."""
    evaluation = manifest.section("evaluation")
    if evaluation:
        ref = evaluation["data"]
        return list(load_csv(manifest.resolve(ref["path"]), ref["sha256"]).columns)
    names: list[str] = []
    for case in manifest.section("tests").get("cases") or []:
        names.extend(k for k in case.get("input", {}) if k not in names)
    return names


def columns_from_onnx(session: Any) -> dict[str, tuple[str, ...]] | None:
    """The columns `convert` recorded in an onnxruntime session's model, or None."""
    try:
        text = session.get_modelmeta().custom_metadata_map.get(COLUMNS_KEY)
        found = json.loads(text) if text else None
    except (AttributeError, ValueError):
        return None
    if not isinstance(found, dict):
        return None
    return {str(k): tuple(map(str, v)) for k, v in found.items() if isinstance(v, list)}


def stage_manifest(manifest: Manifest, session: Any) -> Manifest:
    """The manifest with the columns the ONNX model was converted with, else the default rule on
    the manifest's data (an ONNX file not written by `convert`)."""
    columns = columns_from_onnx(session)
    if columns is None:
        try:
            header = data_columns(manifest)
        except CheckFailed:
            header = []  # the stage reports unreadable data where it reads the rows
        target = manifest.section("evaluation").get("target")
        columns = input_columns(manifest.signature, header, target=target)
    return resolved(manifest, columns)


def feeds(
    table: Table, signature: SignatureLike, *, target: str | None = None
) -> dict[str, np.ndarray]:
    """ONNX input feeds for the table: one array per signature input, typed and shaped.

    The batch dimension is the row count; the remaining dimensions come from the signature
    (so 64 pixel columns feed a [-1, 1, 8, 8] input), or are the column count where dynamic.
    """
    chosen = input_columns(signature, list(table.columns), target=target)
    out: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        cols = chosen[spec.name]
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise CheckFailed(
                f"input {spec.name!r} needs column(s) {', '.join(map(repr, missing))}, "
                f"which {table.source} does not have "
                f"(it has: {', '.join(table.columns) or 'no columns'})"
            )
        if not cols:
            raise CheckFailed(f"input {spec.name!r}: no data columns are left to feed it")
        typed = [_cast(table, c, spec.dtype, spec.name) for c in cols]
        matrix = np.stack(typed, axis=1) if typed else np.empty((table.n_rows, 0))
        out[spec.name] = _shape(matrix, spec, len(cols))
    return out


def _shape(matrix: np.ndarray, spec: InputSpec, n_cols: int) -> np.ndarray:
    inner = spec.shape[1:]
    if not inner:  # rank-1 input: one value per row
        if n_cols != 1:
            raise CheckFailed(f"input {spec.name!r} has shape [-1] but {n_cols} columns feed it")
        return matrix[:, 0]
    if all(d > 0 for d in inner):
        size = math.prod(inner)
        if size != n_cols:
            raise CheckFailed(
                f"input {spec.name!r} has shape {list(spec.shape)} ({size} values per row) "
                f"but {n_cols} columns feed it"
            )
        return matrix.reshape((matrix.shape[0], *inner))
    if len(inner) == 1:
        return matrix
    raise CheckFailed(
        f"input {spec.name!r}: shape {list(spec.shape)} has a dynamic inner dimension; "
        "columns can fill only fixed inner dimensions"
    )


def _cast(table: Table, column: str, dtype: str, input_name: str) -> np.ndarray:
    text = table.columns[column]
    if dtype == "string":
        return text.astype(object)
    try:
        if dtype == "bool":
            return _parse_bool(text)
        if dtype.startswith("float"):
            return _parse_float(text).astype(NUMPY_DTYPES[dtype])
        return _parse_int(text, NUMPY_DTYPES[dtype])
    except _BadValue as bad:
        raise CheckFailed(
            f"column {column!r} (input {input_name!r}): value {str(text[bad.row])!r} "
            f"cannot be read as {dtype}",
            path=table.where(bad.row),
        ) from None


class _BadValue(Exception):
    def __init__(self, row: int) -> None:
        super().__init__(row)
        self.row = row


def _parse_float(text: np.ndarray) -> np.ndarray:
    stripped = np.char.strip(text)
    missing = np.isin(stripped, list(_MISSING))
    try:
        # the vectorised path is the common one; the loop below only locates the bad value
        values = np.where(missing, "nan", stripped).astype(np.float64)
    except ValueError:
        for i, v in enumerate(stripped):
            if v in _MISSING:
                continue
            try:
                float(v)
            except ValueError:
                raise _BadValue(i) from None
        raise
    return values


def _parse_int(text: np.ndarray, dtype: type) -> np.ndarray:
    values: np.ndarray = np.empty(len(text), dtype=dtype)
    info = np.iinfo(dtype)
    for i, v in enumerate(text):
        # as an integer first: a float holds integers exactly only up to 2**53, so an int64 ID
        # read through one became its neighbour; `1e3` and `2.0` still read through a float
        try:
            number = int(v)
        except ValueError:
            try:
                real = float(v)
            except ValueError:
                raise _BadValue(i) from None
            if not real.is_integer():
                raise _BadValue(i) from None
            number = int(real)
        if not info.min <= number <= info.max:
            raise _BadValue(i)
        values[i] = number
    return values


def _parse_bool(text: np.ndarray) -> np.ndarray:
    values = np.empty(len(text), dtype=np.bool_)
    for i, v in enumerate(text):
        word = v.strip().lower()
        if word in _TRUE:
            values[i] = True
        elif word in _FALSE:
            values[i] = False
        else:
            raise _BadValue(i)
    return values


def target(table: Table, column: str) -> np.ndarray:
    """The target column, typed as the values allow: int64, else float64, else str objects."""
    if column not in table.columns:
        raise CheckFailed(
            f"target column {column!r} is not in {table.source} "
            f"(it has: {', '.join(table.columns) or 'no columns'})"
        )
    text = table.columns[column]
    try:
        values = np.char.strip(text).astype(np.float64)
    except ValueError:
        return text.astype(object)
    # a NaN or an infinity is no target a metric can score (scikit-learn raises on it)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise CheckFailed(
            f"target column {column!r}: value {str(text[bad[0]])!r} is not a finite number "
            f"({len(bad)} such row(s)); every evaluation row needs its target",
            path=table.where(int(bad[0])),
        )
    if np.all(values == np.round(values)):
        return values.astype(np.int64)
    return values
