"""The catalog in a real browser: Debian's chromium driven by Playwright (nothing downloads a
browser), pages opened from disk, console errors (CSP violations included) counted as failures.
Each test leaves screenshots of its pages in its tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from catalog_data import HOSTILE, render_naively, sample_registry
from system import CHROMIUM, CHROMIUM_ARGS, require

from mlops_ci.catalog import build


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(CHROMIUM.exists(), "Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Tab:
    """A page with every console error, uncaught exception and dialog it produced."""

    page: Any
    shots: Path
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def open(self, path: Path) -> None:
        self.page.goto(path.as_uri())
        self.page.wait_for_load_state("load")

    def shot(self, name: str) -> Path:
        target = self.shots / f"{name}.png"
        self.page.screenshot(path=str(target), full_page=True)
        return target


@pytest.fixture
def tab(browser: Any, tmp_path: Path) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    tab = Tab(page, tmp_path)
    page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: tab.errors.append(str(exc)))

    def on_dialog(dialog: Any) -> None:
        tab.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield tab
    context.close()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    sample_registry(tmp_path / "registry")
    _, index = build(tmp_path / "registry", tmp_path / "site")
    return index.parent


def _visible_names(tab: Tab) -> list[str]:
    return tab.page.eval_on_selector_all(
        "#models tbody tr:not([hidden])", "rows => rows.map(r => r.dataset.name)"
    )


def test_index_from_disk_filters_sorts_and_logs_no_errors(tab: Tab, site: Path) -> None:
    tab.open(site / "index.html")
    assert tab.shot("index").stat().st_size > 10_000
    page = tab.page
    assert len(_visible_names(tab)) == 3
    assert page.inner_text("#shown") == "3 of 3 models shown"

    page.fill("input[name=q]", "fraud")
    assert _visible_names(tab) == ["fraud-detector"]
    assert page.inner_text("#shown") == "1 of 3 models shown"
    page.fill("input[name=q]", "")
    page.select_option("select[name=state]", "ok")
    assert _visible_names(tab) == ["churn-predictor"]
    page.select_option("select[name=state]", "")
    page.select_option("select[name=owner]", "@acme/growth")
    assert sorted(_visible_names(tab)) == sorted(["churn-predictor", HOSTILE.lower()])
    page.select_option("select[name=owner]", "")
    page.select_option("select[name=risk]", "high")
    assert _visible_names(tab) == ["fraud-detector"]
    tab.shot("index-filtered")
    page.select_option("select[name=risk]", "")

    page.click("#models thead th:nth-child(10) button")  # p50: 0.02, 0.024, 0.05 ms
    assert _visible_names(tab) == [HOSTILE.lower(), "fraud-detector", "churn-predictor"]
    page.click("#models thead th:nth-child(10) button")
    assert _visible_names(tab) == ["churn-predictor", "fraud-detector", HOSTILE.lower()]
    assert page.get_attribute("#models thead th:nth-child(10)", "aria-sort") == "descending"
    assert tab.errors == []


def test_model_page_shows_history_charts_and_what_served_on_a_date(tab: Tab, site: Path) -> None:
    tab.open(site / "index.html")
    tab.page.click("text=fraud-detector >> nth=1")  # the table's link (the first is the alert)
    assert tab.page.url.endswith("/models/fraud-detector.html")
    page = tab.page
    events = page.locator("ol.timeline li")
    assert events.count() == 5
    assert "refused" in events.nth(2).inner_text()
    assert "approval by @mallory is stale" in events.nth(2).inner_text()
    assert "rollback" in events.nth(0).inner_text()
    charts = page.locator("svg.chart")
    assert charts.count() == 7
    for i in range(charts.count()):
        box = charts.nth(i).bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100
    assert page.locator("svg.chart circle.bad").count() == 1  # the run with dataset drift
    assert page.locator("svg.heat rect.h2, svg.heat rect.h3").count() == 4 + 2  # + legend

    page.fill("input[name=day]", "2026-11-05")
    assert page.inner_text("#served-answer") == "On 2026-11-05: v2 (1.1.0), then v3 (1.2.0)"
    assert page.locator("table.served tr.hit").count() == 2
    page.fill("input[name=day]", "2026-09-01")
    assert page.inner_text("#served-answer") == "Nothing served on 2026-09-01."
    tab.shot("fraud-detector")
    assert tab.errors == []


def test_model_name_holding_script_renders_as_text(tab: Tab, site: Path, tmp_path: Path) -> None:
    # The attack is armed: the same templates without autoescaping and CSP run its script.
    naive = site / "models" / "naive.html"
    naive.write_text(render_naively(tmp_path / "registry", HOSTILE, csp=False), encoding="utf-8")
    tab.open(naive)
    assert tab.dialogs, "the naive page should have run the injected script"
    # The CSP alone stops it too (and says so on the console): two independent layers.
    tab.dialogs.clear()
    tab.errors.clear()
    naive.write_text(render_naively(tmp_path / "registry", HOSTILE, csp=True), encoding="utf-8")
    tab.open(naive)
    assert tab.dialogs == []
    assert any("Content Security Policy" in e for e in tab.errors), tab.errors
    naive.unlink()

    tab.errors.clear()
    tab.open(site / "index.html")
    link = tab.page.locator("#models tbody tr td:first-child a").first
    assert link.inner_text() == HOSTILE
    link.click()
    page = tab.page
    assert page.locator("h1").inner_text().startswith(HOSTILE)
    assert page.locator("script").count() == 1
    assert page.locator("img").count() == 0
    assert "onerror=alert(1)" in page.locator("p.lead").inner_text()
    assert page.locator("a[href^='javascript:']").count() == 0
    tab.shot("hostile-model")
    assert tab.dialogs == [] and tab.errors == []


def test_pages_read_without_javascript(browser: Any, site: Path, tmp_path: Path) -> None:
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1400, "height": 900}
    )
    page = context.new_page()
    try:
        page.goto((site / "index.html").as_uri())
        assert page.locator("#models tbody tr").count() == 3
        assert not page.locator("#filters").is_visible()  # the filters need the script
        assert page.locator("#models thead th button").count() == 0
        page.screenshot(path=str(tmp_path / "index-no-js.png"), full_page=True)
        page.goto((site / "models" / "fraud-detector.html").as_uri())
        assert page.locator("ol.timeline li").count() == 5
        assert page.locator("table.served tbody tr").count() == 4
        assert page.locator("svg.chart").count() == 7
    finally:
        context.close()
