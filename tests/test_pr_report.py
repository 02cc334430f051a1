"""The model report and its sticky pull-request comment: created once and edited in place, only
ever our own; summarised under GitHub's limit; the fork path (results prepared, rendered again
and posted by a workflow_run job); charts and numbers a reviewer can read; and text from a pull
request that never becomes a workflow command, HTML, a mention or a marker."""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from sklearn import datasets
from sklearn.ensemble import RandomForestClassifier

from mlops_ci import bench, cli, convert, evaluate, manifest
from mlops_ci.report import annotate, charts, comment, escape, markdown, results, units
from tests.ghserver import GitHubServer
from tests.stage_models import make_repo
from tests.system import CHROMIUM, CHROMIUM_ARGS, require

REPO = "acme/models"
MARKER = escape.MARKER
HOSTILE_CASE = "row 0\n::error::pwned"
HOSTILE_TEXT = "<img src=x onerror=alert(1)> @acme/everyone <!-- mlops-ci:report --> | x"


def workflow_commands(text: str) -> list[str]:
    """The lines the Actions runner would run as workflow commands: it reads stdout and stderr
    line by line (CR or LF) and takes a line that starts with `::name` after leading spaces."""
    return [
        line
        for line in re.split(r"\r\n|\r|\n", text)
        if re.match(r"::[A-Za-z-]+( [^:]*)?::", line.lstrip())
    ]


