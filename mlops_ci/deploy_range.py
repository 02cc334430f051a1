"""Which commits a push to the default branch deploys: everything merged since the last commit
whose deploy the registry's audit log records for this repository, not only the push's own
`before..after`.

GitHub keeps one pending run per concurrency group and cancels it when a newer one arrives, so
the run of a push may never run (and one may fail for a reason that is not a verdict); the next
push's `before` is then past changes that were never deployed. The log is the trustworthy
record of what was processed: only the registry's write key appends to it, and it is
hash-chained. `plan --registry` (the build job's matrix) and `deploy` (publish) both start here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_ci import gitcmd
from mlops_ci.errors import UsageError
from mlops_ci.registry import Registry

#: How a refusal that is not a verdict starts (deploy_push): its commit was not processed.
ERROR_PREFIX = "deploy stopped by an error:"
#: The actions that say a deploy of the record's commit ran to a verdict (a rollback's commit is
#: the release's, not a push's).
_PROCESSED = ("deploy", "refused", "smoke-failed")
#: The log's end read first: the last deploys of this repository are nearly always in it.
_TAIL_BYTES = 1 << 20
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass(frozen=True)
class Start:
    """Where a push's range starts: it deploys the commits in (commit, sha]."""

    commit: str
    recorded: bool  # from the registry's log (else the push's `before`, the fallback)
    note: str  # one line for the log of the run: which start, and why


@dataclass(frozen=True)
class Touching:
    """A first-parent commit of the range and the models it changed: by name, each with the
    folders of its manifest at either side, and the folders of touched manifests no name could
    be read from (a broken manifest still belongs to the model in its folder)."""

    commit: str
    models: dict[str, frozenset[str]]
    unnamed: frozenset[str] = field(default=frozenset())


def is_ancestor(repo: Path, commit: str, sha: str) -> bool:
    """Whether `commit` is in the clone and an ancestor of (or equal to) `sha`."""
    return gitcmd.run(repo, "merge-base", "--is-ancestor", commit, sha).returncode == 0


def _chunks_newest_first(reg: Registry) -> Iterator[list[dict[str, Any]]]:
    """The log's records from its end, newest first, in two chunks: its last MiB first, the
    rest of the log only when the answer is further back (a registry shared by many
    repositories, or a first deploy)."""
    from mlops_ci import audit

    tail = reg.store.tail(audit.LOG_KEY, _TAIL_BYTES) or b""
    lines = [line for line in tail.split(b"\n") if line.strip()]
    if len(tail) >= _TAIL_BYTES:
        lines = lines[1:]  # the first may be cut
    parsed = [_parse(line) for line in lines]
    yield list(reversed(parsed))
    first_seq = parsed[0].get("seq") if parsed else None
    if not isinstance(first_seq, int) or first_seq <= 1:
        return
    # On S3 the tail spans the last two segments at most: read the rest of the log only now.
    whole = [_parse(x) for x in (audit.read_log(reg) or b"").split(b"\n") if x.strip()]
    yield list(
        reversed([r for r in whole if isinstance(r.get("seq"), int) and r["seq"] < first_seq])
    )


