"""Compiles a BackgroundJob schedule into what runs it: a native CronJob or operator timing.

Pure functions of the spec, the object's identity (for the ``H`` hash) and ``now``. Errors are
``ScheduleError`` with the spec field path in front, so the Ready condition's message names the
field the user has to fix.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import DescriptionTypeEnum, ExpressionDescriptor, Options
from cron_descriptor.ExpressionParser import ExpressionParser
from cron_descriptor.GetText import GetText

from bgjob import cronspec
from bgjob.api import Schedule, Weekday

NEXT_RUN_COUNT = 3
_DOW = {d: i for i, d in enumerate([Weekday.SUNDAY, Weekday.MONDAY, Weekday.TUESDAY,
                                     Weekday.WEDNESDAY, Weekday.THURSDAY, Weekday.FRIDAY,
                                     Weekday.SATURDAY])}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(d|h|m|s)")


class Mode(StrEnum):
    CRONJOB = "CronJob"    # a native CronJob does the timing
    OPERATOR = "Operator"  # the operator times runs and creates Jobs itself


class ScheduleError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Compiled:
    kind: str
    mode: Mode
    time_zone: str
    description: str
    cron: str = ""                       # CronJob mode: the expression handed to the CronJob
    interval: timedelta | None = None    # Operator mode, ``every``
    at: datetime | None = None           # Operator mode, ``at`` (UTC)
    anchor: datetime | None = None       # Operator mode, ``every``: the series counts from here

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


def parse_duration(text: str) -> timedelta:
    """A Go-style duration (``1h30m``, ``90s``) plus whole days (``1d``), which the contract
    writes and Go's parser lacks; the schema already checked the shape."""
    if not text or _DURATION_PART.sub("", text):
        raise ValueError(f"{text!r} is not a duration like 30m, 1h30m or 1d")
    seconds = 0.0
    for number, unit in _DURATION_PART.findall(text):
        seconds += float(number) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    return timedelta(seconds=seconds)


