"""The registry's audit trail: `.mlops/audit.jsonl`, append-only and hash-chained.

Each record is one line of canonical JSON (keys sorted, no spaces) whose `prev` is the sha256 of
the line before it (64 zeros for the first) and whose `seq` counts from 1. The head is kept where
rewriting the log does not reach it: every `release.json` holds the sha256 of its own record, and
`.mlops/audit.head` names the last record, so a changed byte, a deleted, swapped or cut-off record
is found and named. Callers that append hold the registry lock (`deploy.py` does).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlops_ci.errors import UsageError
from mlops_ci.registry import META, Registry

LOG_KEY = f"{META}/audit.jsonl"
HEAD_KEY = f"{META}/audit.head"
GENESIS = "0" * 64
#: The actions a record can have (DESIGN.md "Audit record").
ACTIONS = ("deploy", "rollback", "refused", "smoke-failed")
#: The actions that set the serving version (a failed smoke test rolls back to the one before).
SETS_SERVING = ("deploy", "rollback", "smoke-failed")


#: `now()`'s format, which orders as text as it does in time
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def now() -> str:
    """ISO 8601 UTC with microseconds, the format of every `time` field."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time as `--at` takes it (a date alone means its midnight, UTC)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        # an offset can carry a time past year 9999 or before year 1 in UTC: OverflowError
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise UsageError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-11-01 or 2026-11-01T12:00:00Z)"
        ) from None


def encode(record: dict[str, Any]) -> bytes:
    """The canonical bytes of a record: what is hashed and what is written (plus a newline)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


@dataclass(frozen=True)
class Pending:
    """A record ready to append: its line and hash are known before it is written, so the
    release it describes can name it first (the version folder is written before the record)."""

    record: dict[str, Any]
    line: bytes
    sha256: str
    #: the line (with its newline) the record follows, b"" for the first: the log must still
    #: end with it when the record is appended (a lock taken over after its TTL can move it)
    after: bytes | None = None


def read_log(reg: Registry) -> bytes | None:
    """The whole log's bytes (None: no log yet). On S3 it is stored in segments
    (`registry.SEGMENT_LINES`), read here as one."""
    return reg.read_log(LOG_KEY)


def _lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


#: Enough of the log's end to hold its last record; a longer record reads the whole log.
_TAIL_BYTES = 1 << 16


def _last_lines(reg: Registry, records: int | None = None) -> list[bytes]:
    """The log's last two records (fewer when it is shorter), read from its end, so appending
    costs the same at any length of the log. `records`: how many the head says there are (a
    hint: on S3 it names the last segment)."""
    tail = reg.store.tail(LOG_KEY, _TAIL_BYTES, records)
    if not tail:
        return []
    lines = _lines(tail)
    if len(tail) >= _TAIL_BYTES and len(lines) < 3:  # records longer than the tail read
        lines = _lines(read_log(reg) or b"")
    elif len(tail) >= _TAIL_BYTES:
        lines = lines[1:]  # the first may be cut
    return lines[-2:]


@dataclass(frozen=True)
class End:
    """What appending needs to know of the log: its last two records and the head file."""

    lines: list[bytes]
    head: bytes | None


class Unread:
    """`read_end`'s default: no head was read beforehand."""


UNREAD = Unread()


def read_end(reg: Registry, early: bytes | Unread | None = UNREAD) -> End:
    """The log's end and its head: the head first, since on S3 its seq names the segment that
    ends the log (two reads one after the other, where a listing would come before the read).

    `early`: the head as read while the registry lock was being taken (`Store.lock`'s
    `meanwhile`), which saves one of those round trips. Another deploy may have moved the head
    since: it is read again when it does not name the log's last record."""
    head = reg.read_bytes(HEAD_KEY) if isinstance(early, Unread) else early
    lines = _last_lines(reg, _head_seq(head))
    if not isinstance(early, Unread) and lines and head != _head_of(lines[-1]):
        head = reg.read_bytes(HEAD_KEY)
    return End(lines, head)


def _head_of(last: bytes) -> bytes:
    """The head that names `last` as the log's last record."""
    seq = _field(last, b"seq") or b"?"
    return f"{seq.decode()} {digest(last)}\n".encode()


