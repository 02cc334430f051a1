"""docs/saving-models.md as a newcomer uses it: every snippet runs, the manifests beside them are
filled in with `sha256sum`'s digests, and `mlops-ci run` passes on the repository the first time.

Also pins that conversion is deterministic: the same artifact and settings give byte-identical
ONNX, for every framework.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mlops_ci import convert, manifest
from mlops_ci.cli import main
from mlops_ci.report import terminal

DOC = Path(__file__).parent.parent / "docs" / "saving-models.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_PLACEHOLDER = re.compile(r'"<sha256sum ([\w.]+)>"')


def snippets() -> list[tuple[str, str]]:
    """(python, manifest) pairs: each Python block with the YAML block that follows it."""
    pairs: list[tuple[str, str]] = []
    python: str | None = None
    for lang, body in _BLOCK.findall(DOC.read_text(encoding="utf-8")):
        if lang == "python":
            python = body
        elif lang == "yaml" and python is not None:
            pairs.append((python, body))
            python = None
    return pairs


def build(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The repository the doc describes: models/<name>/ per snippet; returns name -> manifest."""
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    built: dict[str, Path] = {}
    for python, manifest_text in snippets():
        name = yaml.safe_load(manifest_text)["metadata"]["name"]
        folder = root / "models" / name
        folder.mkdir(parents=True)
        with monkeypatch.context() as m:
            m.chdir(folder)  # the doc says: each snippet runs in its model's folder
            exec(compile(python, f"{DOC.name}:{name}", "exec"), {"__name__": "__snippet__"})

        def digest(match: re.Match[str], folder: Path = folder) -> str:
            return hashlib.sha256((folder / match.group(1)).read_bytes()).hexdigest()

        (folder / "model.yaml").write_text(_PLACEHOLDER.sub(digest, manifest_text))
        built[name] = folder / "model.yaml"
    return built


@dataclass(frozen=True)
class Newcomer:
    root: Path
    models: dict[str, Path]  # name -> model.yaml
    code: int  # of `mlops-ci run`
    printed: str  # what `mlops-ci run` printed


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Newcomer:
    """The repository built from the doc, and one `mlops-ci run` on it (the tests share it)."""
    root = tmp_path_factory.mktemp("newcomer")
    with pytest.MonkeyPatch.context() as monkeypatch:
        models = build(root, monkeypatch)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["validate", str(root)]) == 0, printed.getvalue()
        code = main(["run", str(root)])
    return Newcomer(root, models, code, printed.getvalue())


def test_the_doc_covers_every_framework_and_the_reported_models() -> None:
    frameworks = [yaml.safe_load(m)["spec"]["framework"] for _, m in snippets()]
    assert sorted(set(frameworks)) == ["lightgbm", "onnx", "pytorch", "sklearn", "xgboost"]
    assert frameworks.count("sklearn") == 2  # a forest and a Pipeline, both on DataFrames
    text = DOC.read_text(encoding="utf-8")
    for call in ("skops.io", "save_model(", "torch.export.save", "torch.export.Dim", "onnx.save"):
        assert call in text


@pytest.mark.slow
def test_a_repository_built_from_the_doc_passes_run_first_try(newcomer: Newcomer) -> None:
    out = newcomer.printed
    assert newcomer.code == 0, out
    table = out[out.index("Summary") :].splitlines()
    for name in newcomer.models:
        row = next(line for line in table if line.startswith(name + " "))
        assert row.rstrip().endswith("PASS"), row
        assert "skipped" not in row and "✗" not in row, row
    # the terminal gets progress and the table; the Markdown goes to its file only
    report = newcomer.root / ".mlops-ci" / "run" / "report.md"
    assert "<details" in report.read_text() and "<details" not in out
    assert f"Report: {report.resolve()}" in out
    # what run writes is readable by others (a web server, a reviewer), as open() would make it
    for written in (report, newcomer.root / ".mlops-ci/run/iris-forest/model.onnx"):
        assert stat.S_IMODE(written.stat().st_mode) == 0o644, written


