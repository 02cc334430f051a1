"""`mlops-ci monitor`'s drift statistics against Evidently's DataDriftPreset, in one run.

Same data, same tests (Evidently's default choice), same thresholds: a synthetic reference of
100,000 rows against 1,000,000 current rows of 50 numeric and 10 categorical columns, read from
Parquet, 13 columns drifted by construction. Each tool runs in its own process, measured with
getrusage (user + system CPU seconds, peak RSS). Evidently needs pandas<3, so it gets its own
virtual environment under the cache folder (created on first use).

    python bench/monitor.py [--rows 1000000] [--reference 100000] [--cache DIR] [--no-evidently]

Prints both tools' CPU seconds, peak RSS and the ratio, and compares verdicts column by column.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

EVIDENTLY = "evidently==0.7.23"
N_NUMERIC, N_CATEGORICAL = 50, 10
SHIFTED = {f"n{i}": 0.3 for i in range(0, 50, 5)}  # 10 numeric columns, +0.3 sigma
REMIXED = {"c0", "c4", "c7"}  # 3 categorical columns, a reversed category mix
CATEGORIES = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
MIX = [0.35, 0.25, 0.15, 0.12, 0.08, 0.05]


def make_data(folder: Path, n_ref: int, n_cur: int) -> tuple[Path, Path]:
    """Reference and current Parquet files (written once per size, then reused)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    ref_path, cur_path = folder / f"reference-{n_ref}.parquet", folder / f"current-{n_cur}.parquet"
    rng = np.random.default_rng(42)
    for path, n, drifted in ((ref_path, n_ref, False), (cur_path, n_cur, True)):
        if path.exists():
            continue
        writer = None
        tmp = path.with_suffix(".tmp")
        for start in range(0, n, 200_000):
            rows = min(200_000, n - start)
            cols = {}
            for i in range(N_NUMERIC):
                name = f"n{i}"
                shift = SHIFTED.get(name, 0.0) if drifted else 0.0
                # a mix of shapes: normal, lognormal, uniform
                base = (rng.normal, rng.lognormal, rng.uniform)[i % 3](size=rows)
                cols[name] = base + shift * float(np.std(base) if i % 3 else 1.0)
            for i in range(N_CATEGORICAL):
                name = f"c{i}"
                p = MIX[::-1] if drifted and name in REMIXED else MIX
                cols[name] = np.asarray(CATEGORIES)[rng.choice(len(CATEGORIES), rows, p=p)]
            table = pa.table(cols)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table, row_group_size=65_536)
        assert writer is not None
        writer.close()
        tmp.rename(path)
    return ref_path, cur_path


OURS = """
import json, resource, sys, time
t0 = time.perf_counter()
import pyarrow as pa
from mlops_ci.monitor import drift, reader
ref_data = reader.dataset(reader.locate(sys.argv[1]), hive=False)
names = ref_data.schema.names
ref = pa.Table.from_batches(list(reader.batches(ref_data, names)))
cols = drift.Columns(ref, names, drift.Settings())
del ref  # only the counts are kept
data = reader.dataset(reader.locate(sys.argv[2]), hive=False)
cols.add_all(reader.batches(data, names))
result = cols.judge()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
    "wall": time.perf_counter() - t0, "rows": result.rows,
    "columns": {c.name: {"test": c.test, "score": c.score, "drifted": c.drifted,
                         "bound": c.error_bound} for c in result.columns},
}))
"""

THEIRS = """
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
ref = pd.read_parquet(sys.argv[1])
cur = pd.read_parquet(sys.argv[2])
num = [c for c in ref.columns if c.startswith("n")]
cat = [c for c in ref.columns if c.startswith("c")]
definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
snapshot = Report([DataDriftPreset()]).run(
    Dataset.from_pandas(cur, data_definition=definition),
    Dataset.from_pandas(ref, data_definition=definition),
)
usage = resource.getrusage(resource.RUSAGE_SELF)
columns = {}
for m in snapshot.dict()["metrics"]:
    config = m.get("config") or {}
    if not str(config.get("type", "")).endswith(":ValueDrift"):
        continue
    score, threshold, method = float(m["value"]), float(config["threshold"]), config["method"]
    drifted = score < threshold if "p_value" in method else score >= threshold
    columns[config["column"]] = {"test": method, "score": score, "drifted": drifted}
print(json.dumps({
    "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
    "wall": time.perf_counter() - t0, "columns": columns,
}))
"""


