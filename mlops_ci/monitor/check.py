"""One model's verdict: staleness, data drift, prediction drift and decay, from the registry.

The deployed manifest (`<model>/<n>/model.yaml`) says what to check; the model repository's
checkout holds the reference data, accepted only if its digest is the deployed one; production
rows stream from `--data`, the manifest's `drift.current`, or the prediction log of the serving
version, in one pass for every statistic.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_ci import runtime
from mlops_ci.errors import MlopsCiError, UsageError
from mlops_ci.manifest import Manifest, find_manifests, parse_document
from mlops_ci.monitor import drift, reader, staleness
from mlops_ci.monitor.decay import Decay, Matcher, read_labels
from mlops_ci.monitor.drift import DriftResult
from mlops_ci.monitor.staleness import Staleness
from mlops_ci.registry import Registry

PREDICTIONS = ".mlops/predictions"


class Checkout:
    """The model repository's manifests, found and read once per monitor run: a registry of M
    models checked against a repository of N manifests reads N files, not M × N."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._files: list[tuple[Path, bytes]] | None = None

    def manifest_of(self, model: str) -> Path | None:
        """The manifest whose metadata.name is `model` (None: not in this checkout)."""
        if self._files is None:
            self._files = []
            for path in find_manifests(self.repo):
                try:
                    self._files.append((path, path.read_bytes()))
                except OSError:
                    continue
        needle = model.encode()
        for path, raw in self._files:
            if needle not in raw:  # cannot name the model: skip the (costly) parse
                continue
            doc, _, _ = parse_document(raw, str(path))
            if (
                doc
                and isinstance(doc.get("metadata"), dict)
                and doc["metadata"].get("name") == model
            ):
                return path
        return None


@dataclass(frozen=True)
class Options:
    repo: Path
    now: dt.datetime
    since: dt.timedelta = dt.timedelta(days=7)
    data: str | None = None
    labels: str | None = None
    checkout: Checkout = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkout", Checkout(self.repo))


@dataclass(frozen=True)
class Verdict:
    """Everything `monitor` found about one model; `to_json` is DESIGN.md's entry."""

    name: str
    version: str
    registry_version: int
    owners: tuple[str, ...]
    staleness: Staleness
    drift: DriftResult | None
    prediction: DriftResult | None
    decay: Decay | None
    source: str
    notes: tuple[str, ...] = ()
    error: str | None = None

    @property
    def stale(self) -> bool:
        return self.staleness.stale

    @property
    def prediction_drift(self) -> bool:
        return self.prediction is not None and any(c.drifted for c in self.prediction.columns)

    @property
    def decayed(self) -> bool:
        return self.decay is not None and self.decay.decayed

    @property
    def unchecked(self) -> bool:
        """Drift is configured but no production row was read (no traffic in the window, or the
        log stopped): nothing says the model is healthy, so its open issue is not closed. A
        model without a drift section is judged on its labels alone: none matched, likewise."""
        if self.drift is not None:
            return self.drift.rows == 0
        return self.decay is not None and self.decay.rows == 0

    @property
    def needs_attention(self) -> bool:
        dataset = self.drift is not None and self.drift.dataset_drift
        return self.stale or dataset or self.prediction_drift or self.decayed

    def reasons(self) -> list[str]:
        out = []
        if self.stale:
            out.append(f"stale: {self.staleness.reason}")
        if self.drift is not None and self.drift.dataset_drift:
            out.append(
                f"data drift: {len(self.drift.drifted)} of {len(self.drift.columns)} columns "
                f"drifted (share {self.drift.share:.2f} ≥ {self.drift.share_threshold:g})"
            )
        if self.prediction_drift and self.prediction is not None:
            names = ", ".join(c.name for c in self.prediction.drifted)
            out.append(f"prediction drift: {names}")
        if self.decayed and self.decay is not None:
            bad = ", ".join(m.name for m in self.decay.metrics if not m.ok)
            out.append(f"decay: {bad} outside the threshold on {self.decay.rows} labelled rows")
        return out

    def warnings(self) -> list[str]:
        out = []
        if self.staleness.status == "warning":
            out.append(f"refresh soon: {self.staleness.reason}")
        if self.drift is not None and not self.drift.dataset_drift and self.drift.drifted:
            names = ", ".join(c.name for c in self.drift.drifted)
            out.append(f"drifted columns below the dataset share: {names}")
        return out + list(self.notes)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "registry_version": self.registry_version,
            "needs_attention": self.needs_attention,
            "stale": self.stale,
            "drift": self.drift.to_json() if self.drift else None,
            "prediction_drift": self.prediction_drift,
            "decay": self.decayed,
            "staleness": self.staleness.to_json(),
            "predictions": self.prediction.to_json() if self.prediction else None,
            "performance": self.decay.to_json() if self.decay else None,
            "reasons": self.reasons(),
            "warnings": self.warnings(),
            "owners": list(self.owners),
            "source": self.source,
            "error": self.error,
        }


