"""The reusable workflow's deploy jobs, run for real with act: `build` (no secrets) and `publish`
on a push to main after a merged pull request, and `rollback` on a workflow_dispatch. GitHub is
tests/ghserver.py; the registry is a temporary folder, and once a bucket on SeaweedFS."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from act_harness import EXAMPLE_REPO, TOKEN, ActHarness, ModelRepo, push_event
from deploy_models import candidate
from ghserver import fake_sha

from mlops_ci import audit, deploy
from mlops_ci.registry import open_registry

pytestmark = pytest.mark.act

MODEL = "disease-progression"  # risk low: one approval from anyone with write access
CALLER = """\
name: mlops-ci
on:
  push:
    branches: [main]
  workflow_dispatch:
    inputs:
      model: {{type: string, default: ""}}
      to: {{type: string, default: ""}}
      reason: {{type: string, default: ""}}
permissions: {{}}
jobs:
  mlops-ci:
    uses: mlops-ci/mlops-ci/.github/workflows/mlops-ci.yml@v1
    permissions:
      contents: read
      pull-requests: read
      deployments: write
    with:
      registry: {registry}
      environment: staging
      rollback-model: ${{{{ inputs.model }}}}
      rollback-to: ${{{{ inputs.to }}}}
      rollback-reason: ${{{{ inputs.reason }}}}
"""


def _tree(repo: Path, ref: str) -> dict[str, bytes]:
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", ref],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {
        n: subprocess.run(
            ["git", "show", f"{ref}:{n}"], cwd=repo, check=True, capture_output=True
        ).stdout
        for n in names
    }


S3_CALLER = CALLER.replace(
    "      environment: staging\n",
    "      registry-endpoint-url: {endpoint}\n      environment: staging\n",
).replace(
    "      rollback-reason: ${{{{ inputs.reason }}}}\n",
    "      rollback-reason: ${{{{ inputs.reason }}}}\n"
    "    secrets:\n"
    "      registry-access-key-id: ${{{{ secrets.REGISTRY_KEY_ID }}}}\n"
    "      registry-secret-access-key: ${{{{ secrets.REGISTRY_SECRET }}}}\n"
    "      registry-read-access-key-id: ${{{{ secrets.REGISTRY_KEY_ID }}}}\n"
    "      registry-read-secret-access-key: ${{{{ secrets.REGISTRY_SECRET }}}}\n",
)


def _merged_repo(
    act_harness: ActHarness, registry: Path | str, caller_text: str | None = None
) -> ModelRepo:
    """main before the push (the example committed with no pull request, as a repository that
    adopts mlops-ci has its models), then the merge of a pull request that bumps
    disease-progression and adopts that history: it names main's commit as the policy's
    baseline (`deploy.reviewed_at`, docs/policy.md), so the artifact it leaves untouched counts
    as reviewed (deploy ships only reviewed bytes: docs/deploy.md, "Deploy on merge", step 4)."""
    repo = act_harness.model_repo(EXAMPLE_REPO)
    caller = repo.path / ".github" / "workflows" / "mlops-ci.yml"
    text = caller_text or CALLER.format(registry=json.dumps(str(registry)))
    caller.write_text(text, encoding="utf-8")
    repo = repo.commit("Deploy into a test registry")
    repo = ModelRepo(repo.path, repo.repository, repo.head, repo.head)
    manifest = repo.path / "models" / MODEL / "model.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.1.0", 1))
    policy = repo.path / ".mlops" / "policy.yaml"
    policy.write_text(f'{policy.read_text()}deploy:\n  reviewed_at: "{repo.head}"\n')
    return repo.commit("disease-progression 1.1.0, adopting the history (#1)")


def _github(ghserver, repo: ModelRepo, *, approved: bool):
    ghserver.token = TOKEN
    gh_repo = ghserver.add_repo("acme/models")
    # #1 changes the policy: the high tier, two approvals from @acme/ml-governance
    for login in ("bob", "dave"):
        gh_repo.permissions[login] = "write"
        ghserver.add_team_member("@acme/ml-governance", login)
    merged = _tree(repo.path, repo.head)
    pull = gh_repo.add_pull(
        1,
        author="alice",
        base_files=_tree(repo.path, repo.base),
        head_files=merged,
        head_sha=fake_sha("pr1-head"),
        base_sha=repo.base,
    )
    if approved:
        pull.add_review("bob", "APPROVED")
        pull.add_review("dave", "APPROVED")
    pull.merge(repo.head, files=merged)
    return gh_repo


def _push(
    act_harness: ActHarness, repo: ModelRepo, ghserver, secrets: dict[str, str] | None = None
):
    event = push_event(repo)
    return act_harness.run(
        repo,
        "push",
        event,
        api_url=ghserver.url,
        env={"MLOPS_CI_GITHUB_MAX_WAIT": "0.01"},
        secrets=secrets,
        timeout=600,
    )


def test_a_push_after_an_approved_merge_deploys_with_a_deployment(
    act_harness: ActHarness, tmp_path: Path, ghserver
) -> None:
    registry = tmp_path / "registry"
    repo = _merged_repo(act_harness, registry)
    gh_repo = _github(ghserver, repo, approved=True)

    run = _push(act_harness, repo, ghserver)

    assert run.job_result("publish") == "success", run.explain()
    # build ran with no secrets and handed publish the ONNX model with its convert.json
    assert f"mlops-ci-build-{MODEL}" in run.artifact_names(), run.explain()
    reg = open_registry(registry)
    assert reg.serving_version(MODEL) == 1
    release = reg.release(MODEL, 1)
    assert (release["version"], release["commit"]) == ("1.1.0", repo.head)
    assert release["pull_request"]["number"] == 1
    assert [a["login"] for a in release["approvers"]] == ["bob", "dave"]
    assert audit.verify(reg).ok
    [deployment] = gh_repo.deployments
    assert (deployment["sha"], deployment["environment"]) == (repo.head, "staging")
    assert [s["state"] for s in deployment["statuses"]] == ["in_progress", "success"]
    print(f"act run (push → build, publish): {run.seconds:.2f}s")


def test_a_push_deploys_into_an_s3_registry_with_the_callers_secrets(
    act_harness: ActHarness, seaweedfs, monkeypatch: pytest.MonkeyPatch, ghserver
) -> None:
    """The same push, into a registry on S3 (SeaweedFS, which checks every signature): the
    caller passes the endpoint as an input and the keys as secrets; publish gets them, and the
    registry's own S3 client deploys with them. Only publish holds the write key."""
    uri = seaweedfs.fresh_uri()
    caller = S3_CALLER.format(registry=json.dumps(uri), endpoint=json.dumps(seaweedfs.endpoint))
    repo = _merged_repo(act_harness, uri, caller)
    _github(ghserver, repo, approved=True)
    secrets = {"REGISTRY_KEY_ID": seaweedfs.access_key, "REGISTRY_SECRET": seaweedfs.secret_key}

    run = _push(act_harness, repo, ghserver, secrets)

    assert run.job_result("publish") == "success", run.explain()
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    reg = open_registry(uri)
    assert reg.serving_version(MODEL) == 1
    assert reg.release(MODEL, 1)["version"] == "1.1.0"
    verified = audit.verify(reg)
    assert verified.ok, verified.problem


