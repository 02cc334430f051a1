"""Unit tests of the pure approval logic in mlops_ci.policy: no HTTP, just values in and out."""

from __future__ import annotations

import itertools

import pytest

from mlops_ci import policy
from mlops_ci.github import Review
from mlops_ci.policy import (
    DEFAULT_POLICY,
    ManifestSide,
    ModelChange,
    Policy,
    PullFacts,
    Rule,
    decide,
    manifest_side,
    membership_queries,
    parse_policy,
    status_line,
)

HEAD = "h" * 40
OLD = "o" * 40
_ids = itertools.count(1)


def review(
    login: str,
    state: str = "APPROVED",
    *,
    commit: str = HEAD,
    user_type: str = "User",
    association: str = "MEMBER",
) -> Review:
    return Review(next(_ids), login, user_type, state, commit, association)


def side(
    name: str = "fraud-detector",
    risk: str = "medium",
    owners: tuple[str, ...] = ("@alice",),
    path: str = "m/model.yaml",
) -> ManifestSide:
    return ManifestSide(path, name, risk, owners)


def facts(
    *models: ModelChange,
    author: str = "carol",
    policy_changed: bool = False,
    committers: frozenset[str] = frozenset(),
) -> PullFacts:
    return PullFacts(7, author, HEAD, tuple(models), policy_changed, committers)


def modified(
    risk: str = "medium", owners: tuple[str, ...] = ("@alice",), name: str = "fraud-detector"
) -> ModelChange:
    s = side(name, risk, owners)
    return ModelChange(s.path, "modified", s, s)


# --- review semantics -------------------------------------------------------------------------


def test_latest_decisive_review_per_reviewer_wins():
    d = decide(
        DEFAULT_POLICY,
        facts(modified()),
        [review("alice", "CHANGES_REQUESTED"), review("alice", "APPROVED")],
        {},
    )
    assert d.approved
    assert d.counted == ("alice",)


def test_comment_does_not_override_a_request_for_changes():
    d = decide(
        DEFAULT_POLICY,
        facts(modified()),
        [review("alice"), review("bob", "CHANGES_REQUESTED"), review("bob", "COMMENTED")],
        {},
    )
    assert not d.approved
    assert d.missing == ("fraud-detector (risk: medium) is blocked: changes requested by @bob",)


def test_comment_after_an_approval_keeps_the_approval():
    d = decide(
        DEFAULT_POLICY, facts(modified()), [review("alice"), review("alice", "COMMENTED")], {}
    )
    assert d.approved


def test_dismissal_clears_the_reviewers_standing_review():
    d = decide(
        DEFAULT_POLICY, facts(modified()), [review("alice"), review("alice", "DISMISSED")], {}
    )
    assert not d.approved
    assert {i.reason for i in d.ignored} == {policy.DISMISSED, policy.SUPERSEDED}


def test_reviews_are_ordered_by_id_not_by_list_position():
    first, second = review("alice", "CHANGES_REQUESTED"), review("alice", "APPROVED")
    assert decide(DEFAULT_POLICY, facts(modified()), [second, first], {}).approved


def test_stale_approval_is_not_counted():
    d = decide(DEFAULT_POLICY, facts(modified()), [review("alice", commit=OLD)], {})
    assert not d.approved
    assert d.ignored[0].reason == policy.STALE


def test_stale_request_for_changes_still_blocks():
    d = decide(
        DEFAULT_POLICY,
        facts(modified()),
        [review("alice"), review("bob", "CHANGES_REQUESTED", commit=OLD)],
        {},
    )
    assert not d.approved


def test_author_and_co_authors_never_count():
    d = decide(
        DEFAULT_POLICY,
        facts(modified("low"), author="carol", committers=frozenset({"Dan"})),
        [review("carol"), review("dan")],
        {},
    )
    assert not d.approved
    assert sorted(i.reason for i in d.ignored) == sorted([policy.AUTHOR, policy.CO_AUTHOR])


def test_login_comparison_ignores_case():
    d = decide(
        DEFAULT_POLICY,
        facts(modified(owners=("@Alice",)), author="CAROL"),
        [review("carol"), review("alice")],
        {},
    )
    assert d.approved
    assert d.counted == ("alice",)


