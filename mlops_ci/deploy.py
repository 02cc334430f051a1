"""Publishing into the registry, rolling back, and the smoke test of what was published.

A publish holds the registry lock and writes in one order: the version folder (staged, then
renamed; on S3 its objects together), the audit record, then `config.pbtxt` (and the KServe
InferenceService beside it) alongside the log's head. Reads that decide a publish go together
(`Registry.gather`: on S3 their round trips overlap). A kill at any point leaves the old or the
new version serving, complete, and the next run converges: the serving version is always what
the model's last deploy or rollback record says. Re-verifying a push's approvals against GitHub
lives in `reverify.py`.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_ci import atomic, audit, kserve, runtime, triton
from mlops_ci.errors import CheckFailed, UsageError
from mlops_ci.manifest import Manifest, semver_key
from mlops_ci.registry import (
    Registry,
    RegistryError,
    VersionFolders,
    release_marker,
    sha256_hex,
)

#: The longest semver published (the manifest schema's maxLength): it names the release marker.
MAX_SEMVER = 128
#: How long a deploy waits for another to release the registry lock.
LOCK_TIMEOUT_S = 600.0
_ONNX_MAGIC = b"\x08"  # an ONNX ModelProto starts with field 1 (ir_version), varint


@dataclass(frozen=True)
class Candidate:
    """One model ready to publish: the manifest as deployed, its ONNX bytes and its results."""

    name: str
    version: str  # semver, metadata.version
    manifest_text: bytes
    manifest_data: dict[str, Any] = field(repr=False)
    artifact_path: str
    artifact_sha256: str
    onnx: bytes = field(repr=False)
    onnx_info: dict[str, Any] = field(default_factory=dict)  # sha256, opset, converter
    results: dict[str, Any] = field(default_factory=dict)  # test and bench summaries

    @functools.cached_property
    def onnx_sha256(self) -> str:
        """The digest `load_candidate` computed when it checked the bytes against convert.json
        (hashing gigabytes twice is the slowest part of a publish); computed when absent.
        Every read of the registry checks it again."""
        known = self.onnx_info.get("sha256")
        return known if isinstance(known, str) and known else sha256_hex(self.onnx)


@dataclass(frozen=True)
class Provenance:
    """Where a publish comes from: a reviewed pull request on GitHub, or a local run."""

    source: str = "local"  # github | local
    actor: str = "local"
    commit: str | None = None
    pull_request: dict[str, Any] | None = None  # number, url, head_sha
    approvers: tuple[dict[str, Any], ...] = ()  # login, review_id, commit, time
    run_url: str | None = None


@dataclass(frozen=True)
class Published:
    """What a publish or rollback did to one model."""

    model: str
    version: str
    registry_version: int
    changed: bool
    audit_sha256: str | None
    message: str
    previous: int | None = None  # the version that served before

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "registry_version": self.registry_version,
            "changed": self.changed,
            "audit_sha256": self.audit_sha256,
            "message": self.message,
            "previous": self.previous,
        }


def local_provenance() -> Provenance:
    """A deploy from a laptop (`run`, `deploy --local`): no approvals checked, source local."""
    import getpass

    try:
        actor = getpass.getuser()
    except (OSError, KeyError):  # no login name (some containers)
        actor = "local"
    return Provenance(source="local", actor=actor)


# --- candidates --------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not readable JSON: {exc}") from None
    return doc if isinstance(doc, dict) else {}


#: What a release keeps of each test check, bench measurement and budget (docs/deploy.md
#: "release.json results"): the verdicts and the numbers, not the machine-specific noise.
_CHECK_KEYS = ("kind", "name", "status", "passed", "detail", "value", "min", "max")
_MEASUREMENT_KEYS = ("engine", "batch_size", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "throughput")
_BENCH_ENGINES = ("onnx", "native")  # `baseline` is the serving version, not this release


def _rows(value: Any, keys: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {k: row[k] for k in keys if k in row}
        for row in (value if isinstance(value, list) else [])
        if isinstance(row, dict)
    ]


def _results(folder: Path) -> dict[str, Any]:
    """The test and bench results a release keeps (test.json and bench.json, trimmed): the
    verdicts, every check, and latency and throughput per engine and batch size."""
    results: dict[str, Any] = {}
    test = _read_json(folder / "test.json")
    if test:
        results["test"] = {
            "passed": test.get("passed"),
            "counts": test.get("counts"),
            "checks": _rows(test.get("checks"), _CHECK_KEYS),
        }
    bench = _read_json(folder / "bench.json")
    if bench:
        measured = _rows(bench.get("measurements"), _MEASUREMENT_KEYS)
        results["bench"] = {
            "passed": bench.get("passed"),
            "measurements": [m for m in measured if m.get("engine") in _BENCH_ENGINES],
            "budgets": _rows(
                bench.get("budgets"), ("batch_size", "metric", "limit", "value", "passed")
            ),
            "regression": _rows(
                bench.get("regression"),
                ("batch_size", "ratio", "ci_low", "ci_high", "max_regression", "verdict", "passed"),
            ),
        }
    return results


def load_candidate(manifest: Manifest, build_dir: Path) -> Candidate:
    """The candidate of `manifest` from a convert (and test, bench) output folder.

    Only `model.onnx` is loaded, never the framework artifact; its sha256 must equal what
    `convert.json` recorded, and convert.json must have converted the artifact this manifest
    pins. Anything else is refused (exit 1).
    """
    onnx_path = build_dir / "model.onnx"
    convert = _read_json(build_dir / "convert.json")
    if not onnx_path.is_file() or not convert:
        # a build that is not there is the pipeline's mistake (exit 2), not a verdict
        raise UsageError(f"{build_dir}: model.onnx and convert.json are both needed")
    data = onnx_path.read_bytes()
    onnx_info = convert.get("onnx") or {}
    if not data.startswith(_ONNX_MAGIC) or onnx_path.suffix != ".onnx":
        raise CheckFailed(f"{onnx_path}: not an ONNX model; only ONNX is ever published")
    if sha256_hex(data) != onnx_info.get("sha256"):
        raise CheckFailed(
            f"{onnx_path}: sha256 {sha256_hex(data)} is not the {onnx_info.get('sha256')} that "
            "convert.json recorded; the file changed after conversion"
        )
    converted = (convert.get("artifact") or {}).get("sha256")
    if converted != manifest.artifact_sha256 or not convert.get("passed"):
        raise CheckFailed(
            f"{build_dir}/convert.json converted artifact {converted} "
            f"({'passed' if convert.get('passed') else 'failed'}), but {manifest.name} pins "
            f"{manifest.artifact_sha256}: refusing to publish an unproven conversion"
        )
    return Candidate(
        name=manifest.name,
        version=manifest.version,
        manifest_text=manifest.path.read_bytes(),
        manifest_data=manifest.data,
        artifact_path=manifest.path.parent.joinpath(manifest.data["spec"]["artifact"]["path"])
        .relative_to(manifest.root)
        .as_posix(),
        artifact_sha256=manifest.artifact_sha256,
        onnx=data,
        onnx_info={
            "sha256": sha256_hex(data),
            "opset": onnx_info.get("opset"),
            "converter": onnx_info.get("converter"),
        },
        results=_results(build_dir),
    )


# --- what the registry holds for a version ------------------------------------------------------


def _tensors(data: dict[str, Any], side: str) -> list[triton.Tensor]:
    signature = (data.get("spec") or {}).get("signature") or {}
    return [
        triton.Tensor(str(t["name"]), str(t["dtype"]), tuple(int(d) for d in t["shape"]))
        for t in signature.get(side) or []
    ]


def _serving(data: dict[str, Any]) -> dict[str, Any]:
    value = (data.get("spec") or {}).get("serving")
    return value if isinstance(value, dict) else {}


def serving_files(reg: Registry, model: str, n: int, manifest: dict[str, Any]) -> dict[str, bytes]:
    """config.pbtxt and inferenceservice.yaml for `model` serving version `n`, built from the
    manifest that version was deployed with (a rollback may change the signature back)."""
    cfg = triton.build(
        model, _tensors(manifest, "inputs"), _tensors(manifest, "outputs"), n, _serving(manifest)
    )
    isvc = kserve.render(model, reg.uri_of(model), _serving(manifest))
    return {
        "config.pbtxt": triton.to_text(cfg).encode(),
        "inferenceservice.yaml": kserve.to_yaml(isvc).encode(),
    }


def _deployed_manifest(reg: Registry, model: str, n: int) -> dict[str, Any]:
    """The manifest a version was deployed with (validated then; read back plainly here)."""
    from mlops_ci.manifest.safe_yaml import YamlInvalid, read

    key = f"{model}/{n}/model.yaml"
    # As validate read it: a value such as `2027-02-30` is text there, where yaml's own
    # loaders raise ValueError (the smoke test, a rollback and a re-run all read this).
    try:
        data, _ = read(reg.manifest_text(model, n))
    except YamlInvalid as exc:
        raise RegistryError(f"{reg.uri_of(key)}: unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{reg.uri_of(key)}: not a manifest")
    return data


#: Whether the registry holds these bytes as the model's InferenceService already.
Holds = Callable[[bytes], bool]


def _listed_isvc(reg: Registry, model: str, versions: VersionFolders) -> Holds:
    """`Holds` from the listing of the model's folder: on S3 its ETag answers, with no read."""
    name = "inferenceservice.yaml"
    return lambda data: reg.store.holds(f"{model}/{name}", data, versions.tags.get(name))