@dataclass
class _Plan:
    """What one pass over the production data feeds."""

    inputs: drift.Columns | None = None
    outputs: drift.Columns | None = None
    matcher: Matcher | None = None
    output_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: `Reference.types`: how a production CSV's input columns are read.
    types: dict[str, Any] = field(default_factory=dict)


def judge_model(reg: Registry, model: str, opts: Options) -> Verdict:
    """The verdict of the version that serves `model` (MlopsCiError on configuration errors)."""
    n = reg.serving_version(model)
    if n is None:
        raise UsageError("config.pbtxt is missing")
    release = reg.release(model, n)
    text = reg.manifest_text(model, n)
    data, problems, _ = parse_document(text, f"{model}/{n}/model.yaml")
    if data is None or problems:
        first = problems[0] if problems else "unreadable"
        raise UsageError(f"the deployed manifest of {model} version {n} is invalid: {first}")
    repo_manifest = opts.checkout.manifest_of(model)
    manifest = Manifest(repo_manifest or opts.repo / "model.yaml", opts.repo.resolve(), data)
    monitoring = manifest.section("monitoring")
    try:
        deployed = staleness.parse_time(str(release.get("time") or ""))
    except ValueError:
        raise UsageError(
            f"{model}/{n}/release.json: time {release.get('time')!r} is not an ISO 8601 time"
        ) from None
    refresh_by = monitoring.get("refresh_by")
    try:
        # The schema's pattern lets 2026-02-30 through; fromisoformat does not.
        refresh_date = dt.date.fromisoformat(refresh_by) if refresh_by else None
    except ValueError as exc:
        raise UsageError(
            f"the deployed manifest of {model} version {n}: monitoring.refresh_by "
            f"{refresh_by!r} is not a date ({exc})"
        ) from None
    stale = staleness.judge(
        deployed,
        refresh_by=refresh_date,
        max_age_days=monitoring.get("max_age_days"),
        now=opts.now,
        warn_days=int(monitoring.get("warn_days", staleness.DEFAULT_WARN_DAYS)),
    )
    plan, source = _Plan(), "none"
    rules = monitoring.get("drift")
    if rules:
        if repo_manifest is None:
            raise UsageError(
                f"no manifest named {model} in {opts.repo}; run monitor in a checkout "
                "of the model repository (--repo)"
            )
        reference = _reference(manifest, rules)
        plan = _plan(reg, manifest, n, rules, reference, opts)
        source = _scan(reg, manifest, n, rules, plan, opts)
    else:
        plan.notes.append("no drift section in the manifest: drift is not checked")
        # Decay needs no reference: labels alone are judged against the logged predictions
        # (they were never read without a drift section, and a decayed model passed).
        _labels(manifest, plan, opts)
        if plan.matcher is not None:
            source = _scan(reg, manifest, n, {}, plan, opts)
    try:
        inputs = plan.inputs.judge() if plan.inputs else None
        outputs = plan.outputs.judge() if plan.outputs else None
    except ValueError as exc:  # a test the manifest names that cannot test a column
        raise UsageError(f"the deployed manifest of {model} version {n}: {exc}") from None
    return Verdict(
        name=model,
        version=str(release.get("version") or manifest.version),
        registry_version=n,
        owners=manifest.owners,
        staleness=stale,
        drift=inputs,
        prediction=outputs,
        decay=plan.matcher.judge(manifest) if plan.matcher else None,
        source=source,
        notes=tuple(plan.notes),
    )


