"""The audit log: its hash chain, tampering found and named, `audit show --at`, the CLI."""

from __future__ import annotations

import json
import random
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from deploy_models import LOCAL, candidate

from mlops_ci import audit, cli, deploy
from mlops_ci.deploy import Provenance
from mlops_ci.registry import Registry, open_registry


def _history(root: Path | str) -> Registry:
    """Eight records: deploys of two models, a rollback, a refusal."""
    reg = open_registry(root)
    for i in range(3):
        deploy.publish(reg, candidate("iris", f"1.{i}.0", salt=str(i)), LOCAL)
        deploy.publish(reg, candidate("wine", f"2.{i}.0", salt=str(i)), LOCAL)
    deploy.rollback(reg, "iris", 2, "latency regression", Provenance(actor="oncall"))
    deploy.refuse(reg, ["iris"], "no approval", LOCAL)
    return reg


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return _history(tmp_path / "registry")


def _log(reg: Registry) -> bytes:
    data = reg.read_bytes(audit.LOG_KEY)
    assert data is not None
    return data


def test_records_are_canonical_and_chained(reg: Registry) -> None:
    lines = _log(reg).splitlines()
    assert len(lines) == 8
    prev = audit.GENESIS
    for i, line in enumerate(lines, start=1):
        record = json.loads(line)
        assert audit.encode(record) == line  # keys sorted, no spaces
        assert (record["prev"], record["seq"]) == (prev, i)
        assert record["time"].endswith("Z")
        prev = audit.digest(line)
    result = audit.verify(reg)
    assert result.ok and result.records == 8 and result.head == prev


def test_a_single_changed_byte_anywhere_is_found_and_named(reg: Registry) -> None:
    original = _log(reg)
    rng = random.Random(7)
    positions = [p for p in range(len(original)) if original[p] != ord("\n")]
    for position in rng.sample(positions, 60):
        changed = bytearray(original)
        changed[position] = (changed[position] + 1) % 256 or 1
        if changed[position] == ord("\n"):
            changed[position] = ord("x")
        reg.write_bytes(audit.LOG_KEY, bytes(changed))
        result = audit.verify(reg)
        line = original.count(b"\n", 0, position) + 1
        assert not result.ok, f"byte {position} (line {line}) changed unnoticed"
        assert result.first_bad == line, (position, result.problem)
    reg.write_bytes(audit.LOG_KEY, original)
    assert audit.verify(reg).ok


def test_a_deleted_record_is_named(reg: Registry) -> None:
    lines = _log(reg).splitlines(keepends=True)
    reg.write_bytes(audit.LOG_KEY, b"".join(lines[:3] + lines[4:]))
    result = audit.verify(reg)
    assert (result.ok, result.first_bad) == (False, 4)
    assert result.problem == "record 4 is missing: line 4 is record 5"


def test_a_swapped_pair_is_named(reg: Registry) -> None:
    lines = _log(reg).splitlines(keepends=True)
    lines[2], lines[3] = lines[3], lines[2]
    reg.write_bytes(audit.LOG_KEY, b"".join(lines))
    result = audit.verify(reg)
    assert (result.ok, result.first_bad, result.problem) == (False, 3, "lines 3 and 4 are swapped")


def test_a_cut_tail_is_found_by_the_head(reg: Registry) -> None:
    lines = _log(reg).splitlines(keepends=True)
    reg.write_bytes(audit.LOG_KEY, b"".join(lines[:-2]))
    result = audit.verify(reg)
    assert not result.ok and result.first_bad == 7
    assert "records 7..8 were cut off" in (result.problem or "")


def test_a_cut_tail_with_a_rewritten_head_is_found_by_release_json(reg: Registry) -> None:
    """The attacker cuts the deploys off the end and rewrites audit.head to match: each
    release.json still names its own record."""
    lines = _log(reg).splitlines(keepends=True)
    kept = lines[:4]
    reg.write_bytes(audit.LOG_KEY, b"".join(kept))
    reg.write_bytes(audit.HEAD_KEY, f"4 {audit.digest(kept[-1].rstrip())}\n".encode())
    result = audit.verify(reg)
    assert not result.ok
    assert "release.json names audit record" in (result.problem or "")


