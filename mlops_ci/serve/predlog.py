"""The prediction log: a sampled share of requests, written as Parquet off the request path.

The request path only appends a reference to the request's arrays to a bounded buffer; a
background thread turns the buffer into one Parquet file per (model, version, day) and writes it
through the registry's atomic `write_bytes`, so `monitor` never reads half a file. `close()`
writes what is left, so a clean shutdown (SIGTERM) loses nothing.
Layout and columns: DESIGN.md "Prediction log".
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_ci.serve.defaults import DEFAULTS

if TYPE_CHECKING:
    from mlops_ci.registry import Registry
    from mlops_ci.serve.metrics import Metrics

log = logging.getLogger("mlops_ci.serve")

#: Under the registry root (a --prediction-log folder or prefix holds `<model>/…` directly).
REGISTRY_PREFIX = ".mlops/predictions/"
#: The log's own columns (DESIGN.md "Prediction log"), and `date`, the Hive partition key that
#: `monitor` reads the folders with: no feature may take their names.
RESERVED_COLUMNS = ("time", "model_version", "request_id", "date")


@dataclass(frozen=True)
class Layout:
    """How one model version's tensors become columns: per input, its feature names (a 2-D
    input with `columns:` splits into one column each) or None (one column, the input's name)."""

    inputs: tuple[tuple[str, tuple[str, ...] | None], ...]
    outputs: tuple[str, ...]
    #: Why the log cannot hold this model version (a feature named as one of the log's own
    #: columns), or None. `serve` then logs none of its requests.
    problem: str | None = None


class Sampler:
    """Picks `rate` of the requests: an accumulator that starts at a random phase, so n requests
    give floor(n·rate) or ceil(n·rate) samples, at the cost of one addition a request."""

    __slots__ = ("_acc", "rate")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._acc = random.random()  # noqa: S311 - a phase, not a secret

    def __call__(self) -> bool:
        self._acc += self.rate
        if self._acc >= 1.0:
            self._acc -= 1.0
            return True
        return False


@dataclass(frozen=True)
class _Entry:
    time: dt.datetime
    model: str
    version: int
    request_id: str
    layout: Layout
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    rows: int
    #: Each tensor's shape past the batch axis: only entries alike share a Parquet file.
    row_shapes: tuple[tuple[int, ...], ...]


class PredictionLog:
    """Buffers sampled requests and writes them as Parquet every `flush_s` seconds, when
    `max_rows` rows wait, and on `close()`. Beyond `max_buffered` rows, `max_id_bytes` of
    request ids as written (one copy per row), or `max_tensor_bytes` of the requests' tensors,
    samples are dropped (and counted) rather than let memory grow."""

    def __init__(
        self,
        sink: Registry,
        prefix: str,
        metrics: Metrics,
        *,
        flush_s: float = DEFAULTS.log_flush_s,
        max_rows: int = 50_000,
        max_buffered: int = 200_000,
        max_id_bytes: int = 64 << 20,
        max_tensor_bytes: int = 256 << 20,
    ) -> None:
        self._sink = sink
        self._prefix = prefix
        self._metrics = metrics
        self._flush_s = flush_s
        self._max_rows = max_rows
        self._max_buffered = max_buffered
        self._max_id_bytes = max_id_bytes
        self._max_tensor_bytes = max_tensor_bytes
        self._buffer: list[_Entry] = []
        self._buffered_rows = 0
        self._buffered_id_bytes = 0
        self._buffered_tensor_bytes = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._part = 0
        self._thread = threading.Thread(target=self._loop, name="prediction-log", daemon=True)
        self._thread.start()

    def record(
        self,
        model: str,
        version: int,
        request_id: str | None,
        layout: Layout,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
    ) -> None:
        """Queue one request (called on the request path: no copying, no I/O)."""
        # A model may take no input at all (a constant): next() without a default raised
        # StopIteration, which the event loop turned into a 500 for each sampled request.
        first = next(iter(inputs.values()), None)
        rows = int(first.shape[0]) if first is not None and first.ndim else 1
        tensors = (*inputs.values(), *outputs.values())
        if any((a.shape[0] if a.ndim else 1) != rows for a in tensors):
            # Tensors of unequal batch sizes (a model may take them) make no table of rows.
            self._metrics.log_dropped += rows
            return
        rid = request_id if request_id is not None else uuid.uuid4().hex
        # The id is the client's, of any length, and the log repeats it on each of the
        # request's rows: a long id times a large batch would be gigabytes at the next flush.
        id_bytes = rows * len(rid)
        # So is a row's length, for a model with a dynamic axis past the batch (tokens,
        # pixels): 200,000 rows of 64 MB requests of one row each were all held until the flush.
        tensor_bytes = sum(_nbytes(a) for a in tensors)
        if (
            self._buffered_rows + rows > self._max_buffered
            or self._buffered_id_bytes + id_bytes > self._max_id_bytes
            or self._buffered_tensor_bytes + tensor_bytes > self._max_tensor_bytes
        ):
            self._metrics.log_dropped += rows
            return
        now = dt.datetime.now(dt.UTC)
        shapes = tuple(a.shape[1:] for a in tensors)
        entry = _Entry(now, model, version, rid, layout, inputs, outputs, rows, shapes)
        with self._lock:
            self._buffer.append(entry)
            self._buffered_rows += rows
            self._buffered_id_bytes += id_bytes
            self._buffered_tensor_bytes += tensor_bytes
        if self._buffered_rows >= self._max_rows:
            self._wake.set()

    def close(self) -> None:
        """Stop the writer and write everything buffered (a clean shutdown loses nothing)."""
        self._stop = True
        self._wake.set()
        self._thread.join()
        self.flush()

    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(self._flush_s)
            self._wake.clear()
            if not self._stop:
                self.flush()

    def flush(self) -> None:
        with self._lock:
            entries, self._buffer = self._buffer, []
            self._buffered_rows = self._buffered_id_bytes = self._buffered_tensor_bytes = 0
        # By shape too: a model with a dynamic axis past the batch takes requests of several
        # widths, which stack into no one column; one request's width must not cost the rows
        # of all the others.
        groups: dict[tuple[str, int, str, tuple[tuple[int, ...], ...]], list[_Entry]] = {}
        for e in entries:
            key = (e.model, e.version, e.time.strftime("%Y-%m-%d"), e.row_shapes)
            groups.setdefault(key, []).append(e)
        for (model, version, day, _), group in groups.items():
            try:
                data = _parquet(group)
                self._part += 1
                stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
                name = f"part-{stamp}-{os.getpid()}-{self._part}-v{version}.parquet"
                self._sink.write_bytes(f"{self._prefix}{model}/date={day}/{name}", data)
                self._metrics.log_rows += sum(e.rows for e in group)
            except Exception as exc:  # the log must never take the server down
                rows = sum(e.rows for e in group)
                self._metrics.log_dropped += rows
                log.error("prediction log: could not write %s rows of %s: %s", rows, model, exc)


def _nbytes(array: np.ndarray) -> int:
    """What a tensor holds: BYTES values (str objects) by their length, not their pointers."""
    if array.dtype != object:
        return int(array.nbytes)
    try:
        return int(array.nbytes) + sum(map(len, array.reshape(-1)))
    except TypeError:  # not text after all: counted as what it points to
        return int(array.nbytes)


def _parquet(entries: Sequence[_Entry]) -> bytes:
    """One Parquet file of entries of the same model version: `time`, `model_version`,
    `request_id`, the input features, then `output.<name>`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    layout = entries[0].layout
    counts = [e.rows for e in entries]
    # Each entry's values repeated on its rows, by index into one value per entry: numpy
    # would build the ids as fixed-width text, every row padded to the longest id, 4 bytes a
    # character.
    row_entry = pa.array(np.repeat(np.arange(len(entries)), counts))
    columns: dict[str, Any] = {
        "time": pa.array([e.time for e in entries], pa.timestamp("us", "UTC")).take(row_entry),
        "model_version": pa.array(np.repeat([e.version for e in entries], counts), pa.int64()),
        "request_id": pa.array([e.request_id for e in entries], pa.string()).take(row_entry),
    }
    for name, features in layout.inputs:
        stacked = _stack([e.inputs[name] for e in entries])
        if features is not None and stacked.ndim == 2 and stacked.shape[1] == len(features):
            for i, feature in enumerate(features):
                columns[feature] = _column(stacked[:, i])
        else:
            columns[name] = _column(stacked)
    for name in layout.outputs:
        columns[f"output.{name}"] = _column(_stack([e.outputs[name] for e in entries]))
    return _write(pa, pq, pa.table(columns))


def _stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    parts = [a.reshape(1) if a.ndim == 0 else a for a in arrays]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _column(values: np.ndarray) -> Any:
    """A 1-D array is a plain column; (n, k) a fixed-size list of k; (n, 1) a plain column
    only when it is a feature, since DESIGN.md makes every 2-D output a list."""
    import pyarrow as pa

    # BYTES (object arrays of str) straight to Arrow strings: as numpy text (astype(str)), one
    # long value would pad every row of the flush to its length, 4 bytes a character.
    kind = pa.string() if values.dtype == object else None
    if values.ndim == 1:
        return pa.array(values, kind)
    flat = values.reshape(values.shape[0], -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), kind), flat.shape[1])


def _write(pa: Any, pq: Any, table: Any) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data: bytes = sink.getvalue().to_pybytes()
    return data


def layout_for(
    manifest: Mapping[str, Any] | None,
    inputs: Sequence[Any],
    outputs: Sequence[Any],
    recorded: Mapping[str, Sequence[str]] | None = None,
) -> Layout:
    """The columns of a model version: `columns:` from the deployed manifest's signature, else
    the columns `convert` recorded in the ONNX model (`recorded`: the model was trained on a
    DataFrame and its manifest names none, as docs/saving-models.md allows), when they are as
    many as the input is wide; an input of width 1 is one column named after the input. The
    monitor reads the log by those names, as in the reference data."""
    declared: dict[str, tuple[str, ...]] = {}
    for meta in inputs:
        found = tuple(str(c) for c in (recorded or {}).get(meta.name) or ())
        if found and tuple(meta.shape[1:]) == (len(found),):
            declared[meta.name] = found
    sig = ((manifest or {}).get("spec") or {}).get("signature") or {}
    for spec in sig.get("inputs") or ():
        if isinstance(spec, dict) and spec.get("columns"):
            declared[str(spec["name"])] = tuple(str(c) for c in spec["columns"])
    resolved: list[tuple[str, tuple[str, ...] | None]] = []
    written: list[str] = []  # every column name an input may be written under (`_parquet`)
    for meta in inputs:
        features = declared.get(meta.name)
        if features is None and len(meta.shape) == 2 and meta.shape[1] == 1:
            features = (meta.name,)
        resolved.append((meta.name, features))
        written += features or ()
        if features is None or tuple(meta.shape[1:]) != (len(features),):
            written.append(meta.name)
    out_names = tuple(m.name for m in outputs)
    # A feature named `time` replaced the log's timestamps with its values (and `date` made the
    # model's whole log unreadable to monitor): such a version is not logged rather than
    # logged wrong.
    taken = {*RESERVED_COLUMNS, *(f"output.{name}" for name in out_names)}
    clashes = sorted({c for c in written if c in taken})
    problem = (
        f"input column {', '.join(map(repr, clashes))} would take the name of one of the "
        f"log's own columns ({', '.join(RESERVED_COLUMNS)}, output.<name>); rename it"
        if clashes
        else None
    )
    return Layout(tuple(resolved), out_names, problem)


def sample_rate(manifest: Mapping[str, Any] | None, default: float) -> float:
    """`spec.serving.prediction_log.sample_rate` of the deployed manifest, else `default`."""
    serving = ((manifest or {}).get("spec") or {}).get("serving") or {}
    section = serving.get("prediction_log") if isinstance(serving, dict) else None
    rate = section.get("sample_rate") if isinstance(section, dict) else None
    if isinstance(rate, int | float) and not isinstance(rate, bool) and 0 <= rate <= 1:
        return float(rate)
    return default
