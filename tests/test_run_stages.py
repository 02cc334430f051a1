"""Which stages `mlops-ci run` runs after a failure, how one model's error stays on its row, and the
exit codes: 1 for a verdict, 2 for anything that is not one (DESIGN.md, issue 9 section 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mlops_ci import pipeline
from mlops_ci.cli import main
from mlops_ci.errors import CheckFailed, UsageError
from mlops_ci.pipeline import Outcome, Stage, skip_reason

EXAMPLE = Path(__file__).parent.parent / "examples" / "model-repo"
ROOT = Path(__file__).parent.parent


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    copy = tmp_path / "model-repo"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns(".mlops-ci"))
    (copy / ".git").mkdir()
    return copy


def _row(out: str, name: str) -> str:
    return next(line for line in out[out.index("Summary") :].splitlines() if line.startswith(name))


def _progress(out: str, name: str) -> dict[str, str]:
    """Stage -> the model's progress line under that stage's heading ([2/4] convert, ...)."""
    lines: dict[str, str] = {}
    stage = ""
    for line in out[: out.index("Summary")].splitlines():
        if line.startswith("["):
            stage = line.split()[1]
        elif line.strip()[2:].startswith(name + " "):
            lines[stage] = line.strip()
    return lines


# --- which stages run -----------------------------------------------------------------------------

PASSED, FAILED = Outcome(True, "ok"), Outcome(False, "no")


def test_test_and_bench_run_on_any_onnx_model_even_after_a_parity_failure() -> None:
    outcomes = {"validate": PASSED, "convert": FAILED}
    assert skip_reason("test", outcomes, onnx_written=True) is None
    assert skip_reason("bench", {**outcomes, "test": FAILED}, onnx_written=True) is None


def test_without_an_onnx_model_test_and_bench_are_skipped() -> None:
    outcomes = {"validate": PASSED, "convert": FAILED}
    assert skip_reason("test", outcomes, onnx_written=False) == (
        "no ONNX model (convert did not write one)"
    )
    assert skip_reason("bench", outcomes, onnx_written=False) is not None


def test_nothing_runs_on_an_invalid_manifest() -> None:
    for stage in ("convert", "test", "bench"):
        reason = skip_reason(stage, {"validate": FAILED}, onnx_written=True)
        assert reason == "the manifest is invalid"


def test_stages_that_need_more_than_an_onnx_model_wait_for_every_earlier_stage() -> None:
    # a later stage such as deploy must never act on a model that failed its tests
    outcomes = {"validate": PASSED, "convert": PASSED, "test": FAILED}
    assert skip_reason("deploy", outcomes, onnx_written=True) == "an earlier stage failed"
    assert skip_reason("convert", {"validate": PASSED}, onnx_written=False) is None


def _break_parity(repo: Path) -> Path:
    """disease-progression (LightGBM) with a tolerance no float32 model meets, and a short bench."""
    manifest = repo / "models" / "disease-progression" / "model.yaml"
    text = manifest.read_text()
    assert "atol: 1.0e-3" in text and "rtol: 1.0e-4" in text and "time_budget_s: 0.5" in text
    text = text.replace("atol: 1.0e-3", "atol: 1.0e-12").replace("rtol: 1.0e-4", "rtol: 0.0")
    manifest.write_text(text.replace("time_budget_s: 0.5", "time_budget_s: 0.05"))
    return manifest


def test_convert_exits_1_on_a_parity_failure(repo: Path, tmp_path: Path) -> None:
    manifest = _break_parity(repo)
    code = main(["convert", str(manifest), "--out", str(tmp_path / "out")])
    assert code == 1
    doc = json.loads((tmp_path / "out" / "convert.json").read_text())
    assert doc["parity"]["status"] == "failed" and doc["error"] is None
    assert (tmp_path / "out" / "model.onnx").is_file()  # written, for inspection


def test_run_carries_on_through_test_and_bench_after_a_parity_failure(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _break_parity(repo)
    out = tmp_path / "run"
    code = main(["run", str(repo / "models" / "disease-progression"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 1, printed  # a verdict: parity said no
    row = _row(printed, "disease-progression")
    assert "✗ parity failed" in row and row.rstrip().endswith("FAIL")
    # test and bench gave their verdicts too; a stage beyond them (deploy) waits for a pass
    progress = _progress(printed, "disease-progression")
    assert progress["test"][0] in "✓✗" and progress["bench"][0] in "✓✗", progress
    if "deploy" in progress:
        assert progress["deploy"].endswith("skipped (an earlier stage failed)"), progress
    assert json.loads((out / "disease-progression" / "test.json").read_text())["checks"]
    assert json.loads((out / "disease-progression" / "bench.json").read_text())["measurements"]


# --- one model's error stays on its row -----------------------------------------------------------


def test_one_models_error_is_recorded_on_its_row_and_the_others_still_run(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[str] = []

    def convert(manifest: pipeline.Manifest, folder: Path) -> Outcome:
        ran.append(manifest.name)
        if manifest.name == "diabetes-risk":
            raise UsageError("conversion.options: unknown option 'zipmapp'")
        if manifest.name == "digit-recognizer":
            raise RuntimeError("exporter crashed")
        if manifest.name == "tumor-classifier":
            raise CheckFailed("artifact refused")
        return Outcome(True, "converted")

    monkeypatch.setattr(pipeline, "_stages", lambda: (Stage("convert", convert),))
    out = tmp_path / "run"
    code = main(["run", str(repo), "--out", str(out)])
    printed = capsys.readouterr().out
    assert ran == ["diabetes-risk", "digit-recognizer", "disease-progression", "tumor-classifier"]
    assert "✗ conversion.options: unknown option 'zipmapp'" in _row(printed, "diabetes-risk")
    assert "internal error: RuntimeError: exporter crashed" in _row(printed, "digit-recognizer")
    assert _row(printed, "disease-progression").rstrip().endswith("PASS")
    assert (out / "report.md").is_file()  # the report is always written
    assert code == 2  # some models could not be checked: not a verdict


def test_run_exits_1_when_every_failure_is_a_verdict(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def convert(manifest: pipeline.Manifest, folder: Path) -> Outcome:
        if manifest.name == "tumor-classifier":
            raise CheckFailed("artifact refused")
        return Outcome(True, "converted")

    monkeypatch.setattr(pipeline, "_stages", lambda: (Stage("convert", convert),))
    assert main(["run", str(repo), "--out", str(tmp_path / "run")]) == 1
    assert "✗ artifact refused" in _row(capsys.readouterr().out, "tumor-classifier")


# --- plan speaks to a person by default -----------------------------------------------------------


def test_plan_prints_text_by_default_and_json_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )
    assert main(["plan", "--repo", str(tmp_path), "--base", "HEAD"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("no model changed between ")
    assert main(["plan", "--repo", str(tmp_path), "--base", "HEAD", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False


# --- the project itself ---------------------------------------------------------------------------


def test_the_license_file_is_the_one_pyproject_declares() -> None:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_atomic_writes_are_readable_by_others(tmp_path: Path) -> None:
    import stat

    from mlops_ci import atomic

    for path in (
        atomic.write_text(tmp_path / "report.md", "# report\n"),
        atomic.write_json(tmp_path / "convert.json", {"passed": True}),
        atomic.write_bytes(tmp_path / "model.onnx", b"\x08\x07"),
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_framework_that_is_not_installed_is_a_configuration_error(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "xgboost", None)  # `import xgboost` now fails
    manifest = repo / "models" / "tumor-classifier" / "model.yaml"
    assert main(["convert", str(manifest), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "needs xgboost, which is not installed: pip install 'mlops-ci[xgboost]'" in err
    assert "internal error" not in err


def test_an_invalid_manifests_name_never_names_a_folder_outside_the_reports(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pull request's manifest can say anything: `run` (used on untrusted checkouts to debug
    them) used its name as the report folder and emptied that folder first."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    manifest = repo / "models" / "diabetes-risk" / "model.yaml"
    for i, evil in enumerate((str(victim), "../../../victim", "diabetes-risk")):
        folder = repo / "models" / f"evil-{i}"
        folder.mkdir()
        text = manifest.read_text().replace("name: diabetes-risk", f"name: {evil}", 1)
        (folder / "model.yaml").write_text(text + "\nunknown_key: 1\n")  # invalid
    out = tmp_path / "out"
    assert main(["run", str(repo), "--stages", "validate", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert (victim / "precious.txt").read_text() == "keep me"
    assert not (victim / "validate.json").exists()
    assert {p.parent.parent for p in out.glob("*/validate.json")} == {out}
    # Every row has its own folder: the valid diabetes-risk keeps its report.
    (report,) = json.loads((out / "diabetes-risk" / "validate.json").read_text())["manifests"]
    assert report["valid"] is True and report["path"].endswith("diabetes-risk/model.yaml")
    assert len(list(out.glob("*/validate.json"))) == 7
    assert "../../../victim" in printed  # still shown under its name


def test_stage_json_holds_no_nan_that_other_parsers_refuse(tmp_path: Path) -> None:
    """Python writes NaN and Infinity as bare words; jq, JavaScript and the JSON standard
    refuse them. What mlops-ci writes says null instead."""
    import json

    from mlops_ci import atomic

    doc = {"r2": float("nan"), "p99": [1.0, float("inf")], "nested": {"x": -float("inf")}}
    path = atomic.write_json(tmp_path / "test.json", doc)

    def refuse(word: str) -> None:
        raise ValueError(word)

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "r2": None,
        "p99": [1.0, None],
        "nested": {"x": None},
    }
    assert "NaN" in json.dumps(doc)  # what json.dumps alone writes
