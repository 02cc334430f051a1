"""`mlops-ci catalog` on a large registry: 10,000 models × 5 versions (each with its manifest as
deployed, release.json with test and bench results), a 50,000-record audit log and monitor
verdicts, in a folder.

Prints, measured in one run:
- the catalog's wall time (`catalog.build`, what `mlops-ci catalog` runs: read + audit verify +
  render, the rendering done in forked workers while the reading goes on), against a floor:
  reading the same files' bytes and parsing them (json.loads / yaml CSafeLoader) with nothing
  else done; and the reading alone (`read_catalog`), timed apart;
- the weight of the index page (it must stay under 2 MB; past PAGE_ROWS models it paginates);
- in Debian's chromium, how long the index takes to become interactive (navigation start to the
  end of its script) and how long one filter keystroke takes over the page's rows.

With `--runs N` each model has N daily monitor verdicts (default 2); the catalog reads the newest
MONITOR_RUNS of each, and the reading of every one of them (as before that bound) is timed beside.

Goals (issue 13): under 30 s, index under 2 MB, interactive within 1 s. Run:
    .venv/bin/python bench/catalog.py [--models 10000] [--versions 5] [--runs 2] [--keep DIR]
Timings depend on the load of the machine: the script prints the load average and the CPU
seconds beside the wall time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from mlops_ci import audit
from mlops_ci.catalog import build
from mlops_ci.catalog import read as catalog_read
from mlops_ci.catalog.read import MONITOR_RUNS, read_catalog
from mlops_ci.catalog.site import PAGE_ROWS
from mlops_ci.registry import open_registry

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COLUMNS = [f"f{i}" for i in range(10)]
TEAMS = [f"@acme/team-{i}" for i in range(40)]


def _manifest(name: str, semver: str, i: int) -> str:
    # About the size of the example manifests: metadata, a signature and metric thresholds.
    inputs = "\n".join(f"      - {{name: {c}, dtype: float32, shape: [-1, 1]}}" for c in COLUMNS)
    return (
        "apiVersion: mlops-ci/v1\nkind: Model\nmetadata:\n"
        f"  name: {name}\n  version: {semver}\n"
        f"  owners: ['{TEAMS[i % len(TEAMS)]}', '@user{i % 997}']\n"
        f"  risk: {('low', 'medium', 'high')[i % 3]}\n"
        f"  description: Synthetic model number {i} for the catalog benchmark.\n"
        "spec:\n  framework: sklearn\n"
        f"  artifact: {{path: model.skops, sha256: '{'ab' * 32}'}}\n"
        f"  signature:\n    inputs:\n{inputs}\n"
        "    outputs:\n      - {name: label, dtype: int64, shape: [-1], role: label}\n"
        "  tests:\n    metrics:\n      - {metric: accuracy, min: 0.65}\n"
        "      - {metric: f1, min: 0.6}\n      - {metric: roc_auc, min: 0.7}\n"
        "  monitoring:\n    max_age_days: 180\n    drift: {test: psi, threshold: 0.2}\n"
    )


def _release(name: str, n: int, semver: str, time_: str, i: int) -> dict:
    metrics = [
        {"kind": "metric", "name": m, "status": "pass", "passed": True,
         "value": 0.7 + 0.01 * ((i + n + k) % 9), "min": 0.6, "detail": "", "rows": 1000}
        for k, m in enumerate(("accuracy", "f1", "roc_auc"))
    ]  # fmt: skip
    measurements = [
        {"engine": engine, "batch_size": b, "iterations": 1000, "p50_ms": 0.02 * b * (1 + n / 10),
         "p95_ms": 0.03 * b, "p99_ms": 0.04 * b, "mean_ms": 0.02 * b, "throughput": 5e4 / b}
        for engine in ("onnx", "native") for b in (1, 64)
    ]  # fmt: skip
    return {
        "model": name, "version": semver, "registry_version": n, "commit": f"{i:08x}{n:032x}",
        "pull_request": {"number": i * 5 + n, "url": f"https://github.com/acme/m/pull/{i * 5 + n}",
                         "head_sha": f"{i:040x}"},
        "approvers": [{"login": f"user{(i + k) % 997}", "review_id": i * 10 + k,
                       "commit": f"{i:040x}", "time": time_} for k in range(2)],
        "artifact": {"path": "model.skops", "sha256": "ab" * 32},
        "onnx": {"sha256": "cd" * 32, "opset": 17, "converter": "skl2onnx 1.18"},
        "results": {"test": {"stage": "test", "passed": True, "checks": metrics},
                    "bench": {"stage": "bench", "passed": True, "measurements": measurements}},
        "run_url": f"https://github.com/acme/m/actions/runs/{i * 5 + n}",
        "time": time_, "source": "github", "audit": {"sha256": ""},
    }  # fmt: skip


def make_registry(root: Path, models: int, versions: int, runs: int = 2) -> int:
    """Write the registry; returns the number of files written."""
    log: list[bytes] = []
    prev = audit.GENESIS
    files = 0
    for i in range(models):
        name = f"model-{i:05d}"
        for n in range(1, versions + 1):
            semver = f"1.{n}.0"
            stamp = f"2026-{1 + n:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z"
            record = {"action": "deploy", "model": name, "version": semver,
                      "registry_version": n, "time": stamp, "prev": prev, "seq": len(log) + 1,
                      "actor": "github-actions", "source": "github"}  # fmt: skip
            line = audit.encode(record)
            prev = audit.digest(line)
            log.append(line)
            folder = root / name / str(n)
            folder.mkdir(parents=True)
            release = _release(name, n, semver, stamp, i)
            release["audit"]["sha256"] = prev
            (folder / "release.json").write_text(json.dumps(release), encoding="utf-8")
            (folder / "model.yaml").write_text(_manifest(name, semver, i), encoding="utf-8")
            files += 2
        (root / name / "config.pbtxt").write_text(
            f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 64\n'
            f"version_policy {{ specific {{ versions: {versions} }} }}\n",
            encoding="utf-8",
        )
        monitor = root / ".mlops" / "monitor" / name
        monitor.mkdir(parents=True)
        first = dt.date(2026, 11, 22) - dt.timedelta(days=runs)
        for run in range(runs):
            share = 0.6 if (i % 17 == 0 and run == runs - 1) else 0.1
            verdict = {
                "name": name, "version": f"1.{versions}.0", "needs_attention": share >= 0.5,
                "stale": False, "prediction_drift": False, "decay": None,
                "drift": {"share": share, "dataset_drift": share >= 0.5, "columns": [
                    {"name": c, "test": "psi", "statistic": 0.05 + 0.03 * ((i + k + run) % 9),
                     "threshold": 0.2, "drifted": 0.05 + 0.03 * ((i + k + run) % 9) >= 0.2}
                    for k, c in enumerate(COLUMNS)]},
            }  # fmt: skip
            day = first + dt.timedelta(days=run)
            (monitor / f"{day.isoformat()}T051700Z.json").write_text(json.dumps(verdict))
        files += 1 + runs
    (root / ".mlops" / "audit.jsonl").write_bytes(b"\n".join(log) + b"\n")
    (root / ".mlops" / "audit.head").write_text(f"{len(log)} {prev}\n")
    return files + 2


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the forked page workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def read_floor(root: Path, versions: int) -> float:
    """Seconds for a plain script to read and parse what the catalog reads: every release.json,
    config.pbtxt and monitor verdict (json.loads), each serving version's manifest (YAML, C
    loader) and every audit record, and to do nothing with it."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    started = time.perf_counter()
    for line in (root / ".mlops" / "audit.jsonl").read_bytes().splitlines():
        json.loads(line)
    for folder in (root / ".mlops" / "monitor").iterdir():
        for path in sorted(folder.glob("*.json"))[-MONITOR_RUNS:]:
            json.loads(path.read_bytes())
    for model in root.iterdir():
        if model.name.startswith("."):
            continue
        (model / "config.pbtxt").read_bytes()
        for n in range(1, versions + 1):
            json.loads((model / str(n) / "release.json").read_bytes())
        yaml.load((model / str(versions) / "model.yaml").read_text(), Loader=loader)
    return time.perf_counter() - started