@pytest.fixture(scope="module")
def stage_docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Real convert, test and bench documents of a breast-cancer forest: a passing model, the
    same with a failing metric, and a model whose parity fails (tolerance 0)."""
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
        "line": 31,
    }

    strict = make_repo(root, "strict", model, X[400:], y[400:])
    doc = yaml.safe_load(strict.manifest.read_text())
    doc["spec"]["conversion"] = {"parity": {"atol": 0, "rtol": 0}}
    strict.manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    parity_failed = convert.run(manifest.load(strict.manifest), root / "strict-out").to_json()
    return {
        "test": passing_test,
        "bench": passing_bench,
        "failing_test": failing_test,
        "convert": converted,
        "parity_failed": parity_failed,
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
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    try:
        yield server, pull
    finally:
        server.stop()


def _comments(server: GitHubServer) -> list[dict[str, Any]]:
    return list(server.dump_state()["repos"][REPO]["comments"])


def _plant(server: GitHubServer, login: str, body: str, user_type: str = "User") -> dict[str, Any]:
    return server.repos[REPO].add_comment(7, login, body, user_type)


# --- the sticky comment -------------------------------------------------------------------------


def test_comment_is_created_once_then_edited_in_place(
    stage_docs: dict[str, Any], github: Any, tmp_path: Path
) -> None:
    server, _ = github
    _write_models(tmp_path, stage_docs, 3, failing_every=2)
    _plant(server, "dave", "LGTM")

    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 0
    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 0

    assert len(server.calls("POST", rf"/repos/{REPO}/issues/7/comments")) == 1
    assert len(server.calls("PATCH", rf"/repos/{REPO}/issues/comments/\d+")) == 1
    ours = [c for c in _comments(server) if MARKER in c["body"]]
    assert len(ours) == 1 and ours[0]["user"]["login"] == "github-actions[bot]"
    assert len(_comments(server)) == 2  # the reviewer's comment is untouched
    body = ours[0]["body"]
    assert "**3 models changed: ❌ 2 failing, ✅ 1 passing**" in body
    for heading in (
        "#### Validation",
        "#### Conversion and parity",
        "#### Metrics",
        "#### Benchmark",
        "**Against the deployed version**",
    ):
        assert heading in body
    assert body.count("```mermaid") == 3 * 2 and "xychart-beta" in body
    assert "Summarised" not in body


def test_a_marker_planted_in_someone_elses_comment_is_never_edited(
    stage_docs: dict[str, Any], github: Any, tmp_path: Path
) -> None:
    server, _ = github
    _write_models(tmp_path, stage_docs, 1)
    planted = _plant(server, "mallory", f"{MARKER}\nmy words, posted as the report's")
    # armed: a search by marker alone finds mallory's comment first and would edit it
    assert next(c for c in _comments(server) if MARKER in c["body"]) is planted

    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 0
    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 0

    assert planted["body"] == f"{MARKER}\nmy words, posted as the report's"
    ours = [c for c in _comments(server) if c["user"]["login"] == "github-actions[bot]"]
    assert len(ours) == 1 and ours[0]["body"].startswith(MARKER)
    assert len(server.calls("PATCH", rf"/repos/{REPO}/issues/comments/{planted['id']}")) == 0


def test_a_user_token_finds_its_own_comment_through_get_user(
    stage_docs: dict[str, Any], github: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = github
    server.token_logins["pat-of-mlops-bot"] = "mlops-bot"
    monkeypatch.setenv("GITHUB_TOKEN", "pat-of-mlops-bot")
    _write_models(tmp_path, stage_docs, 1)
    # the Actions bot's comment holds the marker, but this token is mlops-bot's
    bots = _plant(server, "github-actions[bot]", f"{MARKER}\nold", "Bot")

    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 0
    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 0

    assert bots["body"] == f"{MARKER}\nold"
    ours = [c for c in _comments(server) if c["user"]["login"] == "mlops-bot"]
    assert len(ours) == 1
    assert len(server.calls("GET", "/user")) == 2  # once per run


def test_an_app_token_names_its_author_and_edits_only_that_comment(
    stage_docs: dict[str, Any], github: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = github
    monkeypatch.setenv("MLOPS_CI_COMMENT_AUTHOR", "acme-ci[bot]")
    _write_models(tmp_path, stage_docs, 1)
    theirs = _plant(server, "github-actions[bot]", f"{MARKER}\nanother workflow's", "Bot")
    ours = _plant(server, "acme-ci[bot]", f"{MARKER}\nold", "Bot")

    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 0

    assert theirs["body"] == f"{MARKER}\nanother workflow's"
    assert ours["body"].startswith(MARKER) and "#### Benchmark" in ours["body"]
    assert server.calls("GET", "/user") == []


def test_a_403_on_editing_our_comment_is_an_error_not_the_fork_path(
    stage_docs: dict[str, Any], github: Any, tmp_path: Path
) -> None:
    server, _ = github
    _write_models(tmp_path, stage_docs, 1)
    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 0
    server.fail(
        r"/repos/.+/issues/comments/\d+",
        403,
        times=None,
        method="PATCH",
        body={"message": "Resource not accessible by integration"},
    )

    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 2
    assert not (tmp_path / comment.PREPARED_FILE).exists()


def test_many_models_are_summarised_under_the_comment_limit(
    stage_docs: dict[str, Any], github: Any, tmp_path: Path
) -> None:
    server, _ = github
    _write_models(tmp_path, stage_docs, 150, failing_every=10)
    full = markdown.render(results.gather(tmp_path))
    assert len(full) > comment.COMMENT_LIMIT  # the test is about summarising

    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 0

    (posted,) = [c for c in _comments(server) if MARKER in c["body"]]
    body = posted["body"]
    assert len(body) <= comment.COMMENT_LIMIT
    assert "Summarised to fit GitHub's comment limit" in body
    for i in range(150):  # every model keeps its row in the table
        assert f"<code>model-{i:04d}</code>" in body
    # the failing ones keep their details; failing models come first
    assert body.count("<details open>") == 15
    assert body.index("<code>model-0000</code>") < body.index("<code>model-0001</code>")


def test_thousands_of_models_still_fit_by_listing_what_fits(
    stage_docs: dict[str, Any], tmp_path: Path
) -> None:
    _write_models(tmp_path, stage_docs, 1200)
    body = markdown.render(
        results.gather(tmp_path), limit=comment.COMMENT_LIMIT, details_url="http://run/1"
    )

    assert len(body) <= comment.COMMENT_LIMIT
    assert "more models not listed here" in body
    assert "[the workflow run](http://run/1)" in body


def test_the_job_summary_fits_githubs_limit_in_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runner drops a step's summary over 1 MiB whole, and counts bytes: a report of
    Japanese case names and messages is three bytes a character."""
    detail = "予測値が期待値と一致しません" * 14
    for i in range(30):
        checks = [
            {"kind": "case", "name": f"ケース {k}", "status": "fail", "detail": detail}
            for k in range(120)
        ]
        doc = {"model": f"m{i:02d}", "version": "1.0.0", "passed": False, "checks": checks}
        (tmp_path / f"m{i:02d}").mkdir()
        (tmp_path / f"m{i:02d}" / "test.json").write_text(json.dumps(doc), encoding="utf-8")
    # armed: in characters the whole report is under the limit, in bytes twice over it
    full = markdown.render(results.gather(tmp_path))
    assert len(full) < comment.SUMMARY_LIMIT < 2 * 2**20 < len(full.encode())
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    assert cli.main(["report", "--dir", str(tmp_path)]) == 0

    written = summary.read_bytes()
    assert len(written) <= comment.SUMMARY_LIMIT < 2**20
    assert "Summarised" in written.decode() and "<code>m29</code>" in written.decode()
    capsys.readouterr()


