"""`mlops-ci validate`: the broken-manifest corpus, YAML hazards, output formats, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from mlops_ci import manifest
from mlops_ci.cli import main
from mlops_ci.resources import MANIFEST_SCHEMA, load_schema

CORPUS = Path(__file__).parent / "corpus"
VALID = CORPUS / "valid" / "model.yaml"
EXPECTED: dict[str, list[str]] = json.loads((CORPUS / "expected.json").read_text())


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_corpus_has_at_least_forty_broken_manifests() -> None:
    files = sorted(p.name for p in (CORPUS / "broken").glob("*.yaml"))
    assert len(files) >= 40
    assert files == sorted(EXPECTED), "every corpus file has its expected errors, and only those"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_manifest_reports_exact_error_and_line(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = CORPUS / "broken" / name
    code, out, _ = _run(capsys, "validate", "--format", "json", "--root", str(CORPUS), str(path))
    assert code == 1
    (result,) = json.loads(out)["manifests"]
    assert result["valid"] is False
    got = [
        f"{e['line']}:{e['column']}: {e['message']}" if e["line"] else e["message"]
        for e in result["errors"]
    ]
    assert got == EXPECTED[name]


def test_valid_manifest_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "validate", "--root", str(CORPUS), str(CORPUS / "valid" / "model.yaml")
    )
    assert code == 0
    assert "1 manifest valid" in out


def test_the_policy_is_not_counted_as_a_manifest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(
        Path(__file__).parent.parent / "examples" / "model-repo" / "models", repo / "models"
    )
    (repo / ".mlops").mkdir()
    (repo / ".mlops" / "policy.yaml").write_text("not: [a policy\n")
    code, out, err = _run(capsys, "validate", "--root", str(repo), str(repo))
    assert code == 1
    assert "1 of 4 manifests and the policy invalid, 1 problem" in out + err
    (repo / ".mlops" / "policy.yaml").unlink()
    code, out, _ = _run(capsys, "validate", "--root", str(repo), str(repo))
    assert code == 0 and out.endswith("4 manifests valid\n"), out


def test_fast_and_detailed_validators_agree_on_every_corpus_file() -> None:
    import fastjsonschema

    from mlops_ci.manifest.schema import detailed_validator, fast_validator

    # The validators validate builds, not copies made here.
    fast, detailed = fast_validator(MANIFEST_SCHEMA), detailed_validator(MANIFEST_SCHEMA)
    checked = 0
    for path in [CORPUS / "valid" / "model.yaml", *sorted((CORPUS / "broken").glob("*.yaml"))]:
        data, _, _ = manifest.parse_document(path.read_bytes(), path.name)
        if data is None:
            continue
        try:
            fast(data)
            fast_ok = True
        except fastjsonschema.JsonSchemaException:
            fast_ok = False
        assert fast_ok == detailed.is_valid(data), path.name
        checked += 1
    assert checked > 40


def test_billion_laughs_is_refused_without_expanding(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    path = tmp_path / "model.yaml"
    path.write_text("\n".join(lines) + "\n")
    tracemalloc.start()
    result = manifest.check_file(path, tmp_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [(p.line, p.message) for p in result.problems] == [
        (2, "YAML aliases (*name) are not allowed in a manifest")
    ]
    assert peak < 5_000_000  # bytes: the 10^9-element document never materialises


def test_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("# padding\n" * (manifest.MAX_FILE_BYTES // 10 + 1))
    result = manifest.check_file(path, tmp_path)
    assert [p.message for p in result.problems] == [
        f"file is larger than {manifest.MAX_FILE_BYTES:,} bytes; manifests are limited to that"
    ]


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    result = manifest.check_file(path, tmp_path)
    assert len(result.problems) == 1
    assert "nest" in result.problems[0].message  # ours, or libyaml's own depth limit


def _valid_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    shutil.copy(CORPUS / "model.skops", repo / "model.skops")
    shutil.copy(CORPUS / "eval.csv", repo / "eval.csv")
    (repo / "m" / "model.yaml").write_text((CORPUS / "valid" / "model.yaml").read_text())
    (repo / ".git").mkdir()  # marks the repository root
    return repo


def test_symlink_pointing_outside_the_repository_is_refused(tmp_path: Path) -> None:
    repo = _valid_repo(tmp_path)
    outside = tmp_path / "secret.skops"
    outside.write_bytes((CORPUS / "model.skops").read_bytes())
    (repo / "model.skops").unlink()
    os.symlink(outside, repo / "model.skops")
    result = manifest.check_file(repo / "m" / "model.yaml")
    assert [(p.line, p.message) for p in result.problems] == [
        (12, "spec.artifact.path: '../model.skops' is a symlink that points outside the repository")
    ]


def test_a_manifest_that_is_a_symlink_out_of_the_repository_is_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _valid_repo(tmp_path)
    outside = tmp_path / "runner-secrets.yaml"  # a file of the machine, not of the pull request
    outside.write_text("apiVersion: s3cr3t-value\n")
    (repo / "m" / "model.yaml").unlink()
    os.symlink(outside, repo / "m" / "model.yaml")
    # armed: the file was read and its values quoted in the (public) log
    code, out, err = _run(capsys, "validate", str(repo))
    assert code == 1 and "s3cr3t-value" not in out + err
    assert "symlink that points outside the repository" in out + err

    # a device reports size 0, so the size check let /dev/zero be read until memory ran out
    os.remove(repo / "m" / "model.yaml")
    os.symlink("/dev/zero", repo / "m" / "model.yaml")
    result = manifest.check_file(repo / "m" / "model.yaml")
    assert [p.message for p in result.problems] == [
        "the manifest is a symlink that points outside the repository"
    ]
    # ... and where the device is inside the root, reading stops a byte past the limit
    result = manifest.check_file(repo / "m" / "model.yaml", Path("/"))
    assert [p.message for p in result.problems] == [
        f"file is larger than {manifest.MAX_FILE_BYTES:,} bytes; manifests are limited to that"
    ]


def test_repository_root_is_the_enclosing_git_checkout(tmp_path: Path) -> None:
    repo = _valid_repo(tmp_path)
    assert manifest.check_file(repo / "m" / "model.yaml").valid


def test_names_must_be_unique_across_the_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _valid_repo(tmp_path)
    (repo / "n").mkdir()
    (repo / "n" / "model.yaml").write_text((CORPUS / "valid" / "model.yaml").read_text())
    code, out, _ = _run(capsys, "validate", "--format", "json", str(repo))
    assert code == 1
    results = {m["path"]: m for m in json.loads(out)["manifests"]}
    (second,) = [m for m in results.values() if not m["valid"]]
    assert second["errors"] == [
        {
            "line": 4,
            "column": 9,
            "pointer": "/metadata/name",
            "message": f"metadata.name: 'corpus-model' is already the name of "
            f"{manifest.display_path(repo / 'm' / 'model.yaml')}:4; "
            "names must be unique in the repository",
        }
    ]


def test_github_format_prints_annotations_and_writes_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.chdir(CORPUS)
    code, out, _ = _run(
        capsys, "validate", "--format", "github", "--root", ".", "broken/25-framework-typo.yaml"
    )
    assert code == 1
    assert (
        "::error file=broken/25-framework-typo.yaml,line=9,col=14,title=mlops-ci validate::"
        "spec.framework: 'sklern' is not one of sklearn, xgboost, lightgbm, pytorch, onnx "
        "(did you mean 'sklearn'?)"
    ) in out.splitlines()
    text = summary.read_text()
    assert "❌ 1 of 1 manifest invalid" in text
    assert "<code>broken/25-framework-typo.yaml:9</code>" in text


def test_text_format_names_file_line_and_column(capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / "broken" / "03-duplicate-key.yaml"
    code, _, err = _run(capsys, "validate", "--root", str(CORPUS), str(path))
    assert code == 1
    assert f"{manifest.display_path(path)}:8:3: duplicate key 'risk'" in err


def test_missing_path_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "validate", "does/not/exist.yaml")
    assert code == 2
    assert err == "mlops-ci validate: error: does/not/exist.yaml: no such file or folder\n"


def test_a_root_that_is_a_file_or_missing_says_which(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(capsys, "validate", "--root", str(VALID), str(VALID))
    assert code == 2
    assert err == f"mlops-ci validate: error: --root {VALID} is a file, not a folder\n"
    missing = tmp_path / "nope"
    code, _, err = _run(capsys, "validate", "--root", str(missing), str(VALID))
    assert code == 2
    assert err == f"mlops-ci validate: error: --root {missing}: no such folder\n"


def test_unknown_flag_value_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--format", "xml"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_folder_without_manifests_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "validate", str(tmp_path))
    assert code == 2
    assert "no model.yaml or model.yml found under" in err


def test_validate_imports_no_machine_learning_framework() -> None:
    probe = (
        "import sys\n"
        "from mlops_ci.cli import main\n"
        f"code = main(['validate', '--root', {str(CORPUS)!r}, {str(VALID)!r}])\n"
        "heavy = sorted(m for m in ('sklearn', 'torch', 'onnxruntime', 'xgboost', 'lightgbm',"
        " 'pandas', 'onnx', 'github', 'tritonclient', 'google.protobuf', 'boto3')"
        " if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stderr


def test_field_tables_in_the_docs_match_the_schemas() -> None:
    from mlops_ci import schemadoc

    docs = Path(__file__).parent.parent / "docs"
    assert schemadoc.main(["--docs", str(docs), "--check"]) == 0


def test_every_schema_property_is_documented() -> None:
    from mlops_ci import schemadoc

    for name in (MANIFEST_SCHEMA, "policy.v1.json"):
        undocumented = [f for f, _, _, text in schemadoc.fields(load_schema(name)) if not text]
        assert undocumented == [], name


def test_a_file_the_fast_validator_refuses_is_refused_even_unexplained(monkeypatch) -> None:
    """Were the two validators ever to disagree again (a newline after a name passed the
    detailed one), the file is refused, not waved through for want of an explanation."""
    from mlops_ci.manifest import schema

    class Lenient:
        def iter_errors(self, data):
            return iter(())

    monkeypatch.setattr(schema, "detailed_validator", lambda name: Lenient())
    path = CORPUS / "broken" / "18-name-uppercase.yaml"
    data, root, _ = manifest.parse_document(path.read_bytes(), path.name)
    [problem] = schema.schema_problems(data, root, path.name, MANIFEST_SCHEMA)
    assert "the schema refuses it" in problem.message and "must match pattern" in problem.message
