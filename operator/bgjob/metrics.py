"""Prometheus metrics with the contract's names, types and labels.

Gauges are set from the status each pass ends with, so after a restart they come back with the
first pass (status is the memory). Counters count what this process saw happen — finished runs,
retries, missed runs — starting from zero, as Prometheus expects of a restarted process; they
move only after the status write that records the change succeeded, so a pass redone after a
409 never counts twice. The series of a deleted BackgroundJob are removed.

``increase()`` cannot see a counter series' first step (the series is born at 1), so the label
sets a panel needs are created at 0 *before* their first increment, and only those: on a
BackgroundJob's first pass ``bgjob_runs_total`` for its usual trigger (``scheduled`` with a
schedule, else ``manual``) with results ``Succeeded`` and ``Failed``, and the
``bgjob_run_duration_seconds{result="Succeeded"}`` histogram; when a run of another trigger
starts or a retry is pending, that trigger's ``Succeeded``/``Failed`` pair. Pre-creating every
trigger and result would be 20 series per object, 100,000 at 5,000 BackgroundJobs. The
reconcile counter starts with both results at 0. Counters export no ``_created`` series.

``bgjob_status_condition`` mirrors each condition as kube-state-metrics does for built-in kinds:
one series per condition, for its current status and reason only.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from bgjob import status as st
from bgjob.api import BackgroundJobStatus

Key = tuple[str, str]
RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
FINAL = {st.SUCCEEDED, st.FAILED, st.DEADLINE_EXCEEDED, st.CANCELLED}
FIRST_RESULTS = (st.SUCCEEDED, st.FAILED)  # created at 0 for each trigger a BackgroundJob uses
RECONCILE_RESULTS = ("success", "error")
# Launch skew: the CronJob controller's own skew histogram starts at 1 s (1, 2, 4 … 512 s); a
# run due at a time should start well within a second, so ours starts finer.
START_DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
START_TRIGGERS = ("scheduled", "manual", "retry")

# A ``*_created`` gauge per counter and histogram series would be one more series per label set
# for nothing Prometheus 2 reads from the text format: this process exports none.
disable_created_metrics()  # type: ignore[no-untyped-call]


def _ts(text: str | None) -> float | None:
    t = st.parse_time(text)
    return t.timestamp() if t else None


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        obj = ["namespace", "backgroundjob"]
        r = self.registry
        self.runs = Counter("bgjob_runs_total", "Finished runs, by trigger and result.",
                            [*obj, "trigger", "result"], registry=r)
        self.duration = Histogram("bgjob_run_duration_seconds", "Duration of finished runs.",
                                  [*obj, "result"], buckets=RUN_BUCKETS, registry=r)
        self.last_success = Gauge("bgjob_last_success_timestamp_seconds",
                                  "Completion time of the last successful run (Unix time).",
                                  obj, registry=r)
        self.next_run = Gauge("bgjob_next_run_timestamp_seconds",
                              "Next scheduled run (Unix time).", obj, registry=r)
        self.active = Gauge("bgjob_active_runs", "Runs in progress.", obj, registry=r)
        self.queued = Gauge("bgjob_queued_runs", "Runs waiting in status.queued (Enqueue, "
                            "run-at).", obj, registry=r)
        self.consecutive = Gauge("bgjob_consecutive_failures", "Failed runs in a row.", obj,
                                 registry=r)
        self.retries = Counter("bgjob_retries_total", "Retry attempts started.", obj,
                               registry=r)
        self.missed = Counter("bgjob_missed_runs_total", "Scheduled runs skipped (misfires).",
                              obj, registry=r)
        self.overdue = Gauge("bgjob_overdue", "1 while a due run has not started.", obj,
                             registry=r)
        self.stale = Gauge("bgjob_stale", "1 while the last success is older than "
                           "spec.freshness.maxAgeSinceSuccess (only with freshness set).", obj,
                           registry=r)
        self.reconciles = Counter("bgjob_reconcile_total", "Reconcile passes by result.",
                                  ["result"], registry=r)
        self.reconcile_seconds = Histogram("bgjob_reconcile_duration_seconds",
                                           "Time per reconcile pass.", ["result"],
                                           buckets=RECONCILE_BUCKETS, registry=r)
        self.conditions = Gauge("bgjob_status_condition",
                                "1 for each status condition's current status and reason.",
                                [*obj, "type", "status", "reason"], registry=r)
        self.leader = Gauge("bgjob_leader", "1 while this replica is the active one (always 1 "
                            "without --peering), 0 on a standby.", registry=r)
        self.leader_transitions = Counter(
            "bgjob_leader_transitions_total",
            "Times this replica became the active one (handovers to it).", registry=r)
        self.start_delay = Histogram(
            "bgjob_run_start_delay_seconds",
            "Due time to the start of a run: the operator's create of its Job, or its admission "
            "of a Job the CronJob made (like cronjob_controller_cronjob_job_creation_skew_"
            "duration_seconds).", ["trigger"], buckets=START_DELAY_BUCKETS, registry=r)
        for trigger in START_TRIGGERS:  # one label set per trigger, few: all exist from start
            self.start_delay.labels(trigger)
        for result in RECONCILE_RESULTS:  # an error's first step is visible to rate()
            self.reconciles.labels(result)
            self.reconcile_seconds.labels(result)
        self._lock = threading.Lock()
        self._run_labels: dict[Key, set[tuple[str, str]]] = defaultdict(set)
        self._duration_labels: dict[Key, set[str]] = defaultdict(set)
        self._condition_labels: dict[Key, dict[str, tuple[str, str]]] = defaultdict(dict)
        self._seen: set[Key] = set()

    def record(self, key: Key, old: BackgroundJobStatus, new: BackgroundJobStatus) -> None:
        """After a successful write (or none needed): counters by what changed, gauges from
        the status as it now stands."""
        ns, name = key
        with self._lock:
            self._prepare(key, new)
            before = {r.job for r in old.runs if r.result in FINAL}
            for rec in new.runs:
                if rec.result in FINAL and rec.job not in before:
                    self.runs.labels(ns, name, rec.trigger, rec.result).inc()
                    self._run_labels[key].add((rec.trigger, rec.result))
                    if rec.duration_seconds is not None:
                        self.duration.labels(ns, name, rec.result).observe(rec.duration_seconds)
                        self._duration_labels[key].add(rec.result)
            self.retries.labels(ns, name).inc(max(0, new.stats.retries - old.stats.retries))
            self.missed.labels(ns, name).inc(max(0, new.stats.missed - old.stats.missed))
            last = _ts(new.last_successful_time)
            if last is not None:
                self.last_success.labels(ns, name).set(last)
            times = new.schedule.next_run_times if new.schedule else []
            nxt = _ts(times[0]) if times else None
            if nxt is not None:
                self.next_run.labels(ns, name).set(nxt)
            else:
                self._remove(self.next_run, ns, name)
            self.active.labels(ns, name).set(len(new.active))
            self.queued.labels(ns, name).set(len(new.queued))
            self.consecutive.labels(ns, name).set(new.stats.consecutive_failures)
            cond = st.condition(new, "Overdue")
            self.overdue.labels(ns, name).set(1 if cond and cond.status == "True" else 0)
            stale = st.condition(new, "Stale")
            if stale is not None:
                self.stale.labels(ns, name).set(1 if stale.status == "True" else 0)
            else:
                self._remove(self.stale, ns, name)
            self._set_conditions(key, new)

    def _prepare(self, key: Key, new: BackgroundJobStatus) -> None:
        """Create at 0 the label sets whose first increment a panel must see (see above)."""
        ns, name = key
        triggers = {r.trigger for r in new.active}
        if new.retry is not None:
            triggers.add("retry")
        if key not in self._seen:  # the first pass of this object in this process
            self._seen.add(key)
            triggers.add("scheduled" if new.schedule is not None else "manual")
            self.duration.labels(ns, name, st.SUCCEEDED)
            self._duration_labels[key].add(st.SUCCEEDED)
        for trigger in triggers:
            for result in FIRST_RESULTS:
                if (trigger, result) not in self._run_labels[key]:
                    self.runs.labels(ns, name, trigger, result)
                    self._run_labels[key].add((trigger, result))

    def _set_conditions(self, key: Key, new: BackgroundJobStatus) -> None:
        """One series per condition, for its current status and reason: the old one goes.
        The new series is set before the old one is removed, so a scrape in between never sees
        a condition without a series (that would reset a pending alert)."""
        ns, name = key
        known = self._condition_labels[key]
        current = {c.type: (c.status, c.reason) for c in new.conditions}
        for ctype, (status, reason) in current.items():
            self.conditions.labels(ns, name, ctype, status, reason).set(1)
        for ctype, (status, reason) in known.items():
            if current.get(ctype) != (status, reason):
                self._remove(self.conditions, ns, name, ctype, status, reason)
        self._condition_labels[key] = current

    def forget(self, key: Key) -> None:
        """The BackgroundJob is gone: so are its series."""
        ns, name = key
        with self._lock:
            self._seen.discard(key)
            for trigger, result in self._run_labels.pop(key, set()):
                self._remove(self.runs, ns, name, trigger, result)
            for result in self._duration_labels.pop(key, set()):
                self._remove(self.duration, ns, name, result)
            for ctype, (status, reason) in self._condition_labels.pop(key, {}).items():
                self._remove(self.conditions, ns, name, ctype, status, reason)
            for metric in (self.last_success, self.next_run, self.active, self.queued,
                           self.consecutive,
                           self.retries, self.missed, self.overdue, self.stale):
                self._remove(metric, ns, name)

    def track_writes(self, writes: Tally[str]) -> None:
        """Expose the API client's own write counter (``bgjob_api_writes_total``), so the
        benchmark can cross-check what the API server's audit log counted."""
        self.registry.register(_WritesCollector(writes))

    def leadership(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)
        if leading:
            self.leader_transitions.inc()

    def run_started(self, trigger: str, delay_seconds: float) -> None:
        """A run's Job was created or admitted ``delay_seconds`` after it was due (a clock
        a little ahead of the due time counts as 0)."""
        self.start_delay.labels(trigger).observe(max(0.0, delay_seconds))

    def reconciled(self, result: str, seconds: float) -> None:
        self.reconciles.labels(result).inc()
        self.reconcile_seconds.labels(result).observe(seconds)

    @staticmethod
    def _remove(metric: Counter | Gauge | Histogram, *labels: str) -> None:
        with contextlib.suppress(KeyError):
            metric.remove(*labels)


class _WritesCollector(Collector):
    def __init__(self, writes: Tally[str]) -> None:
        self.writes = writes

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily("bgjob_api_writes", "API writes made by the operator.",
                                   labels=["method", "resource"])

    def describe(self) -> Iterator[Metric]:
        """Named, so that ``/metrics?name[]=bgjob_api_writes_total`` finds this collector."""
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        fam = self._family()
        for key, n in sorted(dict(self.writes).items()):  # a copy: threads add to it
            method, _, resource = key.partition(" ")
            fam.add_metric([method, resource], n)
        yield fam
