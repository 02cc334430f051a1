"""`Problem`: one thing wrong with a file, as a value with its line, column and JSON pointer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a file, located as precisely as the file allows (1-based)."""

    path: str
    line: int | None
    column: int | None
    pointer: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "pointer": self.pointer,
            "message": self.message,
        }

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        return f"{where}: {self.message}"


def dotted(parts: Iterable[str | int]) -> str:
    """`spec.tests.cases[0].input`: a field path as a person writes it."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def pointer(parts: Iterable[str | int]) -> str:
    """The JSON pointer (RFC 6901) of a field path."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
