"""`mlops-ci gate`: read a pull request through the API, decide, post `mlops-ci/governance`.

It reads files only through the contents API at the base and head SHAs and never checks out or
runs anything from the pull request. It fails closed: an error posts a failing status when it
still can, and exits 2.

A pull request into another branch B is judged by B's policy and posts `mlops-ci/governance (B)`
(`status_context`): a status belongs to the head commit, so the default branch's context is only
ever written for a pull request into the default branch. `evaluate` itself (which deploy's
re-verification calls) still approves only pull requests into the default branch.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import sys

from mlops_ci import gha, manifest, policy, status_context
from mlops_ci.changes import FileChange, touched_models
from mlops_ci.errors import EXIT_OK, EXIT_VERDICT, MlopsCiError, UsageError
from mlops_ci.github import (
    ChangedFile,
    GitHub,
    PullRequest,
    event_payload,
    event_pull_number,
)
from mlops_ci.manifest import MANIFEST_NAMES
from mlops_ci.policy import (
    POLICY_PATH,
    Decision,
    ManifestSide,
    ModelChange,
    PullFacts,
    Review,
)
from mlops_ci.report import escape, markdown, terminal

#: The context of a pull request into the default branch (`status_context.for_base`).
CONTEXT = status_context.GOVERNANCE


class _Reader:
    """Reads manifests at the base and head commits, each (path, ref) at most once."""

    def __init__(self, gh: GitHub) -> None:
        self.gh = gh
        self._texts: dict[tuple[str, str], str | None] = {}

    def text(self, path: str, ref: str) -> str | None:
        key = (path, ref)
        if key not in self._texts:
            self._texts[key] = self.gh.file_text(path, ref)
        return self._texts[key]

    def side(self, path: str | None, ref: str) -> ManifestSide | None:
        text = self.text(path, ref) if path else None
        if path is None or text is None:
            return None
        data, problems, _ = manifest.parse_document(text, path)
        return policy.manifest_side(path, data, problems)

    def manifest_in(self, folder: str, ref: str) -> str | None:
        for name in MANIFEST_NAMES:
            path = posixpath.join(folder, name)
            if self.text(path, ref) is not None:
                return path
        return None


def collect_facts(gh: GitHub, pull: PullRequest, files: list[ChangedFile]) -> PullFacts:
    """The models the pull request touches (`changes.touched_models`, the rule `plan` applies
    too), each read at base and head."""
    reader = _Reader(gh)
    base, head = pull.base_sha, pull.head_sha
    policy_changed = any(POLICY_PATH in (f.filename, f.previous_filename) for f in files)
    listed = []
    for f in files:
        previous = f.previous_filename if f.status == "renamed" else None
        if f.filename != POLICY_PATH:
            listed.append(FileChange(f.filename, f.status, previous))
        elif previous:
            # Renamed onto the policy's path: what it was is removed, and a manifest removed
            # that way is still its model's removal, for its owners to approve.
            listed.append(FileChange(previous, "removed"))
    # A folder whose manifest is not in the files list has the same manifest at base and head.
    touched = touched_models(listed, lambda folder: reader.manifest_in(folder, base))
    models: list[ModelChange] = []
    for t in touched:
        base_side = reader.side(t.base, base)
        # Only other files of the folder changed: the manifest at head is the one at base.
        head_side = base_side if t.kind == "files" else reader.side(t.head, head)
        if base_side is None and head_side is None:
            continue  # listed, but absent at both commits: nothing to govern
        if t.kind in ("renamed", "modified", "files") and None in (base_side, head_side):
            # The old path's base tier still governs a renamed manifest; a side that cannot be
            # read makes the change an addition or a removal.
            kind, path = ("removed", t.base) if head_side is None else ("added", t.path)
        else:
            kind, path = t.kind, t.path
        models.append(ModelChange(path or t.path, kind, base_side, head_side))
    return PullFacts(
        number=pull.number,
        author=pull.author,
        head_sha=head,
        models=tuple(sorted(models, key=lambda m: m.path)),
        policy_changed=policy_changed,
        committers=gh.commit_logins(pull.number, pull.commits),
        base_branch=pull.base_ref,
        default_branch=pull.default_branch,
    )


def load_policy(gh: GitHub, base_sha: str, facts: PullFacts) -> policy.Policy:
    """The policy as of the base commit: a pull request cannot change the rules it is judged by.

    An invalid policy at base is an error (exit 2), except for a pull request that changes the
    policy and no model: it is judged by the built-in defaults' high tier, so that the fix of a
    broken policy can merge without an administrator's override.
    """
    text = gh.file_text(POLICY_PATH, base_sha)
    if text is None:
        return policy.DEFAULT_POLICY
    parsed, problems = policy.parse_policy(text, POLICY_PATH)
    if parsed is not None:
        return parsed
    listing = "; ".join(f"line {p.line}: {p.message}" if p.line else p.message for p in problems)
    if facts.policy_changed and not facts.models:
        source = f"built-in default (the policy at base is invalid: {listing})"
        return dataclasses.replace(policy.DEFAULT_POLICY, source=source)
    first = problems[0] if problems else None
    raise MlopsCiError(
        f"the approval policy at the base commit {base_sha[:12]} is invalid: {listing}",
        path=POLICY_PATH,
        line=first.line if first else None,
    )


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What a decision on a pull request is made from, as read through the API: kept by
    deploy's re-verification (`reverify.judge`) to decide the same pull request again for
    another side of a model (the registry's record of its name) without reading it again."""

    rules: policy.Policy  # as of the pull request's base commit
    facts: PullFacts
    reviews: tuple[Review, ...]
    permissions: dict[str, str]  # reviewer (lowercased) -> repository permission


