"""Renders a `Catalog` as a static site: index pages, one page per model, catalog.json.

Jinja2 with autoescaping renders every string, since each one comes from a pull request, a
release record or a log. The CSS and the script are inlined and allowed by their sha256 in a
strict Content-Security-Policy, so a page works from disk (file://), from GitHub Pages, and
nothing injected into it can run.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from markupsafe import Markup, escape

from mlops_ci.catalog.charts import Cell, Limit, Series, format_number, heatmap, line_chart
from mlops_ci.catalog.facts import STATES, Catalog, Model, MonitorRun, PullRequest
from mlops_ci.catalog.read import no_gc
from mlops_ci.errors import MlopsCiError, UsageError
from mlops_ci.report import units

if TYPE_CHECKING:
    import jinja2

_HERE = Path(__file__).resolve().parent
#: Rows per index page. A row weighs ~800 bytes, so a page is about 0.25 MB and a browser
#: parses it and has it interactive well within a second even on a busy machine (1,000 rows took
#: over a second); past this many models the index paginates (catalog.json holds them all).
PAGE_ROWS = 250


@dataclass(frozen=True)
class Assets:
    css: str
    js: str
    csp: str


def _sha256_source(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
    return f"'sha256-{digest}'"


@cache
def assets() -> Assets:
    css = (_HERE / "static" / "catalog.css").read_text(encoding="utf-8")
    js = (_HERE / "static" / "catalog.js").read_text(encoding="utf-8")
    # Nothing loads from anywhere (default-src 'none'); only this script and this stylesheet
    # run, by hash; no base URL or form target can be injected.
    csp = (
        f"default-src 'none'; script-src {_sha256_source(js)}; style-src {_sha256_source(css)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    return Assets(css, js, csp)


# --- template helpers --------------------------------------------------------------------------


_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\s]")


@lru_cache(maxsize=4096)  # a page checks the same few URLs several times
def safe_url(url: str | None) -> str | None:
    """`url` when it is a plain http(s) link, else None: a `javascript:` or `data:` URL from a
    release record must never become a clickable link."""
    if not url or _UNSAFE_URL_CHARS.search(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def repo_url(pr_url: str | None) -> str | None:
    """The repository's web URL, from a pull request's (`…/owner/repo/pull/N`): the path up to
    its last `/pull/`, since an owner or a repository may be named `pull` itself."""
    url = safe_url(pr_url)
    if url is None:
        return None
    parts = urlsplit(url)
    repo, found, _ = parts.path.rpartition("/pull/")
    return f"{parts.scheme}://{parts.netloc}{repo}" if found and repo.strip("/") else None


@lru_cache(maxsize=65536)  # a page shows the same few times many times over
def when(value: str | None, with_time: bool = True) -> str:
    """An ISO 8601 time as `2026-11-30 14:05 UTC` (or the date only)."""
    if not value:
        return "–"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is not None:  # 16:05+02:00 is 14:05 UTC, as `audit show --at` reads it
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):  # not a time, or one beyond year 1 or 9999 in UTC
        return value
    return moment.strftime("%Y-%m-%d %H:%M UTC" if with_time else "%Y-%m-%d")


def num(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else format_number(value)


def num_beside(value: float | None, *bounds: float | None) -> str:
    """`value` as `num` writes it, with more digits where that reads the same as a bound it is
    not equal to: an accuracy of 0.6496 failing its min 0.65 must not read "0.65"."""
    text = num(value)
    if value is None or text == "–":
        return text
    apart = [b for b in bounds if b is not None and math.isfinite(b) and b != value]
    if not any(num(b) == text for b in apart):
        return text
    digits = 4
    while digits < 17 and any(f"{value:.{digits}g}" == f"{b:.{digits}g}" for b in apart):
        digits += 1
    return f"{value:.{digits}g}"


def ms(value: float | None) -> str:
    """A latency recorded in milliseconds, shown in µs as the pull-request report shows it."""
    return units.microseconds(value)


# The helpers below build small HTML fragments in Python: faster than Jinja macros (a page
# calls them dozens of times), and every piece of text in them goes through escape().


def _badge(kind: str, text: str) -> Markup:
    return Markup(f'<span class="badge st-{escape(kind)}">{escape(text)}</span>')  # noqa: S704


def state_badge(state: str) -> Markup:
    return _badge(state.replace(" ", "-"), state)


def pr_link(pr: PullRequest | None) -> Markup | str:
    """`#12` linked to the pull request when its URL is a plain http(s) one."""
    if pr is None:
        return "–"
    label = f"#{pr.number}" if pr.number is not None else "pull request"
    url = safe_url(pr.url)
    if url is None:
        return label
    return Markup(f'<a href="{escape(url)}">{escape(label)}</a>')  # noqa: S704


def commit_link(sha: str | None, pr: PullRequest | None) -> Markup | str:
    """The commit's short SHA, linked into the repository of its pull request when known."""
    if not sha:
        return "–"
    short = escape(sha[:10])
    base = repo_url(pr.url) if pr is not None else None
    if base is None:
        return Markup(f"<code>{short}</code>")  # noqa: S704
    href = escape(f"{base}/commit/{quote(sha, safe='', errors='replace')}")
    return Markup(f'<a href="{href}"><code>{short}</code></a>')  # noqa: S704


