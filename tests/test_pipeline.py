"""`mlops-ci run`: the local pipeline on the example repository, stage by stage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlops_ci.cli import main

EXAMPLE = Path(__file__).parent.parent / "examples" / "model-repo"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    copy = tmp_path / "model-repo"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns(".mlops-ci"))
    (copy / ".git").mkdir()  # the repository root for path checks
    return copy


def test_run_converts_and_tests_every_example_model(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", str(repo), "--stages", "validate,convert,test"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[1/3] validate" in out and "[2/3] convert" in out and "[3/3] test" in out
    summary = out[out.index("Summary") :]
    for name in ("diabetes-risk", "digit-recognizer", "disease-progression", "tumor-classifier"):
        row = next(line for line in summary.splitlines() if line.startswith(name))
        assert row.rstrip().endswith("PASS"), row
        assert (repo / ".mlops-ci" / "run" / name / "model.onnx").is_file()
        assert (repo / ".mlops-ci" / "run" / name / "test.json").is_file()
    report = (repo / ".mlops-ci" / "run" / "report.md").read_text()
    assert "diabetes-risk" in report and "tumor-classifier" in report
    assert "**4 models: ✅ all passing**" in report  # a local run changed nothing


def test_a_failing_stage_skips_the_later_ones_and_fails_the_run(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = repo / "models" / "tumor-classifier" / "model.yaml"
    text = manifest.read_text()
    # A threshold the model cannot meet: the test stage fails, nothing else does.
    manifest.write_text(
        text.replace("metrics:\n", "metrics:\n      - {metric: accuracy, min: 0.999}\n", 1)
    )
    code = main(["run", str(repo), "--stages", "validate,convert,test"])
    out = capsys.readouterr().out
    assert code == 1
    row = next(
        line for line in out[out.index("Summary") :].splitlines() if line.startswith("tumor")
    )
    assert "✗" in row and row.rstrip().endswith("FAIL")


def test_an_invalid_manifest_is_reported_and_skipped(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = repo / "models" / "disease-progression" / "model.yaml"
    manifest.write_text(manifest.read_text().replace("framework: lightgbm", "framework: lightgbn"))
    code = main(["run", str(repo), "--stages", "validate"])
    out = capsys.readouterr().out
    assert code == 1
    assert "spec.framework: 'lightgbn' is not one of" in out
    assert "(did you mean 'lightgbm'?)" in out


def test_unknown_stage_is_a_usage_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(repo), "--stages", "validate,publish"]) == 2
    assert (
        "unknown stage publish; stages are validate, convert, test, bench, deploy"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("registry", "message"),
    [("a-file", "the registry must be a folder"), ("ftp://host/x", "a registry is a folder")],
)
def test_a_bad_registry_is_one_usage_error_before_any_stage_runs(
    repo: Path, capsys: pytest.CaptureFixture[str], registry: str, message: str
) -> None:
    if registry == "a-file":
        registry = str(repo / "README.md")
    argv = ["run", str(repo), "--stages", "validate,convert,deploy", "--registry", registry]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count(message) == 1, (out, err)
    assert not (repo / ".mlops-ci").exists()  # nothing written half-way


def test_deploy_without_convert_is_a_usage_error_that_removes_no_reports(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier = repo / ".mlops-ci" / "run" / "tumor-classifier" / "model.onnx"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"an earlier run's model")
    assert main(["run", str(repo), "--stages", "deploy"]) == 2
    assert "add convert to --stages" in capsys.readouterr().err
    assert earlier.read_bytes() == b"an earlier run's model"


def test_stage_lists_with_empty_items_and_a_file_for_repo(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(repo), "--stages", "validate,"]) == 0  # a trailing comma is a typo
    assert "[1/1] validate" in capsys.readouterr().out
    assert main(["run", str(repo), "--stages", ","]) == 2
    assert "--stages names no stage" in capsys.readouterr().err
    manifest = repo / "models" / "tumor-classifier" / "model.yaml"
    assert main(["run", str(manifest)]) == 2
    assert "is a file: `run` takes the repository's folder" in capsys.readouterr().err
