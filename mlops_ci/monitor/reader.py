"""Streams production data in record batches: Parquet or CSV, one file, a folder or an S3 prefix.

Parquet is read with `pre_buffer=False`: with pre-buffering (pyarrow's default since 26) a scan
buffers whole files, and memory grows with the data instead of staying at a few batches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlops_ci.errors import UsageError

BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Source:
    """A dataset location: a pyarrow filesystem, a path on it, and the file format."""

    filesystem: Any
    path: str
    format: str  # "parquet" | "csv"
    shown: str


def parquet_format() -> Any:
    import pyarrow.dataset as ds

    return ds.ParquetFileFormat(
        default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False)
    )


def convert_options(types: Mapping[str, Any] | None = None) -> Any:
    """How every CSV that monitor reads is typed: `request_id` as the text it is (inferred,
    ids such as `0042` became the number 42 and matched no logged id, so no label was found),
    and `types` (the columns of string and bool inputs, as `check` finds them) as the model
    reads them, so that a reference CSV and a production CSV agree with serve's log."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from mlops_ci import data

    column_types = {"request_id": pa.string(), **(types or {})}
    words: dict[str, Any] = {}
    if any(t == pa.bool_() for t in column_types.values()):
        # data.py's words (`yes`, `no` …) in the cases people write them
        def cases(found: frozenset[str]) -> list[str]:
            return sorted({f(w) for w in found for f in (str.lower, str.upper, str.title)})

        words = {"true_values": cases(data._TRUE), "false_values": cases(data._FALSE)}
    return pacsv.ConvertOptions(column_types=column_types, **words)


def locate(uri: str | Path) -> Source:
    """Where `--data` (a path, file:// or s3://bucket/prefix) points, and in which format."""
    import pyarrow.fs as pafs

    text = str(uri)
    parts = urlsplit(text)
    if parts.scheme == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict[str, Any] = {}
        if endpoint:
            ep = urlsplit(endpoint)
            kwargs["endpoint_override"] = ep.netloc or endpoint
            kwargs["scheme"] = ep.scheme or "https"
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        fs: Any = pafs.S3FileSystem(**kwargs)
        path = f"{parts.netloc}/{parts.path.lstrip('/')}".rstrip("/")
        return Source(fs, path, _format_of(fs, path, text), text)
    if parts.scheme == "file":
        text = parts.path
    elif parts.scheme and len(parts.scheme) > 1:
        raise UsageError(f"--data: unsupported URI scheme {parts.scheme!r} (use a path or s3://)")
    local = Path(text)
    if not local.exists():
        raise UsageError(f"data not found: {local}")
    fs = pafs.LocalFileSystem()
    path = str(local.resolve())
    return Source(fs, path, _format_of(fs, path, text), text)


def _format_of(fs: Any, path: str, shown: str) -> str:
    import pyarrow.fs as pafs

    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        names = [path]
    elif info.type == pafs.FileType.Directory:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        # The files `dataset` reads: Spark's `_SUCCESS` and `.crc` files beside CSV parts
        # made a folder of CSV read as Parquet.
        names = [f.path for f in found if f.type == pafs.FileType.File and _read(path, f.path)]
    else:
        raise UsageError(f"data not found: {shown}")
    if names and all(n.lower().endswith(".csv") for n in names):
        return "csv"
    return "parquet"


def _read(base: str, path: str) -> bool:
    """Whether `dataset` reads this file of folder `base`: not when a part of its path below
    `base` starts with `.` or `_` (its `ignore_prefixes`)."""
    below = path[len(base.rstrip("/")) + 1 :]
    return not any(part.startswith((".", "_")) for part in below.split("/"))


