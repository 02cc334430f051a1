"""Re-verifying a push to the default branch before it deploys: for each model, the pull
requests whose merges changed it since the last deploy (`RangeJudge`), the gate's own decision
for each as it stood at merge (`gate.evaluate`: the policy at its base, reviews on its final
head; approved with the commit it merged onto as its base too, `gate.also_at`), and the
approval bound to the bytes: the model's manifest and artifact at the pushed commit are the
very blobs of the last such pull request's approved head, and each was reviewed: changed to
those bytes by an approved pull request, already published, or the file as it was at
the policy's adoption baseline (`deploy.reviewed_at`, counted only when an approved pull request
put that line there) (`Evidence`). And a model's NAME in the registry keeps the tier and owners
it was last published with: each pull request must also meet the policy with the registry's
manifest of the name as its base side (`RangeJudge._keeps_name`). Anything else is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops_ci.errors import CheckFailed
from mlops_ci.github import ChangedFile, GitHub, PullRequest
from mlops_ci.policy import (
    POLICY_PATH,
    Decision,
    ManifestSide,
    ModelChange,
    Review,
    reviewed_at_of,
)

if TYPE_CHECKING:
    from mlops_ci.gate import Inputs


#: More commits than one pull request's rebase merge can bring (GitHub lists 250 of them).
_MAX_REBASED = 256


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


@dataclass(frozen=True)
class Judged:
    """A merged pull request, judged by the gate as it stood at its merge."""

    found: dict[str, Any]  # its entry of `GET /commits/{sha}/pulls`
    pull: PullRequest
    reviews: list[Review]
    decision: Decision
    #: the files its diff (merge base..head) changed, as the gate listed them
    files: tuple[ChangedFile, ...] = field(default=())
    #: what `decision` was made from (the policy at its base, the facts, the reviews as they
    #: stood at the merge, permissions): to decide it again for the registry's side of a name
    inputs: Inputs | None = None

    def changed(self, path: str) -> ChangedFile | None:
        """Its files list's entry of `path` when its diff brought a file there (added,
        modified, copied, renamed to it), else None (untouched, or removed)."""
        for f in self.files:
            if f.filename == path and f.status not in ("removed", "unchanged"):
                return f
        return None

    @property
    def number(self) -> int:
        return self.pull.number

    def approval(self) -> Approval:
        return Approval(
            pull_request={
                "number": self.number,
                "url": str(self.found.get("html_url") or ""),
                "head_sha": self.pull.head_sha,
            },
            approvers=approvers(self.reviews, self.decision),
            decision=self.decision,
        )


def judge(gh: GitHub, found: dict[str, Any], base: str | None = None) -> Judged:
    """The gate's decision for a merged pull request as it stood at the merge. `base`: the
    commit the branch held when it merged (its merge commit's first parent), where it must be
    approved too (`gate.also_at`: its `base.sha` may be older than the branch it merged into)."""
    from mlops_ci import gate

    number = int(found["number"])
    pull = gh.pull_request(number)
    # Judged by the gate, then named in the release: the reviews as they stood at merge. An
    # approval given after an admin merge must not let a re-run of the publish deploy it.
    listed = gh.reviews(number)
    # the timeline only says when a review was dismissed: read it only when one was
    dismissed = gh.dismissals(number) if any(r.state == "DISMISSED" for r in listed) else {}
    reviews = as_at_merge(listed, dismissed, found.get("merged_at"))
    # listed once, for the gate and for what the diff changed (`RangeJudge`'s reviewed bytes)
    files = gh.changed_files(pull)
    inputs = gate.gather(gh, pull, reviews, files)
    decision = gate.decide_from(gh, inputs)
    if base is not None:
        decision = gate.also_at(gh, inputs, decision, pull, files, base)
    return Judged(found, pull, reviews, decision, tuple(files), inputs)


def _same_bar(base: ManifestSide | None, side: ManifestSide) -> bool:
    """Whether a base side asks what the registry's side does: the same tier and owners."""
    return base is not None and base.tier == side.tier and base.owners == side.owners


def _name_refusal(
    model: ModelFiles, judged: Judged, side: ManifestSide, origin: str, decision: Decision
) -> str:
    owners = ", ".join(side.owners) or "none could be read"
    return (
        f"{model.name} was {origin} (risk: {side.tier}, owners: {owners}), and a name in the "
        "registry keeps the tier and owners it was last published with: pull request "
        f"#{judged.number} does not meet them "
        f"({decision.reason}). Have a pull request that changes {model.name} approved as "
        "that asks (or publish the model under a name of its own)"
    )


def _approved(judged: Judged) -> None:
    if not judged.decision.approved:
        raise Refused(
            f"pull request #{judged.number} was merged without the approvals it needs: "
            f"{judged.decision.reason}"
        )


def _bound(gh: GitHub, sha: str, model: ModelFiles, judged: Judged) -> dict[str, str]:
    """The model's manifest and artifact at `sha` are the very blobs of the approved head:
    their git blob SHAs by path."""
    head = judged.pull.head_sha
    blobs = {}
    for path in (model.manifest, model.artifact):
        pushed, reviewed = gh.blob_sha(path, sha), gh.blob_sha(path, head)
        if pushed is None or pushed != reviewed:
            raise Refused(
                f"{path} at {sha[:12]} is not the file approved in pull request "
                f"#{judged.number} (its head {head[:12]}): only approved bytes are deployed"
            )
        blobs[path] = pushed
    return blobs


@dataclass(frozen=True)
class Baseline:
    """The adoption baseline that `.mlops/policy.yaml` names at the pushed commit
    (`deploy.reviewed_at`), as read from the clone: the files as they were at `commit` count as
    reviewed once `RangeJudge` has shown that an approved pull request set that line."""

    commit: str  # the full SHA the line names
    where: str  # ".mlops/policy.yaml:7": the line, for messages
    #: the first-parent commit that set the line to this value (None: none could be found)
    set_by: str | None
    #: why it cannot count, known from the clone alone (an invalid policy, a commit that is not
    #: on the branch's first-parent history); None: it may count
    problem: str | None = None


@dataclass(frozen=True)
class Evidence:
    """What deploy knows beyond the range's pull requests about a model's file at the pushed
    commit: asked only about a file that no pull request of the range changed to its bytes."""

    #: (path, its git blob SHA at the pushed commit) -> whether those are the very bytes of that
    #: file in a version of the model the registry serves or published last (reviewed then)
    published: Callable[[str, str], bool]
    #: path -> the first-parent commit, up to the pushed one, that last changed it (None: none)
    last_change: Callable[[str], str | None]
    #: (commit, a merge commit) -> whether the commit is an ancestor of that merge commit, and
    #: the merge commit one of the pushed one (a rebase merge's earlier commit, before the range)
    landed: Callable[[str, str], bool] = lambda commit, merge: False
    #: the policy's adoption baseline at the pushed commit; None when it names none
    baseline: Baseline | None = None
    #: (commit, path, blob) -> whether `path` at `commit` has the bytes `blob` (in the clone)
    same_at: Callable[[str, str, str], bool] = lambda commit, path, blob: False
    #: (commit, tip) -> whether `commit` is `tip` or on its first-parent history (in the clone)
    on_branch: Callable[[str, str], bool] = lambda commit, tip: False
    #: on a first deploy (the registry records none of this repository), the range's start:
    #: a refusal names it as the baseline a pull request could adopt, when it holds the bytes
    adopt: str | None = None
    #: the governance fields (risk, owners) of the manifest the registry last published under
    #: the model's NAME (`<n>/model.yaml` of its newest version); None when none is published
    registry_side: Callable[[], ManifestSide | None] = lambda: None


class RangeJudge:
    """Re-verifies the models a range of first-parent commits changed, each on its own: every
    commit that changed a model must be the merge of a pull request the gate approved at its
    merge, for that model; and the model's manifest and artifact at the pushed commit must be
    the approved head's of the LAST of those pull requests. A direct push that changed it, an
    admin merge without the approvals, or other bytes refuse that model (Refused).

    Equal to the approved head is not enough: the last pull request's head also holds what its
    base held, which its reviewers never saw in its diff (a README edit over an artifact that a
    refused direct push brought). So each of the two files must have been REVIEWED: changed to
    these very bytes by an approved pull request of the range, or the file of a version the
    registry serves or published last, or the file as it was at the policy's adoption baseline
    (`deploy.reviewed_at`, counted only when an approved pull request set that line: `Baseline`),
    or else changed to them by the approved pull request that last changed it on the branch
    (`Evidence`; a first deploy has no version to compare with). Each pull request is looked up
    and judged once, each blob read once, the baseline's provenance shown once."""

    def __init__(
        self,
        gh: GitHub,
        sha: str,
        commits: Sequence[str],
        parent: Callable[[str], str | None] | None = None,
    ) -> None:
        self.gh, self.sha, self.commits = gh, sha, list(commits)
        #: a commit's first parent (in the clone): where the branch stood when a merge landed
        self.parent = parent
        #: commit -> the merged pull requests GitHub associates with it
        self._associated: dict[str, set[Any]] = {}
        self._pulls: dict[str, dict[str, Any] | None] = {}
        self._judged: dict[int, Judged] = {}
        self._blobs: dict[tuple[str, str], str | None] = {}
        self._bases: dict[int, str] = {}
        #: why a pull request does not meet a name's registry side (None: it does)
        self._names: dict[tuple[int, str, ManifestSide], str | None] = {}
        #: why the baseline does not count (None: it does), per (its commit, its setter)
        self._baselines: dict[tuple[str, str | None], str | None] = {}

    def pull_of(self, commit: str) -> dict[str, Any] | None:
        """The merged pull request that brought `commit` onto the branch: the one whose merge
        commit it is (merge, squash, or a rebase's last commit), or, for a rebase merge's other
        commits, the one whose merge commit follows in the range (GitHub associates each
        rebased commit with the pull request that introduced it)."""
        if commit not in self._pulls:
            merged = [p for p in self.gh.commit_pulls(commit) if p.get("merged_at")]
            later = self.commits[self.commits.index(commit) :] if commit in self.commits else []
            self._pulls[commit] = next(
                (p for p in merged if p.get("merge_commit_sha") == commit),
                next((p for p in merged if p.get("merge_commit_sha") in later), None),
            )
        return self._pulls[commit]

    def judged(self, found: dict[str, Any]) -> Judged:
        number = int(found["number"])
        if number not in self._judged:
            self._judged[number] = judge(self.gh, found, self._merged_onto(found))
        return self._judged[number]

    def _merged_onto(self, found: dict[str, Any]) -> str | None:
        """The commit the branch held when pull request `found` landed on it: its merge (or
        squash) commit's first parent, or for a rebase merge the first parent of its first
        rebased commit (GitHub associates each with the pull request). None: unknown (no
        clone to ask, or history longer than any rebase), and then its `base.sha` alone."""
        commit = found.get("merge_commit_sha")
        if self.parent is None or not isinstance(commit, str) or not commit:
            return None
        recorded = (
            (found.get("base") or {}).get("sha") if isinstance(found.get("base"), dict) else None
        )
        for _ in range(_MAX_REBASED):
            parent = self.parent(commit)
            if parent is None:
                return None
            if parent == recorded:  # merged onto its recorded base: nothing more to ask
                return parent
            if parent not in self._associated:
                self._associated[parent] = {
                    p.get("number") for p in self.gh.commit_pulls(parent) if p.get("merged_at")
                }
            if found.get("number") not in self._associated[parent]:
                return parent
            commit = parent
        return None

    def model(
        self, model: ModelFiles, changed_in: Sequence[str], evidence: Evidence | None = None
    ) -> Approval:
        """The approval of `model`, changed in `changed_in` (commits of the range, oldest
        first), or Refused saying why not. Without `evidence` only the range's pull requests
        can vouch for the bytes."""
        if not changed_in:
            raise Refused(
                f"{model.name} changed before {self.sha[:12]}, but no commit of the range could "
                "be attributed to it, so no approval covers it"
            )
        last = None
        judged: dict[int, Judged] = {}
        for commit in changed_in:
            found = self.pull_of(commit)
            if found is None:
                raise Refused(
                    f"no merged pull request produced {commit[:12]}, which changed "
                    f"{model.name}: a direct push to the default branch is never deployed "
                    "(merge a reviewed pull request instead)"
                )
            last = self.judged(found)
            _approved(last)
            if model.name not in {o.name for o in last.decision.outcomes}:
                raise Refused(
                    f"{model.name} changed in {commit[:12]} but not in pull request "
                    f"#{last.number}, so no approval covers it"
                )
            judged[last.number] = last
        assert last is not None
        self._keeps_name(model, list(judged.values()), evidence)
        pushed = _bound(self.gh, self.sha, model, last)
        for path, blob in pushed.items():  # read by _bound: not asked again
            self._blobs[(path, self.sha)] = self._blobs[(path, last.pull.head_sha)] = blob
        unreviewed = {
            path: why
            for path, blob in pushed.items()
            if (why := self._unreviewed(model, path, blob, list(judged.values()), evidence))
        }
        if unreviewed:
            message = self._unreviewed_message(model, unreviewed, evidence is not None)
            raise Refused(message + self._adopt_hint(pushed, unreviewed, evidence))
        return last.approval()

    def _keeps_name(
        self, model: ModelFiles, judged: Sequence[Judged], evidence: Evidence | None
    ) -> None:
        """Refused unless each of the range's pull requests that changed `model` (oldest first)
        meets the tier and owners its NAME has in the registry: those of the manifest last
        published under it, or, once a pull request of the range that met them changed them
        (an owner handed over, a tier lowered by its owners), that pull request's approved
        head. Nothing is asked when the registry has published no version of the name."""
        side = evidence.registry_side() if evidence is not None else None
        origin = "last published as {}"
        for each in judged:
            if side is None:
                return
            why = self._short_of_name(model, each, side, origin.format(side.path))
            if why is not None:
                raise Refused(why)
            facts = each.inputs.facts if each.inputs is not None else None
            heads = [
                c.head
                for c in (facts.models if facts is not None else ())
                if c.name == model.name and c.head is not None and c.head.name == model.name
            ]
            if len(heads) == 1 and heads[0].problem is None and not _same_bar(heads[0], side):
                side, number = heads[0], each.number
                origin = f"given its tier and owners by pull request #{number} ({{}} at its head)"

    def _short_of_name(
        self, model: ModelFiles, judged: Judged, side: ManifestSide, origin: str
    ) -> str | None:
        """None when pull request `judged` also meets the policy for `model` as it would for a
        change whose base side is `side`, the name's manifest in the registry (`origin` says
        which); else the refusal. The registry's identity of a model is its NAME, the gate's
        its manifest's file: a pull request that gives a low-risk model's file the name of a
        high-risk model the registry serves (after that one was renamed away) is approved at
        the low tier by the file's owners, and would publish over the name its clients call.
        So the name keeps the tier and owners it was last published with, decided by the same
        `policy.decide` on the same inputs (the policy at its base, the reviews as they stood
        at the merge), the registry's manifest standing in for each base side of the name,
        as a renamed manifest's old path does at the gate: the stricter tier, its owners."""
        from mlops_ci import gate

        key = (judged.number, model.name, side)
        if key in self._names:
            return self._names[key]
        inputs = judged.inputs
        changes = [] if inputs is None else [m for m in inputs.facts.models if m.name == model.name]
        if inputs is None or not changes:  # `model` checked that it is among its outcomes
            why: str | None = (
                f"pull request #{judged.number}'s decision for {model.name} cannot be "
                "decided again for the registry's record of the name"
            )
        elif all(_same_bar(c.base, side) for c in changes):
            why = None  # the decision made already (an ordinary change, a folder moved)
        else:
            facts = replace(
                inputs.facts,
                models=tuple(
                    ModelChange(c.path, "removed" if c.head is None else "modified", side, c.head)
                    for c in changes
                ),
                policy_changed=False,
            )
            decision = gate.decide_from(self.gh, replace(inputs, facts=facts))
            why = (
                None if decision.approved else _name_refusal(model, judged, side, origin, decision)
            )
        self._names[key] = why
        return why

    def _adopt_hint(
        self, pushed: Mapping[str, str], unreviewed: Mapping[str, str], evidence: Evidence | None
    ) -> str:
        """On a first deploy (a repository adopting mlops-ci) whose refused files are as they
        were at the range's start: the exact policy line that would vouch for them, in a pull
        request of its own. Never after a deploy is on record: a file refused then came in
        after mlops-ci was in place, and only a pull request that changes it should ship it."""
        if evidence is None or evidence.adopt is None or evidence.baseline is not None:
            return ""
        start = evidence.adopt
        if not all(evidence.same_at(start, path, pushed[path]) for path in unreviewed):
            return ""
        return (
            f". Adopting mlops-ci on a repository with history? If the files as they were at "
            f"{start[:12]} were reviewed before, say so in {POLICY_PATH} through a pull request "
            f'(a policy change needs the high tier): deploy: {{reviewed_at: "{start}"}}'
        )

    def _unreviewed_message(self, model: ModelFiles, whys: dict[str, str], asked: bool) -> str:
        if len(set(whys.values())) == 1:
            files, why = " and ".join(whys), f" ({next(iter(whys.values()))})"
        else:
            files, why = " and ".join(f"{p} ({w})" for p, w in whys.items()), ""
        it = "it" if len(whys) == 1 else "them"
        registry = (
            f", and no version of {model.name} that the registry serves or published last "
            "has these bytes"
            if asked
            else ""
        )
        return (
            f"{files} at {self.sha[:12]}: no approved pull request changed {it} to these "
            f"bytes{registry}{why}; only reviewed bytes are deployed (change {it} in a pull "
            "request, so that its reviewers see the change)"
        )

    def _blob(self, path: str, ref: str) -> str | None:
        if (path, ref) not in self._blobs:
            self._blobs[(path, ref)] = self.gh.blob_sha(path, ref)
        return self._blobs[(path, ref)]

    def _introduced(self, judged: Judged, path: str, blob: str) -> bool:
        """Whether the pull request's diff changed `path` to the bytes `blob`: listed among its
        files, at its head those bytes, and not merely moved or copied there (a rename or a
        copy of a file shows no bytes: GitHub lists it with its `previous_filename`)."""
        entry = judged.changed(path)
        if entry is None or self._blob(path, judged.pull.head_sha) != blob:
            return False
        if entry.status in ("renamed", "copied") and entry.previous_filename:
            if judged.number not in self._bases:
                pull = judged.pull
                self._bases[judged.number] = self.gh.merge_base(pull.base_sha, pull.head_sha)
            return self._blob(entry.previous_filename, self._bases[judged.number]) != blob
        return True

    def _unreviewed(
        self,
        model: ModelFiles,
        path: str,
        blob: str,
        judged: Sequence[Judged],
        evidence: Evidence | None,
    ) -> str | None:
        """Why the bytes of `path` at the pushed commit were never reviewed; None when they
        were. Cheapest evidence first: the range's diffs (listed already), the registry, and
        only then the pull request that last changed the file (GitHub calls)."""
        if any(self._introduced(j, path, blob) for j in reversed(judged)):
            return None
        if evidence is None:
            return "only the range's pull requests were asked"
        if evidence.published(path, blob):
            return None
        baseline = self._at_baseline(path, blob, evidence)
        if baseline is None:
            return None
        why = self._last_change(model, path, blob, evidence.last_change(path), evidence)
        if why is None:
            return None
        return f"{why}; {baseline}" if baseline else why

    def _at_baseline(self, path: str, blob: str, evidence: Evidence) -> str | None:
        """None when `path` has at the policy's baseline the bytes `blob` and the baseline
        counts; else why not, or '' when there is no baseline to speak of."""
        baseline = evidence.baseline
        if baseline is None:
            return ""
        named = f"the baseline {baseline.commit[:12]} ({baseline.where}, deploy.reviewed_at)"
        if baseline.problem is not None:
            return f"{named} does not count: {baseline.problem}"
        if not evidence.same_at(baseline.commit, path, blob):
            return f"other bytes at {named}"
        key = (baseline.commit, baseline.set_by)
        if key not in self._baselines:
            self._baselines[key] = self._baseline_why_not(baseline, evidence)
        why = self._baselines[key]
        return None if why is None else f"these bytes at {named}, which does not count: {why}"

    def _baseline_why_not(self, baseline: Baseline, evidence: Evidence) -> str | None:
        """None when an approved pull request set the policy's `deploy.reviewed_at` to this
        commit: the gate approved it at its merge for the policy itself (the high tier, by
        the policy at its base), its diff changed that line (to this value at its approved
        head, from another at its merge base: a pull request that edits only another part of
        the policy does not vouch for a line an unreviewed change wrote), and the commit was on
        the branch's first-parent history at its base (its reviewers could know the files it
        names; a commit of its own branch, or of a merged branch, was never the branch's
        tree). Else why not."""
        commit = baseline.set_by
        line = "deploy.reviewed_at"
        if commit is None:
            return f"no commit of the branch set {line} to it"
        judged, number = self._approved_landing(
            commit,
            evidence,
            f"{line} was set",
            lambda j: any(o.path == POLICY_PATH and o.approved for o in j.decision.outcomes),
            POLICY_PATH,
        )
        if judged is None:
            return number
        pull = judged.pull
        at_head = reviewed_at_of(self.gh.file_text(POLICY_PATH, pull.head_sha))
        if judged.changed(POLICY_PATH) is None or at_head != baseline.commit:
            return f"{number}, whose approved head does not name it"
        if judged.number not in self._bases:
            self._bases[judged.number] = self.gh.merge_base(pull.base_sha, pull.head_sha)
        base = self._bases[judged.number]
        if reviewed_at_of(self.gh.file_text(POLICY_PATH, base)) == baseline.commit:
            return f"{number}, whose diff did not change it (it named it already)"
        if not evidence.on_branch(baseline.commit, pull.base_sha):
            return (
                f"{number}, but {baseline.commit[:12]} was not on the default branch's "
                f"first-parent history at its base {pull.base_sha[:12]}: a baseline vouches "
                "only for files the branch held before the pull request that names it"
            )
        return None

    def _landing_pull(self, commit: str, evidence: Evidence) -> dict[str, Any] | None:
        """The merged pull request that brought first-parent commit `commit` onto the branch:
        `pull_of`, or for a rebase merge's earlier commit before the range, the pull request
        GitHub associates it with, merged by a later commit of the branch. What binds is still
        that pull request's own diff, never the association alone."""
        found = self.pull_of(commit)
        if found is None:
            found = next(
                (
                    p
                    for p in self.gh.commit_pulls(commit)
                    if p.get("merged_at")
                    and isinstance(p.get("merge_commit_sha"), str)
                    and evidence.landed(commit, p["merge_commit_sha"])
                ),
                None,
            )
        return found

    def _last_change(
        self, model: ModelFiles, path: str, blob: str, commit: str | None, evidence: Evidence
    ) -> str | None:
        """None when `commit`, which last changed `path` on the branch, is the merge of a pull
        request the gate approved for the model at its merge whose diff changed `path` to
        `blob`; else why not."""
        if commit is None:
            return "no commit of the branch brought it there"
        judged, number = self._approved_landing(
            commit,
            evidence,
            "last changed",
            lambda j: model.name in {o.name for o in j.decision.outcomes},
            model.name,
        )
        if judged is None:
            return number
        if not self._introduced(judged, path, blob):
            return f"{number}, which did not change it to these bytes"
        return None

    def _approved_landing(
        self,
        commit: str,
        evidence: Evidence,
        did: str,
        covers: Callable[[Judged], bool],
        what: str,
    ) -> tuple[Judged | None, str]:
        """The pull request whose merge brought `commit` onto the branch, when the gate
        approved it at its merge and its approval `covers` `what`, and how a message names it
        ("<did> by pull request #N"); else (None, why not). `did`: what the commit did."""
        found = self._landing_pull(commit, evidence)
        if found is None:
            return None, f"{did} by {commit[:12]}, which no merged pull request produced"
        judged = self.judged(found)
        number = f"{did} by pull request #{judged.number}"
        if not judged.decision.approved:
            return None, f"{number}, merged without the approvals it needs"
        if not covers(judged):
            return None, f"{number}, whose approval did not cover {what}"
        return judged, number
