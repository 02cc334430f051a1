"""One GitHub issue per (registry, model) that needs attention: opened, edited in place, closed
when healthy.

An issue is found again by its label and a hidden marker naming the model and the registry (the
open labelled issues are listed once a run, then matched per model), so a run never opens a
second one, and a run against a staging registry never touches the issues of production's run
from the same repository. An issue whose marker names the model alone (written before markers
named the registry) is adopted by the first run that finds it, so upgrading opens no duplicate.
A healthy model's open issue gets a comment and is closed as completed. An issue a person closed
as not planned (or as a duplicate) is respected (no new issue) while the same serving version
keeps needing attention for no new reason; the previous run's verdict file says which issue
that was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mlops_ci.errors import MlopsCiError
from mlops_ci.github import GitHub, Issue
from mlops_ci.monitor import render
from mlops_ci.monitor.check import Verdict

LABEL = "mlops-ci/monitor"
#: How a person closes an issue to say "no more of these" (GitHub's `state_reason`): not
#: planned, or a duplicate of one they track elsewhere. "completed" while the model still needs
#: attention is a claim the next run contradicts with a new issue.
WAIVED = ("not_planned", "duplicate")


def registry_id(registry: str) -> str:
    """A short, fixed name of a registry for the marker: the URI itself may hold `-->`."""
    return hashlib.sha256(registry.rstrip("/").encode()).hexdigest()[:16]


def marker(model: str, registry: str | None = None) -> str:
    """The hidden marker of `model`'s issue for `registry` (None: the old, registry-less one)."""
    if registry is None:
        return f"<!-- mlops-ci:monitor:{model} -->"
    return f"<!-- mlops-ci:monitor:{model} registry:{registry_id(registry)} -->"


def kinds(v: Verdict) -> frozenset[str]:
    """What a verdict needs attention for; a new one is news even after "not planned"."""
    dataset = v.drift is not None and v.drift.dataset_drift
    found = {"stale": v.stale, "drift": dataset, "prediction": v.prediction_drift}
    return frozenset(k for k, on in {**found, "decay": v.decayed}.items() if on)


@dataclass(frozen=True)
class Previous:
    """What the model's newest verdict file says of its issue: which one tracked it, for which
    serving version, and what it needed attention for (`kinds`)."""

    issue: int
    registry_version: int | None
    kinds: frozenset[str]


def previous_of(doc: Any) -> Previous | None:
    """`Previous` from a verdict file's JSON (None: it names no issue, or is malformed)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("issue"), dict):
        return None
    number, covers = doc["issue"].get("number"), doc["issue"].get("for")
    version = doc.get("registry_version")
    if type(number) is not int or not isinstance(covers, list):
        return None
    return Previous(
        number,
        version if type(version) is int else None,
        frozenset(k for k in covers if isinstance(k, str)),
    )


@dataclass(frozen=True)
class Action:
    model: str
    # "opened" | "updated" | "closed" | "left open" | "left closed" | "none"
    action: str
    number: int | None = None
    url: str | None = None
    #: What the issue that tracks the model covers (see `kinds`).
    kinds: frozenset[str] = frozenset()
    #: Why a person closed the issue that is "left closed" (GitHub's `state_reason`).
    reason: str | None = None

    def record(self) -> dict[str, Any] | None:
        """The verdict file's `issue`: the issue that tracks the model after this run."""
        tracked = ("opened", "updated", "left open", "left closed")
        if self.action not in tracked or self.number is None:
            return None
        return {"number": self.number, "for": sorted(self.kinds)}


def sync(
    gh: GitHub,
    verdicts: Sequence[Verdict],
    run_url: str | None = None,
    *,
    registry: str,
    previous: Callable[[str], Previous | None] = lambda name: None,
) -> list[Action]:
    """Bring each model's issue in line with its verdict; raises MlopsCiError on API failure."""
    # One listing for the run, matched per model: listing once a model cost M × ⌈K/100⌉ requests.
    open_issues = gh.open_issues(LABEL) if verdicts else []
    actions = []
    for v in verdicts:
        mark, legacy = marker(v.name, registry), marker(v.name)
        found = next((i for i in open_issues if mark in i.body), None) or next(
            (i for i in open_issues if legacy in i.body), None
        )
        now = kinds(v)
        if found is None and (v.needs_attention or v.unchecked):
            prev = previous(v.name)
            muted = _not_planned(gh, v, mark, prev)
            if muted is not None and prev is not None:
                what = prev.kinds | now
                actions.append(
                    Action(
                        v.name, "left closed", muted.number, muted.html_url, what,
                        muted.state_reason,
                    )
                )  # fmt: skip
                continue
        if v.needs_attention:
            title = render.issue_title(v, registry)
            body = render.issue_body(v, mark, run_url, registry)
            if found is None:
                issue = gh.create_issue(title, body, [LABEL])
                if LABEL not in issue.labels:
                    _unlabelled(gh, issue, v.name)
                actions.append(Action(v.name, "opened", issue.number, issue.html_url, now))
            else:
                gh.edit_issue(found.number, title=title, body=body)
                actions.append(Action(v.name, "updated", found.number, found.html_url, now))
        elif found is not None and v.unchecked:
            # No production rows to judge: "healthy again" would be a guess. Left open until a
            # run reads rows (a stopped log must not close its own alarm). What it was opened
            # for still stands, should a person close it as not planned meanwhile.
            prev = previous(v.name)
            what = now | (prev.kinds if prev is not None and prev.issue == found.number else now)
            actions.append(Action(v.name, "left open", found.number, found.html_url, what))
        elif found is not None:
            gh.close_issue(found.number, render.healthy_comment(v, run_url))
            actions.append(Action(v.name, "closed", found.number, found.html_url))
        else:
            actions.append(Action(v.name, "none"))
    return actions


def _not_planned(gh: GitHub, v: Verdict, mark: str, prev: Previous | None) -> Issue | None:
    """The model's issue that a person closed as not planned, if it still stands: the previous
    run tracked it for the same serving version, and the model needs attention for nothing new.
    (Answering "not planned" with a fresh issue every day teaches people to ignore them.)"""
    if prev is None or prev.registry_version != v.registry_version:
        return None
    if not kinds(v) <= prev.kinds:
        return None
    issue = gh.issue(prev.issue)
    if (
        issue is None
        or issue.state != "closed"
        or issue.state_reason not in WAIVED
        or LABEL not in issue.labels  # ours: only triage access can label
        or mark not in issue.body
    ):
        return None
    return issue


def _unlabelled(gh: GitHub, issue: Issue, model: str) -> None:
    """GitHub opened the issue but dropped its label, as it does silently for a token that
    cannot label issues. The next run could not find it (it lists labelled issues: the label is
    what keeps others' issues out) and would open another, every run. Close it and stop."""
    note = "closed again"
    try:
        gh.close_issue(
            issue.number,
            f"mlops-ci monitor could not label this issue `{LABEL}`, so it could never find it "
            "again: closing it. Give the workflow's token permission to label issues.",
            reason="not_planned",
        )
    except MlopsCiError:
        note = "close it by hand"
    raise MlopsCiError(
        f"GitHub opened issue #{issue.number} for {model} without its label {LABEL} ({note}): "
        "the token cannot label issues in this repository, so no later run could find the "
        "issue again; give the workflow's GITHUB_TOKEN `issues: write` (or a token of someone "
        "with triage access)"
    )
