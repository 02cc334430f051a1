"""`mlops-ci catalog`: the facts it reads from a registry, what it writes, and how it fails."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from catalog_data import (
    HOSTILE,
    HOSTILE_TEXT,
    RegistryWriter,
    config_pbtxt,
    render_naively,
    sample_registry,
)

from mlops_ci import cli
from mlops_ci.catalog import build
from mlops_ci.catalog.charts import Limit, Series, format_number, line_chart, nice_ticks
from mlops_ci.catalog.facts import Event
from mlops_ci.catalog.read import served_intervals
from mlops_ci.catalog.site import safe_url

EXAMPLE_REPO = Path(__file__).resolve().parents[1] / "examples" / "model-repo"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    sample_registry(tmp_path / "registry")
    out = tmp_path / "site"
    assert cli.main(["catalog", "--registry", str(tmp_path / "registry"), "--out", str(out)]) == 0
    return out


def _models(site: Path) -> dict[str, dict]:
    doc = json.loads((site / "catalog.json").read_text(encoding="utf-8"))
    return {m["name"]: m for m in doc["models"]}


def test_catalog_json_holds_serving_version_history_and_monitor_state(site: Path) -> None:
    models = _models(site)
    fraud = models["fraud-detector"]
    assert fraud["serving"] == 2  # rolled back from 3
    assert fraud["serving_since"] == "2026-11-06T07:15:00Z"  # the rollback, not the release
    assert [v["semver"] for v in fraud["versions"]] == ["1.0.0", "1.1.0", "1.2.0"]
    assert fraud["owners"] == ["@acme/risk-ml", "@alice"]
    assert fraud["risk"] == "high"
    assert [e["action"] for e in fraud["events"]] == [
        "deploy",
        "deploy",
        "refused",
        "deploy",
        "rollback",
    ]
    refused = fraud["events"][2]
    assert refused["reason"] == "approval by @mallory is stale: review of an older commit"
    assert [(s["number"], s["end"]) for s in fraud["served"]] == [
        (1, "2026-10-20T14:30:00Z"),
        (2, "2026-11-05T10:00:00Z"),
        (3, "2026-11-06T07:15:00Z"),
        (2, None),
    ]
    assert fraud["state"] == "attention"
    last = fraud["monitor"][-1]
    assert last["drift_share"] == 0.75 and last["dataset_drift"] is True
    serving = fraud["versions"][1]
    assert [a["login"] for a in serving["approvers"]] == ["bob", "dave"]
    assert serving["pull_request"]["number"] == 12
    assert serving["latency"][0] == {
        "batch_size": 1,
        "p50_ms": 0.024,
        "p95_ms": pytest.approx(0.036),
        "p99_ms": 0.048,
        "throughput": pytest.approx(1000 / 0.024),
    }
    assert models["churn-predictor"]["state"] == "ok"
    assert models[HOSTILE]["state"] == "unmonitored"


def test_index_row_shows_who_shipped_it_its_metric_latency_and_state(site: Path) -> None:
    index = (site / "index.html").read_text(encoding="utf-8")
    row = re.search(r'<tr data-name="fraud-detector".*?</tr>', index, re.S)
    assert row is not None
    text = re.sub(r"<[^>]+>", " ", row.group(0))
    text = " ".join(text.split())
    for expected in (
        "v2 1.1.0",
        "latest v3",
        "2026-11-06",
        "#12",
        "bob, dave",
        "✓ passed",
        "accuracy 0.74",
        "24.0 µs",
        "attention",
        "drift 75%",
    ):
        assert expected in text, (expected, text)
    assert 'href="https://github.com/acme/models/pull/12"' in row.group(0)
    assert 'data-state="attention"' in row.group(0)


def test_model_page_has_timeline_charts_and_what_served_when(site: Path) -> None:
    page = (site / "models" / "fraud-detector.html").read_text(encoding="utf-8")
    assert page.count('<li class="ev ev-') == 5
    assert "false positives doubled after 1.2.0" in page
    # metrics (3), latency at two batch sizes, the drifted share, the per-column heatmap
    assert page.count('<svg class="chart') == 3 + 2 + 1 + 1
    assert page.count('<rect class="h') == 4 * 3 + 4  # 4 columns × 3 runs, and the legend
    assert "accuracy by version" in page and ">µs</text>" in page and "(psi)</text>" in page
    assert 'href="https://github.com/acme/models/actions/runs/955"' in page
    assert 'href="https://github.com/acme/models/commit/' in page
    assert page.count("<tr data-start=") == 4


def test_markup_from_records_is_escaped_everywhere(site: Path, tmp_path: Path) -> None:
    pages = [site / "index.html", *sorted((site / "models").glob("*.html"))]
    hostile_page = next(p for p in pages if p.name.startswith("model_"))
    assert "/" not in hostile_page.name.removeprefix("model_")  # the name never makes the path
    for path in pages:
        html = path.read_text(encoding="utf-8")
        assert html.count("<script") == 1, path  # ours only
        assert "<img" not in html and "<script>alert" not in html, path
    html = hostile_page.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;script&gt;" in html
    # The naive way (the same templates without autoescaping) would have injected it.
    raw = render_naively(tmp_path / "registry", HOSTILE, csp=True)
    assert HOSTILE_TEXT in raw and raw.count("<script") > 1


def test_javascript_urls_never_become_links(site: Path) -> None:
    assert safe_url("javascript:alert(1)") is None
    assert safe_url("data:text/html,<b>") is None
    assert safe_url("https://github.com/acme/models/actions/runs/1") is not None
    assert safe_url("https://x.test/a b") is None
    assert safe_url("//evil.test/x") is None
    for path in site.rglob("*.html"):
        assert "javascript:" not in path.read_text(encoding="utf-8")


def test_every_page_carries_a_strict_content_security_policy(site: Path) -> None:
    for path in site.rglob("*.html"):
        html = path.read_text(encoding="utf-8")
        csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
        assert csp is not None, path
        policy = csp.group(1).replace("&#39;", "'")
        assert "default-src 'none'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+';", policy)
        assert "http" not in policy  # no host is trusted, no CDN


@pytest.mark.parametrize("names", ["failed", "restored"])
def test_served_intervals_put_the_previous_version_back_after_a_failed_smoke_test(
    names: str,
) -> None:
    events = [
        Event("2026-01-01T00:00:00Z", "deploy", "1.0.0", 1),
        Event("2026-01-02T00:00:00Z", "deploy", "1.1.0", 2),
        # The record names the version that failed, or the one put back (as a rollback does).
        Event(
            "2026-01-02T00:05:00Z",
            "smoke-failed",
            *(("1.1.0", 2) if names == "failed" else ("1.0.0", 1)),
            reason="case 1 failed",
        ),
        Event("2026-01-03T00:00:00Z", "refused", "1.2.0", None, reason="no approval"),
        Event("2026-01-04T00:00:00Z", "deploy", "1.1.0", 2),  # repeated: nothing changes
    ]
    served = served_intervals(events, {1: "1.0.0", 2: "1.1.0"})
    assert [(s.number, s.start, s.end) for s in served] == [
        (1, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"),
        (2, "2026-01-02T00:00:00Z", "2026-01-02T00:05:00Z"),
        (1, "2026-01-02T00:05:00Z", "2026-01-04T00:00:00Z"),
        (2, "2026-01-04T00:00:00Z", None),
    ]


def test_broken_records_are_listed_and_the_rest_still_renders(tmp_path: Path) -> None:
    writer = sample_registry(tmp_path / "registry")
    (writer.root / "churn-predictor" / "1" / "release.json").write_text("{not json", "utf-8")
    bad_run = writer.root / ".mlops" / "monitor" / "fraud-detector" / "2026-12-01T000000Z.json"
    bad_run.write_text("[1, 2]", encoding="utf-8")
    with (writer.root / ".mlops" / "audit.jsonl").open("a", encoding="utf-8") as fh:
        fh.write("garbage\n")

    catalog, index = build(writer.root, tmp_path / "site")

    joined = "\n".join(catalog.problems)
    assert "churn-predictor/1/release.json" in joined
    assert "2026-12-01T000000Z.json: not a JSON object" in joined
    assert f"audit.jsonl:{len(writer.records) + 1}: not a JSON object" in joined
    html = index.read_text(encoding="utf-8")
    assert "3 records could not be read or are incomplete" in html
    names = [m.name for m in catalog.models]
    assert names == sorted([HOSTILE, "churn-predictor", "fraud-detector"])


def test_numbers_beyond_any_float_are_unknown_not_a_crash(tmp_path: Path) -> None:
    """JSON integers have no size limit and Python's json reads them all: a metric or a drift
    statistic of 1 and 400 zeros is as unknown as a string there, and so is a drifted share far
    beyond 1 (as a percentage it is infinite): never the end of the site."""
    writer = sample_registry(tmp_path / "registry")
    huge = 10**400
    path = writer.root / "churn-predictor" / "1" / "release.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    accuracy = next(c for c in doc["results"]["test"]["checks"] if c["name"] == "accuracy")
    accuracy["value"] = huge
    doc["results"]["bench"]["measurements"][0]["p50_ms"] = huge
    path.write_text(json.dumps(doc), encoding="utf-8")
    run = next((writer.root / ".mlops" / "monitor" / "churn-predictor").glob("*.json"))
    verdict = json.loads(run.read_text(encoding="utf-8"))
    verdict["drift"]["columns"][0]["statistic"] = huge
    verdict["drift"].update(share=1e307, dataset_drift=True)  # a share is a fraction: not this
    run.write_text(json.dumps(verdict), encoding="utf-8")

    _, index = build(writer.root, tmp_path / "site")

    churn = _models(index.parent)["churn-predictor"]
    (version,) = churn["versions"]
    assert next(m for m in version["metrics"] if m["name"] == "accuracy")["value"] is None
    assert version["latency"][0]["p50_ms"] is None
    assert churn["monitor"][-1]["columns"][0]["statistic"] is None
    assert churn["monitor"][-1]["drift_share"] is None
    assert (index.parent / "models" / "churn-predictor.html").is_file()


def test_a_record_holding_what_utf8_cannot_still_gives_every_page(tmp_path: Path) -> None:
    """`\\ud800` is valid JSON, and a lone surrogate is no UTF-8: a metric, a commit and a
    drifted column holding one are written as "?", and every model's page is there."""
    writer = sample_registry(tmp_path / "registry")
    path = writer.root / "churn-predictor" / "1" / "release.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["results"]["test"]["checks"][1]["name"] = "accuracy\ud800"
    doc["commit"] = "c0ffee\ud800"  # linked into the pull request's repository: a URL too
    path.write_text(json.dumps(doc), encoding="utf-8")  # ASCII: the escape, as JSON allows
    assert "\\ud800" in path.read_text(encoding="utf-8")
    run = next((writer.root / ".mlops" / "monitor" / "fraud-detector").glob("*.json"))
    verdict = json.loads(run.read_text(encoding="utf-8"))
    verdict["drift"]["columns"][0]["name"] = "bad \udcff byte"
    run.write_text(json.dumps(verdict), encoding="utf-8")

    _, index = build(writer.root, tmp_path / "site")

    site = index.parent
    churn = (site / "models" / "churn-predictor.html").read_text(encoding="utf-8")
    assert "accuracy?" in churn and "/commit/c0ffee%3F" in churn
    assert "bad ? byte" in (site / "models" / "fraud-detector.html").read_text(encoding="utf-8")
    assert len(list((site / "models").glob("*.html"))) == 3
    assert "accuracy?" in json.dumps(_models(site)["churn-predictor"], ensure_ascii=False)


