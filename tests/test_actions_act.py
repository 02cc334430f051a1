"""The reusable workflow and the setup/validate actions, run for real with act on a pull request."""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path

import pytest
from act_harness import EXAMPLE_REPO, ActHarness, ActRun, ModelRepo, pull_request_event

import mlops_ci

pytestmark = pytest.mark.act


def _manifests(repo: Path) -> list[Path]:
    return sorted(p for p in repo.rglob("model.y*ml") if ".github" not in p.parts)


@pytest.fixture
def model_repo(act_harness: ActHarness) -> ModelRepo:
    """A git copy of examples/model-repo, caller workflow included."""
    return act_harness.model_repo(EXAMPLE_REPO)


def test_valid_manifests_pass_validation_and_write_the_step_summary(
    act_harness: ActHarness, model_repo: ModelRepo
) -> None:
    readme = model_repo.path / "README.md"
    readme.write_text("A pull request that touches no model.\n", encoding="utf-8")
    repo = model_repo.commit("Touch the README")

    run = act_harness.run(repo, "pull_request", pull_request_event(repo))

    assert run.job_result("validate") == "success", run.explain()
    assert run.annotations("error") == [], run.explain()
    summary = run.summary("validate")
    assert "mlops-ci validate" in summary, run.explain()
    for manifest in _manifests(repo.path):
        assert manifest.relative_to(repo.path).as_posix() in summary
    # plan diffs the PR's base and head from the event: only the README changed.
    assert run.job_result("plan") == "success", run.explain()
    assert run.outputs("plan", "plan")["changed"] == "false", run.explain()
    print(f"act run (valid manifests): {run.seconds:.2f}s")


def test_broken_manifest_fails_the_job_with_an_annotation_on_its_file_and_line(
    act_harness: ActHarness, model_repo: ModelRepo
) -> None:
    manifest = _manifests(model_repo.path)[0]
    lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
    line_no = next(i for i, text in enumerate(lines, 1) if re.match(r"\s*framework:", text))
    lines[line_no - 1] = re.sub(r"framework:.*", "framework: sklern", lines[line_no - 1])
    manifest.write_text("".join(lines), encoding="utf-8")
    repo = model_repo.commit("Break a manifest")

    run = act_harness.run(repo, "pull_request", pull_request_event(repo))

    assert run.job_result("validate") == "failure", run.explain()
    assert run.returncode != 0
    relative = manifest.relative_to(repo.path).as_posix()
    errors = [a for a in run.annotations("error") if a.job == "validate"]
    assert errors, run.explain()
    assert {a.file for a in errors} == {relative}, run.explain()
    typo = [a for a in errors if a.line == line_no]
    assert len(typo) == 1, run.explain()
    assert "'sklern'" in typo[0].message
    assert typo[0].col is not None
    assert "mlops-ci validate" in run.summary("validate")
    print(f"act run (broken manifest): {run.seconds:.2f}s")


_SETUP_WORKFLOW = """\
name: setup
on: pull_request
permissions: {}
jobs:
  reuse:
    runs-on: ubuntu-latest
    steps:
      - id: setup
        uses: mlops-ci/mlops-ci/actions/setup@v1
        with:
          extras: sklearn
      - shell: bash
        run: mlops-ci --version
  unknown-extra:
    runs-on: ubuntu-latest
    steps:
      - uses: mlops-ci/mlops-ci/actions/setup@v1
        with:
          extras: sklearn,tensorflow
  requested-python:
    runs-on: ubuntu-latest
    steps:
      - id: setup
        uses: mlops-ci/mlops-ci/actions/setup@v1
        with:
          python-version: "3.11"
"""


def test_setup_action_reuses_a_matching_install_and_refuses_an_unknown_extra(
    act_harness: ActHarness, model_repo: ModelRepo
) -> None:
    (model_repo.path / ".github" / "workflows" / "setup.yml").write_text(
        _SETUP_WORKFLOW, encoding="utf-8"
    )
    repo = model_repo.commit("Add a workflow that only sets up mlops-ci")

    # actions/setup-python, stood in for by a stub that "provides" the interpreter running us.
    setup_python = next(u for u in act_harness.local_repositories if "/setup-python@" in u)
    stub = f'echo "setup-python stub ran"\necho "python-path={sys.executable}" >> "$GITHUB_OUTPUT"'
    run = act_harness.run(
        repo,
        "pull_request",
        pull_request_event(repo),
        workflow=".github/workflows/setup.yml",
        stubs={setup_python: stub},
    )

    assert run.job_result("reuse") == "success", run.explain()
    assert "setup-python stub ran" not in run.log("reuse")
    outputs = run.outputs("reuse", "setup")
    assert outputs["reused"] == "true", run.explain()
    assert outputs["version"] == mlops_ci.__version__
    assert Path(outputs["python"]).parent == Path(sys.executable).parent
    assert f"mlops-ci {mlops_ci.__version__}" in run.log("reuse")

    assert run.job_result("unknown-extra") == "failure", run.explain()
    errors = run.annotations("error")
    assert [(a.job, a.title) for a in errors] == [("unknown-extra", "mlops-ci setup")]
    assert "mlops-ci has no extra tensorflow" in errors[0].message

    # With python-version set, setup-python runs and its interpreter's exact version must match.
    assert run.job_result("requested-python") == "success", run.explain()
    assert "setup-python stub ran" in run.log("requested-python")
    assert run.outputs("requested-python", "setup")["reused"] == "true"