def test_bot_approval_is_ignored_but_a_bots_request_for_changes_blocks():
    bot = review("ci[bot]", user_type="Bot")
    d = decide(DEFAULT_POLICY, facts(modified("low")), [bot], {})
    assert not d.approved and d.ignored[0].reason == policy.BOT
    blocker = review("linter[bot]", "CHANGES_REQUESTED", user_type="Bot")
    d = decide(DEFAULT_POLICY, facts(modified("low")), [review("zed"), blocker], {})
    assert not d.approved


def test_outsiders_neither_approve_nor_block():
    outsider = {"association": "NONE"}
    d = decide(
        DEFAULT_POLICY,
        facts(modified("low")),
        [review("zed"), review("troll", "CHANGES_REQUESTED", **outsider)],
        {},
    )
    assert d.approved
    d = decide(DEFAULT_POLICY, facts(modified("low")), [review("fan", **outsider)], {})
    assert not d.approved


# --- tiers and owners -------------------------------------------------------------------------


def test_stricter_of_base_and_head_tier_applies():
    change = ModelChange(
        "m/model.yaml", "modified", side(risk="high", owners=("@a", "@b")), side(risk="low")
    )
    assert change.tier == "high"
    change = ModelChange("m/model.yaml", "modified", side(risk="low"), side(risk="medium"))
    assert change.tier == "medium"


def test_owners_come_from_base_when_the_model_exists():
    change = ModelChange(
        "m/model.yaml", "modified", side(owners=("@alice",)), side(owners=("@alice", "@mallory"))
    )
    assert change.owners == ("@alice",)
    d = decide(DEFAULT_POLICY, facts(change), [review("mallory")], {})
    assert not d.approved


def test_unreadable_manifest_side_counts_as_high():
    broken = ManifestSide("m/model.yaml", None, None, (), problem="bad yaml")
    change = ModelChange("m/model.yaml", "modified", side(risk="low"), broken)
    assert change.tier == "high"
    d = decide(DEFAULT_POLICY, facts(change), [review("alice")], {})
    assert not d.approved
    assert "cannot read the manifest at head" in d.outcomes[0].notes[-1]


def test_a_new_model_without_readable_owners_cannot_be_approved_by_anyone():
    broken = ManifestSide("m/model.yaml", None, "high", (), problem="owners missing")
    d = decide(
        DEFAULT_POLICY,
        facts(ModelChange("m/model.yaml", "added", None, broken)),
        [review("x"), review("y")],
        {},
    )
    assert not d.approved
    assert "from its owners (none could be read)" in d.missing[0]


def test_team_owner_counts_only_with_membership():
    change = modified(owners=("@acme/risk-ml",))
    assert not decide(DEFAULT_POLICY, facts(change), [review("dave")], {}).approved
    member = {("@acme/risk-ml", "dave"): True}
    assert decide(DEFAULT_POLICY, facts(change), [review("dave")], member).approved


def test_required_teams_are_extra_conditions_one_approval_may_meet_both():
    rules = Policy(low=Rule(1), medium=Rule(1, True, ("@acme/gov",)), high=Rule(2, True))
    change = modified(owners=("@alice",))
    d = decide(rules, facts(change), [review("alice")], {("@acme/gov", "alice"): True})
    assert d.approved
    d = decide(rules, facts(change), [review("alice")], {})
    assert d.missing == ("fraud-detector (risk: medium) needs 1 more approval from @acme/gov",)


def test_changes_requested_blocks_nobody():
    rules = Policy(low=Rule(1, changes_requested_blocks="nobody"), medium=Rule(1), high=Rule(2))
    d = decide(
        rules, facts(modified("low")), [review("zed"), review("bob", "CHANGES_REQUESTED")], {}
    )
    assert d.approved


def test_missing_counts_are_spelled_out():
    d = decide(DEFAULT_POLICY, facts(modified("high", ("@alice", "@dave"))), [], {})
    assert d.missing == (
        "fraud-detector (risk: high) needs 2 more approvals from its owners (@alice, @dave)",
    )


def test_policy_change_needs_the_high_tier_with_the_policy_owners():
    rules = Policy(low=Rule(1), medium=Rule(1), high=Rule(1, True), owners=("@acme/gov",))
    d = decide(rules, facts(policy_changed=True), [review("alice")], {})
    assert not d.approved
    d = decide(rules, facts(policy_changed=True), [review("gina")], {("@acme/gov", "gina"): True})
    assert d.approved


def test_policy_change_without_policy_owners_takes_any_writer():
    d = decide(DEFAULT_POLICY, facts(policy_changed=True), [review("x"), review("y")], {})
    assert d.approved
    assert "names no owners" in d.outcomes[0].notes[-1]


