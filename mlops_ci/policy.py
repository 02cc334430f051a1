"""The approval policy and the governance decision: pure functions, no I/O.

`parse_policy` turns `.mlops/policy.yaml` text into a `Policy` (or problems with lines);
`decide` turns (policy, pull-request facts, reviews, team memberships) into a `Decision`.
Everything the gate reads from GitHub arrives here as values, so every rule is unit-testable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mlops_ci import manifest
from mlops_ci.manifest import Problem
from mlops_ci.resources import POLICY_SCHEMA

#: Where a repository keeps its approval policy (DESIGN.md "Policy").
POLICY_PATH = ".mlops/policy.yaml"
TIERS = ("low", "medium", "high")
HIGHEST_TIER = TIERS[-1]
_RANK = {tier: i for i, tier in enumerate(TIERS)}
#: author_association values of people with a standing in the repository. Others (CONTRIBUTOR,
#: FIRST_TIMER, NONE, ...) cannot approve, just as GitHub counts only reviewers with write access.
TRUSTED_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
_OWNER = re.compile(r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:/[A-Za-z0-9][A-Za-z0-9_.-]{0,99})?")

# Why a review did not count, in words a reviewer understands.
AUTHOR = "is the pull request's author"
CO_AUTHOR = "pushed commits to this pull request"
BOT = "is a bot"
STALE = "approved an older commit, not the head"
DISMISSED = "was dismissed"
SUPERSEDED = "was superseded by a later review from the same reviewer"
NOT_COLLABORATOR = "has no write access (author_association {})"
NO_WRITE = "has no write access (repository permission: {})"
#: Repository permissions that may approve (GET /repos/{o}/{r}/collaborators/{u}/permission;
#: its `permission` maps maintain to write and triage to read).
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
NOT_OWNER = "is not an owner of {}"


# --- the policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """What one risk tier demands."""

    approvals: int
    from_owners: bool = False
    required_teams: tuple[str, ...] = ()
    changes_requested_blocks: str = "anyone"  # anyone | owners | nobody


@dataclass(frozen=True)
class ReviewedAt:
    """`deploy.reviewed_at`: the commit whose files deploy counts as reviewed (the adoption
    baseline; `reverify.RangeJudge` decides whether it may count), and the line naming it."""

    commit: str  # a full SHA (the schema allows nothing else)
    line: int | None = None


@dataclass(frozen=True)
class Policy:
    """The rules per tier, as of the pull request's base commit."""

    low: Rule
    medium: Rule
    high: Rule
    owners: tuple[str, ...] = ()  # who owns the policy file itself
    source: str = "built-in default"
    reviewed_at: ReviewedAt | None = None  # deploy's adoption baseline; never used by `decide`

    def rule(self, tier: str) -> Rule:
        rule: Rule = getattr(self, tier)
        return rule


DEFAULT_POLICY = Policy(
    low=Rule(approvals=1),
    medium=Rule(approvals=1, from_owners=True),
    high=Rule(approvals=2, from_owners=True),
)


def policy_from_data(data: Mapping[str, Any], source: str = POLICY_PATH) -> Policy:
    """A Policy from a schema-valid document; tiers left out keep their defaults."""
    tiers = data.get("tiers") or {}
    rules: dict[str, Rule] = {}
    for tier in TIERS:
        spec = tiers.get(tier)
        if spec is None:
            rules[tier] = DEFAULT_POLICY.rule(tier)
            continue
        rules[tier] = Rule(
            approvals=int(spec["approvals"]),
            from_owners=bool(spec.get("from_owners", False)),
            required_teams=tuple(spec.get("required_teams", ())),
            changes_requested_blocks=str(spec.get("changes_requested_blocks", "anyone")),
        )
    deploy = data.get("deploy") or {}
    reviewed = deploy.get("reviewed_at")
    return Policy(
        **rules,
        owners=tuple(data.get("owners", ())),
        source=source,
        reviewed_at=ReviewedAt(str(reviewed)) if reviewed else None,
    )


def parse_policy(text: str | bytes, path: str = POLICY_PATH) -> tuple[Policy | None, list[Problem]]:
    """Parse and schema-check policy YAML: (Policy, []) or (None, problems with lines)."""
    data, problems, node = manifest.parse_document(text, path, POLICY_SCHEMA)
    if data is None or problems:
        return None, list(problems)
    parsed = policy_from_data(data, source=path)
    if parsed.reviewed_at is not None:
        from mlops_ci.manifest.safe_yaml import locate

        line, _ = locate(node, ["deploy", "reviewed_at"])
        parsed = replace(parsed, reviewed_at=replace(parsed.reviewed_at, line=line))
    return parsed, []