_INSTALL_WORKFLOW = """\
name: install
on: pull_request
permissions: {}
jobs:
  install:
    runs-on: ubuntu-latest
    steps:
      - id: fresh
        uses: mlops-ci/mlops-ci/actions/setup@v1
        with:
          reuse-installed: "false"
      - shell: bash
        run: |
          echo "on PATH: $(command -v mlops-ci)"
      - id: again
        uses: mlops-ci/mlops-ci/actions/setup@v1
"""


@pytest.mark.slow
def test_setup_action_installs_from_its_own_checkout_into_runner_temp(
    act_harness: ActHarness, model_repo: ModelRepo
) -> None:
    (model_repo.path / ".github" / "workflows" / "install.yml").write_text(
        _INSTALL_WORKFLOW, encoding="utf-8"
    )
    repo = model_repo.commit("Add a workflow that installs mlops-ci")

    # A real install of the core from the package index (about 20-35 s); no extras, no torch.
    run = act_harness.run(
        repo, "pull_request", pull_request_event(repo), workflow=".github/workflows/install.yml"
    )

    assert run.job_result("install") == "success", run.explain()
    fresh = run.outputs("install", "fresh")
    assert fresh["reused"] == "false"
    assert fresh["version"] == mlops_ci.__version__
    venv_bin = Path(fresh["python"]).parent
    assert venv_bin.parent.name == "mlops-ci-venv"
    assert f"on PATH: {venv_bin / 'mlops-ci'}" in run.log("install")
    # The second setup in the same job finds the first one's virtualenv and keeps it.
    assert run.outputs("install", "again") == fresh | {"reused": "true"}
    print(f"act run (fresh install of the core): {run.seconds:.2f}s")


_CACHE_WORKFLOW = """\
name: cache
on: pull_request
permissions: {}
jobs:
  environment:
    runs-on: ubuntu-latest
    steps:
      - id: setup
        uses: mlops-ci/mlops-ci/actions/setup@v1
        with:
          reuse-installed: "false"
          cache: save
  model:
    needs: environment
    runs-on: ubuntu-latest
    steps:
      - id: setup
        uses: mlops-ci/mlops-ci/actions/setup@v1
        with:
          reuse-installed: "false"
          cache: restore
      - shell: bash
        run: |
          echo "on PATH: $(command -v mlops-ci)"
          mlops-ci --version
"""


def _step_seconds(run: ActRun, job: str, step: str) -> float:
    """Wall time of one step of a job, from the timestamps of act's log lines."""
    import datetime as dt

    times = [
        dt.datetime.fromisoformat(e["time"])
        for e in run.events
        if e.get("jobID") == job and e.get("stepID") == [step] and "time" in e
    ]
    assert times, run.explain()
    return (max(times) - min(times)).total_seconds()


@pytest.mark.slow
def test_matrix_jobs_restore_the_environment_one_job_installed(
    act_harness: ActHarness, model_repo: ModelRepo, tmp_path: Path
) -> None:
    (model_repo.path / ".github" / "workflows" / "cache.yml").write_text(
        _CACHE_WORKFLOW, encoding="utf-8"
    )
    repo = model_repo.commit("Add a workflow that installs once and restores")
    caches = tmp_path / "actions-cache"

    # One real install of the core (about 20-35 s), saved; the next job restores it.
    run = act_harness.run(
        repo,
        "pull_request",
        pull_request_event(repo),
        workflow=".github/workflows/cache.yml",
        cache_store=caches,
    )

    assert run.job_result("model") == "success", run.explain()
    saved = run.outputs("environment", "setup")
    assert (saved["reused"], saved["restored"]) == ("false", "false"), run.explain()
    (key,) = [p.name for p in caches.iterdir()]
    assert key.startswith("mlops-ci-venv-")
    assert key.endswith(f"-py{platform.python_version()}-{mlops_ci.__version__}-core")

    restored = run.outputs("model", "setup")
    assert restored["restored"] == "true", run.explain()
    assert "from the Actions cache" in run.log("model")
    assert "installing" not in run.log("model")
    assert f"mlops-ci {mlops_ci.__version__}" in run.log("model")
    seconds = _step_seconds(run, "model", "setup")
    assert seconds <= 15, f"restoring took {seconds:.1f} s"
    print(
        f"act run: install + save {_step_seconds(run, 'environment', 'setup'):.1f}s, "
        f"restore {seconds:.1f}s"
    )
