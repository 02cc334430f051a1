"""`/metrics` under `mlops-ci serve --workers 2`: whichever worker answers a scrape reports the
totals over all workers, the totals never go backwards, and a killed worker's counts survive it.
Real server processes, requests spread over the workers by fresh connections, real scrapes."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from serve_registry import ExampleModel, ServeProcess, publish

from mlops_ci.serve.shared_counters import SYNC_S

MODEL = "disease-progression"
ROWS = 2
BODY = json.dumps(
    {"inputs": [{"name": "input", "shape": [ROWS, 10], "datatype": "FP32", "data": [0.5] * 20}]}
).encode()
LABELS = f'{{model="{MODEL}",version="1"}}'
PID = re.compile(r'^process_cpu_seconds_total\{pid="(\d+)"\}', re.MULTILINE)


@dataclass(frozen=True)
class Scrape:
    values: dict[str, float]  # "name{labels}" -> value, for the model's series
    pid: str | None  # the worker that answered (the `pid` label of its process metrics)

    @property
    def success(self) -> float:
        return self.values.get(f"nv_inference_request_success{LABELS}", 0.0)


@pytest.fixture(scope="module")
def registry(
    example_models: dict[str, ExampleModel], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    root = tmp_path_factory.mktemp("serve-workers") / "registry"
    m = example_models[MODEL]
    publish(root, MODEL, m.onnx.read_bytes(), m.manifest.read_text(encoding="utf-8"))
    return root


@pytest.fixture
def tmpdir_env(tmp_path: Path) -> Path:
    """The server's TMPDIR, so the test can see the folder the workers share and its removal."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


