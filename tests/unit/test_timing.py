"""Timing rules, CronJob-controller style: a fixed epoch, a table of (last run, now) cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bgjob.api import Schedule
from bgjob.schedule import Compiled, compile_schedule
from bgjob.timing import Plan, latest_at_or_before, plan, times_between

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def compiled(created: datetime = T0, **kw: object) -> Compiled:
    c = compile_schedule(Schedule.model_validate(kw), "ns", "job")
    return replace(c, anchor=created)


EVERY_7M = compiled(every="7m")
HOURLY = compiled(cron="0 * * * *")
ONCE = compiled(at="2026-11-23T10:30:00Z")


@pytest.mark.parametrize(
    ("name", "c", "last", "now", "deadline", "suspended", "expect"),
    [
        ("not yet due", EVERY_7M, None, at(6), None, False,
         Plan(wake=at(7))),
        ("first run due", EVERY_7M, None, at(7), None, False,
         Plan(run=at(7), wake=at(14))),
        ("already started", EVERY_7M, at(7), at(8), None, False,
         Plan(wake=at(14))),
        ("a slot superseded while down: one run, one missed", EVERY_7M, at(7), at(22), None,
         False, Plan(run=at(21), missed=[at(14)], overdue=at(14), wake=at(28))),
        ("deadline passed: skipped, missed, overdue", EVERY_7M, at(7), at(16), 60, False,
         Plan(missed=[at(14)], overdue=at(14), wake=at(21))),
        ("within the deadline: runs late", EVERY_7M, at(7), at(14.5), 60, False,
         Plan(run=at(14), wake=at(21))),
        ("suspended: nothing is judged", EVERY_7M, at(7), at(30), 60, True, Plan()),
        ("one-off before its time", ONCE, None, at(29), None, False, Plan(wake=at(30))),
        ("one-off due", ONCE, None, at(30), None, False, Plan(run=at(30))),
        ("one-off done", ONCE, at(30), at(31), None, False, Plan()),
        ("cron mode never runs itself; waits out the grace", HOURLY, at(0), at(60.5), None,
         False, Plan(wake=at(61) + timedelta(seconds=1))),
        ("cron mode: the controller did not start it", HOURLY, at(0), at(62), None, False,
         Plan(overdue=at(60), wake=at(121) + timedelta(seconds=1))),
        ("cron mode: missed by deadline", HOURLY, at(0), at(62), 30, False,
         Plan(missed=[at(60)], overdue=at(60), wake=at(120.5) + timedelta(seconds=1))),
    ],
)
def test_plan(name: str, c: Compiled, last: datetime | None, now: datetime,
              deadline: int | None, suspended: bool, expect: Plan) -> None:
    got = plan(c, last_scheduled=last, floor=T0, missed_through=None, now=now,
               deadline_seconds=deadline, suspended=suspended)
    assert got == expect, name


def test_a_miss_is_counted_once() -> None:
    first = plan(EVERY_7M, last_scheduled=at(7), floor=T0, missed_through=None, now=at(16),
                 deadline_seconds=60, suspended=False)
    again = plan(EVERY_7M, last_scheduled=at(7), floor=T0, missed_through=max(first.missed),
                 now=at(17), deadline_seconds=60, suspended=False)
    assert first.missed == [at(14)] and again.missed == []
    assert again.overdue == at(14)  # still overdue until the next run starts


def test_resume_after_a_long_suspension_runs_the_latest_and_counts_the_rest() -> None:
    every_minute = compiled(cron="* * * * *")
    got = plan(every_minute, last_scheduled=T0, floor=T0, missed_through=None,
               now=T0 + timedelta(days=3, seconds=5), deadline_seconds=None, suspended=False)
    assert len(got.missed) == 1000  # the backlog is bounded, like the CronJob controller's
    assert latest_at_or_before(every_minute, T0, T0 + timedelta(days=3, seconds=5)) == (
        T0 + timedelta(days=3))


def test_interval_series_is_anchored_at_creation() -> None:
    c = compiled(created=T0 + timedelta(seconds=13), every="90m")
    assert times_between(c, T0, at(400)) == [
        T0 + timedelta(seconds=13, minutes=m) for m in (90, 180, 270, 360)]


def test_the_floor_keeps_a_new_cronjob_from_running_the_past() -> None:
    got = plan(HOURLY, last_scheduled=None, floor=at(59), missed_through=None, now=at(59.5),
               deadline_seconds=None, suspended=False)
    assert got == Plan(wake=at(61) + timedelta(seconds=1))
