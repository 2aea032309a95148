"""Exactly-once on the real API: the accounting finalizer, the operator as the single gate for
CronJob-made Jobs, owner filtering, drift revert, deletion that leaves nothing stuck, and a
chaos run with the operator SIGKILLed at random moments."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest

from tests.conftest import Cluster, Operator, eventually
from tests.integration.helpers import annotate, condition, jobs, manifest, status, wait_runs

pytestmark = pytest.mark.integration
FIN = "bgjob.dev/accounting"


def _job(cluster: Cluster, ns: str, name: str) -> dict | None:  # type: ignore[type-arg]
    return cluster.get("job", name, ns)


def test_a_job_deleted_while_the_operator_is_down_is_counted_once(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("acct", retry={"limit": 1, "backoff": {
        "initialDelaySeconds": 1, "jitter": 0}}), namespace)
    eventually(lambda: condition(cluster, "acct", namespace, "Ready").get("status") == "True",
               30, what="Ready")
    annotate(cluster, "acct", namespace, run_now="one",
             run_parameters=json.dumps({"SIM_EXIT_CODE": "3", "SIM_DURATION_SECONDS": "4"}))
    first = eventually(lambda: jobs(cluster, "acct", namespace), 30, what="the run's Job")[0]
    assert FIN in first["metadata"]["finalizers"]
    assert operator.proc is not None
    operator.proc.send_signal(signal.SIGKILL)  # down at once, before the run ends
    operator.proc.wait()
    operator.proc = None
    try:
        name = first["metadata"]["name"]
        eventually(lambda: (status_of := (_job(cluster, namespace, name) or {}).get(
            "status", {})) and status_of.get("failed"), 60, what="the run failed")
        cluster.kubectl("-n", namespace, "delete", "job", name, "--wait=false")
        held = _job(cluster, namespace, name)
        assert held is not None and held["metadata"].get("deletionTimestamp"), \
            "the finalizer holds the deleted Job until it is counted"
    finally:
        operator.start()
    s = wait_runs(cluster, "acct", namespace, 2, timeout=90)  # the failure and its retry
    assert (s["stats"]["runs"], s["stats"]["failed"], s["stats"]["retries"]) == (2, 2, 1)
    eventually(lambda: _job(cluster, namespace, name) is None, 30, what="the Job released")
    time.sleep(3)
    assert status(cluster, "acct", namespace)["stats"]["runs"] == 2  # never counted again


def test_cronjob_jobs_wait_for_the_gate_and_are_counted_after_pruning(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    # A run-now that lasts across the next minute's tick: under Forbid, the CronJob's Job waits
    # suspended until it ends, then starts. History limits 0: the CronJob deletes each finished
    # Job at once, and the count is still right.
    cluster.apply(manifest("gate", schedule={"cron": "* * * * *"},
                           history={"successfulJobs": 0, "failedJobs": 0}), namespace)
    cj = eventually(lambda: cluster.get("cronjob", "gate", namespace), 30, what="CronJob")
    assert cj["spec"]["jobTemplate"]["spec"]["suspend"] is True
    assert cj["spec"]["concurrencyPolicy"] == "Allow"
    annotate(cluster, "gate", namespace, run_now="long",
             run_parameters=json.dumps({"SIM_DURATION_SECONDS": "75"}))

    def waiting() -> dict | None:  # type: ignore[type-arg]
        for job in jobs(cluster, "gate", namespace):
            if job["metadata"]["labels"]["bgjob.dev/trigger"] == "scheduled":
                return job
        return None

    scheduled = eventually(waiting, 90, 1, what="the CronJob's Job")
    manual_active = any(j["metadata"]["labels"]["bgjob.dev/trigger"] == "manual"
                        and not j.get("status", {}).get("succeeded")
                        for j in jobs(cluster, "gate", namespace))
    if manual_active:
        current = _job(cluster, namespace, scheduled["metadata"]["name"])
        assert current is not None and current["spec"]["suspend"] is True, \
            "Forbid: the scheduled run must wait while the manual run is active"
    s = wait_runs(cluster, "gate", namespace, 2, timeout=150)
    assert s["stats"]["succeeded"] >= 2
    assert s["stats"]["runs"] == s["stats"]["succeeded"] + s["stats"]["failed"]


def test_cronjob_drift_is_reverted(cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("drift", schedule={"cron": "0 3 * * *"}), namespace)
    eventually(lambda: cluster.get("cronjob", "drift", namespace), 30, what="CronJob")
    cluster.kubectl("-n", namespace, "patch", "cronjob", "drift", "--type=merge", "-p",
                    json.dumps({"spec": {"suspend": True, "schedule": "5 5 * * *"}}))

    def reverted() -> bool:
        cj = cluster.get("cronjob", "drift", namespace) or {}
        return cj.get("spec", {}).get("suspend") is False and \
            cj["spec"]["schedule"] == "0 3 * * *"

    eventually(reverted, 30, what="drift reverted")


def test_foreign_labelled_jobs_are_neither_counted_nor_cancelled(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("own"), namespace)
    eventually(lambda: condition(cluster, "own", namespace, "Ready").get("status") == "True",
               30, what="Ready")
    cluster.apply(json.dumps({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "foreign", "labels": {"bgjob.dev/backgroundjob": "own",
                                                    "bgjob.dev/trigger": "manual"}},
        "spec": {"backoffLimit": 0, "template": {"metadata": {"annotations": {
            "sim.bgjob.dev/duration-seconds": "2"}}, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox:1.36"}]}}}}), namespace)
    annotate(cluster, "own", namespace, cancel="c1")
    eventually(lambda: (_job(cluster, namespace, "foreign") or {}).get("status", {}).get(
        "succeeded"), 30, what="the foreign Job finished on its own")
    time.sleep(3)
    s = status(cluster, "own", namespace)
    assert s.get("lastHandledCancel") == "c1"
    assert not s.get("stats", {}).get("runs") and not s.get("active")
    foreign = _job(cluster, namespace, "foreign") or {}
    assert "bgjob.dev/cancelled" not in (foreign["metadata"].get("annotations") or {})


def test_deleting_a_backgroundjob_leaves_no_job_stuck(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("gone"), namespace)
    annotate(cluster, "gone", namespace, run_now="a",
             run_parameters=json.dumps({"SIM_DURATION_SECONDS": "60"}))
    eventually(lambda: jobs(cluster, "gone", namespace), 30, what="a running Job")
    cluster.kubectl("-n", namespace, "delete", "bgj", "gone", "--wait=false")
    eventually(lambda: not jobs(cluster, "gone", namespace), 60,
               what="every Job gone (finalizer released)")


def test_chaos_operator_killed_at_random_moments(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    """24 runs (successes, retryable and non-retryable failures) on 3 BackgroundJobs, the
    operator SIGKILLed every few seconds: nothing lost, nothing doubled, every retry made."""
    rng = random.Random(13)
    retry = {"limit": 2, "backoff": {"initialDelaySeconds": 1, "factor": 1.0, "jitter": 0},
             "nonRetryableExitCodes": [64]}
    names = ("c-ok", "c-retry", "c-fatal")
    codes = {"c-ok": "0", "c-retry": "3", "c-fatal": "64"}
    for name in names:
        cluster.apply(manifest(name, retry=retry, concurrencyPolicy="Allow",
                               history={"successfulJobs": 1, "failedJobs": 1}), namespace)
    triggers = 8
    kills = 0
    for i in range(triggers):
        for name in names:
            annotate(cluster, name, namespace, run_now=f"t{i}", run_parameters=json.dumps(
                {"SIM_EXIT_CODE": codes[name], "SIM_DURATION_SECONDS": "1"}))
        eventually(lambda i=i: all(status(cluster, n, namespace).get("lastHandledRunNow")  # type: ignore[misc]
                                   == f"t{i}" for n in names), 60, 0.3,
                   what=f"trigger t{i} handled")
        time.sleep(rng.uniform(0.2, 2.5))
        if operator.proc is not None:  # every round, at a random moment
            operator.proc.send_signal(signal.SIGKILL)
            operator.proc.wait()
            kills += 1
            time.sleep(rng.uniform(0.5, 3))
            operator.start()
    expected = {"c-ok": (8, 8, 0, 0), "c-retry": (24, 0, 24, 16), "c-fatal": (8, 0, 8, 0)}
    for name, (runs, ok, failed, retries) in expected.items():
        s = wait_runs(cluster, name, namespace, runs, timeout=180)
        time.sleep(2)
        s = status(cluster, name, namespace)
        got = (s["stats"]["runs"], s["stats"]["succeeded"], s["stats"]["failed"],
               s["stats"]["retries"])
        assert got == (runs, ok, failed, retries), (name, got, kills)
    print(f"chaos: {triggers * 3} triggered runs, {kills} SIGKILLs, counts exact")