@dataclass(frozen=True)
class Reference:
    """The reference CSV, read and digest-checked once a run: its bytes feed both the drift
    baseline (`table`, typed by pyarrow) and the model's reference outputs."""

    path: Path
    raw: bytes
    table: Any  # pyarrow.Table
    #: The columns of string and bool inputs, typed so (a production CSV is read alike).
    types: dict[str, Any] = field(default_factory=dict)


def _reference(manifest: Manifest, rules: dict[str, Any]) -> Reference:
    """The reference CSV, parsed from the very bytes whose digest matched."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    ref = rules["reference"]
    path = manifest.resolve(ref["path"])
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"reference data {path}: {exc.strerror}") from None
    actual = hashlib.sha256(raw).hexdigest()
    if actual != ref["sha256"]:
        raise UsageError(
            f"reference data {path}: sha256 {actual} is not the deployed manifest's "
            f"{ref['sha256']} (check out the commit that was deployed)"
        )
    try:
        table = pacsv.read_csv(io.BytesIO(raw))
        # Header names stripped, as data.py reads them for the model: `x1, x2` named a column
        # ` x2`, and the model's x2 was "not in the reference data".
        header = table.column_names
        names = [name.strip() for name in header]
        table = table.rename_columns(names)
        types = _input_types(manifest, table)
        if types:  # read again, these columns as the model reads them (the reference is small)
            as_written = dict(zip(names, header, strict=True))
            options = reader.convert_options({as_written[c]: t for c, t in types.items()})
            table = pacsv.read_csv(io.BytesIO(raw), convert_options=options)
            table = table.rename_columns(names)
        return Reference(path, raw, table, types)
    except pa.ArrowInvalid as exc:
        raise UsageError(f"reference data {path}: {exc}") from None


def _input_types(manifest: Manifest, reference: Any) -> dict[str, Any]:
    """The reference columns that feed a string or bool input, by that pyarrow type. pyarrow's
    type inference read them as numbers where they look like numbers: ZIP code `02139` became
    2139 (category `2139`), while the model, and so serve's log, see the text `02139`; no
    category matched and the same traffic drifted on every run. A bool input's `yes`/`no`
    stayed text where the log holds True/False."""
    import pyarrow as pa

    from mlops_ci import data as mdata

    kinds = {"string": pa.string(), "bool": pa.bool_()}
    target = manifest.section("evaluation").get("target")
    chosen = mdata.input_columns(manifest.signature, reference.column_names, target=target)
    dtypes = {spec.name: spec.dtype for spec in manifest.signature.inputs}
    return {
        column: kinds[dtypes[tensor]]
        for tensor, columns in chosen.items()
        if dtypes.get(tensor) in kinds
        for column in columns
        if column in reference.column_names
    }


def feature_columns(manifest: Manifest, reference: Any, rules: dict[str, Any]) -> list[str]:
    from mlops_ci import data as mdata

    if rules.get("columns"):
        return list(rules["columns"])
    target = manifest.section("evaluation").get("target")
    chosen = mdata.input_columns(manifest.signature, reference.column_names, target=target)
    return [c for cols in chosen.values() for c in cols]


def _finite(value: Any, where: str) -> Any:
    """A threshold or share as deployed. YAML's `.nan` passes the schema's bounds (NaN compares
    false), and then `p < nan` and `share >= nan` are never true: drift could never be found."""
    if value is not None and not math.isfinite(value):
        raise UsageError(
            f"the deployed manifest's monitoring.drift.{where} is {value}, not a number"
        )
    return value


def _precision(manifest: Manifest, reference: Any) -> dict[str, Any]:
    """The columns that feed a float32 or float16 input, by that pyarrow type."""
    import pyarrow as pa

    from mlops_ci import data as mdata

    kinds = {"float32": pa.float32(), "float16": pa.float16()}
    target = manifest.section("evaluation").get("target")
    chosen = mdata.input_columns(manifest.signature, reference.column_names, target=target)
    dtypes = {spec.name: spec.dtype for spec in manifest.signature.inputs}
    return {
        column: kinds[dtypes[tensor]]
        for tensor, columns in chosen.items()
        if dtypes.get(tensor) in kinds
        for column in columns
    }


def _settings(rules: dict[str, Any], precision: dict[str, Any] | None = None) -> drift.Settings:
    per = {
        name: drift.ColumnRule(
            r.get("test"), _finite(r.get("threshold"), f"per_column.{name}.threshold")
        )
        for name, r in (rules.get("per_column") or {}).items()
    }
    return drift.Settings(
        rule=drift.ColumnRule(rules.get("test"), _finite(rules.get("threshold"), "threshold")),
        per_column=per,
        share=float(_finite(rules.get("share", drift.DEFAULT_SHARE), "share")),
        correction=rules.get("correction", "none"),
        categorical=frozenset(rules.get("categorical") or ()),
        precision=precision or {},
    )


def _plan(
    reg: Registry,
    manifest: Manifest,
    n: int,
    rules: dict[str, Any],
    reference: Reference,
    opts: Options,
) -> _Plan:
    plan = _Plan(types=reference.types)
    settings = _settings(rules, _precision(manifest, reference.table))
    features = feature_columns(manifest, reference.table, rules)
    try:
        plan.inputs = drift.Columns(reference.table, features, settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # A setting for a column that is not tested (a typo, a renamed column) changes nothing:
    # say so, or the threshold someone chose for `amount` is silently the default.
    for key in ("per_column", "categorical"):
        idle = sorted(str(c) for c in rules.get(key) or () if c not in features)
        if idle:
            plan.notes.append(
                f"monitoring.drift.{key} names {', '.join(idle)}, which no drift test reads "
                f"(the columns tested: {', '.join(features)}): ignored"
            )
    ref_outputs = _reference_outputs(reg, manifest, n, reference, plan)
    if ref_outputs is not None:
        cat = frozenset(f"output.{o.name}" for o in manifest.signature.outputs if o.role == "label")
        out_settings = output_settings(settings, cat)
        plan.outputs = drift.Columns(ref_outputs, ref_outputs.column_names, out_settings)
    _labels(manifest, plan, opts)
    return plan


def _labels(manifest: Manifest, plan: _Plan, opts: Options) -> None:
    """The labels (`--labels`, else `monitoring.labels`) to match while the log streams by."""
    plan.output_names = [o.name for o in manifest.signature.outputs]
    labels = opts.labels or manifest.section("monitoring").get("labels")
    target = manifest.section("evaluation").get("target")
    if labels and target:
        where = _local_or_uri(manifest, labels)
        plan.matcher = Matcher(
            read_labels(reader.dataset(reader.locate(where), hive=False), target),
            plan.output_names,
        )
    elif labels:
        plan.notes.append("labels are set but the manifest has no evaluation.target")


def output_settings(inputs: drift.Settings, labels: frozenset[str]) -> drift.Settings:
    """The tests of prediction drift: each output column (`labels` as categories) with the
    default test and threshold. Any one drifted output is prediction drift, so the outputs are
    one family of tests: uncorrected, a healthy binary classifier (label and two probabilities,
    each at 5%) needed attention in 8% of runs; Bonferroni keeps that at most 5%, as for one
    column. A manifest's own correction applies as it is."""
    correction = "bonferroni" if inputs.correction == "none" else inputs.correction
    return drift.Settings(correction=correction, categorical=labels)