def browser_timings(index: Path) -> tuple[float, float]:
    """(ms from navigation start to the end of the page's script, ms for one filter keystroke)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(index.as_uri())
        page.wait_for_load_state("load")
        # The script ends by filling the "N of M shown" line: the page is interactive then.
        ready = page.evaluate(
            "() => { const t = performance.getEntriesByType('navigation')[0];"
            " return t.domContentLoadedEventEnd - t.startTime; }"
        )
        keystroke = page.evaluate(
            "() => { const q = document.querySelector('input[name=q]'); const t0 = "
            "performance.now(); q.value = 'model-0001'; q.dispatchEvent(new Event('input',"
            " {bubbles: true})); document.body.offsetHeight; return performance.now() - t0; }"
        )
        shown = page.inner_text("#shown")
        browser.close()
    if errors:
        raise SystemExit(f"console errors in the browser: {errors[:3]}")
    print(f"  filter 'model-0001': {shown}")
    return float(ready), float(keystroke)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--runs", type=int, default=2, help="monitor verdicts per model")
    parser.add_argument(
        "--keep",
        type=Path,
        help="write the registry and site here and keep them (a later run reuses the registry)",
    )
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="mlops-ci-bench-catalog-"))
    try:
        registry = work / "registry"
        shape = f"{args.models} {args.versions} {args.runs}\n"
        marker = work / "registry.shape"
        if args.keep and marker.is_file() and marker.read_text() == shape:
            print(f"registry: reusing {registry} ({args.models:,} × {args.versions})")
        else:
            if registry.exists():
                shutil.rmtree(registry)
            t0 = time.perf_counter()
            files = make_registry(registry, args.models, args.versions, args.runs)
            marker.write_text(shape)
            print(
                f"registry: {args.models:,} models × {args.versions} versions, {files:,} files, "
                f"{args.models * args.versions:,} audit records (written in "
                f"{time.perf_counter() - t0:.1f} s)"
            )
        floor = read_floor(registry, args.versions)
        load = os.getloadavg()[0]
        # The reading alone, then the whole of `mlops-ci catalog` (catalog.build), which renders
        # in one forked worker per core while it reads.
        t0, cpu0 = time.perf_counter(), _cpu()
        read_catalog(open_registry(registry), str(registry))
        t1, cpu1 = time.perf_counter(), _cpu()
        catalog, index = build(registry, work / "site")
        t2, cpu2 = time.perf_counter(), _cpu()
        # The reading as it was before MONITOR_RUNS: every verdict of every model.
        bounded = catalog_read.monitor_runs.__defaults__
        catalog_read.monitor_runs.__defaults__ = (sys.maxsize,)
        try:
            t3 = time.perf_counter()
            read_catalog(open_registry(registry), str(registry))
            every = time.perf_counter() - t3
        finally:
            catalog_read.monitor_runs.__defaults__ = bounded
        took = t2 - t1
        pages = sorted(index.parent.glob("index*.html"))
        weight = index.stat().st_size
        print(
            f"mlops-ci catalog:        {took:6.2f} s  (goal < 30 s; {cpu2 - cpu1:.1f} CPU-s in all "
            f"processes; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after, on "
            f"{os.cpu_count()} cores)"
        )
        print(f"  reading alone:         {t1 - t0:6.2f} s  ({cpu1 - cpu0:.1f} CPU-s, one process)")
        print(
            f"  reading every verdict: {every:6.2f} s  ({args.runs} per model; the catalog reads "
            f"the newest {MONITOR_RUNS}: {every / (t1 - t0):.2f}× the bounded reading)"
        )
        print(f"read+parse floor:        {floor:6.2f} s  (a plain script reading the same records)")
        print(f"ratio catalog / floor:   {took / floor:6.2f}×")
        print(
            f"index.html:              {weight / 1e6:6.2f} MB  (goal < 2 MB; {len(pages)} index "
            f"pages of {PAGE_ROWS:,} rows; catalog.json "
            f"{(index.parent / 'catalog.json').stat().st_size / 1e6:.1f} MB)"
        )
        assert catalog.audit is not None and catalog.audit.ok, catalog.audit
        if Path(CHROMIUM).exists():
            ready, keystroke = browser_timings(index)
            print(f"interactive (chromium):  {ready:6.0f} ms  (goal < 1000 ms)")
            rows = min(args.models, PAGE_ROWS)
            print(f"one filter keystroke:    {keystroke:6.1f} ms  over {rows:,} rows")
        else:
            print("chromium is not installed: browser timings skipped")
        ok = took < 30 and weight < 2e6
        return 0 if ok else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
