"""The reusable workflow's `monitor` job, run for real with act on a `schedule` event: it reads a
registry folder holding the example tumour classifier published through deploy (its real ONNX
model) with a day of predictions that model made and serve's PredictionLog wrote, and the
example repository's reference data; it opens one issue on the GitHub test server for the model,
whose inputs and predictions drifted."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest
from act_harness import EXAMPLE_REPO, TOKEN, ActHarness
from serve_registry import ExampleModels, publish
from served_log import log_served

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


def _registry(root: Path, example_models: ExampleModels) -> None:
    """The example tumour classifier as deploy publishes it, and a day of what it predicted on
    the reference rows with every feature 50% larger (more malignant-looking nuclei)."""
    model = example_models[MODEL]
    publish(root, MODEL, model.onnx.read_bytes(), model.manifest.read_text(encoding="utf-8"))
    ref = pacsv.read_csv(EXAMPLE_REPO / "models" / MODEL / "reference.csv")
    (tensor,) = model.document["spec"]["signature"]["inputs"]
    features = np.column_stack([ref.column(c).to_numpy() for c in tensor["columns"]])
    log_served(root, MODEL, np.tile(features, (5, 1)) * 1.5, day=dt.datetime.now(dt.UTC).date())


def test_scheduled_monitor_opens_one_issue_for_the_drifted_model(
    act_harness: ActHarness, tmp_path: Path, ghserver, example_models: ExampleModels
) -> None:
    ghserver.add_repo("acme/models")
    ghserver.token = TOKEN  # what the harness hands the run as GITHUB_TOKEN
    registry = tmp_path / "registry"
    _registry(registry, example_models)
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
    assert issues[0]["body"].startswith(f"<!-- mlops-ci:monitor:{MODEL} registry:")
    assert "@acme/oncology-ml @bob" in issues[0]["body"]
    assert "### mlops-ci monitor" in run.summary("monitor")
    recorded = list((registry / ".mlops" / "monitor" / MODEL).glob("*.json"))
    assert len(recorded) == 1
    verdict = json.loads(recorded[0].read_text())
    assert verdict["needs_attention"] and verdict["drift"]["dataset_drift"]
    assert verdict["issue"] == {"number": issues[0]["number"], "for": ["drift", "prediction"]}
    assert verdict["drift"]["rows"] == 1000 and verdict["predictions"]["rows"] == 1000
    # The served model's outputs on the log against its outputs on the reference rows.
    assert verdict["prediction_drift"] is True, verdict["predictions"]
    assert "prediction drift: output." in issues[0]["body"]
    # The pull-request jobs did not run on the schedule.
    assert run.job_result("gate") is None and run.job_result("report") is None
    print(f"act run (monitor job): {run.seconds:.2f}s")
