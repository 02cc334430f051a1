"""The catalog agrees with its sources: a registry built by real deploys (mlops_ci.deploy), a
rollback, a refused deploy and a real monitor run, read back through `mlops-ci audit show
--format json` and the monitor's own JSON, must say what the catalog says."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from mlops_ci import audit, bench, cli, convert, deploy, evaluate
from mlops_ci.catalog import build
from mlops_ci.manifest import load
from mlops_ci.monitor import command as monitor_command
from mlops_ci.registry import open_registry

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "model-repo"
pytestmark = pytest.mark.slow

MODEL = "diabetes-risk"
PR_URL = "https://github.com/acme/models/pull/{}"
SHIFTED = ("bmi", "bp", "s1", "s2", "s5")


def _provenance(pr: int, approvers: tuple[str, ...], commit: str) -> deploy.Provenance:
    return deploy.Provenance(
        source="github",
        actor="github-actions[bot]",
        commit=commit,
        pull_request={"number": pr, "url": PR_URL.format(pr), "head_sha": commit},
        approvers=tuple(
            {"login": a, "review_id": 900 + i, "commit": commit, "time": "2026-11-01T00:00:00Z"}
            for i, a in enumerate(approvers)
        ),
        run_url=f"https://github.com/acme/models/actions/runs/{pr}00",
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The example repository, one registry with three deploys, a rollback, a refusal and a
    monitor run of diabetes-risk, and the monitor's JSON output."""
    root = tmp_path_factory.mktemp("sources")
    repo = root / "repo"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns(".mlops-ci"))
    manifest_path = repo / "models" / MODEL / "model.yaml"
    build_dir = root / "build"
    manifest = load(manifest_path, repo)
    assert convert.run(manifest, build_dir).passed
    evaluate.run(manifest, build_dir, build_dir)
    bench.run(manifest, build_dir, build_dir, time_budget_s=0.05, native=False)

    registry = root / "registry"
    reg = open_registry(registry)
    original = manifest_path.read_text(encoding="utf-8")
    for pr, semver, approvers in ((11, "1.0.0", ("bob", "carol")), (12, "1.1.0", ("dave",)),
                                  (14, "1.2.0", ("bob", "erin"))):  # fmt: skip
        manifest_path.write_text(original.replace("version: 1.0.0", f"version: {semver}"))
        candidate = deploy.load_candidate(load(manifest_path, repo), build_dir)
        deploy.publish(reg, candidate, _provenance(pr, approvers, f"{pr:040x}"))
    manifest_path.write_text(original.replace("version: 1.0.0", "version: 1.2.0"))
    deploy.refuse(reg, [MODEL], "the approval of @mallory is stale", _provenance(15, (), "f" * 40))
    deploy.rollback(reg, MODEL, 2, "false positives doubled", _provenance(16, (), "e" * 40))

    # Production data: the reference with 5 of its 9 drift columns shifted: dataset drift.
    reference = (repo / "models" / MODEL / "reference.csv").read_text(encoding="utf-8")
    lines = reference.splitlines()
    header = lines[0].split(",")
    shifted = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        for column in SHIFTED:
            i = header.index(column)
            cells[i] = str(float(cells[i]) * 1.6)
        shifted.append(",".join(cells))
    production = root / "production.csv"
    production.write_text("\n".join(shifted) + "\n", encoding="utf-8")
    out = io.StringIO()
    with redirect_stdout(out):
        monitor_command.main(
            str(registry),
            repo=repo,
            data=str(production),
            models=[MODEL],
            fmt="json",
            now=dt.datetime(2026, 11, 30, 5, 17, tzinfo=dt.UTC),
        )
    return registry, repo, out.getvalue()


