"""The sticky pull-request comment: created once, edited in place, summarised under GitHub's
limit for many models, and the fork path (prepared file, posted by a workflow_run job)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import datasets
from sklearn.ensemble import RandomForestClassifier

from mlops_ci import bench, cli, convert, evaluate, manifest, pr_report
from tests.ghserver import GitHubServer
from tests.stage_models import make_repo

REPO = "acme/models"


@pytest.fixture(scope="module")
def stage_docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Real test.json and bench.json of a breast-cancer forest: one passing, one failing."""
    X, y = datasets.load_breast_cancer(return_X_y=True)
    model = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(
        X[:400], y[:400]
    )
    root = tmp_path_factory.mktemp("report")
    repo = make_repo(
        root,
        "tumor",
        model,
        X[400:],
        y[400:],
        tests={
            "cases": [
                {
                    "name": "row 0",
                    "input": {f"f{i}": float(v) for i, v in enumerate(X[400])},
                    "expect": {"label": int(model.predict(X[400:401])[0])},
                },
            ],
            "metrics": [{"metric": "accuracy", "min": 0.8}, {"metric": "roc_auc", "min": 0.9}],
        },
        benchmark={"batch_sizes": [1, 32], "budgets": [{"batch_size": 1, "p99_ms": 1000}]},
    )
    m = manifest.load(repo.manifest)
    out = root / "reports"
    converted = convert.run(m, out).to_json()
    passing_test = evaluate.run(m, out, out).to_json()
    passing_bench = bench.run(m, out, out, baseline=repo.onnx, time_budget_s=0.05).to_json()
    failing_test = copy.deepcopy(passing_test)
    failing_test["passed"] = False
    failing_test["counts"]["fail"] = 1
    failing_test["checks"][0] = {
        "kind": "metric",
        "name": "accuracy",
        "status": "fail",
        "passed": False,
        "detail": "0.71 outside ≥ 0.8 (169 rows)",
        "value": 0.71,
        "min": 0.8,
        "rows": 169,
    }
    return {
        "test": passing_test,
        "bench": passing_bench,
        "failing_test": failing_test,
        "convert": converted,
    }


def _write_models(folder: Path, docs: dict[str, Any], n: int, failing_every: int = 0) -> None:
    for i in range(n):
        d = folder / f"model-{i:04d}"
        d.mkdir(parents=True)
        failing = failing_every and i % failing_every == 0
        test = copy.deepcopy(docs["failing_test"] if failing else docs["test"])
        bench_doc = copy.deepcopy(docs["bench"])
        for doc in (test, bench_doc):
            doc["model"] = f"model-{i:04d}"
            doc["manifest"] = f"models/model-{i:04d}/model.yaml"
        (d / "test.json").write_text(json.dumps(test))
        (d / "bench.json").write_text(json.dumps(bench_doc))
        (d / "validate.json").write_text(
            json.dumps({"manifests": [{"path": test["manifest"], "valid": True, "errors": []}]})
        )
        converted = copy.deepcopy(docs["convert"])
        converted["model"]["name"] = test["model"]
        (d / "convert.json").write_text(json.dumps(converted))


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GitHubServer, Any]]:
    server = GitHubServer().start()
    repo = server.add_repo(REPO)
    pull = repo.add_pull(7, author="carol")
    for key, value in server.env(repo=REPO).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLOPS_CI_GITHUB_MAX_WAIT", "0.01")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.delenv("GITHUB_EVENT_PATH", raising=False)
    try:
        yield server, pull
    finally:
        server.stop()


def _comments(server: GitHubServer) -> list[dict[str, Any]]:
    return list(server.dump_state()["repos"][REPO]["comments"])


def test_comment_is_created_once_then_edited_in_place(
    stage_docs: dict[str, Any], github: Any, tmp_path: Path
) -> None:
    server, _ = github
    _write_models(tmp_path, stage_docs, 3, failing_every=2)
    server.repos[REPO].comments.append(
        {"_issue": 7, "id": 1, "body": "LGTM", "user": server.user_json("dave")}
    )

    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 0
    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 0

    assert len(server.calls("POST", rf"/repos/{REPO}/issues/7/comments")) == 1
    assert len(server.calls("PATCH", rf"/repos/{REPO}/issues/comments/\d+")) == 1
    ours = [c for c in server.repos[REPO].comments if pr_report.MARKER in c["body"]]
    assert len(ours) == 1
    assert len(server.repos[REPO].comments) == 2  # the reviewer's comment is untouched
    body = ours[0]["body"]
    assert "❌ 2 failing, ✅ 1 passing" in body
    for heading in (
        "#### Validation",
        "#### Conversion and parity",
        "#### Metrics",
        "#### Benchmark",
        "**Regression against the deployed version**",
    ):
        assert heading in body
    assert "```mermaid\nxychart-beta" in body
    assert "Summarised" not in body