def _local_or_uri(manifest: Manifest, where: str) -> str:
    if "://" in where:
        return where
    return str(manifest.resolve(where)) if not Path(where).is_absolute() else where


def _reference_outputs(
    reg: Registry, manifest: Manifest, n: int, reference: Reference, plan: _Plan
) -> Any:
    """The serving model's outputs on the reference data: the baseline of prediction drift."""
    import numpy as np
    import pyarrow as pa

    from mlops_ci import data as mdata

    try:
        onnx = reg.model_onnx(manifest.name, n)
        table = mdata.parse_csv(reference.raw, reference.path)
        target = manifest.section("evaluation").get("target")
        feeds = mdata.feeds(table, manifest.signature, target=target)
        session = runtime.session(onnx)
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, feeds)
    except MlopsCiError as exc:
        plan.notes.append(f"prediction drift not checked: {exc}")
        return None
    except Exception as exc:  # onnxruntime's own errors: the baseline cannot be computed
        plan.notes.append(f"prediction drift not checked: the model did not run: {exc}")
        return None
    columns: dict[str, Any] = {}
    for name, value in zip(names, values, strict=True):
        arr = np.asarray(value)
        if arr.dtype == object:
            columns[f"output.{name}"] = pa.array(arr.astype(str).ravel())
        elif arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
            columns[f"output.{name}"] = pa.array(arr.ravel())
        else:
            flat = arr.reshape(arr.shape[0], -1)
            for k in range(flat.shape[1]):
                columns[f"output.{name}[{k}]"] = pa.array(flat[:, k])
    return pa.table(columns)