def _head_seq(head: bytes | None) -> int | None:
    """The seq a head file names (None: no head, or not one)."""
    seq = (head or b"").split(b" ", 1)[0]
    return int(seq) if seq.isdigit() and 0 < len(seq) < 19 else None


def _settle_head(reg: Registry, end: End) -> None:
    """Move a head left one record behind by a killed writer; refuse to write after a head
    that disagrees with the log any other way (that is for `audit verify` to name)."""
    lines, head = end.lines, end.head
    if not lines:
        if head is None:
            return  # no log, no head: the first record
        # A head is written only after the record it names, so a head without a log means the
        # log was cut (whole); a first record written now would overwrite the head that says so.
        raise UsageError(
            f"{reg.uri_of(HEAD_KEY)} names a record but the log is empty or missing; nothing is "
            "written until `mlops-ci audit verify` passes"
        )
    last = lines[-1]
    seq = _field(last, b"seq") or b"?"
    wanted = _head_of(last)
    if head == wanted:
        return
    behind = (
        f"{int(seq) - 1} {digest(lines[0])}\n".encode()
        if len(lines) == 2 and seq.isdigit()
        else None
    )
    if head is None or head == behind:
        reg.write_bytes(HEAD_KEY, wanted)
        return
    raise UsageError(
        f"{reg.uri_of(HEAD_KEY)} disagrees with the log's last record; nothing is written until "
        "`mlops-ci audit verify` passes"
    )


def prepare(reg: Registry, fields: dict[str, Any], end: End | None = None) -> Pending:
    """The next record after the log's current tail (the caller holds the registry lock, and
    read `end` under it when it passes one)."""
    end = read_end(reg) if end is None else end
    _settle_head(reg, end)
    lines = end.lines
    last = lines[-1] if lines else None
    prev = digest(last) if last else GENESIS
    seq_field = _field(last, b"seq") if last else b"0"
    if seq_field is None or not seq_field.isdigit():
        raise UsageError(f"{reg.uri_of(LOG_KEY)}: the last record has no seq; run `audit verify`")
    # Never dated before the record it follows: deploys run on machines whose clocks disagree,
    # and `audit show --at` reads the log's order from the times (one fixed format: the text
    # orders as the time does).
    time = now()
    last_time = (
        (_field(last, b"time") or b"").strip(b'"').decode("utf-8", "replace") if last else ""
    )
    if last_time > time and _TIME.fullmatch(last_time):
        time = last_time
    record = {"time": time, **fields, "prev": prev, "seq": int(seq_field) + 1}
    if record.get("action") not in ACTIONS:
        raise ValueError(f"unknown audit action {record.get('action')!r}")
    line = encode(record)
    return Pending(record, line, digest(line), last + b"\n" if last else b"")


def commit(reg: Registry, pending: Pending, *alongside: Callable[[], object]) -> None:
    """Append the record, then move the head to it. A kill between the two leaves the head one
    record behind, which `verify` accepts; a head that runs ahead of the log is a cut tail.

    `alongside`: writes that must follow the record (the serving files) and may go with the
    head's (together on S3: a round trip less). Either may land first, and when one fails the
    others may or may not have run: every such state converges (a head one record behind is
    moved on by the next append; serving files behind the log, by the next deploy)."""
    reg.store.append(LOG_KEY, pending.line + b"\n", pending.after)
    head = f"{pending.record['seq']} {pending.sha256}\n".encode()
    reg.gather(lambda: reg.write_bytes(HEAD_KEY, head), *alongside)


def append(reg: Registry, fields: dict[str, Any]) -> Pending:
    pending = prepare(reg, fields)
    commit(reg, pending)
    return pending


def records(reg: Registry) -> list[dict[str, Any]]:
    """Every record, oldest first."""
    return [_record(line, i) for i, line in enumerate(_lines(read_log(reg) or b""), 1)]


def _record(line: bytes, number: int) -> dict[str, Any]:
    # A torn or hand-edited line is the registry's fault, not a bug: say where it is.
    try:
        doc = json.loads(line)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise UsageError(f"{LOG_KEY}:{number}: not a JSON record (run `mlops-ci audit verify`)")
    return doc


def model_records(log: bytes, model: str) -> list[dict[str, Any]]:
    """One model's records in the log's bytes, oldest first; only lines that name the model
    are parsed."""
    needle = b'"model":' + json.dumps(model).encode()
    lines = _lines(log)
    return [r for r in (json.loads(x) for x in lines if needle in x) if r.get("model") == model]