def stable_hash(namespace: str, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{namespace}/{name}".encode()).digest()[:8], "big")


def _uses_hash(field: str) -> bool:
    """Whether ``H`` is a token of the field (``H``, ``H/2``, ``1-H``), not a letter of a name.

    Day and month names (THU, MAR) contain letters too, so a substring test would take
    ``0 9 * * THU`` for a hash and refuse it, which the CronJob controller accepts.
    """
    for part in field.split(","):
        rng = part.partition("/")[0]
        if "H" in rng.split("-"):
            return True
    return False


def resolve_hash(expr: str, namespace: str, name: str) -> str:
    """Replace ``H`` (and ``H/n``) in the minute and hour fields by stable values."""
    parts = expr.split()
    if len(parts) != 5 or not any(_uses_hash(p) for p in parts):
        return expr
    h = stable_hash(namespace, name)
    for idx, span in ((0, 60), (1, 24)):
        part = parts[idx]
        seed = h >> (16 * idx)
        if part == "H":
            parts[idx] = str(seed % span)
        elif part.startswith("H/") and part[2:].isdigit() and int(part[2:]) > 0:
            step = int(part[2:])
            parts[idx] = f"{seed % step}-{span - 1}/{step}"
    for idx in (2, 3, 4):
        if _uses_hash(parts[idx]):
            raise cronspec.CronError("H is allowed only in the minute and hour fields")
    return " ".join(parts)


def _cron_for_every(every: timedelta) -> str | None:
    """The cron expression for an interval that divides an hour or a day evenly, else None."""
    minutes, rest = divmod(int(every.total_seconds()), 60)
    if rest or every.total_seconds() != int(every.total_seconds()):
        return None
    if 1 <= minutes <= 30 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    hours, rem = divmod(minutes, 60)
    if rem == 0 and 1 <= hours <= 12 and 24 % hours == 0:
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    if minutes == 24 * 60:
        return "0 0 * * *"
    return None


def _hhmm(text: str) -> tuple[int, int]:
    h, m = text.split(":")
    return int(h), int(m)


class _Describer(ExpressionDescriptor):  # type: ignore[misc]
    """cron_descriptor's describer without its per-call cost: the library resolves its own
    path and parses the locale's .mo file on every construction, which was a third of the
    operator's CPU while it processed 1,000 BackgroundJobs after a restart (py-spy). The
    translations are loaded once here; a unit test checks the output stays the library's."""

    _text = GetText("en_US")

    def __init__(self, expression: str) -> None:
        self._expression = expression
        self._options = Options()
        self.get_text = self._text
        self._expression_parts = ExpressionParser(expression, self._options).parse()


@functools.lru_cache(maxsize=4096)
def describe_cron(expr: str) -> str:
    """Cached: many BackgroundJobs share an expression, and every pass compiles the schedule."""
    try:
        return str(_Describer(expr).get_description(DescriptionTypeEnum.FULL))
    except Exception:  # the describer is cosmetic; never let it fail a reconcile
        return expr


def _compile_cron(cron: str, tz: str, namespace: str, name: str) -> Compiled:
    try:
        resolved = resolve_hash(cron.strip(), namespace, name)
        validate_cron(resolved, tz)
    except cronspec.CronError as exc:
        raise ScheduleError("spec.schedule.cron", f"{cron!r}: {exc}") from None
    text = cron.strip()
    desc = describe_cron(cronspec.MACROS.get(resolved, resolved))
    if resolved != text:
        desc += f" ({text} hashed to {resolved})"
    return Compiled("cron", Mode.CRONJOB, tz, desc, cron=resolved)


def _compile_every(every: str, tz: str) -> Compiled:
    try:
        interval = parse_duration(every)
    except ValueError as exc:
        raise ScheduleError("spec.schedule.every", str(exc)) from None
    if interval < timedelta(minutes=1):
        raise ScheduleError("spec.schedule.every", f"{every!r} is below 1m")
    cron = _cron_for_every(interval)
    desc = f"Every {every}"
    if cron is not None:
        return Compiled("every", Mode.CRONJOB, tz, desc, cron=cron, interval=interval)
    return Compiled("every", Mode.OPERATOR, tz, desc, interval=interval)


def _compile_at(text: str, tz: str) -> Compiled:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ScheduleError("spec.schedule.at", f"{text!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise ScheduleError("spec.schedule.at", f"{text!r} needs a zone offset or Z")
    at = at.astimezone(UTC)
    return Compiled("at", Mode.OPERATOR, tz, f"Once, at {at.strftime('%Y-%m-%dT%H:%M:%SZ')}",
                    at=at)


def compile_schedule(s: Schedule, namespace: str, name: str) -> Compiled:
    """Decide how the schedule runs. Raises ScheduleError naming the offending field."""
    try:
        ZoneInfo(s.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError("spec.schedule.timeZone",
                            f"unknown time zone {s.time_zone!r} (use an IANA name such as "
                            "Europe/Berlin)") from None
    tz = s.time_zone
    if s.cron is not None:
        return _compile_cron(s.cron, tz, namespace, name)
    if s.every is not None:
        return _compile_every(s.every, tz)
    if s.daily is not None:
        h, m = _hhmm(s.daily)
        return Compiled("daily", Mode.CRONJOB, tz, f"At {s.daily}, every day",
                        cron=f"{m} {h} * * *")
    if s.weekly is not None:
        h, m = _hhmm(s.weekly.time)
        return Compiled("weekly", Mode.CRONJOB, tz,
                        f"At {s.weekly.time}, every {s.weekly.day.value}",
                        cron=f"{m} {h} * * {_DOW[s.weekly.day]}")
    if s.monthly is not None:
        h, m = _hhmm(s.monthly.time)
        return Compiled("monthly", Mode.CRONJOB, tz,
                        f"At {s.monthly.time}, on day {s.monthly.day} of the month",
                        cron=f"{m} {h} {s.monthly.day} * *")
    if s.at is not None:
        return _compile_at(s.at, tz)
    raise ScheduleError("spec.schedule", "set one of cron, every, daily, weekly, monthly, at")


def validate_cron(expr: str, time_zone: str) -> None:
    spec = cronspec.parse(expr)
    probe = datetime(2000, 1, 1, tzinfo=UTC)
    first = cronspec.next_after(spec, probe, ZoneInfo(time_zone))
    if first is None:
        # robfig searches five years ahead; Feb 29 fires within that window from any start
        raise cronspec.CronError("this schedule can never fire")


def next_run_times(c: Compiled, now: datetime, anchor: datetime,
                   count: int = NEXT_RUN_COUNT) -> list[datetime]:
    """The next ``count`` run times after ``now`` (UTC).

    ``anchor`` is where operator-timed intervals count from (the object's creation time), so
    the series is stable across operator restarts.
    """
    if c.mode is Mode.CRONJOB:
        return cronspec.next_times(cronspec.parse(c.cron), now, c.zone, count)
    if c.at is not None:
        return [c.at] if c.at > now else []
    assert c.interval is not None
    anchor = anchor.astimezone(UTC)  # absolute time: aware arithmetic in a zone is wall-clock
    step = c.interval.total_seconds()
    k = max(0, int((now - anchor).total_seconds() // step) + 1)
    return [anchor + timedelta(seconds=step * (k + i)) for i in range(count)]