def _write_serving(reg: Registry, model: str, files: dict[str, bytes], holds: Holds) -> None:
    """Write the serving files; `holds` says whether the registry has the InferenceService."""
    # The InferenceService first: config.pbtxt is the switch, so it is written last. The
    # InferenceService names the model's folder, not a version, so it rarely changes.
    if not holds(files["inferenceservice.yaml"]):
        reg.write_bytes(f"{model}/inferenceservice.yaml", files["inferenceservice.yaml"])
    reg.write_bytes(f"{model}/config.pbtxt", files["config.pbtxt"])


def _intended(records: list[dict[str, Any]]) -> int | None:
    """The version the model's last deploy or rollback record set: what must serve."""
    record = audit.serving_at(records, None)
    n = record.get("registry_version") if record else None
    return n if isinstance(n, int) else None


def _converge(
    reg: Registry, model: str, log: bytes, serving: int | None, holds: Holds
) -> int | None:
    """Rewrite config.pbtxt when a kill left it behind the log (or it was changed by hand);
    returns the serving version. `serving`: the version config.pbtxt names, as the caller read
    it under the lock."""
    intended = _intended(audit.model_records(log, model))
    if intended is None:
        return serving
    manifest = _deployed_manifest(reg, model, intended)
    files = serving_files(reg, model, intended, manifest)
    if reg.read_bytes(f"{model}/config.pbtxt") != files["config.pbtxt"]:
        _write_serving(reg, model, files, holds)
    return intended


