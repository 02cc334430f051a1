"""Atomic file writes: write beside the target, then rename, so readers never see half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes(path: Path, payload: bytes) -> Path:
    """Write `payload` to `path` atomically (the folder is created when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically, as UTF-8."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, doc: Any) -> Path:
    """Write `doc` as indented JSON to `path` atomically."""
    return write_text(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