@pytest.fixture
def two_workers(registry: Path, tmpdir_env: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(
        registry,
        *("--workers", "2", "--prediction-log", "off"),
        env={"TMPDIR": str(tmpdir_env)},
    )
    try:
        # Ready means one worker answers; wait for both (each publishes its counters once it
        # has started), or all the requests could go to the first while the second still loads.
        deadline = time.monotonic() + 20
        while len(list(tmpdir_env.glob("mlops-ci-serve-metrics-*/*.json"))) < 2:
            assert time.monotonic() < deadline, "the second worker never started"
            time.sleep(0.02)
        yield server
    finally:
        assert server.terminate() == 0, server.stderr()


def _call(server: ServeProcess, method: str, path: str, body: bytes | None = None) -> bytes:
    # A fresh connection each time: the kernel hands it to either worker.
    conn = http.client.HTTPConnection(server.hostport, timeout=10)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, (resp.status, data[:300])
        return data
    finally:
        conn.close()


def _infer(server: ServeProcess, n: int, threads: int = 4) -> None:
    """n requests from `threads` concurrent clients, so both workers are kept busy."""

    def run(count: int) -> None:
        for _ in range(count):
            _call(server, "POST", f"/v2/models/{MODEL}/infer", BODY)

    share = [n // threads + (i < n % threads) for i in range(threads)]
    workers = [threading.Thread(target=run, args=(c,)) for c in share]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def _scrape(server: ServeProcess) -> Scrape:
    text = _call(server, "GET", "/metrics").decode()
    values = {}
    for line in text.splitlines():
        if f'model="{MODEL}"' in line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    pid = PID.search(text)
    return Scrape(values, pid.group(1) if pid else None)


def _scrapes_from_both_workers(server: ServeProcess, at_least: int = 24) -> list[Scrape]:
    """At least `at_least` scrapes, including some answered by each of the two workers: four
    at a time, since an idle server may hand one client's connections to the same worker."""
    from concurrent.futures import ThreadPoolExecutor

    scrapes: list[Scrape] = []
    deadline = time.monotonic() + 15
    with ThreadPoolExecutor(4) as pool:
        while len(scrapes) < at_least or len({s.pid for s in scrapes}) < 2:
            assert time.monotonic() < deadline, f"one worker answered every scrape: {scrapes[0]}"
            scrapes += pool.map(lambda _: _scrape(server), range(4))
    return scrapes


def _settled(server: ServeProcess, success: int, history: list[float]) -> None:
    """Scrape until the total reaches `success`: the other worker's snapshot is at most SYNC_S
    old. Every value on the way is kept for the never-backwards check."""
    deadline = time.monotonic() + 3 * SYNC_S + 2
    while time.monotonic() < deadline:
        history.append(_scrape(server).success)
        if history[-1] == success:
            return
        time.sleep(0.05)
    raise AssertionError(f"the total never reached {success}: {history[-10:]}")


def _snapshots(tmpdir_env: Path) -> dict[str, dict]:
    (folder,) = tmpdir_env.glob("mlops-ci-serve-metrics-*")
    return {p.name: json.loads(p.read_text()) for p in folder.glob("*.json")}


def _success(snapshot: dict) -> int:
    return sum(row[2] for row in snapshot["versions"] if row[0] == MODEL)


# --- tests --------------------------------------------------------------------------------------


def test_any_workers_scrape_reports_the_totals_and_never_goes_backwards(
    two_workers: ServeProcess, tmpdir_env: Path
) -> None:
    k = 0
    history: list[float] = []
    # Both workers must serve requests, else the sum proves nothing; the kernel hands
    # connections to either, and on a loaded machine one may take a whole round of them.
    for _ in range(5):
        load = threading.Thread(target=_infer, args=(two_workers, 120))
        load.start()
        while load.is_alive():  # scrapes racing the requests: the totals may lag, never shrink
            history.append(_scrape(two_workers).success)
        load.join()
        k += 120
        _settled(two_workers, k, history)

        scrapes = _scrapes_from_both_workers(two_workers)
        history += [s.success for s in scrapes]
        assert [s.success for s in scrapes] == [k] * len(scrapes)
        shares = [_success(snap) for snap in _snapshots(tmpdir_env).values()]
        assert len(shares) == 2 and sum(shares) == k, shares  # the shares add up
        if min(shares) > 0:
            break
    assert min(shares) > 0, f"one worker took all of {k} requests: {shares}"
    assert history == sorted(history), "a scrape went backwards"
    for s in scrapes:  # the rest of the model's series are totals too
        assert s.values[f"nv_inference_count{LABELS}"] == k * ROWS
        assert s.values[f"nv_inference_exec_count{LABELS}"] == k
        assert s.values[f"mlops_ci_inference_request_duration_seconds_count{LABELS}"] == k
        bucket = f'le="+Inf",{LABELS[1:]}'
        assert s.values[f"mlops_ci_inference_request_duration_seconds_bucket{{{bucket}"] == k


def test_a_killed_worker_keeps_its_counts_in_the_totals(
    two_workers: ServeProcess, tmpdir_env: Path
) -> None:
    k = 60
    _infer(two_workers, k)
    history: list[float] = []
    _settled(two_workers, k, history)
    before = _snapshots(tmpdir_env)
    victim = max(before, key=lambda name: _success(before[name]))
    assert _success(before[victim]) > 0
    os.kill(int(victim.split("-")[0]), signal.SIGKILL)

    deadline = time.monotonic() + 20  # uvicorn's supervisor starts a replacement
    while len(_snapshots(tmpdir_env)) < 3:
        assert time.monotonic() < deadline, "no replacement worker"
        time.sleep(0.1)
    two_workers.wait_ready()
    scrapes = _scrapes_from_both_workers(two_workers)
    assert [s.success for s in scrapes] == [k] * len(scrapes)
    assert victim.split("-")[0] not in {s.pid for s in scrapes}
    _infer(two_workers, 20)
    _settled(two_workers, k + 20, history)
    assert history == sorted(history), "a scrape went backwards"


def test_one_worker_shares_nothing(registry: Path, tmpdir_env: Path) -> None:
    server = ServeProcess(registry, "--prediction-log", "off", env={"TMPDIR": str(tmpdir_env)})
    try:
        _call(server, "POST", f"/v2/models/{MODEL}/infer", BODY)
        text = _call(server, "GET", "/metrics").decode()
        assert f"nv_inference_request_success{LABELS} 1.0" in text
        assert "process_cpu_seconds_total " in text  # unlabelled, as before
        assert list(tmpdir_env.glob("mlops-ci-serve-*")) == []
    finally:
        assert server.terminate() == 0, server.stderr()


def test_the_shared_folder_is_removed_on_shutdown(registry: Path, tmpdir_env: Path) -> None:
    server = ServeProcess(
        registry, "--workers", "2", "--prediction-log", "off", env={"TMPDIR": str(tmpdir_env)}
    )
    try:
        (folder,) = tmpdir_env.glob("mlops-ci-serve-metrics-*")
        assert folder.stat().st_mode & 0o777 == 0o700  # no other user adds to the counts
    finally:
        assert server.terminate() == 0, server.stderr()
    assert list(tmpdir_env.glob("mlops-ci-serve-*")) == []


def test_a_sigkilled_servers_folder_is_swept_by_the_next_server(tmp_path: Path) -> None:
    """A parent killed with SIGKILL never runs its `finally`: the next server removes that
    folder. A live server's folder, another user's and another pid namespace's stay."""
    import subprocess
    import sys

    from mlops_ci.serve import shared_counters

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    namespace = shared_counters._pid_namespace()
    prefix = shared_counters.PREFIX
    orphan = tmp_path / f"{prefix}{namespace}-{int(dead.stdout)}-abc"
    live = tmp_path / f"{prefix}{namespace}-{os.getpid()}-def"
    other_namespace = tmp_path / f"{prefix}1-{int(dead.stdout)}-ghi"
    unrelated = tmp_path / "mlops-ci-serve-something-else"
    for folder in (orphan, live, other_namespace, unrelated):
        folder.mkdir()
        (folder / "1-x.json").write_text("{}")
    made = Path(shared_counters.make_folder(str(tmp_path)))
    assert not orphan.exists()
    assert live.exists() and other_namespace.exists() and unrelated.exists()
    assert made.name.startswith(f"{prefix}{namespace}-{os.getpid()}-")
    assert made.stat().st_mode & 0o777 == 0o700