def _record(
    action: str, model: str, version: str, n: int | None, prov: Provenance, **extra: Any
) -> dict[str, Any]:
    return {
        "action": action,
        "model": model,
        "version": version,
        "registry_version": n,
        "commit": prov.commit,
        "pull_request": prov.pull_request,
        "approvers": list(prov.approvers),
        "actor": prov.actor,
        "source": prov.source,
        "run_url": prov.run_url,
        "reason": extra.pop("reason", None),
        "digests": extra.pop("digests", {}),
        **extra,
    }


def _release(cand: Candidate, n: int, prov: Provenance, time: str, record_sha: str) -> bytes:
    doc = {
        "model": cand.name,
        "version": cand.version,
        "registry_version": n,
        "commit": prov.commit,
        "pull_request": prov.pull_request,
        "approvers": list(prov.approvers),
        "artifact": {"path": cand.artifact_path, "sha256": cand.artifact_sha256},
        "onnx": cand.onnx_info | {"sha256": cand.onnx_sha256},
        "results": cand.results,
        "run_url": prov.run_url,
        "actor": prov.actor,
        "time": time,
        "source": prov.source,
        "audit": {"sha256": record_sha},
    }
    return (atomic.json_text(doc, sort_keys=True) + "\n").encode()


# --- publish -----------------------------------------------------------------------------------


