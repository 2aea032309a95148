"""The second wave's schedules on the local control plane: several named schedules firing,
skipped due times (operator timing and the CronJob gate), catch-up All vs Latest across an
operator stop, activeUntil, and the schema's new rules at apply time."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Cluster, Operator, eventually
from tests.integration.helpers import condition, jobs, manifest, soon, status

pytestmark = pytest.mark.integration

EVERY_MINUTE = "* * * * *"
ODD_MINUTES = "1-59/2 * * * *"


def minute_of(job: dict[str, Any]) -> int:
    return int(job["metadata"]["name"].rsplit("-", 1)[1])


def param(job: dict[str, Any], key: str) -> str | None:
    env = job["spec"]["template"]["spec"]["containers"][0].get("env") or []
    return next((e.get("value") for e in env if e["name"] == key), None)


def test_two_schedules_fire_labelled_with_their_parameters_and_skips(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest(
        "two", concurrencyPolicy="Allow", parameters={"level": "default", "other": "x"},
        schedules=[{"name": "every", "cron": EVERY_MINUTE, "parameters": {"level": "light"}},
                   {"name": "even", "cron": EVERY_MINUTE, "parameters": {"level": "full"},
                    "skip": {"cron": [ODD_MINUTES]}}]), namespace)
    # The CronJob gate: a native CronJob's Jobs on odd minutes are dropped as skipped.
    cluster.apply(manifest("gate", concurrencyPolicy="Allow", schedule={
        "cron": EVERY_MINUTE, "skip": {"cron": [ODD_MINUTES]}}), namespace)

    def fired() -> bool:
        labels = {j["metadata"]["labels"].get("bgjob.dev/schedule") for j in jobs(
            cluster, "two", namespace)}
        s2, sg = status(cluster, "two", namespace), status(cluster, "gate", namespace)
        return ({"every", "even"} <= labels
                and (s2.get("stats") or {}).get("skipped", 0) >= 1
                and (sg.get("stats") or {}).get("skipped", 0) >= 1
                and (sg.get("stats") or {}).get("runs", 0) >= 1)

    eventually(fired, 200, 2, what="both schedules fired, an odd minute skipped in each mode")
    for job in jobs(cluster, "two", namespace):
        name = job["metadata"]["labels"]["bgjob.dev/schedule"]
        assert job["metadata"]["name"].startswith(f"two-{name}-")
        assert param(job, "BGJOB_PARAM_LEVEL") == {"every": "light", "even": "full"}[name]
        assert param(job, "BGJOB_PARAM_OTHER") == "x"
        if name == "even":
            assert minute_of(job) % 2 == 0, job["metadata"]["name"]
    s = eventually(lambda: (lambda st: st if any(r.get("schedule") for r in st.get("runs") or [])
                            else None)(status(cluster, "two", namespace)), 60,
                   what="a run record with its schedule")
    assert {r["schedule"] for r in s["runs"]} <= {"every", "even"}
    assert [e["name"] for e in s["schedules"]] == ["every", "even"]
    assert all(e["mode"] == "Operator" and len(e["nextRunTimes"]) == 3 for e in s["schedules"])
    assert s["schedule"]["description"] == "2 schedules: every, even"
    assert s["schedule"]["nextRunTimes"] == sorted(s["schedule"]["nextRunTimes"])
    assert all(minute_of(j) % 2 == 0 for j in jobs(cluster, "gate", namespace)
               if j["metadata"]["labels"].get("bgjob.dev/trigger") == "scheduled")
    assert (status(cluster, "gate", namespace)["stats"].get("missed") or 0) == 0
    events = [e["reason"] for e in cluster.events(namespace, "gate")]
    assert "RunSkipped" in events and "MissedSchedule" not in events
    table = cluster.kubectl("-n", namespace, "get", "bgj", "two").stdout
    assert "2 schedules: every, even" in table, table


def test_catch_up_all_runs_every_missed_minute_latest_only_the_last(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("all", schedule={"cron": EVERY_MINUTE, "catchUp": "All"}),
                  namespace)
    cluster.apply(manifest("latest", schedule={"cron": EVERY_MINUTE}), namespace)
    def ready(name: str) -> bool:
        return condition(cluster, name, namespace, "Ready").get("status") == "True"

    for name in ("all", "latest"):
        eventually(lambda: ready(name), 30, what=f"{name} Ready")  # noqa: B023 - called at once
    operator.stop()
    stopped = datetime.now(UTC)
    try:
        time.sleep(125)  # two or three minute ticks pass while no operator runs
    finally:
        operator.start()
    back = datetime.now(UTC)
    first = int(stopped.timestamp() // 60) + 1
    last = int(back.timestamp() // 60)
    down = list(range(first, last + 1))
    assert len(down) >= 2

    def caught_up() -> bool:
        made = {minute_of(j) for j in jobs(cluster, "all", namespace)}
        return set(down) <= made

    eventually(caught_up, 120, 2, what=f"catchUp All started every minute in {down}")
    s_all = status(cluster, "all", namespace)
    assert (s_all["stats"].get("missed") or 0) == 0
    assert s_all["schedule"]["mode"] == "Operator"
    s_latest = eventually(lambda: (lambda st: st if (st.get("stats") or {}).get("missed", 0)
                                   >= len(down) - 1 else None)(
        status(cluster, "latest", namespace)), 60, what="Latest counted the older ones missed")
    ran = {minute_of(j) for j in jobs(cluster, "latest", namespace)}
    assert not ran & set(down[:-1]), (ran, down)  # none of the older ticks ran
    assert s_latest["schedule"]["mode"] == "CronJob"


def test_active_until_expires_and_suspends_the_cronjob(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    until = datetime.now(UTC) + timedelta(seconds=8)
    cluster.apply(manifest("ends", schedule={
        "cron": "0 3 * * *", "activeUntil": until.strftime("%Y-%m-%dT%H:%M:%SZ")}), namespace)
    eventually(lambda: condition(cluster, "ends", namespace, "Ready").get("reason")
               == "Scheduled", 30, what="Scheduled before activeUntil")
    ready = eventually(lambda: (lambda c: c if c.get("reason") == "Expired" else None)(
        condition(cluster, "ends", namespace, "Ready")), 40, what="Ready reason Expired")
    assert ready["status"] == "True"
    assert condition(cluster, "ends", namespace, "Overdue")["status"] == "False"
    eventually(lambda: (cluster.get("cronjob", "ends", namespace) or {}).get(
        "spec", {}).get("suspend") is True, 30, what="CronJob suspended")
    assert status(cluster, "ends", namespace)["schedule"]["nextRunTimes"] == []


SCHEDULE = {"cron": "0 3 * * *"}


@pytest.mark.parametrize(("name", "spec", "message"), [
    ("activeFrom after activeUntil",
     {"schedule": {**SCHEDULE, "activeFrom": soon(7200), "activeUntil": soon(3600)}},
     "activeFrom must be before activeUntil"),
    ("a skip window ending before it starts",
     {"schedule": {**SCHEDULE, "skip": {"windows": [{"from": soon(7200), "until": soon(60)}]}}},
     "from must be before until"),
    ("a skip date not YYYY-MM-DD",
     {"schedule": {**SCHEDULE, "skip": {"dates": ["25.12.2026"]}}}, "should match"),
    ("both schedule and schedules",
     {"schedule": SCHEDULE, "schedules": [{"name": "a", **SCHEDULE}]},
     "set at most one of schedule and schedules"),
    ("two schedules with the same name",
     {"schedules": [{"name": "a", **SCHEDULE}, {"name": "a", "daily": "02:00"}]},
     "Duplicate value"),
    ("a schedule name that is no DNS label",
     {"schedules": [{"name": "Week_Days", **SCHEDULE}]}, "should match"),
    ("an unknown catchUp", {"schedule": {**SCHEDULE, "catchUp": "Some"}}, "Unsupported value"),
])
def test_schema_rejects_bad_schedule_fields_at_apply_time(
        cluster: Cluster, namespace: str, name: str, spec: dict[str, Any], message: str) -> None:
    res = cluster.kubectl("-n", namespace, "apply", "--dry-run=server", "-f", "-",
                          check=False, input=manifest("bad", **spec))
    assert res.returncode != 0, (name, res.stdout)
    assert message in res.stderr, (name, res.stderr)


def test_a_bad_skip_cron_is_invalid_schedule_and_the_old_schedule_stays(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("keep", schedule={"cron": "0 3 * * *"}), namespace)
    eventually(lambda: cluster.get("cronjob", "keep", namespace), 30, what="CronJob")
    cluster.apply(manifest("keep", schedule={"cron": "0 4 * * *",
                                             "skip": {"cron": ["61 * * * *"]}}), namespace)
    ready = eventually(lambda: (lambda c: c if c.get("reason") == "InvalidSchedule" else None)(
        condition(cluster, "keep", namespace, "Ready")), 30, what="InvalidSchedule")
    assert ready["message"].startswith("spec.schedule.skip.cron[0]: "), ready["message"]
    cj = cluster.get("cronjob", "keep", namespace) or {}
    assert cj["spec"]["schedule"] == "0 3 * * *"
    assert json.loads(json.dumps(status(cluster, "keep", namespace)["schedule"]["inForce"])) == {
        "cron": "0 3 * * *", "timeZone": "UTC", "catchUp": "Latest"}
