"""The reusable workflow's `monitor` job, run for real with act on a `schedule` event: it reads a
registry folder and the example repository's reference data, and opens one issue on the GitHub
test server for the model whose production inputs drifted."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from act_harness import EXAMPLE_REPO, TOKEN, ActHarness

from mlops_ci.registry import open_registry

pytestmark = pytest.mark.act

MODEL = "tumor-classifier"
CALLER = """\
name: mlops-ci
on:
  schedule:
    - cron: "17 5 * * *"
  workflow_dispatch:
permissions: {{}}
jobs:
  mlops-ci:
    uses: mlops-ci/mlops-ci/.github/workflows/mlops-ci.yml@v1
    permissions:
      contents: read
      issues: write
    with:
      registry: {registry}
"""


def _registry(root: Path) -> None:
    """The example tumour classifier as deployed 20 days ago, and a day of drifted predictions."""
    folder = EXAMPLE_REPO / "models" / MODEL
    reg = open_registry(root)
    reg.write_bytes(
        f"{MODEL}/config.pbtxt",
        f'name: "{MODEL}"\nplatform: "onnxruntime_onnx"\n'
        "version_policy: { specific: { versions: [1] } }\n".encode(),
    )
    now = dt.datetime.now(dt.UTC)
    release = {
        "model": MODEL,
        "version": "1.0.0",
        "registry_version": 1,
        "time": (now - dt.timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": "local",
    }
    reg.write_bytes(f"{MODEL}/1/release.json", json.dumps(release).encode())
    reg.write_bytes(f"{MODEL}/1/model.yaml", (folder / "model.yaml").read_bytes())
    ref = pacsv.read_csv(folder / "reference.csv")
    cols = {}
    for name in ref.column_names:
        values = ref.column(name).to_numpy().astype(np.float64)
        cols[name] = pa.array(np.tile(values, 5) * 1.5)  # every feature 50% larger
    n = len(next(iter(cols.values())))
    table = pa.table(
        {
            "time": pa.array([now] * n, pa.timestamp("us", "UTC")),
            "model_version": pa.array(np.ones(n, dtype=np.int64)),
            "request_id": pa.array([f"r{i}" for i in range(n)]),
            **cols,
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    reg.write_bytes(
        f".mlops/predictions/{MODEL}/date={now.date().isoformat()}/part-0.parquet", sink.getvalue()
    )


def test_scheduled_monitor_opens_one_issue_for_the_drifted_model(
    act_harness: ActHarness, tmp_path: Path, ghserver
) -> None:
    ghserver.add_repo("acme/models")
    ghserver.token = TOKEN  # what the harness hands the run as GITHUB_TOKEN
    registry = tmp_path / "registry"
    _registry(registry)
    repo = act_harness.model_repo(EXAMPLE_REPO)
    caller = repo.path / ".github" / "workflows" / "mlops-ci.yml"
    caller.write_text(CALLER.format(registry=json.dumps(str(registry))), encoding="utf-8")
    repo = repo.commit("Monitor on a schedule")
    event = {
        "schedule": "17 5 * * *",
        "repository": {"full_name": "acme/models", "default_branch": "main"},
    }

    run = act_harness.run(
        repo, "schedule", event, api_url=ghserver.url, env={"MLOPS_CI_GITHUB_MAX_WAIT": "0.01"}
    )

    assert run.job_result("monitor") == "success", run.explain()
    issues = list(ghserver.repos["acme/models"].issues.values())
    assert len(issues) == 1, run.explain()
    assert issues[0]["labels"] == ["mlops-ci/monitor"]
    assert f"<!-- mlops-ci:monitor:{MODEL} -->" in issues[0]["body"]
    assert "@acme/oncology-ml @bob" in issues[0]["body"]
    assert "### mlops-ci monitor" in run.summary("monitor")
    recorded = list((registry / ".mlops" / "monitor" / MODEL).glob("*.json"))
    assert len(recorded) == 1 and json.loads(recorded[0].read_text())["needs_attention"]
    # The pull-request jobs did not run on the schedule.
    assert run.job_result("gate") is None and run.job_result("report") is None
    print(f"act run (monitor job): {run.seconds:.2f}s")
