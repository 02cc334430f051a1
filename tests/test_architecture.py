"""The package's layering holds, and docs/architecture.md maps every module of it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlops_ci"
MAP = PACKAGE.parent / "docs" / "architecture.md"


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (lazy imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("frameworks"), ids=lambda p: p.name)
def test_frameworks_import_nothing_from_the_stages(path: Path) -> None:
    stages = {"data", "convert", "evaluate", "bench", "pipeline", "report", "validate", "plan"}
    bad = {m for m in _imports(path) if m.split(".")[:2] in ([["mlops_ci", s] for s in stages])}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("manifest"), ids=lambda p: p.name)
def test_manifests_need_no_numpy_and_no_framework(path: Path) -> None:
    heavy = {"numpy", "onnx", "onnxruntime", "sklearn", "torch", "xgboost", "lightgbm"}
    bad = {m for m in _imports(path) if m.split(".")[0] in heavy or "frameworks" in m}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_policy_decides_without_knowing_github() -> None:
    assert not {m for m in _imports(PACKAGE / "policy.py") if m.startswith("mlops_ci.github")}


def test_the_architecture_map_names_every_module_and_package() -> None:
    text = MAP.read_text(encoding="utf-8")
    names = [p.name for p in PACKAGE.glob("*.py") if p.name != "__main__.py"]
    names += [f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    missing = [n for n in sorted(names) if f"`{n}" not in text]
    assert not missing, f"docs/architecture.md has no line for {missing}"
