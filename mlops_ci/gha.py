"""The GitHub Actions runner's side channels: step outputs, the job summary and annotations.

Each function is a no-op (or prints) outside a runner, so commands behave the same on a laptop.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import TextIO


def in_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(
    level: str,
    message: str,
    *,
    file: str | None = None,
    line: int | None = None,
    col: int | None = None,
    title: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Print a workflow command (`::error file=…,line=…::…`) that GitHub shows on the diff."""
    props = []
    if file:
        props.append(f"file={_escape_property(file)}")
    if line is not None:
        props.append(f"line={line}")
    if col is not None:
        props.append(f"col={col}")
    if title:
        props.append(f"title={_escape_property(title)}")
    head = f"::{level} {','.join(props)}" if props else f"::{level}"
    print(f"{head}::{_escape_data(message)}", file=stream or sys.stdout)


def write_summary(markdown: str) -> bool:
    """Append Markdown to the job summary; False when not on a runner."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return False
    with Path(target).open("a", encoding="utf-8") as fh:
        fh.write(markdown.rstrip("\n") + "\n\n")
    return True


def set_output(name: str, value: str) -> bool:
    """Set a step output (multi-line safe); False when not on a runner."""
    target = os.environ.get("GITHUB_OUTPUT")
    if not target:
        return False
    delimiter = f"mlops_ci_{secrets.token_hex(8)}"
    with Path(target).open("a", encoding="utf-8") as fh:
        fh.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    return True
