"""`mlops-ci deploy`, `rollback` and `audit`: the commands over `deploy.py` and `audit.py`.

`deploy` takes a push to the default branch: the models changed since the last commit whose
deploy the registry records for this repository (`deploy_range`; the push's `before` when none
is), in a checkout of the pushed commit; each model's approval re-verified on its own against
every commit of that range that changed it (`reverify.RangeJudge`); the ONNX models the
no-secrets build job made (`--builds DIR/<model>/`), then publish, a GitHub Deployment with its
statuses, and the smoke test (rolled back when it fails).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_ci import audit, deploy, deploy_range, gha, gitcmd
from mlops_ci.digest import content_sha256
from mlops_ci.errors import EXIT_OK, EXIT_VERDICT, MlopsCiError, UsageError
from mlops_ci.registry import Registry, open_registry
from mlops_ci.report import units

if TYPE_CHECKING:
    from mlops_ci.policy import ManifestSide
    from mlops_ci.reverify import Baseline, Evidence, ModelFiles

DEFAULT_ENVIRONMENT = "production"
_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


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


@dataclass(frozen=True)
class _Changed:
    """The models a range changes, as `plan` and the manifests in the checkout say."""

    manifests: list[Any]  # the valid manifests of the models the range changes
    #: the problems that refuse a model, by its name ('' for a manifest no name can be read from)
    problems: dict[str, list[str]]
    #: names whose problems are no verdict on the model: a name two manifests claim (the model
    #: that held it is not at fault: its approved change deploys once the other is gone), a
    #: manifest the checkout does not hold. Recorded as errors: the commit is not processed.
    errors: set[str]
    before: list[str]  # the folders their manifests were in at the range's start


def _changed_models(repo: Path, base: str, sha: str) -> _Changed:
    from mlops_ci import plan
    from mlops_ci.manifest import load

    result = plan.plan(repo, base, sha)
    by_path = {m.manifest: m.name for m in result.changed}
    problems: dict[str, list[str]] = {}
    errors: set[str] = set()
    for p in result.problems:
        name = by_path.get(p.path) or _name_at(repo, sha, p.path)
        problems.setdefault(name, []).append(str(p))
        if p.pointer == "/metadata/name" and p.message.endswith(plan.NAMES_UNIQUE):
            errors.add(name)
    manifests = []
    for changed in result.changed:
        try:
            manifests.append(load(repo / changed.manifest, repo))
        except MlopsCiError as exc:
            problems.setdefault(changed.name, []).append(str(exc))
            # A checkout that fetched no Git LFS files (the workflow's `lfs` input not set) says
            # nothing of the model: an error, so the next push judges it again, not a verdict
            # that would drop its approved change for good.
            if exc.exit_code != EXIT_VERDICT or _lfs_unfetched(repo, changed.manifest):
                errors.add(changed.name)
    for name, problem in _names_taken(repo, manifests):
        problems.setdefault(name, []).append(problem)
        errors.add(name)
    before = [m.previous_manifest.rpartition("/")[0] for m in result.changed if m.previous_manifest]
    return _Changed(manifests, problems, errors - {""}, before)


def _lfs_unfetched(repo: Path, manifest: str) -> bool:
    """Whether a file the manifest pins is tracked by Git LFS (`.gitattributes`) and still its
    pointer in the checkout. A pointer committed as plain text is no such file: every checkout
    holds that text, and the model is refused for it."""
    from mlops_ci.digest import LFS_POINTER_MAX, lfs_pointer
    from mlops_ci.manifest.rules import referenced_paths
    from mlops_ci.manifest.safe_yaml import YamlInvalid, read

    path = repo / manifest
    try:
        data, _ = read(path.read_bytes())
    except (OSError, YamlInvalid):
        return False
    folder = path.parent
    for relative in referenced_paths(data):
        pinned = folder / relative
        try:
            inside = pinned.resolve().relative_to(repo.resolve()).as_posix()
            with pinned.open("rb") as fh:
                head = fh.read(LFS_POINTER_MAX)
        except (OSError, ValueError):
            continue
        if lfs_pointer(head) is None:
            continue
        done = gitcmd.run(repo, "check-attr", "filter", "--", inside)
        if done.returncode == 0 and done.stdout.decode(errors="replace").strip().endswith(": lfs"):
            return True
    return False


def _name_at(repo: Path, sha: str, path: str) -> str:
    """The model name the manifest at `path` claims at commit `sha` ('' when none can be read;
    git's blob, as plan read it, never a file a symlink in the checkout points at): a problem
    plan found in a manifest it could not take (a second holder of a name, a schema error)
    refuses that model, not the range's others."""
    from mlops_ci.manifest.safe_yaml import YamlInvalid, read

    raw = deploy_range.file_bytes(repo, sha, path)
    try:
        data, _ = read(raw) if raw is not None else ({}, None)
    except YamlInvalid:
        return ""
    metadata = data.get("metadata") if isinstance(data, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


def _names_taken(repo: Path, manifests: Sequence[Any]) -> list[tuple[str, str]]:
    """A changed manifest whose name another manifest in the pushed tree has too. The approval
    was for that file (its owners, its risk at base), while the name picks the registry's
    model: renaming a low-risk model to a high-risk one's name would publish over it on the
    wrong approval. validate refuses duplicates on the pull request; a push is checked again
    here, since a required check's status can be forged or skipped."""
    from mlops_ci.manifest import find_manifests
    from mlops_ci.manifest.safe_yaml import YamlInvalid, read
    from mlops_ci.plan import NAMES_UNIQUE

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
                (
                    name,
                    f"{mine}: model {name!r} is also the name of "
                    f"{path.relative_to(repo).as_posix()}; {NAMES_UNIQUE}",
                )
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


def _has_build(builds: Path, name: str) -> bool:
    return any((builds / f).is_dir() for f in (name, f"mlops-ci-build-{name}"))


def _published(reg: Registry, manifest: Any) -> int | None:
    """The complete, recorded version (one with its release marker) holding the manifest's
    semver and artifact, if there is one."""
    versions = reg.version_folders(manifest.name)
    for n in versions.marked:
        if versions.semvers.get(n) == manifest.version:
            release = reg.find_release(manifest.name, n) or {}
            if (release.get("artifact") or {}).get("sha256") == manifest.artifact_sha256:
                return n
    return None


class _Held:
    """Which commits hold a model's files exactly as a recorded version of the registry holds
    them: its manifest as deployed (`<n>/model.yaml`) and its artifact (release.json's sha256;
    for an LFS artifact, the content its pointer names), and were judged when that version was
    published: a deploy of this repository (`runs`: the start of its run URLs) published it
    from a commit of the pushed one's (`sha`) history, and the commit is that one or came
    before it. A commit pushed after it (a direct push that changed only the model's README)
    was never judged, nor one judged only by another repository sharing the registry. The
    registry is read once per model."""

    def __init__(
        self,
        reg: Registry,
        repo: Path,
        files: ModelFiles,
        sha: str,
        runs: str | None,
    ) -> None:
        self.reg, self.repo, self.name = reg, repo, files.name
        self.manifest, self.artifact = files.manifest, files.artifact
        self.sha, self.runs = sha, runs
        self._semvers: dict[int, str] | None = None
        #: n -> (<n>/model.yaml, its artifact's sha256, the commit its deploy judged up to)
        self._deployed: dict[int, tuple[bytes | None, str | None, str | None]] = {}

    def _published_at(self, release: dict[str, Any]) -> str | None:
        """The pushed commit whose deploy (of this repository) published `release`, when it is
        one of `sha`'s; else None: another repository's, a local one, a force-pushed-away one."""
        commit = release.get("commit")
        run_url = str(release.get("run_url") or "")
        if (
            release.get("source") != "github"
            or not isinstance(commit, str)
            or not _FULL_SHA.fullmatch(commit)
            or (self.runs is not None and not run_url.startswith(self.runs))
            or not deploy_range.is_ancestor(self.repo, commit, self.sha)
        ):
            return None
        return commit

    def at(self, commit: str) -> int | None:
        """The recorded version whose files are `commit`'s very bytes, and whose deploy judged
        `commit`, if there is one."""
        from mlops_ci.manifest.safe_yaml import YamlInvalid, read

        data = deploy_range.file_bytes(self.repo, commit, self.manifest)
        # Read as plan and validate read it (never yaml.safe_load: a commit's manifest is
        # untrusted, and `2027-02-30`, text to them, made it raise ValueError, stopping every
        # deploy whose range held that commit on an internal error, push after push).
        try:
            doc = read(data)[0] if data is not None else None
        except YamlInvalid:
            return None
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        version = meta.get("version") if isinstance(meta, dict) else None
        if self._semvers is None:
            folders = self.reg.version_folders(self.name)
            self._semvers = {n: v for n, v in folders.semvers.items() if n in folders.marked}
        for n in sorted((n for n, v in self._semvers.items() if v == version), reverse=True):
            if n not in self._deployed:
                release = self.reg.find_release(self.name, n) or {}
                digest = (release.get("artifact") or {}).get("sha256")
                manifest = self.reg.read_bytes(f"{self.name}/{n}/model.yaml")
                self._deployed[n] = (manifest, digest, self._published_at(release))
            manifest, digest, judged_up_to = self._deployed[n]
            if manifest != data or judged_up_to is None:
                continue
            if not deploy_range.is_ancestor(self.repo, commit, judged_up_to):
                continue  # pushed after that deploy: never judged
            artifact = deploy_range.file_bytes(self.repo, commit, self.artifact)
            if artifact is not None and content_sha256(artifact) == digest:
                return n
        return None


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
        published = None if _has_build(builds, manifest.name) else _published(reg, manifest)
        if published is not None:
            # Changed in the range (its folder: a README, say) but not in what it publishes: a
            # build that the plan of a narrower range did not make is not needed for it.
            line = f"{manifest.name} {manifest.version} is already version {published}"
            outcomes.append(Outcome(manifest.name, True, line))
            continue
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
    reason = str(error) if verdict else f"{deploy_range.ERROR_PREFIX} {error}"
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
    from mlops_ci.github import GitHub, event_payload, runs_url
    from mlops_ci.reverify import Refused

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
    note = ""
    adopt: str | None = None  # a first deploy's start: the baseline a refusal suggests
    try:
        gh = None if local else GitHub.from_env()
        prov = replace(prov, run_url=gh.run_url() if gh else None)
        side = _GitHubSide(gh, environment, sha)
        if gh is None:
            if set(base) == {"0"}:
                raise UsageError("the push created the branch; there is no `before` commit to diff")
            begin = base
        else:
            # Everything merged since the last deploy the registry records, not `before`: a
            # push's run may be the only one that ever sees the pushes before it.
            start = deploy_range.start(reg, repo, sha, base, runs_url())
            begin, note = start.commit, start.note
            adopt = None if start.recorded else begin
            print(note, file=sys.stderr if fmt == "json" else sys.stdout)
        found = _changed_models(repo, begin, sha)
        manifests, before = found.manifests, found.before
        names = [m.name for m in manifests]
        # Each model is refused for its own problems (on the record first): one model's bad
        # manifest must not refuse the range's others, whose commits would then count as
        # processed and their approved changes be dropped for good.
        for name, why in found.problems.items():
            if name in found.errors:  # no verdict on the model: on the record as an error
                _fail_closed(reg, [name], UsageError("; ".join(why)), prov, side)
                outcomes.append(Outcome(name, False, f"not deployed: {'; '.join(why)}"))
            else:
                _refuse(reg, name, "; ".join(why), prov, side, outcomes)
        manifests = [m for m in manifests if m.name not in found.problems]
        if gh is None:
            publish_models(reg, manifests, builds, prov, side, outcomes=outcomes)
        else:
            _deploy_range(
                gh, reg, repo, (begin, sha), manifests, before, builds, prov, side, outcomes, adopt
            )
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
            _report(outcomes, fmt, note)
        raise
    except Exception as exc:
        # A bug, not a verdict: still on the record as an error (so the next push covers the
        # range again) with a failed Deployment; the CLI's last defence then says it (exit 2).
        handled = {o.model for o in outcomes}
        pending = [n for n in names if n not in handled]
        bug = UsageError(f"internal error: {type(exc).__name__}: {exc}")
        _fail_closed(reg, pending, bug, prov, side)
        raise
    _report(outcomes, fmt, note)
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_VERDICT


def _refuse(
    reg: Registry,
    name: str,
    reason: str,
    prov: deploy.Provenance,
    side: _GitHubSide,
    outcomes: list[Outcome],
) -> None:
    """One model refused for a verdict: its `refused` record (one with no model for a manifest
    no name can be read from), a failed Deployment, its outcome."""
    models = [name] if name else []
    head = deploy.refuse(reg, models, reason, prov)[-1]
    payload = {"refused": reason, "models": models, "audit_head": head}
    side.finish(side.start(payload, "refused"), False, f"refused: {reason}")
    outcomes.append(Outcome(name or "(no name)", False, f"refused: {reason}"))


def _deploy_range(
    gh: Any,
    reg: Registry,
    repo: Path,
    commits: tuple[str, str],
    manifests: Sequence[Any],
    before: Sequence[str],
    builds: Path,
    prov: deploy.Provenance,
    side: _GitHubSide,
    outcomes: list[Outcome],
    adopt: str | None = None,
) -> None:
    """Judge each changed model on its own against the commits of the range that changed it
    (`reverify.RangeJudge`): a refused model is recorded (a `refused` record and a failed
    Deployment) and the others are published, each with the pull request that approved its
    bytes. The refusals go first, so that they are on the record whatever follows. `adopt`:
    a first deploy's start, which a refusal may suggest as the policy's baseline."""
    from mlops_ci.github import runs_url
    from mlops_ci.reverify import ModelFiles, RangeJudge, Refused

    begin, sha = commits
    baseline = _baseline(repo, sha)
    touching = deploy_range.touching(repo, begin, sha)
    # every commit of the range: a rebase merge's last commit need not change a model
    judge = RangeJudge(
        gh,
        sha,
        [c for c, _ in deploy_range.first_parents(repo, begin, sha)],
        parent=lambda commit: deploy_range.first_parent(repo, commit),
    )
    approved: list[tuple[Any, deploy.Provenance]] = []
    for m in manifests:
        files = ModelFiles(
            m.name,
            m.path.relative_to(m.root).as_posix(),
            m.artifact_path.relative_to(m.root).as_posix(),
        )
        folders = [files.manifest.rpartition("/")[0], *before]
        changed_in = [c.commit for c in deploy_range.commits_of(m.name, folders, touching)]
        # The commits up to the last one that left the model's files byte for byte as a
        # recorded version holds them, and that this repository's deploy of that version
        # covered (`_Held`: not a direct push made after it), were judged when that version
        # was published: only the later ones are judged again. While one model's error keeps
        # every range starting before it, each push would otherwise judge every pull request
        # deployed since (some 10 GitHub calls each), until the rate limit stopped every deploy.
        held, n = _Held(reg, repo, files, sha, runs_url()), None
        for i in range(len(changed_in) - 1, -1, -1):
            n = held.at(changed_in[i])
            if n is not None:
                changed_in = changed_in[i + 1 :]
                break
        if n is not None and not changed_in:  # as published: nothing to judge or to publish
            line = f"{m.name} {m.version} is already version {n}, byte for byte"
            outcomes.append(Outcome(m.name, True, line))
            continue
        try:
            evidence = _evidence(reg, repo, sha, files, baseline, adopt)
            approval = judge.model(files, changed_in, evidence)
        except Refused as exc:
            _refuse(reg, m.name, exc.message, prov, side, outcomes)
            continue
        who = replace(prov, pull_request=approval.pull_request, approvers=approval.approvers)
        approved.append((m, who))
    unbuilt: list[str] = []
    for i, (m, who) in enumerate(approved):
        if not _has_build(builds, m.name) and _published(reg, m) is None:
            # Its build failed (or a narrower plan made none): it is left for the next push,
            # on the record as an error, and the others are not held back by it.
            try:
                _build_folder(builds, m.name)
            except UsageError as exc:
                _fail_closed(reg, [m.name], exc, who, side)
                outcomes.append(Outcome(m.name, False, f"not deployed: {exc}"))
                unbuilt.append(str(exc))
                continue
        try:
            publish_models(reg, [m], builds, who, side, outcomes=outcomes)
        except MlopsCiError as exc:
            # Fail closed on the record, each model not yet handled with the pull request that
            # approved it; `main` then finds them handled, and exits as the error says.
            handled = {o.model for o in outcomes}
            for rest, its in approved[i:]:
                if rest.name not in handled:
                    _fail_closed(reg, [rest.name], exc, its, side)
                    outcomes.append(Outcome(rest.name, False, f"not deployed: {exc}"))
            raise
    if unbuilt:
        raise UsageError("; ".join(unbuilt))  # exit 2, once the others are published


def _baseline(repo: Path, sha: str) -> Baseline | None:
    """The adoption baseline `.mlops/policy.yaml` names at `sha` (`deploy.reviewed_at`), with
    what the clone alone can tell: whether the policy is valid, whether the commit is on the
    branch's first-parent history, and which first-parent commit set the line to this value
    (`reverify.RangeJudge` then asks GitHub whether an approved pull request did). The policy
    is read at the pushed commit, never trusted for it: what counts is who set the line."""
    from mlops_ci.policy import POLICY_PATH, parse_policy, reviewed_at_of
    from mlops_ci.reverify import Baseline

    text = deploy_range.file_bytes(repo, sha, POLICY_PATH)
    value = reviewed_at_of(text)
    if text is None or value is None:
        return None
    parsed, problems = parse_policy(text, POLICY_PATH)
    if parsed is None or parsed.reviewed_at is None:
        first = problems[0] if problems else None
        where = f"{POLICY_PATH}:{first.line}" if first and first.line else POLICY_PATH
        why = f"the policy is invalid: {first.message if first else 'unreadable'}"
        return Baseline(value, where, None, why)
    named = parsed.reviewed_at
    where = f"{POLICY_PATH}:{named.line}" if named.line else POLICY_PATH
    if not deploy_range.on_first_parent_chain(repo, named.commit, sha):
        why = (
            f"{named.commit[:12]} is not a commit of the default branch's first-parent history "
            f"up to {sha[:12]} (not in this clone, on another branch, or brought by a merged "
            "branch); name a commit the branch itself pointed at (`git rev-parse origin/main`)"
        )
        return Baseline(named.commit, where, None, why)
    return Baseline(named.commit, where, _line_set_by(repo, sha, named.commit))


def _line_set_by(repo: Path, sha: str, value: str) -> str | None:
    """The newest first-parent commit up to `sha` whose change to the policy set
    `deploy.reviewed_at` to `value` (its first parent named another, or none)."""
    from mlops_ci.policy import POLICY_PATH, reviewed_at_of

    for commit in deploy_range.changes_of(repo, sha, POLICY_PATH):
        parent = deploy_range.first_parent(repo, commit)
        before = deploy_range.file_bytes(repo, parent, POLICY_PATH) if parent else None
        if reviewed_at_of(before) != value:
            return commit
    return None


def _evidence(
    reg: Registry,
    repo: Path,
    sha: str,
    files: ModelFiles,
    baseline: Baseline | None = None,
    adopt: str | None = None,
) -> Evidence:
    """`reverify.Evidence` for a model's files at `sha`: the registry's version that serves
    and the one published last (the same, unless rolled back or smoke-failed; older ones are
    not read: a file that returns to their bytes is vouched for by the pull request that last
    changed it), the policy's adoption `baseline`, and the branch's history in the clone."""
    from mlops_ci.reverify import Evidence

    name = files.name
    known: dict[str, list[int]] = {}
    newest: dict[str, int | None] = {}
    deployed: dict[int, bytes | None] = {}

    def last() -> int | None:  # listed once, and only when asked
        if "n" not in newest:
            newest["n"] = max(reg.version_folders(name).marked, default=None)
        return newest["n"]

    def versions() -> list[int]:  # read once, and only when asked
        if "n" not in known:
            known["n"] = [n for n in dict.fromkeys((reg.serving_version(name), last())) if n]
        return known["n"]

    def manifest_as_deployed(n: int) -> bytes | None:  # `<n>/model.yaml`, read once
        if n not in deployed:
            deployed[n] = reg.read_bytes(f"{name}/{n}/model.yaml")
        return deployed[n]

    def published(path: str, blob: str) -> bool:
        if path == files.manifest:  # `<n>/model.yaml` is the manifest's bytes as deployed
            return any(
                (data := manifest_as_deployed(n)) is not None
                and deploy_range.git_blob_sha(data) == blob
                for n in versions()
            )
        # release.json keeps the artifact's sha256: hash the pushed bytes, those GitHub named
        # (for a Git LFS pointer, the content's digest it names: release.json has that one)
        data = deploy_range.file_bytes(repo, sha, path)
        if data is None or deploy_range.git_blob_sha(data) != blob:
            return False
        digest = content_sha256(data)
        return any(
            ((reg.find_release(name, n) or {}).get("artifact") or {}).get("sha256") == digest
            for n in versions()
        )

    def landed(commit: str, merge: str) -> bool:
        return deploy_range.is_ancestor(repo, commit, merge) and deploy_range.is_ancestor(
            repo, merge, sha
        )

    def same_at(commit: str, path: str, blob: str) -> bool:
        data = deploy_range.file_bytes(repo, commit, path)
        return data is not None and deploy_range.git_blob_sha(data) == blob

    sides: dict[str, ManifestSide | None] = {}

    def registry_side() -> ManifestSide | None:  # read once, and only when asked
        if "side" not in sides:
            n = last()
            sides["side"] = (
                None if n is None else _registry_side(reg, name, n, manifest_as_deployed(n))
            )
        return sides["side"]

    return Evidence(
        published,
        lambda path: deploy_range.last_change(repo, sha, path),
        landed,
        baseline=baseline,
        same_at=same_at,
        on_branch=lambda commit, tip: deploy_range.on_first_parent_chain(repo, commit, tip),
        adopt=adopt,
        registry_side=registry_side,
    )


def _registry_side(reg: Registry, name: str, n: int, data: bytes | None) -> ManifestSide:
    """The governance fields (risk, owners) of `data`, the manifest the registry last published
    under `name` (`<n>/model.yaml` of its newest version with a release marker, n). A copy that
    is missing or has no valid risk/owners counts as high risk with no owners
    (`policy.manifest_side`), so the policy's owners stand in: failing closed."""
    from mlops_ci import manifest, policy

    path = f"{name}/{n}/model.yaml (registry {reg.uri})"
    if data is None:
        return policy.ManifestSide(path, None, None, (), problem=f"{path} is missing")
    doc, problems, _ = manifest.parse_document(data, path)
    return policy.manifest_side(path, doc, problems)


def _report(outcomes: Sequence[Outcome], fmt: str, note: str = "") -> None:
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
    start = f"{cell(note)}\n\n" if note else ""
    gha.write_summary(f"## Deploy\n\n{start}{lines or 'No model changed.'}\n")


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
    if result.records == 0 and result.ok and not reg.models():
        # `--registry .` in the model repository must not read as a verified trail (a head
        # with no log is not that: the log was cut, and verify says so)
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
        count = "1 record verifies" if result.records == 1 else f"{result.records} records verify"
        print(f"✓ {reg.uri_of(audit.LOG_KEY)}: {count}; head {result.head}")
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
