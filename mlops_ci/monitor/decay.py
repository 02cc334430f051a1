"""Decay: the manifest's metric thresholds, recomputed on production rows whose labels arrived.

Labels are a Parquet or CSV file, folder or prefix with `request_id` and the target column (the
manifest's `evaluation.target`). A request of N rows is matched row by row, in order. Only the
labelled rows' outputs are kept while the prediction log streams by.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlops_ci.manifest import Manifest

#: Fewer labelled rows than this and a metric is shown but never declared decayed.
MIN_ROWS = 30


def _nonfinite(outputs: Mapping[str, Any]) -> bool:
    """Whether a numeric output holds a NaN or an infinity on some labelled row."""
    for values in outputs.values():
        arr = np.asarray(values)
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            return True
    return False


@dataclass(frozen=True)
class MetricVerdict:
    name: str
    value: float | None
    min: float | None
    max: float | None
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None if self.value is None else float(f"{self.value:.6g}"),
            "min": self.min,
            "max": self.max,
            "ok": self.ok,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Decay:
    rows: int
    metrics: tuple[MetricVerdict, ...]

    @property
    def decayed(self) -> bool:
        return self.rows >= MIN_ROWS and any(not m.ok for m in self.metrics)

    def to_json(self) -> dict[str, Any]:
        return {
            "decayed": self.decayed,
            "rows": self.rows,
            "min_rows": MIN_ROWS,
            "metrics": [m.to_json() for m in self.metrics],
        }


def read_labels(data: Any, target: str) -> dict[str, list[Any]]:
    """request_id -> its labels in file order (streamed; labels are small beside the log)."""
    from mlops_ci.errors import UsageError
    from mlops_ci.monitor import reader

    names = set(data.schema.names)
    missing = [c for c in ("request_id", target) if c not in names]
    if missing:
        raise UsageError(f"the labels have no column {', '.join(map(repr, missing))}")
    out: dict[str, list[Any]] = {}
    for batch in reader.batches(data, ["request_id", target]):
        ids = batch.column("request_id").cast("string").to_pylist()
        for rid, label in zip(ids, batch.column(target).to_pylist(), strict=True):
            # A NaN target is a label not known yet, as a null is (a float column of late
            # labels): kept, it made every metric fail and decay was never judged.
            if rid is not None and label is not None and label == label:
                out.setdefault(rid, []).append(label)
    return out


class Matcher:
    """Keeps the outputs of logged rows that have a label, batch by batch."""

    def __init__(self, labels: Mapping[str, list[Any]], outputs: Sequence[str]) -> None:
        self.labels = labels
        self.outputs = list(outputs)
        self.seen: dict[str, int] = {}
        self.truth: list[Any] = []
        self.kept: dict[str, list[np.ndarray]] = {name: [] for name in self.outputs}

    def add(self, batch: Any) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        # As `read_labels` keys them: a CSV of production rows may hold numeric request ids.
        ids = batch.column("request_id").cast(pa.string())
        mask = pc.is_in(ids, value_set=pa.array(list(self.labels), pa.string()))
        if not pc.any(mask).as_py():
            return
        picked = batch.filter(mask)
        keep: list[int] = []
        for i, rid in enumerate(ids.filter(mask).to_pylist()):
            k = self.seen.get(rid, 0)
            self.seen[rid] = k + 1
            if k < len(self.labels[rid]):
                keep.append(i)
                self.truth.append(self.labels[rid][k])
        if not keep:
            return
        rows = picked.take(pa.array(keep))
        for name in self.outputs:
            col = f"output.{name}"
            if col in rows.column_names:
                self.kept[name].append(_to_numpy(rows.column(col)))

    def judge(self, manifest: Manifest) -> Decay:
        from mlops_ci import evaluate

        specs = (manifest.section("tests").get("metrics")) or []
        outputs = {k: np.concatenate(v) for k, v in self.kept.items() if v}
        n = len(self.truth)
        y_true = np.asarray(self.truth)
        verdicts = []
        for spec in specs:
            name = evaluate.metric_name(spec)
            lo, hi = spec.get("min"), spec.get("max")
            if spec.get("slice"):
                verdicts.append(
                    MetricVerdict(name, None, lo, hi, True, "slices are not recomputed")
                )
                continue
            if n == 0:
                verdicts.append(MetricVerdict(name, None, lo, hi, True, "no labelled rows yet"))
                continue
            try:
                value = evaluate.compute_metric(manifest, spec, y_true, outputs)
            except evaluate._MetricError as exc:  # undefined on these rows (one class only …)
                # …unless the model answered NaN or infinity, which evaluate refuses as
                # undefined too: a model that cannot answer has decayed.
                if _nonfinite(outputs):
                    verdicts.append(
                        MetricVerdict(name, None, lo, hi, False, f"cannot be computed: {exc}")
                    )
                else:
                    detail = f"not computed: {exc}"
                    verdicts.append(MetricVerdict(name, None, lo, hi, True, detail))
                continue
            except Exception as exc:  # scikit-learn refused the rows (NaN outputs, mixed types)
                verdicts.append(
                    MetricVerdict(name, None, lo, hi, False, f"cannot be computed: {exc}")
                )
                continue
            ok = (
                math.isfinite(value) and (lo is None or value >= lo) and (hi is None or value <= hi)
            )
            bounds = bounds_text(lo, hi)
            detail = f"{value:.4g} {'within' if ok else 'outside'} {bounds} on {n} labelled rows"
            verdicts.append(MetricVerdict(name, value, lo, hi, ok, detail))
        return Decay(rows=n, metrics=tuple(verdicts))


def bounds_text(lo: float | None, hi: float | None) -> str:
    parts = []
    if lo is not None:
        parts.append(f"≥ {lo:g}")
    if hi is not None:
        parts.append(f"≤ {hi:g}")
    return " and ".join(parts)


def _to_numpy(column: Any) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    return column.to_numpy(zero_copy_only=False)
