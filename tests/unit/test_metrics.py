"""Metrics follow status: counters move once per change, gauges mirror status, series of a
deleted BackgroundJob go away."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from bgjob.api import BackgroundJobStatus
from bgjob.metrics import Metrics

KEY = ("platform", "cleanup")
LABELS = {"namespace": "platform", "backgroundjob": "cleanup"}


def status(**doc: Any) -> BackgroundJobStatus:
    return BackgroundJobStatus.model_validate(doc)


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, {**LABELS, **labels})


RUN_OK = {"job": "cleanup-1", "trigger": "scheduled", "result": "Succeeded",
          "durationSeconds": 12.0}
RUN_BAD = {"job": "cleanup-m-1", "trigger": "manual", "result": "Failed", "durationSeconds": 3.0}


def test_counters_move_once_and_gauges_mirror_status() -> None:
    m = Metrics()
    reg = m.registry
    empty = status()
    one = status(runs=[{"job": "cleanup-1", "trigger": "scheduled", "result": "Running"}],
                 active=[{"job": "cleanup-1", "trigger": "scheduled"}],
                 queued=[{"job": "cleanup-m-2", "trigger": "manual",
                          "since": "2026-11-22T01:00:00Z"}],
                 schedule={"kind": "cron", "mode": "CronJob",
                           "nextRunTimes": ["2026-11-23T01:00:00Z"]})
    m.record(KEY, empty, one)
    assert value(reg, "bgjob_active_runs") == 1
    assert value(reg, "bgjob_queued_runs") == 1
    assert value(reg, "bgjob_next_run_timestamp_seconds") == 1795395600.0
    # born at 0 before the first run ends, so increase() sees its first step
    assert value(reg, "bgjob_runs_total", trigger="scheduled", result="Succeeded") == 0

    two = status(runs=[RUN_BAD, RUN_OK], lastSuccessfulTime="2026-11-22T01:00:12Z",
                 stats={"runs": 2, "retries": 1, "missed": 2, "consecutiveFailures": 1},
                 conditions=[{"type": "Overdue", "status": "True", "reason": "MissedSchedule",
                              "lastTransitionTime": "2026-11-22T01:00:00Z"}])
    m.record(KEY, one, two)
    m.record(KEY, two, two)  # a pass that changed nothing counts nothing
    assert value(reg, "bgjob_runs_total", trigger="scheduled", result="Succeeded") == 1
    assert value(reg, "bgjob_runs_total", trigger="manual", result="Failed") == 1
    assert value(reg, "bgjob_run_duration_seconds_count", result="Succeeded") == 1
    assert value(reg, "bgjob_run_duration_seconds_sum", result="Failed") == 3.0
    assert value(reg, "bgjob_retries_total") == 1
    assert value(reg, "bgjob_missed_runs_total") == 2
    assert value(reg, "bgjob_consecutive_failures") == 1
    assert value(reg, "bgjob_overdue") == 1
    assert value(reg, "bgjob_active_runs") == 0
    assert value(reg, "bgjob_queued_runs") == 0
    assert value(reg, "bgjob_last_success_timestamp_seconds") == 1795309212.0
    assert value(reg, "bgjob_next_run_timestamp_seconds") is None  # no next run any more


def test_a_restarted_process_restores_gauges_and_starts_counters_at_zero() -> None:
    m = Metrics()
    old = status(runs=[RUN_OK], lastSuccessfulTime="2026-11-22T01:00:12Z",
                 stats={"runs": 7, "consecutiveFailures": 0})
    m.record(KEY, old, old)  # the first pass after a restart: status as it was
    assert value(m.registry, "bgjob_last_success_timestamp_seconds") == 1795309212.0
    assert value(m.registry, "bgjob_runs_total", trigger="manual", result="Succeeded") == 0
    assert value(m.registry, "bgjob_runs_total", trigger="scheduled", result="Succeeded") is None
    assert value(m.registry, "bgjob_retries_total") == 0


def test_series_of_a_deleted_backgroundjob_are_removed() -> None:
    m = Metrics()
    m.record(KEY, status(), status(runs=[RUN_OK, RUN_BAD], stats={"retries": 1}))
    m.record(("platform", "other"), status(), status(runs=[RUN_OK]))
    m.forget(KEY)
    text = [s for fam in m.registry.collect() for s in fam.samples
            if s.labels.get("backgroundjob") == "cleanup"]
    assert text == []
    assert m.registry.get_sample_value("bgjob_runs_total", {
        "namespace": "platform", "backgroundjob": "other", "trigger": "scheduled",
        "result": "Succeeded"}) == 1


def test_reconcile_metrics() -> None:
    m = Metrics()
    m.reconciled("success", 0.01)
    m.reconciled("error", 0.2)
    assert m.registry.get_sample_value("bgjob_reconcile_total", {"result": "success"}) == 1
    assert m.registry.get_sample_value("bgjob_reconcile_duration_seconds_count",
                                       {"result": "error"}) == 1


def test_the_clients_own_write_counter_is_exposed() -> None:
    from collections import Counter

    writes: Counter[str] = Counter()
    m = Metrics()
    m.track_writes(writes)
    writes["POST cronjobs"] += 2
    writes["PATCH backgroundjobs/status"] += 1
    assert m.registry.get_sample_value("bgjob_api_writes_total", {
        "method": "POST", "resource": "cronjobs"}) == 2
    assert m.registry.get_sample_value("bgjob_api_writes_total", {
        "method": "PATCH", "resource": "backgroundjobs/status"}) == 1


def test_the_metrics_endpoint_serves_all_or_only_the_named_families() -> None:
    """``/metrics?name[]=…`` answers only those families (as prometheus_client's own handler
    does): the benchmark polls one family without rendering every object's series."""
    import asyncio
    import socket
    import urllib.request
    from collections import Counter

    from bgjob import serving

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    writes: Counter[str] = Counter({"POST cronjobs": 1})
    m = Metrics()
    m.track_writes(writes)
    m.record(KEY, status(), status(runs=[RUN_OK]))
    port = free_port()

    def get(query: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics{query}", timeout=5) as r:
            return str(r.read().decode())

    async def scenario() -> tuple[str, str, str]:
        runners = await serving.start("127.0.0.1", port, free_port(), m, serving.Health())
        try:
            return (await asyncio.to_thread(get, ""),
                    await asyncio.to_thread(get, "?name[]=bgjob_active_runs"),
                    await asyncio.to_thread(get, "?name[]=bgjob_api_writes_total"))
        finally:
            for runner in runners:
                await runner.cleanup()

    everything, active, own = asyncio.run(scenario())
    assert "bgjob_active_runs{" in everything and "bgjob_api_writes_total{" in everything
    assert "bgjob_active_runs{" in active and "bgjob_runs_total" not in active
    assert "bgjob_api_writes_total{" in own and "bgjob_active_runs" not in own


def cond(ctype: str, status: str, reason: str) -> dict[str, str]:
    return {"type": ctype, "status": status, "reason": reason,
            "lastTransitionTime": "2026-11-22T01:00:00Z"}


def condition_series(m: Metrics, name: str = "cleanup") -> dict[tuple[str, str, str], float]:
    return {(s.labels["type"], s.labels["status"], s.labels["reason"]): s.value
            for fam in m.registry.collect() for s in fam.samples
            if s.name == "bgjob_status_condition" and s.labels["backgroundjob"] == name}


def test_status_condition_has_one_series_per_condition_for_its_current_status_and_reason(
        ) -> None:
    m = Metrics()
    pending = status(conditions=[cond("Ready", "True", "Scheduled"),
                                 cond("Failing", "True", "RetryPending"),
                                 cond("Overdue", "False", "OnTime")])
    m.record(KEY, status(), pending)
    assert condition_series(m) == {("Ready", "True", "Scheduled"): 1,
                                   ("Failing", "True", "RetryPending"): 1,
                                   ("Overdue", "False", "OnTime"): 1}
    exhausted = status(conditions=[cond("Ready", "True", "Scheduled"),
                                   cond("Failing", "True", "RetriesExhausted"),
                                   cond("Overdue", "False", "OnTime")])
    m.record(KEY, pending, exhausted)  # same status, new reason: the old series goes
    assert condition_series(m) == {("Ready", "True", "Scheduled"): 1,
                                   ("Failing", "True", "RetriesExhausted"): 1,
                                   ("Overdue", "False", "OnTime"): 1}
    recovered = status(conditions=[cond("Ready", "True", "Scheduled"),
                                   cond("Failing", "False", "LastRunSucceeded")])
    m.record(KEY, exhausted, recovered)  # a new status; a condition that left status goes
    assert condition_series(m) == {("Ready", "True", "Scheduled"): 1,
                                   ("Failing", "False", "LastRunSucceeded"): 1}
    m.record(("platform", "other"), status(), recovered)
    m.forget(KEY)
    assert condition_series(m) == {}
    assert len(condition_series(m, "other")) == 2


def test_label_sets_a_panel_needs_start_at_zero_and_only_those() -> None:
    m = Metrics()
    reg = m.registry
    assert reg.get_sample_value("bgjob_reconcile_total", {"result": "error"}) == 0
    nightly = status(schedule={"kind": "cron", "mode": "CronJob"})
    m.record(KEY, status(), nightly)
    runs = {(s.labels["trigger"], s.labels["result"]): s.value
            for fam in reg.collect() for s in fam.samples if s.name == "bgjob_runs_total"}
    assert runs == {("scheduled", "Succeeded"): 0, ("scheduled", "Failed"): 0}
    assert value(reg, "bgjob_run_duration_seconds_count", result="Succeeded") == 0
    assert value(reg, "bgjob_run_duration_seconds_count", result="Failed") is None
    manual = status(schedule={"kind": "cron", "mode": "CronJob"},
                    active=[{"job": "cleanup-m-1", "trigger": "manual"}])
    m.record(KEY, nightly, manual)  # a run of another trigger starts: its pair, at 0
    assert value(reg, "bgjob_runs_total", trigger="manual", result="Failed") == 0
    retrying = status(schedule={"kind": "cron", "mode": "CronJob"},
                      retry={"attempt": 2, "nextRetryTime": "2026-11-22T01:01:00Z",
                             "job": "cleanup-1"})
    m.record(KEY, manual, retrying)  # a retry is pending: its pair, before it can end
    assert value(reg, "bgjob_runs_total", trigger="retry", result="Failed") == 0
    assert value(reg, "bgjob_runs_total", trigger="retry", result="Succeeded") == 0
    assert value(reg, "bgjob_runs_total", trigger="manual", result="Cancelled") is None


SERIES_PER_BACKGROUNDJOB = 30  # README, "Metrics and alerts": keep the two in step


def test_series_per_backgroundjob() -> None:
    """A scheduled BackgroundJob with its four conditions, before and after runs that only
    succeeded: the number the README states. No ``_created`` series are exported."""
    m = Metrics()
    conds = [cond("Ready", "True", "Scheduled"), cond("Suspended", "False", "Active"),
             cond("Failing", "False", "LastRunSucceeded"), cond("Overdue", "False", "OnTime")]
    first = status(schedule={"kind": "cron", "mode": "CronJob",
                             "nextRunTimes": ["2026-11-23T01:00:00Z"]},
                   lastSuccessfulTime="2026-11-22T01:00:12Z", conditions=conds)
    m.record(KEY, first, first)

    def ours() -> list[str]:
        return [s.name for fam in m.registry.collect() for s in fam.samples
                if s.labels.get("backgroundjob") == "cleanup"]

    assert len(ours()) == SERIES_PER_BACKGROUNDJOB
    later = first.model_copy(update={"runs": status(runs=[RUN_OK]).runs})
    m.record(KEY, first, later)
    assert len(ours()) == SERIES_PER_BACKGROUNDJOB
    assert not [n for n in ours() if n.endswith("_created")]


def test_stale_gauge_follows_the_stale_condition_and_exists_only_with_freshness() -> None:
    m = Metrics()
    reg = m.registry
    m.record(KEY, status(), status())  # freshness unset: no Stale condition, no series
    assert value(reg, "bgjob_stale") is None
    fresh = status(conditions=[cond("Stale", "False", "Fresh")])
    m.record(KEY, status(), fresh)
    assert value(reg, "bgjob_stale") == 0
    stale = status(conditions=[cond("Stale", "True", "NoRecentSuccess")])
    m.record(KEY, fresh, stale)
    assert value(reg, "bgjob_stale") == 1
    m.record(KEY, stale, status())  # freshness removed from the spec
    assert value(reg, "bgjob_stale") is None
    m.record(KEY, status(), stale)
    m.forget(KEY)
    assert value(reg, "bgjob_stale") is None