def reviewed_at_of(text: str | bytes | None) -> str | None:
    """The `deploy.reviewed_at` a policy text names, read without the schema (None: none, or
    unreadable): for comparing the line across the file's history, not for trusting it."""
    from mlops_ci.manifest.safe_yaml import YamlInvalid, read

    if text is None:
        return None
    try:
        data, _ = read(text)
    except YamlInvalid:
        return None
    deploy = data.get("deploy") if isinstance(data, dict) else None
    value = deploy.get("reviewed_at") if isinstance(deploy, dict) else None
    return str(value) if value is not None else None


# --- pull-request facts -------------------------------------------------------------------------


@dataclass(frozen=True)
class Review:
    """One submitted pull-request review, with GitHub's own state names."""

    id: int
    login: str
    user_type: str  # "User" | "Bot" | "Organization"
    state: str  # APPROVED | CHANGES_REQUESTED | COMMENTED | DISMISSED | PENDING
    commit_id: str | None
    author_association: str  # OWNER | MEMBER | COLLABORATOR | CONTRIBUTOR | NONE | ...
    submitted_at: str | None = None

    @property
    def is_bot(self) -> bool:
        return self.user_type == "Bot" or self.login.endswith("[bot]")


@dataclass(frozen=True)
class ManifestSide:
    """A model manifest as read at one commit (base or head)."""

    path: str
    name: str | None
    risk: str | None
    owners: tuple[str, ...]
    problem: str | None = None  # why name/risk/owners could not be read; the side counts as high

    @property
    def tier(self) -> str:
        return self.risk if self.risk in _RANK and self.problem is None else HIGHEST_TIER


def manifest_side(path: str, data: Any, problems: Sequence[object] = ()) -> ManifestSide:
    """The governance fields of a parsed manifest; other schema problems are validate's job."""
    metadata = data.get("metadata") if isinstance(data, dict) else None
    if not isinstance(metadata, dict):
        first = str(problems[0]) if problems else f"{path}: metadata is missing"
        return ManifestSide(path, None, None, (), problem=first)
    name = metadata.get("name") if isinstance(metadata.get("name"), str) else None
    risk, owners = metadata.get("risk"), metadata.get("owners")
    problem = None
    if risk not in _RANK:
        problem = f"{path}: metadata.risk must be one of {', '.join(TIERS)}, got {risk!r}"
        risk = None
    if not (
        isinstance(owners, list)
        and owners
        and all(isinstance(o, str) and _OWNER.fullmatch(o) for o in owners)
    ):
        problem = problem or f"{path}: metadata.owners must list @users or @org/teams"
        owners = []
    return ManifestSide(path, name, risk, tuple(owners), problem)


@dataclass(frozen=True)
class ModelChange:
    """One model the pull request touches; `base` is None when added, `head` when deleted."""

    path: str  # the manifest's path at head (at base when deleted)
    change: str  # added | removed | modified | renamed | files (its folder changed, not it)
    base: ManifestSide | None
    head: ManifestSide | None

    @property
    def name(self) -> str:
        for side in (self.head, self.base):
            if side is not None and side.name:
                return side.name
        return self.path

    @property
    def tier(self) -> str:
        """The stricter of the base and head tiers: a pull request cannot lower its own bar."""
        tiers = [s.tier for s in (self.base, self.head) if s is not None]
        return max(tiers, key=_RANK.__getitem__) if tiers else HIGHEST_TIER

    @property
    def owners(self) -> tuple[str, ...]:
        """Owners as of base: a pull request cannot appoint the owners who approve it. Only a
        new model takes its owners from head; a model whose owners cannot be read at base has
        none (`_targets` lets the policy's owners stand in)."""
        if self.base is not None:
            return self.base.owners
        return self.head.owners if self.head is not None else ()


@dataclass(frozen=True)
class PullFacts:
    """What the gate knows about the pull request, read at its base and head commits."""

    number: int
    author: str
    head_sha: str
    models: tuple[ModelChange, ...] = ()
    policy_changed: bool = False
    committers: frozenset[str] = frozenset()  # logins that authored or committed its commits
    # The branch it merges into and the repository's default branch, as the API names them
    # (None: not asked, as in unit tests of the other rules).
    base_branch: str | None = None
    default_branch: str | None = None


# --- the decision -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ignored:
    """A review that did not count, and why (for one model when `model` is set)."""

    login: str
    review_id: int
    state: str
    reason: str
    model: str | None = None

    def __str__(self) -> str:
        where = f" for {self.model}" if self.model and self.model not in self.reason else ""
        return f"@{self.login} ({self.state.lower()}, review {self.review_id}) {self.reason}{where}"


