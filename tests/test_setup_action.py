"""actions/setup/installed.py: when the setup action may reuse an mlops-ci found on PATH."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
CHECK = PROJECT / "actions" / "setup" / "installed.py"


def _check(*args: str, python: str = sys.executable) -> tuple[int, str]:
    done = subprocess.run(
        [python, str(CHECK), *args], capture_output=True, text=True, check=False, cwd="/"
    )
    return done.returncode, (done.stdout + done.stderr).strip()


@pytest.fixture(scope="module")
def other_version_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout like this one whose package says it is 99.0.0."""
    source = tmp_path_factory.mktemp("source")
    shutil.copy2(PROJECT / "pyproject.toml", source / "pyproject.toml")
    (source / "mlops_ci").mkdir()
    (source / "mlops_ci" / "__init__.py").write_text('__version__ = "99.0.0"\n', encoding="utf-8")
    return source


def test_same_version_with_installed_extras_is_reused() -> None:
    code, reason = _check("--source", str(PROJECT), "--extras", "sklearn, torch")
    assert code == 0, reason
    assert "extras: sklearn,torch" in reason


def test_extra_all_is_followed_to_the_extras_it_names() -> None:
    code, reason = _check("--source", str(PROJECT), "--extras", "all")
    assert code == 0, reason


def test_other_version_is_not_reused(other_version_source: Path) -> None:
    code, reason = _check("--source", str(other_version_source))
    assert code == 1
    assert "is installed, the action is 99.0.0" in reason


def test_preflight_refuses_an_unknown_extra_before_anything_is_installed() -> None:
    code, reason = _check("--source", str(PROJECT), "--extras", "sklearn,tensorflow", "--preflight")
    assert (code, reason) == (1, "mlops-ci has no extra tensorflow")


def test_preflight_reports_the_source_version_and_the_python_version(
    other_version_source: Path,
) -> None:
    found = _check("--source", str(other_version_source), "--extras", "all", "--preflight")
    machine = f"{platform.system()}-{platform.machine()}".lower()
    key = f"mlops-ci-venv-{machine}-py{platform.python_version()}-99.0.0-all"
    assert found == (0, f"99.0.0 {platform.python_version()} {key}")


def test_the_cache_key_names_version_extras_and_python_and_ignores_extras_order(
    other_version_source: Path,
) -> None:
    def key(extras: str) -> str:
        return _check("--source", str(PROJECT), "--extras", extras, "--preflight")[1].split()[2]

    assert key("torch, sklearn") == key("sklearn,torch")
    assert key("sklearn") != key("sklearn,torch")
    assert key("").endswith(f"-py{platform.python_version()}-{_version()}-core")
    other = _check("--source", str(other_version_source), "--preflight")[1].split()[2]
    assert other != key("") and "-99.0.0-" in other


def _version() -> str:
    import mlops_ci

    return mlops_ci.__version__


def test_other_python_version_than_requested_is_not_reused() -> None:
    code, reason = _check("--source", str(PROJECT), "--python-version", "3.99.0")
    assert code == 1
    assert f"Python {platform.python_version()}, not the requested 3.99.0" == reason
    assert _check("--source", str(PROJECT), "--python-version", platform.python_version())[0] == 0


def test_interpreter_without_mlops_ci_is_not_reused(tmp_path: Path) -> None:
    venv.create(tmp_path / "bare", with_pip=False)
    code, reason = _check(
        "--source", str(PROJECT), python=str(tmp_path / "bare" / "bin" / "python")
    )
    assert code == 1
    assert reason.startswith("mlops_ci is not importable")
