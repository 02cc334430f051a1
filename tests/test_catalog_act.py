"""The reusable workflow's `catalog` job, run for real with act on a push to the default branch,
up to the Pages upload (deploy-pages needs GitHub's Pages service and cannot run offline)."""

from __future__ import annotations

import json
import re
import shlex
import tarfile
from pathlib import Path

import pytest
from act_harness import EXAMPLE_REPO, PROJECT, ActHarness, ModelRepo, StubAction, push_event
from catalog_data import sample_registry

pytestmark = pytest.mark.act

_WORKFLOW = PROJECT / ".github" / "workflows" / "mlops-ci.yml"

CALLER = """\
name: mlops-ci
on:
  push:
    branches: [main]
permissions: {{}}
jobs:
  mlops-ci:
    uses: mlops-ci/mlops-ci/.github/workflows/mlops-ci.yml@v1
    permissions:
      contents: read
      pull-requests: write
      statuses: write
      pages: write
      id-token: write
    with:
      registry: {registry}
      catalog: true
"""

# What actions/upload-pages-artifact does on Linux (its action.yml): one tar of the folder,
# .git and .github left out, uploaded as the artifact `github-pages`.
_UPLOAD_PAGES = """set -euo pipefail
name=${{INPUT_NAME:-github-pages}}
mkdir -p {store}/"$name"
tar --dereference --hard-dereference --directory "$INPUT_PATH" \\
  -cvf {store}/"$name"/artifact.tar --exclude=.git --exclude=.github .
echo "artifact_id=1" >> "$GITHUB_OUTPUT"
"""


def _pinned(repo: str) -> str:
    found = re.search(rf"uses: ({re.escape(repo)}@[0-9a-f]{{40}}) # v\d", _WORKFLOW.read_text())
    assert found, f"{repo} is not pinned by SHA with a version comment"
    return found.group(1)


def _catalog_repo(act_harness: ActHarness, tmp_path: Path) -> ModelRepo:
    registry = tmp_path / "registry"
    sample_registry(registry)
    repo = act_harness.model_repo(EXAMPLE_REPO)
    caller = repo.path / ".github" / "workflows" / "mlops-ci.yml"
    caller.write_text(CALLER.format(registry=json.dumps(str(registry))), encoding="utf-8")
    return repo.commit("Publish the catalog")


def _pages_stubs(pages_store: Path) -> dict[str, str | StubAction]:
    upload = _pinned("actions/upload-pages-artifact")
    deploy = _pinned("actions/deploy-pages")
    return {
        upload: StubAction(
            _UPLOAD_PAGES.format(store=shlex.quote(str(pages_store))), ("name", "path")
        ),
        # Stands in for the deployment only; the site was built and uploaded for real.
        deploy: StubAction('echo "page_url=https://acme.github.io/models/" >> "$GITHUB_OUTPUT"'),
    }


def test_push_writes_the_catalog_and_uploads_it_for_pages(
    act_harness: ActHarness, tmp_path: Path
) -> None:
    repo = _catalog_repo(act_harness, tmp_path)
    pages_store = tmp_path / "pages"
    stubs = _pages_stubs(pages_store)

    run = act_harness.run(repo, "push", push_event(repo), stubs=stubs)

    assert run.job_result("catalog") == "success", run.explain()
    assert "### mlops-ci catalog" in run.summary("catalog"), run.explain()
    with tarfile.open(pages_store / "github-pages" / "artifact.tar") as tar:
        names = set(tar.getnames())
        assert {"./index.html", "./catalog.json", "./models/fraud-detector.html"} <= names
        doc = json.load(tar.extractfile("./catalog.json"))  # type: ignore[arg-type]
    states = {m["name"]: m["state"] for m in doc["models"]}
    assert states["fraud-detector"] == "attention"
    assert states["diabetes-risk"] == "not deployed"  # from the checkout (--repo .)
    print(f"act run (catalog job): {run.seconds:.2f}s")


def test_a_tag_named_like_the_default_branch_publishes_no_catalog(
    act_harness: ActHarness, tmp_path: Path
) -> None:
    """refs/tags/main has the ref_name `main` too: a caller whose `on: push` takes tags must not
    publish (or deploy) the commit a tag points at, which no pull request may have reviewed."""
    repo = _catalog_repo(act_harness, tmp_path)
    caller = repo.path / ".github" / "workflows" / "mlops-ci.yml"
    text = caller.read_text(encoding="utf-8").replace("    branches: [main]\n", "")
    caller.write_text(text.replace("  push:\n", "  push: {}\n"), encoding="utf-8")
    repo = repo.commit("Every push, tags too")
    pages_store = tmp_path / "pages"

    run = act_harness.run(
        repo, "push", push_event(repo, ref="refs/tags/main"), stubs=_pages_stubs(pages_store)
    )

    assert run.job_result("plan") == "success", run.explain()
    assert run.job_result("catalog") is None, run.explain()
    assert not pages_store.exists()


def test_pages_permissions_belong_to_the_catalog_job_alone() -> None:
    import yaml

    workflow = yaml.safe_load(_WORKFLOW.read_text(encoding="utf-8"))
    assert workflow["permissions"] == {}
    for name, job in workflow["jobs"].items():
        permissions = job.get("permissions", {})
        if name == "catalog":
            assert permissions == {"contents": "read", "pages": "write", "id-token": "write"}
        else:
            assert "pages" not in permissions and "id-token" not in permissions, name