@dataclass(frozen=True)
class Outcome:
    """The verdict for one model, or for the policy file."""

    name: str
    path: str
    tier: str
    rule: Rule
    approved: bool
    approvers: tuple[str, ...]  # logins whose approvals counted here
    missing: tuple[str, ...]  # sentences, empty when approved
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "tier": self.tier,
            "rule": {
                "approvals": self.rule.approvals,
                "from_owners": self.rule.from_owners,
                "required_teams": list(self.rule.required_teams),
                "changes_requested_blocks": self.rule.changes_requested_blocks,
            },
            "approved": self.approved,
            "approvers": list(self.approvers),
            "missing": list(self.missing),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Decision:
    """Approved or not, with everything a reviewer needs to see why."""

    approved: bool
    reason: str  # one line
    head_sha: str
    policy_source: str
    outcomes: tuple[Outcome, ...] = ()
    counted: tuple[str, ...] = ()  # logins whose approvals counted for at least one outcome
    ignored: tuple[Ignored, ...] = ()

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(m for o in self.outcomes for m in o.missing)

    def to_json(self) -> dict[str, Any]:
        return {
            "approved": self.approved,
            "reason": self.reason,
            "head_sha": self.head_sha,
            "policy": self.policy_source,
            "models": [o.to_json() for o in self.outcomes],
            "missing": list(self.missing),
            "approvals_counted": list(self.counted),
            "ignored": [
                {
                    "login": i.login,
                    "review_id": i.review_id,
                    "state": i.state,
                    "reason": i.reason,
                    "model": i.model,
                }
                for i in self.ignored
            ],
        }


@dataclass(frozen=True)
class _Standing:
    """Each reviewer's standing review after GitHub's rules, and what was set aside."""

    approvals: tuple[Review, ...]  # eligible approvals on the head commit
    changes_requested: tuple[Review, ...]  # standing requests for changes (any commit)
    ignored: tuple[Ignored, ...] = field(default=())


def _no_write_access(review: Review, permissions: Mapping[str, str] | None) -> str | None:
    """Why the reviewer cannot approve, or None. With `permissions` (login lowercased ->
    repository permission, as the gate reads them) the answer is exact and a reviewer left out
    has none; without, author_association decides, which can hide a private org membership."""
    if permissions is None:
        association = review.author_association
        return None if association in TRUSTED_ASSOCIATIONS else NOT_COLLABORATOR.format(association)
    level = permissions.get(review.login.lower(), "none")
    return None if level in WRITE_PERMISSIONS else NO_WRITE.format(level)


def review_logins(reviews: Iterable[Review]) -> list[str]:
    """The reviewers whose repository permission `decide` may need (approvals and requests for
    changes; comments never count; a bot's review never depends on it)."""
    wanted = {
        r.login.lower(): r.login
        for r in reviews
        if r.state in ("APPROVED", "CHANGES_REQUESTED") and not r.is_bot
    }
    return sorted(wanted.values(), key=str.lower)


def _standing(
    facts: PullFacts, reviews: Iterable[Review], permissions: Mapping[str, str] | None = None
) -> _Standing:
    """Latest APPROVED / CHANGES_REQUESTED per reviewer wins; COMMENTED does not override it;
    DISMISSED clears it. Then the approvals that can never count are set aside."""
    latest: dict[str, Review] = {}
    ignored: list[Ignored] = []
    for review in sorted(reviews, key=lambda r: r.id):  # GitHub's ids grow with time
        who = review.login.lower()
        if review.state in ("APPROVED", "CHANGES_REQUESTED"):
            previous = latest.get(who)
            if previous is not None:
                ignored.append(Ignored(previous.login, previous.id, previous.state, SUPERSEDED))
            latest[who] = review
        elif review.state == "DISMISSED":
            ignored.append(Ignored(review.login, review.id, review.state, DISMISSED))
            previous = latest.pop(who, None)
            if previous is not None:
                ignored.append(Ignored(previous.login, previous.id, previous.state, SUPERSEDED))
    author = facts.author.lower()
    co_authors = {c.lower() for c in facts.committers} - {author}
    approvals: list[Review] = []
    changes: list[Review] = []
    for review in latest.values():
        who = review.login.lower()
        reason = None
        if who == author:
            reason = AUTHOR
        elif review.is_bot:
            # A bot's approval never counts; its request for changes blocks, failing closed,
            # whatever its access: an app is no collaborator, and its permission reads `none`.
            reason = BOT if review.state == "APPROVED" else None
        elif (no_write := _no_write_access(review, permissions)) is not None:
            reason = no_write
        elif review.state == "APPROVED" and who in co_authors:
            reason = CO_AUTHOR
        elif review.state == "APPROVED" and review.commit_id != facts.head_sha:
            reason = STALE
        if reason is not None:
            ignored.append(Ignored(review.login, review.id, review.state, reason))
        elif review.state == "APPROVED":
            approvals.append(review)
        else:
            changes.append(review)
    return _Standing(tuple(approvals), tuple(changes), tuple(ignored))


