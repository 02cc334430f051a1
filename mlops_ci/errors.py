"""The exceptions the CLI turns into one message and an exit code, never a traceback."""

from __future__ import annotations

from pathlib import Path

#: Exit codes shared by every command (DESIGN.md).
EXIT_OK = 0
EXIT_VERDICT = 1
EXIT_USAGE = 2


class MlopsCiError(Exception):
    """A problem to report as one clear line; exit code 2 unless a subclass says otherwise."""

    exit_code = EXIT_USAGE

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.column = column

    def __str__(self) -> str:
        where = self.path or ""
        if where and self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}" if where else self.message


class UsageError(MlopsCiError):
    """Bad flags, missing paths, unreadable configuration: exit 2."""


class CheckFailed(MlopsCiError):
    """The check said no (invalid manifest, failed test, missing approval): exit 1."""

    exit_code = EXIT_VERDICT
