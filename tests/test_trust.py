"""Trusted types: `mlops-ci validate` and convert refuse the same names, from one list.

`trust.FORBIDDEN_MODULES` is the list; the policy schema's `not` pattern is generated from it.
A module that drifts out of the schema would let a policy pass validate and fail only at convert.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mlops_ci import trust
from mlops_ci.cli import main
from mlops_ci.errors import UsageError
from mlops_ci.manifest import parse_document
from mlops_ci.resources import POLICY_SCHEMA, load_schema

CORPUS = Path(__file__).parent / "corpus"
#: A class numpy ships in `numpy.lib` that opens local files and fetches URLs when asked.
NUMPY_LIB_CLASS = "numpy.lib.npyio.DataSource"


def policy_text(*trusted: str) -> str:
    items = "".join(f"  - {name}\n" for name in trusted)
    return f"apiVersion: mlops-ci/v1\nkind: Policy\ntiers: {{}}\ntrusted_types:\n{items}"


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_the_policy_schema_forbids_exactly_the_modules_trust_forbids() -> None:
    items = load_schema(POLICY_SCHEMA)["properties"]["trusted_types"]["items"]
    assert items["not"]["pattern"] == trust.forbidden_pattern(), (
        "schemas/policy.v1.json has drifted from trust.FORBIDDEN_MODULES: set its pattern to "
        "trust.forbidden_pattern()"
    )


@pytest.mark.parametrize("module", sorted(trust.FORBIDDEN_MODULES))
def test_every_forbidden_module_is_refused_by_the_schema_and_by_convert(module: str) -> None:
    name = f"{module}.Anything"
    _, problems, _ = parse_document(policy_text("sklearn.tree.DecisionTreeClassifier", name),
                                    ".mlops/policy.yaml", POLICY_SCHEMA)  # fmt: skip
    assert [(p.line, p.pointer) for p in problems] == [(6, "/trusted_types/1")]
    assert f"'{name}' is refused" in problems[0].message
    with pytest.raises(UsageError, match="is refused"):
        trust.check_class(name)


def test_a_name_that_only_starts_like_a_forbidden_module_is_not_refused() -> None:
    for name in ("numpy.library.Thing", "osmium.Thing", "torchvision_x.Thing", "sklearn.Thing"):
        assert not trust.is_forbidden(name)
        _, problems, _ = parse_document(policy_text(name), "p.yaml", POLICY_SCHEMA)
        assert problems == []


def test_validate_refuses_a_policy_trusting_numpy_lib_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    shutil.copy(CORPUS / "model.skops", repo / "model.skops")
    shutil.copy(CORPUS / "eval.csv", repo / "eval.csv")
    (repo / "m" / "model.yaml").write_text((CORPUS / "valid" / "model.yaml").read_text())
    (repo / ".mlops").mkdir()
    (repo / ".mlops" / "policy.yaml").write_text(policy_text(NUMPY_LIB_CLASS))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "policy trusting numpy.lib")

    assert main(["validate", "--format", "json", str(repo)]) == 1
    results = {Path(m["path"]).name: m for m in json.loads(capsys.readouterr().out)["manifests"]}
    assert results["model.yaml"]["valid"], "only the policy is at fault"
    (error,) = results["policy.yaml"]["errors"]
    assert (error["line"], error["pointer"]) == (5, "/trusted_types/0")
    assert error["message"].startswith(f"trusted_types[0]: '{NUMPY_LIB_CLASS}' is refused")

    assert main(["validate", str(repo)]) == 1
    assert ".mlops/policy.yaml:5:" in capsys.readouterr().err
    # convert reads the same policy at the base commit and refuses it at the same line (exit 2)
    with pytest.raises(UsageError, match=r"policy\.yaml at \w+ is invalid: line 5 .*is refused"):
        trust.trusted_types(repo, "HEAD")


def test_the_push_s_build_trusts_the_policy_as_merged_not_a_pull_request_s_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull request's model jobs read the policy at the event's base.sha, which may predate a
    type's removal on the branch (docs/governance.md: no secrets there, nothing ships). The
    push's build, which makes what ships, has no pull request in its event: it reads the policy
    of the merged commit, where the type is gone."""
    repo = tmp_path / "repo"
    (repo / ".mlops").mkdir(parents=True)
    kept = "sklearn.tree.DecisionTreeClassifier"
    (repo / ".mlops" / "policy.yaml").write_text(policy_text(kept, "sklearn.svm.SVC"))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "trusts SVC")
    opened_on = git(repo, "rev-parse", "HEAD")
    (repo / ".mlops" / "policy.yaml").write_text(policy_text(kept))
    git(repo, "commit", "-q", "-am", "SVC no longer trusted")
    monkeypatch.delenv(trust.POLICY_REF_ENV, raising=False)
    monkeypatch.chdir(repo)
    event = tmp_path / "event.json"
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    event.write_text(json.dumps({"pull_request": {"number": 7, "base": {"sha": opened_on}}}))
    assert trust.trusted_types(repo).types == (kept, "sklearn.svm.SVC")
    event.write_text(
        json.dumps({"ref": "refs/heads/main", "after": git(repo, "rev-parse", "HEAD")})
    )
    assert trust.policy_ref() == "HEAD"
    assert trust.trusted_types(repo).types == (kept,)
