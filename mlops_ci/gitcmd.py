"""git as a subprocess: the one way the package runs it (plan, deploy, the gate's policy)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from mlops_ci.errors import UsageError

#: Plumbing on the largest repository takes seconds; a git that hangs (a lock, a prompt) must
#: fail the job with a message, not hold it until the runner's own limit.
TIMEOUT_S = 300


def run(
    repo: Path, *args: str, stdin: bytes | None = None, literal: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """`git -C repo args…` with its output captured; git's exit code is the caller's to read.
    `literal`: every pathspec is a path, never a pattern or magic (a folder may be named `*`)."""
    env = {**os.environ, "GIT_LITERAL_PATHSPECS": "1"} if literal else None
    try:
        return subprocess.run(
            ["git", "-C", str(repo), *args],
            input=stdin,
            capture_output=True,
            check=False,
            env=env,
            timeout=TIMEOUT_S,
        )
    except FileNotFoundError:
        raise UsageError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"git {args[0]} took more than {TIMEOUT_S} s in {repo}") from None


def output(repo: Path, *args: str, stdin: bytes | None = None, literal: bool = False) -> bytes:
    """`run`'s output; a git that fails is a UsageError with git's last line of complaint
    (one that says `repo` is no checkout says so in our words)."""
    done = run(repo, *args, stdin=stdin, literal=literal)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        if message and "not a git repository" in message[-1]:
            raise UsageError(f"{repo} is not in a git checkout (--repo: the checkout)")
        raise UsageError(f"git {args[0]} failed: {message[-1] if message else done.returncode}")
    return done.stdout


def installed() -> bool:
    return shutil.which("git") is not None
