"""Registries for the catalog tests, written in DESIGN.md's layout by hand (fast, and free to hold
hostile text that deploy.py would never write): releases, manifests, a hash-chained audit log,
monitor verdicts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOSTILE = '<script>alert("pwned")<script>'
HOSTILE_TEXT = '</script><script>alert("pwned")</script><img src=x onerror=alert(1)>'

MANIFEST = """\
apiVersion: mlops-ci/v1
kind: Model
metadata:
  name: {name}
  version: {semver}
  owners: {owners}
  risk: {risk}
  description: {description}
spec:
  framework: sklearn
  artifact: {{path: model.skops, sha256: "{sha}"}}
  tests:
    metrics:
      - {{metric: accuracy, slice: {{column: sex, value: female}}, min: 0.6}}
      - {{metric: accuracy, min: 0.65}}
      - {{metric: roc_auc, min: 0.78}}
"""


def config_pbtxt(name: str, serving: int) -> str:
    return (
        f'name: {json.dumps(name)}\nplatform: "onnxruntime_onnx"\nmax_batch_size: 64\n'
        f"version_policy {{ specific {{ versions: {serving} }} }}\n"
    )


def release(
    name: str,
    n: int,
    semver: str,
    time: str,
    *,
    pr: int | None = None,
    approvers: tuple[str, ...] = (),
    accuracy: float = 0.7,
    roc_auc: float = 0.8,
    p50_ms: float = 0.02,
    run_url: str | None = None,
    source: str = "github",
) -> dict[str, Any]:
    sha = hashlib.sha256(f"{name}{n}".encode()).hexdigest()
    checks = [
        {
            "kind": "metric",
            "name": "accuracy[sex=female]",
            "status": "pass",
            "passed": True,
            "value": accuracy - 0.01,
            "min": 0.6,
            "detail": "",
        },
        {
            "kind": "metric",
            "name": "accuracy",
            "status": "pass" if accuracy >= 0.65 else "fail",
            "passed": accuracy >= 0.65,
            "value": accuracy,
            "min": 0.65,
            "detail": "",
        },
        {
            "kind": "metric",
            "name": "roc_auc",
            "status": "pass",
            "passed": True,
            "value": roc_auc,
            "min": 0.78,
            "detail": "",
        },
        {"kind": "case", "name": "lean patient", "status": "pass", "passed": True, "detail": ""},
    ]
    doc: dict[str, Any] = {
        "model": name,
        "version": semver,
        "registry_version": n,
        "commit": hashlib.sha1(f"{name}{n}".encode()).hexdigest(),
        "artifact": {"path": "model.skops", "sha256": sha},
        "onnx": {
            "sha256": hashlib.sha256(sha.encode()).hexdigest(),
            "opset": 17,
            "converter": "skl2onnx 1.18",
        },
        "results": {
            "test": {"stage": "test", "passed": all(c["passed"] for c in checks), "checks": checks},
            "bench": {
                "stage": "bench",
                "passed": True,
                "measurements": [
                    {
                        "engine": "onnx",
                        "batch_size": 1,
                        "p50_ms": p50_ms,
                        "p95_ms": p50_ms * 1.5,
                        "p99_ms": p50_ms * 2,
                        "throughput": 1000 / p50_ms,
                    },
                    {"engine": "native", "batch_size": 1, "p50_ms": p50_ms * 20},
                    {
                        "engine": "onnx",
                        "batch_size": 64,
                        "p50_ms": p50_ms * 8,
                        "p95_ms": p50_ms * 10,
                    },
                ],
            },
        },
        "time": time,
        "source": source,
        "audit": {"sha256": ""},
    }
    if pr is not None:
        doc["pull_request"] = {
            "number": pr,
            "url": f"https://github.com/acme/models/pull/{pr}",
            "head_sha": doc["commit"],
        }
        doc["approvers"] = [
            {"login": login, "review_id": 100 + i, "commit": doc["commit"], "time": time}
            for i, login in enumerate(approvers)
        ]
    if run_url is not None:
        doc["run_url"] = run_url
    return doc


@dataclass
class RegistryWriter:
    """Writes a registry folder the way deploy.py lays it out, record by record."""

    root: Path
    records: list[dict[str, Any]] = field(default_factory=list)

    def audit(self, **record: Any) -> dict[str, Any]:
        """Append a record with the audit module itself (seq, prev, head: the real format)."""
        from mlops_ci import audit
        from mlops_ci.registry import open_registry

        pending = audit.append(open_registry(self.root), record)
        self.records.append(pending.record)
        return {**pending.record, "sha256": pending.sha256}

    def publish(
        self,
        name: str,
        n: int,
        semver: str,
        time: str,
        *,
        owners: tuple[str, ...] = ("@acme/risk-ml",),
        risk: str = "high",
        description: str = "A model.",
        serve: bool = True,
        **release_args: Any,
    ) -> dict[str, Any]:
        folder = self.root / name / str(n)
        folder.mkdir(parents=True, exist_ok=True)
        doc = release(name, n, semver, time, **release_args)
        record = self.audit(
            action="deploy",
            model=name,
            version=semver,
            registry_version=n,
            commit=doc["commit"],
            pull_request=doc.get("pull_request"),  # deploy's shapes: {number, url, head_sha}
            approvers=doc.get("approvers", []),  # [{login, review_id, commit, time}]
            actor="github-actions",
            run_url=doc.get("run_url"),
            digests={"onnx": doc["onnx"]["sha256"]},
            reason=None,
            source=doc["source"],
            time=time,
        )
        doc["audit"]["sha256"] = record["sha256"]
        (folder / "release.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
        (folder / "model.yaml").write_text(
            MANIFEST.format(
                name=json.dumps(name),
                semver=semver,
                owners=json.dumps(list(owners)),
                risk=risk,
                description=json.dumps(description),
                sha=doc["artifact"]["sha256"],
            ),
            encoding="utf-8",
        )
        (folder / "model.onnx").write_bytes(b"onnx")
        if serve:
            self.point(name, n)
        return doc

    def point(self, name: str, n: int) -> None:
        (self.root / name / "config.pbtxt").write_text(config_pbtxt(name, n), encoding="utf-8")

    def rollback(self, name: str, n: int, semver: str, time: str, reason: str) -> None:
        self.audit(
            action="rollback",
            model=name,
            version=semver,
            registry_version=n,
            actor="@oncall",
            reason=reason,
            source="github",
            time=time,
        )
        self.point(name, n)

    def refused(self, name: str, semver: str, time: str, reason: str, pr: int) -> None:
        self.audit(
            action="refused",
            model=name,
            version=semver,
            registry_version=None,
            pull_request={
                "number": pr,
                "url": f"https://github.com/acme/models/pull/{pr}",
                "head_sha": "0" * 40,
            },
            actor="github-actions",
            reason=reason,
            source="github",
            time=time,
        )

    def monitor(self, name: str, time: str, verdict: dict[str, Any]) -> None:
        folder = self.root / ".mlops" / "monitor" / name
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.replace(":", "")
        (folder / f"{stamp}.json").write_text(json.dumps(verdict), encoding="utf-8")


def verdict(
    name: str,
    version: str,
    shares: dict[str, float],
    *,
    stale: bool = False,
    threshold: float = 0.2,
) -> dict[str, Any]:
    columns = [
        {
            "name": col,
            "test": "psi",
            "statistic": value,
            "threshold": threshold,
            "drifted": value >= threshold,
        }
        for col, value in shares.items()
    ]
    share = sum(c["drifted"] for c in columns) / len(columns) if columns else 0.0
    dataset_drift = share >= 0.5
    return {
        "name": name,
        "version": version,
        "needs_attention": stale or dataset_drift,
        "stale": stale,
        "drift": {"share": share, "dataset_drift": dataset_drift, "columns": columns},
        "prediction_drift": False,
        "decay": None,
    }


def sample_registry(root: Path) -> RegistryWriter:
    """Three models: one with a deploy, rollback and refusal history that needs attention, one
    healthy, and one whose name, owners and records hold markup and a javascript: URL."""
    w = RegistryWriter(root)
    w.publish(
        "fraud-detector",
        1,
        "1.0.0",
        "2026-10-01T09:00:00Z",
        pr=11,
        approvers=("bob", "carol"),
        accuracy=0.71,
        roc_auc=0.82,
        p50_ms=0.021,
        run_url="https://github.com/acme/models/actions/runs/901",
        owners=("@acme/risk-ml", "@alice"),
        risk="high",
        description="Flags card transactions that look fraudulent.",
    )
    w.publish(
        "fraud-detector",
        2,
        "1.1.0",
        "2026-10-20T14:30:00Z",
        pr=12,
        approvers=("bob", "dave"),
        accuracy=0.74,
        roc_auc=0.85,
        p50_ms=0.024,
        run_url="https://github.com/acme/models/actions/runs/955",
        owners=("@acme/risk-ml", "@alice"),
        risk="high",
        description="Flags card transactions that look fraudulent.",
    )
    w.refused(
        "fraud-detector",
        "1.2.0",
        "2026-11-02T08:00:00Z",
        "approval by @mallory is stale: review of an older commit",
        pr=13,
    )
    w.publish(
        "fraud-detector",
        3,
        "1.2.0",
        "2026-11-05T10:00:00Z",
        pr=14,
        approvers=("bob", "carol"),
        accuracy=0.66,
        roc_auc=0.80,
        p50_ms=0.031,
        run_url="https://github.com/acme/models/actions/runs/990",
        owners=("@acme/risk-ml", "@alice"),
        risk="high",
        description="Flags card transactions that look fraudulent.",
    )
    w.rollback(
        "fraud-detector", 2, "1.1.0", "2026-11-06T07:15:00Z", "false positives doubled after 1.2.0"
    )
    cols = ["amount", "merchant", "hour", "country"]
    w.monitor(
        "fraud-detector",
        "2026-11-10T05:17:00Z",
        verdict("fraud-detector", "1.1.0", dict(zip(cols, [0.02, 0.05, 0.01, 0.03], strict=True))),
    )
    w.monitor(
        "fraud-detector",
        "2026-11-20T05:17:00Z",
        verdict("fraud-detector", "1.1.0", dict(zip(cols, [0.12, 0.21, 0.02, 0.08], strict=True))),
    )
    w.monitor(
        "fraud-detector",
        "2026-11-30T05:17:00Z",
        verdict("fraud-detector", "1.1.0", dict(zip(cols, [0.31, 0.42, 0.04, 0.26], strict=True))),
    )

    w.publish(
        "churn-predictor",
        1,
        "0.3.0",
        "2026-09-12T12:00:00Z",
        pr=7,
        approvers=("erin",),
        owners=("@acme/growth",),
        risk="low",
        accuracy=0.81,
        roc_auc=0.88,
        p50_ms=0.05,
        description="Predicts which subscribers cancel next month.",
    )
    w.monitor(
        "churn-predictor",
        "2026-11-30T05:17:00Z",
        verdict("churn-predictor", "0.3.0", {"tenure": 0.01, "plan": 0.02}),
    )

    w.publish(
        HOSTILE,
        1,
        "6.6.6",
        "2026-11-01T00:00:00Z",
        pr=66,
        approvers=(HOSTILE,),
        owners=("@acme/growth", HOSTILE),
        risk="medium",
        description=HOSTILE_TEXT,
        run_url="javascript:alert(document.domain)",
    )
    w.refused(HOSTILE, "6.6.7", "2026-11-03T00:00:00Z", HOSTILE_TEXT, pr=67)
    return w


def render_naively(registry: Path, name: str, *, csp: bool) -> str:
    """The model page of `name` from the catalog's own templates with autoescaping OFF, and
    without its Content-Security-Policy unless `csp`: what the page would be without each
    defence."""
    import dataclasses

    from mlops_ci.catalog import site
    from mlops_ci.catalog.read import read_catalog
    from mlops_ci.registry import open_registry

    env = site.environment()
    env.autoescape = False
    catalog = read_catalog(open_registry(registry), str(registry))
    model = next(m for m in catalog.models if m.name == name)
    assets = site.assets()
    if not csp:
        assets = dataclasses.replace(assets, csp="default-src * 'unsafe-inline' data:")
    return env.get_template("model.html").render(
        assets=assets,
        catalog=catalog,
        model=model,
        charts=site.model_charts(model),
        events=list(model.events),
        root="../",
    )
