"""`mlops-ci plan` on a real git history: added, modified, artifact-only, deleted, renamed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mlops_ci import plan as plan_module
from mlops_ci.cli import main
from mlops_ci.manifest import sha256_file

VALID = (Path(__file__).parent / "corpus" / "valid" / "model.yaml").read_text()


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _write_model(repo: Path, folder: str, name: str, version: str, artifact: bytes) -> None:
    model = repo / folder
    model.mkdir(parents=True, exist_ok=True)
    (model / "model.skops").write_bytes(artifact)
    (model / "eval.csv").write_text("x,y\n1,0\n")
    text = (
        VALID.replace("name: corpus-model", f"name: {name}")
        .replace("version: 1.2.0", f"version: {version}")
        .replace("../model.skops", "model.skops")
        .replace("../eval.csv", "eval.csv")
    )
    text = text.replace(
        "4de28936fed5cdf64189d659fb20472a6509c621a49ef5fe5122ed7ba24273c5",
        sha256_file(model / "model.skops"),
    ).replace(
        "1c2774606e096c8ee91ec09a8b7ad342ab39ed2a75bc7266714d34114a124f02",
        sha256_file(model / "eval.csv"),
    )
    (model / "model.yaml").write_text(text)


def _commit(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    for name in ("alpha", "beta", "gamma", "delta"):
        _write_model(repo, f"models/{name}", name, "1.0.0", f"{name} v1".encode())
    (repo / "README.md").write_text("models\n")
    _commit(repo, "base")
    return repo


def _plan(repo: Path, base: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["plan", "--repo", str(repo), "--base", base, "--head", "HEAD", "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_plan_lists_added_modified_artifact_only_deleted_and_renamed(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _git(repo, "rev-parse", "HEAD")
    _write_model(repo, "models/epsilon", "epsilon", "0.1.0", b"new model")  # added
    manifest = repo / "models/alpha/model.yaml"  # modified: manifest only
    manifest.write_text(manifest.read_text().replace("risk: high", "risk: medium"))
    _write_model(repo, "models/beta", "beta", "1.1.0", b"beta v2")  # artifact changed
    _git(repo, "rm", "-q", "-r", "models/gamma")  # deleted
    _git(repo, "mv", "models/delta", "models/delta-renamed")  # renamed
    (repo / "README.md").write_text("not a model\n")
    _commit(repo, "change")

    code, plan = _plan(repo, base, capsys)
    assert plan["problems"] == []
    assert code == 0
    assert plan["changed"] is True
    rows = {
        m["name"]: (m["status"], m["manifest"], m["previous_version"])
        for m in plan["matrix"]["include"]
    }
    assert rows == {
        "alpha": ("modified", "models/alpha/model.yaml", "1.0.0"),
        "beta": ("modified", "models/beta/model.yaml", "1.0.0"),
        "delta": ("renamed", "models/delta-renamed/model.yaml", "1.0.0"),
        "epsilon": ("added", "models/epsilon/model.yaml", None),
    }
    assert [(d["name"], d["manifest"], d["risk"]) for d in plan["deleted"]] == [
        ("gamma", "models/gamma/model.yaml", "high")
    ]
    assert plan["problems"] == []


def test_a_model_added_inside_another_s_folder_leaves_the_files_it_brings_that_one_s_too(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """At base, models/alpha/sub/ is alpha's (its nearest manifest); a model added there
    claims it at head only: alpha is built and checked too, as the gate asks its owners."""
    base = _git(repo, "rev-parse", "HEAD")
    _write_model(repo, "models/alpha/sub", "zeta", "0.1.0", b"zeta v1")
    _commit(repo, "zeta inside alpha")
    code, plan = _plan(repo, base, capsys)
    assert code == 0, plan["problems"]
    rows = {m["name"]: m["status"] for m in plan["matrix"]["include"]}
    assert rows == {"alpha": "modified", "zeta": "added"}


def test_artifact_only_change_counts_and_needs_a_higher_version(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _git(repo, "rev-parse", "HEAD")
    (repo / "models/beta/model.skops").write_bytes(b"retrained, manifest untouched")
    _commit(repo, "retrain beta")

    code, plan = _plan(repo, base, capsys)
    assert code == 1
    assert [m["name"] for m in plan["matrix"]["include"]] == ["beta"]
    (problem,) = plan["problems"]
    assert problem["path"] == "models/beta/model.yaml"
    assert problem["line"] == 5
    assert problem["message"] == (
        "metadata.version: the artifact changed but the version did not increase "
        "(1.0.0 -> 1.0.0); raise it above 1.0.0"
    )


def test_changed_evaluation_data_counts_as_a_change(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _git(repo, "rev-parse", "HEAD")
    (repo / "models/gamma/eval.csv").write_text("x,y\n2,1\n")
    _commit(repo, "new eval data")
    code, plan = _plan(repo, base, capsys)
    assert [m["name"] for m in plan["matrix"]["include"]] == ["gamma"]
    assert code == 0  # data alone needs no new version


def test_lower_version_with_new_artifact_is_refused(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _git(repo, "rev-parse", "HEAD")
    _write_model(repo, "models/alpha", "alpha", "1.0.0-rc.1", b"alpha v2")
    _commit(repo, "prerelease is lower than the release")
    code, plan = _plan(repo, base, capsys)
    assert code == 1
    assert "(1.0.0 -> 1.0.0-rc.1)" in plan["problems"][0]["message"]


def test_no_model_change_gives_an_empty_matrix(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _git(repo, "rev-parse", "HEAD")
    (repo / "README.md").write_text("docs only\n")
    _commit(repo, "docs")
    code, plan = _plan(repo, base, capsys)
    assert (code, plan["changed"], plan["matrix"]) == (0, False, {"include": []})


def test_github_format_writes_matrix_and_changed_outputs(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _git(repo, "rev-parse", "HEAD")
    _write_model(repo, "models/alpha", "alpha", "2.0.0", b"alpha v2")
    _commit(repo, "alpha v2")
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    code = main(["plan", "--repo", str(repo), "--base", base, "--format", "github"])
    assert code == 0
    text = outputs.read_text()
    values = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "<<" in line:
            values[line.split("<<")[0]] = lines[i + 1]
    assert values["changed"] == "true"
    assert json.loads(values["environments"]) == ["sklearn"]  # what CI installs once per run
    matrix = json.loads(values["matrix"])
    assert [m["name"] for m in matrix["include"]] == ["alpha"]
    assert "1 changed, 0 deleted" in capsys.readouterr().out


def test_unknown_ref_is_a_usage_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "--repo", str(repo), "--base", "no-such-branch"])
    assert code == 2
    assert "'no-such-branch' is not a commit" in capsys.readouterr().err
    # (the message also suggests fetch-depth: 0, the usual cause on a runner)


def test_a_folder_outside_any_checkout_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # not the checkout above it
    monkeypatch.setenv("LC_ALL", "C")  # git's message is matched in English
    assert main(["plan", "--repo", str(tmp_path), "--base", "HEAD"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is not in a git checkout" in err and "fatal:" not in err, err


def test_push_that_creates_a_branch_compares_with_nothing(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, plan = _plan(repo, "0" * 40, capsys)
    assert code == 0
    assert sorted(m["name"] for m in plan["matrix"]["include"]) == [
        "alpha",
        "beta",
        "delta",
        "gamma",
    ]
    assert {m["status"] for m in plan["matrix"]["include"]} == {"added"}


def test_a_file_beside_a_manifest_touches_its_model_as_the_gate_counts_it(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _git(repo, "rev-parse", "HEAD")
    (repo / "models/beta/notes").mkdir()
    (repo / "models/beta/notes/README.md").write_text("why beta exists\n")
    (repo / "README.md").write_text("outside every model folder\n")
    _commit(repo, "notes")
    code, plan = _plan(repo, base, capsys)
    assert code == 0
    assert [(m["name"], m["status"]) for m in plan["matrix"]["include"]] == [("beta", "modified")]
    assert [(t.path, t.kind) for t in plan_module.changed_models(repo, base, "HEAD")] == [
        ("models/beta/model.yaml", "files")
    ]


def test_plan_parses_only_the_manifests_of_touched_folders(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _git(repo, "rev-parse", "HEAD")
    _write_model(repo, "models/alpha", "alpha", "1.1.0", b"alpha v2")
    _commit(repo, "alpha v2")
    parsed: list[str] = []
    real = plan_module._read

    def counting(raw: bytes, path: str) -> object:
        parsed.append(path)
        return real(raw, path)

    monkeypatch.setattr(plan_module, "_read", counting)
    code, plan = _plan(repo, base, capsys)
    assert (code, [m["name"] for m in plan["matrix"]["include"]]) == (0, ["alpha"])
    assert sorted(parsed) == ["models/alpha/model.yaml", "models/alpha/model.yaml"]  # head, base


def test_a_moved_model_is_matched_by_name_even_when_edited(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _git(repo, "rev-parse", "HEAD")
    (repo / "team-b").mkdir()
    _git(repo, "mv", "models/gamma", "team-b/gamma")
    manifest = repo / "team-b/gamma/model.yaml"
    manifest.write_text(manifest.read_text().replace("risk: high", "risk: low"))
    _commit(repo, "move and edit gamma")
    code, plan = _plan(repo, base, capsys)
    assert code == 0
    (row,) = plan["matrix"]["include"]
    assert (row["status"], row["manifest"], row["previous_manifest"], row["risk"]) == (
        "renamed",
        "team-b/gamma/model.yaml",
        "models/gamma/model.yaml",
        "low",
    )
    assert plan["deleted"] == []


def test_a_changed_manifest_missing_what_plan_reads_is_a_problem_with_its_line(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _git(repo, "rev-parse", "HEAD")
    manifest = repo / "models/alpha/model.yaml"
    manifest.write_text(manifest.read_text().replace("  risk: high\n", ""))
    _commit(repo, "drop the risk")
    code, plan = _plan(repo, base, capsys)
    assert code == 1
    assert [(p["path"], p["line"], p["message"]) for p in plan["problems"]] == [
        ("models/alpha/model.yaml", 3, "metadata: missing required field 'risk'")
    ]


def test_fixing_a_manifest_that_was_broken_at_base_plans_instead_of_crashing(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A base manifest whose metadata or spec is not a mapping (the pull request that fixes it):
    plan reads what it can of the base and never stops with an internal error."""
    alpha, beta = repo / "models/alpha/model.yaml", repo / "models/beta/model.yaml"
    good_alpha, good_beta = alpha.read_text(), beta.read_text()
    alpha.write_text("apiVersion: mlops-ci/v1\nkind: Model\nmetadata: 5\n")
    beta.write_text(
        "apiVersion: mlops-ci/v1\nkind: Model\n"
        "metadata: {name: beta, version: 1.0.0, risk: low, owners: ['@a']}\nspec: 5\n"
    )
    base = _commit(repo, "broken manifests")
    alpha.write_text(good_alpha)
    beta.write_text(good_beta.replace("version: 1.0.0", "version: 1.1.0"))
    _commit(repo, "fixed")
    code, plan = _plan(repo, base, capsys)
    assert code == 0, plan["problems"]
    rows = {m["name"]: (m["status"], m["previous_version"]) for m in plan["matrix"]["include"]}
    assert rows == {"alpha": ("added", None), "beta": ("modified", "1.0.0")}
    assert plan["deleted"] == []


def test_two_changed_manifests_with_one_name_are_a_problem_not_one_silent_row(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The matrix (and the deploy, which plans the push) must not pick one of them quietly."""
    base = _git(repo, "rev-parse", "HEAD")
    _write_model(repo, "models/alpha", "alpha", "1.1.0", b"alpha v2")
    _write_model(repo, "models/alpha-copy", "alpha", "9.0.0", b"another alpha")
    _commit(repo, "two alphas")
    code, plan = _plan(repo, base, capsys)
    assert code == 1
    assert [(p["path"], p["line"], p["message"]) for p in plan["problems"]] == [
        (
            "models/alpha/model.yaml",
            4,
            "metadata.name: 'alpha' is also the name of models/alpha-copy/model.yaml; "
            "names must be unique in the repository",
        )
    ]
