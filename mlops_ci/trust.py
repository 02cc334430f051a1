"""What a pull request may trust beyond the built-in defaults: the `trusted_types` of
`.mlops/policy.yaml`, read from git at the base commit, never from the working tree.

A pull request cannot grant itself trust: the policy it is judged by is the one it branched
from (a change to the policy needs the highest approval tier, and takes effect once merged).
Only classes are accepted, never functions, builtins or modules that reach the operating system
or the interpreter, so a trusted type can rebuild an object but never call anything by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_ci import gitcmd
from mlops_ci.errors import UsageError

if TYPE_CHECKING:
    from mlops_ci.frameworks import Artifact
    from mlops_ci.manifest import Manifest

POLICY_PATH = ".mlops/policy.yaml"
#: Overrides the commit the policy is read at (default: the pull request's base, else HEAD).
POLICY_REF_ENV = "MLOPS_CI_POLICY_REF"
#: Modules whose classes are never trusted, whatever the policy says: each can reach the
#: operating system, the interpreter or code by name. The one list: `forbidden_pattern()` turns
#: it into the policy schema's `not` pattern (a test holds the shipped schema to it), so
#: `mlops-ci validate` and convert refuse the same names.
FORBIDDEN_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "builtins",
        "__builtin__",
        "importlib",
        "runpy",
        "pickle",
        "_pickle",
        "marshal",
        "types",
        "ctypes",
        "sys",
        "shutil",
        "socket",
        "io",
        "_io",
        "codecs",
        "functools",
        "operator",
        "code",
        "codeop",
        "pty",
        "multiprocessing",
        "threading",
        "_thread",
        "signal",
        "webbrowser",
        "tempfile",
        "pathlib",
        "inspect",
        "gc",
        "copyreg",
        "shelve",
        "dill",
        "joblib",
        "cloudpickle",
        "torch",
        "numpy.lib",
    }
)


def forbidden_pattern() -> str:
    """The policy schema's pattern for a name inside a forbidden module: a module of
    `FORBIDDEN_MODULES` or a submodule, leading underscores ignored (`_io`, `__builtin__`, the
    C twins of many modules), then a dot."""
    alternatives = "|".join(re.escape(m) for m in sorted(FORBIDDEN_MODULES))
    return rf"^_*({alternatives})\."


_FORBIDDEN = re.compile(forbidden_pattern())


def is_forbidden(name: str) -> bool:
    """Whether the dotted `name` lives in a forbidden module (the schema's rule, in Python)."""
    return _FORBIDDEN.match(name) is not None


@dataclass(frozen=True)
class Trust:
    """The extra trusted types, and where they were read (for messages)."""

    types: tuple[str, ...]
    source: str


def policy_ref(environ: Mapping[str, str] | None = None) -> str:
    """MLOPS_CI_POLICY_REF, else the base SHA of the pull request the run is for, else HEAD."""
    from mlops_ci.github import event_payload

    env = os.environ if environ is None else environ
    if env.get(POLICY_REF_ENV):
        return env[POLICY_REF_ENV]
    pr = event_payload(env).get("pull_request")
    sha = (pr.get("base") or {}).get("sha") if isinstance(pr, dict) else None
    return sha if isinstance(sha, str) and sha else "HEAD"


def policy_text(folder: Path, ref: str) -> str | None:
    """The policy's text at `ref` in the repository holding `folder`; None when it has none."""
    if not gitcmd.installed() or gitcmd.run(folder, "rev-parse", "--git-dir").returncode != 0:
        return None  # not a repository (or no git to read one): only the built-in trusted types
    if gitcmd.run(folder, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        if ref == "HEAD":
            return None  # a repository without commits yet
        raise UsageError(
            f"the policy's base commit {ref[:12]} is not in this clone, so the trusted types of "
            f"{POLICY_PATH} cannot be read; check out with fetch-depth: 0"
        )
    shown = gitcmd.run(folder, "show", f"{ref}:{POLICY_PATH}")
    if shown.returncode != 0:
        return None
    return shown.stdout.decode("utf-8", "replace")


def trusted_types(folder: Path, ref: str | None = None) -> Trust:
    """The policy's trusted_types at `ref` (default `policy_ref()`), each checked to be a class.

    A policy that is invalid, or names anything but a class, is a configuration error (exit 2):
    failing closed, since the alternative would be to guess what the reviewers meant.
    """
    from mlops_ci import manifest
    from mlops_ci.resources import POLICY_SCHEMA

    ref = ref or policy_ref()
    source = f"{POLICY_PATH} at {ref[:12]}"
    text = policy_text(folder, ref)
    if text is None:
        return Trust((), f"{source} (absent)")
    data, problems, _ = manifest.parse_document(text, POLICY_PATH, POLICY_SCHEMA)
    if data is None or problems:
        first = problems[0] if problems else None
        where = f" line {first.line}" if first and first.line else ""
        raise UsageError(f"{source} is invalid:{where} {first.message if first else ''}".strip())
    names = tuple(str(n) for n in data.get("trusted_types") or ())
    top = gitcmd.run(folder, "rev-parse", "--show-toplevel").stdout.decode().strip()
    for name in names:
        check_class(name, source, Path(top) if top else None)
    return Trust(names, source)


def check_class(name: str, source: str = POLICY_PATH, repository: Path | None = None) -> None:
    """Refuse a trusted type that is not a class, lives in a forbidden module, or is defined in
    `repository` itself (whose code the pull request can change under the reviewed name)."""
    module_name, _, attr = name.rpartition(".")
    parts = module_name.split(".")
    if not module_name or is_forbidden(name):
        raise UsageError(
            f"{source}: trusted type {name!r} is refused: only classes of model libraries may "
            "be trusted, never anything from modules that reach the operating system or the "
            "interpreter"
        )
    if repository is not None:
        _refuse_repository_code(name, parts[0], repository, source)
    try:
        value = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"{source}: trusted type {name!r} cannot be found: {exc}") from exc
    if not inspect.isclass(value):
        raise UsageError(
            f"{source}: trusted type {name!r} is a {type(value).__name__}, not a class; only "
            "classes may be trusted (a trusted function can be called by the file)"
        )


def _refuse_repository_code(name: str, package: str, repository: Path, source: str) -> None:
    # located without importing it: importing would already run the pull request's version
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return  # not importable: the import below says so
    if spec is None:
        return
    places = [spec.origin or "", *(spec.submodule_search_locations or ())]
    root = repository.resolve()
    for place in places:
        if place and Path(place).resolve().is_relative_to(root):
            raise UsageError(
                f"{source}: trusted type {name!r} is defined in the repository itself "
                f"({Path(place).resolve().relative_to(root)}), which a pull request can change "
                "under the reviewed name; install it as a package (a pinned dependency) instead"
            )


#: Artifact formats whose loader takes a list of trusted types.
TYPED_FORMATS = frozenset({"skops"})


def artifact(m: Manifest) -> Artifact:
    """The manifest's artifact, with the policy's trusted types where its format uses them."""
    from mlops_ci.frameworks import Artifact

    types = trusted_types(m.path.parent).types if m.artifact_format in TYPED_FORMATS else ()
    return Artifact(m.artifact_path, m.artifact_sha256, m.artifact_format, types)