def dataset(source: Source, *, hive: bool = True, types: Mapping[str, Any] | None = None) -> Any:
    """A pyarrow dataset over the source (Hive `key=value` folders become columns; a CSV's
    columns typed by `convert_options(types)`)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    fmt: Any = parquet_format()
    if source.format != "parquet":
        fmt = ds.CsvFileFormat(convert_options=convert_options(types))
    partitioning = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
    try:
        return ds.dataset(
            source.path,
            format=fmt,
            filesystem=source.filesystem,
            partitioning=partitioning if hive else None,
            ignore_prefixes=[".", "_"],
        )
    except (OSError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # type: files that disagree
        # Finding a Parquet dataset reads the first file's schema: name that file if it is bad.
        bad = _first_unreadable(source) if source.format == "parquet" else None
        raise UsageError(bad or f"cannot read {source.shown}: {_reason(exc)}") from None


def name_of(source: Source, path: str) -> str:
    """A file of the source as the user knows it: under the name they gave, not pyarrow's
    absolute path or bucket/key."""
    base = source.path.rstrip("/")
    if path == base:
        return source.shown
    if path.startswith(base + "/"):
        return f"{source.shown.rstrip('/')}/{path[len(base) + 1 :]}"
    return path


def _reason(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _not_parquet(name: str, exc: BaseException) -> str:
    # pyarrow's first sentence says what it found; its second repeats ours ("Either the file…").
    return f"{name} is not a Parquet file, or is truncated ({_reason(exc).split('. ')[0]})"


def _first_unreadable(source: Source) -> str | None:
    """The first file (in path order) whose Parquet footer cannot be read, as `name_of` names it."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs = source.filesystem
    try:
        info = fs.get_file_info(source.path)
        if info.type == pafs.FileType.File:
            paths = [source.path]
        else:
            found = fs.get_file_info(pafs.FileSelector(source.path, recursive=True))
            files = [f.path for f in found if f.type == pafs.FileType.File]
            paths = sorted(p for p in files if _read(source.path, p))
    except (OSError, pa.ArrowInvalid):
        return None
    for path in paths:
        try:
            with fs.open_input_file(path) as fh:
                pq.read_metadata(fh)
        except (OSError, pa.ArrowException) as exc:
            return _not_parquet(name_of(source, path), exc)
    return None


def batches(
    data: Any,
    columns: Sequence[str],
    filter: Any = None,
    *,
    filter_columns: Sequence[str] = (),
    partition_filter: Any = None,
    batch_rows: int = BATCH_ROWS,
    source: Source | None = None,
) -> Iterator[Any]:
    """Record batches of `columns` with `filter` applied; memory does not grow with the rows.

    Parquet files are read fragment by fragment with `ParquetFile.iter_batches` over a buffered
    stream (pre_buffer=False): the dataset scanner decodes a whole row group before slicing
    it, so a file written with one 1M-row group (pyarrow's default) would cost 600 MB here.
    `filter` is applied to rows and reads `filter_columns`; `partition_filter` (on Hive folders
    such as date=) prunes files before they are opened. A Parquet file that cannot be read, or
    lacks one of `columns` or `filter_columns`, is a UsageError naming it (as `source` shows it).
    """
    import pyarrow as pa

    try:
        if isinstance(data.format, pa.dataset.ParquetFileFormat):
            yield from _parquet_batches(
                data, columns, filter, filter_columns, partition_filter, batch_rows, source
            )
            return
        both = (
            filter
            if partition_filter is None
            else (partition_filter if filter is None else partition_filter & filter)
        )
        scanner = data.scanner(
            columns=list(columns), filter=both, batch_size=batch_rows, batch_readahead=1
        )
        for batch in scanner.to_batches():
            if batch.num_rows:
                yield batch
    except (OSError, pa.ArrowInvalid) as exc:
        raise UsageError(f"cannot read the data: {exc}") from None


def _parquet_batches(
    data: Any,
    columns: Sequence[str],
    filter: Any,
    filter_columns: Sequence[str],
    partition_filter: Any,
    batch_rows: int,
    source: Source | None,
) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = list(columns)
    needed = list(dict.fromkeys([*wanted, *filter_columns]))
    for fragment in data.get_fragments(filter=partition_filter):
        name = name_of(source, fragment.path) if source else fragment.path
        with fragment.filesystem.open_input_file(fragment.path) as fh:
            try:
                pf = pq.ParquetFile(fh, pre_buffer=False, buffer_size=1 << 20)
            except (OSError, pa.ArrowException) as exc:
                raise UsageError(_not_parquet(name, exc)) from None
            present = set(pf.schema_arrow.names)
            # iter_batches skips a column the file lacks, and the filter then fails in
            # pyarrow's words (`No match for FieldRef.Name(model_version)`): say it here.
            missing = [c for c in needed if c not in present]
            if missing:
                raise UsageError(f"{name} has no column {', '.join(map(repr, missing))}")
            try:
                for batch in pf.iter_batches(batch_size=batch_rows, columns=needed):
                    if filter is not None:
                        batch = pa.Table.from_batches([batch]).filter(filter)
                        for part in batch.select(wanted).to_batches():
                            if part.num_rows:
                                yield part
                    elif batch.num_rows:
                        yield batch.select(wanted)
            except (OSError, pa.ArrowException) as exc:  # a damaged page, a mistyped column
                raise UsageError(f"cannot read {name}: {_reason(exc)}") from None