def _team(owner: str) -> str | None:
    return owner.lower() if "/" in owner else None


def is_owner(
    login: str, owners: Iterable[str], memberships: Mapping[tuple[str, str], bool]
) -> bool:
    """Whether `login` is listed as a user owner or is a member of a listed team."""
    for owner in owners:
        team = _team(owner)
        if team is None:
            if owner.lstrip("@").lower() == login.lower():
                return True
        elif memberships.get((team, login.lower()), False):
            return True
    return False


@dataclass(frozen=True)
class _Target:
    name: str
    path: str
    tier: str
    owners: tuple[str, ...]
    notes: tuple[str, ...]
    anyone_if_no_owners: bool = False  # only the policy file, which may name no owners


def _targets(policy: Policy, facts: PullFacts) -> list[_Target]:
    targets = []
    for model in facts.models:
        notes = []
        base, head = model.base, model.head
        if base and head and not (base.problem or head.problem) and base.tier != head.tier:
            notes.append(
                f"risk is {base.tier} at base and {head.tier} at head: "
                f"the stricter, {model.tier}, applies"
            )
        if model.change == "removed":
            notes.append("deleted by this pull request: governed by its tier at base")
        if model.change == "renamed" and model.base is not None:
            notes.append(f"renamed from {model.base.path}: its tier at base still applies")
        for side, label in ((model.base, "base"), (model.head, "head")):
            if side is not None and side.problem:
                notes.append(
                    f"cannot read the manifest at {label} ({side.problem}): treated as high risk"
                )
        owners = model.owners
        if base is not None and not owners and policy.owners:
            # The pull request may not name them, and nobody at all would leave the fix of a
            # broken manifest to an administrator's override: those who own the rules decide.
            owners = policy.owners
            notes.append(
                f"its owners cannot be read at base: the policy's owners "
                f"({', '.join(owners)}) stand in"
            )
        targets.append(_Target(model.name, model.path, model.tier, owners, tuple(notes)))
    if facts.policy_changed:
        notes = ["a change to the policy itself needs the highest tier"]
        if policy.high.from_owners and not policy.owners:
            notes.append(
                "the policy names no owners (owners:), so approvals from anyone with "
                "write access count"
            )
        targets.append(
            _Target(
                "the approval policy",
                POLICY_PATH,
                HIGHEST_TIER,
                policy.owners,
                tuple(notes),
                anyone_if_no_owners=True,
            )
        )
    return targets


def _needs_owners(rule: Rule, target: _Target) -> bool:
    # A model whose owners cannot be read needs owners nobody can be: fail closed.
    return rule.from_owners and (bool(target.owners) or not target.anyone_if_no_owners)


