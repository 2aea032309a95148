"""Schedule compilation: which mode, which cron, which description, which errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cron_descriptor import get_description

from bgjob.api import Schedule
from bgjob.schedule import (
    Mode,
    ScheduleError,
    compile_schedule,
    describe_cron,
    next_run_times,
    parse_duration,
    resolve_hash,
)

TOP_OF_THE_HOUR = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def sched(**kw: object) -> Schedule:
    return Schedule.model_validate(kw)


@pytest.mark.parametrize(
    ("name", "schedule", "mode", "cron", "description"),
    [
        ("cron passes through", {"cron": "0 2 * * *"}, Mode.CRONJOB, "0 2 * * *",
         "At 02:00 AM"),
        ("macro passes through", {"cron": "@daily"}, Mode.CRONJOB, "@daily", "At 12:00 AM"),
        ("every 15m divides the hour", {"every": "15m"}, Mode.CRONJOB, "*/15 * * * *",
         "Every 15m"),
        ("every 1m", {"every": "1m"}, Mode.CRONJOB, "* * * * *", "Every 1m"),
        ("every 2h divides the day", {"every": "2h"}, Mode.CRONJOB, "0 */2 * * *", "Every 2h"),
        ("every 60m is hourly", {"every": "60m"}, Mode.CRONJOB, "0 * * * *", "Every 60m"),
        ("every 24h is daily", {"every": "24h"}, Mode.CRONJOB, "0 0 * * *", "Every 24h"),
        ("every 1d is daily, as the contract writes it", {"every": "1d"}, Mode.CRONJOB,
         "0 0 * * *", "Every 1d"),
        ("every 2d is operator-timed", {"every": "2d"}, Mode.OPERATOR, "", "Every 2d"),
        ("day name beside no H", {"cron": "0 9 * * THU"}, Mode.CRONJOB, "0 9 * * THU",
         "At 09:00 AM, only on Thursday"),
        ("day range by name", {"cron": "0 9 * * MON-THU"}, Mode.CRONJOB, "0 9 * * MON-THU",
         "At 09:00 AM, Monday through Thursday"),
        ("month names", {"cron": "0 0 1 JAN-MAR *"}, Mode.CRONJOB, "0 0 1 JAN-MAR *",
         "At 12:00 AM, on day 1 of the month, January through March"),
        ("step of 1 in day of month", {"cron": "0 0 */1 * 1"}, Mode.CRONJOB, "0 0 */1 * 1",
         "At 12:00 AM"),
        ("every 7m is operator-timed", {"every": "7m"}, Mode.OPERATOR, "", "Every 7m"),
        ("every 90m is operator-timed", {"every": "90m"}, Mode.OPERATOR, "", "Every 90m"),
        ("every 1h30m is operator-timed", {"every": "1h30m"}, Mode.OPERATOR, "",
         "Every 1h30m"),
        ("daily", {"daily": "02:00"}, Mode.CRONJOB, "0 2 * * *", "At 02:00, every day"),
        ("weekly Monday", {"weekly": {"day": "Monday", "time": "03:00"}}, Mode.CRONJOB,
         "0 3 * * 1", "At 03:00, every Monday"),
        ("weekly Sunday is 0", {"weekly": {"day": "Sunday", "time": "03:30"}}, Mode.CRONJOB,
         "30 3 * * 0", "At 03:30, every Sunday"),
        ("monthly", {"monthly": {"day": 1, "time": "08:00"}}, Mode.CRONJOB, "0 8 1 * *",
         "At 08:00, on day 1 of the month"),
        ("at is operator-timed", {"at": "2026-12-01T12:00:00Z"}, Mode.OPERATOR, "",
         "Once, at 2026-12-01T12:00:00Z"),
    ],
)
def test_compile(name: str, schedule: dict[str, object], mode: Mode, cron: str,
                 description: str) -> None:
    c = compile_schedule(sched(**schedule), "ns", "job")
    assert (c.mode, c.cron) == (mode, cron), name
    assert c.description.startswith(description), c.description


@pytest.mark.parametrize(
    ("schedule", "field", "message"),
    [
        ({"cron": "0 0 31 2 *"}, "spec.schedule.cron", "can never fire"),
        ({"cron": "61 * * * *"}, "spec.schedule.cron", "out of range"),
        ({"cron": "0 0 * *"}, "spec.schedule.cron", "expected 5 fields"),
        ({"cron": "0 0 H * *"}, "spec.schedule.cron", "only in the minute and hour"),
        ({"cron": "0 0 * * H"}, "spec.schedule.cron", "only in the minute and hour"),
        ({"cron": "0 0 * H/2 *"}, "spec.schedule.cron", "only in the minute and hour"),
        ({"cron": "H 9 * * MON-H"}, "spec.schedule.cron", "only in the minute and hour"),
        ({"cron": "0 9 * * THURSDAY"}, "spec.schedule.cron", "not a number"),
        ({"daily": "02:00", "timeZone": "Mars/Olympus"}, "spec.schedule.timeZone",
         "unknown time zone"),
        ({"at": "2026-12-01T12:00:00"}, "spec.schedule.at", "needs a zone offset"),
    ],
)
def test_errors_name_the_field(schedule: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ScheduleError) as err:
        compile_schedule(sched(**schedule), "ns", "job")
    assert err.value.field == field
    assert str(err.value).startswith(field + ": ")
    assert message in str(err.value)


def test_hash_is_stable_and_spreads() -> None:
    a = resolve_hash("H 2 * * *", "team-a", "report")
    assert a == resolve_hash("H 2 * * *", "team-a", "report")
    minutes = {resolve_hash("H H * * *", "ns", f"job-{i}") for i in range(50)}
    assert len(minutes) > 40
    minute, hour = a.split()[:2]
    assert 0 <= int(minute) < 60 and hour == "2"
    stepped = resolve_hash("H/15 * * * *", "ns", "x").split()[0]
    start, step = stepped.split("/")
    assert step == "15" and start.endswith("-59") and int(start.split("-")[0]) < 15


@pytest.mark.parametrize(("expr", "rest"), [
    ("H 9 * * THU", "9 * * THU"),
    ("H H * * MON-THU", "* * MON-THU"),
    ("H/30 8 * JAN-MAR SUN", "8 * JAN-MAR SUN"),
    ("H 9 * * thu,fri", "9 * * thu,fri"),
])
def test_hash_beside_day_and_month_names(expr: str, rest: str) -> None:
    """H is a whole token; the H inside THU or THURSDAY's neighbours is not a hash."""
    resolved = resolve_hash(expr, "ns", "job")
    assert resolved.endswith(rest) and "H" not in resolved.split()[0]
    c = compile_schedule(sched(cron=expr), "ns", "job")
    assert c.cron == resolved and c.mode is Mode.CRONJOB