def _parse(line: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(line)
    except ValueError:
        return {}  # a torn line names no commit; `audit verify` is where it is reported
    return doc if isinstance(doc, dict) else {}


def _is_error(record: dict[str, Any]) -> bool:
    return record.get("action") == "refused" and str(record.get("reason") or "").startswith(
        ERROR_PREFIX
    )


def _scan(reg: Registry, repo: Path, sha: str, prefix: str | None) -> tuple[str | None, str | None]:
    """(the nearest processed ancestor of `sha`, or else a processed descendant of it met
    first, newest first): see `last_processed` and `start`.

    A commit was processed when no model's NEWEST record for it is a refusal for an error. Not
    its newest record alone: a run writes a model with no build as an error and then publishes
    the models after it, so a `deploy` record can follow the error of the same run (the
    model with no build was then dropped for good)."""
    decided: set[str] = set()
    #: commit -> model -> whether its newest record for that commit (met so far) is an error
    newest: dict[str, dict[str, bool]] = {}
    for chunk in _chunks_newest_first(reg):
        mine = [r for r in chunk if _counts(r, prefix)]
        for record in mine:  # the whole chunk first: a commit's older records decide too
            models = newest.setdefault(record["commit"], {})
            models.setdefault(str(record.get("model") or ""), _is_error(record))
        for record in mine:
            commit = record["commit"]
            if commit in decided:
                continue
            decided.add(commit)
            if commit == sha or any(newest[commit].values()):
                continue
            if is_ancestor(repo, commit, sha):
                return commit, None
            if is_ancestor(repo, sha, commit):
                return None, commit
    return None, None


def _counts(record: dict[str, Any], prefix: str | None) -> bool:
    """Whether `record` says a deploy of this repository ran on its commit."""
    commit = record.get("commit")
    if (
        record.get("action") not in _PROCESSED
        or record.get("source") != "github"
        or not isinstance(commit, str)
        or not _SHA.fullmatch(commit)
    ):
        return False
    # another repository's deploy into a shared registry
    return prefix is None or str(record.get("run_url") or "").startswith(prefix)


def last_processed(reg: Registry, repo: Path, sha: str, prefix: str | None) -> str | None:
    """The nearest commit before `sha` whose deploy this repository's records say ran to a
    verdict: an ancestor of `sha` (a force-pushed-away commit is not one), other than `sha`
    itself (a re-run of its run judges the same range again). A commit where some model's newest
    record is a refusal for an error (GitHub unreachable, a missing build, ...) was not
    processed."""
    return _scan(reg, repo, sha, prefix)[0]


def start(reg: Registry | None, repo: Path, sha: str, before: str, prefix: str | None) -> Start:
    """The start of the push's range: the last processed commit the registry records, else
    (nothing recorded yet, or no registry to read) the push's `before`, said so in `note`. When
    a later commit was processed already (a cancelled run re-run after the next push deployed
    its changes too), the range is empty: older bytes must not replace newer ones. A `before`
    that is not an ancestor of `sha` (a force-push) with nothing recorded raises UsageError:
    the range cannot be known, and nothing is guessed."""
    found, later = _scan(reg, repo, sha, prefix) if reg is not None else (None, None)
    if later is not None:
        return Start(
            sha,
            True,
            f"nothing to deploy: {later[:12]}, a later commit, was deployed already, with the "
            f"changes of {sha[:12]}",
        )
    if found is not None:
        extra = "" if found == before else f" (the push's own `before` is {before[:12]})"
        return Start(
            found, True, f"deploying {found[:12]}..{sha[:12]}: the last commit deployed{extra}"
        )
    if set(before) == {"0"}:
        raise UsageError("the push created the branch; there is no `before` commit to diff")
    if not is_ancestor(repo, before, sha):
        raise UsageError(
            f"{before[:12]} (the push's `before`) is not an ancestor of {sha[:12]}: the push "
            "rewrote the branch's history, and the registry records no deploy of an ancestor "
            "to start from; nothing is deployed (merge a pull request on top to deploy again)"
        )
    why = "no registry to read" if reg is None else "the registry records no earlier deploy of it"
    return Start(
        before,
        False,
        f"deploying {before[:12]}..{sha[:12]}, the push's own change only: {why} "
        "(pushes before it whose runs never deployed are not included)",
    )


def first_parents(repo: Path, start_commit: str, sha: str) -> list[tuple[str, str]]:
    """(commit, its first parent) for each first-parent commit in (start, sha], oldest first:
    what landed on the branch one merge (or one rebased or pushed commit) at a time."""
    listed = gitcmd.output(
        repo, "rev-list", "--first-parent", "--reverse", "--parents", f"{start_commit}..{sha}"
    )
    out = []
    for line in listed.decode().splitlines():
        parts = line.split()
        if parts:
            out.append((parts[0], parts[1] if len(parts) > 1 else ""))
    return out


def on_first_parent_chain(repo: Path, commit: str, tip: str) -> bool:
    """Whether `commit` is `tip` or one of its first-parent ancestors: a tree the branch itself
    held, not a commit that came in with a merged branch (whose tree the branch never held)."""
    if not is_ancestor(repo, commit, tip):
        return False
    full = gitcmd.run(repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    commit = full.stdout.decode().strip()
    # The first-parent walk from `tip` stops at the first ancestor of `commit` it meets: that
    # is `commit` itself exactly when `commit` is on the walk (or is `tip`: nothing to walk).
    chain = first_parents(repo, commit, tip)
    return not chain or chain[0][1] == commit


def last_change(repo: Path, sha: str, path: str) -> str | None:
    """The first-parent commit, up to `sha`, that last changed `path` (a merge counts against
    its first parent: the merge that brought the change onto the branch); None when none did."""
    found = gitcmd.output(
        repo, "log", "--first-parent", "-1", "--format=%H", sha, "--", f":(literal){path}"
    )
    return found.decode().strip() or None


def changes_of(repo: Path, sha: str, path: str) -> list[str]:
    """The first-parent commits up to `sha` that changed `path`, newest first."""
    found = gitcmd.output(
        repo, "log", "--first-parent", "--format=%H", sha, "--", f":(literal){path}"
    )
    return found.decode().split()


def first_parent(repo: Path, commit: str) -> str | None:
    """`commit`'s first parent; None for a root commit."""
    done = gitcmd.run(repo, "rev-parse", "--verify", "--quiet", f"{commit}^1")
    return done.stdout.decode().strip() or None if done.returncode == 0 else None


def file_bytes(repo: Path, sha: str, path: str) -> bytes | None:
    """The bytes of `path` at commit `sha` in the clone (None when it is no file there)."""
    done = gitcmd.run(repo, "cat-file", "blob", f"{sha}:{path}")
    return done.stdout if done.returncode == 0 else None


def git_blob_sha(data: bytes) -> str:
    """git's (and GitHub's contents API's) SHA of a blob: equal SHAs mean equal bytes."""
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _folder(path: str | None) -> set[str]:
    return {path.rpartition("/")[0]} if path else set()


def touching(repo: Path, start_commit: str, sha: str) -> list[Touching]:
    """Each first-parent commit in (start, sha] that changed a model, with those models (by
    `plan`'s rule, one commit against its first parent)."""
    from mlops_ci import plan

    out = []
    for commit, parent in first_parents(repo, start_commit, sha):
        base = parent or "0" * 40  # a root commit: against nothing (plan's empty tree)
        touched = plan.changed_models(repo, base, commit)
        if not touched:
            continue
        result = plan.plan(repo, base, commit)
        models: dict[str, set[str]] = {}
        for m in result.changed:
            models.setdefault(m.name, set()).update(
                _folder(m.manifest) | _folder(m.previous_manifest)
            )
        for d in result.deleted:
            models.setdefault(d.name, set()).update(_folder(d.manifest))
        named = set().union(*models.values()) if models else set()
        folders = {f for t in touched for p in (t.base, t.head) for f in _folder(p)}
        out.append(
            Touching(
                commit,
                {name: frozenset(f) for name, f in models.items()},
                frozenset(folders - named),
            )
        )
    return out


def commits_of(model: str, folders: Sequence[str], commits: Sequence[Touching]) -> list[Touching]:
    """The commits of the range that changed `model`: those that name it, and those that
    touched a manifest no name could be read from in a folder where the model's manifest is
    (at the range's start or end, or wherever a commit named it)."""
    where = set(folders).union(*(c.models[model] for c in commits if model in c.models))
    return [c for c in commits if model in c.models or where & c.unnamed]
