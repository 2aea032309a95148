"""Bad input, as a table: every entry gets a clear one-line error naming the field, and none of
them touches the CronJob of the working BackgroundJob it was applied over."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Cluster, Operator, eventually
from tests.integration.helpers import annotate, condition, jobs, status

pytestmark = pytest.mark.integration

GOOD: dict[str, Any] = {
    "schedule": {"cron": "0 3 * * *", "timeZone": "Europe/Berlin"},
    "template": {"spec": {"template": {"spec": {
        "containers": [{"name": "main", "image": "busybox:1.36"}]}}}},
}
CONTAINER = ("template", "spec", "template", "spec", "containers", 0)


def edit(*changes: tuple[tuple[Any, ...], Any]) -> dict[str, Any]:
    spec = copy.deepcopy(GOOD)
    for path, value in changes:
        node: Any = spec
        for key in path[:-1]:
            node = node[key]
        if value is None:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return spec


# (id, spec, what the error must say) -- rejected by the API server at apply time
SCHEMA_CASES = [
    ("two-schedule-kinds", edit((("schedule", "daily"), "02:00")),
     "set exactly one of cron, every, daily, weekly, monthly, at"),
    ("every-below-1m", edit((("schedule",), {"every": "30s"})),
     "schedule.every: must be at least 1m"),
    ("every-not-a-duration", edit((("schedule",), {"every": "ten minutes"})),
     "spec.schedule.every"),
    ("daily-25h", edit((("schedule",), {"daily": "25:00"})), "spec.schedule.daily"),
    ("weekly-bad-day", edit((("schedule",), {"weekly": {"day": "Funday", "time": "09:00"}})),
     "spec.schedule.weekly.day"),
    ("monthly-day-32", edit((("schedule",), {"monthly": {"day": 32, "time": "09:00"}})),
     "spec.schedule.monthly.day"),
    ("at-not-a-time", edit((("schedule",), {"at": "tomorrow"})), "spec.schedule.at"),
    ("at-without-zone", edit((("schedule",), {"at": "2026-12-01T12:00:00"})),
     "spec.schedule.at"),
    ("negative-deadline", edit((("schedule", "startingDeadlineSeconds"), -5)),
     "spec.schedule.startingDeadlineSeconds"),
    ("bad-concurrency-policy", edit((("concurrencyPolicy",), "Sometimes")),
     "spec.concurrencyPolicy"),
    ("negative-retry-limit", edit((("retry",), {"limit": -1})), "spec.retry.limit"),
    ("jitter-above-1", edit((("retry",), {"backoff": {"jitter": 2}})),
     "spec.retry.backoff.jitter"),
    ("max-delay-below-initial",
     edit((("retry",), {"backoff": {"initialDelaySeconds": 600, "maxDelaySeconds": 60}})),
     "retry.backoff.maxDelaySeconds: must be at least initialDelaySeconds"),
    ("max-delay-below-the-default-initial",
     edit((("retry",), {"backoff": {"maxDelaySeconds": 30}})),
     "retry.backoff.maxDelaySeconds: must be at least initialDelaySeconds"),
    ("every-zero-days", edit((("schedule",), {"every": "0d"})), "spec.schedule.every"),
    ("negative-history", edit((("history",), {"successfulJobs": -1})),
     "spec.history.successfulJobs"),
    ("timeout-zero", edit((("timeoutSeconds",), 0)), "spec.timeoutSeconds"),
    ("non-retryable-with-onfailure",
     edit((("retry",), {"nonRetryableExitCodes": [2]}),
          (("template", "spec", "template", "spec", "restartPolicy"), "OnFailure")),
     "retry.nonRetryableExitCodes needs template.spec.template.spec.restartPolicy: Never"),
    ("restart-policy-always",
     edit((("template", "spec", "template", "spec", "restartPolicy"), "Always")),
     "restartPolicy"),
    ("parameter-not-a-string", edit((("parameters",), {"level": 3})), "spec.parameters.level"),
    ("unknown-field", edit((("schedul",), {"cron": "* * * * *"})), 'unknown field "spec.schedul"'),
    ("no-template", edit((("template",), None)), "spec.template"),
]

# (id, spec, Ready reason, message prefix) -- judged by the operator: Ready=False
OPERATOR_CASES = [
    ("cron-grammar", edit((("schedule", "cron"), "61 * * * *")), "InvalidSchedule",
     "spec.schedule.cron: '61 * * * *'"),
    ("cron-never-fires", edit((("schedule", "cron"), "0 0 31 2 *")), "InvalidSchedule",
     "spec.schedule.cron: '0 0 31 2 *': this schedule can never fire"),
    ("cron-six-fields", edit((("schedule", "cron"), "0 0 3 * * *")), "InvalidSchedule",
     "spec.schedule.cron"),
    ("cron-every-macro", edit((("schedule", "cron"), "@every 5m")), "InvalidSchedule",
     "spec.schedule.cron"),
    ("hash-in-day-field", edit((("schedule", "cron"), "0 0 H * *")), "InvalidSchedule",
     "spec.schedule.cron"),
    ("unknown-time-zone", edit((("schedule", "timeZone"), "Mars/Olympus")), "InvalidSchedule",
     "spec.schedule.timeZone: unknown time zone 'Mars/Olympus'"),
    ("template-no-image", edit(((*CONTAINER,), {"name": "main"})), "InvalidSpec",
     "spec.template: "),
    ("template-bad-container-name", edit(((*CONTAINER,), {"name": "Main_1", "image": "b"})),
     "InvalidSpec", "spec.template: "),
]


@pytest.fixture(scope="module")
def victim(cluster: Cluster, operator: Operator) -> Iterator[tuple[str, dict[str, Any]]]:
    """A working BackgroundJob and its CronJob, shared by the table's rows."""
    ns = f"bad-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    apply_spec(cluster, ns, GOOD)
    cj = eventually(lambda: cluster.get("cronjob", "victim", ns), 30, what="CronJob")
    yield ns, cj
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def apply_spec(cluster: Cluster, ns: str, spec: dict[str, Any], name: str = "victim",
               check: bool = True) -> Any:
    doc = {"apiVersion": "bgjob.dev/v1alpha1", "kind": "BackgroundJob",
           "metadata": {"name": name}, "spec": spec}
    return cluster.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(doc), check=check)