def expand_outputs(batch: Any) -> Any:
    """A batch with each fixed-size-list output split into `output.<name>[k]` columns."""
    import pyarrow as pa

    arrays, names = [], []
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        if name.startswith("output.") and pa.types.is_fixed_size_list(col.type):
            width = col.type.list_size
            flat = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
            if width == 1:  # `_reference_outputs` names an [n, 1] output without `[0]`
                arrays.append(pa.array(flat[:, 0]))
                names.append(name)
                continue
            for k in range(width):
                arrays.append(pa.array(flat[:, k]))
                names.append(f"{name}[{k}]")
        else:
            arrays.append(col)
            names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _scan(
    reg: Registry, manifest: Manifest, n: int, rules: dict[str, Any], plan: _Plan, opts: Options
) -> str:
    """One pass over the production rows; returns where they came from."""
    import pyarrow.dataset as ds

    where = opts.data or rules.get("current")
    if where:
        source = reader.locate(_local_or_uri(manifest, where))
        # No `date=` folders here: a `date` column of the user's own data is theirs (read as
        # the log's partition key, a date32 column could not be merged with it).
        data = reader.dataset(source, hive=False, types=plan.types)
        flt, pflt, fcols = None, None, []
    else:
        fs, base = reg.arrow_fs()
        path = f"{base.rstrip('/')}/{PREDICTIONS}/{manifest.name}"
        import pyarrow.fs as pafs

        if fs.get_file_info(path).type != pafs.FileType.Directory:
            plan.notes.append("no prediction log yet: nothing to compare")
            _drop_current(plan)
            return f"{PREDICTIONS}/{manifest.name} (empty)"
        source = reader.Source(fs, path, "parquet", f"{PREDICTIONS}/{manifest.name}")
        data = reader.dataset(source)
        # The window is [now - since, now]: rows stamped later (a server whose clock runs
        # ahead) would otherwise sit in every window until their date came.
        start = opts.now - opts.since
        day = ds.field("date")
        pflt = (day >= _day(start)) & (day <= _day(opts.now))
        flt = ds.field("model_version") == n
        fcols = ["model_version"]
        if "time" in data.schema.names:
            kind = data.schema.field("time").type
            time = ds.field("time")
            flt = flt & (time >= _time_scalar(start, kind)) & (time <= _time_scalar(opts.now, kind))
            fcols.append("time")
    names = set(data.schema.names)
    # No inputs to count: a model without a drift section, read for its labels alone.
    tested = list(plan.inputs.order) if plan.inputs is not None else []
    # The schema is the first file's; Parquet files are each checked as they are read.
    missing = [c for c in tested if c not in names]
    if missing and source.format == "csv":
        raise UsageError(
            f"the production data ({source.shown}) has no column "
            f"{', '.join(map(repr, missing[:5]))}"
        )
    wanted = tested
    log_outputs = [f"output.{o}" for o in plan.output_names if f"output.{o}" in names]
    if plan.outputs is not None:
        # Production data may hold some outputs only (a CSV with `output.label` and not the
        # probabilities): judge those, and say which were left out.
        logged = [
            c
            for c in plan.outputs.order
            if any(c == o or c.startswith(f"{o}[") for o in log_outputs)
        ]
        absent = [f"output.{o}" for o in plan.output_names if f"output.{o}" not in names]
        if logged and absent:
            plan.notes.append(
                f"prediction drift of {', '.join(absent)} not checked: the production data "
                "has no such column"
            )
        plan.outputs = plan.outputs.only(logged) if logged else None
    if plan.matcher is not None and "request_id" not in names:
        plan.notes.append("the production data has no request_id: decay is not checked")
        plan.matcher = None
    extra = [*log_outputs, *(["request_id"] if plan.matcher else [])]
    scan = reader.batches(
        data, [*wanted, *extra], flt, filter_columns=fcols, partition_filter=pflt, source=source
    )
    if plan.inputs is None and plan.matcher is None:
        return source.shown  # the log has no request_id: nothing to read it for
    for batch in scan:
        try:
            if plan.inputs is not None:
                plan.inputs.add(batch)
            if plan.outputs is not None:
                plan.outputs.add(expand_outputs(batch))
        except ValueError as exc:
            raise UsageError(f"the production data ({source.shown}): {exc}") from None
        if plan.matcher is not None:
            plan.matcher.add(batch)
    if plan.inputs is not None and plan.inputs.rows == 0:
        window = "" if where else f" of version {n} in the last {_since(opts.since)}"
        plan.notes.append(f"no production rows{window}: drift is not checked")
    return source.shown


def _since(span: dt.timedelta) -> str:
    """`7 days`, `1 day`, `36 hours`, `30 minutes`: as --since was written, near enough."""
    from mlops_ci.report.units import plural

    seconds = int(span.total_seconds())
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0:
            return plural(seconds // size, unit)
    return plural(seconds, "second")


def _drop_current(plan: _Plan) -> None:
    plan.outputs = None
    plan.matcher = None


def _day(t: dt.datetime) -> str:
    """The log's day folder of `t` (serve names them by UTC date); zero-padded before the year
    1000 (strftime's %Y is not), so the folders still compare as strings."""
    return t.astimezone(dt.UTC).date().isoformat()


def _time_scalar(t: dt.datetime, arrow_type: Any) -> Any:
    import pyarrow as pa

    if getattr(arrow_type, "tz", None):
        return pa.scalar(t, type=arrow_type)
    return pa.scalar(t.astimezone(dt.UTC).replace(tzinfo=None), type=arrow_type)


def models_of(reg: Registry, only: Sequence[str]) -> list[str]:
    names = reg.models()
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise UsageError(f"not in the registry: {', '.join(unknown)}")
        names = [m for m in names if m in only]
    return names
