"""Renders stage results for people and machines: text, JSON, GitHub annotations, Markdown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mlops_ci import gha
from mlops_ci.manifest import Checked


def validation_json(results: Sequence[Checked]) -> str:
    doc: dict[str, Any] = {
        "manifests": [
            {
                "path": r.shown,
                "valid": r.valid,
                "errors": [p.to_json() for p in r.problems],
            }
            for r in results
        ]
    }
    return json.dumps(doc, indent=2)


def validation_text(results: Sequence[Checked]) -> str:
    lines = []
    for r in results:
        if r.valid:
            lines.append(f"ok    {r.shown}")
        else:
            lines.append(f"FAIL  {r.shown}")
            lines.extend(f"  {p}" for p in r.problems)
    bad = sum(not r.valid for r in results)
    problems = sum(len(r.problems) for r in results)
    if bad:
        lines.append(
            f"{bad} of {len(results)} manifest{'s' if len(results) != 1 else ''} invalid, "
            f"{problems} problem{'s' if problems != 1 else ''}"
        )
    else:
        lines.append(f"{len(results)} manifest{'s' if len(results) != 1 else ''} valid")
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def validation_markdown(results: Sequence[Checked]) -> str:
    bad = [r for r in results if not r.valid]
    head = "### mlops-ci validate\n\n"
    if not bad:
        head += f"✅ {len(results)} manifest{'s' if len(results) != 1 else ''} valid\n\n"
    else:
        head += f"❌ {len(bad)} of {len(results)} manifests invalid\n\n"
    rows = ["| Manifest | Model | Result |", "|---|---|---|"]
    for r in results:
        meta = r.data.get("metadata") if r.data else None
        name = meta.get("name", "") if isinstance(meta, dict) else ""
        verdict = (
            "✅ valid"
            if r.valid
            else f"❌ {len(r.problems)} problem{'s' if len(r.problems) != 1 else ''}"
        )
        rows.append(f"| `{r.shown}` | {_md_cell(str(name))} | {verdict} |")
    out = head + "\n".join(rows) + "\n"
    if bad:
        out += "\n| Where | Problem |\n|---|---|\n"
        for r in bad:
            for p in r.problems:
                where = f"`{r.shown}:{p.line}`" if p.line else f"`{r.shown}`"
                out += f"| {where} | {_md_cell(p.message)} |\n"
    return out


def validation_annotations(results: Sequence[Checked]) -> None:
    for r in results:
        for p in r.problems:
            gha.annotation(
                "error",
                p.message,
                file=r.shown,
                line=p.line,
                col=p.column,
                title="mlops-ci validate",
            )
