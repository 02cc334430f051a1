"""System tools some tests need beyond Python packages: Debian's chromium and the npm packages in
tests/render, which .ci/run installs. On a machine with only Python those tests skip and say what
to install; under CI (`CI` set) they fail instead, so a missing install step cannot pass unseen."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and none of the background connections this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require(present: bool, what: str) -> None:
    """Skip (fail under CI) when `what` is not installed."""
    if present:
        return
    message = f"{what} is not installed (.ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