def test_no_model_and_no_policy_change_passes_with_a_reason():
    d = decide(DEFAULT_POLICY, facts(), [review("carol")], {})
    assert d.approved
    assert "nothing to approve" in d.reason
    assert status_line(d) == "No model changed: nothing to approve"


# --- membership queries -----------------------------------------------------------------------


def test_membership_is_asked_only_for_reviews_that_can_count():
    change = modified(owners=("@acme/risk-ml", "@alice"))
    reviews = [
        review("dave"),
        review("carol"),
        review("old", commit=OLD),
        review("bot[bot]", user_type="Bot"),
        review("eve", "COMMENTED"),
    ]
    assert membership_queries(DEFAULT_POLICY, facts(change), reviews) == [("@acme/risk-ml", "dave")]


def test_no_membership_query_when_the_tier_ignores_owners():
    change = modified("low", owners=("@acme/risk-ml",))
    assert membership_queries(DEFAULT_POLICY, facts(change), [review("dave")]) == []


# --- the policy file --------------------------------------------------------------------------


def test_policy_tiers_left_out_keep_their_defaults():
    parsed, problems = parse_policy(
        "apiVersion: mlops-ci/v1\nkind: Policy\ntiers:\n  high:\n    approvals: 3\n"
    )
    assert problems == []
    assert parsed is not None
    assert parsed.high == Rule(3)
    assert parsed.low == DEFAULT_POLICY.low and parsed.medium == DEFAULT_POLICY.medium


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            "apiVersion: mlops-ci/v1\nkind: Policy\ntiers:\n  high:\n    aprovals: 2\n",
            5,
            "did you mean 'approvals'",
        ),
        (
            "apiVersion: mlops-ci/v1\nkind: Policy\ntiers:\n  low:\n    approvals: -1\n",
            5,
            "at least 0",
        ),
        (
            "apiVersion: mlops-ci/v1\nkind: Policy\ntiers:\n  medium:\n    approvals: 1\n"
            "    required_teams: [acme]\n",
            6,
            "tiers.medium.required_teams",
        ),
        ("apiVersion: mlops-ci/v1\nkind: Policy\ntiers: [\n", 4, ""),
    ],
)
def test_invalid_policy_reports_the_line(text, line, words):
    parsed, problems = parse_policy(text)
    assert parsed is None
    assert any(p.line == line and words in p.message for p in problems), problems


def test_status_line_never_exceeds_140_characters():
    models = [
        modified("high", ("@acme/" + "x" * 90,), name=f"model-{i}-" + "y" * 40) for i in range(3)
    ]
    d = decide(DEFAULT_POLICY, facts(*models), [], {})
    line = status_line(d)
    assert len(line) <= 140
    assert line.endswith("…")


@pytest.mark.parametrize("owner", ["@alice\n", "@acme/risk-ml\n", "alice", "@"])
def test_an_owner_that_is_no_handle_makes_the_side_unreadable(owner):
    """Python's `$` matches before a final newline; an owner must be a handle and nothing more."""
    data = {"metadata": {"name": "m", "risk": "low", "owners": [owner]}}
    got = manifest_side("m/model.yaml", data)
    assert got.problem and "must list @users" in got.problem
    assert got.owners == () and got.tier == "high"


def test_a_pull_request_cannot_appoint_owners_when_those_at_base_cannot_be_read():
    """`@alice\\n` passed validate before its owners were fully matched; at base it now reads as
    no owners. The pull request's own owners list must not stand in for them."""
    base = manifest_side(
        "m/model.yaml", {"metadata": {"name": "m", "risk": "high", "owners": ["@alice\n"]}}
    )
    head = side("m", "high", ("@dave", "@erin"))
    change = ModelChange("m/model.yaml", "modified", base, head)
    assert change.owners == ()
    d = decide(DEFAULT_POLICY, facts(change), [review("dave"), review("erin")], {})
    assert not d.approved
    assert "from its owners (none could be read)" in d.missing[0]
    # The policy's owners, who own the rules, stand in for owners that cannot be read.
    rules = Policy(low=Rule(1), medium=Rule(1, True), high=Rule(1, True), owners=("@acme/gov",))
    d = decide(rules, facts(change), [review("dave")], {("@acme/gov", "dave"): True})
    assert d.approved, d.reason
    assert "the policy's owners (@acme/gov) stand in" in d.outcomes[0].notes[-1]
    assert not decide(rules, facts(change), [review("erin")], {}).approved
