"""The per-model stage results a report is made of: the JSON documents that validate, convert,
test and bench wrote, gathered from a folder (e.g. downloaded workflow artifacts)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_ci.errors import UsageError

STAGE_FILES = ("validate.json", "convert.json", "test.json", "bench.json")


@dataclass(frozen=True)
class ModelReport:
    """One model's stage results, as the stages wrote them (JSON documents; None: not run)."""

    model: str
    version: str
    manifest: str | None = None
    validate: Mapping[str, Any] | None = None
    convert: Mapping[str, Any] | None = None
    test: Mapping[str, Any] | None = None
    bench: Mapping[str, Any] | None = None
    unreadable: tuple[str, ...] = ()
    #: baseline.json of the baseline job: the serving version's release, or why there is none
    baseline: Mapping[str, Any] | None = None

    @classmethod
    def from_docs(
        cls,
        *,
        validate: Mapping[str, Any] | None = None,
        convert: Mapping[str, Any] | None = None,
        test: Mapping[str, Any] | None = None,
        bench: Mapping[str, Any] | None = None,
        fallback_name: str = "model",
        unreadable: Sequence[str] = (),
        baseline: Mapping[str, Any] | None = None,
    ) -> ModelReport:
        """A report from stage documents (`TestResult.to_json()`, `BenchResult.to_json()`, …)."""
        docs = [d for d in (test, bench) if isinstance(d, Mapping)]
        if isinstance(convert, Mapping) and isinstance(convert.get("model"), Mapping):
            docs.append(convert["model"])  # convert.json nests {name, version, ...}
        name = next(
            (str(d.get("model") or d.get("name")) for d in docs if d.get("model") or d.get("name")),
            None,
        )
        version = next((str(d["version"]) for d in docs if d.get("version")), "")
        manifest = next((str(d["manifest"]) for d in docs if d.get("manifest")), None)
        entry = validate_entry(validate)
        if entry is not None:
            manifest = manifest or entry.get("path")
        return cls(
            model=name or fallback_name,
            version=version,
            manifest=manifest,
            validate=validate,
            convert=convert,
            test=test,
            bench=bench,
            unreadable=tuple(unreadable),
            baseline=baseline,
        )

    def to_docs(self) -> dict[str, Any]:
        """The stage documents as gathered, for `from_prepared` in another job."""
        return {
            "name": self.model,
            "validate": self.validate,
            "convert": self.convert,
            "test": self.test,
            "bench": self.bench,
            "baseline": self.baseline,
            "unreadable": list(self.unreadable),
        }

    @classmethod
    def from_prepared(cls, doc: Any) -> ModelReport:
        """A report from `to_docs()` output that another (untrusted) job wrote; ValueError
        when it does not have that shape."""
        if not isinstance(doc, Mapping):
            raise ValueError("a model entry is not an object")
        docs: dict[str, Mapping[str, Any] | None] = {}
        for stage in ("validate", "convert", "test", "bench", "baseline"):
            value = doc.get(stage)
            if value is not None and not isinstance(value, Mapping):
                raise ValueError(f"{stage} is not an object")
            docs[stage] = value
        unreadable = doc.get("unreadable") or []
        if not isinstance(unreadable, list):
            raise ValueError("unreadable is not a list")
        return cls.from_docs(
            **docs,
            fallback_name=str(doc.get("name") or "model"),
            unreadable=[str(u) for u in unreadable],
        )

    def stages(self) -> dict[str, str | None]:
        """pass / fail / skip / None (not run) for each stage."""
        return {
            "validate": validate_status(self.validate),
            "convert": _passed_status(self.convert),
            "test": _passed_status(self.test),
            "bench": _passed_status(self.bench),
        }

    @property
    def passed(self) -> bool:
        return not self.unreadable and "fail" not in self.stages().values()


def gather(folder: Path) -> list[ModelReport]:
    """Every model's report under `folder`: each folder holding a stage JSON is one model."""
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder of stage reports")
    folders = sorted({p.parent for name in STAGE_FILES for p in folder.rglob(name)})
    reports = []
    for f in folders:
        docs: dict[str, Any] = {}
        unreadable = []
        for name in STAGE_FILES:
            path = f / name
            if not path.is_file():
                continue
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                unreadable.append(f"{name}: {exc}")
                continue
            if isinstance(doc, dict):
                docs[name.removesuffix(".json")] = doc
            else:
                unreadable.append(f"{name}: not a JSON object")
        try:  # the serving version, from the baseline job (absent: no registry configured)
            baseline = json.loads((f / "baseline.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            baseline = None
        reports.append(
            ModelReport.from_docs(
                **docs,
                fallback_name=f.name,
                unreadable=unreadable,
                baseline=baseline if isinstance(baseline, dict) else None,
            )
        )
    return reports


def validate_entry(doc: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    # `mlops-ci validate --format json` writes {"manifests": [...]}; one manifest per model job
    if not isinstance(doc, Mapping):
        return None
    manifests = doc.get("manifests")
    if isinstance(manifests, list) and manifests and isinstance(manifests[0], Mapping):
        return manifests[0]
    return doc


def validate_status(doc: Mapping[str, Any] | None) -> str | None:
    if doc is None:
        return None
    manifests = doc.get("manifests")
    if isinstance(manifests, list):
        return (
            "pass" if all(isinstance(m, Mapping) and m.get("valid") for m in manifests) else "fail"
        )
    return "pass" if doc.get("valid", doc.get("passed")) else "fail"


def _passed_status(doc: Mapping[str, Any] | None) -> str | None:
    if doc is None:
        return None
    return "pass" if doc.get("passed") else "fail"