def test_a_model_folder_whose_name_is_not_utf8_gets_its_page(tmp_path: Path) -> None:
    """A folder made by a tool that writes Latin-1 (`caf\\xe9`): Python names it with a lone
    surrogate, which has no UTF-8 to hash or to write; the model still gets a page."""
    writer = sample_registry(tmp_path / "registry")
    folder = os.path.join(os.fsencode(writer.root), b"caf\xe9")
    os.mkdir(folder)
    with open(os.path.join(folder, b"config.pbtxt"), "w", encoding="utf-8") as fh:
        fh.write(config_pbtxt("cafe", 1))

    catalog, index = build(writer.root, tmp_path / "site")

    (cafe,) = [m for m in catalog.models if m.name.startswith("caf")]
    page = index.parent / "models" / cafe.page
    assert cafe.page.startswith("model_") and page.is_file()
    assert "<h1>caf? " in page.read_text(encoding="utf-8")
    assert len(list(page.parent.glob("*.html"))) == len(catalog.models) == 4


def test_repo_models_not_in_the_registry_are_listed_as_not_deployed(tmp_path: Path) -> None:
    """...with their history: a first deploy that was refused (a forged approval) left a record
    and no registry folder, and the page said "No audit records for this model"."""
    writer = sample_registry(tmp_path / "registry")
    writer.refused("diabetes-risk", "1.0.0", "2026-11-29T10:00:00Z", "forged approval", pr=80)
    catalog, index = build(writer.root, tmp_path / "site", repo=EXAMPLE_REPO)
    states = {m.name: m.state for m in catalog.models}
    assert states["diabetes-risk"] == "not deployed"
    assert states["fraud-detector"] == "attention"
    diabetes = next(m for m in catalog.models if m.name == "diabetes-risk")
    assert diabetes.owners == ("@acme/risk-ml", "@alice") and diabetes.risk == "high"
    assert [(e.action, e.reason) for e in diabetes.events] == [("refused", "forged approval")]
    page = (index.parent / "models" / diabetes.page).read_text(encoding="utf-8")
    assert "forged approval" in page and "No audit records" not in page


