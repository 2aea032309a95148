"""The walking skeleton on the real control plane: BackgroundJob → CronJob → Job → status."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import ROOT, Cluster, Operator, eventually

pytestmark = pytest.mark.integration

EVERY_MINUTE = """
apiVersion: bgjob.dev/v1alpha1
kind: BackgroundJob
metadata: {name: tick}
spec:
  schedule: {cron: "* * * * *"}
  template:
    spec:
      template:
        spec:
          containers: [{name: main, image: busybox:1.36, command: [sh, -c, "echo tick"]}]
"""


def test_cron_backgroundjob_runs_through_the_real_controllers(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(EVERY_MINUTE, namespace)

    # 1. The operator creates an owned native CronJob and reports Ready.
    cj = eventually(lambda: cluster.get("cronjob", "tick", namespace), 30, what="CronJob")
    owner = cj["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("BackgroundJob", "tick", True)
    assert cj["spec"]["schedule"] == "* * * * *"
    assert cj["spec"]["jobTemplate"]["metadata"]["labels"]["bgjob.dev/trigger"] == "scheduled"
    cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", "bgj/tick",
                    "--timeout=30s")

    # 2. The real CronJob controller starts a Job at the minute; the pod driver finishes it;
    #    the operator records the run.
    def succeeded() -> dict[str, Any] | None:
        bj = cluster.get("bgj", "tick", namespace)
        status = (bj or {}).get("status") or {}
        last = status.get("lastRun") or {}
        return status if last.get("result") == "Succeeded" else None

    status = eventually(succeeded, 100, 1, what="a succeeded run")
    assert status["lastSuccessfulTime"]
    assert status["lastRun"]["trigger"] == "scheduled"
    assert status["stats"]["succeeded"] >= 1
    job_name = status["lastRun"]["job"]
    job = cluster.get("job", job_name, namespace)
    assert job is not None
    assert job["metadata"]["labels"]["bgjob.dev/backgroundjob"] == "tick"

    # 3. kubectl get shows the row with the contract's columns.
    table = cluster.kubectl("-n", namespace, "get", "backgroundjobs").stdout
    header, row = table.splitlines()[0], table.splitlines()[1]
    for column in ("NAME", "SCHEDULE", "SUSPENDED", "ACTIVE", "LAST RESULT", "LAST SUCCESS",
                   "NEXT RUN", "READY", "AGE"):
        assert column in header
    assert row.startswith("tick") and "Every minute" in row and "Succeeded" in row
    wide = cluster.kubectl("-n", namespace, "get", "bgj", "-o", "wide").stdout
    for column in ("TIMEZONE", "RUNS", "SUCCESS RATE", "FAILURES IN A ROW"):
        assert column in wide.splitlines()[0]

    # 4. Deleting the BackgroundJob removes the CronJob and its Jobs via the garbage collector.
    cluster.kubectl("-n", namespace, "delete", "bgj", "tick", "--wait=true")
    eventually(lambda: cluster.get("cronjob", "tick", namespace) is None, 90, 1,
               what="CronJob garbage-collected")
    eventually(lambda: not cluster.items("jobs", namespace, "bgjob.dev/backgroundjob=tick"), 90,
               1, what="Jobs garbage-collected")


def test_every_example_is_accepted_and_becomes_ready(cluster: Cluster,
                                                      operator: Operator) -> None:
    examples = sorted(p for p in (ROOT / "examples").glob("*.yaml")
                      if p.name != "00-namespace.yaml")
    assert len(examples) >= 5
    cluster.kubectl("apply", "-f", str(ROOT / "examples" / "00-namespace.yaml"))
    for path in examples:
        res = cluster.kubectl("apply", "--dry-run=server", "-f", str(path))
        assert "created (server dry run)" in res.stdout, (path, res.stdout)
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "examples"))
    names = [p.stem for p in examples]
    cluster.kubectl("-n", "bgjob-examples", "wait", "--for=condition=Ready", "--timeout=60s",
                    *[f"bgj/{n}" for n in names])
    suspended = cluster.get("bgj", "database-maintenance", "bgjob-examples") or {}
    conds = {c["type"]: c for c in suspended["status"]["conditions"]}
    assert conds["Suspended"]["status"] == "True"
    assert suspended["status"]["schedule"]["nextRunTimes"] == []
    cleanup = cluster.get("bgj", "document-cleanup", "bgjob-examples") or {}
    assert cleanup["status"]["schedule"]["description"] == "At 02:00, every day"
    assert len(cleanup["status"]["schedule"]["nextRunTimes"]) == 3
    cluster.kubectl("delete", "-f", str(ROOT / "examples"), "--wait=false")


def test_schema_rejects_two_schedule_kinds_at_apply_time(cluster: Cluster,
                                                         namespace: str) -> None:
    bad = EVERY_MINUTE.replace('{cron: "* * * * *"}', '{cron: "* * * * *", daily: "02:00"}')
    res = cluster.kubectl("-n", namespace, "apply", "-f", "-", input=bad, check=False)
    assert res.returncode != 0
    assert "set exactly one of cron, every, daily, weekly, monthly, at" in res.stderr


def test_bad_cron_sets_ready_false_naming_the_field(cluster: Cluster, operator: Operator,
                                                    namespace: str) -> None:
    cluster.apply(EVERY_MINUTE.replace("* * * * *", "0 0 31 2 *"), namespace)

    def ready_false() -> dict[str, Any] | None:
        bj = cluster.get("bgj", "tick", namespace) or {}
        for cond in (bj.get("status") or {}).get("conditions") or []:
            if cond["type"] == "Ready" and cond["status"] == "False":
                return dict(cond)
        return None

    cond = eventually(ready_false, 30, what="Ready=False")
    assert cond["reason"] == "InvalidSchedule"
    assert cond["message"].startswith("spec.schedule.cron:")
    assert "\n" not in cond["message"]
    assert cluster.get("cronjob", "tick", namespace) is None
    eventually(lambda: any(e["reason"] == "InvalidSchedule" and e["type"] == "Warning"
                           for e in cluster.events(namespace, "tick")), 30,
               what="InvalidSchedule event")


DAILY = EVERY_MINUTE.replace('{cron: "* * * * *"}', '{daily: "02:00"}').replace("tick", "quiet")


def _operator_writes(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """Writes in ``namespace`` made by the operator's client, from the API server's audit log."""
    import json

    path = cluster.lc.logs / "audit.log"
    out = []
    for line in path.read_text().splitlines():
        ev = json.loads(line)
        if (ev.get("objectRef") or {}).get("namespace") != namespace:
            continue
        if not ev.get("userAgent", "").startswith("bgjob-operator/"):
            continue
        out.append(ev)
    return out


def test_steady_state_costs_no_api_writes(cluster: Cluster, operator: Operator,
                                          namespace: str) -> None:
    cluster.apply(DAILY, namespace)
    cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", "bgj/quiet",
                    "--timeout=30s")
    eventually(lambda: cluster.get("cronjob", "quiet", namespace), 30, what="CronJob")
    time.sleep(2)  # let the watch echo of our own writes come back
    settled = _operator_writes(cluster, namespace)
    writes = sorted(" ".join([e["verb"], "/".join(filter(None, [
        e["objectRef"]["resource"], e["objectRef"].get("subresource")]))]) for e in settled)
    # Create: the CronJob, the status, the Scheduled event.
    assert writes == ["create cronjobs", "create events", "patch backgroundjobs/status"], writes
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # "consistently": nothing more is written
        assert len(_operator_writes(cluster, namespace)) == len(settled)
        time.sleep(1)
