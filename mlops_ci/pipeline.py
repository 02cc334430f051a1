"""`mlops-ci run`: the whole pipeline on a laptop, stage by stage and model by model.

Each stage is a function (manifest, folder for its reports) -> Outcome. As in the CI workflow, a
model that fails validation or has no ONNX model skips the stages after that, but test and bench
run on any ONNX model that convert wrote, so every verdict shows at once. An error in one model
(even a configuration error, which exits 2 on its own command) is recorded on its row and the
other models carry on; the report and the table are always written.
"""

from __future__ import annotations

import contextvars
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mlops_ci import atomic
from mlops_ci.errors import EXIT_OK, EXIT_USAGE, EXIT_VERDICT, MlopsCiError, UsageError
from mlops_ci.manifest import MODEL_NAME, Manifest, find_repo_root
from mlops_ci.report import json as report_json
from mlops_ci.report import units
from mlops_ci.resources import MANIFEST_SCHEMA


@dataclass(frozen=True)
class Outcome:
    """What one stage did to one model: passed, and one short line for the progress and table."""

    passed: bool
    summary: str
    skipped: bool = False
    #: not a verdict: the stage could not run (configuration, unreadable input, internal error)
    error: bool = False


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

    result = bench.run(manifest, folder, folder, _local_baseline(manifest, folder))
    return Outcome(result.passed, result.summary)


#: The registry `run`'s deploy stage publishes into (set by `run` for the stages it runs).
_REGISTRY: contextvars.ContextVar[Path | str] = contextvars.ContextVar("registry")


def _local_baseline(manifest: Manifest, folder: Path) -> Path | None:
    """The version the local registry serves, fetched as a pull request's baseline job fetches
    it (`baseline.onnx` and `baseline.json` in the model's folder): the bench's regression
    check runs against it and the report shows it and the metric deltas, so a retrain tried
    locally is compared with what the last run deployed. None: nothing deployed to compare
    with (the report says why)."""
    from mlops_ci import baseline

    registry = _REGISTRY.get(None)
    if registry is None or folder.name != manifest.name:  # a folder named `_N`: no safe name
        return None
    if isinstance(registry, Path) and not registry.is_dir():
        return None  # no run has deployed yet: nothing to read, and no registry made here
    doc = baseline.fetch(str(registry), [manifest.name], folder.parent)[manifest.name]
    return folder / "baseline.onnx" if doc.get("reason") is None else None


def _deploy(manifest: Manifest, folder: Path) -> Outcome:
    """Publish into a local registry: no approvals are checked, and its records say so."""
    from mlops_ci import deploy
    from mlops_ci.registry import open_registry

    reg = open_registry(_REGISTRY.get())
    done = deploy.publish(reg, deploy.load_candidate(manifest, folder), deploy.local_provenance())
    smoke = deploy.smoke_test(reg, done.model, done.registry_version)
    where = "new" if done.changed else "unchanged"
    line = f"version {done.registry_version} ({where}; local: no approvals checked)"
    return Outcome(smoke.passed, line if smoke.passed else f"{line}; {smoke.summary}")


def _stages() -> tuple[Stage, ...]:
    """Every stage after validation, in order; each imports its module only when it runs."""
    return (
        Stage("convert", _convert),
        Stage("test", _test),
        Stage("bench", _bench),
        Stage("deploy", _deploy),
    )


@dataclass(frozen=True)
class ModelRow:
    name: str
    manifest: str
    outcomes: dict[str, Outcome]
    #: Its reports' folder under the run's `out`: the name when the schema's name rule allows
    #: it, else one made from the row's place (an invalid manifest's name could be `../..`).
    folder: str = ""

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes.values())

    @property
    def errored(self) -> bool:
        return any(o.error for o in self.outcomes.values())


#: Stages that need only the ONNX model; they run even when convert's verdict was "failed".
_ONNX_STAGES = frozenset({"test", "bench"})


def skip_reason(stage: str, outcomes: Mapping[str, Outcome], onnx_written: bool) -> str | None:
    """Why `stage` does not run for a model, or None when it runs.

    Nothing runs on an invalid manifest. Test and bench run whenever convert wrote an ONNX model,
    even one that failed parity, as the CI workflow does; other stages need every earlier stage
    to have passed.
    """
    if not outcomes.get("validate", Outcome(True, "")).passed:
        return "the manifest is invalid"
    if stage in _ONNX_STAGES:
        return None if onnx_written else "no ONNX model (convert did not write one)"
    if not all(o.passed for o in outcomes.values()):
        return "an earlier stage failed"
    return None