def test_index_paginates_and_catalog_json_keeps_every_model(tmp_path: Path) -> None:
    from mlops_ci.catalog.read import read_catalog
    from mlops_ci.catalog.site import Stream
    from mlops_ci.registry import open_registry

    writer = RegistryWriter(tmp_path / "registry")
    for i in range(5):
        owners = (f"@owner-{i}",)
        writer.publish(f"model-{i}", 1, "1.0.0", "2026-11-01T00:00:00Z", pr=i + 1, owners=owners)
    catalog = read_catalog(open_registry(writer.root), "r")
    index = Stream(tmp_path / "site", page_rows=2).finish(catalog)  # no draft: a full render

    pages = sorted(p.name for p in index.parent.glob("index*.html"))
    assert pages == ["index-2.html", "index-3.html", "index.html"]
    assert index.read_text(encoding="utf-8").count("<tr data-name=") == 2
    third = (index.parent / "index-3.html").read_text(encoding="utf-8")
    assert third.count("<tr data-name=") == 1 and 'href="index.html"' in third
    assert len(_models(index.parent)) == 5
    # The filters apply to the page shown: its owner filter offers the owners of its rows
    # (the other pages' owners found nothing here, and made every page heavier).
    assert re.findall(r"<option>(@owner-\d)</option>", third) == ["@owner-4"]


