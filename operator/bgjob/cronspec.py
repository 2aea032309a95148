"""Cron parsing and next-time maths with the exact semantics of the Kubernetes CronJob controller.

The controller uses robfig/cron v3 (standard 5-field parser, ``SpecSchedule.Next``). To promise
that ``status.schedule.nextRunTimes`` are the times the real controller fires, including across
DST changes, this module re-implements that algorithm on Go's time rules: ``time.Date`` resolves
a wall time that does not exist (spring forward) by shifting it forward by the gap, ``Add`` is
absolute, and the day loop corrects midnight drift. Python's aware-datetime arithmetic is wall
clock arithmetic, so everything here works in UTC instants plus a zone.

All functions are pure; ``tests/unit/test_cronspec.py`` checks them against tables produced by
the Go library itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {m: i + 1 for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}


class CronError(ValueError):
    """A cron expression the CronJob controller would refuse, or one that never fires."""


@dataclass(frozen=True)
class Field:
    name: str
    lo: int
    hi: int
    names: dict[str, int] | None = None


FIELDS = (
    Field("minute", 0, 59),
    Field("hour", 0, 23),
    Field("day of month", 1, 31),
    Field("month", 1, 12, _MONTHS),
    Field("day of week", 0, 6, _DAYS),
)


@dataclass(frozen=True)
class CronSpec:
    minute: frozenset[int]
    hour: frozenset[int]
    dom: frozenset[int]
    month: frozenset[int]
    dow: frozenset[int]
    dom_star: bool
    dow_star: bool


def _value(text: str, f: Field) -> int:
    if f.names and text.lower() in f.names:
        return f.names[text.lower()]
    if not text.isdigit():
        raise CronError(f"{f.name}: {text!r} is not a number")
    return int(text)


def _parse_field(text: str, f: Field) -> tuple[frozenset[int], bool]:
    """Return the allowed values and whether robfig would set the field's "star" bit.

    The star bit decides whether day-of-month and day-of-week combine with AND (either is a
    star) or OR. robfig sets it for ``*`` and ``?`` and keeps it for a step of 1 (``*/1``),
    dropping it only for a step above 1; so ``0 0 */1 * 1`` is Mondays, not every day.
    """
    values: set[int] = set()
    star = False
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{f.name}: bad step {step_text!r}")
            step = int(step_text)
        if rng in ("*", "?"):
            lo, hi = f.lo, f.hi
            star = star or step == 1
        elif "-" in rng:
            a, _, b = rng.partition("-")
            lo, hi = _value(a, f), _value(b, f)
        else:
            lo = _value(rng, f)
            hi = f.hi if step_text else lo
        if lo < f.lo or hi > f.hi:
            raise CronError(f"{f.name}: {part!r} is out of range {f.lo}-{f.hi}")
        if lo > hi:
            raise CronError(f"{f.name}: {part!r} starts after it ends")
        values.update(range(lo, hi + 1, step))
    return frozenset(values), star


def parse(expr: str) -> CronSpec:
    """Parse a standard 5-field expression or macro, as robfig's ParseStandard does."""
    text = expr.strip()
    if text.startswith("TZ=") or text.startswith("CRON_TZ="):
        raise CronError("use schedule.timeZone instead of a TZ= prefix")
    text = MACROS.get(text, text)
    if text.startswith("@"):
        raise CronError(f"unknown macro {text!r}")
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week), "
                        f"got {len(parts)}")
    parsed = [_parse_field(p, f) for p, f in zip(parts, FIELDS, strict=True)]
    return CronSpec(
        minute=parsed[0][0], hour=parsed[1][0], dom=parsed[2][0], month=parsed[3][0],
        dow=parsed[4][0], dom_star=parsed[2][1], dow_star=parsed[4][1],
    )


# ---------------------------------------------------------------- Go time emulation


def _offset(ts: float, zone: ZoneInfo) -> int:
    off = datetime.fromtimestamp(ts, zone).utcoffset()
    return int(off.total_seconds()) if off else 0