def test_a_run_of_an_older_commit_does_not_replace_the_newer_commits_report(
    stage_docs: dict[str, Any], github: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-run of the run for an older head (or one a newer push did not cancel) edited the
    sticky comment with its older report."""
    server, pull = github
    _write_models(tmp_path / "reports", stage_docs, 1)
    event = tmp_path / "event.json"
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    argv = ["report", "--dir", str(tmp_path / "reports"), "--pr", "7", "--post"]
    event.write_text(json.dumps({"pull_request": {"number": 7, "head": {"sha": "0" * 40}}}))
    assert cli.main(argv) == 0
    assert _comments(server) == []
    event.write_text(json.dumps({"pull_request": {"number": 7, "head": {"sha": pull.head_sha}}}))
    assert cli.main(argv) == 0
    assert [MARKER in c["body"] for c in _comments(server)] == [True]


def test_fork_pull_request_results_are_prepared_then_rendered_and_posted_by_workflow_run(
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

    prepared = reports / comment.PREPARED_FILE
    doc = json.loads(prepared.read_text())
    assert doc["pr"] == 7 and len(doc["models"]) == 2
    assert _comments(server) == []

    # the fork's run wrote the file: a body of its own choosing is not what gets posted
    doc["body"] = f"{MARKER}\n@acme/everyone <img src=x>"
    doc["models"][0]["test"]["model"] = "@acme/everyone <img src=x>"
    prepared.write_text(json.dumps(doc))

    server.faults.clear()
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"workflow_run": {"head_sha": "0" * 40}}))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    # a report claiming a pull request whose head is not the triggering run's is refused
    assert cli.main(["report", "--post-prepared", str(prepared)]) == 1
    assert _comments(server) == []

    event.write_text(json.dumps({"workflow_run": {"head_sha": pull.head_sha}}))
    assert cli.main(["report", "--post-prepared", str(prepared)]) == 0
    (posted,) = _comments(server)
    body = posted["body"]
    assert body.startswith(MARKER) and "#### Benchmark" in body and "model-0001" in body
    assert "@acme" not in body and "<img" not in body
    assert "&#64;\u200bacme/everyone &lt;img src=x&gt;" in body


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--post needs the pull request: --pr N"),  # and no pull_request event
        (["--pr", "7"], "GITHUB_TOKEN is not set"),
    ],
)
def test_post_without_where_to_post_fails_before_printing_anything(
    argv: list[str],
    message: str,
    stage_docs: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("GITHUB_EVENT_PATH", "GITHUB_STEP_SUMMARY", "GITHUB_TOKEN", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    _write_models(tmp_path, stage_docs, 2)
    saved = tmp_path / "report.md"
    code = cli.main(["report", "--dir", str(tmp_path), "--post", *argv, "--out", str(saved)])
    out, err = capsys.readouterr()
    assert code == 2 and message in err, err
    assert out == "" and not saved.exists()


def test_report_without_stage_files_is_a_usage_error(tmp_path: Path) -> None:
    assert cli.main(["report", "--dir", str(tmp_path)]) == 2


# --- reading at a glance ------------------------------------------------------------------------


def test_numbers_have_one_unit_each_and_read_formatted() -> None:
    assert units.rows_per_second(2011630) == "2.0 M rows/s"
    assert units.rows_per_second(45_300) == "45.3 k rows/s"
    assert units.rows_per_second(812.4) == "812 rows/s"
    assert units.microseconds(0.00487) == "4.87 µs"
    assert units.microseconds(0.0487) == "48.7 µs"
    assert units.microseconds(1.2345) == "1,234 µs"
    assert units.microseconds(None) == "–"


def test_speedup_chart_is_onnx_throughput_over_native_per_batch_size() -> None:
    chart = charts.speedup(
        [
            {"engine": "onnx", "batch_size": 1, "throughput": 20_000.0},
            {"engine": "native", "batch_size": 1, "throughput": 500.0},
            {"engine": "onnx", "batch_size": 64, "throughput": 800_000.0},
            {"engine": "native", "batch_size": 64, "throughput": 400_000.0},
            {"engine": "baseline", "batch_size": 1, "throughput": None},
        ]
    )
    assert chart is not None
    assert 'x-axis ["batch 1: ×40", "batch 64: ×2"]' in chart
    assert "bar [40, 2]" in chart  # ×40 at batch 1, ×2 at batch 64
    assert "line [1, 1]" in chart  # where ONNX and native are equal
    assert charts.speedup([{"engine": "onnx", "batch_size": 1, "throughput": 9.0}]) is None


def test_latency_chart_puts_batch_1_beside_the_deployed_version() -> None:
    chart = charts.latency_beside_deployed(
        [
            {"batch_size": 32, "baseline_p50_ms": 1.0, "candidate_p50_ms": 1.1},
            {"batch_size": 1, "baseline_p50_ms": 0.0482, "candidate_p50_ms": 0.0603},
        ]
    )
    assert chart is not None
    assert "p50 latency at batch 1 (µs, lower is better)" in chart
    assert 'x-axis ["deployed: 48.2 µs", "this change: 60.3 µs"]' in chart
    assert "bar [48.2, 60.3]" in chart
    assert charts.latency_beside_deployed([]) is None


def test_bench_table_uses_the_one_throughput_definition(
    stage_docs: dict[str, Any], tmp_path: Path
) -> None:
    _write_models(tmp_path, stage_docs, 1)
    body = markdown.render(results.gather(tmp_path))
    onnx_1 = next(
        m
        for m in stage_docs["bench"]["measurements"]
        if m["engine"] == "onnx" and m["batch_size"] == 1
    )
    assert units.rows_per_second(onnx_1["throughput"]) in body
    assert units.microseconds(onnx_1["p50_ms"]) in body
    assert "Throughput: batch size ÷ mean latency of one call." in body
    assert " ms |" not in body and "p50 ms" not in body


def test_parity_failure_shows_tolerance_outputs_and_worst_rows_once(
    stage_docs: dict[str, Any], tmp_path: Path
) -> None:
    failed = stage_docs["parity_failed"]
    assert failed["parity"]["status"] == "failed"  # tolerance 0: float32 ONNX cannot match
    test = copy.deepcopy(stage_docs["test"])
    for check in test["checks"]:
        if check["kind"] == "parity":
            check.update(status="fail", passed=False, detail="parity failed")
    report = results.ModelReport.from_docs(convert=failed, test=test)

    body = markdown.render([report])

    assert "**parity failed** on" in body
    assert "Tolerance: |native − ONNX| ≤ 0 + 0 × |native|" in body
    assert "| ❌ | <code>probabilities</code> |" in body
    assert "Worst rows:" in body
    worst = failed["parity"]["worst_rows"][0]
    assert f"{worst['native'][0]:.9g}" in body or f"{worst['native']:.9g}" in body
    assert body.count("parity failed") == 1  # not again under Tests
    own = sum(c["kind"] != "parity" and c["status"] == "pass" for c in test["checks"])
    assert f"| ✅ {own} |" in body  # the Tests cell counts cases, data and metrics, not parity


def test_a_model_given_as_onnx_has_nothing_to_compare(stage_docs: dict[str, Any]) -> None:
    given = copy.deepcopy(stage_docs["convert"])
    given["model"]["framework"] = "onnx"
    body = markdown.render([results.ModelReport.from_docs(convert=given)])
    assert "given as ONNX, nothing to compare" in body
    assert "max |Δ| 0" not in body


def test_summary_uses_code_elements_and_the_table_has_a_legend(
    stage_docs: dict[str, Any], tmp_path: Path
) -> None:
    _write_models(tmp_path, stage_docs, 1)
    body = markdown.render(results.gather(tmp_path))
    (summary,) = re.findall(r"<summary>.*</summary>", body)
    assert "`" not in summary
    assert "<code>models/model-0000/model.yaml</code>" in summary
    assert markdown.LEGEND in body and "not run" in markdown.LEGEND


def test_local_runs_do_not_say_models_changed(stage_docs: dict[str, Any], tmp_path: Path) -> None:
    _write_models(tmp_path, stage_docs, 2, failing_every=2)
    reports = results.gather(tmp_path)
    assert "**2 models changed:" in markdown.render(reports)
    local = markdown.render(reports, context="local")
    assert "**2 models: ❌ 1 failing, ✅ 1 passing**" in local
    assert "changed" not in local


def test_on_a_runner_failing_checks_become_annotations_on_their_manifest_line(
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
        "::error file=models/model-0000/model.yaml,line=31,title=model-0000 1.0.0%3A test failed::"
        "metric accuracy: 0.71 outside ≥ 0.8 (169 rows)"
    ]
    text = summary.read_text()
    assert text.startswith(MARKER) and "❌ 1 failing, ✅ 1 passing" in text


# --- text from the pull request -----------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real model whose failing test case is named to print a workflow command."""
    X, y = datasets.load_iris(return_X_y=True)
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    wrong = int((model.predict(X[:1])[0] + 1) % 3)
    return make_repo(
        tmp_path_factory.mktemp("hostile"),
        "iris",
        model,
        X,
        y,
        tests={
            "cases": [
                {
                    "name": HOSTILE_CASE,
                    "input": {f"f{i}": float(v) for i, v in enumerate(X[0])},
                    "expect": {"label": wrong},
                }
            ]
        },
    )


def test_a_case_name_holding_a_workflow_command_prints_none(
    hostile: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # armed: printed as it comes, the name starts a line the runner runs as a command
    print(f"FAIL  case {HOSTILE_CASE}: expected 1")
    assert workflow_commands(capsys.readouterr().out) == ["::error::pwned: expected 1"]

    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    out = tmp_path / "out"
    assert (
        cli.main(["test", str(hostile.manifest), "--onnx", str(hostile.onnx), "--out", str(out)])
        == 1
    )
    printed = capsys.readouterr()
    assert "FAIL  case    row 0\\n::error::pwned: " in printed.out  # reported on one line
    assert workflow_commands(printed.out + printed.err) == []  # ... and runs nothing

    assert cli.main(["report", "--dir", str(out)]) == 0
    printed = capsys.readouterr()
    commands = workflow_commands(printed.out + printed.err)
    # the one annotation of the failing case, its name escaped inside the message
    assert len(commands) == 1 and commands[0].startswith("::error file=")
    assert "%0A::error::pwned" in commands[0]
    text = hostile.manifest.read_text().splitlines()
    cases = text.index("  tests:") + 2  # `cases:` then the first item
    assert text[cases - 1].strip() == "cases:" and text[cases].strip().startswith("- name:")
    assert f",line={cases + 1}," in commands[0]


def test_no_printed_line_becomes_a_workflow_command_but_annotations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlops_ci import gha

    hostile = "x\n::error::pwned\r  ::add-mask::y\n##[error]legacy"
    # armed: printed as it is, each line is a command the runner runs
    print(hostile)
    print(":", end="", flush=True)
    print(":warning::split across writes")
    assert len(workflow_commands(capsys.readouterr().out)) == 3

    with gha.guarded_output():
        print(hostile)
        print(hostile, file=sys.stderr)
        print(":", end="", flush=True)
        print(":warning::split across writes")
        gha.annotation("error", "the real one", file="models/a/model.yaml", line=3)
    printed = capsys.readouterr()
    assert workflow_commands(printed.out + printed.err) == [
        "::error file=models/a/model.yaml,line=3::the real one"
    ]
    assert "##[error]" not in printed.out + printed.err
    assert "::error::pwned" in printed.out.replace("\u200b", "")  # still readable


def test_text_from_the_pull_request_has_no_effect_in_the_comment(
    stage_docs: dict[str, Any], github: Any, tmp_path: Path
) -> None:
    server, _ = github
    _write_models(tmp_path, stage_docs, 1)
    test_doc = json.loads((tmp_path / "model-0000" / "test.json").read_text())
    test_doc["checks"][0].update(name=HOSTILE_TEXT, detail="a\n## heading\r\n::error::x")
    test_doc["checks"][0]["status"] = "fail"
    (tmp_path / "model-0000" / "test.json").write_text(json.dumps(test_doc))
    # armed: pasted as it is, the text would be HTML, a team mention and a second marker
    naive = f"| {HOSTILE_TEXT} |"
    assert "<img" in naive and "@acme/everyone" in naive and naive.count(MARKER) == 1

    assert cli.main(["report", "--dir", str(tmp_path), "--pr", "7", "--post"]) == 0

    (posted,) = _comments(server)
    body = posted["body"]
    assert body.count(MARKER) == 1 and body.startswith(MARKER)
    assert "<img" not in body and "@acme" not in body and "<!-- mlops" not in body[1:]
    assert "&lt;img src=x onerror=alert(1)&gt; &#64;\u200bacme/everyone" in body
    row = next(line for line in body.splitlines() if "onerror" in line)
    assert row.count("|") == 4  # still one row of three cells
    assert "a&#92;n&#35;&#35; heading&#92;r&#92;n::error::x" in row  # shows as a\n## heading…
    assert "\n## heading" not in body


# --- rendered as GitHub renders it --------------------------------------------------------------

RENDER = Path(__file__).parent / "render"
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><style>
body { font: 14px -apple-system, "Segoe UI", sans-serif; max-width: 900px; margin: 16px; }
table { border-collapse: collapse; } td, th { border: 1px solid #d0d7de; padding: 4px 10px; }
</style></head><body><article id="md"></article>
<script src="MARKED"></script><script src="MERMAID"></script>
<script>
document.getElementById("md").innerHTML = marked.parse(SOURCE, { gfm: true });
// GitHub draws ```mermaid fences as diagrams, with Mermaid in strict mode
for (const code of document.querySelectorAll("code.language-mermaid")) {
  const pre = document.createElement("pre");
  pre.className = "mermaid";
  pre.textContent = code.textContent;
  code.parentElement.replaceWith(pre);
}
mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
mermaid.run({ querySelector: "pre.mermaid" })
  .then(() => { window.rendered = "ok"; })
  .catch((e) => { window.rendered = "error: " + e; });
</script></body></html>
"""


def render_in_chromium(source: str, folder: Path) -> dict[str, Any]:
    """Render Markdown with GFM and its Mermaid blocks in headless Chromium (Debian's: nothing
    downloads a browser); the screenshot is `folder/report.png`."""
    from playwright.sync_api import sync_playwright

    marked = RENDER / "node_modules" / "marked" / "lib" / "marked.umd.js"
    mermaid = RENDER / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"
    require(CHROMIUM.exists(), "Debian's chromium")
    require(marked.is_file() and mermaid.is_file(), "tests/render's npm packages (`npm ci`)")
    page_file = folder / "report.html"
    page_file.write_text(
        PAGE.replace("MARKED", marked.as_uri())
        .replace("MERMAID", mermaid.as_uri())
        .replace("SOURCE", json.dumps(source)),
        encoding="utf-8",
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 960, "height": 800})
            page.goto(page_file.as_uri())
            page.wait_for_function("window.rendered !== undefined", timeout=30_000)
            found = page.evaluate(
                """() => ({
                  rendered: window.rendered,
                  charts: [...document.querySelectorAll("pre.mermaid svg")].map((svg) => ({
                    text: [...svg.querySelectorAll("text")].map((t) => t.textContent).join(" "),
                    bars: svg.querySelectorAll("g.bar-plot-0 rect").length,
                    heights: [...svg.querySelectorAll("g.bar-plot-0 rect")].map(
                      (r) => r.getBBox().height),
                    lines: svg.querySelectorAll("g[class^=line-plot] path").length,
                  })),
                  errors: document.querySelectorAll(".error-icon, .error-text").length,
                  images: document.querySelectorAll("article img").length,
                  text: document.getElementById("md").innerText,
                })"""
            )
            page.screenshot(path=str(folder / "report.png"), full_page=True)
        finally:
            browser.close()
    return found


def test_report_renders_with_readable_charts_in_a_browser(
    stage_docs: dict[str, Any], tmp_path: Path
) -> None:
    folder = tmp_path / "reports"
    _write_models(folder, stage_docs, 1, failing_every=1)  # failing: its details are open
    test_doc = json.loads((folder / "model-0000" / "test.json").read_text())
    test_doc["checks"][0]["name"] = HOSTILE_TEXT
    (folder / "model-0000" / "test.json").write_text(json.dumps(test_doc))
    source = markdown.render(results.gather(folder))
    assert source.count("```mermaid") == 2
    # armed: the same name pasted into a table as it is becomes an element of the page
    naive = render_in_chromium(f"| Metric |\n|---|\n| {HOSTILE_TEXT} |\n", tmp_path)
    assert naive["images"] == 1

    found = render_in_chromium(source, tmp_path)

    assert found["rendered"] == "ok" and found["errors"] == 0, found
    speedup, latency = found["charts"]
    sizes = stage_docs["bench"]["settings"]["batch_sizes"]
    assert "ONNX speed-up over native" in speedup["text"]
    assert speedup["bars"] == len(sizes)
    assert "p50 latency at batch 1" in latency["text"] and latency["bars"] == 2
    assert all(h > 5 for h in latency["heights"])  # both bars visible, neither flattened
    assert found["images"] == 0  # the hostile name's <img> stayed text
    # shown as typed, but for the zero-width space that keeps GitHub from reading a mention
    assert "<img src=x onerror=alert(1)> @\u200bacme/everyone" in found["text"]


def test_a_forged_regression_verdict_is_shown_inert() -> None:
    """bench.json comes from the pull request's run (a fork writes its own): its verdict must not
    ping a team, plant the comment marker, add links or HTML in the comment the base posts."""
    from mlops_ci.report.markdown import regression_text

    evil = "@acme/admins <!-- mlops-ci:report --> [click](http://e) <img src=x>"
    shown = regression_text({"verdict": evil, "batch_size": 1}, markdown=True)
    assert "@acme" not in shown and "<!--" not in shown and "<img" not in shown
    assert "[click]" not in shown and "&#64;\u200bacme/admins" in shown


class _GitHubText(HTMLParser):
    """What GitHub looks at after its Markdown renderer: links, images, and the text nodes
    outside `<code>`, `<pre>` and `<a>`, where it finds @mentions (on the decoded text)."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.links: list[str] = []
        self.images = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs).get("href") or "")
        self.images += tag == "img"
        if tag not in ("br", "img", "hr"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.open:
            del self.open[len(self.open) - 1 - self.open[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        if not {"code", "pre", "a"} & set(self.open):
            self.text.append(data)

    def mentions(self) -> list[str]:
        # GitHub's mention pattern: `@login` or `@org/team` after a non-word character
        return re.findall(r"(?:^|\W)@([a-z0-9][a-z0-9-]*(?:/[a-z0-9][a-z0-9_.-]*)?)",
                          "".join(self.text), re.I)  # fmt: skip


def github_sees(source: str) -> _GitHubText:
    """`source` rendered by cmark-gfm, GitHub's own Markdown library, and read as GitHub's
    mention and link filters read the result."""
    import cmarkgfm  # the dev extra's; GitHub renders comments with cmark-gfm
    from cmarkgfm.cmark import Options

    seen = _GitHubText()
    seen.feed(cmarkgfm.github_flavored_markdown_to_html(source, options=Options.CMARK_OPT_UNSAFE))
    return seen


def test_no_mention_or_link_survives_githubs_renderer() -> None:
    """An entity is decoded before GitHub looks for mentions and e-mail links in the text; a URL
    is linked wherever it stands, in `<code>` too. Neither may come from a pull request."""
    evil = (
        "ask @acme/everyone or x@evil.example at https://evil.example/fix, "
        "www.evil.example, ftp://evil.example or mailto:y@evil.example"
    )
    # armed: the entity alone still pings the team and links the addresses
    entity_only = github_sees(f"| {evil.replace('@', '&#64;')} |\n|---|\n| x |")
    assert "acme/everyone" in entity_only.mentions()
    assert any("evil.example" in href for href in entity_only.links)

    report = "\n".join(
        [
            "| Check | Result |",
            "|---|---|",
            f"| {escape.code(evil)} | {escape.cell(evil)} |",
            "",
            f"- {escape.cell(evil)}",
            f"<details><summary>{escape.code(evil)}</summary>",
            "",
            "</details>",
        ]
    )
    seen = github_sees(report)
    assert seen.links == [] and seen.images == 0 and seen.mentions() == []
    shown = "".join(seen.text).replace("\u200b", "")
    assert "ask @acme/everyone or x@evil.example at https://evil.example/fix" in shown


def test_stage_documents_with_non_objects_in_their_lists_still_render() -> None:
    from mlops_ci.report import markdown
    from mlops_ci.report.results import validate_status

    bench = {"measurements": ["x", 3], "budgets": ["x"], "regression": ["x"]}
    assert markdown._bench_cell(bench) == "✅"
    assert markdown._regression_cell(bench) == markdown._ICON[None]
    assert validate_status({"manifests": ["x"]}) == "fail"


_PREPARED = {
    "name": "m",
    "validate": {"manifests": [{"path": "m.yaml", "valid": False, "errors": [{"line": 3}]}]},
    "convert": {
        "model": {"name": "m", "version": "1.0.0", "framework": "sklearn"},
        "onnx": {"converter": "skl2onnx", "opset": 17, "checker": "passed"},
        "signature": {"problems": ["p"]},
        "parity": {
            "status": "failed",
            "tolerances": {"atol": 1e-5, "rtol": 1e-4, "min_label_agreement": 0.99},
            "outputs": [{"name": "label", "max_abs_diff": 0.1, "label_agreement": 0.9}],
            "worst_rows": [{"row": 1, "output": "label", "native": [1.0], "onnx": [1.1]}],
        },
    },
    "test": {
        "model": "m",
        "version": "1.0.0",
        "manifest": "m.yaml",
        "checks": [
            {"kind": "case", "name": "c", "status": "fail", "detail": "d", "line": 4},
            {"kind": "metric", "name": "accuracy", "status": "fail", "value": 0.5, "min": 0.8},
        ],
    },
    "bench": {
        "measurements": [
            {"engine": "onnx", "batch_size": 1, "p50_ms": 0.1, "throughput": 1e4},
            {"engine": "native", "batch_size": 1, "p50_ms": 1, "throughput": 1e3},
        ],
        "budgets": [{"batch_size": 1, "metric": "p99_ms", "value": 0.3, "limit": 0.2}],
        "regression": [{"batch_size": 1, "verdict": "regression", "ci_low": 1.5, "ratio": 2.0}],
        "notes": ["regression not measured: x"],
        "machine": {"cpu": "x", "usable_cores": 2, "onnxruntime": "1"},
        "settings": {"intra_op_threads": 1},
    },
    "baseline": {"version": "0.9", "results": {"test": {"checks": [{
        "kind": "metric", "name": "accuracy", "value": 0.6}]}}},
}  # fmt: skip


def _paths(doc: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if at:
        yield at
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in items:
        yield from _paths(value, (*at, key))


def test_a_prepared_report_of_any_shape_renders_and_never_crashes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr-comment.json comes from a fork's run, which writes what it likes: every value of
    every stage document replaced by another JSON type (an integer beyond any float too) still
    renders, and annotates, instead of an internal error in the base repository's job."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    odd: list[Any] = [None, 7, "x", [], {}, [1], ["x"], [{}], 10**400, float("nan"), True]
    tried = 0
    for path in _paths(_PREPARED):
        for value in odd:
            doc = copy.deepcopy(_PREPARED)
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = value
            try:
                report = results.ModelReport.from_prepared(doc)
            except ValueError:
                continue  # refused whole, with a message (a stage that is not an object)
            body = markdown.render([report], limit=comment.COMMENT_LIMIT)
            annotate.models([report])
            assert body.startswith(MARKER), (path, value)
            tried += 1
    assert tried > 500
    capsys.readouterr()
