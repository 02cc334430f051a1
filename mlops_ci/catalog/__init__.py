"""`mlops-ci catalog`: the static site of every model in a registry, for people and GitHub Pages.

`read` gathers the facts (releases, manifests as deployed, the audit trail, monitor verdicts)
into the frozen data model of `facts`; `site` renders it with `charts`. This module wires them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from mlops_ci.catalog.facts import Catalog
from mlops_ci.errors import EXIT_OK, MlopsCiError, UsageError

__all__ = ["Catalog", "build", "for_run", "main"]


def _registry_label(uri: str) -> str:
    return uri if "://" in uri else str(Path(uri).resolve())


def build(registry: str | Path, out: Path, repo: Path | None = None) -> tuple[Catalog, Path]:
    """Read the registry at `registry` and write its catalog to `out`; returns the catalog and
    the path of index.html."""
    from mlops_ci.catalog.read import read_catalog
    from mlops_ci.catalog.site import Stream
    from mlops_ci.registry import open_registry

    uri = str(registry)
    reg = open_registry(uri)
    if not reg.exists():
        raise UsageError(f"{uri}: no such registry folder")
    if repo is not None and not repo.is_dir():
        raise UsageError(f"{repo}: no such folder (--repo is a checkout of the model repository)")
    # The site is rendered while the registry is read (in forked workers, for a large one).
    stream = Stream(out)
    try:
        catalog = read_catalog(reg, _registry_label(uri), repo, sink=stream)
        return catalog, stream.finish(catalog)
    except BaseException:
        stream.abort()
        raise


def main(registry: str, out: Path, repo: Path | None = None, stream: TextIO | None = None) -> int:
    say = stream or sys.stdout
    catalog, index = build(registry, out, repo)
    states: dict[str, int] = {}
    for model in catalog.models:
        states[model.state] = states.get(model.state, 0) + 1
    counts = ", ".join(f"{n} {state}" for state, n in states.items())
    print(f"catalog: {len(catalog.models)} models ({counts or 'none'})", file=say)
    if catalog.problems:
        print(
            f"catalog: {len(catalog.problems)} records could not be read or are incomplete:",
            file=say,
        )
        for problem in catalog.problems[:20]:
            print(f"  {problem}", file=say)
    print(index, file=say)
    _summary(catalog, states)
    return EXIT_OK


def for_run(registry: str | Path, out: Path, repo: Path) -> str:
    """The catalog step of `mlops-ci run`: one line saying where index.html is, or why there
    is none. A catalog that cannot be written never fails the run: it is not a verdict."""
    local = None if "://" in str(registry) else Path(registry)
    if local is not None and not any(local.glob("*/config.pbtxt")):
        return f"Catalog: none yet (no model deployed to {local})"
    try:
        import jinja2  # noqa: F401 - only to tell a missing extra from a failure
    except ImportError:
        return "Catalog: skipped (it needs jinja2: pip install 'mlops-ci[catalog]')"
    try:
        catalog, index = build(registry, out, repo)
    except MlopsCiError as exc:
        return f"Catalog: not written: {exc}"
    except Exception as exc:  # a bug here must not cost the run its table and exit code
        return f"Catalog: not written: internal error: {type(exc).__name__}: {exc}"
    from mlops_ci.report.units import plural

    return f"Catalog: {index} ({plural(len(catalog.models), 'model')})"


def _summary(catalog: Catalog, states: dict[str, int]) -> None:
    """The job summary on a runner: the counts, and what could not be read (escaped: names
    and messages come from the registry)."""
    from mlops_ci import gha
    from mlops_ci.report.escape import cell

    lines = [
        "### mlops-ci catalog",
        "",
        f"{len(catalog.models)} models: "
        + ", ".join(f"{n} {state}" for state, n in sorted(states.items())),
    ]
    attention = [m.name for m in catalog.models if m.state == "attention"]
    if attention:
        lines += ["", "Needs attention: " + ", ".join(cell(name) for name in attention[:50])]
    if catalog.problems:
        lines += ["", f"{len(catalog.problems)} records could not be read or are incomplete:", ""]
        lines += [f"- {cell(problem)}" for problem in catalog.problems[:50]]
    gha.write_summary("\n".join(lines))