def go_date(y: int, mo: int, d: int, h: int, mi: int, zone: ZoneInfo) -> float:
    """Go's ``time.Date`` in ``zone``, as a UTC timestamp (normalising overflowing fields)."""
    # Normalise month overflow then add days/hours/minutes as plain offsets, as Go does.
    y2, mo2 = y + (mo - 1) // 12, (mo - 1) % 12 + 1
    base = datetime(y2, mo2, 1, tzinfo=UTC)
    naive_utc = (base + timedelta(days=d - 1, hours=h, minutes=mi)).timestamp()
    off = _offset(naive_utc, zone)
    unix = naive_utc - off
    off2 = _offset(unix, zone)
    if off2 != off:
        unix = naive_utc - off2
    return unix


def _local(ts: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ts, zone)


def _day_matches(spec: CronSpec, t: datetime) -> bool:
    dom_ok = t.day in spec.dom
    dow_ok = (t.isoweekday() % 7) in spec.dow
    if spec.dom_star or spec.dow_star:
        return dom_ok and dow_ok
    return dom_ok or dow_ok


# C901: one loop per field with wrap-arounds, kept in the shape of robfig's SpecSchedule.Next so
# the two can be read side by side; the golden tables pin it, a split would only hide that.
def next_after(spec: CronSpec, after: datetime, zone: ZoneInfo) -> datetime | None:  # noqa: C901
    """The first fire time strictly after ``after`` (robfig ``SpecSchedule.Next``), in UTC.

    Returns None when nothing fires within five years (the expression can never fire).
    """
    ts = float(int(after.timestamp()) + 1)  # + 1s, truncated to the second
    added = False
    year_limit = _local(ts, zone).year + 5
    while True:  # WRAP
        t = _local(ts, zone)
        if t.year > year_limit:
            return None
        wrapped = False
        while t.month not in spec.month:
            if not added:
                added = True
                ts = go_date(t.year, t.month, 1, 0, 0, zone)
            t = _local(ts, zone)
            ts = go_date(t.year, t.month + 1, t.day, t.hour, t.minute, zone)
            t = _local(ts, zone)
            if t.month == 1:
                wrapped = True
                break
        if wrapped:
            continue
        while not _day_matches(spec, t):
            if not added:
                added = True
                ts = go_date(t.year, t.month, t.day, 0, 0, zone)
            t = _local(ts, zone)
            ts = go_date(t.year, t.month, t.day + 1, t.hour, t.minute, zone)
            t = _local(ts, zone)
            if t.hour != 0:  # midnight drifted across a DST change
                ts += (24 - t.hour) * 3600 if t.hour > 12 else -t.hour * 3600
                t = _local(ts, zone)
            if t.day == 1:
                wrapped = True
                break
        if wrapped:
            continue
        while t.hour not in spec.hour:
            if not added:
                added = True
                ts = go_date(t.year, t.month, t.day, t.hour, 0, zone)
            ts += 3600
            t = _local(ts, zone)
            if t.hour == 0:
                wrapped = True
                break
        if wrapped:
            continue
        while t.minute not in spec.minute:
            if not added:
                added = True
                ts = ts - ts % 60
            ts += 60
            t = _local(ts, zone)
            if t.minute == 0:
                wrapped = True
                break
        if wrapped:
            continue
        if t.second != 0:  # the seconds field is always {0} in the standard parser
            added = True
            ts = ts - t.second + 60
            continue
        return datetime.fromtimestamp(ts, UTC)


def next_times(spec: CronSpec, after: datetime, zone: ZoneInfo, count: int) -> list[datetime]:
    out: list[datetime] = []
    t = after
    for _ in range(count):
        nxt = next_after(spec, t, zone)
        if nxt is None:
            break
        out.append(nxt)
        t = nxt
    return out


def matches(spec: CronSpec, t: datetime, zone: ZoneInfo) -> bool:
    """Whether the instant ``t`` is a minute the expression names, read on ``zone``'s wall
    clock (used for skip rules: "* * * * 0,6" matches any time at a weekend)."""
    local = t.astimezone(zone)
    return (local.second == 0 and local.minute in spec.minute and local.hour in spec.hour
            and local.month in spec.month and _day_matches(spec, local))