def is_recorded(log: bytes, sha256: str) -> bool:
    """Whether the record with this hash is in the log's bytes: the record after it names it
    as `prev`, or it is the last line. A byte search, not a parse."""
    if sha256 == GENESIS:  # the first record's `prev`, no record's hash
        return False
    if b'"prev":"' + sha256.encode() + b'"' in log:
        return True
    lines = _lines(log)
    return bool(lines) and digest(lines[-1]) == sha256


def recorded_among(reg: Registry, shas: set[str]) -> set[str]:
    """Those of `shas` that are records of the log. Its end (the head, the last two records)
    is read first: a deploy under way, or one killed before its marker, left its record
    there. The whole log (on S3 every segment) is read only for a hash not found at the end."""
    wanted = shas - {GENESIS}
    if not wanted:
        return set()
    end = read_end(reg)
    tail = b"\n".join(end.lines)
    found = {sha for sha in wanted if is_recorded(tail, sha)}
    if wanted - found:
        log = read_log(reg) or b""
        found |= {sha for sha in wanted - found if is_recorded(log, sha)}
    return found


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """The outcome of `verify`: `first_bad` is the 1-based line of the first bad record."""

    records: int
    head: str
    first_bad: int | None = None
    problem: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.problem is None


_FIELDS: dict[bytes, re.Pattern[bytes]] = {}


def _field(line: bytes, name: bytes) -> bytes | None:
    """A top-level scalar's raw bytes (a string keeps its quotes). Keys are top-level and quotes
    inside strings are escaped, so `"name":` is the key itself; a regex in C is ten times
    cheaper than parsing every line as JSON."""
    pattern = _FIELDS.get(name)
    if pattern is None:
        pattern = _FIELDS[name] = re.compile(b'"' + re.escape(name) + rb'":("[^"]*"|[^,}]*)')
    found = pattern.search(line)
    return found.group(1) if found else None


def verify_log(data: bytes, head: bytes | None) -> Verification:
    """Check the chain of the log's bytes against its head file; name the first bad record."""
    lines = _lines(data)
    n = len(lines)
    if data and not data.endswith(b"\n"):
        return Verification(n, "", n, f"line {n} is incomplete (no newline): it was cut or edited")
    sha256 = hashlib.sha256
    hashes = [sha256(line).hexdigest() for line in lines]

    def bad(line_no: int, message: str) -> Verification:
        return Verification(n, hashes[-1] if hashes else GENESIS, line_no, message)

    # The fast pass: two substring searches per line. The careful pass below starts at the
    # first line that fails them and says what is wrong.
    first = n + 1
    prev = GENESIS.encode()
    for i, line in enumerate(lines, start=1):
        if b'"prev":"' + prev + b'"' not in line or (
            b'"seq":%d,' % i not in line and not line.endswith(b'"seq":%d}' % i)
        ):
            first = i
            break
        prev = hashes[i - 1].encode()
    for i, line in enumerate(lines[first - 1 :], start=first):
        seq = _field(line, b"seq")
        if seq != str(i).encode():
            following = _field(lines[i], b"seq") if i < n else None
            if seq == str(i + 1).encode() and following == str(i).encode():
                return bad(i, f"lines {i} and {i + 1} are swapped")
            if seq is not None and seq.isdigit() and int(seq) > i:
                return bad(i, f"record {i} is missing: line {i} is record {int(seq)}")
            return bad(i, f"line {i} is not record {i} (seq {seq!r}): it was changed or moved")
        expected = hashes[i - 2].encode() if i > 1 else GENESIS.encode()
        if _field(line, b"prev") != b'"' + expected + b'"':
            # Line i does not remember line i-1 as it is: either line i-1 changed, or line i's
            # own `prev` did; in the latter case line i's hash no longer matches what follows.
            after = _field(lines[i], b"prev") if i < n else None
            own_changed = after is not None and after != b'"' + hashes[i - 1].encode() + b'"'
            culprit = i if own_changed or i == 1 else i - 1
            return bad(culprit, f"record {culprit} was changed (its hash breaks the chain)")
    return _check_head(n, hashes, head)


