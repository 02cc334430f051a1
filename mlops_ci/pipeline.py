"""`mlops-ci run`: the whole pipeline on a laptop, stage by stage and model by model.

Each stage is a function (manifest, folder for its reports) -> Outcome; a model that fails a
stage skips the stages after it. The same stage functions back the CI commands.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mlops_ci import atomic, report
from mlops_ci.errors import EXIT_OK, EXIT_VERDICT, UsageError
from mlops_ci.manifest import Manifest, find_repo_root
from mlops_ci.resources import MANIFEST_SCHEMA


@dataclass(frozen=True)
class Outcome:
    """What one stage did to one model: passed, and one short line for the progress and table."""

    passed: bool
    summary: str
    skipped: bool = False


StageFn = Callable[[Manifest, Path], Outcome]


@dataclass(frozen=True)
class Stage:
    name: str
    run: StageFn


def _convert(manifest: Manifest, folder: Path) -> Outcome:
    from mlops_ci import convert

    result = convert.run(manifest, folder)
    return Outcome(result.passed, result.summary)


def _test(manifest: Manifest, folder: Path) -> Outcome:
    from mlops_ci import evaluate

    result = evaluate.run(manifest, folder, folder)
    return Outcome(result.passed, result.summary)


def _bench(manifest: Manifest, folder: Path) -> Outcome:
    from mlops_ci import bench

    result = bench.run(manifest, folder, folder)
    return Outcome(result.passed, result.summary)


def _stages() -> tuple[Stage, ...]:
    """Every stage after validation, in order; each imports its module only when it runs."""
    return (Stage("convert", _convert), Stage("test", _test), Stage("bench", _bench))


@dataclass(frozen=True)
class ModelRow:
    name: str
    manifest: str
    outcomes: dict[str, Outcome]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes.values())


def _mark(outcome: Outcome) -> str:
    if outcome.skipped:
        return "–"
    return "✓" if outcome.passed else "✗"


def _table(rows: Sequence[ModelRow], stage_names: Sequence[str]) -> str:
    headers = ["model", *stage_names, "result"]
    body = [
        [
            row.name,
            *[
                f"{_mark(row.outcomes[s])} {row.outcomes[s].summary}" if s in row.outcomes else ""
                for s in stage_names
            ],
            "PASS" if row.passed else "FAIL",
        ]
        for row in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, body)])


def run(
    repo: Path,
    out: Path | None = None,
    stages: Sequence[str] | None = None,
    stream: TextIO | None = None,
) -> Run:
    from mlops_ci import validate
    from mlops_ci.manifest import load

    say = stream or sys.stdout
    if not repo.is_dir():
        raise UsageError(f"{repo}: no such folder")
    available = _stages()
    known = ["validate", *(s.name for s in available)]
    wanted = list(stages) if stages else known
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise UsageError(f"unknown stage {', '.join(unknown)}; stages are {', '.join(known)}")
    selected = [s for s in available if s.name in wanted]
    root = find_repo_root(repo)
    out = (out or repo / ".mlops-ci" / "run").resolve()
    total = 1 + len(selected)

    started = time.perf_counter()
    print(f"[1/{total}] validate  {repo}", file=say, flush=True)
    checked = validate.check([repo], root)
    rows: list[ModelRow] = []
    manifests: list[tuple[ModelRow, Manifest]] = []
    policy_ok = True
    for result in checked:
        if result.schema != MANIFEST_SCHEMA:  # the approval policy: not a model row
            policy_ok = result.valid
            print(f"  {'✓' if result.valid else '✗'} {'(policy)':<24} {result.shown}", file=say)
            for problem in result.problems:
                print(f"      {problem}", file=say, flush=True)
            continue
        meta = result.data.get("metadata") if result.data else None
        name = (
            str(meta.get("name")) if isinstance(meta, dict) and meta.get("name") else result.shown
        )
        if result.valid:
            outcome = Outcome(True, "valid")
            print(f"  ✓ {name:<24} {result.shown}", file=say, flush=True)
        else:
            n = len(result.problems)
            outcome = Outcome(False, f"{n} problem{'s' if n != 1 else ''}")
            print(f"  ✗ {name:<24} {result.shown}", file=say, flush=True)
            for problem in result.problems:
                print(f"      {problem}", file=say, flush=True)
        row = ModelRow(name, result.shown, {"validate": outcome})
        rows.append(row)
        folder = out / name
        if folder.is_dir():  # a previous run's reports must not mix with this run's
            shutil.rmtree(folder)
        atomic.write_text(folder / "validate.json", report.validation_json([result]) + "\n")
        if result.valid:
            manifests.append((row, load(result.path, root)))

    for index, stage in enumerate(selected, start=2):
        print(f"[{index}/{total}] {stage.name}", file=say, flush=True)
        for row, manifest in manifests:
            if not all(o.passed for o in row.outcomes.values()):
                row.outcomes[stage.name] = Outcome(False, "skipped", skipped=True)
                print(f"  – {row.name:<24} skipped (an earlier stage failed)", file=say, flush=True)
                continue
            t0 = time.perf_counter()
            outcome = stage.run(manifest, out / manifest.name)
            row.outcomes[stage.name] = outcome
            mark = "✓" if outcome.passed else "✗"
            took = time.perf_counter() - t0
            print(
                f"  {mark} {row.name:<24} {outcome.summary}  ({took:.1f} s)", file=say, flush=True
            )

    if manifests:
        from mlops_ci import pr_report

        markdown = pr_report.render([r for m in rows for r in pr_report.gather(out / m.name)])
        atomic.write_text(out / "report.md", markdown)
        print(f"\n{markdown}\nReport written to {out / 'report.md'}", file=say)

    names = ["validate", *(s.name for s in selected)]
    print(f"\nSummary ({time.perf_counter() - started:.1f} s, reports in {out})", file=say)
    print(_table(rows, names), file=say, flush=True)
    if not policy_ok:
        print("the approval policy is invalid (see above)", file=say)
    return Run(tuple(rows), policy_ok)


@dataclass(frozen=True)
class Run:
    rows: tuple[ModelRow, ...]
    policy_ok: bool = True

    @property
    def passed(self) -> bool:
        return self.policy_ok and all(r.passed for r in self.rows)


def main(repo: Path, *, out: Path | None = None, stages: Sequence[str] | None = None) -> int:
    return EXIT_OK if run(repo, out, stages).passed else EXIT_VERDICT
