"""A prediction log written the way `mlops-ci serve` writes it, for the monitor tests: the model
and its column layout loaded by serve's ModelStore from the registry, its outputs computed by
onnxruntime, each request recorded by serve's PredictionLog. Only serve's clock is pinned."""

from __future__ import annotations

import datetime as dt
import itertools
import types
from pathlib import Path
from unittest import mock

import numpy as np

# One clock for the process: each call's first file is named after a later microsecond than the
# last call's, so two logs of the same day and version never overwrite each other.
_TICKS = itertools.count()


def pinned_clock(when: dt.datetime) -> types.SimpleNamespace:
    """The `datetime` module as serve's prediction log sees it, with `now()` at `when` (one
    microsecond later at each call, so file names stay distinct)."""

    class Clock(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            t = when + dt.timedelta(microseconds=next(_TICKS))
            return t.astimezone(tz) if tz else t.astimezone().replace(tzinfo=None)

    return types.SimpleNamespace(**{**vars(dt), "datetime": Clock})


def log_served(
    registry: Path | str,
    name: str,
    x: np.ndarray,
    *,
    day: dt.date,
    prefix: str = "r",
    version: int | None = None,
    batch: int = 10,
) -> list[str]:
    """Serve the rows `x` (features in the order of the model's one input) with the model that
    serves `name` in `registry`, `batch` rows a request (a batch shares its request id), logged
    at 01:00 UTC on `day` under `version` (the serving one by default) and written on close.
    Returns the request id of each row."""
    from mlops_ci.registry import open_registry
    from mlops_ci.serve import predlog
    from mlops_ci.serve.metrics import Metrics
    from mlops_ci.serve.models import ModelStore

    reg = open_registry(registry)
    metrics = Metrics()
    store = ModelStore(reg, metrics)
    store.refresh(full=True)
    model = store.get(name)
    (tensor,) = model.inputs
    when = dt.datetime.combine(day, dt.time(1), dt.UTC)
    log = predlog.PredictionLog(reg, predlog.REGISTRY_PREFIX, metrics, flush_s=3600)
    names = [o.name for o in model.outputs]
    ids: list[str] = []
    with mock.patch.object(predlog, "dt", pinned_clock(when)):
        for k, start in enumerate(range(0, len(x), batch)):
            inputs = {tensor.name: x[start : start + batch].astype(np.float32)}
            outputs = dict(zip(names, model.session.run(names, inputs), strict=True))
            rid = f"{prefix}{k}"
            log.record(name, version or model.version, rid, model.layout, inputs, outputs)
            ids += [rid] * len(inputs[tensor.name])
        log.close()
    assert (metrics.log_rows, metrics.log_dropped) == (len(x), 0)  # all of it on disk
    return ids