def gather(
    gh: GitHub,
    pull: PullRequest,
    reviews: list[Review] | None = None,
    files: list[ChangedFile] | None = None,
) -> Inputs:
    """Everything the decision needs but team memberships, read through the API (the pull
    request's `reviews` and `files` when the caller has already listed them)."""
    # every changed path, even past the files list's 3,000 (else fails closed)
    files = gh.changed_files(pull) if files is None else files
    facts = collect_facts(gh, pull, files)
    rules = load_policy(gh, pull.base_sha, facts)
    reviews = gh.reviews(pull.number) if reviews is None else reviews
    # who may approve is asked exactly: author_association can hide a private org membership
    permissions = {login.lower(): gh.permission(login) for login in policy.review_logins(reviews)}
    return Inputs(rules, facts, tuple(reviews), permissions)


def decide_from(gh: GitHub, inputs: Inputs, *, any_base: bool = False) -> Decision:
    """The pure decision on `inputs`, with the team memberships it needs asked first."""
    reviews = list(inputs.reviews)
    memberships = _memberships(gh, inputs.rules, inputs.facts, reviews, inputs.permissions)
    return policy.decide(
        inputs.rules, inputs.facts, reviews, memberships, inputs.permissions, any_base=any_base
    )


def evaluate(
    gh: GitHub,
    pull: PullRequest,
    reviews: list[Review] | None = None,
    files: list[ChangedFile] | None = None,
    *,
    any_base: bool = False,
) -> Decision:
    """Everything the decision needs, read through the API (`gather`), then the pure decision.
    Only a pull request into the default branch can be approved unless `any_base` (the gate's
    own run, whose status names the base branch; deploy never passes it)."""
    return decide_from(gh, gather(gh, pull, reviews, files), any_base=any_base)


def also_at(
    gh: GitHub,
    inputs: Inputs,
    decision: Decision,
    pull: PullRequest,
    files: list[ChangedFile],
    base: str,
    *,
    any_base: bool = False,
) -> Decision:
    """`decision`, made with the pull request's `base.sha`, unless the same pull request judged
    with `base` as its base commit (its policy, its manifests' tiers and owners) is not approved.

    GitHub's `base.sha` is where the base branch stood when the pull request was opened or last
    pushed to, not where it stands when it merges: a policy tightened, or a model's owners
    replaced, on the branch since then would not count. A merge brings the pull request onto the
    branch as it is, so it must meet the rules there too; the stricter verdict stands."""
    if base == pull.base_sha or not decision.approved:
        return decision
    moved = gather(gh, dataclasses.replace(pull, base_sha=base), list(inputs.reviews), files)
    again = decide_from(gh, moved, any_base=any_base)
    if again.approved:
        return decision
    where = f"with the base branch at {base[:12]} (the pull request names {pull.base_sha[:12]})"
    return dataclasses.replace(again, reason=f"{where}: {again.reason}")


#: Above this many reviewers to look up in one team, listing the team is fewer calls.
_LIST_TEAM_ABOVE = 2


def _memberships(
    gh: GitHub,
    rules: policy.Policy,
    facts: PullFacts,
    reviews: list[Review],
    permissions: dict[str, str],
) -> dict[tuple[str, str], bool]:
    """Answers to the membership questions the decision needs, in as few calls as possible."""
    by_team: dict[str, list[str]] = {}
    for team, login in policy.membership_queries(rules, facts, reviews, permissions):
        by_team.setdefault(team, []).append(login)
    answers: dict[tuple[str, str], bool] = {}
    for team, logins in by_team.items():
        if len(logins) > _LIST_TEAM_ABOVE:
            members = gh.team_members(team)
            answers.update(((team, login), login.lower() in members) for login in logins)
        else:
            answers.update(((team, login), gh.is_team_member(team, login)) for login in logins)
    return answers


# --- the command --------------------------------------------------------------------------------