def test_a_previous_catalog_is_replaced_and_a_foreign_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = sample_registry(tmp_path / "registry")
    out = tmp_path / "site"
    build(writer.root, out)
    (out / "models" / "gone.html").write_text("old", encoding="utf-8")
    (out / ".DS_Store").write_bytes(b"\0")  # left by macOS Finder: still a catalog, replaced
    build(writer.root, out)
    assert not (out / "models" / "gone.html").exists()
    assert (out / ".nojekyll").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    mine = tmp_path / "my-files"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", encoding="utf-8")
    code = cli.main(["catalog", "--registry", str(writer.root), "--out", str(mine)])
    assert code == 2
    err = capsys.readouterr().err
    assert "not empty and holds no catalog" in err and "Traceback" not in err
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "keep me"

    # A checkout that keeps a copy of catalog.json (for another tool, or a Pages docs folder)
    # is no catalog either: replacing it "as a whole" wiped everything else in it.
    shutil.copy(out / "catalog.json", mine / "catalog.json")
    code = cli.main(["catalog", "--registry", str(writer.root), "--out", str(mine)])
    assert code == 2 and "more than a catalog" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_a_missing_registry_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["catalog", "--registry", str(tmp_path / "nope"), "--out", str(tmp_path / "s")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mlops-ci catalog: error: {tmp_path / 'nope'}: no such registry folder"
    assert not (tmp_path / "s").exists()


def test_an_empty_registry_gives_an_empty_catalog(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    catalog, index = build(tmp_path / "registry", tmp_path / "site")
    assert catalog.models == ()
    assert "The registry holds no models yet." in index.read_text(encoding="utf-8")


def test_axis_ticks_are_round_and_labelled_with_units() -> None:
    ticks, step = nice_ticks(0.6412, 0.7389)
    assert step == 0.02 and ticks[0] == pytest.approx(0.64) and ticks[-1] == pytest.approx(0.74)
    assert [format_number(t, step) for t in ticks[:2]] == ["0.64", "0.66"]
    assert format_number(12500.0, 2500.0) == "12,500"
    assert format_number(0.25, 0.25) == "0.25"
    svg = str(
        line_chart(
            "p50 <by> version",
            ["v1", "v2"],
            [Series("p50", [0.02, 0.03])],
            "ms",
            limits=[Limit("max", 0.05)],
            from_zero=True,
        )
    )
    assert "p50 &lt;by&gt; version" in svg and ">ms</text>" in svg and "max 0.05" in svg
    assert svg.count("<circle") == 2 and "style=" not in svg


@pytest.mark.parametrize(
    "values",
    [(1.7e308,), (-1.7e308, 1.7e308), (0.0, 5e-324), (-5e-324,)],
    ids=["largest", "widest", "finest", "tiniest"],
)
def test_floats_at_their_limits_still_get_an_axis(values: tuple[float, ...]) -> None:
    """A metric's values are any finite floats: padding or rounding the axis past the largest
    float, or dividing the smallest span into five, must not end the catalog. Their labels fit
    the axis and a table cell: 1e300 written out is 401 characters."""
    ticks, step = nice_ticks(min(values), max(values))
    assert all(math.isfinite(t) for t in ticks) and step > 0 and len(ticks) >= 2
    svg = str(line_chart("m", [f"v{i}" for i in range(len(values))], [Series("m", values)], ""))
    assert svg.count("<circle") == len(values)
    labels = re.findall(r'class="ytick"[^>]*>([^<]*)<', svg)
    assert len(labels) == len(ticks) and max(map(len, labels)) <= 16, labels
    assert all(len(format_number(v)) <= 16 for v in values)


def test_run_writes_the_catalog_of_its_local_registry_and_prints_where(tmp_path: Path) -> None:
    import io
    import shutil

    from mlops_ci import pipeline

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE_REPO, repo, ignore=shutil.ignore_patterns(".mlops-ci"))
    said = io.StringIO()
    pipeline.run(repo, stages=["validate"], stream=said)
    assert f"Catalog: none yet (no model deployed to {repo / '.mlops-ci' / 'registry'})" in (
        said.getvalue()
    )

    sample_registry(repo / ".mlops-ci" / "registry")
    said = io.StringIO()
    pipeline.run(repo, stages=["validate"], stream=said)
    index = repo / ".mlops-ci" / "catalog" / "index.html"
    assert f"Catalog: {index} (7 models)" in said.getvalue()
    assert "fraud-detector" in index.read_text(encoding="utf-8")


def test_run_catalogs_the_registry_it_was_given(tmp_path: Path) -> None:
    # `run --registry R` deploys into R: its catalog must show R, not REPO/.mlops-ci/registry,
    # and goes beside the run's report, leaving the default registry's catalog as it was.
    import io
    import shutil

    from mlops_ci import pipeline

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE_REPO, repo, ignore=shutil.ignore_patterns(".mlops-ci"))
    default = RegistryWriter(repo / ".mlops-ci" / "registry")
    default.publish("house-prices", 1, "1.0.0", "2026-10-01T09:00:00Z")
    pipeline.run(repo, stages=["validate"], stream=io.StringIO())
    default_index = repo / ".mlops-ci" / "catalog" / "index.html"
    before = default_index.read_bytes()

    sample_registry(tmp_path / "elsewhere")
    said = io.StringIO()
    pipeline.run(repo, stages=["validate"], stream=said, registry=tmp_path / "elsewhere")
    index = repo / ".mlops-ci" / "run" / "catalog" / "index.html"
    assert f"Catalog: {index} (7 models)" in said.getvalue()
    assert "fraud-detector" in index.read_text(encoding="utf-8")
    assert default_index.read_bytes() == before


def test_every_page_says_whether_the_audit_trail_verifies(tmp_path: Path) -> None:
    writer = sample_registry(tmp_path / "registry")
    catalog, index = build(writer.root, tmp_path / "site")
    assert catalog.audit is not None and catalog.audit.ok and catalog.audit.records == 8
    assert "audit trail verified · 8 records" in index.read_text(encoding="utf-8")

    log = writer.root / ".mlops" / "audit.jsonl"
    log.write_bytes(log.read_bytes().replace(b"doubled", b"halved!"))  # rewrite history
    catalog, index = build(writer.root, tmp_path / "site")
    assert catalog.audit is not None and not catalog.audit.ok
    for page in [index, index.parent / "models" / "fraud-detector.html"]:
        html = page.read_text(encoding="utf-8")
        assert "audit trail FAILS verification at record 5" in html, page
    doc = json.loads((index.parent / "catalog.json").read_text(encoding="utf-8"))
    assert doc["audit"]["ok"] is False and doc["audit"]["first_bad"] == 5


def test_model_pages_render_the_same_in_forked_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_ci.catalog import site

    writer = RegistryWriter(tmp_path / "registry")
    for i in range(7):
        writer.publish(f"model-{i}", 1, "1.0.0", "2026-11-01T00:00:00Z", pr=i + 1)
    _, one = build(writer.root, tmp_path / "one")
    monkeypatch.setattr(site, "_workers", lambda count: 3)
    _, three = build(writer.root, tmp_path / "three")
    pages = sorted(p.name for p in (one.parent / "models").iterdir())
    assert len(pages) == 7
    assert sorted(p.name for p in (three.parent / "models").iterdir()) == pages
    stamp = re.compile(r"generated [^·]+·")  # the two builds may straddle a second
    for name in pages:
        first, second = (
            (d / "models" / name).read_text("utf-8") for d in (one.parent, three.parent)
        )
        assert stamp.sub("", first) == stamp.sub("", second)
    # catalog.json is joined from the workers' shares: every model once, in order.
    docs = [json.loads((d / "catalog.json").read_text("utf-8")) for d in (one.parent, three.parent)]
    assert [m["name"] for m in docs[1]["models"]] == [f"model-{i}" for i in range(7)]
    assert docs[0]["models"] == docs[1]["models"] and docs[1]["audit"]["ok"] is True
    assert not (three.parent / ".parts").exists()


