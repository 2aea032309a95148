"""Pure rules of a schedule's calendar: the active window and the skip list.

A due time outside ``[activeFrom, activeUntil)`` is not a due time at all (nothing is counted
for it); a due time inside the window that the skip list names is *skipped*: it does not run,
is counted in ``stats.skipped`` with a ``RunSkipped`` event, and never counts as missed. Dates
and skip crons are read on the schedule's own wall clock, so "2026-03-29" in Europe/Berlin is
that local day, whatever the UTC offset did that night.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from bgjob import cronspec
from bgjob.api import Schedule


class RuleError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Rules:
    active_from: datetime | None = None
    active_until: datetime | None = None
    dates: frozenset[date] = frozenset()
    crons: tuple[tuple[str, cronspec.CronSpec], ...] = ()
    windows: tuple[tuple[datetime, datetime], ...] = ()

    @property
    def skips(self) -> bool:
        return bool(self.dates or self.crons or self.windows)


def _instant(text: str, field: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RuleError(field, f"{text!r} is not an RFC 3339 time") from None
    if t.tzinfo is None:
        raise RuleError(field, f"{text!r} needs a zone offset or Z")
    return t.astimezone(UTC)


def compile_rules(s: Schedule, path: str) -> Rules:
    """The window and skip list of ``s``; RuleError names the field (``path`` is where the
    schedule sits in the spec). The schema checked the shapes; this checks the values."""
    start = _instant(s.active_from, f"{path}.activeFrom") if s.active_from else None
    end = _instant(s.active_until, f"{path}.activeUntil") if s.active_until else None
    if start is not None and end is not None and start >= end:
        raise RuleError(f"{path}.activeUntil", "must be after activeFrom")
    skip = s.skip
    if skip is None:
        return Rules(start, end)
    dates = []
    for i, text in enumerate(skip.dates):
        try:
            dates.append(date.fromisoformat(text))
        except ValueError:
            raise RuleError(f"{path}.skip.dates[{i}]", f"{text!r} is not a date "
                            "(YYYY-MM-DD)") from None
    crons = []
    for i, text in enumerate(skip.cron):
        try:
            crons.append((text, cronspec.parse(text)))
        except cronspec.CronError as exc:
            raise RuleError(f"{path}.skip.cron[{i}]", f"{text!r}: {exc}") from None
    windows = []
    for i, w in enumerate(skip.windows):
        lo = _instant(w.from_, f"{path}.skip.windows[{i}].from")
        hi = _instant(w.until, f"{path}.skip.windows[{i}].until")
        if lo >= hi:
            raise RuleError(f"{path}.skip.windows[{i}].until", "must be after from")
        windows.append((lo, hi))
    return Rules(start, end, frozenset(dates), tuple(crons), tuple(windows))


def active(r: Rules, t: datetime) -> bool:
    return (r.active_from is None or t >= r.active_from) and (
        r.active_until is None or t < r.active_until)


def expired(r: Rules, now: datetime) -> bool:
    return r.active_until is not None and now >= r.active_until


def skip_reason(r: Rules, t: datetime, zone: ZoneInfo) -> str | None:
    """Why the due time ``t`` is skipped, in words, or None when it runs."""
    if not r.skips:
        return None
    local = t.astimezone(zone)
    if local.date() in r.dates:
        return f"{local.date().isoformat()} is a skip date"
    for text, spec in r.crons:
        if cronspec.matches(spec, t, zone):
            return f"it matches skip cron {text!r}"
    for lo, hi in r.windows:
        if lo <= t < hi:
            return (f"it is inside the skip window {lo.strftime('%Y-%m-%dT%H:%M:%SZ')} to "
                    f"{hi.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    return None