def test_dataframe_models_are_fed_their_training_columns_by_name(
    newcomer: Newcomer, tmp_path: Path
) -> None:
    """eval.csv with its columns in another order: the XGBoost model still gets petal_length in
    its own place, in parity, test and bench alike (the ONNX model records the columns)."""
    original = newcomer.models["iris-xgboost"]
    folder = tmp_path / "models" / "iris-xgboost"
    folder.mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    lines = (original.parent / "eval.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines]
    order = [4, 3, 2, 1, 0]  # species, petal_width, petal_length, sepal_width, sepal_length
    (folder / "eval.csv").write_text("\n".join(",".join(r[i] for i in order) for r in rows) + "\n")
    (folder / "model.json").write_bytes((original.parent / "model.json").read_bytes())
    old_digest = hashlib.sha256((original.parent / "eval.csv").read_bytes()).hexdigest()
    new_digest = hashlib.sha256((folder / "eval.csv").read_bytes()).hexdigest()
    (folder / "model.yaml").write_text(original.read_text().replace(old_digest, new_digest))

    m = manifest.load(folder / "model.yaml", tmp_path)
    result = convert.run(m, tmp_path / "out")
    assert result.passed, terminal.conversion(result)
    assert result.parity is not None and result.parity.label_agreement == 1.0
    assert main(["test", str(folder / "model.yaml"), "--out", str(tmp_path / "out")]) == 0
    bench_args = ["--out", str(tmp_path / "out"), "--time-budget", "0.05"]
    assert main(["bench", str(folder / "model.yaml"), *bench_args]) == 0


def test_a_dataframe_model_without_data_is_benchmarked_on_its_own_columns(
    newcomer: Newcomer, tmp_path: Path
) -> None:
    """No evaluation data, no test cases: synthetic rows, yet the native forest still gets a
    DataFrame with the columns it was fitted on (before, bench failed with exit 1 here)."""
    original = newcomer.models["iris-forest"]
    folder = tmp_path / "models" / "iris-forest"
    folder.mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (folder / "model.skops").write_bytes((original.parent / "model.skops").read_bytes())
    doc = yaml.safe_load(original.read_text())
    del doc["spec"]["evaluation"], doc["spec"]["tests"]
    (folder / "model.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "out"

    assert main(["convert", str(folder / "model.yaml"), "--out", str(out)]) == 0
    assert (
        main(["bench", str(folder / "model.yaml"), "--out", str(out), "--time-budget", "0.05"]) == 0
    )
    bench = json.loads((out / "bench.json").read_text())
    assert {m["engine"] for m in bench["measurements"]} == {"onnx", "native"}


@pytest.mark.slow
def test_conversion_is_byte_identical_for_every_framework(
    newcomer: Newcomer, tmp_path: Path
) -> None:
    """Two fresh processes with different hash seeds convert every model: the same bytes, so a
    repeated deploy of the same artifact changes nothing. (Fresh processes, as in CI: this
    test's own worker has run other tests' conversions, whose global converter state is not
    what a `mlops-ci convert` starts with.)"""
    ran = tmp_path / "first"
    again = tmp_path / "again"
    command = [sys.executable, "-m", "mlops_ci", "run", str(newcomer.root)]
    for out, seed in ((ran, "1"), (again, "12345")):
        subprocess.run(
            [*command, "--stages", "validate,convert", "--out", str(out)],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
    seen = set()
    for name in newcomer.models:
        first = json.loads((ran / name / "convert.json").read_text())
        second = json.loads((again / name / "convert.json").read_text())
        assert first["passed"] and second["passed"], (name, first["error"], second["error"])
        a = (ran / name / "model.onnx").read_bytes()
        b = (again / name / "model.onnx").read_bytes()
        assert a == b, f"{name} ({first['model']['framework']}): two conversions differ"
        assert first["onnx"]["sha256"] == second["onnx"]["sha256"]
        seen.add(first["model"]["framework"])
    assert seen == {"sklearn", "xgboost", "lightgbm", "pytorch", "onnx"}


def test_an_artifact_cannot_choose_the_columns_it_is_fed(
    newcomer: Newcomer, tmp_path: Path
) -> None:
    """An ONNX artifact that carries mlops-ci's column key, with the columns reversed: read as
    is, it would feed the model the wrong columns; convert drops it and records its own."""
    import onnx

    original = newcomer.models["diabetes-ridge"]
    folder = tmp_path / "models" / "diabetes-ridge"
    folder.mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (folder / "eval.csv").write_bytes((original.parent / "eval.csv").read_bytes())
    model = onnx.load(original.parent / "model.onnx")
    header = (folder / "eval.csv").read_text().splitlines()[0].split(",")[:-1]
    entry = model.metadata_props.add()
    entry.key, entry.value = "mlops_ci.input_columns", json.dumps({"X": header[::-1]})
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    old = hashlib.sha256((original.parent / "model.onnx").read_bytes()).hexdigest()
    new = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    (folder / "model.yaml").write_text(original.read_text().replace(old, new))
    manifest_path = str(folder / "model.yaml")

    # the naive way: the stage trusts the artifact's key, and the r2 threshold fails
    naive = ["test", manifest_path, "--onnx", str(folder / "model.onnx")]
    assert main([*naive, "--out", str(tmp_path / "naive")]) == 1
    # through convert, the key is replaced by the columns parity used
    out = str(tmp_path / "out")
    assert main(["convert", manifest_path, "--out", out]) == 0
    stamped = {p.key: p.value for p in onnx.load(tmp_path / "out" / "model.onnx").metadata_props}
    assert json.loads(stamped["mlops_ci.input_columns"]) == {"X": header}
    assert main(["test", manifest_path, "--out", out]) == 0
    # with no data to take columns from, convert records none, and never the artifact's
    doc = yaml.safe_load((folder / "model.yaml").read_text())
    del doc["spec"]["evaluation"], doc["spec"]["tests"]
    (folder / "model.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert main(["convert", manifest_path, "--out", str(tmp_path / "bare")]) == 0
    bare = {p.key for p in onnx.load(tmp_path / "bare" / "model.onnx").metadata_props}
    assert "model_name" in bare and "mlops_ci.input_columns" not in bare
