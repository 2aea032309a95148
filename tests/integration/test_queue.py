"""The queue on the real API: Enqueue with maxConcurrency and maxQueued across an operator
kill, run-at through the plugin, and a Job held suspended by an admission system (as Kueue
holds it) shown as Queued, then counted normally once it runs."""

from __future__ import annotations

import json
import signal
import threading
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
    soon,
    status,
    wait_runs,
)
from tests.integration.test_plugin import bgjob

pytestmark = pytest.mark.integration


def _finished(job: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def _running(cluster: Cluster, name: str, ns: str) -> list[str]:
    """Jobs that hold a slot: let run (not suspended) and not finished."""
    return [j["metadata"]["name"] for j in jobs(cluster, name, ns)
            if not (j.get("spec") or {}).get("suspend") and not _finished(j)]


def test_enqueue_two_at_once_three_queued_one_skipped_across_a_kill(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("q", concurrencyPolicy="Enqueue", maxConcurrency=2, maxQueued=3,
                           history={"successfulJobs": 10},
                           parameters={"SIM_DURATION_SECONDS": "6"}), namespace)
    eventually(lambda: condition(cluster, "q", namespace, "Ready").get("status") == "True",
               30, what="Ready")
    most = [0]
    stop = threading.Event()

    def watch() -> None:  # the invariant, sampled all along: never more than 2 running
        while not stop.is_set():
            most[0] = max(most[0], len(_running(cluster, "q", namespace)))
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for token in ("t1", "t2", "t3", "t4", "t5", "t6"):
            annotate(cluster, "q", namespace, run_now=token)
            handled(cluster, "q", namespace, token)
        s = status(cluster, "q", namespace)
        assert len(s["active"]) == 2, s["active"]
        assert [q["job"] for q in s["queued"]] == [f"q-m-{_hash(t)}" for t in ("t3", "t4",
                                                                               "t5")]
        assert s["stats"]["skipped"] == 1 and s["queuedCount"] == 3
        assert reasons(cluster, "q", namespace).count("RunQueued") == 3
        assert "RunSkipped" in reasons(cluster, "q", namespace)
        listed = bgjob(cluster.lc.kubeconfig, "-n", namespace, "queue", "q").stdout
        assert [line.split()[0] for line in listed.splitlines()[1:]] == [
            q["job"] for q in s["queued"]]
        assert operator.proc is not None
        operator.proc.send_signal(signal.SIGKILL)  # down with three runs queued
        operator.proc.wait()
        operator.proc = None
        time.sleep(2)
        operator.start()
        s = wait_runs(cluster, "q", namespace, 5, timeout=120)
    finally:
        stop.set()
        watcher.join()
    time.sleep(2)
    s = status(cluster, "q", namespace)
    assert (s["stats"]["runs"], s["stats"]["succeeded"], s["stats"]["skipped"]) == (5, 5, 1)
    assert s.get("queued", []) == [] and most[0] <= 2, most[0]
    made = sorted(jobs(cluster, "q", namespace),
                  key=lambda j: (j["metadata"]["creationTimestamp"], j["metadata"]["name"]))
    assert len(made) == 5  # each run once: none doubled by the kill, the skipped one never
    queued_order = [j["metadata"]["name"] for j in made
                    if j["metadata"]["name"] in {f"q-m-{_hash(t)}" for t in ("t3", "t4", "t5")}]
    created = {j["metadata"]["name"]: j["metadata"]["creationTimestamp"] for j in made}
    assert [created[n] for n in queued_order] == sorted(created[n] for n in queued_order)


def _hash(token: str) -> str:
    from bgjob import manifests
    return manifests.manual_job_name("q", token).removeprefix("q-m-")


def test_run_at_waits_in_the_queue_then_starts_at_its_time(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("later"), namespace)
    eventually(lambda: condition(cluster, "later", namespace, "Ready").get("status") == "True",
               30, what="Ready")
    at = soon(12)
    out = bgjob(cluster.lc.kubeconfig, "-n", namespace, "run", "later", "--at", at).stdout
    job = out.split()[0].removeprefix("job.batch/")
    entry = eventually(lambda: (status(cluster, "later", namespace).get("queued") or [None])[0],
                       30, what="the queued run")
    assert entry["job"] == job and entry["notBefore"] == at
    assert cluster.get("job", job, namespace) is None
    created = eventually(lambda: cluster.get("job", job, namespace), 40, 0.5,
                         what="the run at its time")
    started = datetime.fromisoformat(created["metadata"]["creationTimestamp"].replace(
        "Z", "+00:00"))
    assert started >= datetime.fromisoformat(at.replace("Z", "+00:00"))
    assert (started - datetime.fromisoformat(at.replace("Z", "+00:00"))).total_seconds() < 5
    wait_runs(cluster, "later", namespace, 1)
    bad = bgjob(cluster.lc.kubeconfig, "-n", namespace, "run", "later", "--at", "tomorrow",
                check=1)
    assert bad.stderr.strip().startswith("error: --at: must be an RFC 3339 time")
    annotate(cluster, "later", namespace, run_now="bad", run_at="noon")
    handled(cluster, "later", namespace, "bad")
    ready = condition(cluster, "later", namespace, "Ready")
    assert ready["reason"] == "InvalidTrigger" and "bgjob.dev/run-at" in ready["message"]


def test_a_job_held_by_its_admission_system_is_queued_then_counted(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    # The template carries Kueue's queue label and asks for suspended Jobs, as Kueue's webhook
    # makes them: the run is admitted by us and then held, until "Kueue" lets it go.
    template = {"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "batch"}},
                "spec": {"suspend": True, "template": {"spec": {"containers": [
                    {"name": "main", "image": "busybox:1.36"}]}}}}
    cluster.apply(manifest("held", template=template, timeoutSeconds=5,
                           schedule={"cron": "0 0 1 1 *", "startingDeadlineSeconds": 8}),
                  namespace)
    eventually(lambda: condition(cluster, "held", namespace, "Ready").get("status") == "True",
               30, what="Ready")
    annotate(cluster, "held", namespace, run_now="k")
    ref = eventually(lambda: (status(cluster, "held", namespace).get("active") or [None])[0],
                     30, what="the held run in active")
    assert ref["result"] == "Queued"
    job = cluster.get("job", ref["job"], namespace)
    assert job is not None and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "batch"
    overdue = eventually(lambda: (c := condition(cluster, "held", namespace, "Overdue")).get(
        "reason") == "Queued" and c, 30, what="Overdue Queued")
    assert overdue["status"] == "True"
    time.sleep(2)  # held longer than timeoutSeconds: no timeout runs while it is queued
    assert not _finished(cluster.get("job", ref["job"], namespace) or {})
    cluster.kubectl("-n", namespace, "patch", "job", ref["job"], "--type=merge",
                    "-p", json.dumps({"spec": {"suspend": False}}))
    s = wait_runs(cluster, "held", namespace, 1, timeout=60)
    assert s["lastRun"]["result"] == "Succeeded" and s["stats"]["succeeded"] == 1
    eventually(lambda: condition(cluster, "held", namespace, "Overdue").get("status") == "False",
               30, what="Overdue cleared")
