"""`mlops-ci deploy`, `rollback` and `audit`: the commands over `deploy.py` and `audit.py`.

`deploy` takes a push to the default branch: the models it changes (`plan` between the push's
`before` and the pushed commit, in a checkout of it), their re-verified approval (`reverify`),
the ONNX models the no-secrets build job made (`--builds DIR/<model>/`), then publish, a GitHub
Deployment with its statuses, and the smoke test (rolled back when it fails).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mlops_ci import audit, deploy, gha
from mlops_ci.errors import EXIT_OK, EXIT_VERDICT, MlopsCiError, UsageError
from mlops_ci.registry import Registry, open_registry
from mlops_ci.report import units

DEFAULT_ENVIRONMENT = "production"


@dataclass(frozen=True)
class Outcome:
    model: str
    ok: bool
    line: str


class _GitHubSide:
    """The Deployments of one run; a no-op without GitHub (local deploys, `run`)."""

    def __init__(self, gh: Any, environment: str, sha: str | None) -> None:
        self.gh, self.environment, self.sha = gh, environment, sha
        self.log_url = gh.run_url() if gh else None

    def start(self, payload: dict[str, Any], description: str) -> int | None:
        if self.gh is None or not self.sha:
            return None
        did = int(self.gh.create_deployment(self.sha, self.environment, payload, description))
        self.gh.deployment_status(did, "in_progress", description=description, log_url=self.log_url)
        return did

    def finish(self, did: int | None, ok: bool, description: str) -> None:
        if self.gh is not None and did is not None:
            state = "success" if ok else "failure"
            self.gh.deployment_status(did, state, description=description, log_url=self.log_url)


def _payload(reg: Registry, done: deploy.Published, prov: deploy.Provenance) -> dict[str, Any]:
    release = reg.release(done.model, done.registry_version)
    return {
        "model": done.model,
        "version": done.version,
        "registry_version": done.registry_version,
        "registry": reg.uri,
        "digests": {
            "artifact": (release.get("artifact") or {}).get("sha256"),
            "onnx": (release.get("onnx") or {}).get("sha256"),
        },
        "pull_request": prov.pull_request,
        "approvers": list(prov.approvers),
        "audit_head": done.audit_sha256,
    }


def _changed_models(repo: Path, base: str, sha: str) -> tuple[list[Any], list[str]]:
    """(valid manifests of the models the push changes, problems that refuse the push)."""
    from mlops_ci import plan
    from mlops_ci.manifest import load

    result = plan.plan(repo, base, sha)
    problems = [str(p) for p in result.problems]
    manifests = []
    for changed in result.changed:
        try:
            manifests.append(load(repo / changed.manifest, repo))
        except MlopsCiError as exc:
            problems.append(str(exc))
    return manifests, problems + _names_taken(repo, manifests)


def _names_taken(repo: Path, manifests: Sequence[Any]) -> list[str]:
    """A changed manifest whose name another manifest in the pushed tree has too. The approval
    was for that file (its owners, its risk at base), while the name picks the registry's
    model: renaming a low-risk model to a high-risk one's name would publish over it on the
    wrong approval. validate refuses duplicates on the pull request; a push is checked again
    here, since a required check's status can be forged or skipped."""
    from mlops_ci.manifest import find_manifests
    from mlops_ci.manifest.safe_yaml import YamlInvalid, read

    changed = {m.path.absolute(): m for m in manifests}
    by_name = {m.name: m for m in manifests}
    problems = []
    for path in find_manifests(repo):
        if path.absolute() in changed:
            continue
        try:
            data, _ = read(path.read_bytes())  # only the name is wanted: no schema check
        except YamlInvalid:
            continue  # no name can be read: validate names the file
        metadata = data.get("metadata") if isinstance(data, dict) else None
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if isinstance(name, str) and name in by_name:
            mine = by_name[name].path.absolute().relative_to(repo.absolute()).as_posix()
            problems.append(
                f"{mine}: model {name!r} is also the name of "
                f"{path.relative_to(repo).as_posix()}; names must be unique in the repository"
            )
    return problems