def _attempt(stage: Stage, manifest: Manifest, folder: Path) -> Outcome:
    """Run one stage on one model; its error becomes that model's outcome, never the run's end."""
    try:
        return stage.run(manifest, folder)
    except MlopsCiError as exc:
        return Outcome(False, str(exc).splitlines()[0], error=exc.exit_code != EXIT_VERDICT)
    except Exception as exc:  # a bug in one model's stage must not hide the other models' results
        return Outcome(False, f"internal error: {type(exc).__name__}: {exc}", error=True)


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
    registry: Path | str | None = None,
) -> Run:
    from mlops_ci import validate

    say = stream or sys.stdout
    if repo.is_file():
        raise UsageError(f"{repo} is a file: `run` takes the repository's folder")
    if not repo.is_dir():
        raise UsageError(f"{repo}: no such folder")
    available = _stages()
    known = ["validate", *(s.name for s in available)]
    if stages is not None:
        stages = [s for s in stages if s]  # "validate,convert," is a typo, not a stage
        if not stages:
            raise UsageError(f"--stages names no stage; stages are {', '.join(known)}")
    wanted = list(stages) if stages else known
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise UsageError(f"unknown stage {', '.join(unknown)}; stages are {', '.join(known)}")
    if "deploy" in wanted and "convert" not in wanted:
        # deploy publishes the model.onnx that convert writes in this run (reports of an
        # earlier run are removed first), so alone it could only fail for every model
        raise UsageError("the deploy stage publishes what convert writes: add convert to --stages")
    if registry:
        from mlops_ci.registry import open_registry

        open_registry(registry)  # a bad --registry is one error now, not one per model later
    # The deploy stage publishes into a local registry (default REPO/.mlops-ci/registry).
    _REGISTRY.set(registry or repo / ".mlops-ci" / "registry")
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
        name = result.name or result.shown
        if result.valid:
            outcome = Outcome(True, "valid")
            print(f"  ✓ {name:<24} {result.shown}", file=say, flush=True)
        else:
            outcome = Outcome(False, units.plural(len(result.problems), "problem"))
            print(f"  ✗ {name:<24} {result.shown}", file=say, flush=True)
            for problem in result.problems:
                print(f"      {problem}", file=say, flush=True)
        safe = MODEL_NAME.fullmatch(name) and name not in {r.folder for r in rows}
        row = ModelRow(name, result.shown, {"validate": outcome}, name if safe else f"_{len(rows)}")
        rows.append(row)
        folder = out / row.folder
        if folder.is_dir():  # a previous run's reports must not mix with this run's
            shutil.rmtree(folder)
        atomic.write_text(folder / "validate.json", report_json.validation([result]) + "\n")
        if result.manifest is not None:  # valid: validation already loaded it, once
            manifests.append((row, result.manifest))

    for index, stage in enumerate(selected, start=2):
        print(f"[{index}/{total}] {stage.name}", file=say, flush=True)
        for row, manifest in manifests:
            folder = out / row.folder
            reason = skip_reason(stage.name, row.outcomes, (folder / "model.onnx").is_file())
            if reason is not None:
                row.outcomes[stage.name] = Outcome(False, "skipped", skipped=True)
                print(f"  – {row.name:<24} skipped ({reason})", file=say, flush=True)
                continue
            t0 = time.perf_counter()
            outcome = _attempt(stage, manifest, folder)
            row.outcomes[stage.name] = outcome
            mark = "✓" if outcome.passed else "✗"
            took = time.perf_counter() - t0
            print(
                f"  {mark} {row.name:<24} {outcome.summary}  ({took:.1f} s)", file=say, flush=True
            )

    # The Markdown (the pull request's comment) goes to its file only: the terminal gets the
    # progress above and the table below.
    report_ok = True
    if rows:
        from mlops_ci.report import markdown as report_md
        from mlops_ci.report.results import gather

        try:
            gathered = [r for m in rows for r in gather(out / m.folder)]
            markdown = report_md.render(gathered, context="local")
            atomic.write_text(out / "report.md", markdown)
        except Exception as exc:  # the table below must still be printed
            report_ok = False
            print(f"\nthe report could not be written: {type(exc).__name__}: {exc}", file=say)

    names = ["validate", *(s.name for s in selected)]
    print(f"\nSummary ({time.perf_counter() - started:.1f} s, reports in {out})", file=say)
    print(_table(rows, names), file=say, flush=True)
    if report_ok and rows:
        print(f"\nReport: {out / 'report.md'}", file=say, flush=True)
    from mlops_ci.catalog import for_run

    # REPO/.mlops-ci/catalog shows REPO/.mlops-ci/registry; another registry's catalog is this
    # run's output, kept with its reports, so it never replaces the default registry's.
    site = out / "catalog" if registry else repo / ".mlops-ci" / "catalog"
    print(for_run(_REGISTRY.get(), site, repo), file=say, flush=True)
    from mlops_ci.serve.hint import run_hint

    print(run_hint(_REGISTRY.get()), file=say, flush=True)
    if not policy_ok:
        print("the approval policy is invalid (see above)", file=say)
    return Run(tuple(rows), policy_ok, report_ok)


@dataclass(frozen=True)
class Run:
    rows: tuple[ModelRow, ...]
    policy_ok: bool = True
    report_ok: bool = True

    @property
    def passed(self) -> bool:
        return self.policy_ok and all(r.passed for r in self.rows)

    @property
    def exit_code(self) -> int:
        """2 when any model could not be checked (not a verdict), else 1 when any check said no."""
        if not self.report_ok or any(r.errored for r in self.rows):
            return EXIT_USAGE
        return EXIT_OK if self.passed else EXIT_VERDICT


def main(
    repo: Path,
    *,
    out: Path | None = None,
    stages: Sequence[str] | None = None,
    registry: str | None = None,
) -> int:
    return run(repo, out, stages, registry=registry).exit_code