def membership_queries(
    policy: Policy,
    facts: PullFacts,
    reviews: Iterable[Review],
    permissions: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """The (team, login) pairs `decide` needs answered: only for reviews that can count."""
    standing = _standing(facts, reviews, permissions)
    wanted: set[tuple[str, str]] = set()
    for target in _targets(policy, facts):
        rule = policy.rule(target.tier)
        owner_teams = [t for t in map(_team, target.owners) if t]
        teams_for_approvals = [t.lower() for t in rule.required_teams]
        if _needs_owners(rule, target):
            teams_for_approvals += owner_teams
        for review in standing.approvals:
            wanted.update((t, review.login.lower()) for t in teams_for_approvals)
        if rule.changes_requested_blocks == "owners":
            for review in standing.changes_requested:
                wanted.update((t, review.login.lower()) for t in owner_teams)
    return sorted(wanted)


def _approvals(n: int) -> str:
    return "1 more approval" if n == 1 else f"{n} more approvals"


def decide(
    policy: Policy,
    facts: PullFacts,
    reviews: Iterable[Review],
    memberships: Mapping[tuple[str, str], bool],
    permissions: Mapping[str, str] | None = None,
    *,
    any_base: bool = False,
) -> Decision:
    """Approved or not. `memberships` maps (team "@org/slug" lowercased, login lowercased) to
    membership; a pair that is absent counts as "not a member". `permissions` maps reviewers
    (lowercased) to their repository permission; give it whenever it can be read (see
    `_no_write_access`). A pull request into a branch other than the default one is judged
    only with `any_base`: by the gate, whose status for it names that branch."""
    reviews = list(reviews)
    if facts.base_branch is not None and (
        not facts.base_branch
        or not facts.default_branch
        or (facts.base_branch != facts.default_branch and not any_base)
    ):
        # A commit status belongs to the head commit, so it counts for every pull request from
        # that head: judged against a branch its author controls (its policy, its manifests, or
        # simply no difference), a `success` under the default branch's context would let the
        # same head merge into the default branch. The gate posts such a decision under that
        # branch's own context (`status_context`); anything else that approves (deploy's
        # re-verification) approves only pull requests into the default branch.
        into = facts.base_branch or "a branch the API did not name"
        default = facts.default_branch or "which the API did not name"
        return Decision(
            False,
            f"Not approved: only pull requests into the default branch ({default}) are "
            f"judged; this one is into {into}",
            facts.head_sha,
            policy.source,
        )
    standing = _standing(facts, reviews, permissions)
    ignored = list(standing.ignored)
    outcomes: list[Outcome] = []
    counted: set[str] = set()
    for target in _targets(policy, facts):
        rule = policy.rule(target.tier)
        label = f"{target.name} (risk: {target.tier})"
        if target.path == POLICY_PATH:
            label = f"the approval policy {POLICY_PATH} (needs the {target.tier} tier)"
        approvers: list[str] = []
        for review in standing.approvals:
            if _needs_owners(rule, target) and not is_owner(
                review.login, target.owners, memberships
            ):
                ignored.append(
                    Ignored(
                        review.login,
                        review.id,
                        review.state,
                        NOT_OWNER.format(target.name),
                        target.name,
                    )
                )
                continue
            approvers.append(review.login)
        missing: list[str] = []
        short = rule.approvals - len(approvers)
        if short > 0:
            whom = ""
            if _needs_owners(rule, target):
                whom = f" from its owners ({', '.join(target.owners) or 'none could be read'})"
            missing.append(f"{label} needs {_approvals(short)}{whom}")
        team_approvers: list[str] = []
        for team in rule.required_teams:
            members = [
                r.login
                for r in standing.approvals
                if memberships.get((team.lower(), r.login.lower()), False)
            ]
            if members:
                team_approvers += members
            else:
                missing.append(f"{label} needs 1 more approval from {team}")
        blockers = [
            r.login
            for r in standing.changes_requested
            if rule.changes_requested_blocks == "anyone"
            or (
                rule.changes_requested_blocks == "owners"
                and is_owner(r.login, target.owners, memberships)
            )
        ]
        if blockers:
            who = ", ".join(f"@{b}" for b in sorted(blockers, key=str.lower))
            missing.append(f"{label} is blocked: changes requested by {who}")
        approved = not missing
        outcome_approvers = tuple(dict.fromkeys(approvers + team_approvers))
        counted.update(outcome_approvers)
        outcomes.append(
            Outcome(
                target.name,
                target.path,
                target.tier,
                rule,
                approved,
                outcome_approvers,
                tuple(missing),
                target.notes,
            )
        )
    if not outcomes:
        return Decision(
            True,
            "no model manifest, model folder or approval policy changed: nothing to approve",
            facts.head_sha,
            policy.source,
            ignored=tuple(ignored),
        )
    approved = all(o.approved for o in outcomes)
    if approved:
        names = ", ".join(o.name for o in outcomes)
        reason = f"approved: {names}"
    else:
        reason = "; ".join(m for o in outcomes for m in o.missing)
    return Decision(
        approved,
        reason,
        facts.head_sha,
        policy.source,
        tuple(outcomes),
        tuple(sorted(counted, key=str.lower)),
        tuple(ignored),
    )


def status_line(decision: Decision, limit: int = 140) -> str:
    """The commit status description: one line within GitHub's 140 characters."""
    if decision.approved:
        names = [o.name for o in decision.outcomes]
        if not names:
            text = "No model changed: nothing to approve"
        elif len(names) == 1:
            text = f"Approved: {names[0]}"
        else:
            text = f"Approved: {len(names)} models"
    else:
        missing = decision.missing
        text = missing[0] if missing else decision.reason or "Not approved"
        if len(missing) > 1:
            text += f" (+{len(missing) - 1} more)"
    from mlops_ci.report.escape import status

    return status(text, limit)
