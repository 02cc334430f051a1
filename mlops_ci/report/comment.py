"""`mlops-ci report`: the model report printed, saved, added to the job summary, annotated, and
kept as one sticky pull-request comment, summarised to fit GitHub's comment limit.

The comment is found again by its marker *and* its author (`GitHub.login`): a marker alone is
something anyone can type into a comment of their own.

Fork pull requests get a read-only token, so their run cannot comment: the report is then saved
as `pr-comment.json` (uploaded as an artifact by `actions/report`), and a `workflow_run` job in
the base repository posts it with `mlops-ci report --post-prepared`, never checking out or
running the fork's code, after checking that the pull request named in the file really has the
head commit the triggering run was for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_ci import atomic, gha
from mlops_ci.errors import CheckFailed, MlopsCiError, UsageError
from mlops_ci.report import annotate, markdown
from mlops_ci.report.escape import MARKER
from mlops_ci.report.results import STAGE_FILES, ModelReport, gather

if TYPE_CHECKING:
    from mlops_ci.github import GitHub

#: GitHub rejects issue comments longer than this (characters).
COMMENT_LIMIT = 65_536
#: The job summary's limit is 1 MiB per step, in bytes (the runner drops a larger one whole);
#: stay well below it.
SUMMARY_LIMIT = 1_000_000
PREPARED_FILE = "pr-comment.json"


def main(folder: Path, *, pr: int | None, post: bool, out: Path | None) -> int:
    """Render, print, summarise, annotate and (with `post`) upsert the comment."""
    reports = gather(folder)
    if not reports:
        raise UsageError(f"no stage reports ({', '.join(STAGE_FILES)}) under {folder}")
    # Where to post is settled first: a usage error after pages of printed report gets lost.
    gh, pr = _where_to_post(pr) if post else (None, None)
    full = markdown.render(reports)
    print(full)
    if out is not None:
        atomic.write_text(out, full)
    gha.write_summary(markdown.render(reports, limit=SUMMARY_LIMIT, size=markdown.utf8_bytes))
    if gha.in_actions():  # workflow commands are noise in a terminal
        annotate.models(reports)
    if gh is None or pr is None:
        return 0
    body = markdown.render(reports, limit=COMMENT_LIMIT, details_url=gh.run_url())
    pull = gh.pull_request(pr)
    tested = _event_head()
    if tested is not None and pull.head_sha != tested:
        # A re-run of an older run, or one that a newer push did not cancel: its report must
        # not replace the newer commit's. It stays in this run's summary.
        print(
            f"mlops-ci report: #{pr} is now at {pull.head_sha[:12]}, this run tested "
            f"{tested[:12]}: the comment is left to the newer commit's run"
        )
        return 0
    if pull.from_fork:
        return _hand_over(folder, pr, reports)
    found = gh.own_comment(pr, MARKER)
    if found is not None:
        # Our comment exists, so this token could write it: a refusal now is an error to
        # see, never a reason to quietly hand the report to another job.
        gh.edit_comment(found, body)
        comment_id, created = found, False
    else:
        try:
            comment_id, created = gh.create_comment(pr, body), True
        except MlopsCiError as exc:
            # 403 on creating: a read-only token (a fork's, Dependabot's)
            if getattr(exc.__cause__, "status", None) != 403:
                raise
            return _hand_over(folder, pr, reports)
    (folder / PREPARED_FILE).unlink(missing_ok=True)  # a stale one must never be posted later
    print(f"mlops-ci report: {'created' if created else 'updated'} comment {comment_id} on #{pr}")
    return 0


def _event_head() -> str | None:
    """The head commit a pull_request event's run tested (None: no such event, e.g. --pr N
    given on a laptop)."""
    from mlops_ci import github

    head = ((github.event_payload().get("pull_request") or {}).get("head") or {}).get("sha")
    return head if isinstance(head, str) and head else None


def _where_to_post(pr: int | None) -> tuple[GitHub, int]:
    """The GitHub client and the pull request `--post` comments on, or a usage error."""
    from mlops_ci import github

    pr = pr or github.event_pull_number()
    if pr is None:
        raise UsageError("--post needs the pull request: --pr N (or a pull_request event)")
    return github.GitHub.from_env(), pr


def _hand_over(folder: Path, pr: int, reports: Sequence[ModelReport]) -> int:
    from mlops_ci import github

    prepared = prepare(folder, pr, reports, github.event_payload())
    print(
        f"mlops-ci report: this run's token cannot comment on #{pr} (a fork pull request?); "
        f"wrote {prepared} for a workflow_run job to post"
    )
    gha.annotation(
        "notice",
        f"The report could not be posted from this run; {PREPARED_FILE} holds it for the "
        "workflow_run job that posts reports of fork pull requests.",
        title="mlops-ci report",
    )
    return 0


def prepare(
    folder: Path, pr: int, reports: Sequence[ModelReport], event: Mapping[str, Any]
) -> Path:
    """Save the stage results for a `workflow_run` job: `folder/pr-comment.json`.

    The results, not the rendered comment: the job that posts it renders them again, so
    everything the fork's run wrote passes through the same escaping as any report.
    """
    head = ((event.get("pull_request") or {}).get("head") or {}).get("sha")
    doc = {"pr": pr, "head_sha": head, "models": [r.to_docs() for r in reports]}
    return atomic.write_json(folder / PREPARED_FILE, doc)


def post_prepared(path: Path) -> int:
    """Post a `pr-comment.json` from a fork's run; for a `workflow_run`-triggered job.

    The file came from a run of untrusted code, so nothing in it is believed without a check:
    the pull request it names must have, right now, the head commit of the run that triggered
    this job (`workflow_run.head_sha` of the event); the comment is rendered here from the stage
    results, with all the escaping, and the comment to edit is found by our marker among our
    own comments.
    """
    from mlops_ci import github

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the prepared comment: {exc}", path=path) from None
    pr, models = (doc.get("pr"), doc.get("models")) if isinstance(doc, dict) else (None, None)
    if not isinstance(pr, int) or isinstance(pr, bool) or pr <= 0 or not isinstance(models, list):
        raise CheckFailed("not a prepared comment (needs a pr number and models)", path=path)
    try:
        reports = [ModelReport.from_prepared(m) for m in models]
    except ValueError as exc:
        raise CheckFailed(f"not a prepared comment: {exc}", path=path) from None
    event_run = github.event_payload().get("workflow_run")
    run: dict[str, Any] = event_run if isinstance(event_run, dict) else {}
    head_sha = run.get("head_sha")
    if not head_sha:
        raise UsageError(
            "--post-prepared runs in a workflow_run job (no workflow_run in the event)"
        )
    gh = github.GitHub.from_env()
    actual = gh.pull_request(pr).head_sha
    if actual != head_sha:
        raise CheckFailed(
            f"refusing to post: pull request #{pr} is at {actual[:12]}, but the run that "
            f"produced the report was for {str(head_sha)[:12]}"
        )
    # the full report is in the summary of the run that tested the fork, not of this one
    details = run["html_url"] if isinstance(run.get("html_url"), str) else None
    body = markdown.render(reports, limit=COMMENT_LIMIT, details_url=details)
    comment_id, created = gh.upsert_comment(pr, MARKER, body)
    print(f"mlops-ci report: {'created' if created else 'updated'} comment {comment_id} on #{pr}")
    return 0