def _build_folder(builds: Path, name: str) -> Path:
    """The build job's output for `name`; actions/download-artifact names it after the artifact."""
    for folder in (builds / name, builds / f"mlops-ci-build-{name}"):
        if folder.is_dir():
            return folder
    raise UsageError(
        f"{builds}: no build of {name} (neither {name}/ nor mlops-ci-build-{name}/); did the "
        "build job succeed and its artifact download into --builds?"
    )


def publish_models(
    reg: Registry,
    manifests: Sequence[Any],
    builds: Path,
    prov: deploy.Provenance,
    side: _GitHubSide,
    *,
    smoke: bool = True,
    outcomes: list[Outcome] | None = None,
) -> list[Outcome]:
    """Publish each model, then smoke-test what the registry serves; a failing smoke test rolls
    back to the version that served before (a first version keeps serving, recorded as failed).
    Each model's outcome is appended to `outcomes` as it is known, so a caller that catches an
    error knows which models it stopped before."""
    outcomes = [] if outcomes is None else outcomes
    for manifest in manifests:
        cand = deploy.load_candidate(manifest, _build_folder(builds, manifest.name))
        done = deploy.publish(reg, cand, prov)
        if not done.changed:
            outcomes.append(Outcome(done.model, True, done.message))
            continue
        did = None
        try:
            did = side.start(_payload(reg, done, prov), f"{done.model} {done.version}")
            outcome = _smoke(reg, done, prov, smoke)
        except Exception as exc:
            # Published, but not smoke-tested: its Deployment must not stay "in progress".
            line = f"{done.message}, but its smoke test did not finish: {exc}"
            outcomes.append(Outcome(done.model, False, line))
            _quietly("mark the Deployment failed", side.finish, did, False, line)
            raise
        side.finish(did, outcome.ok, outcome.line)
        outcomes.append(outcome)
    return outcomes


def _smoke(reg: Registry, done: deploy.Published, prov: deploy.Provenance, smoke: bool) -> Outcome:
    result = deploy.smoke_test(reg, done.model, done.registry_version) if smoke else None
    if result is None or result.passed:
        line = f"{done.message}; smoke test: {result.summary if result else 'skipped'}"
        return Outcome(done.model, True, line)
    reason = f"smoke test failed: {'; '.join(result.failures)[:500]}"
    if done.previous is not None:
        deploy.rollback(reg, done.model, done.previous, reason, prov, action="smoke-failed")
        line = f"{done.message}, but its {reason}; rolled back to version {done.previous}"
    else:
        # Nothing to roll back to: it keeps serving, and the log says its smoke test failed.
        line = f"{done.message}, but its {reason} (no earlier version to roll back to)"
        why = f"{reason}; no earlier version to roll back to, so it keeps serving"
        deploy.rollback(reg, done.model, done.registry_version, why, prov, action="smoke-failed")
    return Outcome(done.model, False, line)


def _quietly(what: str, action: Callable[..., object], *args: Any) -> None:
    """A best-effort step while another error is being reported: that error stays the one
    the user sees; this one becomes a note."""
    try:
        action(*args)
    except MlopsCiError as exc:
        print(f"note: could not {what}: {exc}", file=sys.stderr)


def _fail_closed(
    reg: Registry,
    models: Sequence[str],
    error: MlopsCiError,
    prov: deploy.Provenance,
    side: _GitHubSide,
) -> None:
    """An error that is not a verdict (GitHub unreachable, a missing build, a registry error)
    still stops the deploy, and is left where a verdict would be: a `refused` audit record
    (when the registry can be written) and a failed Deployment (when GitHub answers)."""
    verdict = error.exit_code == EXIT_VERDICT  # e.g. a build that is not of the pinned artifact
    reason = str(error) if verdict else f"deploy stopped by an error: {error}"
    heads: list[str] = []
    _quietly(
        "record the refusal in the audit log",
        lambda: heads.extend(deploy.refuse(reg, models, reason, prov, lock_timeout_s=60.0)),
    )

    def failed_deployment() -> None:
        payload = {
            "refused": reason,
            "models": list(models),
            "audit_head": heads[-1] if heads else None,
        }
        side.finish(side.start(payload, "refused"), False, f"refused: {reason}")

    _quietly("create a failed Deployment", failed_deployment)