def test_a_failing_page_worker_leaves_the_previous_catalog_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from mlops_ci.catalog import read, site

    writer = sample_registry(tmp_path / "registry")
    out = tmp_path / "site"
    build(writer.root, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    def broken(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(site, "_workers", lambda count: 2)
    monkeypatch.setattr(site, "_model_pages", broken)
    # One model per batch: the third batch finds the first worker failed and stops the reading.
    monkeypatch.setattr(read, "SINK_BATCH", 1)
    code = cli.main(["catalog", "--registry", str(writer.root), "--out", str(out)])

    assert code == 2
    err = capfd.readouterr().err
    assert "a page worker failed: OSError: disk full" in err
    assert "rendering the model pages failed" in err and "Traceback" not in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_s3_registry_gives_the_same_catalog_as_its_folder(
    registry_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """...and lists none of the prediction log, which grows by a file per model, day and
    flush: every catalog run listed all of it (a thousand S3 LIST requests per million)."""
    from mlops_ci.registry import FileStore, S3Store, open_registry

    local = sample_registry(tmp_path / "local").root
    logged = local / ".mlops" / "predictions" / "fraud-detector" / "date=2026-11-30"
    logged.mkdir(parents=True)
    (logged / "part-0.parquet").write_bytes(b"PAR1")
    listed: list[str] = []
    for store in (FileStore, S3Store):

        def recording(self: Any, *args: Any, _list: Any = store.list, **kwargs: Any) -> Any:
            keys = _list(self, *args, **kwargs)
            listed.extend(keys)
            return keys

        monkeypatch.setattr(store, "list", recording)
    if registry_uri.startswith("s3://"):
        reg = open_registry(registry_uri)
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            reg.write_bytes(path.relative_to(local).as_posix(), path.read_bytes())
    else:
        shutil.copytree(local, registry_uri)

    catalog, index = build(registry_uri, tmp_path / "site")
    expected, _ = build(local, tmp_path / "expected")

    def facts(doc: dict) -> dict:
        return {k: v for k, v in doc.items() if k not in ("generated", "registry")}

    assert facts(catalog.to_json()) == facts(expected.to_json())
    assert catalog.audit is not None and catalog.audit.ok
    assert "fraud-detector" in index.read_text(encoding="utf-8")
    assert any(key.startswith(".mlops/monitor/") for key in listed)
    assert not [key for key in listed if key.startswith(".mlops/predictions/")]


def test_the_audit_verdict_is_audit_verify_on_the_releases_already_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_ci import audit
    from mlops_ci.catalog import site
    from mlops_ci.registry import open_registry

    writer = sample_registry(tmp_path / "registry")
    reg = open_registry(writer.root)
    # fraud-detector v1 names churn-predictor's deploy record: the chain and head are intact and
    # the record is in the log, but it is not this release's. `audit verify` says so; a catalog
    # that only looked its anchor up in the log would call the trail verified.
    path = writer.root / "fraud-detector" / "1" / "release.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    other = json.loads((writer.root / "churn-predictor" / "1" / "release.json").read_text("utf-8"))
    doc["audit"]["sha256"] = other["audit"]["sha256"]
    path.write_text(json.dumps(doc), encoding="utf-8")

    expected = audit.verify(reg)
    assert not expected.ok and "not the deploy of fraud-detector version 1" in str(expected.problem)
    catalog, index = build(writer.root, tmp_path / "site")
    assert catalog.audit is not None
    assert (catalog.audit.ok, catalog.audit.problem, catalog.audit.first_bad) == (
        expected.ok,
        expected.problem,
        expected.first_bad,
    )
    assert "audit trail FAILS verification" in index.read_text(encoding="utf-8")
    # Rendered while the registry is read, the model pages first show the log's own verdict
    # (the chain is intact); the anchors' verdict at the end must replace it on every page.
    monkeypatch.setattr(site, "_workers", lambda count: 2)
    streamed, index = build(writer.root, tmp_path / "streamed")
    assert streamed.audit == catalog.audit
    for page in [index, *(index.parent / "models").iterdir()]:
        assert "audit trail FAILS verification" in page.read_text(encoding="utf-8"), page

    # What the catalog passes (the log and each release's anchor) gives audit.verify's verdict
    # without reading a release: a registry whose release.json files are gone still answers.
    releases = {
        m.name: {
            v.number: audit.Anchor(v.audit_sha256, v.onnx_sha256, v.artifact_sha256)
            for v in m.versions
        }
        for m in catalog.models
    }
    serving = {m.name: m.serving for m in catalog.models}
    log, head = reg.read_bytes(audit.LOG_KEY) or b"", reg.read_bytes(audit.HEAD_KEY)
    for release in writer.root.glob("*/*/release.json"):
        release.unlink()
    assert audit.verify(reg).ok  # nothing left to check against the log...
    given = audit.verify(reg, log=log, head=head, releases=releases, serving=serving)
    assert given == expected  # ...but the releases read before still show the swap


def test_a_version_a_killed_deploy_never_recorded_is_a_problem_not_a_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between its version folder and its record, a deploy leaves version 2 whole and
    unrecorded. The catalog does not list it among the versions (nobody approved it as far as
    the log knows; serve and rollback do not know it either), says why, and still verifies."""
    from deploy_models import LOCAL, candidate

    from mlops_ci import audit, deploy
    from mlops_ci.registry import open_registry

    reg = open_registry(tmp_path / "registry")
    deploy.publish(reg, candidate("m0", "1.0.0"), LOCAL)

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # as if killed right here

    with monkeypatch.context() as patch:
        patch.setattr(audit, "commit", killed)
        with pytest.raises(KeyboardInterrupt):
            deploy.publish(reg, candidate("m0", "1.1.0", salt="b"), LOCAL)
    assert (tmp_path / "registry" / "m0" / "2" / "release.json").is_file()
    catalog, index = build(tmp_path / "registry", tmp_path / "site")
    (model,) = catalog.models
    assert [v.number for v in model.versions] == [1] and model.serving == 1
    assert catalog.audit is not None and catalog.audit.ok
    assert any("m0/2: staged by a deploy that did not record it" in p for p in catalog.problems)
    assert "1 record could not be read or is incomplete" in index.read_text(encoding="utf-8")

    deploy.publish(reg, candidate("m0", "1.1.0", salt="b"), LOCAL)  # the re-run records it
    catalog, _ = build(tmp_path / "registry", tmp_path / "site")
    assert [v.number for v in catalog.models[0].versions] == [1, 2] and not catalog.problems


def test_monitor_run_reads_a_due_soon_staleness_as_monitor_writes_it() -> None:
    # The verdict file is Verdict.to_json(): "stale" is a bool, the status and reason live
    # under "staleness". A model due in 10 days must show "due soon", not "fresh".
    import datetime as dt

    from mlops_ci.catalog.read import monitor_run
    from mlops_ci.catalog.site import monitor_badges
    from mlops_ci.monitor.staleness import judge

    now = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    st = judge(now - dt.timedelta(days=80), refresh_by=None, max_age_days=90, now=now)
    assert st.status == "warning"
    doc = {"version": "1.0.0", "needs_attention": False, "stale": st.stale}
    doc["staleness"] = st.to_json()
    run = monitor_run("m", ".mlops/monitor/m/2026-11-30T00-00-00Z.json", doc)
    assert run.stale is False
    assert run.stale_warning is True
    assert run.stale_detail == st.reason
    assert "due soon" in monitor_badges(run)


def test_catalog_reads_every_provenance_key_that_deploy_writes(tmp_path: Path) -> None:
    # release.json and the audit records as deploy.publish and deploy.refuse write them (no
    # hand-written record): the pull request, its approvers and the run are all on the page.
    from deploy_models import candidate

    from mlops_ci import deploy
    from mlops_ci.catalog.facts import Approver, PullRequest
    from mlops_ci.catalog.read import read_catalog
    from mlops_ci.registry import open_registry

    commit = "c0ffee" + "0" * 34
    url = "https://github.com/acme/models/pull/12"
    prov = deploy.Provenance(
        source="github",
        actor="github-actions[bot]",
        commit=commit,
        pull_request={"number": 12, "url": url, "head_sha": commit},
        approvers=(
            {"login": "bob", "review_id": 901, "commit": commit, "time": "2026-11-01T00:00:00Z"},
        ),
        run_url="https://github.com/acme/models/actions/runs/1200",
    )
    reg = open_registry(tmp_path / "registry")
    deploy.publish(reg, candidate(), prov)
    deploy.refuse(reg, ["iris"], "a later push lost its approval", prov)
    (model,) = read_catalog(reg, "registry").models
    (version,) = model.versions
    assert version.pull_request == PullRequest(12, url, commit)
    assert version.approvers == (Approver("bob", 901, commit, "2026-11-01T00:00:00Z"),)
    assert version.run_url == prov.run_url
    assert [e.action for e in model.events] == ["deploy", "refused"]
    for event in model.events:
        assert event.pull_request == PullRequest(12, url, commit)
        assert event.approvers == ("bob",)
        assert event.run_url == prov.run_url


def test_an_out_folder_that_cannot_be_made_is_a_usage_error(tmp_path: Path, capsys) -> None:
    sample_registry(tmp_path / "registry")
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    out = tmp_path / "a-file" / "site"
    assert cli.main(["catalog", "--registry", str(tmp_path / "registry"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and str(out) in err


@pytest.mark.parametrize(
    "text",
    [
        "metadata:\n  name: iris\n  description: 2027-02-30\n  owners: ['@a']\nspec: {}\n",
        "spec:\n  when: 2027-02-30\nmetadata: {name: iris, owners: ['@a'], risk: low}\n",
    ],
    ids=["in the metadata block", "elsewhere"],
)
def test_a_manifest_text_like_an_impossible_date_is_read_not_a_crash(text: str) -> None:
    """`2027-02-30` is text to validate (a valid manifest may hold it), where yaml's loaders
    raise ValueError: reading such a manifest's facts stopped the whole catalog."""
    from mlops_ci.catalog.read import manifest_facts

    facts = manifest_facts(text)
    assert facts["name"] == "iris" and facts["owners"] == ("@a",)


@pytest.mark.parametrize(
    "tamper",
    ["a release copied into the next folder", "a release that is not JSON"],
)
def test_the_audit_verdict_never_says_verified_where_audit_verify_does_not(
    tmp_path: Path, tamper: str
) -> None:
    """The header's verdict is `audit verify`'s. fraud-detector/2's release copied over /3's
    names record 2 as its own: read by the number the record claims (2, not its folder's 3),
    the anchor checked out and the trail showed as verified. A release that cannot be read
    holds an anchor nobody checked: `audit verify` stops on it, and the header must not say
    verified either."""
    from mlops_ci import audit
    from mlops_ci.registry import open_registry

    writer = sample_registry(tmp_path / "registry")
    folder = writer.root / "fraud-detector"
    if tamper.startswith("a release copied"):
        shutil.copy(folder / "2" / "release.json", folder / "3" / "release.json")
        expected = audit.verify(open_registry(writer.root))
        assert not expected.ok and "version 3" in str(expected.problem)
    else:
        (folder / "3" / "release.json").write_text("{not json", encoding="utf-8")

    catalog, index = build(writer.root, tmp_path / "site")

    assert catalog.audit is not None and not catalog.audit.ok
    assert "fraud-detector/3/release.json" in str(catalog.audit.problem)
    assert "audit trail FAILS verification" in index.read_text(encoding="utf-8")
    fraud = next(m for m in catalog.models if m.name == "fraud-detector")
    assert len({v.number for v in fraud.versions}) == len(fraud.versions)  # no two "v2"


def test_records_nested_too_deep_or_numbered_in_odd_digits_are_problems_not_a_crash(
    tmp_path: Path,
) -> None:
    """JSON nested deeper than Python's recursion limit raises RecursionError, not ValueError,
    and "²" passes str.isdigit() but not int(): an audit line, a release or a monitor file
    holding either stopped the whole catalog with a traceback."""
    writer = sample_registry(tmp_path / "registry")
    deep = "[" * 100_000
    (writer.root / "churn-predictor" / "1" / "release.json").write_text(deep, encoding="utf-8")
    run = next((writer.root / ".mlops" / "monitor" / "fraud-detector").glob("*.json"))
    run.write_text(deep, encoding="utf-8")
    writer.audit(
        action="rollback",
        model="fraud-detector",
        version="1.0.0",
        registry_version="²",
        pull_request={"number": "١٢", "url": "https://github.com/acme/models/pull/12"},
        time="2026-11-30T06:00:00Z",
    )
    with (writer.root / ".mlops" / "audit.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(deep + "\n")

    catalog, index = build(writer.root, tmp_path / "site")

    joined = "\n".join(catalog.problems)
    assert "churn-predictor/1/release.json" in joined and run.name in joined
    assert f"audit.jsonl:{len(writer.records) + 1}: not a JSON object" in joined
    fraud = next(m for m in catalog.models if m.name == "fraud-detector")
    odd = fraud.events[-1]
    assert odd.registry_version is None and odd.pull_request is not None
    assert odd.pull_request.number is None  # Arabic-Indic digits are no record's number either
    assert len(list((index.parent / "models").glob("*.html"))) == 3


def test_a_plain_name_never_takes_the_page_of_a_hashed_one(tmp_path: Path) -> None:
    """A folder whose name is not plain gets a page named by its hash; a valid manifest name
    `model-<that hash>` got the same file name, and one model's page overwrote the other's."""
    import hashlib

    writer = sample_registry(tmp_path / "registry")
    twin = "model-" + hashlib.sha256(HOSTILE.encode()).hexdigest()[:16]
    writer.publish(twin, 1, "1.0.0", "2026-11-01T00:00:00Z", pr=5, description="The impostor.")

    catalog, index = build(writer.root, tmp_path / "site")

    pages = [m.page for m in catalog.models]
    assert len(set(pages)) == len(pages) == 4
    hostile = next(m for m in catalog.models if m.name == HOSTILE)
    html = (index.parent / "models" / hostile.page).read_text(encoding="utf-8")
    assert "The impostor." not in html and "&lt;script&gt;alert" in html


def test_repository_manifests_are_read_as_validate_reads_them(tmp_path: Path) -> None:
    """`--repo` is a checkout of what pull requests merged: a `model.yaml` that is a symlink
    out of the checkout was read (one to /dev/zero until memory ran out: not done here, as
    this test would do it to the machine with the fix undone), so was one of any size, and
    owners made of YAML aliases (which validate refuses) grew exponentially as text."""
    from mlops_ci.manifest.safe_yaml import MAX_FILE_BYTES

    writer = sample_registry(tmp_path / "registry")
    repo = tmp_path / "repo"
    for name in ("huge", "outside", "bomb"):
        (repo / name).mkdir(parents=True)
    padding = "x" * (MAX_FILE_BYTES + 1)
    (repo / "huge" / "model.yaml").write_text(
        f"metadata:\n  name: huge\n  description: {padding}\n", encoding="utf-8"
    )
    secret = tmp_path / "secret.yaml"
    secret.write_text("metadata: {name: leaked, description: s3cr3t}\n", encoding="utf-8")
    (repo / "outside" / "model.yaml").symlink_to(secret)
    bomb = "metadata:\n  name: bomb\n  l0: &l0 [aaaaaaaaaa, aaaaaaaaaa, aaaaaaaaaa]\n"
    for level in range(1, 7):
        bomb += f"  l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]\n"
    bomb += "  owners: ['@acme/ml', *l6]\n"  # 3 million strings as one owner's text
    (repo / "bomb" / "model.yaml").write_text(bomb, encoding="utf-8")

    catalog, _ = build(writer.root, tmp_path / "site", repo=repo)

    models = {m.name: m for m in catalog.models}
    assert "leaked" not in models and "huge" not in models
    assert models["bomb"].owners == ("@acme/ml",)
    joined = "\n".join(catalog.problems)
    assert "huge/model.yaml: larger than" in joined and "outside/model.yaml: a symlink" in joined


def test_times_with_an_offset_are_shown_in_utc() -> None:
    """Pages label every time UTC; a record's time with an offset (ISO 8601 allows it, and
    `audit show --at` converts it) was shown with its local clock reading as if UTC, two hours
    off the date box's answer for the same record."""
    from mlops_ci.catalog.site import when

    assert when("2026-11-30T16:05:00+02:00") == "2026-11-30 14:05 UTC"
    assert when("2026-12-01T01:30:00+02:00", with_time=False) == "2026-11-30"
    assert when("2026-11-30T14:05:00.123456Z") == "2026-11-30 14:05 UTC"
    # In UTC these fall before year 1 and after 9999: shown as written, not a crash.
    assert when("0001-01-01T00:00:00+14:00") == "0001-01-01T00:00:00+14:00"
    assert when("9999-12-31T23:59:59-14:00") == "9999-12-31T23:59:59-14:00"


@pytest.mark.parametrize(
    ("pr_url", "repository"),
    [
        ("https://github.com/acme/models/pull/12", "https://github.com/acme/models"),
        ("https://github.com/acme/pull/pull/3", "https://github.com/acme/pull"),
        ("https://github.com/pull/models/pull/3", "https://github.com/pull/models"),
    ],
)
def test_commit_and_deployments_links_point_into_the_pull_requests_repository(
    pr_url: str, repository: str
) -> None:
    """The repository is the pull request's URL up to its last `/pull/`: cut at the first, a
    repository (or an owner) named `pull` linked commits to another repository."""
    from mlops_ci.catalog.facts import PullRequest
    from mlops_ci.catalog.site import commit_link, repo_url

    assert repo_url(pr_url) == repository
    link = str(commit_link("c0ffee" * 6, PullRequest(3, pr_url)))
    assert f'href="{repository}/commit/{"c0ffee" * 6}"' in link


def test_a_value_just_past_its_bound_never_reads_as_the_bound(tmp_path: Path) -> None:
    """Three significant digits wrote an accuracy of 0.6496 that failed its min 0.65 as
    "accuracy 0.65 ✗ failed", and a drift statistic of 0.19996 under its threshold 0.2 as
    "0.2 0.2 no": a value is written with the digits that tell it from its bound."""
    from catalog_data import verdict

    writer = RegistryWriter(tmp_path / "registry")
    writer.publish("edge", 1, "1.0.0", "2026-11-01T00:00:00Z", pr=1, accuracy=0.6496)
    writer.monitor("edge", "2026-11-30T05:17:00Z", verdict("edge", "1.0.0", {"age": 0.19996}))

    _, index = build(writer.root, tmp_path / "site")

    assert "accuracy 0.6496</td>" in index.read_text(encoding="utf-8")
    page = (index.parent / "models" / "edge.html").read_text(encoding="utf-8")
    assert "✗ failed</span> · accuracy[sex=female] 0.64 · accuracy 0.6496 ·" in page
    assert "<td>0.19996</td><td>0.2</td><td>no</td>" in page


def test_only_the_newest_monitor_verdicts_are_read_and_shown(tmp_path: Path) -> None:
    """One verdict file per model per run, never deleted: the catalog read every one of them
    (3.65 million a year for a daily run over 10,000 models) into every build and catalog.json.
    Now it lists them, then reads the newest MONITOR_RUNS per model only."""
    import datetime as dt

    from catalog_data import verdict

    from mlops_ci.catalog.read import MONITOR_RUNS, read_catalog
    from mlops_ci.registry import open_registry

    writer = RegistryWriter(tmp_path / "registry")
    writer.publish("daily", 1, "1.0.0", "2026-01-01T00:00:00Z", pr=1)
    start = dt.datetime(2026, 1, 2, 5, 17, tzinfo=dt.UTC)
    days = MONITOR_RUNS + 30
    for day in range(days):
        time = (start + dt.timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%SZ")
        writer.monitor("daily", time, {**verdict("daily", "1.0.0", {"age": 0.01}), "time": time})
    reg = open_registry(writer.root)
    read: list[str] = []
    plain_read = reg.read_bytes

    def counted(key: str) -> bytes | None:
        read.append(key)
        return plain_read(key)

    reg.read_bytes = counted  # type: ignore[method-assign]
    (model,) = read_catalog(reg, "registry").models
    assert len([k for k in read if k.startswith(".mlops/monitor/")]) == MONITOR_RUNS
    newest = (start + dt.timedelta(days=days - 1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(model.monitor) == MONITOR_RUNS and model.monitor[-1].time == newest
    oldest = (start + dt.timedelta(days=days - MONITOR_RUNS)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert model.monitor[0].time == oldest


def test_a_model_whose_folder_was_removed_keeps_its_audit_history(tmp_path: Path) -> None:
    """The registry folder of a deployed model was removed: the catalog dropped the model and
    its whole history, though the audit log still holds every deploy of it."""
    writer = sample_registry(tmp_path / "registry")
    writer.refused("ghost", "1.0.0", "2026-11-03T00:00:00Z", "no approvals", pr=99)
    shutil.rmtree(writer.root / "churn-predictor")

    catalog, index = build(writer.root, tmp_path / "site")

    models = _models(index.parent)
    gone = models["churn-predictor"]
    assert (gone["state"], gone["serving"], gone["removed"]) == ("removed", None, True)
    assert [(e["action"], e["registry_version"]) for e in gone["events"]] == [("deploy", 1)]
    assert [(s["number"], s["semver"]) for s in gone["served"]] == [(1, "0.3.0")]
    assert gone["monitor"] and models["fraud-detector"]["removed"] is False
    page = (index.parent / gone["page"]).read_text(encoding="utf-8")
    assert "removed from the registry" in page and "v1 (0.3.0)" in page
    # when it stopped serving is not recorded: no "what served on" answer past it
    assert "its removal (not recorded)" in page and 'id="served-at"' not in page
    assert catalog.audit is not None and catalog.audit.ok  # the log itself is whole
    # Only deployed models: a name the log holds refusals of alone was never in the registry.
    assert sorted(models) == sorted([HOSTILE, "churn-predictor", "fraud-detector"])
