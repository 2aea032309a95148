"""``bgjob_run_start_delay_seconds``: due time to the start of a run, observed exactly once per
run, where this process creates (operator timing, retries, run-now) or admits (CronJob mode)
its Job. Table rows on the fake cluster with a fixed clock, like the reconciler's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from bgjob import api, manifests
from bgjob.k8s import KubeError
from bgjob.metrics import Metrics
from bgjob.reconciler import Reconciler
from tests.unit.fakekube import T0, Clock, FakeKube, fmt

NS, NAME = "ns", "bj"
METRIC = "bgjob_run_start_delay_seconds"


@dataclass
class W:
    clock: Clock
    kube: FakeKube
    rec: Reconciler
    metrics: Metrics
    seen: Any = None  # Observed.run_now_seen for the next passes
    earlier: list[Metrics] = field(default_factory=list)  # of processes before a restart
    watch_behind: bool = False  # the next pass does not see the Jobs yet

    def sync(self) -> None:
        obs = self.kube.observed()
        obs.run_now_seen = self.seen
        if self.watch_behind:
            obs.jobs, self.watch_behind = [], False
        self.rec.reconcile(obs)

    def settle(self) -> None:
        for _ in range(6):
            before = len(self.kube.writes)
            self.sync()
            if len(self.kube.writes) == before:
                return
        raise AssertionError("no steady state")

    def at(self, seconds: float) -> None:
        self.clock.now = T0 + timedelta(seconds=seconds)

    def restart(self) -> None:
        """A new process: no metrics yet, nothing remembered but what the cluster holds."""
        self.earlier.append(self.metrics)
        self.metrics = Metrics()
        self.rec = Reconciler(self.kube, clock=self.clock,  # type: ignore[arg-type]
                              metrics=self.metrics)

    def annotate(self, **ann: str) -> None:
        bj = self.kube.bj()
        bj["metadata"].setdefault("annotations", {}).update(
            {f"bgjob.dev/{k.replace('_', '-')}": v for k, v in ann.items()})
        self.kube._bump(bj)

    def _sum(self, sample: str, trigger: str) -> float:
        """Over every process so far: once per run means once in all of them together."""
        return sum(m.registry.get_sample_value(f"{METRIC}_{sample}", {"trigger": trigger})
                   or 0.0 for m in [*self.earlier, self.metrics])

    def count(self, trigger: str) -> float:
        return self._sum("count", trigger)

    def total(self, trigger: str) -> float:
        return self._sum("sum", trigger)


def world(**spec: Any) -> W:
    clock = Clock(T0)
    kube = FakeKube(clock)
    template = {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "busybox"}]}}}}
    body = {"apiVersion": api.API_VERSION, "kind": api.KIND,
            "metadata": {"name": NAME, "namespace": NS, "uid": "bj-uid", "generation": 1,
                         "creationTimestamp": fmt(T0), "annotations": {}},
            "spec": {"template": template, **spec}, "status": {}}
    kube.objects[(api.PLURAL, NS, NAME)] = body
    kube._bump(body)
    metrics = Metrics()
    return W(clock, kube, Reconciler(kube, clock=clock, metrics=metrics),  # type: ignore[arg-type]
             metrics)


@dataclass
class Case:
    name: str
    spec: dict[str, Any]
    script: Callable[[W], None]
    trigger: str
    seconds: float  # the one observation's value


def operator_timed_run_three_seconds_late(w: W) -> None:
    w.settle()
    w.at(7 * 60 + 3)  # every 7m from the creation: due at 10:07:00
    w.settle()
    w.at(7 * 60 + 30)
    w.settle()  # later passes start nothing and observe nothing


def operator_timed_create_conflicts_then_adopted(w: W) -> None:
    w.settle()
    w.at(7 * 60 + 1)
    w.kube.fail_next[("patch", api.PLURAL)] = KubeError(409, "Conflict", "stale")
    w.sync()  # Job created, the status write that records the time conflicts
    w.restart()  # and the process dies before its watch shows the Job
    w.at(7 * 60 + 2)
    w.watch_behind = True
    w.settle()  # the new process meets AlreadyExists and adopts: not a second start


def cronjob_run_admitted_two_seconds_after_its_tick(w: W) -> None:
    w.settle()
    w.kube.cronjob_tick(T0.replace(hour=11))
    w.at(3600 + 2)
    w.settle()
    w.restart()  # a new process sees the admitted run: nothing to observe
    w.at(3600 + 20)
    w.settle()


def cronjob_job_created_by_hand(w: W) -> None:
    w.settle()
    w.at(100)
    w.kube.cronjob_tick(T0.replace(hour=11), manual=True)  # created at T0+100 s
    w.at(101.5)
    w.settle()


def retry_started_five_seconds_after_its_time(w: W) -> None:
    w.annotate(run_now="a")
    w.settle()
    w.kube.finish(manifests.manual_job_name(NAME, "a"), ok=False)  # ends at T0+5 s
    w.settle()  # the retry is due 60 s after the failure was seen
    w.at(60 + 5)
    w.settle()
    w.at(60 + 10)
    w.settle()


def run_now_seen_then_started(w: W) -> None:
    w.seen = T0 - timedelta(seconds=0.25)
    w.annotate(run_now="a")
    w.settle()
    w.at(30)
    w.settle()


def run_now_refused_then_created(w: W) -> None:
    w.seen = T0
    w.annotate(run_now="a")
    w.kube.fail_next[("create", "jobs")] = KubeError(403, "Forbidden", "quota")
    w.at(0.5)
    w.settle()  # refused: answered once, no run, nothing observed


CRON = {"schedule": {"cron": "0 * * * *"}}
CASES = [
    Case("operator-timed run created 3 s after its time: one observation of 3 s",
         {"schedule": {"every": "7m"}}, operator_timed_run_three_seconds_late, "scheduled", 3),
    Case("operator-timed create, status write conflicts, a restarted process adopts: one",
         {"schedule": {"every": "7m"}}, operator_timed_create_conflicts_then_adopted,
         "scheduled", 1),
    Case("CronJob's Job admitted 2 s after its scheduled timestamp, then a restart: one of 2 s",
         CRON, cronjob_run_admitted_two_seconds_after_its_tick, "scheduled", 2),
    Case("kubectl create job --from the CronJob: manual, due at the Job's creation",
         CRON, cronjob_job_created_by_hand, "manual", 1.5),
    Case("retry created 5 s after its nextRetryTime: one observation of 5 s",
         {"retry": {"limit": 1, "backoff": {"initialDelaySeconds": 60, "jitter": 0}}},
         retry_started_five_seconds_after_its_time, "retry", 5),
    Case("run-now created 0.25 s after the token was seen", {}, run_now_seen_then_started,
         "manual", 0.25),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_start_delay_observed_once(case: Case) -> None:
    w = world(**case.spec)
    case.script(w)
    assert w.count(case.trigger) == 1
    assert w.total(case.trigger) == pytest.approx(case.seconds)
    others = [t for t in ("scheduled", "manual", "retry") if t != case.trigger]
    assert all(w.count(t) == 0 for t in others)


def test_a_refused_create_is_not_a_start() -> None:
    w = world()
    run_now_refused_then_created(w)
    assert w.kube.jobs(NS, NAME) == []
    assert w.count("manual") == 0


def test_every_trigger_exists_at_zero_and_a_clock_behind_counts_zero() -> None:
    m = Metrics()
    for trigger in ("scheduled", "manual", "retry"):
        assert m.registry.get_sample_value(f"{METRIC}_count", {"trigger": trigger}) == 0
    m.run_started("manual", -0.4)
    assert m.registry.get_sample_value(f"{METRIC}_sum", {"trigger": "manual"}) == 0
    assert m.registry.get_sample_value(f"{METRIC}_bucket",
                                       {"trigger": "manual", "le": "0.05"}) == 1
