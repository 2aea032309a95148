"""Core reconciliation on the real control plane: schedule kinds, triggers, concurrency,
status and stats, pruning, restarts. The pod driver plays the kubelet."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Cluster, Operator, eventually
from tests.integration.helpers import (
    annotate,
    condition,
    handled,
    job_names,
    jobs,
    manifest,
    reasons,
    soon,
    status,
    wait_event,
    wait_runs,
)

pytestmark = pytest.mark.integration
SLOW = {"SIM_DURATION_SECONDS": "30"}


def test_every_schedule_kind_fires_real_jobs_at_the_predicted_times(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    # The next whole minute at least 25 s away, read in three zones, so every kind fires once.
    now = datetime.now(UTC)
    target = (now + timedelta(seconds=85)).replace(second=0, microsecond=0)
    kolkata = target.astimezone(ZoneInfo("Asia/Kolkata"))
    berlin = target.astimezone(ZoneInfo("Europe/Berlin"))
    weekday = kolkata.strftime("%A")
    kinds = {
        "k-cron": {"cron": f"{target.minute} * * * *"},
        "k-every": {"every": "1m"},
        "k-daily": {"daily": kolkata.strftime("%H:%M"), "timeZone": "Asia/Kolkata"},
        "k-weekly": {"weekly": {"day": weekday, "time": kolkata.strftime("%H:%M")},
                     "timeZone": "Asia/Kolkata"},
        "k-monthly": {"monthly": {"day": berlin.day, "time": berlin.strftime("%H:%M")},
                      "timeZone": "Europe/Berlin"},
        "k-at": {"at": soon(20)},
        "k-interval": {"every": "1m1s"},  # does not divide an hour: timed by the operator
    }
    for name, sched in kinds.items():
        cluster.apply(manifest(name, schedule=sched), namespace)
    predicted: dict[str, str] = {}
    for name in kinds:
        s = eventually(lambda n=name: status(cluster, n, namespace).get("schedule"), 30,  # type: ignore[misc]
                       what=f"{name} compiled")
        predicted[name] = s["nextRunTimes"][0]
        assert len(s["nextRunTimes"]) == (1 if name == "k-at" else 3)
        assert s["mode"] == ("Operator" if name in ("k-at", "k-interval") else "CronJob")
    for name in ("k-cron", "k-daily", "k-weekly", "k-monthly"):
        assert predicted[name] == target.strftime("%Y-%m-%dT%H:%M:%SZ"), (name, predicted)

    def fired() -> dict[str, dict[str, str]] | None:
        seen: dict[str, dict[str, str]] = {}
        for job in cluster.items("jobs", namespace):
            owner = job["metadata"]["labels"].get("bgjob.dev/backgroundjob")
            if owner:
                seen.setdefault(owner, dict(job["metadata"].get("annotations") or {}))
        return seen if set(seen) == set(kinds) else None

    seen = eventually(fired, 160, 2, what="a Job from every schedule kind")
    for name in ("k-cron", "k-daily", "k-weekly", "k-monthly", "k-every"):
        # The real CronJob controller fired at the time the operator predicted.
        fired_at = datetime.fromisoformat(
            seen[name]["batch.kubernetes.io/cronjob-scheduled-timestamp"])
        at = fired_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if name == "k-every":  # every minute: a tick may fall between its CronJob's creation
            # and the status read, so the first Job may be the minute before the prediction.
            before = datetime.fromisoformat(predicted[name]) - timedelta(minutes=1)
            assert at in (predicted[name], before.strftime("%Y-%m-%dT%H:%M:%SZ")), name
            continue
        assert at == predicted[name], name
    for name in ("k-at", "k-interval"):
        assert seen[name]["bgjob.dev/scheduled-time"] == predicted[name], name
    job_env = {e["name"]: e.get("value") for e in jobs(cluster, "k-at", namespace)[0]["spec"][
        "template"]["spec"]["containers"][0]["env"]}
    assert job_env["BGJOB_SCHEDULED_TIME"] == predicted["k-at"]
    assert job_env["BGJOB_TRIGGER"] == "scheduled"
    done = wait_runs(cluster, "k-at", namespace, 1)
    assert done["schedule"]["nextRunTimes"] == []  # a one-off that has run
    assert done["lastScheduleTime"] == predicted["k-at"]


def test_switching_schedule_kind_swaps_cronjob_for_operator_timing(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("switch", schedule={"cron": "0 3 * * *"}), namespace)
    eventually(lambda: cluster.get("cronjob", "switch", namespace), 30, what="CronJob")
    at = soon(8)
    cluster.apply(manifest("switch", schedule={"at": at}), namespace)
    eventually(lambda: cluster.get("cronjob", "switch", namespace) is None, 30,
               what="old CronJob removed")
    s = wait_runs(cluster, "switch", namespace, 1, 40)
    assert s["schedule"]["mode"] == "Operator" and "cronJob" not in s
    assert len(jobs(cluster, "switch", namespace)) == 1
    # And back: a CronJob again, no run for the past.
    cluster.apply(manifest("switch", schedule={"cron": "0 3 * * *"}), namespace)
    eventually(lambda: cluster.get("cronjob", "switch", namespace), 30, what="CronJob back")
    time.sleep(2)
    assert len(jobs(cluster, "switch", namespace)) == 1


def test_suspend_and_resume_map_to_the_cronjob_and_manual_runs_still_work(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("pause", schedule={"cron": "0 3 * * *"}, suspend=True), namespace)
    cj = eventually(lambda: cluster.get("cronjob", "pause", namespace), 30, what="CronJob")
    assert cj["spec"]["suspend"] is True
    eventually(lambda: condition(cluster, "pause", namespace, "Suspended").get("status")
               == "True", 30, what="Suspended=True")
    assert status(cluster, "pause", namespace)["schedule"]["nextRunTimes"] == []
    annotate(cluster, "pause", namespace, run_now="while-suspended")
    s = wait_runs(cluster, "pause", namespace, 1)
    assert s["lastRun"]["trigger"] == "manual" and s["lastRun"]["result"] == "Succeeded"

    cluster.kubectl("-n", namespace, "patch", "bgj", "pause", "--type=merge",
                    "-p", '{"spec":{"suspend":false}}')
    eventually(lambda: (cluster.get("cronjob", "pause", namespace) or {})["spec"]["suspend"]
               is False, 30, what="CronJob resumed")
    eventually(lambda: condition(cluster, "pause", namespace, "Suspended").get("reason")
               == "Active", 30, what="Suspended=False")
    assert len(status(cluster, "pause", namespace)["schedule"]["nextRunTimes"]) == 3


def test_run_now_passes_parameters_to_the_pod_and_a_token_runs_once(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("manual", parameters={"level": "normal", "region": "eu"}), namespace)
    eventually(lambda: condition(cluster, "manual", namespace, "Ready").get("reason")
               == "ManualOnly", 30, what="Ready")
    annotate(cluster, "manual", namespace, run_now="t1",
             run_parameters=json.dumps({"level": "deep", "dry-run": True}))
    handled(cluster, "manual", namespace, "t1")
    job = jobs(cluster, "manual", namespace)[0]
    assert job["metadata"]["labels"]["bgjob.dev/trigger"] == "manual"
    assert len(job["metadata"]["name"]) <= 63

    def pod_env() -> dict[str, str] | None:
        pods = cluster.items("pods", namespace, f"job-name={job['metadata']['name']}")
        if not pods:
            return None
        return {e["name"]: e.get("value", "") for e in pods[0]["spec"]["containers"][0]["env"]}

    env = eventually(pod_env, 30, what="the run's pod")
    assert env["BGJOB_PARAM_LEVEL"] == "deep"         # overridden for this run
    assert env["BGJOB_PARAM_REGION"] == "eu"          # from spec.parameters
    assert env["BGJOB_PARAM_DRY_RUN"] == "true"       # key upper-cased, '-' to '_'
    assert env["BGJOB_TRIGGER"] == "manual" and env["BGJOB_NAME"] == "manual"
    assert env["BGJOB_ATTEMPT"] == "1"
    wait_runs(cluster, "manual", namespace, 1)

    # The same token again (after another annotation change) starts nothing.
    annotate(cluster, "manual", namespace, run_parameters="{}")
    annotate(cluster, "manual", namespace, run_now="t1")
    time.sleep(3)
    assert len(jobs(cluster, "manual", namespace)) == 1
    assert reasons(cluster, "manual", namespace).count("RunStarted") == 1


def test_run_now_across_an_operator_restart_starts_exactly_one_job(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("restart", parameters=SLOW), namespace)
    eventually(lambda: condition(cluster, "restart", namespace, "Ready"), 30, what="Ready")
    operator.stop()
    try:
        annotate(cluster, "restart", namespace, run_now="r1")
    finally:
        operator.start()
    handled(cluster, "restart", namespace, "r1", 60)
    # Kill it right after it acted, then start again: the token is not handled twice.
    operator.stop()
    operator.start()
    time.sleep(6)
    assert len(jobs(cluster, "restart", namespace)) == 1


def test_cancel_stops_active_runs_and_records_them_cancelled(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("stop", parameters=SLOW, concurrencyPolicy="Allow"), namespace)
    eventually(lambda: condition(cluster, "stop", namespace, "Ready"), 30, what="Ready")
    annotate(cluster, "stop", namespace, run_now="a")
    handled(cluster, "stop", namespace, "a")
    annotate(cluster, "stop", namespace, run_now="b")
    eventually(lambda: len(status(cluster, "stop", namespace).get("active") or []) == 2, 30,
               what="two active runs")
    annotate(cluster, "stop", namespace, cancel="c1")
    s = wait_runs(cluster, "stop", namespace, 2, 30)
    assert [r["result"] for r in s["runs"]] == ["Cancelled", "Cancelled"]
    assert s["stats"]["failed"] == 0 and s["stats"]["consecutiveFailures"] == 0
    assert condition(cluster, "stop", namespace, "Failing")["status"] == "False"
    assert "RunCancelled" in reasons(cluster, "stop", namespace)
    # The same cancel token does not stop a later run.
    annotate(cluster, "stop", namespace, run_now="c")
    eventually(lambda: len(status(cluster, "stop", namespace).get("active") or []) == 1, 30,
               what="a new active run")
    time.sleep(3)
    assert len(status(cluster, "stop", namespace).get("active") or []) == 1


@pytest.mark.parametrize(("policy", "force"), [("Forbid", False), ("Forbid", True),
                                               ("Allow", False), ("Replace", False)])
def test_concurrency_policy_for_manual_runs(cluster: Cluster, operator: Operator,
                                            namespace: str, policy: str, force: bool) -> None:
    cluster.apply(manifest("cc", parameters=SLOW, concurrencyPolicy=policy), namespace)
    eventually(lambda: condition(cluster, "cc", namespace, "Ready"), 30, what="Ready")
    annotate(cluster, "cc", namespace, run_now="first")
    eventually(lambda: status(cluster, "cc", namespace).get("active"), 30, what="first run")
    extra = {"run_force": "true"} if force else {}
    annotate(cluster, "cc", namespace, run_now="second", **extra)
    handled(cluster, "cc", namespace, "second")
    if policy == "Forbid" and not force:
        event = wait_event(cluster, "cc", namespace, "TriggerRejected")
        assert event["type"] == "Warning" and "Forbid" in event["message"]
        assert len(jobs(cluster, "cc", namespace)) == 1
    elif policy == "Replace":
        s = wait_runs(cluster, "cc", namespace, 1, 30)
        assert s["runs"][0]["result"] == "Cancelled"
        assert len(s["active"]) == 1
    else:
        eventually(lambda: len(status(cluster, "cc", namespace).get("active") or []) == 2, 30,
                   what="both runs active")


@pytest.mark.parametrize("policy", ["Forbid", "Replace", "Allow"])
def test_concurrency_policy_for_operator_timed_runs(cluster: Cluster, operator: Operator,
                                                    namespace: str, policy: str) -> None:
    cluster.apply(manifest("op", parameters={"SIM_DURATION_SECONDS": "12"},
                           concurrencyPolicy=policy), namespace)
    eventually(lambda: condition(cluster, "op", namespace, "Ready"), 30, what="Ready")
    annotate(cluster, "op", namespace, run_now="busy")
    eventually(lambda: status(cluster, "op", namespace).get("active"), 30, what="manual run")
    due = soon(3)
    cluster.apply(manifest("op", parameters={"SIM_DURATION_SECONDS": "12"},
                           concurrencyPolicy=policy, schedule={"at": due}), namespace)
    time.sleep(6)
    scheduled = [j for j in jobs(cluster, "op", namespace)
                 if j["metadata"]["labels"]["bgjob.dev/trigger"] == "scheduled"]
    if policy == "Forbid":
        assert scheduled == []  # waits for the manual run, then starts late
        s = wait_runs(cluster, "op", namespace, 2, 60)
        assert s["lastScheduleTime"] == due
        assert [r["trigger"] for r in s["runs"]] == ["scheduled", "manual"]
    elif policy == "Replace":
        assert len(scheduled) == 1
        s = wait_runs(cluster, "op", namespace, 1, 30)
        assert s["runs"][0]["trigger"] == "manual" and s["runs"][0]["result"] == "Cancelled"
    else:
        assert len(scheduled) == 1
        assert len(status(cluster, "op", namespace).get("active") or []) == 2


def test_stats_and_conditions_after_runs_with_failures_and_pruning(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("mixed", concurrencyPolicy="Allow",
                           history={"successfulJobs": 1, "failedJobs": 1, "runRecords": 3}),
                  namespace)
    eventually(lambda: condition(cluster, "mixed", namespace, "Ready"), 30, what="Ready")
    outcomes = ["0", "0", "3", "0", "5"]
    for i, code in enumerate(outcomes):
        annotate(cluster, "mixed", namespace, run_now=f"n{i}",
                 run_parameters=json.dumps({"SIM_EXIT_CODE": code,
                                            "SIM_DURATION_SECONDS": "0"}))
        handled(cluster, "mixed", namespace, f"n{i}")
        wait_runs(cluster, "mixed", namespace, i + 1, 40)
    s = status(cluster, "mixed", namespace)
    assert s["stats"]["runs"] == 5 and s["stats"]["succeeded"] == 3 and s["stats"]["failed"] == 2
    assert s["stats"]["successRate"] == 0.6 and s["stats"]["consecutiveFailures"] == 1
    assert s["lastRun"]["result"] == "Failed" and s["lastRun"]["exitCode"] == 5
    assert s["lastFailureTime"] and s["lastSuccessfulTime"]
    assert len(s["runs"]) == 3  # history.runRecords
    failing = condition(cluster, "mixed", namespace, "Failing")
    assert failing["status"] == "True" and "exit code 5" in failing["message"]
    # Pruned to one Job per outcome, and the pruned ones are not counted again.
    eventually(lambda: len(jobs(cluster, "mixed", namespace)) == 2, 30, what="pruning")
    time.sleep(2)
    assert status(cluster, "mixed", namespace)["stats"]["runs"] == 5
    assert "RunFailed" in reasons(cluster, "mixed", namespace)


def test_runs_made_while_the_operator_was_down_wait_for_it_and_are_counted_once(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    # The operator is the single gate: Jobs made from the CronJob's (suspended) template while
    # it is down wait, then run one after the other under Forbid, each counted once.
    cluster.apply(manifest("down", schedule={"cron": "0 3 * * *"}), namespace)
    eventually(lambda: cluster.get("cronjob", "down", namespace), 30, what="CronJob")
    operator.stop()
    try:
        for n in ("by-hand-1", "by-hand-2"):
            cluster.kubectl("-n", namespace, "create", "job", n, "--from=cronjob/down")
        time.sleep(3)
        assert all(j["spec"].get("suspend") for j in jobs(cluster, "down", namespace))
    finally:
        operator.start()
    s = wait_runs(cluster, "down", namespace, 2, 60)
    assert sorted(r["job"] for r in s["runs"]) == ["by-hand-1", "by-hand-2"]
    assert {r["trigger"] for r in s["runs"]} == {"manual"}
    operator.stop()
    operator.start()
    time.sleep(5)
    assert status(cluster, "down", namespace)["stats"]["runs"] == 2


def test_kubectl_explain_and_wait(cluster: Cluster, operator: Operator, namespace: str) -> None:
    text = cluster.kubectl("explain", "backgroundjob.spec.retry").stdout
    assert "retry re-runs failed runs" in text and "nonRetryableExitCodes" in text
    backoff = cluster.kubectl("explain", "bgj.spec.retry.backoff.factor").stdout
    assert "factor multiplies the delay" in backoff
    cluster.apply(manifest("waited", schedule={"daily": "04:00"}), namespace)
    res = cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", "bgj/waited",
                          "--timeout=30s")
    assert "condition met" in res.stdout
    assert job_names(cluster, "waited", namespace) == []
