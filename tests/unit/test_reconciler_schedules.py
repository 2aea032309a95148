"""Reconciler table rows for the second wave's schedules (skip lists, active windows,
catch-up, several schedules), on the harness of ``test_reconciler`` (same fake, same clock,
same row shape); a file of their own keeps each under 400 lines."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from bgjob import api
from tests.unit.fakekube import T0, fmt
from tests.unit.test_reconciler import NS, Case, World, world


def minutes(hour: int, minute: int = 0) -> int:
    return int(T0.replace(hour=hour, minute=minute).timestamp() // 60)


def env_of(w: World, job: str) -> dict[str, str]:
    j = w.kube.job(job)
    assert j is not None, (job, w.jobs())
    container = j["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


# -- scripts and expectations ----------------------------------------------------------------

def tick_inside_a_skip_window(w: World) -> None:
    w.settle()
    job = w.kube.cronjob_tick(T0.replace(hour=11))
    w.at(3600 + 2)
    w.settle()
    w.extra = job  # type: ignore[attr-defined]


def expect_skipped_not_missed(w: World) -> None:
    assert w.kube.job(w.extra) is None  # type: ignore[attr-defined]
    assert (w.stats.get("skipped"), w.stats.get("missed", 0)) == (1, 0)
    assert "RunSkipped" in w.reasons() and "MissedSchedule" not in w.reasons()
    assert w.condition("Overdue")["status"] == "False"
    assert w.status["schedule"]["nextRunTimes"][0] == fmt(T0.replace(hour=12))


def operator_timed_through_a_skip_window(w: World) -> None:
    w.settle()
    for minute in (7, 14, 15, 16):
        w.at(minute * 60)
        w.settle()


def expect_one_run_one_skipped_once(w: World) -> None:
    assert w.jobs() == [f"bj-{minutes(10, 7)}"], w.jobs()
    assert w.stats.get("skipped") == 1 and w.reasons().count("RunSkipped") == 1
    assert w.status["schedule"]["skippedThrough"] == fmt(T0 + timedelta(minutes=14))
    assert w.condition("Overdue")["status"] == "False"


def past_active_until(w: World) -> None:
    w.settle()
    cj = w.kube.objects[("cronjobs", NS, "bj")]
    assert cj["spec"]["suspend"] is False
    w.at(2 * 3600)
    w.settle()


def expect_expired(w: World) -> None:
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Expired")
    assert w.condition("Overdue")["status"] == "False"
    assert w.kube.objects[("cronjobs", NS, "bj")]["spec"]["suspend"] is True
    assert w.status["schedule"]["nextRunTimes"] == []


def three_hours_down(w: World) -> None:
    w.settle()
    w.at(3 * 3600 + 5)
    w.settle()


def expect_each_hour_in_turn(w: World) -> None:
    assert w.jobs() == [f"bj-{minutes(11)}"], w.jobs()  # Forbid: one at a time, oldest first
    for hour in (12, 13):
        w.kube.finish(f"bj-{minutes(hour - 1)}")
        w.settle()
        assert f"bj-{minutes(hour)}" in w.jobs(), w.jobs()
    assert w.stats.get("missed", 0) == 0
    assert ("cronjobs", NS, "bj") not in w.kube.objects  # All is timed by the operator


def ticks_made_while_down(w: World) -> None:
    w.settle()
    w.extra = [w.kube.cronjob_tick(T0.replace(hour=h)) for h in (11, 12)]  # type: ignore
    w.at(2 * 3600 + 300)
    w.settle()


def expect_none_runs_late(w: World) -> None:
    assert all(w.kube.job(j) is None for j in w.extra)  # type: ignore[attr-defined]
    assert w.stats["missed"] == 2 and not w.status.get("active")


TWO: dict[str, Any] = {"parameters": {"level": "default", "other": "x"}, "schedules": [
    {"name": "hourly", "cron": "0 * * * *", "parameters": {"level": "light"}},
    {"name": "even", "cron": "0 */2 * * *", "parameters": {"level": "full"}},
]}


def two_schedules_due_at_once(w: World) -> None:
    w.settle()
    w.at(3600)
    w.settle()
    w.at(2 * 3600)
    w.kube.finish(f"bj-hourly-{minutes(11)}")
    w.settle()


def expect_both_fire_one_at_a_time(w: World) -> None:
    first, second = f"bj-even-{minutes(12)}", f"bj-hourly-{minutes(12)}"
    active = [r["job"] for r in w.status.get("active") or []]
    assert len(active) == 1, active  # Forbid holds across both schedules
    assert env_of(w, f"bj-hourly-{minutes(11)}")["BGJOB_PARAM_LEVEL"] == "light"
    w.kube.finish(active[0])
    w.settle()
    assert first in w.jobs() and second in w.jobs(), w.jobs()
    env = env_of(w, first)
    assert (env["BGJOB_PARAM_LEVEL"], env["BGJOB_PARAM_OTHER"]) == ("full", "x")
    job = w.kube.job(first)
    assert job is not None and job["metadata"]["labels"]["bgjob.dev/schedule"] == "even"
    runs = {r["job"]: r.get("schedule") for r in w.status["runs"]}
    assert runs[f"bj-hourly-{minutes(11)}"] == "hourly"
    rows = {s["name"]: s for s in w.status["schedules"]}
    assert set(rows) == {"hourly", "even"} and rows["even"]["mode"] == "Operator"
    assert w.status["schedule"]["description"] == "2 schedules: hourly, even"
    assert w.status["schedule"]["nextRunTimes"] == [
        fmt(T0.replace(hour=13)), fmt(T0.replace(hour=14)), fmt(T0.replace(hour=14))]
    assert ("cronjobs", NS, "bj") not in w.kube.objects


def entry_added_later_and_one_broken(w: World) -> None:
    w.settle()
    w.at(1800)
    w.spec(schedules=[{"name": "hourly", "cron": "0 0 31 2 *"},
                      {"name": "late", "cron": "0 10 * * *"}])
    w.settle()
    w.at(3600)
    w.settle()


def expect_old_entry_runs_new_one_not_the_past(w: World) -> None:
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSchedule")
    assert ready["message"].startswith("spec.schedules[0].cron: ")
    assert w.jobs() == [f"bj-hourly-{minutes(11)}"], w.jobs()  # the kept version still runs
    rows = {s["name"]: s for s in w.status["schedules"]}
    assert rows["late"]["since"] == fmt(T0 + timedelta(minutes=30))
    assert rows["hourly"]["inForce"]["cron"] == "0 * * * *"


def two_due_at_once_enqueue(w: World) -> None:
    w.settle()
    w.at(2 * 3600)
    w.settle()


def expect_second_queued_then_started_as_itself(w: World) -> None:
    queued = w.status.get("queued") or []
    assert len(queued) == 1 and len(w.status.get("active") or []) == 1, (queued, w.jobs())
    assert queued[0]["schedule"] in ("hourly", "even")
    waiting = queued[0]["job"]
    w.kube.finish(w.status["active"][0]["job"])
    w.settle()
    job = w.kube.job(waiting)
    assert job is not None, w.jobs()
    name = job["metadata"]["labels"]["bgjob.dev/schedule"]
    assert name == queued[0]["schedule"]
    assert env_of(w, waiting)["BGJOB_PARAM_LEVEL"] == {"hourly": "light", "even": "full"}[name]


def schedule_then_schedules(w: World) -> None:
    w.settle()
    assert ("cronjobs", NS, "bj") in w.kube.objects
    w.spec(schedule=None, schedules=[{"name": "a", "cron": "0 * * * *"}])
    bj = w.kube.bj()
    bj["spec"].pop("schedule")
    w.settle()
    w.at(3600)
    w.settle()


def expect_cronjob_gone_and_entry_runs(w: World) -> None:
    assert ("cronjobs", NS, "bj") not in w.kube.objects
    assert w.jobs() == [f"bj-a-{minutes(11)}"], w.jobs()
    assert w.stats.get("missed", 0) == 0


def entry_run_fails(w: World) -> None:
    w.settle()
    w.at(3600)
    w.settle()
    w.kube.finish(f"bj-hourly-{minutes(11)}", ok=False)
    w.settle()
    w.at(3600 + 120)
    w.settle()


def expect_retry_keeps_schedule_and_parameters(w: World) -> None:
    retry = f"bj-hourly-{minutes(11)}-r2"
    job = w.kube.job(retry)
    assert job is not None, w.jobs()
    assert job["metadata"]["labels"]["bgjob.dev/schedule"] == "hourly"
    assert env_of(w, retry)["BGJOB_PARAM_LEVEL"] == "light"


def backfill_over_a_skip_window(w: World) -> None:
    w.settle()
    w.annotate(backfill='{"from": "2026-11-23T05:00:00Z", "until": "2026-11-23T08:00:00Z"}')
    w.settle()


def expect_skipped_time_left_out(w: World) -> None:
    bf = w.status["backfill"]
    assert bf["total"] == 2, bf  # 05:00 and 07:00; 06:00 is in the skip window
    started = [j["metadata"]["annotations"].get("bgjob.dev/scheduled-time")
               for j in w.kube.jobs(NS, "bj")
               if j["metadata"]["labels"][api.LABEL_TRIGGER] == "backfill"]
    assert started == ["2026-11-23T05:00:00Z"], started


def backfill_over_two_schedules(w: World) -> None:
    w.settle()
    w.annotate(backfill='{"from": "2026-11-23T04:00:00Z", "until": "2026-11-23T07:00:00Z"}')
    w.settle()
    for _ in range(6):  # one at a time: finish whatever runs, until all have run
        running = [j["metadata"]["name"] for j in w.kube.jobs(NS, "bj")
                   if not (j.get("status") or {}).get("conditions")]
        assert len(running) <= 1, running
        for name in running:
            w.kube.finish(name)
        w.settle()


def expect_each_entry_time_once_with_its_parameters(w: World) -> None:
    bf = w.status["backfill"]
    # hourly at 04, 05, 06 and even at 04, 06: five runs, ties in entry-name order
    assert (bf["total"], bf["started"], bf["succeeded"], bf["phase"]) == (
        5, 5, 5, "Completed"), bf
    made = sorted((j["metadata"]["annotations"]["bgjob.dev/scheduled-time"],
                   j["metadata"]["labels"]["bgjob.dev/schedule"],
                   env_of(w, j["metadata"]["name"])["BGJOB_PARAM_LEVEL"])
                  for j in w.kube.jobs(NS, "bj")
                  if j["metadata"]["labels"][api.LABEL_TRIGGER] == "backfill")
    assert made == [("2026-11-23T04:00:00Z", "even", "full"),
                    ("2026-11-23T04:00:00Z", "hourly", "light"),
                    ("2026-11-23T05:00:00Z", "hourly", "light"),
                    ("2026-11-23T06:00:00Z", "even", "full"),
                    ("2026-11-23T06:00:00Z", "hourly", "light")], made


def manual_only_gains_schedules_later(w: World) -> None:
    w.settle()
    w.at(3 * 3600 + 5)
    w.spec(schedules=[{"name": "hourly", "cron": "0 * * * *"}])
    w.settle()
    assert w.jobs() == [] and w.stats.get("missed", 0) == 0, (w.jobs(), w.stats)
    w.at(4 * 3600)
    w.settle()


def expect_only_the_next_time_runs(w: World) -> None:
    assert w.jobs() == [f"bj-hourly-{minutes(14)}"], w.jobs()
    assert w.stats.get("missed", 0) == 0


CRON = {"schedule": {"cron": "0 * * * *"}}
WINDOW_11 = {"windows": [{"from": "2026-11-23T11:00:00Z", "until": "2026-11-23T11:01:00Z"}]}

CASES = [
    Case("CronJob mode: the tick inside a skip window is dropped, skipped not missed, not "
         "overdue, left out of nextRunTimes",
         {"schedule": {"cron": "0 * * * *", "skip": WINDOW_11}},
         tick_inside_a_skip_window, expect_skipped_not_missed),
    Case("Operator mode: a due time inside a skip window starts nothing and is counted "
         "skipped once", {"schedule": {"every": "7m", "skip": {"windows": [
             {"from": "2026-11-23T10:14:00Z", "until": "2026-11-23T10:15:00Z"}]}},
             "concurrencyPolicy": "Allow"},
         operator_timed_through_a_skip_window, expect_one_run_one_skipped_once),
    Case("activeUntil passed: Ready reason Expired, the CronJob suspended, no Overdue",
         {"schedule": {"cron": "0 * * * *", "activeUntil": "2026-11-23T10:30:00Z"}},
         past_active_until, expect_expired),
    Case("catchUp All after three hours down, Forbid: every missed hour runs, oldest first, "
         "one at a time", {"schedule": {"cron": "0 * * * *", "catchUp": "All"}},
         three_hours_down, expect_each_hour_in_turn),
    Case("catchUp None, CronJob mode: ticks made while the operator was down never run late",
         {"schedule": {"cron": "0 * * * *", "catchUp": "None"}},
         ticks_made_while_down, expect_none_runs_late),
    Case("two schedules due at once, Forbid: both fire one after the other, labelled, with "
         "their parameters layered over spec.parameters", TWO,
         two_schedules_due_at_once, expect_both_fire_one_at_a_time),
    Case("one schedules entry broken, one added later: the kept version runs, the new one "
         "does not run the past", {"schedules": [{"name": "hourly", "cron": "0 * * * *"}]},
         entry_added_later_and_one_broken, expect_old_entry_runs_new_one_not_the_past),
    Case("two schedules due at once, Enqueue: the second queues and starts with its own "
         "label and parameters", {**TWO, "concurrencyPolicy": "Enqueue"},
         two_due_at_once_enqueue, expect_second_queued_then_started_as_itself),
    Case("a run of a schedules entry fails: its retry keeps the schedule label and its "
         "parameters", {"schedules": TWO["schedules"][:1], "retry": {
             "limit": 1, "backoff": {"initialDelaySeconds": 60, "jitter": 0}}},
         entry_run_fails, expect_retry_keeps_schedule_and_parameters),
    Case("a backfill leaves out the due times the skip list names",
         {"schedule": {"cron": "0 * * * *", "skip": {"windows": [
             {"from": "2026-11-23T06:00:00Z", "until": "2026-11-23T06:30:00Z"}]}}},
         backfill_over_a_skip_window, expect_skipped_time_left_out),
    Case("a backfill of two schedules: each entry's times once, one at a time, with the "
         "entry's label and parameters", {**TWO, "history": {"successfulJobs": 10}},
         backfill_over_two_schedules, expect_each_entry_time_once_with_its_parameters),
    Case("a manual-only BackgroundJob gains spec.schedules hours after its creation: the past "
         "is neither run nor missed", {}, manual_only_gains_schedules_later,
         expect_only_the_next_time_runs),
    Case("spec.schedule replaced by spec.schedules: the CronJob goes, the entry is "
         "operator-timed from then on", CRON, schedule_then_schedules,
         expect_cronjob_gone_and_entry_runs),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reconcile(case: Case) -> None:
    w = world(**copy.deepcopy(case.spec))
    case.script(w)
    case.expect(w)
    w.settle()  # and every row ends in a steady state


def test_labels_only_on_schedules_entries() -> None:
    """spec.schedule keeps its children exactly as before: no schedule label, same names."""
    w = world(**copy.deepcopy(CRON))
    w.settle()
    cj: dict[str, Any] = w.kube.objects[("cronjobs", NS, "bj")]
    assert "bgjob.dev/schedule" not in cj["spec"]["jobTemplate"]["metadata"]["labels"]
    assert cj["spec"]["jobTemplate"]["metadata"]["labels"][api.LABEL_TRIGGER] == "scheduled"
