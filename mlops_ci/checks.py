"""`mlops-ci checks`: the pull request's model jobs as one commit status, `mlops-ci/checks`.

Branch protection cannot require the per-model jobs (their names change with every matrix), so
this one status stands for all of them: success only when every job it is given succeeded, and a
model job that failed, was cancelled or never ran turns it red. The workflow's final job runs it
with `needs` (its jobs' results, as `toJSON(needs)`), whatever became of those jobs.

The status is the pull request's base branch's (`status_context`): `mlops-ci/checks` for a pull
request into the default branch, `mlops-ci/checks (B)` for one into B. A status belongs to the
head commit, so "No model changed" counted from a branch the author cut where the model had
already changed must never land on the context the default branch requires.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlops_ci import gha
from mlops_ci.errors import EXIT_OK, EXIT_VERDICT, MlopsCiError, UsageError
from mlops_ci.status_context import CHECKS, for_base

#: The context of a pull request into the default branch (`status_context.for_base`).
CONTEXT = CHECKS
NEEDS_ENV = "MLOPS_CI_NEEDS"
#: The job that runs once per changed model; skipped (and so fine) when no model changed.
MODEL_JOB = "model"


@dataclass(frozen=True)
class Verdict:
    """Whether the pull request's checks passed, and one line saying why."""

    passed: bool
    description: str
    jobs: Mapping[str, str]


def verdict(needs: Mapping[str, Any]) -> Verdict:
    """Judge the `needs` context: every job must have succeeded; the model job may only be
    skipped when the plan says no model changed. Anything missing counts as not finished."""
    if not needs:
        raise UsageError(f"{NEEDS_ENV} names no jobs: pass the workflow's toJSON(needs)")
    results: dict[str, str] = {}
    for job, value in needs.items():
        result = value.get("result") if isinstance(value, Mapping) else None
        results[str(job)] = str(result or "missing")
    plan = needs.get("plan")
    outputs = plan.get("outputs") if isinstance(plan, Mapping) else None
    changed = isinstance(outputs, Mapping) and str(outputs.get("changed", "")).lower() == "true"
    bad = [
        f"{job} {result}"
        for job, result in results.items()
        if result != "success" and not (job == MODEL_JOB and result == "skipped" and not changed)
    ]
    # A workflow wired without them (edited by hand) must not pass for want of a job: without
    # `plan` nothing says whether a model changed; without the model job none was tested.
    bad += [f"{job} missing" for job in ("plan", MODEL_JOB) if job not in results]
    if bad:
        return Verdict(False, "Not passed: " + ", ".join(bad), results)
    if changed:
        return Verdict(
            True, "Every changed model passed validate, convert, test and bench", results
        )
    return Verdict(True, "No model changed", results)


def _needs(raw: str | None) -> dict[str, Any]:
    if not raw:
        raise UsageError(f"no job results: set {NEEDS_ENV} to ${{{{ toJSON(needs) }}}}")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{NEEDS_ENV} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{NEEDS_ENV} must be a JSON object of jobs")
    return data


def _event_pull() -> dict[str, Any] | None:
    from mlops_ci.github import event_payload

    pr = event_payload().get("pull_request")
    return pr if isinstance(pr, dict) else None


def _head_sha(pr: Mapping[str, Any] | None) -> str | None:
    sha = (pr.get("head") or {}).get("sha") if pr is not None else None
    return sha if isinstance(sha, str) and sha else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def context(pr: Mapping[str, Any] | None) -> str:
    """The context for the event's pull request: its base branch's. The base is the event's,
    the one `plan` counted the changes from. Without a pull request event (`--sha` by hand)
    the default branch's."""
    if pr is None:
        return CONTEXT
    base: Mapping[str, Any] = _mapping(pr.get("base"))
    default = _mapping(base.get("repo")).get("default_branch")
    if not default:
        from mlops_ci.github import event_payload

        repository = event_payload().get("repository")
        default = repository.get("default_branch") if isinstance(repository, dict) else None
    return for_base(CONTEXT, str(base.get("ref") or ""), str(default or ""))


def main(*, needs: str | None = None, sha: str | None = None, post_status: bool = True) -> int:
    """Exit 0 when the checks passed, 1 when not, 2 when the status cannot be written."""
    result = verdict(_needs(needs if needs is not None else os.environ.get(NEEDS_ENV)))
    pr = _event_pull()
    name = context(pr)
    mark = "✅" if result.passed else "❌"
    rows = "\n".join(f"| `{job}` | {state} |" for job, state in result.jobs.items())
    gha.write_summary(
        f"## {mark} `{name}`\n\n{result.description}\n\n| Job | Result |\n|---|---|\n{rows}\n"
    )
    gha.set_output("passed", "true" if result.passed else "false")
    gha.set_output("context", name)
    print(f"{name}: {'passed' if result.passed else 'NOT passed'}: {result.description}")
    if post_status:
        from mlops_ci.github import GitHub

        target = sha or _head_sha(pr)
        if not target:
            raise UsageError("no commit to mark: pass --sha, or run on a pull_request event")
        gh = GitHub.from_env()
        state = "success" if result.passed else "failure"
        try:
            gh.set_status(target, state, result.description, name, gh.run_url())
        except MlopsCiError as exc:
            raise MlopsCiError(f"could not set the commit status {name}: {exc}") from exc
    return EXIT_OK if result.passed else EXIT_VERDICT
