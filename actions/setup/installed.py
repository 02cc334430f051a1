"""Tell the setup action whether an interpreter already has the right mlops-ci (stdlib only).

Default mode, run BY the candidate interpreter (the `python` beside an `mlops-ci` found on PATH):
exit 0 and print why when it has mlops-ci importable at the version of the source checkout, every
distribution that the requested extras require, and (when asked) the requested Python version;
otherwise exit 1 and print what is missing.

`--preflight`, run by the Python that would create the virtualenv, before anything is installed:
exit 1 with a message when that Python is older than 3.11 or an extra is unknown to the source
checkout's pyproject.toml; otherwise print "<mlops-ci version> <Python version> <cache key>".

Version equality is the contract: a runner whose mlops-ci reports the same `__version__` as the
action's checkout is trusted to run the same code. Requirements of extras are checked for presence,
not for version ranges (that would need `packaging`, which a bare interpreter may lack).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import platform
import re
import sys
from pathlib import Path

_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def source_version(source: Path) -> str:
    """The `__version__` of the mlops_ci package in a source checkout."""
    text = (source / "mlops_ci" / "__init__.py").read_text(encoding="utf-8")
    found = _VERSION.search(text)
    if found is None:
        raise SystemExit(f"no __version__ in {source / 'mlops_ci' / '__init__.py'}")
    return found.group(1)


def unknown_extras(source: Path, extras: set[str]) -> set[str]:
    """The requested extras that the source checkout's pyproject.toml does not define."""
    import tomllib  # here, so that --preflight on Python < 3.11 can say what is wrong

    with (source / "pyproject.toml").open("rb") as fh:
        project = tomllib.load(fh).get("project", {})
    return extras - {_normalize(e) for e in project.get("optional-dependencies", {})}


def required_distributions(dist: md.Distribution, extras: set[str]) -> set[str]:
    """Distribution names that `extras` of `dist` require, following self-references (`all`)."""
    own = _normalize(dist.metadata["Name"])
    provided = {_normalize(e) for e in dist.metadata.get_all("Provides-Extra") or []}
    unknown = extras - provided
    if unknown:
        raise LookupError(f"mlops-ci has no extra {', '.join(sorted(unknown))}")
    needed: set[str] = set()
    seen: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in dist.requires or []:
            name_part, _, marker = requirement.partition(";")
            if extra not in {_normalize(e) for e in _EXTRA_MARKER.findall(marker)}:
                continue
            match = _REQUIREMENT.match(name_part)
            if match is None:
                continue
            name, nested = _normalize(match.group(1)), match.group(2) or ""
            if name == own:
                todo.extend(_normalize(e) for e in nested.split(",") if e.strip())
            else:
                needed.add(name)
    return needed


def check(source: Path, extras: set[str], python_version: str) -> str:
    """Why this interpreter can be reused; raises LookupError saying why not."""
    if python_version and platform.python_version() != python_version:
        raise LookupError(f"Python {platform.python_version()}, not the requested {python_version}")
    want = source_version(source)
    try:
        module = importlib.import_module("mlops_ci")
    except ImportError as exc:
        raise LookupError(f"mlops_ci is not importable: {exc}") from None
    have = getattr(module, "__version__", "?")
    if have != want:
        raise LookupError(f"mlops-ci {have} is installed, the action is {want}")
    dist = md.distribution("mlops-ci")
    missing = []
    for name in sorted(required_distributions(dist, extras)):
        try:
            md.distribution(name)
        except md.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise LookupError(f"missing for extras {','.join(sorted(extras))}: {', '.join(missing)}")
    return f"mlops-ci {have}, extras: {','.join(sorted(extras)) or 'none'}"


def cache_key(version: str, extras: set[str]) -> str:
    """The Actions cache key of an installed environment: what makes two installs the same.

    The mlops-ci version (the contract, as for reuse), the extras, the exact Python version,
    and the machine, since a virtualenv holds compiled wheels and absolute paths.
    """
    machine = f"{platform.system()}-{platform.machine()}".lower()
    return (
        f"mlops-ci-venv-{machine}-py{platform.python_version()}-{version}-"
        f"{'+'.join(sorted(extras)) or 'core'}"
    )


def preflight(source: Path, extras: set[str]) -> str:
    """'<mlops-ci version> <Python version> <cache key>'; raises LookupError when installing
    cannot work."""
    # This script runs under whatever python3 the runner has, which may predate our minimum.
    if sys.version_info < (3, 11):  # noqa: UP036
        raise LookupError(f"mlops-ci needs Python 3.11 or newer, found {platform.python_version()}")
    unknown = unknown_extras(source, extras)
    if unknown:
        raise LookupError(f"mlops-ci has no extra {', '.join(sorted(unknown))}")
    version = source_version(source)
    return f"{version} {platform.python_version()} {cache_key(version, extras)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="the mlops-ci checkout")
    parser.add_argument("--extras", default="", help="comma-separated extras")
    parser.add_argument("--python-version", default="", help="exact Python version, or empty")
    parser.add_argument("--preflight", action="store_true", help="check before installing")
    args = parser.parse_args(argv)
    extras = {_normalize(e.strip()) for e in args.extras.split(",") if e.strip()}
    try:
        if args.preflight:
            print(preflight(args.source, extras))
        else:
            print(check(args.source, extras, args.python_version))
    except LookupError as exc:
        print(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
