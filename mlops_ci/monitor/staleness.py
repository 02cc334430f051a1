"""Staleness: how old the serving version is against the deployed manifest's deadlines."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

#: Days before the deadline when a model starts to warn (the manifest's `warn_days` overrides).
DEFAULT_WARN_DAYS = 30

Status = Literal["fresh", "warning", "stale", "no deadline"]


@dataclass(frozen=True)
class Staleness:
    status: Status
    deployed: dt.datetime
    age_days: float
    due: dt.datetime | None
    days_left: float | None
    reason: str

    @property
    def stale(self) -> bool:
        return self.status == "stale"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "deployed": _iso(self.deployed),
            "age_days": round(self.age_days, 2),
            "due": _iso(self.due) if self.due else None,
            "days_left": None if self.days_left is None else round(self.days_left, 2),
            "reason": self.reason,
        }


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 time (release.json's `time`); a time without zone is UTC."""
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def judge(
    deployed: dt.datetime,
    *,
    refresh_by: dt.date | None,
    max_age_days: int | None,
    now: dt.datetime,
    warn_days: int = DEFAULT_WARN_DAYS,
) -> Staleness:
    """The earlier of `refresh_by` (end of that day, UTC) and deploy time + `max_age_days`."""
    age = (now - deployed).total_seconds() / 86400
    deadlines: list[tuple[dt.datetime, str]] = []
    if refresh_by is not None:
        end = dt.datetime.combine(refresh_by, dt.time(), dt.UTC) + dt.timedelta(days=1)
        deadlines.append((end, f"refresh_by {refresh_by.isoformat()}"))
    if max_age_days is not None:
        # Past the year 9999 (the schema sets no maximum): never due.
        with contextlib.suppress(OverflowError):
            deadlines.append(
                (deployed + dt.timedelta(days=max_age_days), f"max_age_days {max_age_days}")
            )
    if not deadlines:
        return Staleness("no deadline", deployed, age, None, None, "the manifest sets no deadline")
    due, rule = min(deadlines)
    left = (due - now).total_seconds() / 86400
    if left <= 0:
        status: Status = "stale"
        reason = f"past due by {-left:.0f} days ({rule}; deployed {age:.0f} days ago)"
    elif left <= warn_days:
        status = "warning"
        reason = f"due in {left:.0f} days ({rule})"
    else:
        status = "fresh"
        reason = f"due in {left:.0f} days ({rule})"
    return Staleness(status, deployed, age, due, left, reason)
