"""`mlops-ci monitor` end to end: a registry holding a real ONNX model, its deployed manifest and
a prediction log written by serve's own PredictionLog (so a change in serve's format breaks
these tests); a checkout with the reference data; the GitHub test server for the issues. Exit
codes, JSON, verdict files and issues are what is asserted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from served_log import log_served

from mlops_ci import cli
from mlops_ci.manifest import parse_document
from mlops_ci.monitor import render
from mlops_ci.registry import open_registry

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
FEATURES = ("x1", "x2", "x3")
REPO = "acme/models"


@pytest.fixture(scope="module")
def onnx_model() -> bytes:
    """A logistic regression on three features, label and probabilities outputs."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = LogisticRegression().fit(x, y)
    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, 3]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    return onx.SerializeToString()


def _csv(x: np.ndarray, y: np.ndarray | None = None) -> bytes:
    lines = [",".join(FEATURES) + (",y" if y is not None else "")]
    for i, row in enumerate(x):
        cells = [f"{v:.6f}" for v in row] + ([str(int(y[i]))] if y is not None else [])
        lines.append(",".join(cells))
    return ("\n".join(lines) + "\n").encode()


def _manifest(name: str, ref_sha: str, monitoring: str) -> str:
    return f"""apiVersion: mlops-ci/v1
kind: Model
metadata:
  name: {name}
  version: 1.2.0
  owners: ["@acme/risk-ml", "@alice"]
  risk: low
spec:
  framework: onnx
  task: classification
  artifact:
    path: model.onnx
    sha256: {"ab" * 32}
  signature:
    inputs:
      - {{name: input, dtype: float32, shape: [-1, 3], columns: [x1, x2, x3]}}
    outputs:
      - {{name: label, dtype: int64, shape: [-1], role: label}}
      - {{name: probabilities, dtype: float32, shape: [-1, 2], role: probabilities}}
  evaluation:
    data: {{path: reference.csv, sha256: "{ref_sha}"}}
    target: y
  tests:
    metrics:
      - {{metric: accuracy, min: 0.9}}
  monitoring:
{monitoring}
      reference:
        path: reference.csv
        sha256: "{ref_sha}"
"""


