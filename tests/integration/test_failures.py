"""Failure handling on the real control plane: retries with backoff, non-retryable exit codes,
timeouts, retries across operator restarts, missed runs while the operator is down, autoSuspend.
The pod driver chooses exit codes and durations through run parameters."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import Cluster, Operator, eventually
from tests.integration.helpers import (
    annotate,
    condition,
    handled,
    jobs,
    manifest,
    reasons,
    status,
    wait_event,
    wait_runs,
)

pytestmark = pytest.mark.integration
FAIL = json.dumps({"SIM_EXIT_CODE": "1", "SIM_DURATION_SECONDS": "0"})


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def by_attempt(cluster: Cluster, name: str, ns: str) -> dict[int, dict[str, Any]]:
    return {int(j["metadata"]["annotations"]["bgjob.dev/attempt"]): j
            for j in jobs(cluster, name, ns)}


def test_retries_follow_the_backoff_then_exhaust(cluster: Cluster, operator: Operator,
                                                 namespace: str) -> None:
    cluster.apply(manifest("flaky", retry={"limit": 2, "backoff": {
        "initialDelaySeconds": 3, "factor": 2.0, "maxDelaySeconds": 60, "jitter": 0}}),
        namespace)
    eventually(lambda: condition(cluster, "flaky", namespace, "Ready"), 30, what="Ready")
    annotate(cluster, "flaky", namespace, run_now="go", run_parameters=FAIL)
    s = wait_runs(cluster, "flaky", namespace, 3, 60)
    attempts = by_attempt(cluster, "flaky", namespace)
    assert sorted(attempts) == [1, 2, 3]
    first = attempts[1]["metadata"]["name"]
    for n in (2, 3):
        job = attempts[n]
        assert job["metadata"]["labels"]["bgjob.dev/trigger"] == "retry"
        assert job["metadata"]["name"] == f"{first}-r{n}"
        env = {e["name"]: e.get("value") for e in
               job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["BGJOB_ATTEMPT"] == str(n)
        assert env["BGJOB_PARAM_SIM_EXIT_CODE"] == "1"  # the run's parameters carry over
        ends = {r["job"]: r["completionTime"] for r in s["runs"]}
        previous_end = ts(ends[attempts[n - 1]["metadata"]["name"]])
        started = ts(job["metadata"]["creationTimestamp"])
        expected = 3 * 2 ** (n - 2)
        error = (started - previous_end).total_seconds() - expected
        print(f"attempt {n}: expected delay {expected}s, timing error {error:+.1f}s")
        assert -1.5 <= error <= 2.5, error  # timestamps have 1 s resolution
    assert s["stats"]["failed"] == 3 and s["stats"]["retries"] == 2
    assert s["stats"]["consecutiveFailures"] == 1  # one failed run, three attempts
    failing = eventually(lambda: condition(cluster, "flaky", namespace, "Failing").get("reason")
                         == "RetriesExhausted" and condition(cluster, "flaky", namespace,
                                                             "Failing"), 20, what="exhausted")
    assert failing["status"] == "True"
    event = wait_event(cluster, "flaky", namespace, "RetriesExhausted")
    assert event["type"] == "Warning" and "all 3 attempts failed" in event["message"]
    assert reasons(cluster, "flaky", namespace).count("RetryScheduled") == 2
    assert "retry" not in status(cluster, "flaky", namespace)


def test_non_retryable_exit_code_fails_at_once(cluster: Cluster, operator: Operator,
                                               namespace: str) -> None:
    cluster.apply(manifest("strict", retry={"limit": 3, "nonRetryableExitCodes": [64],
                                            "backoff": {"initialDelaySeconds": 1}}), namespace)
    eventually(lambda: condition(cluster, "strict", namespace, "Ready"), 30, what="Ready")
    job_spec = None
    annotate(cluster, "strict", namespace, run_now="x",
             run_parameters=json.dumps({"SIM_EXIT_CODE": "64", "SIM_DURATION_SECONDS": "0"}))
    s = wait_runs(cluster, "strict", namespace, 1)
    job_spec = jobs(cluster, "strict", namespace)[0]["spec"]
    assert job_spec["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
    assert s["lastRun"]["exitCode"] == 64 and s["lastRun"]["reason"] == "PodFailurePolicy"
    wait_event(cluster, "strict", namespace, "RetriesExhausted")
    time.sleep(3)
    assert len(jobs(cluster, "strict", namespace)) == 1
    assert condition(cluster, "strict", namespace, "Failing")["reason"] == "RetriesExhausted"


@pytest.mark.parametrize("stuck", [{"SIM_DURATION_SECONDS": "60"}, {"SIM_NEVER_START": "true"}],
                         ids=["running-too-long", "never-started"])
def test_timeout_is_deadline_exceeded_and_retried(cluster: Cluster, operator: Operator,
                                                  namespace: str, stuck: dict[str, str]) -> None:
    cluster.apply(manifest("slow", timeoutSeconds=3, parameters=stuck,
                           retry={"limit": 1, "backoff": {"initialDelaySeconds": 1}}), namespace)
    eventually(lambda: condition(cluster, "slow", namespace, "Ready"), 30, what="Ready")
    annotate(cluster, "slow", namespace, run_now="t")
    s = wait_runs(cluster, "slow", namespace, 2, 60)
    assert [r["result"] for r in s["runs"]] == ["DeadlineExceeded", "DeadlineExceeded"]
    assert [r["attempt"] for r in s["runs"]] == [2, 1]
    assert jobs(cluster, "slow", namespace)[0]["spec"]["activeDeadlineSeconds"] == 3


def test_operator_killed_while_a_retry_is_pending_starts_it_exactly_once(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    # 15 s: the operator must be stopped before the retry is due, also on a loaded machine
    # (with 6 s, a slow SIGTERM stop on 2 busy cores sometimes let the retry start first).
    cluster.apply(manifest("pending", retry={"limit": 1, "backoff": {
        "initialDelaySeconds": 15, "jitter": 0}}), namespace)
    eventually(lambda: condition(cluster, "pending", namespace, "Ready"), 30, what="Ready")
    annotate(cluster, "pending", namespace, run_now="p", run_parameters=FAIL)
    pending = eventually(lambda: status(cluster, "pending", namespace).get("retry"), 30,
                         what="status.retry")
    assert pending["attempt"] == 2
    operator.stop()  # killed before the retry is due
    try:
        time.sleep(max(0.0, (ts(pending["nextRetryTime"]) - datetime.now(ts(
            pending["nextRetryTime"]).tzinfo)).total_seconds()) + 2)
        assert len(jobs(cluster, "pending", namespace)) == 1
    finally:
        operator.start()
    eventually(lambda: len(jobs(cluster, "pending", namespace)) == 2, 30, what="the retry")
    operator.stop()
    operator.start()
    s = wait_runs(cluster, "pending", namespace, 2, 60)
    time.sleep(3)
    assert len(jobs(cluster, "pending", namespace)) == 2
    assert s["stats"]["retries"] == 1


def test_operator_down_across_scheduled_runs_runs_the_latest_and_reports_missed(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("native", schedule={"cron": "* * * * *"}), namespace)
    cluster.apply(manifest("timed", schedule={"every": "1m1s", "startingDeadlineSeconds": 10}),
                  namespace)
    timed = eventually(lambda: cluster.get("bgj", "timed", namespace), 10, what="created")
    created = ts(timed["metadata"]["creationTimestamp"])
    eventually(lambda: condition(cluster, "timed", namespace, "Ready"), 30, what="Ready")
    eventually(lambda: cluster.get("cronjob", "native", namespace), 30, what="CronJob")
    operator.stop()
    try:
        # Both slots of "timed" (created+61 s, +122 s) pass, each more than 10 s ago.
        wake = created.timestamp() + 122 + 14
        time.sleep(max(0.0, wake - time.time()))
    finally:
        operator.start()
    missed = eventually(lambda: condition(cluster, "timed", namespace, "Overdue").get("status")
                        == "True" and condition(cluster, "timed", namespace, "Overdue"), 30,
                        what="Overdue")
    assert missed["reason"] == "MissedSchedule"
    assert status(cluster, "timed", namespace)["stats"]["missed"] == 2
    assert jobs(cluster, "timed", namespace) == []
    event = wait_event(cluster, "timed", namespace, "MissedSchedule")
    assert event["type"] == "Warning"

    # The CronJob made its Jobs on time while the operator was down; they waited at the gate
    # (suspended). Back up, the operator runs only the most recent, the CronJob rule, and
    # counts the superseded ones missed, each once.
    s = wait_runs(cluster, "native", namespace, 1, 60)
    native_missed = s["stats"]["missed"]
    assert native_missed >= 1
    assert s["stats"]["runs"] >= 1
    operator.stop()
    operator.start()
    time.sleep(5)
    again = status(cluster, "native", namespace)["stats"]
    assert again["missed"] == native_missed  # never counted twice
    assert again["runs"] >= s["stats"]["runs"]
    assert again["runs"] == again["succeeded"] + again["failed"]
    assert status(cluster, "timed", namespace)["stats"]["missed"] == 2


def test_auto_suspend_after_consecutive_failures_and_resume(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("fragile", schedule={"cron": "0 3 * * *"},
                           autoSuspend={"afterConsecutiveFailures": 2}), namespace)
    eventually(lambda: cluster.get("cronjob", "fragile", namespace), 30, what="CronJob")
    for token in ("f1", "f2"):
        annotate(cluster, "fragile", namespace, run_now=token, run_parameters=FAIL)
        handled(cluster, "fragile", namespace, token)
        wait_runs(cluster, "fragile", namespace, int(token[1]), 30)
    cond = eventually(lambda: condition(cluster, "fragile", namespace, "Suspended").get(
        "reason") == "AutoSuspended" and condition(cluster, "fragile", namespace, "Suspended"),
        30, what="AutoSuspended")
    assert cond["status"] == "True"
    eventually(lambda: (cluster.get("cronjob", "fragile", namespace) or {})["spec"]["suspend"],
               30, what="CronJob suspended")
    bj = cluster.get("bgj", "fragile", namespace) or {}
    assert bj["spec"]["suspend"] is False  # spec belongs to the user: never written
    assert bj["metadata"]["generation"] == 1
    assert status(cluster, "fragile", namespace)["schedule"]["nextRunTimes"] == []
    wait_event(cluster, "fragile", namespace, "AutoSuspended")

    annotate(cluster, "fragile", namespace, resume="r1")
    eventually(lambda: condition(cluster, "fragile", namespace, "Suspended").get("status")
               == "False", 30, what="resumed")
    eventually(lambda: (cluster.get("cronjob", "fragile", namespace) or {})["spec"]["suspend"]
               is False, 30, what="CronJob resumed")
    assert status(cluster, "fragile", namespace)["stats"]["consecutiveFailures"] == 0
    wait_event(cluster, "fragile", namespace, "Resumed")


def test_a_retry_due_while_another_run_is_active_waits_under_forbid(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("queued", retry={"limit": 1, "backoff": {
        "initialDelaySeconds": 2, "jitter": 0}}), namespace)
    eventually(lambda: condition(cluster, "queued", namespace, "Ready"), 30, what="Ready")
    annotate(cluster, "queued", namespace, run_now="fails", run_parameters=FAIL)
    eventually(lambda: status(cluster, "queued", namespace).get("retry"), 30, what="pending")
    annotate(cluster, "queued", namespace, run_now="busy",
             run_parameters=json.dumps({"SIM_DURATION_SECONDS": "8"}))
    handled(cluster, "queued", namespace, "busy")
    s = wait_runs(cluster, "queued", namespace, 3, 60)
    ends = {r["job"]: ts(r["completionTime"]) for r in s["runs"]}
    busy = next(r["job"] for r in s["runs"] if r["trigger"] == "manual" and r["attempt"] == 1
                and r["result"] == "Succeeded")
    retried = next(j for j in jobs(cluster, "queued", namespace)
                   if j["metadata"]["labels"]["bgjob.dev/trigger"] == "retry")
    assert ts(retried["metadata"]["creationTimestamp"]) >= ends[busy]  # no overlap
    assert s["stats"]["retries"] == 1