def _check_head(n: int, hashes: list[str], head: bytes | None) -> Verification:
    last = hashes[-1] if hashes else GENESIS
    if head is None:
        if n:
            return Verification(n, last, notes=("no audit.head yet (written by this version)",))
        return Verification(0, GENESIS)
    try:
        seq_text, sha = head.decode().split()
        seq = int(seq_text)
    except ValueError:
        return Verification(n, last, n or None, "audit.head is not '<seq> <sha256>'")
    if seq > n:
        return Verification(
            n, last, n + 1, f"the log ends at record {n} but its head is record {seq}: "
            f"records {n + 1}..{seq} were cut off"
        )  # fmt: skip
    if seq == n and sha != last:
        return Verification(n, last, n, f"record {n} was changed (it does not hash to the head)")
    if n >= 2 and seq == n - 1 and sha == hashes[n - 2]:
        # The writer appended record n and was stopped before it moved the head.
        return Verification(n, last, notes=(f"record {n} is not anchored by audit.head yet",))
    if seq < n:
        return Verification(n, last, seq, f"audit.head names record {seq}, not the last ({n})")
    return Verification(n, last)


@dataclass(frozen=True)
class Anchor:
    """What a release.json says that its deploy record also says: the sha256 of that record,
    and the digests of the version's ONNX model and artifact (which every read of the version
    checks its bytes against, so a release.json rewritten to match swapped bytes is caught
    here)."""

    record: str | None
    onnx: str | None = None
    artifact: str | None = None

    @classmethod
    def of(cls, release: Mapping[str, Any]) -> Anchor:
        def sha(part: str) -> str | None:
            found = release.get(part)
            value = found.get("sha256") if isinstance(found, dict) else None
            return value if isinstance(value, str) else None

        return cls(sha("audit"), sha("onnx"), sha("artifact"))


def verify(
    reg: Registry,
    *,
    log: bytes | None = None,
    head: bytes | None = None,
    releases: Mapping[str, Mapping[int, Anchor]] | None = None,
    serving: Mapping[str, int | None] | None = None,
) -> Verification:
    """The log's chain and head, then every release.json against its record: a release whose
    record is not in the log means the tail was cut, unless it is the one version an
    interrupted deploy staged and never named (newest, not serving), which the next deploy
    records; a release whose digests are not its record's was changed after its deploy.

    A caller that has read the registry already (the catalog reads every release.json) passes
    what it read, so nothing is read twice: `log` and `head` are the bytes of the log and of its
    head file (None: absent), `releases` maps each model with published versions to
    {version: its release.json's `Anchor`}, and `serving` each model to its serving version.
    Without them, they are read from `reg`.
    """
    data = (read_log(reg) or b"") if log is None else log
    result = verify_log(data, reg.read_bytes(HEAD_KEY) if log is None else head)
    if not result.ok:
        return result
    by_hash = {digest(line): (i, line) for i, line in enumerate(_lines(data), start=1)}
    notes = list(result.notes)
    for model, anchors, serving_now in _anchors(reg, releases, serving):
        versions = sorted(anchors)
        for n in versions:
            sha = anchors[n].record
            found = by_hash.get(sha) if isinstance(sha, str) else None
            if found is None:
                deployed = _deploy_record(data, model, n)
                if deployed is None and n == versions[-1] and n != serving_now:
                    notes.append(f"{model} version {n} was staged but not recorded (interrupted)")
                    continue
                if deployed is not None:  # recorded: its release.json now names another record
                    return Verification(
                        result.records, result.head, deployed,
                        f"{model}/{n}/release.json names audit record {sha}, but record "
                        f"{deployed} is the deploy of {model} version {n}: the release.json or "
                        "the record changed",
                    )  # fmt: skip
                return Verification(
                    result.records, result.head, result.records + 1,
                    f"{model}/{n}/release.json names audit record {sha}, which is not in the "
                    "log: the log's tail was cut or the record changed",
                )  # fmt: skip
            record = json.loads(found[1])
            if record.get("model") != model or record.get("registry_version") != n:
                return Verification(
                    result.records, result.head, found[0],
                    f"record {found[0]} is not the deploy of {model} version {n} that "
                    f"{model}/{n}/release.json names",
                )  # fmt: skip
            changed = _changed_digest(anchors[n], record.get("digests"))
            if changed is not None:
                return Verification(
                    result.records, result.head, found[0],
                    f"{model}/{n}/release.json gives the {changed[0]} sha256 {changed[1]}, but "
                    f"record {found[0]}, its deploy, recorded {changed[2]}: the version's files "
                    "were changed after it was published",
                )  # fmt: skip
    return Verification(result.records, result.head, notes=tuple(notes))