def main(
    registry: str,
    *,
    repo: Path,
    builds: Path,
    base: str | None,
    sha: str | None,
    environment: str = DEFAULT_ENVIRONMENT,
    local: bool = False,
    fmt: str = "text",
) -> int:
    """`mlops-ci deploy`: exit 0 deployed (or nothing to do), 1 refused or smoke-failed."""
    from mlops_ci.github import GitHub, event_payload
    from mlops_ci.reverify import ModelFiles, Refused, reverify

    event = {} if local else event_payload()
    sha = sha or event.get("after")
    base = base or event.get("before")
    if not sha or not base:
        raise UsageError("give --sha and --base (on a push runner they come from the event)")
    reg = open_registry(registry)
    actor = str((event.get("sender") or {}).get("login") or ("local" if local else "unknown"))
    prov = deploy.Provenance(source="local" if local else "github", actor=actor, commit=sha)
    side = _GitHubSide(None, environment, sha)
    names: list[str] = []
    outcomes: list[Outcome] = []
    try:
        gh = None if local else GitHub.from_env()
        prov = replace(prov, run_url=gh.run_url() if gh else None)
        side = _GitHubSide(gh, environment, sha)
        if set(base) == {"0"}:
            raise UsageError("the push created the branch; there is no `before` commit to diff")
        manifests, problems = _changed_models(repo, base, sha)
        names = [m.name for m in manifests]
        if problems:
            raise Refused("; ".join(problems))
        if gh is not None:
            files = [
                ModelFiles(
                    m.name,
                    m.path.relative_to(m.root).as_posix(),
                    m.artifact_path.relative_to(m.root).as_posix(),
                )
                for m in manifests
            ]
            approval = reverify(gh, sha, files)
            prov = replace(prov, pull_request=approval.pull_request, approvers=approval.approvers)
        publish_models(reg, manifests, builds, prov, side, outcomes=outcomes)
    except Refused as exc:
        heads = deploy.refuse(reg, names, exc.message, prov)
        did = side.start(
            {"refused": exc.message, "models": names, "audit_head": heads[-1]}, "refused"
        )
        side.finish(did, False, f"refused: {exc.message}")
        _report([Outcome(", ".join(names) or "(none)", False, f"refused: {exc.message}")], fmt)
        return EXIT_VERDICT
    except MlopsCiError as exc:
        # Fail closed: the models not yet handled are refused, on the record (then exit 2, or
        # 1 for a verdict such as a build that does not match its manifest).
        handled = {o.model for o in outcomes}
        pending = [n for n in names if n not in handled]
        if pending or not names:  # a model that was handled has its records and Deployment
            _fail_closed(reg, pending, exc, prov, side)
        if outcomes:
            _report(outcomes, fmt)
        raise
    _report(outcomes, fmt)
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_VERDICT


def _report(outcomes: Sequence[Outcome], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps({"models": [o.__dict__ for o in outcomes]}, indent=2))
        return
    if not outcomes:
        print("no model changed: nothing to deploy")
    for o in outcomes:
        print(f"{'✓' if o.ok else '✗'} {o.model}: {o.line}")
    from mlops_ci.report.escape import cell, code

    # Lines quote the push's manifests and paths: inert in Markdown, as every report's are.
    lines = "\n".join(
        f"- {'✅' if o.ok else '❌'} {code(o.model)}: {cell(o.line)}" for o in outcomes
    )
    gha.write_summary(f"## Deploy\n\n{lines or 'No model changed.'}\n")


# --- rollback and audit ---------------------------------------------------------------------------


def rollback_main(
    registry: str,
    model: str,
    to: int,
    reason: str,
    *,
    environment: str = DEFAULT_ENVIRONMENT,
    local: bool = False,
) -> int:
    """`mlops-ci rollback`: on a runner (workflow_dispatch) also a Deployment of that version."""
    from mlops_ci.github import GitHub, event_payload

    event = {} if local else event_payload()
    gh = GitHub.from_env() if not local and event else None
    actor = str((event.get("sender") or {}).get("login") or "local")
    prov = deploy.Provenance(
        source="github" if gh else "local", actor=actor, run_url=gh.run_url() if gh else None
    )
    reg = open_registry(registry)
    done = deploy.rollback(reg, model, to, reason, prov)
    if not done.changed:
        print(f"✓ {done.message}")
        return EXIT_OK
    release = reg.release(model, to)
    prov = replace(
        prov,
        commit=release.get("commit"),
        pull_request=release.get("pull_request"),
        approvers=tuple(release.get("approvers") or ()),
    )
    side = _GitHubSide(gh, environment, release.get("commit"))
    did = side.start(_payload(reg, done, prov) | {"rollback": reason}, f"rollback to {to}")
    side.finish(did, True, done.message)
    print(f"✓ {done.message}; reason: {reason}")
    return EXIT_OK


