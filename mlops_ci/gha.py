"""The GitHub Actions runner's side channels: step outputs, the job summary and annotations.

Each function is a no-op (or prints) outside a runner, so commands behave the same on a laptop.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import sys
from collections.abc import Iterator
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
    command(f"{head}::{_escape_data(message)}", stream)


def command(line: str, stream: TextIO | None = None) -> None:
    """Print one workflow command: the only way past `guarded_output`."""
    out = stream or sys.stdout
    target = out.raw if isinstance(out, _CommandGuard) else out
    target.write(line + "\n")
    target.flush()


class _CommandGuard(io.TextIOBase):
    """A text stream that lets no line start a workflow command (see `escape.terminal`).

    Text is held until its line ends, so a command split across writes is caught too.
    """

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw
        self._line = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.raw.isatty()

    def fileno(self) -> int:
        return self.raw.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.raw, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        from mlops_ci.report.escape import terminal

        self._line += text
        cut = max(self._line.rfind("\n"), self._line.rfind("\r"))
        if cut >= 0:
            done, self._line = self._line[: cut + 1], self._line[cut + 1 :]
            self.raw.write(terminal(done[:-1]) + "\n")
        return len(text)

    def flush(self) -> None:
        from mlops_ci.report.escape import terminal

        # A partial line is written only when it can no longer become a command start, and
        # never its trailing '#'s: the runner reads '##[' anywhere in a line, so the next write
        # could complete one with what is already out.
        if self._line.strip() and not ":".startswith(self._line.strip()):
            held = len(self._line) - len(self._line.rstrip("#"))
            cut = len(self._line) - held
            done, self._line = self._line[:cut], self._line[cut:]
            self.raw.write(terminal(done))
        self.raw.flush()

    def close_line(self) -> None:
        if self._line:
            from mlops_ci.report.escape import terminal

            self.raw.write(terminal(self._line))
            self._line = ""
        self.raw.flush()


@contextlib.contextmanager
def guarded_output() -> Iterator[None]:
    """While inside, stdout and stderr cannot print a workflow command except through
    `command`: the runner reads both streams, and mlops-ci prints text from pull requests
    (model, case and column names, error messages) in many places."""
    saved = sys.stdout, sys.stderr
    guards = _CommandGuard(sys.stdout), _CommandGuard(sys.stderr)
    sys.stdout, sys.stderr = guards
    try:
        yield
    finally:
        for guard in guards:
            guard.close_line()
        sys.stdout, sys.stderr = saved


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