def test_names_without_h_are_not_rewritten() -> None:
    assert resolve_hash("0 9 * * THU", "ns", "job") == "0 9 * * THU"


def test_hash_shows_in_the_description() -> None:
    c = compile_schedule(sched(cron="H 1 * * *"), "bgjob-examples", "analytics-aggregation")
    assert "H 1 * * * hashed to" in c.description
    assert "H" not in c.cron


def test_next_run_times_in_a_zone() -> None:
    c = compile_schedule(sched(daily="02:00", timeZone="Europe/Berlin"), "ns", "j")
    got = next_run_times(c, TOP_OF_THE_HOUR, TOP_OF_THE_HOUR)
    assert got == [datetime(2026, 11, 24, 1, 0, tzinfo=UTC), datetime(2026, 11, 25, 1, 0,
                   tzinfo=UTC), datetime(2026, 11, 26, 1, 0, tzinfo=UTC)]


def test_next_run_times_across_spring_forward_skip_the_missing_hour() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29: the CronJob controller skips that day.
    c = compile_schedule(sched(cron="30 2 * * *", timeZone="Europe/Berlin"), "ns", "j")
    start = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    got = next_run_times(c, start, start)
    assert got[0] == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)


def test_operator_timed_interval_counts_from_the_anchor() -> None:
    c = compile_schedule(sched(every="7m"), "ns", "j")
    anchor = TOP_OF_THE_HOUR
    now = anchor + timedelta(minutes=15)
    assert next_run_times(c, now, anchor) == [anchor + timedelta(minutes=m) for m in (21, 28, 35)]


def test_operator_timed_interval_is_absolute_time_across_dst() -> None:
    # An anchor given in a zone must not turn into wall-clock steps (Python's aware arithmetic
    # within one zone is wall-clock): 90m apart in real time across Berlin's spring forward.
    c = compile_schedule(sched(every="90m", timeZone="Europe/Berlin"), "ns", "j")
    anchor = datetime(2026, 3, 29, 0, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    got = next_run_times(c, anchor, anchor)
    assert [t.astimezone(UTC).strftime("%H:%M") for t in got] == ["00:30", "02:00", "03:30"]


def test_at_runs_once() -> None:
    c = compile_schedule(sched(at="2026-11-23T10:30:00+01:00"), "ns", "j")
    assert c.at == datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    assert next_run_times(c, TOP_OF_THE_HOUR, TOP_OF_THE_HOUR) == []


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("1h30m", 5400), ("90s", 90),
                                               ("1.5h", 5400), ("1d", 86400),
                                               ("1d12h", 129600)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("5 minutes")


@pytest.mark.parametrize("expr", [
    "0 2 * * *", "*/15 * * * *", "0 3 * * 1", "17 1 * * *", "0 9 1 * *", "24 10 23 11 *",
    "0 0 1,15 * 1-5", "5 4 * * SUN", "0 22 * * 1-5", "30 */2 * * *",
])
def test_describe_cron_is_the_library_description(expr: str) -> None:
    """The fast describer (translations loaded once) says exactly what the library says."""
    assert describe_cron(expr) == get_description(expr)


def test_describe_cron_never_raises() -> None:
    assert describe_cron("not a cron") == "not a cron"
