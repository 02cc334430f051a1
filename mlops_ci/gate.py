"""`mlops-ci gate`: read a pull request through the API, decide, post `mlops-ci/governance`.

It reads files only through the contents API at the base and head SHAs and never checks out or
runs anything from the pull request. It fails closed: an error posts a failing status when it
still can, and exits 2.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import sys
from collections.abc import Iterable

from mlops_ci import gha, manifest, policy
from mlops_ci.errors import EXIT_OK, EXIT_VERDICT, MlopsCiError, UsageError
from mlops_ci.github import (
    ChangedFile,
    GitHub,
    PullRequest,
    Review,
    event_payload,
    event_pull_number,
)
from mlops_ci.policy import (
    MANIFEST_NAMES,
    POLICY_PATH,
    Decision,
    ManifestSide,
    ModelChange,
    PullFacts,
    is_manifest,
)

CONTEXT = "mlops-ci/governance"


class _Reader:
    """Reads manifests at the base and head commits, each (path, ref) at most once."""

    def __init__(self, gh: GitHub, pull: PullRequest) -> None:
        self.gh = gh
        self.pull = pull
        self._texts: dict[tuple[str, str], str | None] = {}

    def text(self, path: str, ref: str) -> str | None:
        key = (path, ref)
        if key not in self._texts:
            self._texts[key] = self.gh.file_text(path, ref)
        return self._texts[key]

    def side(self, path: str, ref: str) -> ManifestSide | None:
        text = self.text(path, ref)
        if text is None:
            return None
        data, problems, _ = manifest.parse_document(text, path)
        return policy.manifest_side(path, data, problems)


def _folder(path: str) -> str:
    return posixpath.dirname(path)


def _ancestors(path: str) -> Iterable[str]:
    """The folders holding `path`, nearest first, ending with the repository root ("")."""
    folder = _folder(path)
    while True:
        yield folder
        if not folder:
            return
        folder = _folder(folder)


def collect_facts(gh: GitHub, pull: PullRequest, files: list[ChangedFile]) -> PullFacts:
    """The models the pull request touches, each read at base and head.

    A model is touched when its manifest is added, modified, removed or renamed, or when any
    other file in its folder (the nearest folder above it holding a model.yaml) changes.
    """
    reader = _Reader(gh, pull)
    base, head = pull.base_sha, pull.head_sha
    models: dict[str, ModelChange] = {}
    model_folders: set[str] = set()
    policy_changed = False
    others: list[str] = []
    for f in files:
        paths = [f.filename] + ([f.previous_filename] if f.previous_filename else [])
        if POLICY_PATH in paths:
            policy_changed = True
        old = f.previous_filename if f.status == "renamed" else None
        old_manifest = old if old and is_manifest(old) else None
        if not is_manifest(f.filename) and old_manifest is None:
            others += [p for p in paths if p != POLICY_PATH]
            continue
        new_manifest = f.filename if is_manifest(f.filename) else None
        if f.status == "removed":
            change = ModelChange(f.filename, "removed", reader.side(f.filename, base), None)
        elif f.status in ("added", "copied"):
            change = ModelChange(f.filename, "added", None, reader.side(f.filename, head))
        elif f.status == "renamed":
            # The old path's base tier still governs a renamed manifest.
            base_side = reader.side(old_manifest, base) if old_manifest else None
            head_side = reader.side(new_manifest, head) if new_manifest else None
            if base_side is not None and head_side is not None:
                change = ModelChange(f.filename, "renamed", base_side, head_side)
            elif base_side is not None:
                change = ModelChange(base_side.path, "removed", base_side, None)
            else:
                change = ModelChange(f.filename, "added", None, head_side)
            others += [
                p for p in (old, f.filename) if p and not is_manifest(p) and p != POLICY_PATH
            ]
        else:  # modified, changed, unchanged
            change = ModelChange(
                f.filename, "modified", reader.side(f.filename, base), reader.side(f.filename, head)
            )
        if change.base is None and change.head is None:
            continue  # listed, but absent at both commits: nothing to govern
        models[change.path] = change
        for side in (change.base, change.head):
            if side is not None:
                model_folders.add(_folder(side.path))
    probed: set[str] = set()
    for path in others:
        for folder in _ancestors(path):
            if folder in model_folders:
                break
            if folder in probed:
                continue
            probed.add(folder)
            found = _manifest_in(reader, folder, base)
            if found is not None:
                # Not in the files list, so the manifest is the same at head as at base.
                models[found.path] = ModelChange(found.path, "files", found, found)
                model_folders.add(folder)
                break
    return PullFacts(
        number=pull.number,
        author=pull.author,
        head_sha=head,
        models=tuple(models[k] for k in sorted(models)),
        policy_changed=policy_changed,
        committers=gh.commit_logins(pull.number),
    )


def _manifest_in(reader: _Reader, folder: str, ref: str) -> ManifestSide | None:
    for name in MANIFEST_NAMES:
        side = reader.side(posixpath.join(folder, name), ref)
        if side is not None:
            return side
    return None


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


def evaluate(gh: GitHub, pull: PullRequest) -> Decision:
    """Everything the decision needs, read through the API, then the pure decision."""
    files = gh.pull_files(pull.number)
    facts = collect_facts(gh, pull, files)
    rules = load_policy(gh, pull.base_sha, facts)
    reviews = gh.reviews(pull.number)
    return policy.decide(rules, facts, reviews, _memberships(gh, rules, facts, reviews))


#: Above this many reviewers to look up in one team, listing the team is fewer calls.
_LIST_TEAM_ABOVE = 2


def _memberships(
    gh: GitHub, rules: policy.Policy, facts: PullFacts, reviews: list[Review]
) -> dict[tuple[str, str], bool]:
    """Answers to the membership questions the decision needs, in as few calls as possible."""
    by_team: dict[str, list[str]] = {}
    for team, login in policy.membership_queries(rules, facts, reviews):
        by_team.setdefault(team, []).append(login)
    answers: dict[tuple[str, str], bool] = {}
    for team, logins in by_team.items():
        if len(logins) > _LIST_TEAM_ABOVE:
            members = gh.team_members(team)
            answers.update(((team, login), login.lower() in members) for login in logins)
        else:
            answers.update(((team, login), gh.is_team_member(team, login)) for login in logins)
    return answers


# --- output -------------------------------------------------------------------------------------


def render_text(decision: Decision, pull: PullRequest) -> str:
    verdict = "APPROVED" if decision.approved else "NOT APPROVED"
    lines = [f"pull request #{pull.number} at {pull.head_sha[:12]}: {verdict}"]
    if not decision.outcomes:
        lines.append(f"  {decision.reason}")
    for o in decision.outcomes:
        mark = "ok " if o.approved else "NO "
        who = ", ".join(f"@{a}" for a in o.approvers) or "nobody"
        lines.append(f"  {mark} {o.name} (risk: {o.tier}) approved by {who}")
        lines += [f"       missing: {m}" for m in o.missing]
        lines += [f"       note: {n}" for n in o.notes]
    if decision.ignored:
        lines.append("  reviews not counted:")
        lines += [f"    - {i}" for i in decision.ignored]
    lines.append(f"  policy: {decision.policy_source} (as of base {pull.base_sha[:12]})")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(decision: Decision, pull: PullRequest) -> str:
    icon = "✅" if decision.approved else "❌"
    verdict = "approved" if decision.approved else "not approved"
    out = [
        f"## {icon} Governance gate: {verdict}",
        "",
        f"Pull request #{pull.number}, head `{pull.head_sha[:12]}`; policy: "
        f"{decision.policy_source} as of base `{pull.base_sha[:12]}`.",
        "",
    ]
    if not decision.outcomes:
        out.append(decision.reason)
    else:
        out += ["| | Model | Risk | Approved by | Still missing |", "|---|---|---|---|---|"]
        for o in decision.outcomes:
            who = ", ".join(f"@{a}" for a in o.approvers) or "—"
            missing = "<br>".join(_cell(m) for m in o.missing) or "—"
            mark = "✅" if o.approved else "❌"
            out.append(f"| {mark} | `{_cell(o.name)}` | {o.tier} | {who} | {missing} |")
        notes = [f"- `{o.name}`: {n}" for o in decision.outcomes for n in o.notes]
        if notes:
            out += ["", "**Notes**", "", *notes]
    if decision.ignored:
        out += ["", "<details><summary>Reviews not counted</summary>", ""]
        out += [f"- {_cell(str(i))}" for i in decision.ignored]
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


# --- the command --------------------------------------------------------------------------------


def _event_head_sha(number: int) -> str | None:
    """The head SHA the event names, used only to post a failure when the API cannot be read."""
    pr = event_payload().get("pull_request")
    if isinstance(pr, dict) and pr.get("number") == number:
        sha = (pr.get("head") or {}).get("sha")
        return sha if isinstance(sha, str) else None
    return None


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
    head_sha = _event_head_sha(number)
    try:
        pull = gh.pull_request(number)
        head_sha = pull.head_sha
        if post_status:
            # A run that dies half-way (timeout, runner lost) must not leave an earlier
            # "success" standing on this commit after, say, a new request for changes.
            gh.set_status(head_sha, "pending", "Checking approvals…", CONTEXT, gh.run_url())
        decision = evaluate(gh, pull)
    except Exception as exc:  # every error, even a bug, fails closed
        _fail_closed(gh, head_sha, exc, post_status)
        raise
    if fmt == "json":
        print(json.dumps(decision.to_json(), indent=2))
    else:
        print(render_text(decision, pull))
    gha.write_summary(render_markdown(decision, pull))
    gha.set_output("approved", "true" if decision.approved else "false")
    if post_status:
        state = "success" if decision.approved else "failure"
        gh.set_status(pull.head_sha, state, policy.status_line(decision), CONTEXT, gh.run_url())
    return EXIT_OK if decision.approved else EXIT_VERDICT


def _fail_closed(gh: GitHub, head_sha: str | None, exc: Exception, post_status: bool) -> None:
    what = str(exc) if isinstance(exc, MlopsCiError) else f"internal error: {type(exc).__name__}"
    gha.write_summary(f"## ❌ Governance gate: error\n\n{what}\n")
    gha.set_output("approved", "false")
    if not (post_status and head_sha):
        return
    try:
        gh.set_status(head_sha, "failure", f"Gate error: {what}", CONTEXT, gh.run_url())
    except MlopsCiError as status_exc:  # the original error is the one to report
        print(f"mlops-ci gate: could not post the failing status: {status_exc}", file=sys.stderr)