def _audit_show(registry: Path, capsys: pytest.CaptureFixture[str], at: str | None = None) -> dict:
    """`mlops-ci audit show diabetes-risk --format json [--at TIME]`, as a user runs it."""
    capsys.readouterr()
    args = ["audit", "show", MODEL, "--registry", str(registry), "--format", "json"]
    assert cli.main([*args, *(["--at", at] if at else [])]) == 0
    return json.loads(capsys.readouterr().out)


def test_catalog_matches_audit_show_at_every_record(
    built: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry, repo, _ = built
    catalog, _ = build(registry, tmp_path / "site", repo=repo)
    model = next(m for m in catalog.models if m.name == MODEL)
    reg = open_registry(registry)
    shown = _audit_show(registry, capsys)

    serving = shown["serving"]
    assert model.serving == serving["registry_version"] == 2
    assert model.serving_since == serving["since"]
    release = model.release
    assert release is not None
    assert release.semver == serving["version"] == "1.1.0"
    assert [a.login for a in release.approvers] == [a["login"] for a in serving["approvers"]]
    assert release.pull_request is not None
    assert release.pull_request.number == serving["pull_request"]["number"] == 12
    assert release.pull_request.url == serving["pull_request"]["url"]
    assert release.test_passed is serving["results"]["test"]["passed"] is True
    assert release.metrics and release.metrics[0].value is not None
    assert [v.number for v in model.versions] == [1, 2, 3]

    history = shown["history"]
    assert [(e.action, e.registry_version, e.reason) for e in model.events] == [
        (r["action"], r.get("registry_version"), r.get("reason")) for r in history
    ]
    assert [e.action for e in model.events] == ["deploy", "deploy", "deploy", "refused",
                                                "rollback"]  # fmt: skip
    # "What served when": at each record's time, the catalog's interval names the version
    # that `audit show --at` names.
    for record in history:
        at = audit.parse_time(record["time"])
        expected = _audit_show(registry, capsys, record["time"])["serving"]
        covering = [
            s
            for s in model.served
            if audit.parse_time(s.start) <= at and (s.end is None or at < audit.parse_time(s.end))
        ]
        assert len(covering) == 1, (record, model.served)
        assert covering[0].number == expected["registry_version"], record
    assert catalog.audit is not None and catalog.audit.ok
    assert catalog.audit.records == audit.verify(reg).records == 5


def test_catalog_matches_the_monitors_json(built: tuple[Path, Path, str], tmp_path: Path) -> None:
    registry, repo, printed = built
    catalog, index = build(registry, tmp_path / "site", repo=repo)
    (entry,) = [m for m in json.loads(printed)["models"] if m["name"] == MODEL]
    model = next(m for m in catalog.models if m.name == MODEL)
    (run,) = model.monitor
    assert run.needs_attention is entry["needs_attention"] is True
    assert run.stale is entry["stale"]
    assert run.stale_warning is (entry["staleness"]["status"] == "warning")
    assert run.drift_share == pytest.approx(entry["drift"]["share"])
    assert run.dataset_drift is entry["drift"]["dataset_drift"]
    assert [(c.name, c.test, c.drifted) for c in run.columns] == [
        (c["name"], c["test"], c["drifted"]) for c in entry["drift"]["columns"]
    ]
    for mine, theirs in zip(run.columns, entry["drift"]["columns"], strict=True):
        assert mine.statistic == pytest.approx(theirs["statistic"])
        assert mine.threshold == pytest.approx(theirs["threshold"])
    assert set(run.drifted_columns) == set(SHIFTED)
    assert model.state == "attention"
    html = (index.parent / "models" / f"{MODEL}.html").read_text(encoding="utf-8")
    for column in entry["drift"]["columns"]:
        assert f">{column['name']}</text>" in html  # a heatmap row per column
    doc = json.loads((index.parent / "catalog.json").read_text(encoding="utf-8"))
    (mine,) = [m for m in doc["models"] if m["name"] == MODEL]
    assert mine["monitor"][0]["drift_share"] == pytest.approx(entry["drift"]["share"])