def assert_cronjob_untouched(cluster: Cluster, ns: str, before: dict[str, Any]) -> None:
    now = cluster.get("cronjob", "victim", ns) or {}
    assert now["metadata"]["uid"] == before["metadata"]["uid"]
    assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def restore(cluster: Cluster, ns: str) -> None:
    apply_spec(cluster, ns, GOOD)
    eventually(lambda: condition(cluster, "victim", ns, "Ready").get("status") == "True", 30,
               what="Ready again")


@pytest.mark.parametrize(("case", "spec", "expect"), SCHEMA_CASES,
                         ids=[c[0] for c in SCHEMA_CASES])
def test_schema_rejects_at_apply_time(cluster: Cluster, victim: tuple[str, dict[str, Any]],
                                      case: str, spec: dict[str, Any], expect: str) -> None:
    ns, cj = victim
    res = apply_spec(cluster, ns, spec, check=False)
    assert res.returncode != 0, case
    assert expect in res.stderr, res.stderr
    assert_cronjob_untouched(cluster, ns, cj)


def test_schema_rejects_a_name_too_long_for_a_label(cluster: Cluster,
                                                    victim: tuple[str, dict[str, Any]]) -> None:
    ns, _ = victim
    res = apply_spec(cluster, ns, GOOD, name="n" * 64, check=False)
    assert res.returncode != 0
    assert "metadata.name: must be at most 63 characters" in res.stderr


def _operator_writes(cluster: Cluster, ns: str) -> int:
    path = cluster.lc.logs / "audit.log"
    return sum(1 for line in path.read_text().splitlines()
               if f'"namespace":"{ns}"' in line and '"userAgent":"bgjob-operator/' in line)


def test_every_1d_from_the_contract_is_a_daily_native_cronjob(
        cluster: Cluster, victim: tuple[str, dict[str, Any]]) -> None:
    ns, _ = victim
    apply_spec(cluster, ns, edit((("schedule",), {"every": "1d", "timeZone": "Europe/Berlin"})),
               name="every-day")
    cj = eventually(lambda: cluster.get("cronjob", "every-day", ns), 30, what="CronJob")
    assert (cj["spec"]["schedule"], cj["spec"]["timeZone"]) == ("0 0 * * *", "Europe/Berlin")