@dataclass
class World:
    registry: Path | str  # a folder, or an s3:// URI
    repo: Path
    onnx: bytes
    reference: np.ndarray

    def deploy(
        self,
        name: str,
        *,
        age_days: float = 10,
        monitoring: str = "    max_age_days: 365\n    drift:",
    ) -> None:
        ref_bytes = _csv(self.reference, (self.reference[:, 0] + self.reference[:, 1] > 0))
        ref_sha = hashlib.sha256(ref_bytes).hexdigest()
        text = _manifest(name, ref_sha, monitoring)
        doc, problems, _ = parse_document(text, "model.yaml")
        assert doc is not None and not problems, problems
        folder = self.repo / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.yaml").write_text(text)
        (folder / "reference.csv").write_bytes(ref_bytes)
        reg = open_registry(self.registry)
        reg.write_bytes(
            f"{name}/config.pbtxt",
            f'name: "{name}"\nplatform: "onnxruntime_onnx"\n'
            "version_policy: { specific: { versions: [1] } }\n".encode(),
        )
        release = {
            "model": name,
            "version": "1.2.0",
            "registry_version": 1,
            "time": (NOW - dt.timedelta(days=age_days)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "onnx": {"sha256": hashlib.sha256(self.onnx).hexdigest()},
            "source": "local",
        }
        reg.write_bytes(f"{name}/1/release.json", json.dumps(release).encode())
        reg.write_bytes(f"{name}/1/model.yaml", text.encode())
        reg.write_bytes(f"{name}/1/model.onnx", self.onnx)

    def log(
        self,
        name: str,
        x: np.ndarray,
        *,
        day: dt.date | None = None,
        prefix: str = "r",
        version: int | None = None,
        batch: int = 10,
    ) -> list[str]:
        """Requests served and logged as `mlops-ci serve` does it (tests/served_log.py), at
        01:00 UTC on `day` (NOW's date by default). Returns the request id of each row."""
        return log_served(
            self.registry,
            name,
            x,
            day=day or NOW.date(),
            prefix=prefix,
            version=version,
            batch=batch,
        )

    def monitor(self, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        from mlops_ci.monitor import command

        argv = ["monitor", "--registry", str(self.registry), "--repo", str(self.repo), *args]
        parser = cli.build_parser()
        ns = parser.parse_args(argv)
        try:
            code = command.main(
                ns.registry,
                repo=ns.repo,
                since=ns.since,
                data=ns.data,
                labels=ns.labels,
                models=ns.model,
                fmt=ns.format,
                issues=ns.issues,
                record=not ns.no_record,
                now=NOW,
            )
        except Exception as exc:  # as cli.main reports it
            from mlops_ci.errors import MlopsCiError

            if not isinstance(exc, MlopsCiError):
                raise
            print(f"mlops-ci monitor: error: {exc}", file=__import__("sys").stderr)
            code = exc.exit_code
        out = capsys.readouterr()
        return code, out.out, out.err


@pytest.fixture
def world(tmp_path: Path, onnx_model: bytes) -> World:
    rng = np.random.default_rng(1)
    return World(tmp_path / "registry", tmp_path / "repo", onnx_model, rng.normal(size=(800, 3)))


def _fresh(n: int, shift: tuple[float, float, float] = (0, 0, 0), seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) + np.array(shift)


def _verdicts(registry: Path, model: str) -> list[Path]:
    return sorted((registry / ".mlops" / "monitor" / model).glob("*.json"))


# --- verdicts -------------------------------------------------------------------------------------


def test_healthy_model_exits_0_and_records_its_verdict(world, capsys):
    world.deploy("fraud")
    world.log("fraud", _fresh(3000))
    code, out, _ = world.monitor("--format", "json", capsys=capsys)
    assert code == 0, out
    doc = json.loads(out)
    (m,) = doc["models"]
    assert {
        "name",
        "version",
        "needs_attention",
        "stale",
        "drift",
        "prediction_drift",
        "decay",
    } <= set(m)
    assert (m["name"], m["version"], m["needs_attention"]) == ("fraud", "1.2.0", False)
    assert m["drift"]["rows"] == 3000 and not m["drift"]["dataset_drift"]
    assert {c["name"] for c in m["drift"]["columns"]} == set(FEATURES)
    assert all(
        {"name", "test", "statistic", "threshold", "drifted"} <= set(c)
        for c in m["drift"]["columns"]
    )
    assert {c["test"] for c in m["drift"]["columns"]} == {"ks"}  # 800 reference rows
    (recorded,) = _verdicts(world.registry, "fraud")
    assert json.loads(recorded.read_text())["name"] == "fraud"


def test_drifted_inputs_and_predictions_need_attention(world, capsys):
    world.deploy("fraud")
    world.log("fraud", _fresh(3000, shift=(1.0, 1.0, 0)))
    code, out, _ = world.monitor("--format", "json", capsys=capsys)
    assert code == 1
    (m,) = json.loads(out)["models"]
    assert m["needs_attention"] and m["drift"]["dataset_drift"]
    assert [c["name"] for c in m["drift"]["columns"] if c["drifted"]] == ["x1", "x2"]
    assert m["prediction_drift"] is True
    drifted_outputs = {c["name"] for c in m["predictions"]["columns"] if c["drifted"]}
    assert "output.label" in drifted_outputs
    assert any("data drift: 2 of 3 columns" in r for r in m["reasons"])


def test_the_text_summary_counts_models_in_plain_english(world, capsys):
    world.deploy("fraud")
    world.log("fraud", _fresh(300))
    code, out, _ = world.monitor("--no-record", capsys=capsys)
    assert code == 0 and out.splitlines()[-1] == "0 of 1 model needs attention", out
    for name in ("churn", "loans"):  # past their max_age_days: stale
        world.deploy(name, age_days=400)
        world.log(name, _fresh(300))
    code, out, _ = world.monitor("--no-record", capsys=capsys)
    assert code == 1 and out.splitlines()[-1] == "2 of 3 models need attention", out
    code, out, _ = world.monitor("--no-record", "--model", "churn", capsys=capsys)
    assert out.splitlines()[-1] == "1 of 1 model needs attention", out


def _mirrored(n: int, seed: int = 3) -> np.ndarray:
    """Each input N(0, 1) as in the reference, but x2 now mirrors x1 (correlation -0.98): no
    column drifted, yet x1 + x2, what the model looks at, shrinks to a seventh of its spread, so
    its probabilities bunch around 0.5."""
    rng = np.random.default_rng(seed)
    x1, z, x3 = rng.normal(size=(3, n))
    x2 = -0.98 * x1 + np.sqrt(1 - 0.98**2) * z
    return np.stack([x1, x2, x3], axis=1)


def test_prediction_drift_alone_needs_attention(world, ghserver, capsys, monkeypatch):
    ghserver.add_repo(REPO)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    world.deploy("fraud")
    world.log("fraud", _mirrored(3000))
    code, out, _ = world.monitor("--format", "json", "--issues", capsys=capsys)
    (m,) = json.loads(out)["models"]
    # Nothing else is wrong: fresh, no labels, and not one input column drifted.
    assert not m["stale"] and m["decay"] is False and m["drift"]["rows"] == 3000
    assert [c["name"] for c in m["drift"]["columns"] if c["drifted"]] == []
    # The outputs did drift, and that alone needs attention.
    drifted = [c["name"] for c in m["predictions"]["columns"] if c["drifted"]]
    assert drifted == ["output.probabilities[0]", "output.probabilities[1]"], m["predictions"]
    assert m["prediction_drift"] is True and m["needs_attention"] is True
    assert code == 1
    assert m["reasons"] == ["prediction drift: output.probabilities[0], output.probabilities[1]"]
    (issue,) = _issues(ghserver).values()
    assert issue["state"] == "open" and issue["labels"] == ["mlops-ci/monitor"]
    verdicts = issue["body"].split("### Verdicts\n\n", 1)[1].split("\n\n", 1)[0]
    assert verdicts == (
        "- ❌ prediction drift: output.probabilities&#91;0&#93;, output.probabilities&#91;1&#93;"
    )


def test_only_the_serving_versions_rows_are_judged(world, capsys):
    """Right after a deploy (or a rollback) the week's log still holds another version's rows:
    mixed in, they would read as drift of the version that serves."""
    world.deploy("fraud")  # version 1 serves
    world.log("fraud", _fresh(3000))
    world.log("fraud", _fresh(3000, shift=(1.0, 1.0, 0)), prefix="v2-", version=2)
    code, out, _ = world.monitor("--format", "json", capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert code == 0 and not m["needs_attention"], out
    assert m["drift"]["rows"] == 3000


def test_one_drifted_column_is_a_warning_not_an_alarm(world, capsys):
    world.deploy("fraud")
    world.log("fraud", _fresh(3000, shift=(0, 0, 1.0)))  # x3 is not a model input that matters
    code, out, _ = world.monitor("--format", "json", capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert code == 0 and not m["needs_attention"]
    assert [c["name"] for c in m["drift"]["columns"] if c["drifted"]] == ["x3"]
    assert any("below the dataset share" in w for w in m["warnings"])


def test_prediction_log_is_streamed_from_every_registry_backend(
    registry_uri, tmp_path, onnx_model, capsys
):
    """The same run on a folder, SeaweedFS and moto's S3: pyarrow reads the log from the store."""
    world = World(registry_uri, tmp_path / "repo", onnx_model, _fresh(800, seed=1))
    world.deploy("fraud")
    world.log("fraud", _fresh(3000, shift=(1, 1, 0)))
    code, out, _ = world.monitor("--format", "json", capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert code == 1 and m["drift"]["rows"] == 3000 and m["drift"]["dataset_drift"]
    keys = open_registry(registry_uri).list_keys(".mlops/monitor/fraud")
    assert len(keys) == 1 and keys[0].endswith("Z.json")


def test_old_rows_outside_since_are_not_read(world, capsys):
    world.deploy("fraud")
    world.log(
        "fraud", _fresh(3000, shift=(2, 2, 2)), day=NOW.date() - dt.timedelta(days=30), prefix="old"
    )
    world.log("fraud", _fresh(2000), prefix="new")
    code, out, _ = world.monitor("--format", "json", "--since", "7d", capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert code == 0 and m["drift"]["rows"] == 2000
    code, out, _ = world.monitor("--format", "json", "--since", "60d", capsys=capsys)
    assert code == 1 and json.loads(out)["models"][0]["drift"]["rows"] == 5000


def test_data_flag_reads_a_csv_file(world, capsys, tmp_path):
    world.deploy("fraud")
    path = tmp_path / "prod.csv"
    path.write_bytes(_csv(_fresh(2000, shift=(0.8, 0.8, 0.8))))
    code, out, _ = world.monitor("--format", "json", "--data", str(path), capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert code == 1 and m["drift"]["rows"] == 2000 and m["source"] == str(path)
    assert m["predictions"] is None  # a CSV of inputs has no outputs to compare
    # a CSV without an input column: one line, the model named once (the line adds its name)
    path.write_bytes(b"x1,x2\n1,2\n")
    code, out, _ = world.monitor("--data", str(path), capsys=capsys)
    assert code == 2
    (line,) = [ln for ln in out.splitlines() if ln.startswith("ERROR")]
    assert line == f"ERROR      fraud: the production data ({path}) has no column 'x3'"


def test_staleness_past_due_warning_and_fresh(world, capsys):
    world.deploy("old", age_days=100, monitoring="    max_age_days: 90\n    drift:")
    world.deploy("soon", age_days=70, monitoring="    max_age_days: 90\n    drift:")
    world.deploy("new", age_days=10, monitoring="    max_age_days: 90\n    drift:")
    code, out, _ = world.monitor("--format", "json", capsys=capsys)
    models = {m["name"]: m for m in json.loads(out)["models"]}
    assert code == 1
    assert {n: m["staleness"]["status"] for n, m in models.items()} == {
        "old": "stale",
        "soon": "warning",
        "new": "fresh",
    }
    assert [n for n, m in models.items() if m["needs_attention"]] == ["old"]
    assert models["old"]["staleness"]["days_left"] == pytest.approx(-10)


def test_labelled_production_accuracy_below_threshold_is_decay(world, capsys, tmp_path):
    world.deploy("fraud", monitoring="    max_age_days: 365\n    labels: labels.csv\n    drift:")
    x = _fresh(600)
    ids = world.log("fraud", x)
    truth = (x[:, 0] + x[:, 1] > 0).astype(int)
    truth[:200] = 1 - truth[:200]  # a third of the world changed its mind: accuracy ~0.67
    labels = "request_id,y\n" + "".join(
        f"{i},{t}\n" for i, t in zip(ids[:500], truth[:500], strict=True)
    )
    (world.repo / "models" / "fraud" / "labels.csv").write_text(labels)
    code, out, _ = world.monitor("--format", "json", capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert code == 1 and m["decay"] is True and not m["drift"]["dataset_drift"]
    perf = m["performance"]
    assert perf["rows"] == 500
    (acc,) = perf["metrics"]
    assert acc["name"] == "accuracy" and not acc["ok"] and 0.55 < acc["value"] < 0.75
    # Right labels: no decay.
    good = "request_id,y\n" + "".join(
        f"{i},{t}\n" for i, t in zip(ids, (x[:, 0] + x[:, 1] > 0).astype(int), strict=True)
    )
    (world.repo / "models" / "fraud" / "labels.csv").write_text(good)
    code, out, _ = world.monitor("--format", "json", capsys=capsys)
    assert code == 0 and json.loads(out)["models"][0]["performance"]["rows"] == 600


def test_reference_that_is_not_the_deployed_one_is_refused(world, capsys):
    world.deploy("fraud")
    (world.repo / "models" / "fraud" / "reference.csv").write_bytes(
        _csv(_fresh(800, shift=(3, 3, 3)))
    )
    code, out, err = world.monitor(capsys=capsys)
    assert code == 2
    assert "reference data" in out and "is not the deployed manifest's" in out
    assert "Traceback" not in out + err
    assert _verdicts(world.registry, "fraud") == [] or code == 2


def test_bad_since_or_registry_is_a_usage_error(world, capsys):
    world.deploy("fraud")
    assert cli.main(["monitor", "--registry", str(world.registry), "--since", "7 days"]) == 2
    assert "--since" in capsys.readouterr().err
    assert cli.main(["monitor", "--registry", str(world.registry), "--since", "0d"]) == 2
    assert "--since '0d': the duration must be more than zero" in capsys.readouterr().err
    assert cli.main(["monitor", "--registry", str(world.registry), "--since", "9" * 15 + "d"]) == 2
    assert "the window would start before the year 1" in capsys.readouterr().err  # not Overflow
    missing = str(world.registry) + "-missing"
    assert cli.main(["monitor", "--registry", missing]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_data_and_labels_paths_on_the_command_line_are_relative_to_the_current_folder(
    world, capsys, tmp_path, monkeypatch
):
    # A manifest's own paths are relative to the manifest; a path typed on the command line is
    # relative to where it was typed (it was read from the manifest's folder instead).
    world.deploy("fraud")
    here = tmp_path / "here"
    here.mkdir()
    (here / "prod.csv").write_bytes(_csv(_fresh(2000, shift=(0.8, 0.8, 0.8))))
    monkeypatch.chdir(here)
    code, out, err = world.monitor("--format", "json", "--data", "prod.csv", capsys=capsys)
    assert code == 1, out + err
    (m,) = json.loads(out)["models"]
    assert m["drift"]["rows"] == 2000 and m["source"] == str(here / "prod.csv")


def test_a_missing_repo_is_one_usage_error_not_one_per_model(world, capsys, tmp_path):
    world.deploy("fraud")
    world.deploy("churn")
    argv = ["monitor", "--registry", str(world.registry), "--repo", str(tmp_path / "nope")]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("no such folder") == 1, (out, err)


def test_an_empty_registry_says_there_is_nothing_to_judge(tmp_path, capsys):
    (tmp_path / "registry").mkdir()
    assert cli.main(["monitor", "--registry", str(tmp_path / "registry"), "--repo", "."]) == 0
    assert "no model is deployed in" in capsys.readouterr().err


# --- issues ---------------------------------------------------------------------------------------


def _issues(ghserver):
    return ghserver.repos[REPO].issues


def _marker(model: str, world: World) -> str:
    from mlops_ci.monitor import issues

    return issues.marker(model, open_registry(world.registry).uri)


def test_issue_is_opened_then_edited_in_place_then_closed(world, ghserver, capsys, monkeypatch):
    ghserver.add_repo(REPO)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    world.deploy("fraud")
    ids = world.log("fraud", _fresh(3000, shift=(1, 1, 0)), prefix="a")
    assert ids

    code, _, _ = world.monitor("--issues", capsys=capsys)
    assert code == 1
    (issue,) = _issues(ghserver).values()
    assert issue["state"] == "open" and issue["labels"] == ["mlops-ci/monitor"]
    body = issue["body"]
    assert _marker("fraud", world) in body
    assert "@acme/risk-ml @alice" in body
    assert "| <code>x1</code> | ks |" in body and "```mermaid" in body
    assert "registry version 1" in body
    assert len(ghserver.calls("POST", r"/repos/acme/models/issues")) == 1

    # Second run: the same issue, edited (PATCH), no new one.
    code, _, _ = world.monitor("--issues", capsys=capsys)
    assert code == 1
    assert len(_issues(ghserver)) == 1
    assert len(ghserver.calls("POST", r"/repos/acme/models/issues")) == 1
    assert len(ghserver.calls("PATCH", rf"/repos/acme/models/issues/{issue['number']}")) == 1

    # Healthy again: a comment, then closed as completed.
    root = world.registry / ".mlops" / "predictions" / "fraud"
    for f in root.rglob("*.parquet"):
        f.unlink()
    world.log("fraud", _fresh(3000), prefix="b")
    code, _, _ = world.monitor("--issues", capsys=capsys)
    assert code == 0
    assert issue["state"] == "closed" and issue["state_reason"] == "completed"
    (comment,) = ghserver.repos[REPO].comments
    assert comment["_issue"] == issue["number"] and "healthy again" in comment["body"]
    # And a fourth run does nothing to the closed issue.
    world.monitor("--issues", capsys=capsys)
    assert len(ghserver.repos[REPO].comments) == 1 and len(_issues(ghserver)) == 1


def test_one_run_lists_the_open_monitor_issues_once_for_all_models(
    world, ghserver, capsys, monkeypatch
):
    """Listing the issues once a model cost M × ⌈K/100⌉ requests a run (and rate limit)."""
    repo = ghserver.add_repo(REPO)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)

    def labelled(number: int, model: str) -> dict:
        return {
            "number": number,
            "title": f"mlops-ci monitor: {model} needs attention",
            "body": f"<!-- mlops-ci:monitor:{model} -->",
            "labels": ["mlops-ci/monitor"],
            "state": "open",
            "user": ghserver.user_json("github-actions[bot]", "Bot"),
        }

    # 150 open issues of retired models (two pages), churn's and credit's the oldest two.
    repo.issues[1] = labelled(1, "churn")
    repo.issues[2] = labelled(2, "credit")
    for number in range(3, 153):
        repo.issues[number] = labelled(number, f"retired-{number}")
    for name in ("fraud", "churn", "credit"):
        world.deploy(name)
    world.log("fraud", _fresh(3000, shift=(1, 1, 0)))
    world.log("churn", _fresh(3000, shift=(1, 1, 0)))
    world.log("credit", _fresh(3000))

    code, _, err = world.monitor("--issues", capsys=capsys)
    assert code == 1, err
    listings = ghserver.calls("GET", r"/repos/acme/models/issues")
    assert [(r.query["labels"], r.query["page"]) for r in listings] == [
        (["mlops-ci/monitor"], ["1"]),
        (["mlops-ci/monitor"], ["2"]),
    ]
    # And each model still found its own: fraud's opened, churn's edited, credit's closed.
    assert [(i["number"], i["state"]) for i in repo.issues.values() if i["number"] < 3] == [
        (1, "open"),
        (2, "closed"),
    ]
    assert len(ghserver.calls("PATCH", r"/repos/acme/models/issues/1")) == 1
    assert repo.issues[153]["body"].startswith(_marker("fraud", world))
    # churn's issue, opened before markers named the registry, was adopted: now it names it.
    assert repo.issues[1]["body"].startswith(_marker("churn", world))
    assert len(repo.issues) == 153


def test_issues_without_a_repository_says_which_variable_to_set(world, capsys, monkeypatch):
    # monitor's --repo is the checkout: the hint must not send the user to `--repo owner/name`.
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    world.deploy("fraud")
    code, _, err = world.monitor("--issues", capsys=capsys)
    assert code == 2
    assert "GITHUB_REPOSITORY" in err and "--repo owner/name" not in err


def test_github_failing_for_good_exits_2_and_writes_nothing(world, ghserver, capsys, monkeypatch):
    ghserver.add_repo(REPO)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("MLOPS_CI_GITHUB_RETRIES", "2")
    ghserver.fail(r"/repos/acme/models/issues", 502, times=None)
    world.deploy("fraud")
    world.log("fraud", _fresh(3000, shift=(1, 1, 0)))
    code, _, err = world.monitor("--issues", capsys=capsys)
    assert code == 2
    assert "GitHub" in err and "Traceback" not in err
    assert _issues(ghserver) == {}
    assert _verdicts(world.registry, "fraud") == []  # the run recorded nothing half-way
    assert len(ghserver.calls("GET", r"/repos/acme/models/issues")) == 3  # tried, then retried


def test_someone_elses_issue_with_the_marker_is_not_taken_over(
    world, ghserver, capsys, monkeypatch
):
    repo = ghserver.add_repo(REPO)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    # An unlabelled issue quoting the marker (anyone can open one): the naive marker search
    # would edit it, publishing the model's report under that author's thread.
    repo.issues[1] = {
        "number": 1,
        "title": "pls",
        "body": "<!-- mlops-ci:monitor:fraud --> hi",
        "labels": [],
        "state": "open",
        "user": ghserver.user_json("mallory"),
    }
    world.deploy("fraud")
    world.log("fraud", _fresh(3000, shift=(1, 1, 0)))
    world.monitor("--issues", capsys=capsys)
    assert repo.issues[1]["body"] == "<!-- mlops-ci:monitor:fraud --> hi"
    assert len(repo.issues) == 2 and repo.issues[2]["labels"] == ["mlops-ci/monitor"]


def test_a_staging_and_a_production_registry_keep_their_own_issues(
    world, ghserver, capsys, monkeypatch
):
    """The reusable workflow called twice from one repository, once per registry: the marker
    named the model alone, so staging's healthy run closed production's alarm as "healthy
    again", and a drifted staging run edited production's issue into its own."""
    import dataclasses

    repo = ghserver.add_repo(REPO)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    staging = dataclasses.replace(world, registry=Path(world.registry).parent / "staging")
    for w in (world, staging):
        w.deploy("fraud")
    world.log("fraud", _fresh(3000, shift=(1, 1, 0)))
    staging.log("fraud", _fresh(3000))

    assert world.monitor("--issues", capsys=capsys)[0] == 1
    (prod,) = repo.issues.values()
    assert staging.monitor("--issues", capsys=capsys)[0] == 0
    assert prod["state"] == "open" and repo.comments == []  # staging's health is not production's
    assert prod["title"].endswith("/registry")  # where staging's and production's differ
    from mlops_ci.report import escape

    assert f"Registry: {escape.code(open_registry(world.registry).uri)}" in prod["body"]

    # Staging drifts too: its own issue, and production's is left as it was.
    staging.log("fraud", _fresh(3000, shift=(1, 1, 0)), prefix="s")
    before = prod["body"]
    assert staging.monitor("--issues", capsys=capsys)[0] == 1
    assert len(repo.issues) == 2 and prod["body"] == before
    (stage,) = [i for i in repo.issues.values() if i is not prod]
    assert stage["body"].startswith(_marker("fraud", staging))
    assert stage["title"].endswith("/staging")
    # And a second production run edits its own issue, no other.
    assert world.monitor("--issues", capsys=capsys)[0] == 1
    patched = {r.path for r in ghserver.calls("PATCH", r"/repos/acme/models/issues/\d+")}
    assert patched == {f"/repos/acme/models/issues/{prod['number']}"}


def test_an_issue_github_opened_without_its_label_stops_the_run(
    world, ghserver, capsys, monkeypatch
):
    """A token that cannot label: GitHub opens the issue and silently drops the label. Runs list
    the labelled issues, so every run opened one more, for good and without a word."""
    repo = ghserver.add_repo(REPO)
    repo.drop_labels = True
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    world.deploy("fraud")
    world.log("fraud", _fresh(3000, shift=(1, 1, 0)))
    for run in (1, 2):
        code, _, err = world.monitor("--issues", capsys=capsys)
        assert code == 2, err
        assert f"opened issue #{run} for fraud without its label mlops-ci/monitor" in err
        assert "Traceback" not in err
    # Each was closed again (nothing piles up open), and the runs recorded nothing.
    assert [(i["state"], i["state_reason"]) for i in repo.issues.values()] == [
        ("closed", "not_planned")
    ] * 2
    assert _verdicts(world.registry, "fraud") == []


def test_an_issue_closed_as_not_planned_is_respected_until_the_model_relapses(
    world, ghserver, capsys, monkeypatch
):
    """A person closed the alarm as "not planned" while the model kept drifting: the next run
    opened a fresh issue, and closing that one got another the day after."""
    repo = ghserver.add_repo(REPO)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    world.deploy("fraud")
    world.log("fraud", _fresh(3000, shift=(1, 1, 0)), day=NOW.date() - dt.timedelta(days=10))

    def run(*args: str) -> tuple[int, str]:  # (every run writes NOW's verdict file anew)
        code, _, err = world.monitor("--issues", *args, capsys=capsys)
        return code, err

    assert run("--since", "30d")[0] == 1
    (issue,) = repo.issues.values()
    issue.update(state="closed", state_reason="not_planned")
    left_closed = f"issue #{issue['number']} left closed (a person closed it as not planned): fraud"
    # Still drifted; then a run with no row in its window; then drifted again: nothing new.
    for since, expected in (("30d", 1), ("7d", 0), ("30d", 1)):
        code, err = run("--since", since)
        assert code == expected and left_closed in err and len(repo.issues) == 1, (since, err)
    # A new reason (the model is now stale too) is news: one new issue.
    world.deploy("fraud", age_days=400)
    assert run("--since", "30d")[0] == 1
    assert [i["state"] for i in repo.issues.values()] == ["closed", "open"]
    # A healthy run closes it; a relapse after that opens one more.
    world.deploy("fraud")
    for f in (world.registry / ".mlops" / "predictions" / "fraud").rglob("*.parquet"):
        f.unlink()
    world.log("fraud", _fresh(3000), prefix="b")
    assert run()[0] == 0 and [i["state"] for i in repo.issues.values()] == ["closed"] * 2
    world.log("fraud", _fresh(6000, shift=(2, 2, 0)), prefix="c")
    assert run()[0] == 1
    assert [i["state"] for i in repo.issues.values()] == ["closed", "closed", "open"]


def test_production_values_in_the_issue_cannot_mention_or_inject():
    from mlops_ci.monitor.drift import ColumnDrift

    evil = "@acme/everyone <img src=x> `` [x](http://e)"
    col = ColumnDrift(
        "k",
        "categorical",
        "chisquare",
        "p_value",
        0.001,
        30.0,
        0.05,
        True,
        0.0,
        100,
        100,
        0,
        (evil, "b"),
        (0.1, 0.9),
        (0.9, 0.1),
    )
    naive = f"| {col.bins[0]} |"
    assert "@acme/everyone" in naive and "<img" in naive  # a live mention, live HTML
    shown = render._summary(col)
    assert shown.startswith(
        "<code>&#64;\u200bacme/everyone &lt;img src=x&gt; &#96;&#96; &#91;x&#93;"
    )
    assert "@" not in shown and "<img" not in shown and "`" not in shown and "[x]" not in shown
    assert "@" not in render._label(evil) and "<" in render._label("<1")  # chart labels


def test_issue_body_stays_within_githubs_limit():
    from mlops_ci.monitor import staleness
    from mlops_ci.monitor.check import Verdict
    from mlops_ci.monitor.drift import ColumnDrift, DriftResult

    cols = tuple(
        ColumnDrift(
            f"feature_{i:05d}_" + "x" * 60,
            "numeric",
            "ks",
            "p_value",
            0.5,
            0.01,
            0.05,
            False,
            0.0,
            100,
            100,
            0,
            ("a",),
            (1.0,),
            (1.0,),
        )
        for i in range(3000)
    )
    result = DriftResult(cols, 0.0, 0.5, False, "none", 100)
    stale = staleness.judge(NOW, refresh_by=None, max_age_days=1, now=NOW + dt.timedelta(days=2))
    v = Verdict("m", "1.0.0", 1, ("@a",), stale, result, result, None, "x")
    body = render.issue_body(v, "<!-- m -->")
    assert len(body) <= 65536
    # whole rows are left out, and said so; every section after the tables is still there
    shown = body.count("\n| <code>feature")
    left_out = int(re.search(r"_(\d+) table rows left out", body).group(1))  # type: ignore[union-attr]
    assert shown > 100 and shown + left_out == 2 * len(cols)
    assert "### Prediction drift" in body and "### What to do" in body
    assert all(line.endswith("|") for line in body.splitlines() if line.startswith("| <code>"))


def test_the_job_summary_of_ten_thousand_models_fits_the_runners_limit():
    """The runner drops a step's summary over 1 MiB whole. Ten thousand models (names may be
    63 characters) are over it: the ones that need someone are kept, the rest counted."""
    from mlops_ci.monitor import staleness
    from mlops_ci.monitor.check import Verdict
    from mlops_ci.monitor.drift import DriftResult

    fresh = staleness.judge(NOW, refresh_by=None, max_age_days=30, now=NOW)
    stale = staleness.judge(NOW, refresh_by=None, max_age_days=1, now=NOW + dt.timedelta(days=2))
    calm = DriftResult((), 0.0, 0.5, False, "none", 100)
    verdicts = [
        Verdict(f"m{i:05d}-" + "x" * 50, "1.0.0", 1, ("@a",), fresh, calm, None, None, "x")
        for i in range(10_000)
    ]
    verdicts.append(Verdict("z-stale", "2.0.0", 2, ("@a",), stale, calm, None, None, "x"))
    # armed: one row per model is more than the runner keeps
    row = render.summary(verdicts[:1]).splitlines()[-1]
    assert row.startswith("| <code>m00000") and len(row.encode()) * 10_000 > 2**20

    text = render.summary(verdicts, errors=[("z-broken", "no such column")])

    assert len(text.encode()) <= render.SUMMARY_BYTES < 2**20
    assert "<code>z-stale</code>" in text and "<code>z-broken</code>" in text
    shown = text.count("| <code>m")
    assert 8_000 < shown < 10_000
    assert f"… {10_000 - shown} more models not listed here" in text
    assert "not listed" not in render.summary(verdicts[:10])  # a small registry: every row


def test_a_one_wide_logged_output_keeps_the_name_its_reference_has():
    # serve logs a [-1, 1] output (a regressor's) as a fixed-size list of width 1; the
    # reference side (`_reference_outputs`) names such an output `output.<name>`, so the log
    # must too, else prediction drift fails with an internal KeyError on every regressor.
    from mlops_ci.monitor import drift
    from mlops_ci.monitor.check import expand_outputs

    values = np.arange(40, dtype=np.float32)
    logged = pa.FixedSizeListArray.from_arrays(pa.array(values), 1)
    batch = pa.RecordBatch.from_arrays([logged], names=["output.variable"])
    expanded = expand_outputs(batch)
    assert expanded.schema.names == ["output.variable"]
    reference = pa.table({"output.variable": pa.array(values)})
    columns = drift.Columns(reference, ["output.variable"], drift.Settings())
    columns.add(expanded)


def test_finding_a_models_manifest_parses_only_candidates(tmp_path, monkeypatch):
    # monitor looks each model's manifest up in the checkout: parsing every manifest for every
    # model made a run quadratic in the number of models (and endless from a wrong --repo).
    from mlops_ci.monitor import check

    for i in range(30):
        folder = tmp_path / f"model-{chr(97 + i % 26)}{i}"
        folder.mkdir()
        (folder / "model.yaml").write_text(
            f"apiVersion: mlops-ci/v1\nkind: Model\nmetadata:\n  name: fraud-{i}x\n",
            encoding="utf-8",
        )
    parsed: list[str] = []
    real = check.parse_document

    def counting(text, name, *args, **kwargs):
        parsed.append(name)
        return real(text, name, *args, **kwargs)

    monkeypatch.setattr(check, "parse_document", counting)
    walks: list[Path] = []
    real_find = check.find_manifests

    def counting_find(folder):
        walks.append(folder)
        return real_find(folder)

    monkeypatch.setattr(check, "find_manifests", counting_find)
    checkout = check.Checkout(tmp_path)
    found = checkout.manifest_of("fraud-7x")
    assert found is not None and found.parent.name == "model-h7"
    assert len(parsed) == 1
    # One monitor run looks up every deployed model in the same checkout: one walk, not one a
    # model (a registry of M models against N manifests read M × N files).
    assert [checkout.manifest_of(f"fraud-{i}x").parent.name for i in (3, 29)] == [  # type: ignore[union-attr]
        "model-d3",
        "model-d29",
    ]
    assert checkout.manifest_of("not-there") is None
    assert walks == [tmp_path]


def test_one_run_walks_the_checkout_once_for_all_models(world, capsys, monkeypatch):
    from mlops_ci.monitor import check

    for name in ("fraud", "churn", "credit"):
        world.deploy(name)
    walks: list[Path] = []
    real_find = check.find_manifests
    monkeypatch.setattr(
        check, "find_manifests", lambda folder: walks.append(folder) or real_find(folder)
    )
    code, out, err = world.monitor(capsys=capsys)
    assert code in (0, 1), err
    assert all(name in out for name in ("fraud", "churn", "credit"))
    assert len(walks) == 1


def test_each_reference_csv_is_read_once_a_run(world, capsys, monkeypatch):
    """The drift baseline and the model's reference outputs come from one read of the bytes
    whose digest was checked (reading twice cost a second read and hash a model a run)."""
    for name in ("fraud", "churn", "credit"):
        world.deploy(name)
        world.log(name, _fresh(1000))
    reads: list[Path] = []
    real = Path.read_bytes

    def counting(self: Path) -> bytes:
        if self.name == "reference.csv":
            reads.append(self)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    code, out, err = world.monitor("--format", "json", capsys=capsys)
    assert code == 0, out + err
    models = json.loads(out)["models"]
    # Both uses of the reference ran: input drift and the prediction baseline.
    assert all(m["drift"]["rows"] == 1000 and m["predictions"] for m in models)
    assert sorted(p.parent.name for p in reads) == ["churn", "credit", "fraud"]


def test_names_in_the_issues_verdict_lines_are_inert():
    """The verdict lines name drifted columns and outputs (from the manifest, the reference CSV
    and production data) and carry error notes: none may ping, link or inject HTML."""
    from mlops_ci.monitor import staleness
    from mlops_ci.monitor.check import Verdict
    from mlops_ci.monitor.drift import ColumnDrift, DriftResult

    evil = "@acme/everyone <img src=x> [click](http://e)"
    col = ColumnDrift(
        evil, "numeric", "ks", "p_value", 0.001, 0.5, 0.05, True, 0.0, 100, 100, 0,
        ("a",), (1.0,), (1.0,),
    )  # fmt: skip
    drifted = DriftResult((col, col), 1.0, 0.5, True, "none", 100)
    fresh = staleness.judge(NOW, refresh_by=None, max_age_days=30, now=NOW)
    v = Verdict("m", "1.0.0", 1, ("@a",), fresh, drifted, drifted, None, "x", notes=(evil,))
    body = render.issue_body(v, "<!-- m -->")
    verdicts = body.split("### Verdicts\n\n", 1)[1].split("\n\n", 1)[0]  # its list
    assert "prediction drift" in verdicts and "&#64;\u200bacme/everyone" in verdicts
    assert "@acme" not in verdicts and "<img" not in verdicts and "[click]" not in verdicts


# --- an unreadable prediction log -----------------------------------------------------------------


def _log_files(world: World, model: str) -> list[Path]:
    return sorted((Path(world.registry) / ".mlops" / "predictions" / model).rglob("*.parquet"))


def _rewrite_without(path: Path, column: str) -> None:
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(path).drop_columns([column]), path)


def _attention_issue(world: World, ghserver, capsys) -> dict:
    """fraud's monitor issue, opened by a run on drifted rows (which are then removed)."""
    world.log("fraud", _fresh(300, shift=(1, 1, 0)), prefix="d")
    code, _, err = world.monitor("--issues", "--no-record", capsys=capsys)
    assert code == 1, err
    for f in _log_files(world, "fraud"):
        f.unlink()
    (issue,) = _issues(ghserver).values()
    return issue


def _fails_closed(world: World, ghserver, capsys) -> str:
    """The run reports fraud's log in one line, exits 2, judges and records credit, and leaves
    fraud's open issue alone: the healthy rows it could read do not make the model healthy.
    Returns what the line says about fraud."""
    code, out, err = world.monitor("--issues", capsys=capsys)
    assert code == 2, out + err
    (line,) = [ln for ln in out.splitlines() if ln.startswith("ERROR")]
    assert line.startswith("ERROR      fraud: "), line
    assert "FieldRef" not in out + err and "Traceback" not in out + err
    assert "credit" in out and len(_verdicts(world.registry, "credit")) == 1
    assert _verdicts(world.registry, "fraud") == []
    (issue,) = _issues(ghserver).values()
    assert issue["state"] == "open" and ghserver.repos[REPO].comments == []
    return line.removeprefix("ERROR      fraud: ")


@pytest.mark.parametrize(
    ("column", "files"),
    [("model_version", "every"), ("time", "last"), ("x2", "last")],
)
def test_a_log_file_without_a_needed_column_is_named_with_the_column(
    world, ghserver, capsys, monkeypatch, column, files
):
    """A log written by another producer (or an older serve) without `model_version`, or one
    file of it without `time` or an input: pyarrow's own words were `No match for
    FieldRef.Name(model_version) in time: …` with exit 2; now the file and the column."""
    ghserver.add_repo(REPO)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    world.deploy("fraud")
    world.deploy("credit")
    world.log("credit", _fresh(300))
    issue = _attention_issue(world, ghserver, capsys)
    world.log("fraud", _fresh(300), prefix="a")
    world.log("fraud", _fresh(300, seed=4), prefix="b")
    logged = _log_files(world, "fraud")
    assert len(logged) == 2
    bad = logged if files == "every" else logged[-1:]
    for f in bad:
        _rewrite_without(f, column)
    shown = bad[0].relative_to(world.registry).as_posix()
    assert _fails_closed(world, ghserver, capsys) == f"{shown} has no column '{column}'"
    assert issue["state"] == "open"


@pytest.mark.parametrize("where", ["first", "last"])
def test_a_corrupt_parquet_file_among_good_ones_is_named(
    world, ghserver, capsys, monkeypatch, where
):
    """Not Parquet at all (sorted first: pyarrow reads its schema while finding the dataset),
    or truncated (sorted last: read while streaming): either way one line naming the file."""
    ghserver.add_repo(REPO)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    world.deploy("fraud")
    world.deploy("credit")
    world.log("credit", _fresh(300))
    _attention_issue(world, ghserver, capsys)
    world.log("fraud", _fresh(300), prefix="a")
    world.log("fraud", _fresh(300, seed=4), prefix="b")
    good = _log_files(world, "fraud")
    if where == "first":
        bad = good[0].with_name("part-0-notes.parquet")
        bad.write_bytes(b"request_id,x1\nr1,0.5\n")
    else:
        bad = good[-1].with_name(good[-1].name.replace("part-", "part-z"))
        data = good[-1].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    assert sorted([*good, bad])[0 if where == "first" else -1] == bad
    shown = bad.relative_to(world.registry).as_posix()
    said = _fails_closed(world, ghserver, capsys)
    assert said.startswith(f"{shown} is not a Parquet file, or is truncated ("), said
    assert str(world.registry) not in said  # the file as the registry names it, once


def test_a_corrupt_log_file_is_named_on_every_registry_backend(
    registry_uri, tmp_path, onnx_model, capsys
):
    """On S3 pyarrow names files `bucket/prefix/…`: the message names them as the registry does."""
    world = World(registry_uri, tmp_path / "repo", onnx_model, _fresh(800, seed=1))
    world.deploy("fraud")
    world.log("fraud", _fresh(300))
    reg = open_registry(registry_uri)
    (key,) = reg.list_keys(".mlops/predictions/fraud")
    bad = key.replace("/part-", "/part-z")
    reg.write_bytes(bad, (reg.read_bytes(key) or b"")[:500])
    code, out, err = world.monitor(capsys=capsys)
    assert code == 2, out + err
    assert f"ERROR      fraud: {bad} is not a Parquet file, or is truncated (Parquet magic" in out
    assert reg.list_keys(".mlops/monitor") == []


def test_monitor_json_says_null_where_a_statistic_is_not_a_number() -> None:
    """`monitor --format json` (and the verdict files) must parse with jq and JavaScript,
    which refuse Python's bare NaN."""
    import json

    from mlops_ci.monitor import render

    class Found:  # what render reads of a verdict
        def to_json(self) -> dict[str, object]:
            return {"name": "m", "drift": {"psi": float("nan"), "ks": float("inf")}}

    def refuse(word: str) -> None:
        raise ValueError(word)

    doc = json.loads(render.to_json([Found()]), parse_constant=refuse)  # type: ignore[list-item]
    assert doc["models"][0]["drift"] == {"psi": None, "ks": None}


# --- odd data, edges and windows ------------------------------------------------------------------


def test_an_empty_window_leaves_the_open_issue_open(world, ghserver, capsys, monkeypatch):
    """A week without a logged row (traffic stopped, or the log did) read as healthy: the run
    closed the drift issue with "healthy again" on the strength of zero rows."""
    ghserver.add_repo(REPO)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    world.deploy("fraud")
    world.log("fraud", _fresh(3000, shift=(1, 1, 0)), day=NOW.date() - dt.timedelta(days=10))
    code, _, err = world.monitor("--issues", "--since", "30d", capsys=capsys)
    assert code == 1, err
    (issue,) = _issues(ghserver).values()

    code, out, err = world.monitor("--issues", "--format", "json", capsys=capsys)  # 7d: no row
    (m,) = json.loads(out)["models"]
    assert code == 0 and m["drift"]["rows"] == 0
    note = "no production rows of version 1 in the last 7 days: drift is not checked"
    assert note in m["warnings"]
    assert issue["state"] == "open" and ghserver.repos[REPO].comments == []
    assert f"issue #{issue['number']} left open: fraud" in err

    world.log("fraud", _fresh(3000), prefix="b")  # rows again, healthy: now it closes
    code, _, _ = world.monitor("--issues", capsys=capsys)
    assert code == 0 and issue["state"] == "closed"


def test_rows_stamped_after_now_are_outside_the_window(world, capsys):
    """A server whose clock runs ahead logs into a future day folder: those rows sat in every
    run's window (and kept a model drifted) until their date came."""
    world.deploy("fraud")
    world.log("fraud", _fresh(2000))
    world.log("fraud", _fresh(3000, shift=(2, 2, 2)), day=NOW.date() + dt.timedelta(days=3),
              prefix="ahead")  # fmt: skip
    code, out, _ = world.monitor("--format", "json", capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert code == 0 and m["drift"]["rows"] == 2000, out
    # A window back to the year 657: its day folders compare as strings, "657-…" > "2026-…"
    code, out, _ = world.monitor("--format", "json", "--since", "500000d", capsys=capsys)
    assert json.loads(out)["models"][0]["drift"]["rows"] == 2000, out


def test_a_float32_input_of_a_few_decimal_values_is_not_drift(tmp_path, onnx_model, capsys):
    """Serve logs a float32 input as float32; the reference CSV reads as float64. 0.1 is not
    float32(0.1): each logged value fell beside its reference value, and the very same
    distribution drifted on every column (KS p = 1e-41), prediction drift too."""
    rng = np.random.default_rng(7)
    levels = np.array([0.1, 0.2, 0.3, 0.7, 1.3, 2.9])
    world = World(tmp_path / "registry", tmp_path / "repo", onnx_model,
                  rng.choice(levels, size=(800, 3)))  # fmt: skip
    world.deploy("fraud")
    world.log("fraud", rng.choice(levels, size=(3000, 3)))
    code, out, _ = world.monitor("--format", "json", capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert [c["drifted"] for c in m["drift"]["columns"]] == [False] * 3, m["drift"]
    assert code == 0 and not m["prediction_drift"], m["predictions"]
    # --data in float64 (a CSV) is read at the model's precision too
    path = tmp_path / "prod.csv"
    path.write_bytes(_csv(rng.choice(levels, size=(3000, 3))))
    code, out, _ = world.monitor("--format", "json", "--data", str(path), capsys=capsys)
    assert code == 0 and not json.loads(out)["models"][0]["drift"]["dataset_drift"], out


def test_a_production_column_with_no_value_is_drift(world, capsys, tmp_path):
    """x1 and x2 arrive empty (a producer stopped filling them): judged `no drift` (p = 1),
    so the model passed as healthy."""
    world.deploy("fraud")
    path = tmp_path / "prod.csv"
    x3 = _fresh(2000)[:, 2]
    path.write_text("x1,x2,x3\n" + "".join(f",,{v:.6f}\n" for v in x3))
    code, out, _ = world.monitor("--format", "json", "--data", str(path), capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert code == 1 and m["drift"]["dataset_drift"], out
    x1, x2, x3 = m["drift"]["columns"]
    assert (x1["drifted"], x1["statistic"], x1["missing_current"]) == (True, 0.0, 2000)
    assert x2["drifted"] and not x3["drifted"] and x1["test_statistic"] is None
    code, out, _ = world.monitor("--data", str(path), "--no-record", capsys=capsys)
    assert "x1: no values, all 2,000 missing" in out


def test_a_folder_of_csv_parts_with_sparks_marker_files_is_read_as_csv(world, capsys, tmp_path):
    """Spark writes `_SUCCESS` and `.part-….csv.crc` beside its CSV parts. The files the
    dataset skips still decided the format: the folder was read as Parquet and refused."""
    world.deploy("fraud")
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "part-00000.csv").write_bytes(_csv(_fresh(1000, shift=(0.8, 0.8, 0.8))))
    (folder / "part-00001.csv").write_bytes(_csv(_fresh(1000, shift=(0.8, 0.8, 0.8), seed=5)))
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-00000.csv.crc").write_bytes(b"crc\x00")
    code, out, err = world.monitor("--format", "json", "--data", str(folder), capsys=capsys)
    assert code == 1, out + err
    assert json.loads(out)["models"][0]["drift"]["rows"] == 2000


def test_text_in_a_numeric_production_column_is_one_clear_error(world, capsys, tmp_path):
    world.deploy("fraud")
    path = tmp_path / "prod.csv"
    path.write_text("x1,x2,x3\nabc,0.1,0.2\n0.5,0.3,0.4\n")
    code, out, err = world.monitor("--data", str(path), capsys=capsys)
    (line,) = [ln for ln in out.splitlines() if ln.startswith("ERROR")]
    assert code == 2 and "internal error" not in line and "Traceback" not in out + err
    assert line.startswith(
        f"ERROR      fraud: the production data ({path}): column 'x1' holds string values "
        "that are not numbers, where the reference has numbers (Failed to parse string: 'abc'"
    ), line


def test_production_csv_with_numeric_request_ids_and_one_output(world, capsys, tmp_path):
    """`--data` holds the inputs, the label output and request ids that pyarrow reads as
    int64: the run died on the ids (KeyError 0) and on the outputs the CSV lacks (KeyError
    `output.probabilities[0]`). And a `date` column of its own (so do the labels) clashed with
    the log's `date=` partition key (ArrowTypeError: date32 vs string)."""
    world.deploy("fraud", monitoring="    max_age_days: 365\n    labels: labels.csv\n    drift:")
    x = _fresh(200)
    label = (x[:, 0] + x[:, 1] > 0).astype(int)
    truth = label.copy()
    truth[:100] = 1 - truth[:100]  # half the labels disagree: accuracy 0.5
    (world.repo / "models" / "fraud" / "labels.csv").write_text(
        "date,request_id,y\n" + "".join(f"2026-11-29,{i},{t}\n" for i, t in enumerate(truth))
    )
    path = tmp_path / "prod.csv"
    path.write_text(
        "date,request_id,x1,x2,x3,output.label\n"
        + "".join(f"2026-11-28,{i},{a:.6f},{b:.6f},{c:.6f},{y}\n" for i, ((a, b, c), y) in
                  enumerate(zip(x, label, strict=True)))
    )  # fmt: skip
    code, out, err = world.monitor("--format", "json", "--data", str(path), capsys=capsys)
    assert code == 1, out + err
    (m,) = json.loads(out)["models"]
    assert m["decay"] is True and m["performance"]["rows"] == 200
    assert m["performance"]["metrics"][0]["value"] == pytest.approx(0.5)
    assert [c["name"] for c in m["predictions"]["columns"]] == ["output.label"]
    assert (
        "prediction drift of output.probabilities not checked: the production data has no "
        "such column"
    ) in m["warnings"]


@pytest.mark.parametrize(
    ("monitoring", "error"),
    [
        # the schema's date pattern lets it through; fromisoformat does not
        ("    refresh_by: '2026-02-30'\n    drift:", "monitoring.refresh_by '2026-02-30' is not"),
        # the schema sets no maximum; the deadline is past the year 9999
        ("    max_age_days: 100000000\n    drift:", None),
        (
            "    drift:\n      categorical: [x3]\n      per_column: {x3: {test: ks}}",
            "column 'x3' is categorical; Kolmogorov-Smirnov cannot test it",
        ),
        ("    drift:\n      per_column: {x1: {test: z}}", None),
        # YAML's .nan passes the schema's bounds, and then no column or share could ever drift
        ("    drift:\n      share: .nan", "monitoring.drift.share is nan, not a number"),
        (
            "    drift:\n      per_column: {x2: {threshold: .nan}}",
            "monitoring.drift.per_column.x2.threshold is nan, not a number",
        ),
    ],
    ids=[
        "impossible-date",
        "huge-max-age",
        "ks-on-categories",
        "z-on-many-values",
        "nan-share",
        "nan-threshold",
    ],
)
def test_a_deployed_manifest_monitor_cannot_follow_is_that_models_error(
    world, capsys, monitoring, error
):
    """Each of these ended the whole run with an internal error (ValueError, OverflowError):
    no model judged, no issue touched; or (NaN) passed and judged nothing ever drifted. Now
    the model's own ERROR line, or a verdict."""
    world.deploy("fraud", monitoring=monitoring)
    world.deploy("credit")
    for name in ("fraud", "credit"):
        world.log(name, _fresh(300))
    code, out, err = world.monitor("--no-record", capsys=capsys)
    assert "internal error" not in out + err and "Traceback" not in out + err
    assert "ok         credit" in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("ERROR")]
    if error is None:
        assert code == 0 and errors == [] and "ok         fraud" in out, out
    else:
        (line,) = errors
        assert code == 2 and line.startswith("ERROR      fraud: ") and error in line, line


def test_an_unexpected_failure_of_one_model_leaves_the_others_judged(world, capsys, monkeypatch):
    from mlops_ci.monitor import check

    world.deploy("fraud")
    world.deploy("credit")
    real = check.judge_model

    def judge(reg, model, opts):
        if model == "fraud":
            raise RuntimeError("boom")
        return real(reg, model, opts)

    monkeypatch.setattr(check, "judge_model", judge)
    code, out, _ = world.monitor(capsys=capsys)
    assert code == 2 and "ok         credit" in out
    assert "ERROR      fraud: internal error: RuntimeError: boom" in out
    assert len(_verdicts(world.registry, "credit")) == 1


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_decay_skips_labels_not_known_yet_and_fails_on_outputs_it_cannot_score(tmp_path):
    """Late labels written as NaN in a float column (not null) made scikit-learn refuse every
    row, and decay was `not computed`, i.e. fine, although the 100 real labels said accuracy
    0.5. And a metric scikit-learn refuses (NaN predictions) passed the same way."""
    import pyarrow.parquet as pq

    from mlops_ci.manifest import Manifest
    from mlops_ci.monitor import reader
    from mlops_ci.monitor.decay import Matcher, read_labels

    doc, _, _ = parse_document(_manifest("fraud", "ab" * 32, "    drift:"), "model.yaml")
    manifest = Manifest(tmp_path / "model.yaml", tmp_path, doc)
    ids = [f"r{i}" for i in range(120)]
    truth = np.concatenate([np.ones(50), np.zeros(50), np.full(20, np.nan)])  # 20 not known yet
    pq.write_table(
        pa.table({"request_id": ids, "y": pa.array(truth, from_pandas=False)}),
        tmp_path / "labels.parquet",
    )
    labels = read_labels(reader.dataset(reader.locate(tmp_path / "labels.parquet")), "y")

    def judged(predicted: np.ndarray):
        matcher = Matcher(labels, ["label"])
        matcher.add(pa.record_batch([pa.array(ids), pa.array(predicted)],
                                    names=["request_id", "output.label"]))  # fmt: skip
        return matcher.judge(manifest)

    decay = judged(np.ones(120, dtype=np.int64))
    (acc,) = decay.metrics
    assert decay.rows == 100 and acc.value == pytest.approx(0.5) and decay.decayed, decay
    broken = np.ones(120)
    broken[::2] = np.nan  # the model answers NaN
    decay = judged(broken)
    (acc,) = decay.metrics
    assert decay.decayed and not acc.ok and acc.detail.startswith("cannot be computed"), decay


def test_labels_csv_keeps_request_ids_that_look_like_numbers(world, capsys):
    """Clients that number their requests `0001`, `0002` …: a labels CSV read with pyarrow's
    type inference made them 1, 2 … (int64), which no logged id (the text `0001`) matched, so
    decay saw no labelled row and a model at accuracy 0.5 was never called decayed."""
    world.deploy("fraud", monitoring="    max_age_days: 365\n    labels: labels.csv\n    drift:")
    x = _fresh(400)
    ids = world.log("fraud", x, prefix="000")  # 0000, 0001 … 00039
    truth = (x[:, 0] + x[:, 1] > 0).astype(int)
    truth[:200] = 1 - truth[:200]  # half of them wrong: accuracy 0.5
    (world.repo / "models" / "fraud" / "labels.csv").write_text(
        "request_id,y\n" + "".join(f"{i},{t}\n" for i, t in zip(ids, truth, strict=True))
    )
    code, out, _ = world.monitor("--format", "json", "--no-record", capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert m["performance"]["rows"] == 400, m["performance"]
    assert code == 1 and m["decay"] is True


ZIPS = np.array(["02139", "10001", "94105", "00501", "07030"])


@pytest.fixture(scope="module")
def zip_model() -> bytes:
    """A classifier of one string input, `zip` (one-hot encoded inside the ONNX graph)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    x = rng.choice(ZIPS, (500, 1))
    y = np.isin(x[:, 0], ZIPS[:2]).astype(np.int64)
    lr = LogisticRegression()
    model = Pipeline([("onehot", OneHotEncoder(handle_unknown="ignore")), ("lr", lr)]).fit(x, y)
    onx = convert_sklearn(
        model,
        initial_types=[("zip", StringTensorType([None, 1]))],
        options={id(lr): {"zipmap": False}},
        target_opset=17,
    )
    return onx.SerializeToString()


def _deploy_zip_model(world: World, onnx: bytes, reference: np.ndarray) -> None:
    ref_bytes = ("zip,y\n" + "".join(f"{z},{int(z in ZIPS[:2])}\n" for z in reference)).encode()
    sha = hashlib.sha256(ref_bytes).hexdigest()
    text = _manifest(
        "geo", sha, "    max_age_days: 365\n    drift:\n      categorical: [zip]"
    ).replace(
        "{name: input, dtype: float32, shape: [-1, 3], columns: [x1, x2, x3]}",
        "{name: zip, dtype: string, shape: [-1, 1]}",
    )
    folder = world.repo / "models" / "geo"
    folder.mkdir(parents=True)
    (folder / "model.yaml").write_text(text)
    (folder / "reference.csv").write_bytes(ref_bytes)
    reg = open_registry(world.registry)
    policy = "version_policy: { specific: { versions: [1] } }"
    reg.write_bytes(
        "geo/config.pbtxt", f'name: "geo"\nplatform: "onnxruntime_onnx"\n{policy}\n'.encode()
    )
    release = {"model": "geo", "version": "1.2.0", "registry_version": 1,
               "time": "2026-11-20T00:00:00Z", "source": "local",
               "onnx": {"sha256": hashlib.sha256(onnx).hexdigest()}}  # fmt: skip
    reg.write_bytes("geo/1/release.json", json.dumps(release).encode())
    reg.write_bytes("geo/1/model.yaml", text.encode())
    reg.write_bytes("geo/1/model.onnx", onnx)


def _log_zips(world: World, zips: np.ndarray) -> None:
    """`zips` served and logged by serve's own ModelStore and PredictionLog (text, as sent)."""
    from unittest import mock

    from served_log import pinned_clock

    from mlops_ci.serve import predlog
    from mlops_ci.serve.metrics import Metrics
    from mlops_ci.serve.models import ModelStore

    reg = open_registry(world.registry)
    metrics = Metrics()
    store = ModelStore(reg, metrics)
    store.refresh(full=True)
    model = store.get("geo")
    names = [o.name for o in model.outputs]
    log = predlog.PredictionLog(reg, predlog.REGISTRY_PREFIX, metrics, flush_s=3600)
    with mock.patch.object(predlog, "dt", pinned_clock(NOW - dt.timedelta(hours=2))):
        for k in range(0, len(zips), 10):
            inputs = {"zip": zips[k : k + 10].reshape(-1, 1).astype(object)}
            outputs = dict(zip(names, model.session.run(names, inputs), strict=True))
            log.record("geo", 1, f"r{k}", model.layout, inputs, outputs)
        log.close()
    assert (metrics.log_rows, metrics.log_dropped) == (len(zips), 0)


def test_a_string_input_of_numeric_looking_codes_is_compared_as_text(world, zip_model, capsys):
    """ZIP codes fed to a string input, listed in `drift.categorical` as the docs advise: the
    reference CSV, read with pyarrow's inference, made `02139` the number 2139 (category
    `2139`) while serve logs the text `02139`, so no category matched and the very same
    traffic drifted on every run. And a code that is no number (`K1A0B1`) stopped the model
    with an error, where it is a new category."""
    rng = np.random.default_rng(5)
    _deploy_zip_model(world, zip_model, rng.choice(ZIPS, 600))
    _log_zips(world, rng.choice(ZIPS, 2000))
    code, out, err = world.monitor("--format", "json", "--no-record", capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert m["error"] is None and code == 0, out + err
    (col,) = m["drift"]["columns"]
    assert (col["name"], col["drifted"], col["rows"]["current"]) == ("zip", False, 2000), col
    # The same traffic as a CSV given to --data: read as the reference is, text.
    prod = world.repo / "prod.csv"
    prod.write_text("zip\n" + "".join(f"{z}\n" for z in rng.choice(ZIPS, 2000)))
    code, out, err = world.monitor("--format", "json", "--no-record", "--data", str(prod),
                                   capsys=capsys)  # fmt: skip
    (m,) = json.loads(out)["models"]
    assert code == 0 and not m["drift"]["columns"][0]["drifted"], out + err
    _log_zips(world, np.array(["K1A0B1"] * 2000))  # a new market: drift, not an error
    code, out, err = world.monitor("--format", "json", "--no-record", capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert code == 1 and m["drift"]["columns"][0]["drifted"], out + err


def test_a_bool_inputs_yes_and_no_match_the_logged_booleans(tmp_path):
    """A reference of `yes`/`no` for a bool input (words the test stage reads as the model
    does) stayed the text `yes`, which no logged True matched: drifted on every run."""
    from mlops_ci.manifest import Manifest
    from mlops_ci.monitor import check, drift

    rng = np.random.default_rng(4)
    flags = rng.random(600) < 0.3
    raw = ("flag,y\n" + "".join(f"{'Yes' if f else 'no'},{int(f)}\n" for f in flags)).encode()
    (tmp_path / "reference.csv").write_bytes(raw)
    text = _manifest("f", hashlib.sha256(raw).hexdigest(), "    drift:").replace(
        "{name: input, dtype: float32, shape: [-1, 3], columns: [x1, x2, x3]}",
        "{name: flag, dtype: bool, shape: [-1, 1]}",
    )
    doc, problems, _ = parse_document(text, "model.yaml")
    assert doc is not None and not problems, problems
    manifest = Manifest(tmp_path / "model.yaml", tmp_path, doc)
    rules = manifest.section("monitoring")["drift"]
    reference = check._reference(manifest, rules)
    columns = drift.Columns(reference.table, ["flag"], drift.Settings())
    columns.add(pa.record_batch([pa.array(rng.random(3000) < 0.3)], names=["flag"]))  # as logged
    (col,) = columns.judge().columns
    assert not col.drifted and col.n_reference == 600, col


def test_labels_without_a_drift_section_are_judged_for_decay(world, ghserver, capsys, monkeypatch):
    """A manifest with `monitoring.labels` and no `drift` section (decay is all it asks for):
    the labels were never read, and a model at accuracy 0.5 against its 0.9 passed. Its issue
    then stays open while no label is matched, as a drift section's does on no rows."""
    repo = ghserver.add_repo(REPO)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    world.deploy("fraud", monitoring="    max_age_days: 365\n    labels: labels.csv\n    drift:")
    text = (world.repo / "models" / "fraud" / "model.yaml").read_text().split("    drift:\n")[0]
    doc, problems, _ = parse_document(text, "model.yaml")
    assert doc is not None and not problems and "drift" not in doc["spec"]["monitoring"]
    (world.repo / "models" / "fraud" / "model.yaml").write_text(text)
    open_registry(world.registry).write_bytes("fraud/1/model.yaml", text.encode())
    x = _fresh(600)
    ids = world.log("fraud", x)
    truth = (x[:, 0] + x[:, 1] > 0).astype(int)
    truth[:300] = 1 - truth[:300]  # half of them wrong
    (world.repo / "models" / "fraud" / "labels.csv").write_text(
        "request_id,y\n" + "".join(f"{i},{t}\n" for i, t in zip(ids, truth, strict=True))
    )
    code, out, err = world.monitor("--format", "json", "--issues", capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert m["drift"] is None and m["performance"]["rows"] == 600, out + err
    assert code == 1 and m["decay"] is True, out + err
    assert m["performance"]["metrics"][0]["value"] == pytest.approx(0.5)
    (issue,) = repo.issues.values()
    (world.repo / "models" / "fraud" / "labels.csv").write_text("request_id,y\n")
    code, out, err = world.monitor("--issues", capsys=capsys)
    assert code == 0 and f"issue #{issue['number']} left open: fraud" in err, out + err
    assert issue["state"] == "open"


def test_a_run_without_issues_does_not_forget_an_issue_closed_as_not_planned(
    world, ghserver, capsys, monkeypatch
):
    """Someone runs the monitor by hand (no --issues) between two scheduled runs: its verdict
    file, the newest, names no issue, and the next scheduled run, reading only the newest,
    forgot that a person had closed the alarm as not planned and opened it again."""
    from mlops_ci.monitor import command

    repo = ghserver.add_repo(REPO)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    world.deploy("fraud")
    world.log("fraud", _fresh(3000, shift=(1, 1, 0)))

    def run(hours: int, *, issues: bool) -> int:
        code = command.main(
            str(world.registry),
            repo=world.repo,
            issues=issues,
            now=NOW + dt.timedelta(hours=hours),
        )
        capsys.readouterr()
        return code

    assert run(0, issues=True) == 1
    (issue,) = repo.issues.values()
    issue.update(state="closed", state_reason="not_planned")
    assert run(1, issues=False) == 1  # by hand: a verdict file without `issue`
    assert len(_verdicts(world.registry, "fraud")) == 2
    assert run(2, issues=True) == 1
    assert [i["state"] for i in repo.issues.values()] == ["closed"], "opened again"


def test_a_drift_setting_for_a_column_never_tested_is_named(world, capsys):
    """`per_column: {x4: …}` (a typo of x3, or a column since renamed) and `categorical: [x9]`
    changed nothing and said nothing: the threshold someone chose was silently the default."""
    world.deploy(
        "fraud",
        monitoring="    max_age_days: 365\n    drift:\n"
        "      categorical: [x9]\n      per_column: {x4: {threshold: 0.001}, x3: {test: psi}}",
    )
    world.log("fraud", _fresh(300))
    code, out, _ = world.monitor("--format", "json", "--no-record", capsys=capsys)
    (m,) = json.loads(out)["models"]
    assert code == 0 and m["error"] is None, out
    assert [c["test"] for c in m["drift"]["columns"]] == ["ks", "ks", "psi"]
    tested = "which no drift test reads (the columns tested: x1, x2, x3): ignored"
    assert f"monitoring.drift.per_column names x4, {tested}" in m["warnings"]
    assert f"monitoring.drift.categorical names x9, {tested}" in m["warnings"]


def test_a_reference_header_with_spaces_after_its_commas_names_the_models_columns(tmp_path):
    """`x1, x2, x3` (a hand-written CSV): the test stage strips header names, as people mean
    them; monitor kept ` x2`, and the model's x2 was "not in the reference data" every run."""
    from mlops_ci.manifest import Manifest
    from mlops_ci.monitor import check, drift

    raw = b"x1, x2, x3, y\n" + b"".join(b"0.%d, 0.%d, %d, 1\n" % (i, 9 - i, i) for i in range(10))
    (tmp_path / "reference.csv").write_bytes(raw)
    doc, _, _ = parse_document(_manifest("f", hashlib.sha256(raw).hexdigest(), "    drift:"), "m")
    manifest = Manifest(tmp_path / "model.yaml", tmp_path, doc)
    reference = check._reference(manifest, manifest.section("monitoring")["drift"])
    columns = drift.Columns(reference.table, list(FEATURES), drift.Settings())
    assert set(columns.numeric) == set(FEATURES)  # numbers, though each follows a space
