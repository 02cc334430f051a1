"""Re-verifying a push to the default branch before it deploys: the pull request whose merge
produced the pushed commit, the gate's own decision for it as it stood at merge (`gate.evaluate`:
the policy at its base, reviews on its final head), and the approval bound to the bytes: every
model the push changes was changed by that pull request, and its manifest and artifact at the
pushed commit are the very blobs of the approved head. Anything else is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from mlops_ci.errors import CheckFailed
from mlops_ci.github import GitHub
from mlops_ci.policy import Decision, Review


class Refused(CheckFailed):
    """The push may not deploy (exit 1); the message says why, for the audit record too."""


@dataclass(frozen=True)
class ModelFiles:
    """A model the push changes: its name and the repository paths its approval must cover."""

    name: str
    manifest: str
    artifact: str


@dataclass(frozen=True)
class Approval:
    """The verified provenance of a push: the pull request and whose approvals counted."""

    pull_request: dict[str, Any]  # number, url, head_sha
    approvers: tuple[dict[str, Any], ...]  # login, review_id, commit, time
    decision: Decision


def merged_pull(gh: GitHub, sha: str) -> dict[str, Any]:
    """The merged pull request whose merge commit is `sha` (merge, squash and rebase alike:
    GitHub's `merge_commit_sha` is the commit that landed on the base branch)."""
    for pull in gh.commit_pulls(sha):
        if pull.get("merged_at") and pull.get("merge_commit_sha") == sha:
            return pull
    raise Refused(
        f"no merged pull request produced {sha[:12]}: a direct push to the default branch is "
        "never deployed (merge a reviewed pull request instead)"
    )


def as_at_merge(
    reviews: Sequence[Review], dismissals: Mapping[int, tuple[str, str]], merged_at: Any
) -> list[Review]:
    """The reviews as they stood at the merge (GitHub's times, to the second): those submitted
    by then, and a review dismissed after it with the state it had (a change request that
    blocked the merge still blocks). A review without a time, or a merge without one, counts
    for nothing."""
    merged = _time(merged_at)
    if merged is None:
        return []
    out = []
    for review in reviews:
        submitted = _time(review.submitted_at)
        if submitted is None or submitted > merged:
            continue
        before, when = dismissals.get(review.id, ("", None))
        dismissed = _time(when)
        if review.state == "DISMISSED" and before and (dismissed is None or dismissed > merged):
            review = replace(review, state=before)
        out.append(review)
    return out


def _time(text: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


def approvers(reviews: Sequence[Review], decision: Decision) -> tuple[dict[str, Any], ...]:
    """Each counted approver's latest approving review of the head commit."""
    out = []
    for login in decision.counted:
        approving = [
            r
            for r in reviews
            if r.login == login and r.state == "APPROVED" and r.commit_id == decision.head_sha
        ]
        if approving:
            r = approving[-1]
            out.append(
                {"login": login, "review_id": r.id, "commit": r.commit_id, "time": r.submitted_at}
            )
    return tuple(out)


def reverify(gh: GitHub, sha: str, models: Sequence[ModelFiles]) -> Approval:
    """The approval behind pushed commit `sha` for `models`, or Refused saying why not."""
    from mlops_ci import gate

    found = merged_pull(gh, sha)
    number = int(found["number"])
    pull = gh.pull_request(number)
    # Judged by the gate, then named in the release: the reviews as they stood at merge. An
    # approval given after an admin merge must not let a re-run of the publish deploy it.
    listed = gh.reviews(number)
    # the timeline only says when a review was dismissed: read it only when one was
    dismissed = gh.dismissals(number) if any(r.state == "DISMISSED" for r in listed) else {}
    reviews = as_at_merge(listed, dismissed, found.get("merged_at"))
    decision = gate.evaluate(gh, pull, reviews)
    if not decision.approved:
        raise Refused(
            f"pull request #{number} was merged without the approvals it needs: {decision.reason}"
        )
    approved = {o.name for o in decision.outcomes}
    for model in models:
        if model.name not in approved:
            raise Refused(
                f"{model.name} changed in {sha[:12]} but not in pull request #{number}, so no "
                "approval covers it"
            )
        for path in (model.manifest, model.artifact):
            pushed, reviewed = gh.blob_sha(path, sha), gh.blob_sha(path, pull.head_sha)
            if pushed is None or pushed != reviewed:
                raise Refused(
                    f"{path} at {sha[:12]} is not the file approved in pull request #{number} "
                    f"(its head {pull.head_sha[:12]}): only approved bytes are deployed"
                )
    return Approval(
        pull_request={
            "number": number,
            "url": str(found.get("html_url") or ""),
            "head_sha": pull.head_sha,
        },
        approvers=approvers(reviews, decision),
        decision=decision,
    )