def test_a_record_moved_to_another_version_is_found(reg: Registry) -> None:
    release = reg.release("iris", 1)
    release["audit"] = reg.release("iris", 2)["audit"]
    reg.write_bytes("iris/1/release.json", json.dumps(release).encode())
    result = audit.verify(reg)
    assert not result.ok and "is not the deploy of iris version 1" in (result.problem or "")


def test_a_changed_anchor_on_the_newest_version_after_a_rollback_is_found(reg: Registry) -> None:
    """iris version 3 is the newest and, rolled back from, does not serve: the shape an
    interrupted deploy leaves. But the log holds its deploy record, so a release.json that
    names another record was changed; it is not excused as interrupted."""
    assert reg.serving_version("iris") == 2 and reg.versions("iris")[-1] == 3
    release = reg.release("iris", 3)
    release["audit"] = {"sha256": "f" * 64}
    reg.write_bytes("iris/3/release.json", json.dumps(release).encode())
    result = audit.verify(reg)
    assert not result.ok
    assert "but record 5 is the deploy of iris version 3" in (result.problem or "")
    assert result.first_bad == 5


def test_a_version_staged_and_never_recorded_is_a_note_not_a_failure(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy killed between its folder and its record: the trail still verifies, and says so."""
    monkeypatch.setattr(audit, "commit", lambda *args, **kwargs: _raise(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        deploy.publish(reg, candidate("wine", "2.3.0", salt="3"), LOCAL)
    assert reg.version_folders("wine").numbers[-1] == 4
    result = audit.verify(reg)
    assert result.ok
    assert result.notes == ("wine version 4 was staged but not recorded (interrupted)",)


def _raise(exc: BaseException) -> None:
    raise exc


def test_a_version_s_bytes_swapped_with_its_release_json_to_match_are_found(
    reg: Registry, tmp_path: Path
) -> None:
    """Someone with the registry's write key replaces iris version 2's model.onnx and writes
    its sha256 into release.json: every read checks the bytes against release.json, so they
    read (and a rollback would serve them) as version 2. Its deploy record says otherwise."""
    import hashlib

    import onnx

    from mlops_ci.catalog import build

    model = onnx.load_from_string(reg.model_onnx("iris", 2))
    model.metadata_props.add(key="swapped", value="after the deploy")
    swapped = model.SerializeToString()
    reg.write_bytes("iris/2/model.onnx", swapped)
    release = reg.release("iris", 2)
    release["onnx"]["sha256"] = hashlib.sha256(swapped).hexdigest()
    reg.write_bytes("iris/2/release.json", json.dumps(release).encode())
    assert reg.model_onnx("iris", 2) == swapped  # the attack: the registry serves it as is

    result = audit.verify(reg)
    assert not result.ok and result.first_bad == 3
    assert f"gives the onnx sha256 {release['onnx']['sha256']}, but record 3" in (
        result.problem or ""
    )
    catalog, _ = build(reg.uri, tmp_path / "site")  # the catalog says what audit verify says
    assert catalog.audit is not None and not catalog.audit.ok


def test_show_answers_what_served_when(reg: Registry) -> None:
    records = audit.records(reg)
    iris = [r for r in records if r["model"] == "iris"]
    second_deploy = iris[1]["time"]
    then = audit.show(reg, "iris", audit.parse_time(second_deploy))
    assert then["serving"]["registry_version"] == 2
    assert then["serving"]["version"] == "1.1.0"
    assert then["serving"]["set_by"] == "deploy"
    now = audit.show(reg, "iris")
    assert (now["serving"]["registry_version"], now["serving"]["set_by"]) == (2, "rollback")
    assert now["serving"]["reason"] == "latency regression"
    before_anything = audit.show(reg, "iris", audit.parse_time("2000-01-01"))
    assert before_anything["serving"] is None and before_anything["history"] == []


def test_show_and_the_catalog_agree_on_what_served_after_a_smoke_failure(tmp_path: Path) -> None:
    """Version 2 fails its smoke test and is rolled back automatically (a `smoke-failed`
    record): from then on version 1 serves, as `audit show --at` and the catalog both say."""
    from mlops_ci.catalog.read import read_catalog

    reg = open_registry(tmp_path / "registry")
    deploy.publish(reg, candidate("iris", "1.0.0"), LOCAL)
    deploy.publish(reg, candidate("iris", "1.1.0", salt="b"), LOCAL)
    deploy.rollback(reg, "iris", 1, "smoke test failed: row 0", LOCAL, action="smoke-failed")
    first, second, failed = audit.records(reg)
    assert failed["action"] == "smoke-failed" and failed["registry_version"] == 1

    def served(at: str | None) -> tuple[int, str]:
        doc = audit.show(reg, "iris", audit.parse_time(at) if at else None)
        return doc["serving"]["registry_version"], doc["serving"]["set_by"]

    assert served(first["time"]) == (1, "deploy")
    assert served(second["time"]) == (2, "deploy")
    assert served(failed["time"]) == (1, "smoke-failed")
    assert served(None) == (1, "smoke-failed")
    assert reg.serving_version("iris") == 1

    [model] = read_catalog(reg, "test").models
    assert [(s.number, s.start, s.end) for s in model.served] == [
        (1, first["time"], second["time"]),
        (2, second["time"], failed["time"]),
        (1, failed["time"], None),
    ]
    assert (model.serving, model.serving_since) == (1, failed["time"])


def test_cli_audit_verify_names_the_first_bad_record(reg: Registry, tmp_path: Path, capsys) -> None:
    uri = str(tmp_path / "registry")
    assert cli.main(["audit", "verify", "--registry", uri]) == 0
    assert "8 records verify" in capsys.readouterr().out
    lines = _log(reg).splitlines(keepends=True)
    lines[4] = lines[4].replace(b'"actor":"tester"', b'"actor":"mallory"')
    reg.write_bytes(audit.LOG_KEY, b"".join(lines))
    assert cli.main(["audit", "verify", "--registry", uri]) == 1
    assert "record 5: record 5 was changed" in capsys.readouterr().err


def test_cli_audit_show_at_a_time(reg: Registry, tmp_path: Path, capsys) -> None:
    uri = str(tmp_path / "registry")
    first = audit.records(reg)[0]["time"]
    assert (
        cli.main(["audit", "show", "iris", "--registry", uri, "--at", first, "--format", "json"])
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["serving"]["registry_version"] == 1
    # at the record's very instant, microseconds and all: the answer says so (it said the
    # second before, "at 08:00:00Z", then "since 08:00:00.123456Z"), also given with an offset
    assert (
        audit.parse_time(doc["at"])
        == audit.parse_time(first)
        == audit.parse_time(doc["serving"]["since"])
    )
    shifted = audit.parse_time(first).astimezone(timezone(timedelta(hours=-5))).isoformat()
    assert cli.main(["audit", "show", "iris", "--registry", uri, "--at", shifted]) == 0
    assert f"iris at {doc['at']}: version 1.0.0 (registry version 1), since {first}" in (
        capsys.readouterr().out
    )
    assert cli.main(["audit", "show", "iris", "--registry", uri]) == 0
    out = capsys.readouterr().out
    assert "registry version 2" in out and "rollback (latency regression)" in out
    # an offset that carries the time past year 9999 in UTC was an internal error (OverflowError)
    for bad in ("yesterday", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        assert cli.main(["audit", "show", "iris", "--registry", uri, "--at", bad]) == 2
        err = capsys.readouterr().err
        assert "not an ISO 8601 time" in err and "internal error" not in err


def test_cli_audit_show_on_a_damaged_log_names_the_line(
    reg: Registry, tmp_path: Path, capsys
) -> None:
    # A line that is not JSON (a torn write, a hand edit): one message, no internal error.
    reg.write_bytes(audit.LOG_KEY, _log(reg) + b"not json\n")
    uri = str(tmp_path / "registry")
    assert cli.main(["audit", "show", "iris", "--registry", uri]) == 2
    err = capsys.readouterr().err
    assert "audit.jsonl:9" in err and "internal error" not in err


def test_cli_rollback(reg: Registry, tmp_path: Path, capsys) -> None:
    uri = str(tmp_path / "registry")
    assert (
        cli.main(["rollback", "wine", "--registry", uri, "--to", "1", "--reason", "bad", "--local"])
        == 0
    )
    assert reg.serving_version("wine") == 1
    assert (
        cli.main(["rollback", "wine", "--registry", uri, "--to", "9", "--reason", "x", "--local"])
        == 2
    )
    assert "wine has no version 9" in capsys.readouterr().err


def test_cli_audit_on_a_missing_folder_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert cli.main(["audit", "verify", "--registry", str(tmp_path / "nope")]) == 2
    assert "no registry there" in capsys.readouterr().err


def test_cli_audit_verify_of_a_folder_that_is_no_registry_is_not_a_pass(
    tmp_path: Path, capsys
) -> None:
    """`--registry .` in the model repository (or an empty --registry) once printed
    "✓ 0 records verify" and exited 0."""
    (tmp_path / "models").mkdir()
    assert cli.main(["audit", "verify", "--registry", str(tmp_path)]) == 2
    assert "not a registry, or nothing was deployed" in capsys.readouterr().err
    assert cli.main(["audit", "verify", "--registry", ""]) == 2
    assert "the registry is empty" in capsys.readouterr().err


def test_cli_rollback_of_an_unknown_model_says_so(tmp_path: Path, capsys) -> None:
    uri = str(tmp_path / "registry")
    deploy.publish(open_registry(uri), candidate("wine", "1.0.0"), LOCAL)
    argv = ["rollback", "wnie", "--registry", uri, "--to", "1", "--reason", "x", "--local"]
    assert cli.main(argv) == 2
    assert "no model named 'wnie' (models: wine)" in capsys.readouterr().err


def test_an_endpoint_that_is_not_a_url_is_one_clear_error(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "notaurl")
    assert cli.main(["audit", "verify", "--registry", "s3://bucket/registry"]) == 2
    err = capsys.readouterr().err
    assert "S3 endpoint 'notaurl' (AWS_ENDPOINT_URL" in err and "internal" not in err


def test_show_states_the_test_counts_in_words() -> None:
    from mlops_ci.deploy_push import render_show

    serving = {
        "version": "1.0.0",
        "registry_version": 1,
        "since": "2026-11-30T00:00:00Z",
        "set_by": "deploy",
        "source": "local",
        "digests": {"onnx": "0" * 64},
        "results": {"test": {"passed": True, "counts": {"fail": 0, "pass": 8, "skip": 1}}},
    }
    out = render_show({"model": "iris", "at": None, "serving": serving, "history": []})
    assert "tests:     passed (8 passed, 0 failed, 1 skipped)" in out
    out = render_show({"model": "iris", "at": None, "serving": serving, "history": [{}]})
    assert "history:   1 record up to then" in out


def test_cli_audit_show_of_an_unknown_model_is_a_usage_error(
    reg: Registry, tmp_path: Path, capsys
) -> None:
    uri = str(tmp_path / "registry")
    assert cli.main(["audit", "show", "irsi", "--registry", uri]) == 2
    assert "no model named 'irsi' (models: iris, wine)" in capsys.readouterr().err


# --- on S3 the log is kept in segments (registry.SEGMENT_LINES) --------------------------------


@pytest.fixture
def segmented(s3_server, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """The eight-record history on S3, three records a segment: audit.jsonl, .000001, .000002."""
    from mlops_ci import registry

    monkeypatch.setattr(registry, "SEGMENT_LINES", 3)
    return _history(s3_server.fresh_uri())


def _segments(reg: Registry) -> dict[str, bytes]:
    keys = [k for k in reg.list_keys(".mlops") if k.startswith(audit.LOG_KEY)]
    return {k: reg.read_bytes(k) or b"" for k in keys}


def test_an_s3_log_grows_by_segments_and_reads_as_one(segmented: Registry) -> None:
    parts = _segments(segmented)
    names = [k.removeprefix(".mlops/") for k in parts]
    assert names == ["audit.jsonl", "audit.jsonl.000001", "audit.jsonl.000002"]
    assert [v.count(b"\n") for v in parts.values()] == [3, 3, 2]
    whole = audit.read_log(segmented)
    assert whole == b"".join(parts.values())
    assert [r["seq"] for r in audit.records(segmented)] == list(range(1, 9))
    result = audit.verify(segmented)
    assert result.ok and result.records == 8


def test_an_s3_append_rewrites_only_the_last_segment(segmented: Registry) -> None:
    """What keeps a deploy's cost flat as the log grows: earlier segments are never written."""
    stamps = {k: segmented.store.stamp(k) for k in _segments(segmented)}
    before = _segments(segmented)
    deploy.refuse(segmented, ["wine"], "no approval", LOCAL)  # record 9: fills .000002
    deploy.refuse(segmented, ["wine"], "no approval", LOCAL)  # record 10: starts .000003
    after = _segments(segmented)
    for key in list(before)[:-1]:
        assert segmented.store.stamp(key) == stamps[key] and after[key] == before[key]
    assert after[audit.LOG_KEY + ".000003"].count(b"\n") == 1
    assert audit.verify(segmented).ok


def test_tampering_with_s3_segments_is_found_and_named(segmented: Registry) -> None:
    parts = _segments(segmented)
    middle = audit.LOG_KEY + ".000001"
    original = parts[middle]
    # A changed byte in a middle segment.
    changed = bytearray(original)
    changed[original.index(b'"actor":"') + 9] ^= 1
    segmented.write_bytes(middle, bytes(changed))
    result = audit.verify(segmented)
    assert not result.ok and result.first_bad == 4, result
    # A middle segment deleted whole.
    segmented.store.delete(middle)
    result = audit.verify(segmented)
    assert not result.ok and result.first_bad == 4 and "missing" in (result.problem or ""), result
    segmented.write_bytes(middle, original)
    assert audit.verify(segmented).ok
    # The last segment deleted: the head (and the releases) still name records 7 and 8.
    segmented.store.delete(audit.LOG_KEY + ".000002")
    result = audit.verify(segmented)
    assert not result.ok and "cut off" in (result.problem or ""), result


def test_a_head_left_behind_at_a_segment_boundary_is_settled(segmented: Registry) -> None:
    """A writer killed between appending record 10 (the first of a new segment) and moving the
    head: the next append must see record 9 too (in the segment before) to know the head is
    one behind, not tampered with."""
    deploy.refuse(segmented, ["wine"], "no approval", LOCAL)  # record 9: fills .000002
    behind = segmented.read_bytes(audit.HEAD_KEY)
    deploy.refuse(segmented, ["wine"], "no approval", LOCAL)  # record 10: starts .000003
    segmented.write_bytes(audit.HEAD_KEY, behind or b"")  # as if killed before the head moved
    assert audit.verify(segmented).ok  # one behind is what a kill leaves
    deploy.refuse(segmented, ["wine"], "no approval", LOCAL)  # record 11
    result = audit.verify(segmented)
    assert result.ok and result.records == 11, result


def test_an_s3_append_finds_the_log_s_end_from_the_head(segmented: Registry) -> None:
    """The head's seq names the segment that ends the log, so an append reads it without
    listing the segments: only when that segment is full (a successor only a listing would
    show), or the head does not bear out, are they listed."""
    from mlops_ci.errors import UsageError

    store, listed = segmented.store, []
    list_raw = store._list_raw
    store._list_raw = lambda full, start_after="": (
        listed.append(full) or list_raw(full, start_after)
    )

    def refuse_and_count() -> int:
        deploy.refuse(segmented, ["wine"], "no approval", LOCAL)
        return len([full for full in listed if full.endswith(audit.LOG_KEY)])

    assert refuse_and_count() == 0  # record 9: the head says 8, .000002 holds 7–8
    assert refuse_and_count() == 1  # record 10: .000002 is full (7–9), so it was listed
    assert refuse_and_count() == 1  # record 11: the head says 10, .000003 holds 10
    assert audit.verify(segmented).ok
    # A head that runs past the log: the listing decides, and the head disagrees with it.
    segmented.write_bytes(audit.HEAD_KEY, f"40 {'ab' * 32}\n".encode())
    with pytest.raises(UsageError, match="disagrees with the log"):
        refuse_and_count()
    assert [r["seq"] for r in audit.records(segmented)][-1] == 11


def test_the_catalog_reads_an_s3_log_across_its_segments(segmented: Registry) -> None:
    from mlops_ci.catalog.read import read_catalog

    catalog = read_catalog(segmented, "s3 registry", workers=2)
    assert catalog.audit is not None and catalog.audit.ok and catalog.audit.records == 8
    events = {m.name: len(m.events) for m in catalog.models}
    assert events == {"iris": 5, "wine": 3}  # records 1–8, from all three segments


def test_nothing_is_appended_after_a_head_that_disagrees_with_the_log(reg: Registry) -> None:
    """A head that is neither the log's last record nor one behind it means the log was tampered
    with: a deploy must not write its record after it (audit verify names the damage)."""
    from mlops_ci.errors import UsageError

    log = _log(reg)
    reg.write_bytes(audit.HEAD_KEY, f"3 {'ab' * 32}\n".encode())
    with pytest.raises(UsageError, match="disagrees with the log"):
        deploy.publish(reg, candidate("iris", "9.0.0", salt="x"), LOCAL)
    assert _log(reg) == log
    assert not audit.verify(reg).ok


def test_a_staged_but_unrecorded_version_is_retired_by_the_next_semver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy killed after its folder was renamed and before its record leaves version 2
    without a record; the next deploy of another semver retires it (its number stays taken),
    so the log and the releases agree."""
    reg = open_registry(tmp_path / "registry")
    deploy.publish(reg, candidate("m0", "1.0.0"), LOCAL)
    real = audit.commit

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # as if killed right here

    monkeypatch.setattr(audit, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        deploy.publish(reg, candidate("m0", "1.1.0", salt="b"), LOCAL)
    monkeypatch.setattr(audit, "commit", real)
    assert deploy.publish(reg, candidate("m0", "1.2.0", salt="c"), LOCAL).registry_version == 3
    assert reg.versions("m0") == [1, 3] and reg.serving_version("m0") == 3
    assert audit.verify(reg).ok


@pytest.mark.parametrize("segment_lines", [None, 1], ids=["one-segment", "new-segment"])
def test_a_deploy_that_lost_its_lock_to_the_ttl_appends_nothing(
    s3_server, monkeypatch: pytest.MonkeyPatch, segment_lines: int | None
) -> None:
    """A deploy whose upload outlives the lock's TTL loses the lock to the next deploy, which
    appends its record. The first must then fail, not append a record whose `prev` names the
    line before the second's: that would break the chain for good (seen: two records 2)."""
    from mlops_ci import registry
    from mlops_ci.registry import RegistryError

    if segment_lines:  # each append then creates a segment (If-None-Match, not If-Match)
        monkeypatch.setattr(registry, "SEGMENT_LINES", segment_lines)
    uri = s3_server.fresh_uri()
    first, second = open_registry(uri), open_registry(uri)
    deploy.publish(first, candidate("iris", "1.0.0"), LOCAL)
    monkeypatch.setenv("MLOPS_CI_LOCK_TTL", "0.3")
    upload = first.store.put_folder

    def slow_upload(prefix: str, files: dict[str, bytes]) -> None:
        upload(prefix, files)  # then the next deploy takes the expired lock over, and records
        deploy.publish(second, candidate("wine", "1.0.0"), LOCAL, lock_timeout_s=10)

    monkeypatch.setattr(first.store, "put_folder", slow_upload)
    with pytest.raises(RegistryError, match="moved on while this writer held the registry lock"):
        deploy.publish(first, candidate("iris", "1.1.0", salt="b"), LOCAL)
    assert [(r["model"], r["seq"]) for r in audit.records(first)] == [("iris", 1), ("wine", 2)]
    assert audit.verify(first).ok
    assert first.serving_version("iris") == 1 and first.serving_version("wine") == 1
    monkeypatch.delenv("MLOPS_CI_LOCK_TTL")  # run again: it records its version, and the
    # chain still verifies
    again = deploy.publish(open_registry(uri), candidate("iris", "1.1.0", salt="b"), LOCAL)
    assert again.changed and first.serving_version("iris") == again.registry_version
    assert audit.verify(first).ok


@pytest.mark.parametrize("cut", ["deleted", "emptied"])
def test_nothing_is_appended_after_a_head_whose_log_was_cut_whole(
    tmp_path: Path, cut: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A head names a record only once it is written, so a head without a log means the whole
    log was cut. Appending a first record there overwrote the head, the only witness of the
    cut: `audit verify` then passed on a registry that had lost its history."""
    from mlops_ci.errors import UsageError

    reg = open_registry(tmp_path / "registry")
    for i in range(3):
        deploy.refuse(reg, ["iris"], f"no approval ({i})", LOCAL)
    log = tmp_path / "registry" / audit.LOG_KEY
    log.unlink() if cut == "deleted" else log.write_bytes(b"")
    assert "records 1..3 were cut off" in str(audit.verify(reg).problem)
    with pytest.raises(UsageError, match="the log is empty or missing"):
        deploy.refuse(reg, ["iris"], "no approval (3)", LOCAL)
    assert "records 1..3 were cut off" in str(audit.verify(reg).problem)
    # refusals only, so no model: the CLI said "not a registry, or nothing was deployed" (2)
    assert cli.main(["audit", "verify", "--registry", str(tmp_path / "registry")]) == 1
    assert "records 1..3 were cut off" in capsys.readouterr().err


def test_a_writer_whose_clock_is_behind_never_dates_a_record_before_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deploys run on different runners, whose clocks may disagree. A rollback from a runner
    two minutes behind was dated before the deploy it undid, so `audit show --at` a minute
    before it answered "rolled back at 10:04 from version 2" of a time when version 2, deployed
    at 10:05, did not exist yet. A record is never dated before the one it follows."""
    reg = open_registry(tmp_path / "registry")
    times = iter(["2026-11-01T10:00:00.000000Z", "2026-11-01T10:05:00.000000Z"])
    monkeypatch.setattr(audit, "now", lambda: next(times))
    deploy.publish(reg, candidate("iris", "1.0.0"), LOCAL)
    deploy.publish(reg, candidate("iris", "1.1.0", salt="b"), LOCAL)
    monkeypatch.setattr(audit, "now", lambda: "2026-11-01T10:04:00.000000Z")  # 2 min behind
    deploy.rollback(reg, "iris", 1, "latency", Provenance(actor="oncall"))
    times_logged = [r["time"] for r in audit.records(reg)]
    assert times_logged == sorted(times_logged)
    at = audit.show(reg, "iris", audit.parse_time("2026-11-01T10:04:30Z"))
    assert at["serving"]["set_by"] == "deploy" and at["serving"]["registry_version"] == 1
    assert [r["action"] for r in at["history"]] == ["deploy"]
    assert audit.verify(reg).ok
    # A log written before this rule is read as far as its first record after the time asked
    log = tmp_path / "registry" / audit.LOG_KEY
    lines = log.read_bytes().splitlines()
    rolled_back = json.loads(lines[2]) | {"time": "2026-11-01T10:04:00.000000Z"}
    log.write_bytes(b"\n".join([*lines[:2], audit.encode(rolled_back)]) + b"\n")
    at = audit.show(reg, "iris", audit.parse_time("2026-11-01T10:04:30Z"))
    assert [r["action"] for r in at["history"]] == ["deploy"]
