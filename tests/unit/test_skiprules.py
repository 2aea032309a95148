"""The second wave's schedule maths: active windows, skip lists, catch-up, several schedules
and the backfill times. A fixed epoch, tables, DST days in real zones."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from bgjob.api import BackgroundJobSpec, Schedule
from bgjob.schedule import Compiled, Mode, ScheduleError, compile_schedule, next_run_times
from bgjob.timing import Plan, due_times, plan, times_between

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday, top of the hour


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def compiled(entry: str = "", created: datetime = T0, **kw: Any) -> Compiled:
    c = compile_schedule(Schedule.model_validate(kw), "ns", "job",
                         "spec.schedules[0]" if entry else "spec.schedule", entry)
    return replace(c, anchor=created)


def nxt(c: Compiled, now: datetime, count: int = 3) -> list[str]:
    return [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in next_run_times(c, now, now, count)]


# -- nextRunTimes ----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "kw", "now", "expect"), [
    ("a skip date on the spring-forward day in Berlin is the local day: 00:30 CET on Mar 29 "
     "is 23:30Z on the 28th (skipped), 00:30 CEST on the 30th is 22:30Z on the 29th (runs)",
     {"daily": "00:30", "timeZone": "Europe/Berlin", "skip": {"dates": ["2026-03-29"]}},
     utc("2026-03-27T12:00:00Z"),
     ["2026-03-27T23:30:00Z", "2026-03-29T22:30:00Z", "2026-03-30T22:30:00Z"]),
    ("the same schedule without the skip date",
     {"daily": "00:30", "timeZone": "Europe/Berlin"}, utc("2026-03-27T12:00:00Z"),
     ["2026-03-27T23:30:00Z", "2026-03-28T23:30:00Z", "2026-03-29T22:30:00Z"]),
    ("a skip date is a local date: 23:30 in New York on Dec 24 is Dec 25 in UTC, not skipped",
     {"daily": "23:30", "timeZone": "America/New_York", "skip": {"dates": ["2026-12-25"]}},
     utc("2026-12-24T12:00:00Z"),
     ["2026-12-25T04:30:00Z", "2026-12-27T04:30:00Z", "2026-12-28T04:30:00Z"]),
    ("skip cron at weekends, on the fall-back Sunday in New York",
     {"daily": "01:30", "timeZone": "America/New_York", "skip": {"cron": ["* * * * 0,6"]}},
     utc("2026-10-30T12:00:00Z"),
     ["2026-11-02T06:30:00Z", "2026-11-03T06:30:00Z", "2026-11-04T06:30:00Z"]),
    ("a skip window [from, until): the time at until runs again",
     {"cron": "0 * * * *", "skip": {"windows": [
         {"from": "2026-11-23T11:00:00Z", "until": "2026-11-23T13:00:00Z"}]}}, T0,
     ["2026-11-23T13:00:00Z", "2026-11-23T14:00:00Z", "2026-11-23T15:00:00Z"]),
    ("activeFrom at a due time: that time is the first",
     {"cron": "0 * * * *", "activeFrom": "2026-12-01T00:00:00Z"}, T0,
     ["2026-12-01T00:00:00Z", "2026-12-01T01:00:00Z", "2026-12-01T02:00:00Z"]),
    ("activeUntil at a due time: that time is not run",
     {"cron": "0 * * * *", "activeUntil": "2026-11-23T12:00:00Z"}, T0,
     ["2026-11-23T11:00:00Z"]),
    ("after activeUntil: nothing", {"cron": "0 * * * *", "activeUntil": "2026-11-23T09:00:00Z"},
     T0, []),
    ("an operator-timed interval honours the window",
     {"every": "7m", "activeFrom": "2026-11-23T10:20:00Z"}, T0,
     ["2026-11-23T10:21:00Z", "2026-11-23T10:28:00Z", "2026-11-23T10:35:00Z"]),
])
def test_next_run_times(name: str, kw: dict[str, Any], now: datetime, expect: list[str]) -> None:
    assert nxt(compiled(**kw), now) == expect, name


def test_a_skip_cron_that_matches_everything_ends_the_search() -> None:
    c = compiled(cron="0 * * * *", skip={"cron": ["* * * * *"]})
    assert nxt(c, T0) == []


# -- the plan: skip, window, catch-up --------------------------------------------------------

def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


HOURLY_SKIP_11 = compiled(cron="0 * * * *", skip={"windows": [
    {"from": "2026-11-23T11:00:00Z", "until": "2026-11-23T11:01:00Z"}]})
EVERY7_SKIP = compiled(every="7m", skip={"windows": [
    {"from": "2026-11-23T10:14:00Z", "until": "2026-11-23T10:15:00Z"}]})


@pytest.mark.parametrize(("name", "c", "last", "now", "skipped_through", "expect"), [
    ("operator mode: a skipped due time does not run, is counted skipped, never missed",
     EVERY7_SKIP, at(7), at(14), None, Plan(skipped=[at(14)], wake=at(21))),
    ("operator mode: a skipped time already counted is not counted again",
     EVERY7_SKIP, at(7), at(15), at(14), Plan(wake=at(21))),
    ("operator mode: a skipped time between two due ones is not superseded, not missed",
     EVERY7_SKIP, at(7), at(21), None, Plan(run=at(21), skipped=[at(14)], wake=at(28))),
    ("CronJob mode: a skipped tick the controller never made is not overdue",
     HOURLY_SKIP_11, at(0), at(62), None,
     Plan(skipped=[at(60)], wake=at(121) + timedelta(seconds=1))),
])
def test_plan_with_skips(name: str, c: Compiled, last: datetime, now: datetime,
                         skipped_through: datetime | None, expect: Plan) -> None:
    got = plan(c, last_scheduled=last, floor=T0, missed_through=None, now=now,
               deadline_seconds=None, suspended=False, skipped_through=skipped_through)
    assert got == expect, name


def test_after_active_until_nothing_is_due_or_overdue_and_no_wake() -> None:
    c = compiled(every="7m", activeUntil="2026-11-23T10:15:00Z")
    got = plan(c, last_scheduled=at(14), floor=T0, missed_through=None, now=at(120),
               deadline_seconds=None, suspended=False)
    assert got == Plan()


def test_before_active_from_nothing_is_due_and_the_first_time_wakes_the_operator() -> None:
    c = compiled(every="7m", activeFrom="2026-11-23T10:20:00Z")
    got = plan(c, last_scheduled=None, floor=T0, missed_through=None, now=at(19),
               deadline_seconds=None, suspended=False)
    assert got == Plan(wake=at(21))


@pytest.mark.parametrize(("catch_up", "deadline", "expect"), [
    ("Latest", None, Plan(run=at(180), missed=[at(60), at(120)], overdue=at(60),
                          wake=at(240))),
    ("None", None, Plan(missed=[at(60), at(120), at(180)], overdue=at(60), wake=at(240))),
    ("None", 600, Plan(run=at(180), missed=[at(60), at(120)], overdue=at(60), wake=at(240))),
    ("All", None, Plan(run=at(60), more=True, overdue=at(60), wake=at(240))),
    ("All", 7000, Plan(run=at(120), more=True, missed=[at(60)], overdue=at(60),
                       wake=at(240))),
])
def test_catch_up_after_three_hours_down(catch_up: str, deadline: int | None,
                                         expect: Plan) -> None:
    c = compiled(cron="0 * * * *", catchUp=catch_up)
    if catch_up != "All":  # only All changes who times it: the latest-only rules stay native
        c = replace(c, mode=Mode.OPERATOR)
    got = plan(c, last_scheduled=T0, floor=T0, missed_through=None, now=at(182),
               deadline_seconds=deadline, suspended=False)
    assert got == expect


def test_catch_up_all_across_the_fall_back_hour_runs_every_instant_once_oldest_first() -> None:
    c = compiled(cron="*/30 * * * *", timeZone="Europe/Berlin", catchUp="All")
    assert c.mode is Mode.OPERATOR  # the native controller would only create the latest
    down, back = utc("2026-10-24T23:50:00Z"), utc("2026-10-25T02:10:00Z")
    started: list[datetime] = []
    last = down
    for _ in range(10):
        p = plan(c, last_scheduled=last, floor=down, missed_through=None, now=back,
                 deadline_seconds=None, suspended=False)
        if p.run is None:
            break
        started.append(p.run)
        last = p.run
    local = [t.astimezone(c.zone).strftime("%H:%M%z") for t in started]
    # 02:00 and 02:30 happen twice that night (CEST, then CET): four distinct instants, and 03:00
    assert local == ["02:00+0200", "02:30+0200", "02:00+0100", "02:30+0100", "03:00+0100"]
    assert len(set(started)) == len(started)


# -- backfill times --------------------------------------------------------------------------

def test_due_times_of_two_schedules_with_skips_in_a_half_open_range() -> None:
    weekdays = compiled("weekdays", cron="0 9 * * 1-5", timeZone="Europe/Berlin",
                        skip={"dates": ["2026-11-25"]})
    weekends = compiled("weekends", cron="0 12 * * 0,6", timeZone="Europe/Berlin")
    got = due_times([weekdays, weekends], utc("2026-11-23T08:00:00Z"),
                    utc("2026-11-29T11:00:00Z"))
    assert [(t.strftime("%a %H:%MZ"), n) for t, n in got] == [
        ("Mon 08:00Z", "weekdays"), ("Tue 08:00Z", "weekdays"), ("Thu 08:00Z", "weekdays"),
        ("Fri 08:00Z", "weekdays"), ("Sat 11:00Z", "weekends")]  # from included, until not
    assert len(due_times([weekdays, weekends], utc("2026-01-01T00:00:00Z"),
                         utc("2030-01-01T00:00:00Z"), limit=1001)) == 1001
    assert due_times([weekdays], utc("2026-11-23T08:00:00Z"), utc("2026-11-23T08:00:00Z")) == []


def test_due_times_honour_the_active_window() -> None:
    c = compiled(cron="0 * * * *", activeFrom="2026-11-23T11:00:00Z",
                 activeUntil="2026-11-23T13:00:00Z")
    assert [t for t, _ in due_times([c], T0, at(600))] == [at(60), at(120)]
    assert times_between(c, T0, at(600)) == [at(60), at(120)]


# -- compiling and the API model -------------------------------------------------------------

@pytest.mark.parametrize(("kw", "field"), [
    ({"cron": "0 9 * * *", "skip": {"dates": ["2026-02-30"]}}, "spec.schedules[0].skip.dates[0]"),
    ({"cron": "0 9 * * *", "skip": {"cron": ["0 0 * *"]}}, "spec.schedules[0].skip.cron[0]"),
    ({"cron": "0 9 * * *", "activeFrom": "2026-12-01T00:00:00Z",
      "activeUntil": "2026-12-01T00:00:00Z"}, "spec.schedules[0].activeUntil"),
    ({"cron": "0 9 * * *", "skip": {"windows": [{"from": "2026-12-02T00:00:00Z",
                                                 "until": "2026-12-01T00:00:00Z"}]}},
     "spec.schedules[0].skip.windows[0].until"),
    ({"cron": "0 9 * * *", "timeZone": "Mars/Olympus"}, "spec.schedules[0].timeZone"),
])
def test_bad_values_name_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ScheduleError) as err:
        compiled("a", **kw)
    assert err.value.field == field and str(err.value).startswith(field + ": ")


def test_modes() -> None:
    assert compiled(cron="0 * * * *", skip={"dates": ["2026-12-25"]}).mode is Mode.CRONJOB
    assert compiled(cron="0 * * * *", catchUp="None").mode is Mode.CRONJOB
    assert compiled(cron="0 * * * *", catchUp="All").mode is Mode.OPERATOR
    assert compiled("a", cron="0 * * * *").mode is Mode.OPERATOR


TEMPLATE = {"spec": {"template": {"spec": {"containers": [{"name": "m", "image": "x"}]}}}}


@pytest.mark.parametrize(("spec", "message"), [
    ({"schedule": {"cron": "0 * * * *"}, "schedules": [{"name": "a", "cron": "0 * * * *"}]},
     "set at most one of schedule and schedules"),
    ({"schedules": [{"name": "a", "cron": "0 * * * *"}, {"name": "a", "daily": "02:00"}]},
     "schedules: duplicate name a"),
    ({"schedules": [{"name": "Weekday", "cron": "0 * * * *"}]}, "pattern"),
    ({"schedules": [{"name": "a" * 21, "cron": "0 * * * *"}]}, "at most 20"),
    ({"schedules": []}, "at least 1"),
])
def test_the_model_refuses(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        BackgroundJobSpec.model_validate({"template": TEMPLATE, **spec})
    assert message in str(err.value)


def test_typed_parameters_are_checked_per_schedule_entry() -> None:
    from bgjob import params

    def problem(*entries: dict[str, Any], defaults: dict[str, str] | None = None) -> str | None:
        spec = BackgroundJobSpec.model_validate({
            "template": TEMPLATE, "parameters": defaults or {},
            "parameterSchema": [{"name": "n", "type": "Integer", "required": True}],
            "schedules": [{"name": f"s{i}", "cron": "0 * * * *", **e}
                          for i, e in enumerate(entries)]})
        return params.spec_problem(spec)

    assert problem({"parameters": {"n": "1"}}, {"parameters": {"n": "2"}}) is None
    assert problem({}, defaults={"n": "3"}) is None
    assert problem({"parameters": {"n": "1"}}, {"parameters": {"n": "x"}}) == (
        "spec.schedules[1].parameters.n: 'x' is not an Integer (like 42)")
    assert problem({}) == ("spec.schedules[0].parameters.n: required, but neither "
                           "spec.parameters nor this schedule sets it")