def evidently_python(cache: Path) -> Path:
    venv = cache / "evidently-0.7.23"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} for {EVIDENTLY} (pandas<3) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", EVIDENTLY, "pandas<3", "pyarrow"],
            check=True,
        )
    return python


def run(python: str | Path, script: str, *args: Path, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run(
        [str(python), "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise SystemExit(f"{python} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference", type=int, default=100_000)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mlops-ci" / "bench")
    parser.add_argument("--no-evidently", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    ref, cur = make_data(args.cache / "monitor-data", args.reference, args.rows)
    print(
        f"data: {args.reference:,} reference x {args.rows:,} current rows, {N_NUMERIC} numeric + "
        f"{N_CATEGORICAL} categorical columns, {len(SHIFTED) + len(REMIXED)} drifted by "
        f"construction ({time.perf_counter() - started:.1f}s to prepare)"
    )
    project = Path(__file__).resolve().parents[1]
    ours = run(sys.executable, OURS, ref, cur, env={"PYTHONPATH": str(project)})
    expected = set(SHIFTED) | REMIXED
    found = {c for c, v in ours["columns"].items() if v["drifted"]}
    worst_bound = max(v["bound"] for v in ours["columns"].values())
    print(
        f"mlops-ci   cpu {ours['cpu']:7.2f} s  peak RSS {ours['rss_mb']:7.0f} MB  "
        f"wall {ours['wall']:6.2f} s  drifted {len(found)} (expected {len(expected)}: "
        f"{'exact' if found == expected else 'DIFFERENT'}); largest Wasserstein bound "
        f"{worst_bound:.4f}"
    )
    if args.no_evidently:
        return 0 if found == expected else 1
    theirs = run(evidently_python(args.cache), THEIRS, ref, cur)
    print(
        f"Evidently  cpu {theirs['cpu']:7.2f} s  peak RSS {theirs['rss_mb']:7.0f} MB  "
        f"wall {theirs['wall']:6.2f} s"
    )
    print(
        f"ratio: {theirs['cpu'] / ours['cpu']:.1f}x less CPU, "
        f"{theirs['rss_mb'] / ours['rss_mb']:.1f}x less peak memory"
    )
    disagree = []
    for name, mine in ours["columns"].items():
        other = theirs["columns"].get(name)
        if other is None:
            disagree.append(f"{name}: missing from Evidently's report")
        elif mine["drifted"] != other["drifted"]:
            disagree.append(
                f"{name}: mlops-ci {mine['test']} {mine['score']:.4g} drifted={mine['drifted']}, "
                f"Evidently {other['test']} {other['score']:.4g} drifted={other['drifted']}"
            )
    numeric = [n for n in ours["columns"] if n.startswith("n")]
    agree_num = sum(
        ours["columns"][n]["drifted"] == theirs["columns"].get(n, {}).get("drifted")
        for n in numeric
    )
    print(f"numeric verdicts agree on {agree_num} of {len(numeric)} columns")
    print(
        "categorical columns: Jensen-Shannon on category counts in both tools (with more than "
        "1,000 reference rows; chi-square, where the tools differ, is chosen only below that)"
    )
    scores = [
        abs(ours["columns"][n]["score"] - theirs["columns"][n]["score"])
        for n in numeric
        if n in theirs["columns"]
    ]
    if scores:
        print(f"largest |score difference| on numeric columns: {max(scores):.5f}")
    for line in disagree:
        print(f"  differs: {line}")
    return 0 if not disagree and found == expected else 1


if __name__ == "__main__":
    sys.exit(main())