@pytest.mark.parametrize(("case", "spec", "reason", "prefix"), OPERATOR_CASES,
                         ids=[c[0] for c in OPERATOR_CASES])
def test_operator_reports_ready_false_and_keeps_the_working_cronjob(
        cluster: Cluster, victim: tuple[str, dict[str, Any]], case: str,
        spec: dict[str, Any], reason: str, prefix: str) -> None:
    ns, cj = victim
    apply_spec(cluster, ns, spec)
    generation = (cluster.get("bgj", "victim", ns) or {})["metadata"]["generation"]

    def ready_false() -> dict[str, Any] | None:
        cond = condition(cluster, "victim", ns, "Ready")
        ok = cond.get("status") == "False" and cond.get("observedGeneration") == generation
        return cond if ok else None

    cond = eventually(ready_false, 30, what=f"Ready=False for {case}")
    assert cond["reason"] == reason
    assert cond["message"].startswith(prefix), cond["message"]
    assert "\n" not in cond["message"]
    events = [e for e in cluster.events(ns, "victim")
              if e["reason"] == reason and e["message"] == cond["message"]]
    assert events and events[0]["type"] == "Warning"
    assert_cronjob_untouched(cluster, ns, cj)
    s = status(cluster, "victim", ns)
    assert s["schedule"]["cron"] == "0 3 * * *"  # still describes what runs
    # No hot loop: once the condition is set, the bad object costs no writes.
    time.sleep(1)
    before = _operator_writes(cluster, ns)
    time.sleep(3)
    assert _operator_writes(cluster, ns) == before
    restore(cluster, ns)
    assert_cronjob_untouched(cluster, ns, cj)


@pytest.mark.parametrize("params", ["{level: deep}", '["a", "b"]', '{"nested": {"a": 1}}'])
def test_bad_run_parameters_are_an_invalid_trigger_and_start_nothing(
        cluster: Cluster, victim: tuple[str, dict[str, Any]], params: str) -> None:
    ns, cj = victim
    token = uuid.uuid4().hex[:8]
    annotate(cluster, "victim", ns, run_now=token, run_parameters=params)
    eventually(lambda: status(cluster, "victim", ns).get("lastHandledRunNow") == token, 30,
               what="token handled")
    cond = condition(cluster, "victim", ns, "Ready")
    assert cond["status"] == "False" and cond["reason"] == "InvalidTrigger"
    assert cond["message"].startswith("metadata.annotations[bgjob.dev/run-parameters]: ")
    event = next(e for e in cluster.events(ns, "victim") if e["reason"] == "InvalidTrigger"
                 and token in e["message"])
    assert event["type"] == "Warning"
    assert jobs(cluster, "victim", ns) == []
    assert_cronjob_untouched(cluster, ns, cj)
    cluster.kubectl("-n", ns, "annotate", "bgj/victim", "bgjob.dev/run-parameters-")
    eventually(lambda: condition(cluster, "victim", ns, "Ready").get("status") == "True", 30,
               what="Ready again")


def test_foreign_cronjob_with_our_name_is_a_child_conflict(
        cluster: Cluster, victim: tuple[str, dict[str, Any]]) -> None:
    ns, _ = victim
    cluster.kubectl("-n", ns, "create", "cronjob", "taken", "--image=busybox:1.36",
                    "--schedule=0 5 * * *")
    foreign = cluster.get("cronjob", "taken", ns) or {}
    apply_spec(cluster, ns, GOOD, name="taken")
    cond = eventually(lambda: condition(cluster, "taken", ns, "Ready").get("reason")
                      == "ChildConflict" and condition(cluster, "taken", ns, "Ready"), 30,
                      what="ChildConflict")
    assert cond["status"] == "False"
    assert "CronJob taken exists and is not owned by this BackgroundJob" in cond["message"]
    after = cluster.get("cronjob", "taken", ns) or {}
    assert after["metadata"]["resourceVersion"] == foreign["metadata"]["resourceVersion"]
    assert after["spec"]["schedule"] == "0 5 * * *"