def _event_target(number: int) -> tuple[str | None, str]:
    """The head SHA the event names and its base branch's context, used only to post a failure
    when the API cannot be read (the default branch's context when the event names no base:
    a failure there grants nothing)."""
    pr = event_payload().get("pull_request")
    if isinstance(pr, dict) and pr.get("number") == number:
        sha = (pr.get("head") or {}).get("sha")
        base = pr.get("base") or {}
        default = (base.get("repo") or {}).get("default_branch") if isinstance(base, dict) else ""
        return (sha if isinstance(sha, str) else None), _context(
            str(base.get("ref") or "") if isinstance(base, dict) else "", str(default or "")
        )
    return None, CONTEXT


def _context(base: str, default: str) -> str:
    """The base branch's context; the default branch's when either name is unknown, where
    only a failure is ever posted (`policy.decide` refuses a pull request into an unnamed
    branch)."""
    try:
        return status_context.for_base(CONTEXT, base, default)
    except MlopsCiError:
        return CONTEXT


def main(
    number: int | None,
    *,
    fmt: str = "text",
    repository: str | None = None,
    post_status: bool = True,
) -> int:
    """Exit 0 approved, 1 not approved, 2 error (after a failing status where possible)."""
    gh = GitHub.from_env(repository)
    number = number or event_pull_number()
    if number is None:
        raise UsageError(
            "no pull request: pass --pr N, or run on a pull_request or pull_request_review event"
        )
    head_sha, context = _event_target(number)
    try:
        pull = gh.pull_request(number)
        head_sha, context = pull.head_sha, _context(pull.base_ref, pull.default_branch)
        if post_status:
            # A run that dies half-way (timeout, runner lost) must not leave an earlier
            # "success" standing on this commit after, say, a new request for changes.
            _set_status(gh, head_sha, "pending", "Checking approvals…", context)
        files = gh.changed_files(pull)
        inputs = gather(gh, pull, None, files)
        decision = decide_from(gh, inputs, any_base=True)
        if pull.base_ref and decision.approved:  # an unnamed base is refused by `decide`
            tip = gh.branch_sha(pull.base_ref)
            decision = also_at(gh, inputs, decision, pull, files, tip, any_base=True)
        # The files and commits lists describe the pull request as it is when listed, its
        # manifests the head read above: after a push in between (and a force-push back), a
        # decision on other files would stand on this head. One head is judged, or none. The
        # same for the base: files counted from another base must not decide this one's context.
        now = gh.pull_request(number)
        if now.head_sha != pull.head_sha:
            raise MlopsCiError(
                f"pull request #{number} moved from {pull.head_sha[:12]} to {now.head_sha[:12]} "
                "while it was judged; the run for its new head decides"
            )
        if now.base_ref != pull.base_ref:
            raise MlopsCiError(
                f"pull request #{number} moved from the base branch {pull.base_ref} to "
                f"{now.base_ref} while it was judged; the run for its new base decides"
            )
    except Exception as exc:  # every error, even a bug, fails closed
        _fail_closed(gh, head_sha, context, exc, post_status)
        raise
    where = status_context.branch_words(pull.base_ref, pull.default_branch)
    if fmt == "json":
        data = {**decision.to_json(), "base": pull.base_ref, "context": context}
        print(json.dumps(data, indent=2))
    else:
        posted = "" if post_status else " (not posted: --no-status)"
        print(f"{terminal.gate(decision, pull)}\n  into {where}: status {context}{posted}")
    summary = markdown.gate(decision, pull)
    gha.write_summary(f"{summary.rstrip()}\n\nInto {escape.cell(where)}: status `{context}`.\n")
    gha.set_output("approved", "true" if decision.approved else "false")
    gha.set_output("context", context)
    if post_status:
        state = "success" if decision.approved else "failure"
        _set_status(gh, pull.head_sha, state, policy.status_line(decision), context)
    return EXIT_OK if decision.approved else EXIT_VERDICT


class StatusWriteFailed(MlopsCiError):
    """The commit status itself could not be written (after the client's retries)."""


def _set_status(gh: GitHub, sha: str, state: str, description: str, context: str) -> None:
    try:
        gh.set_status(sha, state, description, context, gh.run_url())
    except MlopsCiError as exc:
        raise StatusWriteFailed(f"could not set the commit status {context}: {exc}") from exc


def _fail_closed(
    gh: GitHub, head_sha: str | None, context: str, exc: Exception, post_status: bool
) -> None:
    what = str(exc) if isinstance(exc, MlopsCiError) else f"internal error: {type(exc).__name__}"
    gha.write_summary(f"## ❌ Governance gate: error\n\n{escape.cell(what)}\n")
    gha.set_output("approved", "false")
    if not (post_status and head_sha) or isinstance(exc, StatusWriteFailed):
        # writing statuses is what just failed: a second round of retries would only delay
        # the exit (2) past the point where anyone waits for it
        return
    try:
        gh.set_status(head_sha, "failure", f"Gate error: {what}", context, gh.run_url())
    except MlopsCiError as status_exc:  # the original error is the one to report
        print(f"mlops-ci gate: could not post the failing status: {status_exc}", file=sys.stderr)