def _changed_digest(anchor: Anchor, recorded: Any) -> tuple[str, str | None, str] | None:
    """(what, the release's digest, the record's) for the first digest that differs."""
    if not isinstance(recorded, dict):
        return None
    for what, held in (("onnx", anchor.onnx), ("artifact", anchor.artifact)):
        want = recorded.get(what)
        if isinstance(want, str) and want != held:
            return what, held, want
    return None


def _deploy_record(data: bytes, model: str, n: int) -> int | None:
    """The line of the log's deploy record of `model` version `n`, if there is one. Read only
    for a release whose record is missing, so every line naming the model is parsed."""
    needle = json.dumps(model, ensure_ascii=False).encode()
    for number, line in enumerate(_lines(data), start=1):
        if needle in line:
            record = json.loads(line)
            if (record.get("action"), record.get("model"), record.get("registry_version")) == (
                "deploy",
                model,
                n,
            ):
                return number
    return None


def _anchors(
    reg: Registry,
    releases: Mapping[str, Mapping[int, Anchor]] | None,
    serving: Mapping[str, int | None] | None,
) -> Iterator[tuple[str, Mapping[int, Anchor], int | None]]:
    """Each model with published versions: {version: its release's `Anchor`}, and the version
    it serves; from the caller's reading when given, else from the registry."""
    if releases is not None:
        for model in sorted(releases):
            if releases[model]:
                yield model, releases[model], (serving or {}).get(model)
        return
    for model in _models_with_versions(reg):
        now_serving = reg.serving_version(model) if reg.config_text(model) else None
        anchors = {
            n: Anchor.of(reg.release(model, n))
            for n in reg.version_folders(model).numbers  # recorded or not: that is the question
        }
        yield model, anchors, now_serving


def _models_with_versions(reg: Registry) -> list[str]:
    return sorted(
        {
            key.split("/")[0]
            for key in reg.model_keys()
            if key.endswith("/release.json") and key.count("/") == 2
        }
    )


# --- what served when ----------------------------------------------------------------------------


def serving_at(history: list[dict[str, Any]], at: datetime | None) -> dict[str, Any] | None:
    """The deploy or rollback record that set the serving version as of `at` (None: now)."""
    current = None
    for record in history:
        if record.get("action") not in SETS_SERVING or record.get("registry_version") is None:
            continue
        if at is not None and parse_time(record["time"]) > at:
            break
        current = record
    return current


def show(reg: Registry, model: str, at: datetime | None = None) -> dict[str, Any]:
    """What served `model` at `at` (default: now), approved by whom, with which results, and the
    model's history of records up to then."""
    history = [r for r in records(reg) if r.get("model") == model]
    if at is not None:  # the log up to its first record after `at`, as `serving_at` reads it
        history = list(itertools.takewhile(lambda r: parse_time(r["time"]) <= at, history))
    record = serving_at(history, None)
    serving: dict[str, Any] | None = None
    if record is not None:
        n = record.get("registry_version")
        release = (reg.find_release(model, n) if isinstance(n, int) else None) or {}
        serving = {
            "registry_version": n,
            "version": release.get("version", record.get("version")),
            "since": record["time"],
            "set_by": record["action"],
            "actor": record.get("actor"),
            "reason": record.get("reason"),
            "commit": release.get("commit"),
            "pull_request": release.get("pull_request"),
            "approvers": release.get("approvers", []),
            "results": release.get("results", {}),
            "digests": {
                "artifact": (release.get("artifact") or {}).get("sha256"),
                "onnx": (release.get("onnx") or {}).get("sha256"),
            },
            "source": release.get("source"),
        }
    return {
        "model": model,
        # to the microsecond when asked so: a record at 08:00:00.3 is in the answer "at 08:00:00.5",
        # and must not read as after the time asked
        "at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if at.microsecond else "%Y-%m-%dT%H:%M:%SZ")
        if at
        else None,
        "serving": serving,
        "history": history,
    }