def test_an_unapproved_push_is_refused_and_recorded(
    act_harness: ActHarness, tmp_path: Path, ghserver
) -> None:
    registry = tmp_path / "registry"
    repo = _merged_repo(act_harness, registry)
    gh_repo = _github(ghserver, repo, approved=False)

    run = _push(act_harness, repo, ghserver)

    assert run.job_result("publish") == "failure", run.explain()
    reg = open_registry(registry)
    assert reg.models() == []
    [record] = audit.records(reg)
    assert record["action"] == "refused" and "without the approvals" in record["reason"]
    [deployment] = gh_repo.deployments
    assert deployment["statuses"][-1]["state"] == "failure"


def test_a_workflow_dispatch_rollback_switches_the_serving_version(
    act_harness: ActHarness, tmp_path: Path, ghserver
) -> None:
    registry = tmp_path / "registry"
    reg = open_registry(registry)
    provenance = deploy.Provenance(source="github", actor="ci", commit=fake_sha("v1"))
    deploy.publish(reg, candidate("iris", "1.0.0"), provenance)
    deploy.publish(reg, candidate("iris", "1.1.0", salt="b"), provenance)
    repo = act_harness.model_repo(EXAMPLE_REPO)
    caller = repo.path / ".github" / "workflows" / "mlops-ci.yml"
    caller.write_text(CALLER.format(registry=json.dumps(str(registry))), encoding="utf-8")
    repo = repo.commit("Rollbacks by workflow_dispatch")
    ghserver.token = TOKEN
    gh_repo = ghserver.add_repo("acme/models")
    event = {
        "inputs": {"model": "iris", "to": "1", "reason": "accuracy dropped"},
        "ref": "refs/heads/main",
        "repository": {"full_name": "acme/models", "default_branch": "main"},
        "sender": {"login": "oncall", "type": "User"},
    }

    run = act_harness.run(repo, "workflow_dispatch", event, api_url=ghserver.url, timeout=600)

    assert run.job_result("rollback") == "success", run.explain()
    assert reg.serving_version("iris") == 1
    record = audit.records(reg)[-1]
    assert (record["action"], record["actor"], record["reason"]) == (
        "rollback",
        "oncall",
        "accuracy dropped",
    )
    [deployment] = gh_repo.deployments
    assert deployment["payload"]["rollback"] == "accuracy dropped"
    assert deployment["statuses"][-1]["state"] == "success"
    assert run.job_result("monitor") is None  # a rollback dispatch does not monitor
