"""Backfill on the real API: the plugin's dry run writes nothing, then a 5-day backfill runs
each due time once, one at a time, oldest first, with its historical scheduled time, across an
operator kill."""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Cluster, Operator, eventually
from tests.integration.helpers import condition, jobs, manifest, reasons, rfc3339, status
from tests.integration.test_plugin import bgjob

pytestmark = pytest.mark.integration


def _finished(job: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def _env(job: dict[str, Any]) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


def test_five_day_backfill_once_each_one_at_a_time_across_a_kill(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("bf", schedule={"daily": "02:00"},
                           parameters={"SIM_DURATION_SECONDS": "3"},
                           history={"successfulJobs": 10}), namespace)
    eventually(lambda: condition(cluster, "bf", namespace, "Ready").get("status") == "True",
               30, what="Ready")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, until = rfc3339(today - timedelta(days=6)), rfc3339(today - timedelta(days=1))
    rv = cluster.get("bgj", "bf", namespace)["metadata"]["resourceVersion"]  # type: ignore[index]
    dry = bgjob(cluster.lc.kubeconfig, "-n", namespace, "backfill", "bf", "--from", start,
                "--until", until, "--dry-run").stdout.splitlines()
    want = [rfc3339(today - timedelta(days=d) + timedelta(hours=2)) for d in range(6, 1, -1)]
    assert [line.strip() for line in dry[1:]] == want
    assert cluster.get("bgj", "bf", namespace)["metadata"]["resourceVersion"] == rv  # type: ignore[index]

    most = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            running = [j for j in jobs(cluster, "bf", namespace) if not _finished(j)]
            most[0] = max(most[0], len(running))
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        bgjob(cluster.lc.kubeconfig, "-n", namespace, "backfill", "bf", "--from", start,
              "--until", until)
        eventually(lambda: (status(cluster, "bf", namespace).get("backfill") or {}).get(
            "started", 0) >= 2, 60, what="two backfill runs started")
        assert operator.proc is not None
        operator.proc.send_signal(signal.SIGKILL)
        operator.proc.wait()
        operator.proc = None
        time.sleep(2)
        operator.start()
        bf = eventually(lambda: (b := status(cluster, "bf", namespace).get("backfill") or {})
                        .get("phase") == "Completed" and b, 120, what="backfill completed")
    finally:
        stop.set()
        watcher.join()
    assert (bf["total"], bf["started"], bf["succeeded"], bf["failed"]) == (5, 5, 5, 0)
    made = [j for j in jobs(cluster, "bf", namespace)
            if j["metadata"]["labels"]["bgjob.dev/trigger"] == "backfill"]
    assert len(made) == 5 and most[0] == 1, (len(made), most[0])
    made.sort(key=lambda j: (j["metadata"]["creationTimestamp"], j["metadata"]["name"]))
    assert sorted(_env(j)["BGJOB_SCHEDULED_TIME"] for j in made) == want
    created = [j["metadata"]["creationTimestamp"] for j in made]
    assert created == sorted(created)
    s = status(cluster, "bf", namespace)
    assert s["stats"]["runs"] == 5 and s["stats"]["succeeded"] == 5
    assert "BackfillStarted" in reasons(cluster, "bf", namespace)
    assert "BackfillCompleted" in reasons(cluster, "bf", namespace)