def monitor_badges(run: MonitorRun | None) -> Markup:
    """Staleness, drift, prediction drift and decay of a monitor run, as badges."""
    if run is None:
        return _badge("unmonitored", "no monitor run")
    parts = []
    if run.stale:
        parts.append(_badge("attention", "stale"))
    elif run.stale_warning:
        parts.append(_badge("warning", "due soon"))
    else:
        parts.append(_badge("ok", "fresh"))
    if run.dataset_drift:
        share = f" {round(run.drift_share * 100)}%" if run.drift_share is not None else ""
        parts.append(_badge("attention", f"drift{share}"))
    elif run.drifted_columns:
        parts.append(_badge("warning", f"{len(run.drifted_columns)} col. drifted"))
    else:
        parts.append(_badge("ok", "no drift"))
    if run.prediction_drift:
        parts.append(_badge("attention", "prediction drift"))
    if run.decay:
        parts.append(_badge("attention", "decay"))
    return Markup(" ").join(parts)


def environment() -> jinja2.Environment:
    """The templates' environment: every string is escaped unless it is `Markup` we built."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,  # every template, whatever its file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, num=num, num_beside=num_beside, ms=ms)
    env.globals.update(
        safe_url=safe_url,
        repo_url=repo_url,
        states=STATES,
        state_badge=state_badge,
        pr_link=pr_link,
        commit_link=commit_link,
        monitor_badges=monitor_badges,
    )
    return env


# --- charts of one model --------------------------------------------------------------------


def model_charts(model: Model) -> dict[str, list[Markup]]:
    """The metric, latency and drift charts of a model page."""
    versions = model.versions
    labels = [f"v{v.number} ({v.semver})" for v in versions]
    metric_names: list[str] = []
    for v in versions:
        metric_names += [m.name for m in v.metrics if m.name not in metric_names]
    metrics = []
    for k, name in enumerate(metric_names):
        found = [next((m for m in v.metrics if m.name == name), None) for v in versions]
        latest = next((m for m in reversed(found) if m is not None), None)
        limits = []
        if latest is not None and latest.min is not None:
            limits.append(Limit("min", latest.min))
        if latest is not None and latest.max is not None:
            limits.append(Limit("max", latest.max))
        bad = frozenset(i for i, m in enumerate(found) if m is not None and not m.passed)
        values = [m.value if m else None for m in found]
        metrics.append(
            line_chart(
                f"{name} by version",
                labels,
                [Series(name, values, bad)],
                "score",
                limits=limits,
                ident=f"m{k}",
            )
        )
    latency = []
    batches = sorted({m.batch_size for v in versions for m in v.latency})
    for k, batch in enumerate(batches[:3]):
        rows = [next((m for m in v.latency if m.batch_size == batch), None) for v in versions]
        # In µs, the report's unit for latency (the records hold milliseconds).
        p50 = [m.p50_ms * 1e3 if m and m.p50_ms is not None else None for m in rows]
        p95 = [m.p95_ms * 1e3 if m and m.p95_ms is not None else None for m in rows]
        series = [Series("p50", p50)]
        if any(v is not None for v in p95):
            series.append(Series("p95", p95))
        latency.append(
            line_chart(
                f"ONNX latency at batch size {batch}",
                labels,
                series,
                "µs",
                from_zero=True,
                ident=f"l{k}",
            )
        )
    drift = []
    runs = model.monitor
    if runs:
        days = [when(r.time, with_time=False) for r in runs]
        # The date says enough unless two runs fall on one day.
        run_labels = days if len(set(days)) == len(days) else [when(r.time) for r in runs]
        shares = [r.drift_share for r in runs]
        if any(s is not None for s in shares):
            flagged = frozenset(i for i, r in enumerate(runs) if r.dataset_drift)
            bar = runs[-1].share_threshold
            limits = [Limit("dataset drift at", bar * 100)] if bar is not None else []
            drift.append(
                line_chart(
                    "Share of drifted columns per monitor run",
                    run_labels,
                    [
                        Series(
                            "share", [s * 100 if s is not None else None for s in shares], flagged
                        )
                    ],
                    "% of columns",
                    limits=limits,
                    from_zero=True,
                    ident="ds",
                )
            )
        columns: list[str] = []
        for r in runs:
            columns += [c.name for c in r.columns if c.name not in columns]
        if columns:
            by_run = [{c.name: c for c in r.columns} for r in runs]
            cells = [
                [
                    Cell(c.statistic, c.threshold, c.drifted) if c is not None else None
                    for c in (found.get(column) for found in by_run)
                ]
                for column in columns
            ]
            tests = {c.test for r in runs for c in r.columns if c.test}
            unit = ", ".join(sorted(tests)) or "statistic"
            drift.append(
                heatmap(f"Drift statistic per column and run ({unit})", columns, run_labels, cells)
            )
    return {"metrics": metrics, "latency": latency, "drift": drift}


# --- the site -------------------------------------------------------------------------------


def _index_pages(count: int, page_rows: int) -> list[str]:
    pages = max(1, math.ceil(count / page_rows))
    return ["index.html", *(f"index-{n}.html" for n in range(2, pages + 1))]


#: How every catalog.json starts (`Catalog.to_json`, written compact, "catalog" first).
_CATALOG_START = b'{"catalog":1,'
#: The names a catalog's folder holds: what `_render` writes there, and nothing else (but the
#: file macOS's Finder leaves in a folder it showed).
_SITE_ENTRY = re.compile(r"catalog\.json|\.nojekyll|index(-[1-9][0-9]*)?\.html|models|\.DS_Store")


def _is_previous_catalog(out: Path) -> bool:
    """Whether `out` holds a catalog and nothing else, so replacing it as a whole loses
    nothing: a checkout (or a docs folder) that also holds a copy of catalog.json is not one."""
    try:
        # Its first bytes, as `_render` writes them: parsing the whole file to check them takes
        # about 3 s and 0.9 GB for the 100 MB catalog.json of 10,000 models.
        with (out / "catalog.json").open("rb") as fh:
            start = fh.read(len(_CATALOG_START))
        entries = list(out.iterdir())
        pages = list((out / "models").iterdir()) if (out / "models").is_dir() else []
    except OSError:
        return False
    if start != _CATALOG_START:
        return False
    return all(
        _SITE_ENTRY.fullmatch(e.name) and e.is_dir() == (e.name == "models") for e in entries
    ) and all((p.suffix == ".html" or p.name == ".DS_Store") and p.is_file() for p in pages)


def _stage(out: Path) -> tuple[Path, Path]:
    """`out` checked, and an empty staging folder beside it with the site's folders."""
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_previous_catalog(out):
        raise UsageError(
            f"{out}: the folder is not empty and holds no catalog, or more than a catalog; give "
            "an empty or new folder (a previous catalog there is replaced as a whole)"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:  # a file on the way, a read-only place: the user's to fix
        raise UsageError(f"{out}: cannot write the catalog there: {exc.strerror}") from None
    (staging / "models").mkdir()
    (staging / _PARTS).mkdir()
    return out, staging


def _publish(staging: Path, out: Path) -> Path:
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        out.replace(old / "site")
        staging.replace(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.replace(out)
    return out / "index.html"


class Stream:
    """The site written while the registry is still being read (`read_catalog`'s `sink`):
    each batch of models read is rendered (pages and catalog.json entries) in a forked worker,
    which inherits the models, while this process reads the next batch. On 2 cores this hides
    most of the reading time behind the rendering.

    A page's header shows the catalog's size, time and audit verdict before the last model is
    read: `begin` gets them, with the log's own verdict (chain and head). The releases' anchors
    are checked when all are read; should that change the verdict (a tampered registry), or
    anything else in the header, `finish` renders every page again.
    """

    def __init__(self, out: Path, *, page_rows: int = PAGE_ROWS) -> None:
        self.out, self.staging = _stage(out)
        self.page_rows = page_rows
        self.draft: Catalog | None = None
        self.total = 0
        self.workers = 1
        self.children: list[Any] = []  # running
        self.done: list[Any] = []  # joined
        self.streamed = False

    def begin(self, draft: Catalog, total: int) -> None:
        self.draft, self.total = draft, total
        self.workers = _workers(total)

    def models(self, start: int, models: Sequence[Model]) -> None:
        if self.workers < 2 or self.draft is None:
            return  # a small catalog renders at the end, in this process
        self.streamed = True
        while len(self.children) >= self.workers:  # one worker per core at most
            oldest = self.children.pop(0)
            oldest.join()
            self.done.append(oldest)
            if oldest.exitcode != 0:  # stop reading: the site cannot be written
                raise MlopsCiError("rendering the model pages failed (see above)")
        context = multiprocessing.get_context("fork")
        # fork: the worker inherits the models (nothing is pickled).
        work = partial(_streamed, self.draft, start, models, self.staging, self.total)
        child = context.Process(target=_child, args=(work,), daemon=True)
        child.start()
        self.children.append(child)

    def finish(self, catalog: Catalog) -> Path:
        """Wait for the workers, render what is left, and put the site in place."""
        for child in self.children:
            child.join()
        self.done += self.children
        self.children = []
        if any(child.exitcode != 0 for child in self.done):
            raise MlopsCiError("rendering the model pages failed (see above)")
        same = self.draft is not None and (
            self.draft.generated,
            self.draft.registry,
            self.draft.audit,
            self.total,
        ) == (catalog.generated, catalog.registry, catalog.audit, len(catalog.models))
        _render(catalog, self.staging, self.page_rows, pages_done=self.streamed and same)
        return _publish(self.staging, self.out)

    def abort(self) -> None:
        for child in [*self.children, *self.done]:
            if child.is_alive():
                child.kill()
            child.join()
        shutil.rmtree(self.staging, ignore_errors=True)


def _write(path: Path, text: str) -> None:
    """A page or a share of catalog.json, in UTF-8. A JSON record may hold what UTF-8 cannot
    (a lone surrogate: the escape `\\ud800` is valid JSON): it is written as "?", so one odd
    record never costs every model its page."""
    path.write_text(text, encoding="utf-8", errors="replace")


def _model_pages(
    catalog: Catalog, models: Sequence[Model], folder: Path, total: int | None = None
) -> None:
    """The pages of `models`; `total` is the catalog's size when `catalog` is a draft."""
    env = environment()
    page = env.get_template("model.html")
    site = assets()
    for model in models:
        html = page.render(
            assets=site,
            catalog=catalog,
            total=len(catalog.models) if total is None else total,
            model=model,
            charts=model_charts(model),
            events=list(reversed(model.events)),
            root="../",
        )
        _write(folder / "models" / model.page, html)


#: Models per task: small enough that the workers finish together, large enough to be cheap.
_TASK_MODELS = 250
#: Where the tasks leave their share of catalog.json, to be joined in order (in the staging
#: folder, so it never reaches the published site).
_PARTS = ".parts"


@dataclass(frozen=True)
class _Task:
    """One share of the site: the pages and catalog.json entries of `models[start:end]`, or
    (when `index` is set) that index page."""

    start: int = 0
    end: int = 0
    index: int | None = None


def _tasks(count: int, page_rows: int, workers: int) -> list[_Task]:
    size = max(1, min(_TASK_MODELS, math.ceil(count / (workers * 4))))
    pages = len(_index_pages(count, page_rows))
    # The index pages first: each is one large render, best started early.
    tasks = [_Task(index=n) for n in range(1, pages + 1)]
    return tasks + [_Task(start, min(start + size, count)) for start in range(0, count, size)]


def _run(catalog: Catalog, tasks: Sequence[_Task], folder: Path, page_rows: int) -> None:
    index = _Index(catalog, page_rows) if any(t.index for t in tasks) else None
    for task in tasks:
        if task.index is not None and index is not None:
            index.write(folder, task.index)
            continue
        models = catalog.models[task.start : task.end]
        _model_pages(catalog, models, folder)
        _json_part(models, task.start, folder)


def _json_part(models: Sequence[Model], start: int, folder: Path) -> None:
    """catalog.json's entries of `models` (the ones from `start` on), joined in order later."""
    # dumps, not dump: dump encodes in pure Python, dumps with the C encoder (10x faster).
    part = json.dumps([m.to_json() for m in models], ensure_ascii=False, separators=(",", ":"))
    _write(folder / _PARTS / f"{start:012d}.json", part[1:-1])


def _streamed(
    draft: Catalog, start: int, models: Sequence[Model], folder: Path, total: int
) -> None:
    """A `Stream` worker's share: pages and catalog.json entries of the models it was given."""
    _model_pages(draft, models, folder, total)
    _json_part(models, start, folder)


def _workers(count: int) -> int:
    """Processes for the site: one per core for a large catalog, where fork exists."""
    if count < 500 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


def _fork(
    catalog: Catalog, tasks: Sequence[_Task], folder: Path, page_rows: int, workers: int
) -> list[Any]:
    """Start `workers` forked processes, each rendering its share of the tasks (they inherit
    the catalog: nothing is pickled)."""
    context = multiprocessing.get_context("fork")
    children = []
    for k in range(workers):
        work = partial(_run, catalog, tasks[k::workers], folder, page_rows)
        child = context.Process(target=_child, args=(work,), daemon=True)
        child.start()
        children.append(child)
    return children


def _child(work: Callable[[], None]) -> None:
    # No cyclic GC in the worker: it would only walk the inherited catalog (copying every page
    # of it that it touches) and the pages' strings, which reference counting frees.
    gc.disable()
    try:
        work()
    except BaseException as exc:  # one line on stderr; the parent turns the exit code into an error
        sys.stderr.write(f"mlops-ci catalog: a page worker failed: {type(exc).__name__}: {exc}\n")
        os._exit(1)
    os._exit(0)


def _render(catalog: Catalog, folder: Path, page_rows: int, *, pages_done: bool = False) -> None:
    """Render `catalog` into the staging `folder`; with `pages_done`, a `Stream` wrote the
    model pages and catalog.json entries already and only the index pages are left."""
    workers = _workers(len(catalog.models))
    tasks = _tasks(len(catalog.models), page_rows, workers)
    if pages_done:
        tasks = [task for task in tasks if task.index is not None]
    else:  # a stream's pages and entries, if any, are all written again
        shutil.rmtree(folder / _PARTS)
        (folder / _PARTS).mkdir()
    if workers > 1:
        children = _fork(catalog, tasks, folder, page_rows, workers)
        for child in children:
            child.join()
        if any(child.exitcode != 0 for child in children):
            raise MlopsCiError("rendering the model pages failed (see above)")
    else:
        with no_gc():
            _run(catalog, tasks, folder, page_rows)
    # catalog.json: the catalog's own facts, then every model's entry as the tasks wrote them.
    head = catalog.to_json(models=False)
    text = json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1]
    parts = sorted((folder / _PARTS).iterdir())
    with (folder / "catalog.json").open("wb") as out:
        out.write(text.encode("utf-8", errors="replace") + b',"models":[')
        for k, part in enumerate(parts):
            chunk = part.read_bytes()
            out.write(b"," + chunk if k and chunk else chunk)
        out.write(b"]}")
    shutil.rmtree(folder / _PARTS)
    # GitHub Pages runs Jekyll on a plain folder unless told not to.
    (folder / ".nojekyll").write_bytes(b"")


class _Index:
    """The index pages: the facts every page shows (counts, the attention box) are gathered
    once; `write` renders one page of rows, whose owner filter lists the owners of its rows
    (filters apply to the page shown: an owner of no row there would find nothing)."""

    def __init__(self, catalog: Catalog, page_rows: int) -> None:
        models = catalog.models
        self.catalog = catalog
        self.page_rows = page_rows
        self.counts = Counter(m.state for m in models)
        risks = [r for r in ("high", "medium", "low") if any(m.risk == r for m in models)]
        self.risks = risks + sorted({m.risk for m in models if m.risk and m.risk not in risks})
        self.attention = [m for m in models if m.state == "attention"]
        self.pages = _index_pages(len(models), page_rows)
        self.template = environment().get_template("index.html")

    def write(self, folder: Path, number: int) -> None:
        rows = self.catalog.models[(number - 1) * self.page_rows : number * self.page_rows]
        html = self.template.render(
            assets=assets(),
            catalog=self.catalog,
            total=len(self.catalog.models),
            rows=rows,
            counts=self.counts,
            owners=sorted({o for m in rows for o in m.owners}, key=str.lower),
            risks=self.risks,
            attention=self.attention[:100],
            attention_total=len(self.attention),
            pages=self.pages,
            page=number,
            root="",
        )
        _write(folder / self.pages[number - 1], html)