def _existing(registry: str) -> Registry:
    """A registry to read: a folder that is not there is a mistake, not an empty registry."""
    reg = open_registry(registry)
    if not reg.exists():
        raise UsageError(f"{registry}: no registry there (no such folder)")
    return reg


def verify_main(registry: str, fmt: str = "text") -> int:
    reg = _existing(registry)
    result = audit.verify(reg)
    if result.records == 0 and not reg.models():
        # `--registry .` in the model repository must not read as a verified trail
        raise UsageError(
            f"{reg.uri}: no audit log and no model: not a registry, or nothing "
            "was deployed to it yet"
        )
    if fmt == "json":
        print(
            json.dumps(
                {
                    "ok": result.ok,
                    "records": result.records,
                    "head": result.head,
                    "first_bad": result.first_bad,
                    "problem": result.problem,
                    "notes": list(result.notes),
                },
                indent=2,
            )
        )
    elif result.ok:
        print(f"✓ {reg.uri_of(audit.LOG_KEY)}: {result.records} records verify; head {result.head}")
        for note in result.notes:
            print(f"  note: {note}")
    else:
        print(
            f"✗ {reg.uri_of(audit.LOG_KEY)}: record {result.first_bad}: {result.problem}",
            file=sys.stderr,
        )
    return EXIT_OK if result.ok else EXIT_VERDICT


def show_main(registry: str, model: str, at: str | None, fmt: str = "text") -> int:
    reg = _existing(registry)
    when = audit.parse_time(at) if at else None
    doc = audit.show(reg, model, when)
    if not doc["history"] and model not in reg.models():
        # A typo must not read as "nothing served": the model was never in this registry.
        known = ", ".join(reg.models()) or "none"
        raise UsageError(f"{reg.uri}: no model named {model!r} (models: {known})")
    if fmt == "json":
        print(json.dumps(doc, indent=2, sort_keys=True))
        return EXIT_OK
    print(render_show(doc))
    return EXIT_OK


def _counts(test: dict[str, Any]) -> str:
    """` (8 passed, 0 failed, 0 skipped)` from the test stage's counts; nothing without them."""
    counts = test.get("counts")
    if not isinstance(counts, dict) or not counts:
        return ""
    words = {"pass": "passed", "fail": "failed", "skip": "skipped"}
    shown = [f"{counts[k]} {word}" for k, word in words.items() if k in counts]
    return f" ({', '.join(shown)})" if shown else ""


def render_show(doc: dict[str, Any]) -> str:
    """What served, when, approved by whom, with which results: for a terminal."""
    when = f"at {doc['at']}" if doc["at"] else "now"
    serving = doc["serving"]
    if serving is None:
        return f"{doc['model']}: nothing served {when}"
    pr = serving.get("pull_request") or {}
    who = ", ".join(
        f"@{a.get('login')} (review {a.get('review_id')}, {a.get('time')})"
        for a in serving.get("approvers") or []
    )
    test = (serving.get("results") or {}).get("test") or {}
    lines = [
        f"{doc['model']} {when}: version {serving['version']} (registry version "
        f"{serving['registry_version']}), since {serving['since']} by {serving['set_by']}"
        + (f" ({serving['reason']})" if serving.get("reason") else ""),
        f"  commit:    {serving.get('commit') or '-'}"
        + (f"  pull request #{pr.get('number')} {pr.get('url') or ''}" if pr else ""),
        f"  approved:  {who or 'no approvals recorded (' + str(serving.get('source')) + ')'}",
        f"  tests:     {'passed' if test.get('passed') else 'not passed'}{_counts(test)}",
        f"  onnx:      sha256 {serving['digests'].get('onnx')}",
        f"  history:   {units.plural(len(doc['history']), 'record')} up to then",
    ]
    return "\n".join(lines)
