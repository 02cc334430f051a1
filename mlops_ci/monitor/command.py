"""What `mlops-ci monitor` does: judge every served model, then report, file issues, record.

Verdict files (`.mlops/monitor/<model>/<time>.json`) are written last, after the issues are in
line, so a run that fails half-way (GitHub down) records nothing and the next run starts over.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_ci import atomic, gha
from mlops_ci.errors import EXIT_OK, EXIT_USAGE, EXIT_VERDICT, MlopsCiError, UsageError
from mlops_ci.monitor import check, render

if TYPE_CHECKING:
    from mlops_ci.registry import Registry

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """`30m`, `24h`, `7d`, `2w`."""
    m = _DURATION.match(text.strip())
    if not m:
        raise UsageError(f"--since {text!r}: write a number and a unit, e.g. 24h, 7d or 2w")
    if int(m.group(1)) == 0:
        raise UsageError(f"--since {text!r}: the duration must be more than zero")
    try:
        span = dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
        dt.datetime.now(dt.UTC) - span  # the window must start after the year 1
    except OverflowError:
        raise UsageError(f"--since {text!r}: the window would start before the year 1") from None
    return span


def _from_here(where: str | None) -> str | None:
    """A --data or --labels path as the user meant it: relative to the current folder. (The
    manifest's own `current` and `labels` paths are relative to the manifest, and check.py
    resolves relative paths that way, so a command-line path must reach it absolute.)"""
    if not where or "://" in where:
        return where
    return str(Path(where).absolute())


def main(
    registry: str,
    *,
    repo: Path,
    since: str = "7d",
    data: str | None = None,
    labels: str | None = None,
    models: Sequence[str] = (),
    fmt: str = "text",
    issues: bool = False,
    record: bool = True,
    now: dt.datetime | None = None,
) -> int:
    from mlops_ci.registry import open_registry

    now = now or dt.datetime.now(dt.UTC)
    if not repo.is_dir():  # once here, not once per model
        raise UsageError(f"--repo {repo}: no such folder (a checkout of the model repository)")
    opts = check.Options(
        repo=repo,
        now=now,
        since=parse_duration(since),
        data=_from_here(data),
        labels=_from_here(labels),
    )
    reg = open_registry(registry)
    if not reg.exists():
        raise UsageError(f"--registry {registry}: no such folder")
    names = check.models_of(reg, models)
    if data and len(names) > 1:
        raise UsageError("--data is one model's production data: add --model NAME")
    if not names:
        print(
            f"mlops-ci monitor: no model is deployed in {reg.uri}: nothing to judge",
            file=sys.stderr,
        )
    verdicts: list[check.Verdict] = []
    errors: list[tuple[str, str]] = []
    for name in names:
        try:
            verdicts.append(check.judge_model(reg, name, opts))
        except MlopsCiError as exc:
            errors.append((name, str(exc)))
        except Exception as exc:  # a bug judging one model must not leave the others unjudged
            errors.append((name, f"internal error: {type(exc).__name__}: {exc}"))

    if fmt == "json":
        print(render.to_json(verdicts, errors))
    else:
        print(render.text(verdicts, errors))
        if fmt == "github":
            for v in verdicts:
                for reason in v.reasons():
                    gha.annotation("error", reason, title=f"mlops-ci monitor: {v.name}")
            for name, error in errors:
                gha.annotation("error", error, title=f"mlops-ci monitor: {name}")
    gha.write_summary(render.summary(verdicts, errors))

    tracking: dict[str, dict[str, Any] | None] = {}
    if issues:
        from mlops_ci.github import GitHub
        from mlops_ci.monitor import issues as issue_sync

        gh = GitHub.from_env()
        actions = issue_sync.sync(
            gh,
            verdicts,
            gh.run_url(),
            registry=reg.uri,
            previous=lambda name: issue_sync.previous_of(_newest_verdict(reg, name)),
        )
        for action in actions:
            tracking[action.model] = action.record()
            if action.action == "left closed":
                print(
                    f"issue #{action.number} left closed (a person closed it as "
                    f"{(action.reason or '').replace('_', ' ')}): {action.model}",
                    file=sys.stderr,
                )
            elif action.action != "none":
                print(f"issue #{action.number} {action.action}: {action.model}", file=sys.stderr)
    if record:
        stamp, time = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y-%m-%dT%H:%M:%SZ")
        for v in verdicts:
            # `issue`: the issue that tracks the model after this run and what it covers (the
            # next run's way to respect one a person closed as not planned); absent without
            # --issues.
            extra = {"issue": tracking[v.name]} if v.name in tracking else {}
            payload = atomic.json_text({**v.to_json(), "time": time, **extra}, indent=None)
            reg.write_bytes(f".mlops/monitor/{v.name}/{stamp}.json", payload.encode() + b"\n")
    if errors:
        return EXIT_USAGE
    return EXIT_VERDICT if any(v.needs_attention for v in verdicts) else EXIT_OK


#: How many of a model's newest verdict files are read to find the last run with --issues.
TRACKED_LOOKBACK = 30


def _newest_verdict(reg: Registry, model: str) -> object:
    """The model's newest verdict file of a run with --issues (it has `issue`) as JSON (None:
    none, or unreadable). A run without --issues (by hand, to look) knows nothing of the issue:
    read as the newest, it made the next run forget that a person closed it as not planned.
    File names are sortable UTC times."""
    import json

    keys = sorted(k for k in reg.list_keys(f".mlops/monitor/{model}/") if k.endswith(".json"))
    for key in reversed(keys[-TRACKED_LOOKBACK:]):
        try:
            doc = json.loads(reg.read_bytes(key) or b"null")
        except (ValueError, RecursionError):
            return None
        if not isinstance(doc, dict) or "issue" in doc:
            return doc
    return None