def publish(
    reg: Registry, cand: Candidate, prov: Provenance, *, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> Published:
    """Publish `cand` as the model's next version, or converge when its semver is already in
    the registry (same artifact: nothing changes; different artifact: refused, exit 1)."""
    name = cand.name
    try:
        semver_key(cand.version)  # it names a file: a manifest's checks, made again here
    except ValueError as exc:
        raise CheckFailed(f"{name}: {exc}") from None
    if len(cand.version) > MAX_SEMVER:  # the marker's name must fit a file name (255 bytes)
        raise CheckFailed(f"{name}: metadata.version is longer than {MAX_SEMVER} characters")
    with reg.store.lock(lock_timeout_s, meanwhile=lambda: reg.read_bytes(audit.HEAD_KEY)) as held:
        # Everything the publish decides on, read together: on S3 the round trips overlap.
        end, versions, previous = reg.gather(
            lambda: audit.read_end(reg, held.early),
            lambda: reg.version_folders(name),
            lambda: reg.serving_version(name),
        )
        existing = _find_semver(reg, cand, versions)
        if existing is not None:
            done = _republish(reg, cand, prov, existing, versions, previous, end)
            if done is not None:
                return done
            versions = versions.without(existing[0])  # it was incomplete: retired
        last = versions.numbers[-1] if versions.numbers else None
        # The newest version, when it does not serve: a marked one is recorded and stays. An
        # unmarked one is retired unless the log records it (a kill came between its record
        # and its marker); then it gets its marker, so that no publish need ask again.
        if (
            last is not None
            and last != previous
            and last not in versions.marked
            and _retire_if_unrecorded(reg, name, last)
            and last in versions.semvers
        ):
            _mark(reg, name, last, versions.semvers[last])
        n = versions.highest + 1  # one past every numbered folder, complete or not
        digests = {"artifact": cand.artifact_sha256, "onnx": cand.onnx_sha256}
        pending = audit.prepare(
            reg, _record("deploy", name, cand.version, n, prov, digests=digests), end
        )
        files = {
            "model.onnx": cand.onnx,
            "model.yaml": cand.manifest_text,
            "release.json": _release(cand, n, prov, pending.record["time"], pending.sha256),
        }
        # Build the serving files before anything is written: a bad signature writes nothing.
        serving = serving_files(reg, name, n, cand.manifest_data)
        reg.store.put_folder(f"{name}/{n}", files)
        audit.commit(
            reg,
            pending,
            lambda: _write_serving(reg, name, serving, _listed_isvc(reg, name, versions)),
        )
        # The marker goes out with the lock's release: a holder that comes first sees version n
        # without it and asks its release.json, as for any version without a marker.
        held.on_release.append(lambda: _mark(reg, name, n, cand.version))
        return Published(
            name,
            cand.version,
            n,
            True,
            pending.sha256,
            f"published {name} {cand.version} as version {n}",
            previous,
        )


def _mark(reg: Registry, model: str, n: int, semver: str) -> None:
    """Write version n's release marker (`registry.RELEASE_MARKER`): it is complete and
    recorded. It only saves later reads (a version without one is asked its release.json),
    so a marker that cannot be written does not fail the publish it follows."""
    with contextlib.suppress(RegistryError):
        reg.store.put_if_absent(f"{model}/{release_marker(n, semver)}", b"")


def _asked_version(reg: Registry, model: str, n: int) -> tuple[dict[str, Any] | None, bool]:
    """Version n's release.json (None: no such whole version), and whether it has its release
    marker, so is recorded (one small read more, while the rollback's other reads are made)."""
    release = reg.find_release(model, n, whole=True) if n > 0 else None
    if release is None:
        return None, False
    try:
        marker = f"{model}/{release_marker(n, str(release.get('version')))}"
        return release, reg.store.stamp(marker) is not None
    except RegistryError:  # a semver no marker can be named after: the log is asked
        return release, False


def _retire_if_unrecorded(reg: Registry, model: str, n: int) -> bool:
    """A version folder that a killed deploy renamed but never recorded, and that a different
    semver now supersedes, stops being a version (its number stays taken). It never served.
    Returns whether version n is recorded (and so stays)."""
    sha = (reg.release(model, n).get("audit") or {}).get("sha256")
    if isinstance(sha, str) and audit.is_recorded(audit.read_log(reg) or b"", sha):
        return True
    reg.store.delete(f"{model}/{n}/release.json")
    return False


def _find_semver(
    reg: Registry, cand: Candidate, versions: VersionFolders
) -> tuple[int, dict[str, Any]] | None:
    """The version already published with the candidate's semver, and its release. The
    folders' markers answer from the listing; release.json is read for a marker that names the
    semver, and for a folder without a marker."""
    asked = [n for n in versions.numbers if versions.semvers.get(n, cand.version) == cand.version]
    for n, release in reversed(list(zip(asked, reg.releases(cand.name, asked), strict=True))):
        if release.get("version") != cand.version:
            continue
        published = (release.get("artifact") or {}).get("sha256")
        if published != cand.artifact_sha256:
            raise CheckFailed(
                f"{cand.name} {cand.version} is already published (registry version {n}) with "
                f"artifact sha256 {published}; this artifact is {cand.artifact_sha256}. A "
                "changed artifact needs a higher metadata.version"
            )
        return n, release
    return None


def _republish(
    reg: Registry,
    cand: Candidate,
    prov: Provenance,
    existing: tuple[int, dict[str, Any]],
    versions: VersionFolders,
    previous: int | None,
    end: audit.End,
) -> Published | None:
    """The candidate's semver is version `n` already: converge, or complete a deploy that a
    kill interrupted. `versions`, `previous`, `end`: what `publish` read under the
    lock. None: the folder was never recorded and is incomplete, so it is retired (and the
    candidate is to be published anew)."""
    n, release = existing
    sha = (release.get("audit") or {}).get("sha256")
    log = audit.read_log(reg) or b""
    if isinstance(sha, str) and audit.is_recorded(log, sha):
        serving = _converge(reg, cand.name, log, previous, _listed_isvc(reg, cand.name, versions))
        if n not in versions.marked:  # a kill came between the record and the marker
            _mark(reg, cand.name, n, cand.version)
        note = "" if serving == n else f" (version {serving} serves: a rollback stands)"
        return Published(
            cand.name,
            cand.version,
            n,
            False,
            sha,
            f"{cand.name} {cand.version} is already version {n}{note}",
            previous,
        )
    # A deploy was killed after its folder was written and before its record: record it now,
    # pointing release.json at the new record first (the version has never served). On S3 the
    # kill may have come while the folder's objects were being written: then it is retired.
    if not _whole(reg, cand, n, release):
        reg.store.delete(f"{cand.name}/{n}/release.json")
        return None
    digests = {"artifact": release["artifact"]["sha256"], "onnx": release["onnx"]["sha256"]}
    pending = audit.prepare(
        reg, _record("deploy", cand.name, cand.version, n, prov, digests=digests), end
    )
    release["audit"] = {"sha256": pending.sha256}
    release["time"] = pending.record["time"]
    files = serving_files(reg, cand.name, n, _deployed_manifest(reg, cand.name, n))
    reg.write_bytes(
        f"{cand.name}/{n}/release.json",
        (atomic.json_text(release, sort_keys=True) + "\n").encode(),
    )
    audit.commit(
        reg,
        pending,
        lambda: _write_serving(reg, cand.name, files, _listed_isvc(reg, cand.name, versions)),
        lambda: _mark(reg, cand.name, n, cand.version),
    )
    return Published(
        cand.name,
        cand.version,
        n,
        True,
        pending.sha256,
        f"published {cand.name} {cand.version} as version {n} (completed an interrupted deploy)",
        previous,
    )


def _whole(reg: Registry, cand: Candidate, n: int, release: dict[str, Any]) -> bool:
    """Whether unrecorded version n holds the candidate whole: its model.onnx matches the
    digest release.json names, and its model.yaml is the candidate's manifest (a stray second
    writer of the same number could have written one object and not the other)."""
    try:
        reg.model_onnx(cand.name, n, release)
    except RegistryError:
        return False
    return reg.read_bytes(f"{cand.name}/{n}/model.yaml") == cand.manifest_text


# --- rollback and refusal ----------------------------------------------------------------------


def rollback(
    reg: Registry,
    model: str,
    to: int,
    reason: str,
    prov: Provenance,
    *,
    action: str = "rollback",
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> Published:
    """Serve version `to` again: it must exist and its model.onnx must verify. Rewrites the
    version policy after an audit record naming the actor and the reason."""
    if not reason.strip():
        raise UsageError("a rollback needs --reason TEXT")
    with reg.store.lock(lock_timeout_s, meanwhile=lambda: reg.read_bytes(audit.HEAD_KEY)) as held:
        (release, marked), previous, end, isvc = reg.gather(
            lambda: _asked_version(reg, model, to),
            lambda: reg.serving_version(model),
            lambda: audit.read_end(reg, held.early),
            lambda: reg.read_bytes(f"{model}/inferenceservice.yaml"),
        )
        if release is None:  # the listing, only to say what there is
            versions = reg.versions(model)
            if not versions:  # a typo must not read as "that version is missing"
                known = ", ".join(reg.models()) or "none"
                raise UsageError(f"{reg.uri}: no model named {model!r} (models: {known})")
            have = ", ".join(map(str, versions))
            raise UsageError(f"{model} has no version {to} in {reg.uri} (versions: {have})")
        anchor = (release.get("audit") or {}).get("sha256")
        anchors = {to: anchor} if isinstance(anchor, str) else {}
        if to != previous and not marked and not reg.recorded([to], anchors):
            raise UsageError(
                f"{model} version {to} is not in the audit log: a deploy staged it and did not "
                "record it (it was interrupted, or is under way), or it was written by hand. "
                "Deploy its commit again to record it"
            )
        _, manifest = reg.gather(
            lambda: reg.model_onnx(model, to, release),  # RegistryError when it does not verify
            lambda: _deployed_manifest(reg, model, to),
        )
        serving = serving_files(reg, model, to, manifest)
        logged = previous
        if previous == to:  # rare: read the log only then
            logged = _intended(audit.model_records(audit.read_log(reg) or b"", model))
        if action == "rollback" and previous == to and logged == to:
            # Already serving, and the log agrees: a record would claim a change that was not.
            return Published(
                model,
                str(release.get("version")),
                to,
                False,
                None,
                f"{model} already serves version {to}; nothing was changed",
                previous,
            )
        digests = {
            "artifact": (release.get("artifact") or {}).get("sha256"),
            "onnx": (release.get("onnx") or {}).get("sha256"),  # what model_onnx just checked
        }
        fields = _record(
            action,
            model,
            str(release.get("version")),
            to,
            prov,
            reason=reason,
            digests=digests,
            previous=previous,
        )
        pending = audit.prepare(reg, fields, end)
        audit.commit(
            reg, pending, lambda: _write_serving(reg, model, serving, lambda data: data == isvc)
        )
    was = previous if previous != to else f"{previous}, but the log said {logged}"
    return Published(
        model,
        str(release.get("version")),
        to,
        True,
        pending.sha256,
        f"{model} now serves version {to} (was {was})",
        previous,
    )


def refuse(
    reg: Registry,
    models: Sequence[str],
    reason: str,
    prov: Provenance,
    *,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> list[str]:
    """Record a refused deploy, one record per model (or one with no model); their hashes."""
    out = []
    with reg.store.lock(lock_timeout_s):
        for model in models or [""]:
            fields = _record("refused", model, "", None, prov, reason=reason)
            fields["model"] = model or None  # a push that names no model
            out.append(audit.append(reg, fields).sha256)
    return out


# --- smoke test --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmokeResult:
    passed: bool
    summary: str
    failures: tuple[str, ...] = ()


def smoke_test(reg: Registry, model: str, n: int | None = None) -> SmokeResult:
    """Run the deployed manifest's test cases through HTTP: `mlops-ci serve` is started on the
    registry as it now stands and called over the Open Inference Protocol, on the path clients
    call (whose replies must come from the serving version), or on `/versions/n` for an `n`
    that does not serve. The local onnxruntime session only reads the columns `convert`
    recorded in the model's metadata."""

    from mlops_ci import data, evaluate
    from mlops_ci.serve.client import RemoteSession, ServeError, running

    serving = reg.serving_version(model)

    n = n if n is not None else serving
    if n is None:
        return SmokeResult(False, f"{model}: no version serves")
    onnx = reg.model_onnx(model, n)
    manifest_data = _deployed_manifest(reg, model, n)
    manifest = Manifest(Path(f"{model}/{n}/model.yaml"), Path(), manifest_data)
    try:
        session = runtime.session(onnx)
    except Exception as exc:  # onnxruntime's own exception types
        return SmokeResult(False, f"{model} version {n}: onnxruntime cannot load it: {exc}")
    stage = data.stage_manifest(manifest, session)
    try:
        with running(reg.uri) as url:
            if n == serving:
                remote = RemoteSession(url, model, expect_version=n)
            else:
                remote = RemoteSession(url, model, version=n)
            try:
                checks = evaluate.run_cases(stage, remote)
            finally:
                remote.close()
    except (ServeError, CheckFailed) as exc:
        return SmokeResult(False, f"{model} version {n} through mlops-ci serve: {exc}")
    failures = tuple(f"{c.name}: {c.detail}" for c in checks if not c.passed)
    summary = f"{len(checks) - len(failures)}/{len(checks)} test cases passed on version {n}"
    return SmokeResult(not failures, summary, failures)