def test_many_models_are_summarised_under_the_comment_limit(
    stage_docs: dict[str, Any], github: Any, tmp_path: Path
) -> None:
    server, _ = github
    _write_models(tmp_path, stage_docs, 150, failing_every=10)
    full = pr_report.render(pr_report.gather(tmp_path))
    assert len(full) > pr_report.COMMENT_LIMIT  # the test is about summarising

    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 0

    (comment,) = [c for c in server.repos[REPO].comments if pr_report.MARKER in c["body"]]
    body = comment["body"]
    assert len(body) <= pr_report.COMMENT_LIMIT
    assert "Summarised to fit GitHub's comment limit" in body
    for i in range(150):  # every model keeps its row in the table
        assert f"`model-{i:04d}`" in body
    # the failing ones keep their details; failing models come first
    assert body.count("<details open>") == 15
    assert body.index("`model-0000`") < body.index("`model-0001`")


def test_thousands_of_models_still_fit_by_listing_what_fits(
    stage_docs: dict[str, Any], tmp_path: Path
) -> None:
    _write_models(tmp_path, stage_docs, 1200)
    reports = pr_report.gather(tmp_path)
    body = pr_report.render(reports, limit=pr_report.COMMENT_LIMIT, details_url="http://run/1")

    assert len(body) <= pr_report.COMMENT_LIMIT
    assert "more models not listed here" in body
    assert "[the workflow run](http://run/1)" in body


def test_fork_pull_request_report_is_prepared_then_posted_by_workflow_run(
    stage_docs: dict[str, Any], github: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, pull = github
    reports = tmp_path / "reports"
    _write_models(reports, stage_docs, 2)
    # a fork's GITHUB_TOKEN is read-only: GitHub answers 403 to the comment
    server.fail(
        rf"/repos/{REPO}/issues/7/comments",
        403,
        times=None,
        method="POST",
        body={"message": "Resource not accessible by integration"},
    )

    assert cli.main(["report", "--dir", str(reports), "--pr", "7", "--post"]) == 0

    prepared = reports / pr_report.PREPARED_FILE
    doc = json.loads(prepared.read_text())
    assert doc["pr"] == 7 and pr_report.MARKER in doc["body"]
    assert _comments(server) == []

    server.faults.clear()
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"workflow_run": {"head_sha": "0" * 40}}))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    # a report claiming a pull request whose head is not the triggering run's is refused
    assert cli.main(["report", "--post-prepared", str(prepared)]) == 1
    assert _comments(server) == []

    event.write_text(json.dumps({"workflow_run": {"head_sha": pull.head_sha}}))
    assert cli.main(["report", "--post-prepared", str(prepared)]) == 0
    (comment,) = _comments(server)
    assert comment["body"] == doc["body"]


def test_report_without_stage_files_is_a_usage_error(tmp_path: Path) -> None:
    assert cli.main(["report", "--dir", str(tmp_path)]) == 2


def test_chart_has_native_onnx_and_baseline_bars() -> None:
    chart = pr_report.mermaid_chart(
        'say "hi"',
        [
            {"engine": "onnx", "batch_size": 1, "p50_ms": 0.2},
            {"engine": "native", "batch_size": 1, "p50_ms": 1.5},
            {"engine": "baseline", "batch_size": 1, "p50_ms": 0.25},
            {"engine": "onnx", "batch_size": 64, "p50_ms": float(np.float64(2.0))},
        ],
    )
    assert chart is not None
    assert 'x-axis ["native ×1", "ONNX ×1", "baseline ×1", "ONNX ×64"]' in chart
    # rows/s at the median: batch size / p50
    assert "bar [667, 5000, 4000, 32000]" in chart
    assert "title \"say 'hi': throughput" in chart


def test_on_a_runner_failing_checks_become_annotations_and_the_summary_gets_the_report(
    stage_docs: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reports = tmp_path / "reports"
    _write_models(reports, stage_docs, 2, failing_every=2)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    assert cli.main(["report", "--dir", str(reports)]) == 0

    annotations = [line for line in capsys.readouterr().out.splitlines() if line.startswith("::")]
    assert annotations == [
        "::error file=models/model-0000/model.yaml,title=model-0000 1.0.0%3A test failed::"
        "metric accuracy: 0.71 outside ≥ 0.8 (169 rows)"
    ]
    text = summary.read_text()
    assert text.startswith(pr_report.MARKER) and "❌ 1 failing, ✅ 1 passing" in text
