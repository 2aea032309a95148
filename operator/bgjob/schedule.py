"""Compiles a BackgroundJob schedule into what runs it: a native CronJob or operator timing.

Pure functions of the spec, the object's identity (for the ``H`` hash) and ``now``. Errors are
``ScheduleError`` with the spec field path in front, so the Ready condition's message names the
field the user has to fix.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import DescriptionTypeEnum, ExpressionDescriptor, Options
from cron_descriptor.ExpressionParser import ExpressionParser
from cron_descriptor.GetText import GetText

from bgjob import cronspec, skiprules
from bgjob.api import CatchUp, Schedule, Weekday
from bgjob.skiprules import Rules

NEXT_RUN_COUNT = 3
NO_RULES = Rules()
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
    name: str = ""                       # the spec.schedules entry ("" for spec.schedule)
    rules: Rules = NO_RULES              # active window and skip list
    catch_up: CatchUp = CatchUp.LATEST

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


def _compile_cron(cron: str, tz: str, namespace: str, name: str,
                  path: str = "spec.schedule") -> Compiled:
    try:
        resolved = resolve_hash(cron.strip(), namespace, name)
        validate_cron(resolved, tz)
    except cronspec.CronError as exc:
        raise ScheduleError(f"{path}.cron", f"{cron!r}: {exc}") from None
    text = cron.strip()
    desc = describe_cron(cronspec.MACROS.get(resolved, resolved))
    if resolved != text:
        desc += f" ({text} hashed to {resolved})"
    return Compiled("cron", Mode.CRONJOB, tz, desc, cron=resolved)


def _compile_every(every: str, tz: str, path: str = "spec.schedule") -> Compiled:
    try:
        interval = parse_duration(every)
    except ValueError as exc:
        raise ScheduleError(f"{path}.every", str(exc)) from None
    if interval < timedelta(minutes=1):
        raise ScheduleError(f"{path}.every", f"{every!r} is below 1m")
    cron = _cron_for_every(interval)
    desc = f"Every {every}"
    if cron is not None:
        return Compiled("every", Mode.CRONJOB, tz, desc, cron=cron, interval=interval)
    return Compiled("every", Mode.OPERATOR, tz, desc, interval=interval)


def _compile_at(text: str, tz: str, path: str = "spec.schedule") -> Compiled:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ScheduleError(f"{path}.at", f"{text!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise ScheduleError(f"{path}.at", f"{text!r} needs a zone offset or Z")
    at = at.astimezone(UTC)
    return Compiled("at", Mode.OPERATOR, tz, f"Once, at {at.strftime('%Y-%m-%dT%H:%M:%SZ')}",
                    at=at)


def compile_schedule(s: Schedule, namespace: str, name: str, path: str = "spec.schedule",
                     entry: str = "") -> Compiled:
    """Decide how the schedule runs. Raises ScheduleError naming the offending field.

    ``entry`` names a spec.schedules entry (``path`` is then ``spec.schedules[i]``). Such
    entries, and ``catchUp: All``, are timed by the operator: one CronJob per entry would
    multiply the CronJobs to watch and keep in line, and the native controller only ever
    creates the latest missed Job, so it cannot catch up on all of them.
    """
    try:
        rules = skiprules.compile_rules(s, path)
    except skiprules.RuleError as exc:
        raise ScheduleError(exc.field, str(exc).split(": ", 1)[1]) from None
    c = _compile_kind(s, namespace, name, path)
    operator_timed = bool(entry) or s.catch_up is CatchUp.ALL
    mode = Mode.OPERATOR if operator_timed else c.mode
    return replace(c, mode=mode, name=entry, rules=rules, catch_up=s.catch_up)


def _compile_kind(s: Schedule, namespace: str, name: str, path: str) -> Compiled:
    try:
        ZoneInfo(s.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{path}.timeZone",
                            f"unknown time zone {s.time_zone!r} (use an IANA name such as "
                            "Europe/Berlin)") from None
    tz = s.time_zone
    if s.cron is not None:
        return _compile_cron(s.cron, tz, namespace, name, path)
    if s.every is not None:
        return _compile_every(s.every, tz, path)
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
        return _compile_at(s.at, tz, path)
    raise ScheduleError(path, "set one of cron, every, daily, weekly, monthly, at")


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
    r = c.rules
    if r.active_from is not None and now < r.active_from:
        now = r.active_from - timedelta(seconds=1)  # the first time may be activeFrom itself
    out: list[datetime] = []
    for i, t in enumerate(_raw_times_after(c, now, anchor)):
        if len(out) >= count or i >= SCAN_LIMIT or not skiprules.active(r, t):
            break
        if skiprules.skip_reason(r, t, c.zone) is None:
            out.append(t)
    return out


# How many due times nextRunTimes looks at to find ``count`` that are not skipped (a skip
# list can leave out a long run of times; five years of weekdays is about 1,300).
SCAN_LIMIT = 2000


def _raw_times_after(c: Compiled, now: datetime, anchor: datetime) -> Iterator[datetime]:
    """Due times after ``now``, ascending, before skip rules (lazily: the caller stops)."""
    if c.cron:
        spec, t = cronspec.parse(c.cron), now
        while (nxt := cronspec.next_after(spec, t, c.zone)) is not None:
            yield nxt
            t = nxt
        return
    if c.at is not None:
        if c.at > now:
            yield c.at
        return
    assert c.interval is not None
    anchor = anchor.astimezone(UTC)  # absolute time: aware arithmetic in a zone is wall-clock
    step = c.interval.total_seconds()
    k = max(0, int((now - anchor).total_seconds() // step) + 1)
    while True:
        yield anchor + timedelta(seconds=step * k)
        k += 1
