"""Reconciler table tests, in the shape of the CronJob controller's TestControllerV2SyncCronJob:
a fake of our one cluster module, a fixed clock, and one row per corner case, named as a
sentence. Each row is a script of world events and passes, then expectations."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bgjob import api, manifests
from bgjob.k8s import Invalid, KubeError
from bgjob.reconciler import Reconciler
from tests.unit.fakekube import T0, Clock, FakeKube, fmt

NS, NAME = "ns", "bj"
FIN = "bgjob.dev/accounting"
CONTAINER = {"name": "main", "image": "busybox", "command": ["true"]}


def manual(token: str) -> str:
    return manifests.manual_job_name(NAME, token)


@dataclass
class World:
    clock: Clock
    kube: FakeKube
    rec: Reconciler

    def spec(self, **changes: Any) -> None:
        bj = self.kube.bj()
        bj["spec"] = {**bj["spec"], **changes}
        bj["metadata"]["generation"] += 1
        self.kube._bump(bj)

    def annotate(self, **ann: str) -> None:
        bj = self.kube.bj()
        bj["metadata"].setdefault("annotations", {}).update(
            {f"bgjob.dev/{k.replace('_', '-')}": v for k, v in ann.items()})
        self.kube._bump(bj)

    def sync(self) -> float | None:
        return self.rec.reconcile(self.kube.observed()).requeue_after

    def settle(self, limit: int = 6) -> None:
        """Passes until one writes nothing: a pass that keeps writing is a hot loop."""
        for _ in range(limit):
            before = len(self.kube.writes)
            self.sync()
            if len(self.kube.writes) == before:
                return
        raise AssertionError(f"no steady state after {limit} passes: {self.kube.writes[-6:]}")

    def at(self, seconds: float) -> None:
        self.clock.now = T0 + __import__("datetime").timedelta(seconds=seconds)

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.kube.bj().get("status") or {})

    @property
    def stats(self) -> dict[str, Any]:
        return dict(self.status.get("stats") or {})

    def jobs(self) -> list[str]:
        return [j["metadata"]["name"] for j in self.kube.jobs(NS, NAME)]

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.kube.events]

    def condition(self, ctype: str) -> dict[str, Any]:
        return next(c for c in self.status.get("conditions") or [] if c["type"] == ctype)


def world(**spec: Any) -> World:
    clock = Clock(T0)
    kube = FakeKube(clock)
    template = {"spec": {"template": {"spec": {"containers": [dict(CONTAINER)]}}}}
    body = {"apiVersion": api.API_VERSION, "kind": api.KIND,
            "metadata": {"name": NAME, "namespace": NS, "uid": "bj-uid", "generation": 1,
                         "creationTimestamp": fmt(T0), "annotations": {}},
            "spec": {"template": template, **spec}, "status": {}}
    kube.objects[(api.PLURAL, NS, NAME)] = body
    kube._bump(body)
    return World(clock, kube, Reconciler(kube, clock=clock))  # type: ignore[arg-type]


@dataclass
class Case:
    name: str
    spec: dict[str, Any]
    script: Callable[[World], None]
    expect: Callable[[World], None]
    extra: dict[str, Any] = field(default_factory=dict)


def run_now(w: World, token: str, **params: str) -> None:
    w.annotate(run_now=token)
    if params:
        import json
        w.annotate(run_parameters=json.dumps(params))
    w.settle()


# -- scripts ---------------------------------------------------------------------------------

def two_runs_fail_before_the_first_retry(w: World) -> None:
    run_now(w, "a")
    run_now(w, "b")
    w.kube.finish(manual("a"), ok=False)
    w.settle()
    w.at(10)
    w.kube.finish(manual("b"), ok=False)
    w.settle()
    w.at(400)
    w.settle()


def expect_both_retried(w: World) -> None:
    names = w.jobs()
    assert f"{manual('a')}-r2" in names and f"{manual('b')}-r2" in names, names
    retries = [j for j in w.kube.jobs(NS, NAME)
               if j["metadata"]["labels"][api.LABEL_TRIGGER] == "retry"]
    assert len(retries) == 2, names
    assert w.stats["retries"] == 2
    assert "pendingRetries" not in w.status or w.status["pendingRetries"] == []


def same_second_at_the_records_cut(w: World) -> None:
    run_now(w, "a")
    run_now(w, "b")
    w.kube.finish(manual("a"))
    w.kube.finish(manual("b"))
    w.settle()
    w.spec(history={"runRecords": 5, "successfulJobs": 10})
    w.settle()
    w.spec(suspend=True, concurrencyPolicy="Allow", template={"bad": 1})  # invalid spec
    w.settle()


def expect_counted_once(w: World) -> None:
    assert (w.stats["runs"], w.stats["succeeded"]) == (2, 2)


def failed_scheduled_run_pruned_while_down(w: World) -> None:
    w.settle()  # the CronJob exists
    job = w.kube.cronjob_tick(T0.replace(hour=11))
    w.at(3600)
    w.settle()  # admitted
    assert w.kube.unsuspended(job)
    w.kube.finish(job, ok=False, exit_code=3)
    w.kube.cronjob_prune()  # failedJobs: 0 and the operator is down: the finalizer holds it
    held = w.kube.job(job)
    assert held is not None and held["metadata"]["deletionTimestamp"]
    w.settle()
    w.at(3600 + 120)
    w.settle()


def expect_counted_and_retried(w: World) -> None:
    assert (w.stats["runs"], w.stats["failed"]) == (1, 1)
    assert any(j["metadata"]["labels"][api.LABEL_TRIGGER] == "retry"
               for j in w.kube.jobs(NS, NAME)), w.jobs()
    assert all(FIN not in (j["metadata"].get("finalizers") or []) or not
               j["metadata"].get("deletionTimestamp") for j in w.kube.jobs(NS, NAME))


def manual_run_active_at_the_tick(w: World) -> None:
    w.settle()
    run_now(w, "m")
    job = w.kube.cronjob_tick(T0.replace(hour=11))
    w.at(3600)
    w.settle()
    w.extra = job  # type: ignore[attr-defined]


def expect_scheduled_waits(w: World) -> None:
    assert not w.kube.unsuspended(w.extra)  # type: ignore[attr-defined]
    w.kube.finish(manual("m"))
    w.settle()
    assert w.kube.unsuspended(w.extra)  # type: ignore[attr-defined]


def expect_manual_replaced(w: World) -> None:
    assert w.kube.unsuspended(w.extra)  # type: ignore[attr-defined]
    replaced = w.kube.job(manual("m"))
    assert replaced is not None and "bgjob.dev/cancelled" in replaced["metadata"]["annotations"]


def cancel_with_a_pending_retry(w: World) -> None:
    run_now(w, "a")
    w.kube.finish(manual("a"), ok=False)
    w.settle()
    w.kube.writes.clear()
    w.annotate(cancel="c1")
    w.settle()


def expect_one_status_write_and_no_metadata_writes(w: World) -> None:
    assert w.status.get("lastHandledCancel") == "c1"
    assert not w.status.get("pendingRetries") and not w.status.get("retry")
    bj_writes = [v for v, p, _ in w.kube.writes if p == api.PLURAL]
    assert bj_writes == ["patch/status"], w.kube.writes


def template_the_builder_cannot_use(w: World) -> None:
    run_now(w, "a")
    w.kube.finish(manual("a"))
    tpl = {"spec": {"template": {"spec": {"containers": [{**CONTAINER, "env": ["A=1"]}]}}}}
    w.spec(template=tpl)
    w.settle()
    w.annotate(run_now="b")
    w.settle()


def expect_invalid_spec_naming_env(w: World) -> None:
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "containers[0].env[0]" in ready["message"]
    assert w.stats["runs"] == 1  # finished runs are still folded
    assert manual("b") not in w.jobs()
    assert "InvalidSpec" in w.reasons()


def bad_time_zone_on_an_operator_schedule(w: World) -> None:
    w.settle()
    w.spec(schedule={"every": "7m", "timeZone": "Mars/Olympus"})
    w.settle()
    w.at(7 * 60 + 1)
    w.settle()


def expect_old_schedule_still_runs(w: World) -> None:
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSchedule")
    assert "timeZone" in ready["message"]
    assert any(n.startswith("bj-") and "manual" not in n for n in w.jobs()), w.jobs()
    assert w.status["schedule"]["nextRunTimes"]


def cronjob_suspended_by_hand(w: World) -> None:
    w.settle()
    cj = w.kube.objects[("cronjobs", NS, NAME)]
    cj["spec"]["suspend"] = True
    cj["spec"]["schedule"] = "5 5 * * *"
    w.kube._bump(cj)
    w.settle()


def expect_reverted(w: World) -> None:
    cj = w.kube.objects[("cronjobs", NS, NAME)]
    assert cj["spec"]["suspend"] is False and cj["spec"]["schedule"] == "0 * * * *"
    assert any("Reverted CronJob" in m for _, _, m in w.kube.events)


def foreign_and_stale_jobs_with_our_label(w: World) -> None:
    for name, uid in (("foreign", "someone-else"), ("old-run", "deleted-namesake-uid")):
        w.kube.objects[("jobs", NS, name)] = {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": NS, "uid": f"u-{name}",
                         "resourceVersion": "1", "creationTimestamp": fmt(T0),
                         "labels": {api.LABEL_OWNER: NAME, api.LABEL_TRIGGER: "manual"},
                         "ownerReferences": [{"uid": uid, "controller": True}]},
            "spec": {}, "status": {}}
    w.settle()
    w.kube.finish("old-run", ok=False)
    w.annotate(cancel="x")
    w.settle()


def expect_not_ours(w: World) -> None:
    assert w.stats.get("runs", 0) == 0
    assert "bgjob.dev/cancelled" not in w.kube.objects[("jobs", NS, "foreign")]["metadata"].get(
        "annotations", {})
    assert not w.status.get("active")


def created_then_deleted_before_the_watch(w: World) -> None:
    w.settle()
    obs = w.kube.observed()
    w.annotate(run_now="a")
    w.sync()  # creates bj-manual-a
    w.kube.objects.pop(("jobs", NS, manual("a")))  # deleted; the watch never showed it
    w.at(6 * 60)  # past the expectations' TTL
    w.annotate(run_now="b")
    obs = w.kube.observed()
    w.rec.reconcile(obs)
    w.settle()


def expect_next_run_starts(w: World) -> None:
    assert manual("b") in w.jobs()


def quota_refuses_a_run_now(w: World) -> None:
    w.settle()
    w.kube.fail_next[("create", "jobs")] = KubeError(403, "Forbidden", "exceeded quota")
    w.annotate(run_now="a")
    w.at(7 * 60 + 1)  # an operator-timed run is due in the same pass
    w.sync()


def expect_event_and_scheduled_run_started(w: World) -> None:
    assert "FailedCreate" in w.reasons()
    assert any("exceeded quota" in m for _, _, m in w.kube.events)
    assert any(j["metadata"]["labels"][api.LABEL_TRIGGER] == "scheduled"
               for j in w.kube.jobs(NS, NAME))


def status_write_conflicts_after_counting(w: World) -> None:
    run_now(w, "a")
    w.kube.finish(manual("a"))
    w.kube.fail_next[("patch", api.PLURAL)] = KubeError(409, "Conflict", "stale")
    w.sync()


def expect_finalizer_kept_until_counted(w: World) -> None:
    job = w.kube.job(manual("a"))
    assert job is not None and FIN in job["metadata"]["finalizers"]
    assert not w.stats.get("runs")
    w.settle()
    assert w.stats["runs"] == 1
    assert FIN not in (w.kube.job(manual("a")) or {"metadata": {}})["metadata"].get(
        "finalizers", [])


def backgroundjob_being_deleted(w: World) -> None:
    run_now(w, "a")
    bj = w.kube.bj()
    bj["metadata"]["deletionTimestamp"] = fmt(T0)
    w.kube.remove("jobs", NS, manual("a"))  # the garbage collector follows the owner
    w.sync()


def expect_nothing_stuck(w: World) -> None:
    assert w.kube.job(manual("a")) is None


def many_ticks_while_down(w: World) -> None:
    w.settle()
    jobs = [w.kube.cronjob_tick(T0.replace(hour=h)) for h in (11, 12, 13)]
    w.at(3 * 3600 + 5)
    w.settle()
    w.extra = jobs  # type: ignore[attr-defined]


def expect_latest_admitted_rest_missed(w: World) -> None:
    old1, old2, latest = w.extra  # type: ignore[attr-defined]
    assert w.kube.unsuspended(latest)
    assert w.kube.job(old1) is None and w.kube.job(old2) is None
    assert w.stats["missed"] == 2


def missed_then_crash_before_the_delete(w: World) -> None:
    w.settle()
    jobs = [w.kube.cronjob_tick(T0.replace(hour=h)) for h in (11, 12)]
    w.at(2 * 3600 + 5)
    w.kube.fail_next[("delete", "jobs")] = KubeError(500, "Internal", "crash")
    with contextlib.suppress(KubeError):
        w.sync()  # counts the superseded Job missed, then dies before deleting it
    w.rec = Reconciler(w.kube, clock=w.clock)  # type: ignore[arg-type]  # a restart
    w.settle()
    w.extra = jobs  # type: ignore[attr-defined]


def expect_missed_once(w: World) -> None:
    old, latest = w.extra  # type: ignore[attr-defined]
    assert w.stats["missed"] == 1
    assert w.kube.job(old) is None and w.kube.unsuspended(latest)


def api_refuses_the_job_template(w: World) -> None:
    w.settle()
    w.kube.fail_next[("create", "jobs")] = Invalid(422, "Invalid", "spec.template.spec."
                                                   "containers[0].image: Required value")
    w.annotate(run_now="a")
    w.settle()
    w.kube.writes.clear()
    w.annotate(run_now="b")
    w.settle()


def expect_invalid_until_the_spec_changes(w: World) -> None:
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "containers[0].image" in ready["message"]
    assert ("create", "jobs", manual("b")) not in w.kube.writes  # not tried again
    w.spec(parameters={"fixed": "yes"})
    w.annotate(run_now="c")
    w.settle()
    assert manual("c") in w.jobs() and w.condition("Ready")["status"] == "True"


def cronjob_replaced_while_its_run_is_active(w: World) -> None:
    w.settle()
    job = w.kube.cronjob_tick(T0.replace(hour=11))
    w.at(3600)
    w.settle()  # admitted: running, with our finalizer
    del w.kube.objects[("cronjobs", NS, NAME)]  # kubectl delete cronjob (orphaning its Job)
    w.settle()  # the operator makes a new CronJob (a new UID)
    w.kube.finish(job)
    w.settle()
    w.extra = job  # type: ignore[attr-defined]


def expect_the_old_cronjobs_run_counted(w: World) -> None:
    assert (w.stats["runs"], w.stats["succeeded"]) == (1, 1)
    job = w.kube.job(w.extra)  # type: ignore[attr-defined]
    assert job is not None and FIN not in job["metadata"].get("finalizers", [])


def release_conflicts_then_prune(w: World) -> None:
    run_now(w, "a")
    w.kube.finish(manual("a"))
    w.kube.fail_next[("patch", "jobs")] = KubeError(409, "Conflict", "modified")
    w.sync()  # counted; the release meets a 409
    job = w.kube.job(manual("a"))
    assert job is not None and not job["metadata"].get("deletionTimestamp"), \
        "a Job still holding our finalizer is not pruned"
    w.settle()


def expect_counted_once_and_pruned(w: World) -> None:
    assert (w.stats["runs"], w.stats["succeeded"]) == (1, 1)
    assert w.kube.job(manual("a")) is None


def legacy_annotations_migrate(w: World) -> None:
    w.annotate(last_handled_cancel="old", cancel="old")
    run_now(w, "a")


def expect_old_cancel_not_redone(w: World) -> None:
    assert w.status["lastHandledCancel"] == "old"
    job = w.kube.job(manual("a"))
    assert job is not None and "bgjob.dev/cancelled" not in job["metadata"]["annotations"]


# -- invalid triggers (issue 13, point 13) ----------------------------------------------------

def run_now_with_force_maybe(w: World) -> None:
    w.annotate(run_force="maybe")
    run_now(w, "a")


def expect_token_handled_nothing_run(w: World) -> None:
    assert w.jobs() == [] and w.status.get("lastHandledRunNow") == "a"
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidTrigger")
    assert ready["message"].startswith("metadata.annotations[bgjob.dev/run-force]: ")
    assert w.reasons().count("InvalidTrigger") == 1
    w.annotate(run_force="true")  # fixing run-force later does not start the handled token
    w.settle()
    assert w.jobs() == [] and w.condition("Ready")["status"] == "True"


def empty_run_now(w: World) -> None:
    w.annotate(run_now="")
    w.settle()
    w.at(60)
    w.settle()


def expect_invalid_trigger_once(w: World) -> None:
    assert w.jobs() == [] and "lastHandledRunNow" not in w.status
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidTrigger")
    assert ready["message"].startswith("metadata.annotations[bgjob.dev/run-now]: must not be empty")
    assert w.reasons().count("InvalidTrigger") == 1
    run_now(w, "b")
    assert w.jobs() == [manual("b")] and w.condition("Ready")["status"] == "True"


def run_now_with_force_true_while_active(w: World) -> None:
    run_now(w, "a")
    w.annotate(run_force="true")
    run_now(w, "b")


def expect_both_running(w: World) -> None:
    assert sorted(w.jobs()) == sorted([manual("a"), manual("b")])
    assert "InvalidTrigger" not in w.reasons()


# -- the queue (Enqueue, maxConcurrency, maxQueued), run-at, held (Kueue) runs --------------

def active_names(w: World) -> list[str]:
    return [a["job"] for a in w.status.get("active") or []]


def queued_names(w: World) -> list[str]:
    return [q["job"] for q in w.status.get("queued") or []]


def six_triggers(w: World) -> None:
    for token in "abcdef":
        run_now(w, token)


def expect_two_active_three_queued_one_skipped(w: World) -> None:
    assert sorted(active_names(w)) == sorted([manual("a"), manual("b")])
    assert queued_names(w) == [manual("c"), manual("d"), manual("e")]
    assert w.status["queuedCount"] == 3
    assert w.stats["skipped"] == 1 and manual("f") not in w.jobs()
    assert w.reasons().count("RunQueued") == 3 and w.reasons().count("RunSkipped") == 1
    w.kube.finish(manual("b"))
    w.settle()
    assert sorted(active_names(w)) == sorted([manual("a"), manual("c")])  # first in, out
    assert queued_names(w) == [manual("d"), manual("e")]
    for name in (manual("a"), manual("c"), manual("d"), manual("e")):
        w.kube.finish(name)
        w.settle()
        assert len(active_names(w)) <= 2
    assert queued_names(w) == [] and w.stats["succeeded"] == 5


def ticks_while_a_run_is_active(w: World) -> None:
    w.settle()
    run_now(w, "m")
    jobs = [w.kube.cronjob_tick(T0.replace(hour=h)) for h in (11, 12)]
    w.at(2 * 3600 + 5)
    w.settle()
    w.extra = jobs  # type: ignore[attr-defined]


def expect_each_tick_queued_and_run_in_order(w: World) -> None:
    first, second = w.extra  # type: ignore[attr-defined]
    assert queued_names(w) == [first, second] and w.stats.get("missed", 0) == 0
    assert not w.kube.unsuspended(first) and not w.kube.unsuspended(second)
    w.kube.finish(manual("m"))
    w.settle()
    assert w.kube.unsuspended(first) and not w.kube.unsuspended(second)
    w.kube.finish(first)
    w.settle()
    assert w.kube.unsuspended(second) and queued_names(w) == []


def retry_due_while_the_slot_is_taken(w: World) -> None:
    run_now(w, "a")
    w.kube.finish(manual("a"), ok=False)
    w.settle()
    run_now(w, "b")  # takes the only slot before the retry is due
    w.at(120)
    w.settle()


def expect_retry_queued_then_started_once(w: World) -> None:
    retry = f"{manual('a')}-r2"
    assert queued_names(w) == [retry] and retry not in w.jobs()
    assert w.status.get("pendingRetries", []) == []
    w.kube.finish(manual("b"))
    w.settle()
    assert retry in w.jobs() and queued_names(w) == [] and w.stats["retries"] == 1
    job = w.kube.job(retry)
    assert job is not None and job["metadata"]["annotations"]["bgjob.dev/attempt"] == "2"


def cancel_with_queued_runs(w: World) -> None:
    w.settle()
    run_now(w, "a")
    run_now(w, "b")
    tick = w.kube.cronjob_tick(T0.replace(hour=11))
    w.at(3600 + 5)
    w.settle()
    assert queued_names(w) == [manual("b"), tick]
    w.annotate(cancel="c1")
    w.settle()
    w.extra = tick  # type: ignore[attr-defined]


def expect_queue_dropped_and_counted_skipped(w: World) -> None:
    assert queued_names(w) == [] and w.stats["skipped"] == 2
    assert w.kube.job(w.extra) is None  # type: ignore[attr-defined]  # waiting Job deleted
    assert manual("b") not in w.jobs()
    job = w.kube.job(manual("a"))
    assert job is not None and "bgjob.dev/cancelled" in job["metadata"]["annotations"]


def run_at_in_an_hour(w: World) -> None:
    w.annotate(run_at=fmt(T0.replace(hour=11)))
    run_now(w, "later")
    w.at(1800)
    w.rec = Reconciler(w.kube, clock=w.clock)  # type: ignore[arg-type]  # a restart
    w.settle()


def expect_waits_then_starts_at_its_time(w: World) -> None:
    assert manual("later") not in w.jobs()
    [entry] = w.status["queued"]
    assert entry["notBefore"] == fmt(T0.replace(hour=11)) and entry["trigger"] == "manual"
    wake = w.sync()
    assert wake is not None and 1795 <= wake <= 1800, wake
    w.at(3600)
    w.settle()
    assert manual("later") in w.jobs() and queued_names(w) == []


def run_at_not_a_time(w: World) -> None:
    w.annotate(run_at="tomorrow")
    run_now(w, "x")


def expect_invalid_run_at(w: World) -> None:
    assert w.jobs() == [] and w.status["lastHandledRunNow"] == "x"
    ready = w.condition("Ready")
    assert ready["reason"] == "InvalidTrigger" and "bgjob.dev/run-at" in ready["message"]


def second_run_over_max_concurrency(w: World) -> None:
    run_now(w, "a")
    run_now(w, "b")


def expect_rejected_naming_the_limit(w: World) -> None:
    assert w.jobs() == [manual("a")]
    msg = next(m for _, r, m in w.kube.events if r == "TriggerRejected")
    assert "maxConcurrency is 1" in msg


def held_by_an_admission_system(w: World) -> None:
    run_now(w, "k")
    job = w.kube.objects[("jobs", NS, manual("k"))]
    job["spec"]["suspend"] = True  # Kueue's webhook: held until its Workload is admitted
    w.kube._bump(job)
    w.settle()


def expect_queued_then_overdue_then_counted(w: World) -> None:
    [ref] = w.status["active"]
    assert ref["result"] == "Queued" and w.condition("Overdue")["status"] == "False"
    w.at(301)
    w.settle()
    overdue = w.condition("Overdue")
    assert (overdue["status"], overdue["reason"]) == ("True", "Queued")
    job = w.kube.objects[("jobs", NS, manual("k"))]
    job["spec"]["suspend"] = False  # admitted by Kueue
    w.kube._bump(job)
    w.kube.finish(manual("k"))
    w.settle()
    assert w.stats["succeeded"] == 1 and w.condition("Overdue")["status"] == "False"


def queued_run_created_then_crash_before_the_write(w: World) -> None:
    run_now(w, "a")
    run_now(w, "b")
    w.kube.finish(manual("a"))
    w.kube.fail_next[("patch", api.PLURAL)] = KubeError(500, "Internal", "crash")
    with contextlib.suppress(KubeError):
        w.sync()  # creates b's Job from the queue, then dies before recording it
    w.rec = Reconciler(w.kube, clock=w.clock)  # type: ignore[arg-type]  # a restart
    w.settle()


def expect_started_once(w: World) -> None:
    assert sorted(w.jobs()) == sorted([manual("a"), manual("b")])
    assert queued_names(w) == [] and active_names(w) == [manual("b")]


def operator_timed_run_due_while_active(w: World) -> None:
    w.settle()
    run_now(w, "m")
    w.at(7 * 60 + 1)
    w.settle()


def expect_scheduled_queued_with_its_time(w: World) -> None:
    [entry] = w.status["queued"]
    assert entry["trigger"] == "scheduled" and entry["scheduledTime"] == fmt(
        T0.replace(minute=7))
    w.kube.finish(manual("m"))
    w.settle()
    job = w.kube.job(entry["job"])
    assert job is not None
    env = {e["name"]: e.get("value")
           for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BGJOB_SCHEDULED_TIME"] == fmt(T0.replace(minute=7))


# -- backfill ----------------------------------------------------------------------------------

BF_RANGE = '{"from": "2026-11-18T00:00:00Z", "until": "2026-11-23T00:00:00Z"}'


def backfill_jobs(w: World) -> list[dict[str, Any]]:
    return [j for j in w.kube.jobs(NS, NAME)
            if j["metadata"]["labels"][api.LABEL_TRIGGER] in ("backfill", "retry")]


def five_day_backfill_with_a_restart(w: World) -> None:
    w.settle()
    w.annotate(backfill=BF_RANGE)
    w.settle()
    seen = []
    for i in range(5):
        running = [j for j in backfill_jobs(w)
                   if not (j.get("status") or {}).get("conditions")]
        assert len(running) == 1, [j["metadata"]["name"] for j in running]  # one at a time
        seen.append(running[0]["metadata"]["name"])
        if i == 2:
            w.rec = Reconciler(w.kube, clock=w.clock)  # type: ignore[arg-type]  # a restart
            w.settle()
        w.kube.finish(running[0]["metadata"]["name"])
        w.settle()
    w.extra = seen  # type: ignore[attr-defined]


def expect_five_runs_in_order_once(w: World) -> None:
    seen = w.extra  # type: ignore[attr-defined]
    assert len(set(seen)) == 5 and len(backfill_jobs(w)) <= 5
    times = []
    for name in seen:
        job = w.kube.job(name)
        if job is not None:
            env = {e["name"]: e.get("value")
                   for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
            times.append(env["BGJOB_SCHEDULED_TIME"])
            assert env["BGJOB_TRIGGER"] == "backfill"
    assert times == sorted(times) and all(t.endswith("T02:00:00Z") for t in times)
    bf = w.status["backfill"]
    assert (bf["total"], bf["started"], bf["succeeded"], bf["failed"]) == (5, 5, 5, 0)
    assert bf["phase"] == "Completed" and "next" not in bf
    assert w.reasons().count("BackfillStarted") == 1
    assert w.reasons().count("BackfillCompleted") == 1
    assert w.stats["runs"] == 5


def backfill_of_too_many_times(w: World) -> None:
    w.settle()
    w.annotate(backfill='{"from": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}')
    w.settle()


def expect_invalid_until_removed(w: World) -> None:
    assert backfill_jobs(w) == []
    ready = w.condition("Ready")
    assert ready["reason"] == "InvalidTrigger" and "bgjob.dev/backfill" in ready["message"]
    assert "more than 1000 times" in ready["message"]
    assert w.reasons().count("InvalidTrigger") == 1
    bj = w.kube.bj()
    del bj["metadata"]["annotations"]["bgjob.dev/backfill"]
    w.kube._bump(bj)
    w.settle()
    assert w.condition("Ready")["status"] == "True"


def backfill_cancelled_midway(w: World) -> None:
    w.settle()
    w.annotate(backfill=BF_RANGE)
    w.settle()
    [first] = backfill_jobs(w)
    w.kube.finish(first["metadata"]["name"])
    w.settle()
    w.annotate(cancel="stop")
    w.settle()


def expect_stopped_after_two(w: World) -> None:
    bf = w.status["backfill"]
    assert bf["phase"] == "Cancelled" and bf["started"] == 2 and "next" not in bf
    w.settle()
    assert len(backfill_jobs(w)) == 2


def backfill_run_fails_then_its_retry_fails(w: World) -> None:
    w.settle()
    w.annotate(backfill='{"from": "2026-11-22T00:00:00Z", "until": "2026-11-23T00:00:00Z"}')
    w.settle()
    [first] = backfill_jobs(w)
    w.kube.finish(first["metadata"]["name"], ok=False)
    w.settle()
    w.at(120)
    w.settle()
    retry = [j for j in backfill_jobs(w) if j["metadata"]["name"].endswith("-r2")]
    assert retry, [j["metadata"]["name"] for j in backfill_jobs(w)]
    assert w.status["backfill"]["phase"] == "Running"  # its retry is still to come
    w.kube.finish(retry[0]["metadata"]["name"], ok=False)
    w.settle()


def expect_one_failed_after_its_retry(w: World) -> None:
    bf = w.status["backfill"]
    assert (bf["started"], bf["succeeded"], bf["failed"], bf["phase"]) == (
        1, 0, 1, "Completed")


ENQ = {"concurrencyPolicy": "Enqueue"}


# -- typed parameters (issue 17) ----------------------------------------------------------------

DAYS = {"name": "days", "type": "Integer", "minimum": 1, "maximum": 30}


def bad_default_over_a_working_schedule(w: World) -> None:
    w.settle()
    w.extra = copy.deepcopy(w.kube.objects[("cronjobs", NS, NAME)])  # type: ignore[attr-defined]
    w.spec(parameters={"days": "0"})
    w.settle()
    run_now(w, "a")


def expect_invalid_spec_and_the_cronjob_kept(w: World) -> None:
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"] == "spec.parameters.days: '0' is below the minimum 1"
    assert w.reasons().count("InvalidSpec") == 1
    cj = w.kube.objects[("cronjobs", NS, NAME)]
    before = w.extra  # type: ignore[attr-defined]
    assert cj["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert w.jobs() == []  # the run-now waits for a spec it can run
    w.spec(parameters={"days": "3"})
    w.settle()
    assert w.condition("Ready")["status"] == "True" and w.jobs() == [manual("a")]


def bad_override_on_a_run_now(w: World) -> None:
    w.settle()
    run_now(w, "a", days="forty")


def expect_invalid_trigger_naming_the_parameter(w: World) -> None:
    assert w.jobs() == [] and w.status.get("lastHandledRunNow") == "a"
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidTrigger")
    assert ready["message"] == ("metadata.annotations[bgjob.dev/run-parameters]: parameter "
                                "days: 'forty' is not an Integer (like 42)")
    assert w.reasons().count("InvalidTrigger") == 1
    assert any("run-now 'a' not started" in m for _, r, m in w.kube.events
               if r == "InvalidTrigger")
    run_now(w, "b", days="30")  # a good override runs, and Ready is True again
    assert w.jobs() == [manual("b")] and w.condition("Ready")["status"] == "True"
    job = w.kube.job(manual("b"))
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]  # type: ignore[index]
    assert {"name": "BGJOB_PARAM_DAYS", "value": "30"} in env


def required_parameter_missing_on_a_manual_only_job(w: World) -> None:
    run_now(w, "a")


def expect_the_run_refused_not_the_spec(w: World) -> None:
    assert w.jobs() == []
    ready = w.condition("Ready")
    assert (ready["reason"], ready["message"]) == (
        "InvalidTrigger", "metadata.annotations[bgjob.dev/run-parameters]: parameter days: "
        "required, and no value was given")
    run_now(w, "b", days="1")
    assert w.jobs() == [manual("b")]


# -- run output (issue 17) -------------------------------------------------------------------

def failed_run_with_a_termination_message(w: World) -> None:
    run_now(w, "a")
    w.kube.pod(manual("a"), "step 3 of 4\nERROR: bucket not found\n")
    w.kube.finish(manual("a"), ok=False, exit_code=3)
    w.kube.lists.clear()
    w.settle()
    w.at(60)
    w.settle()


def expect_output_in_runs_and_last_run_read_once(w: World) -> None:
    want = "step 3 of 4\nERROR: bucket not found\n"
    assert w.status["runs"][0]["output"] == want
    assert w.status["lastRun"]["output"] == want
    assert w.kube.lists == [("pods", f"batch.kubernetes.io/job-name={manual('a')}")]


# -- freshness (issue 17) -----------------------------------------------------------------------

FRESH_2H = {"freshness": {"maxAgeSinceSuccess": "2h"}}


def never_succeeds_for_two_hours(w: World) -> None:
    w.settle()
    w.extra = [w.sync()]  # type: ignore[attr-defined]  # the wake-up asked for
    w.kube.writes.clear()
    w.at(3600)
    w.settle()  # an hour later: nothing to write
    w.extra.append(len(w.kube.writes))  # type: ignore[attr-defined]
    w.at(2 * 3600 + 1)  # the wake-up: stale now
    w.settle()


def expect_stale_on_time_then_cleared_by_a_success(w: World) -> None:
    wake, quiet_writes = w.extra  # type: ignore[attr-defined]
    assert wake == pytest.approx(2 * 3600 + 1)  # wakes itself when it turns stale
    assert quiet_writes == 0  # steady state: no write until then
    stale = w.condition("Stale")
    assert (stale["status"], stale["reason"]) == ("True", "NoRecentSuccess")
    assert stale["message"].startswith("no run has succeeded since the creation at "
                                       "2026-11-23T10:00:00Z, more than 2h ago")
    assert w.reasons().count("Stale") == 1
    assert [t for t, r, _ in w.kube.events if r == "Stale"] == ["Warning"]
    w.at(3 * 3600)
    w.settle()
    assert w.reasons().count("Stale") == 1  # once, on the way into it
    run_now(w, "ok")
    w.kube.finish(manual("ok"))
    w.settle()
    fresh = w.condition("Stale")
    assert (fresh["status"], fresh["reason"]) == ("False", "Fresh")
    assert "stale after 2026-11-23T15:00:00Z" in fresh["message"]
    assert w.sync() == pytest.approx(2 * 3600 + 1)  # the next wake-up: success + 2h
    w.spec(freshness=None)
    w.settle()
    assert all(c["type"] != "Stale" for c in w.status["conditions"])


CRON = {"schedule": {"cron": "0 * * * *"}}
EVERY7 = {"schedule": {"every": "7m"}}
RETRY = {"retry": {"limit": 1, "backoff": {"initialDelaySeconds": 60, "jitter": 0}}}

CASES = [
    Case("retry pending, another run fails, Allow: both are retried",
         {"concurrencyPolicy": "Allow", **RETRY}, two_runs_fail_before_the_first_retry,
         expect_both_retried),
    Case("two runs end in the same second at the records cut, then runRecords rises, then the "
         "spec goes bad: each counted once, no write loop",
         {"concurrencyPolicy": "Allow", "history": {"runRecords": 1}},
         same_second_at_the_records_cut, expect_counted_once),
    Case("failed scheduled run pruned by the CronJob while the operator is down: counted and "
         "retried", {**CRON, **RETRY, "history": {"failedJobs": 0}},
         failed_scheduled_run_pruned_while_down, expect_counted_and_retried),
    Case("manual run active at the CronJob's tick, Forbid: the scheduled Job waits",
         CRON, manual_run_active_at_the_tick, expect_scheduled_waits),
    Case("manual run active at the CronJob's tick, Replace: the manual run is cancelled",
         {**CRON, "concurrencyPolicy": "Replace"}, manual_run_active_at_the_tick,
         expect_manual_replaced),
    Case("cancel with a retry pending: one status write, no metadata write",
         RETRY, cancel_with_a_pending_retry, expect_one_status_write_and_no_metadata_writes),
    Case("template env ['A=1']: InvalidSpec naming the field, runs still folded, no run",
         {}, template_the_builder_cannot_use, expect_invalid_spec_naming_env),
    Case("bad time zone on an operator-timed schedule: the last good schedule keeps running",
         EVERY7, bad_time_zone_on_an_operator_schedule, expect_old_schedule_still_runs),
    Case("CronJob suspended and rescheduled by hand: reverted with an event",
         CRON, cronjob_suspended_by_hand, expect_reverted),
    Case("a foreign Job and a deleted namesake's Job carry the label: not counted, not "
         "cancelled", {}, foreign_and_stale_jobs_with_our_label, expect_not_ours),
    Case("a created Job deleted before the watch saw it: forgotten after the TTL",
         {}, created_then_deleted_before_the_watch, expect_next_run_starts),
    Case("run-now refused by quota (403): Warning event, the due scheduled run still starts",
         {**EVERY7, "concurrencyPolicy": "Allow"}, quota_refuses_a_run_now,
         expect_event_and_scheduled_run_started),
    Case("status write conflicts after counting: the finalizer stays until the count is "
         "written", {}, status_write_conflicts_after_counting,
         expect_finalizer_kept_until_counted),
    Case("BackgroundJob being deleted: every Job's finalizer is released",
         {}, backgroundjob_being_deleted, expect_nothing_stuck),
    Case("three ticks while the operator was down: the latest runs, two are missed",
         CRON, many_ticks_while_down, expect_latest_admitted_rest_missed),
    Case("run-now with run-force 'maybe': InvalidTrigger once, token handled, no run",
         {}, run_now_with_force_maybe, expect_token_handled_nothing_run),
    Case("empty run-now: InvalidTrigger once, nothing handled, no run",
         {}, empty_run_now, expect_invalid_trigger_once),
    Case("run-force 'true' with a run active, Forbid: the forced run starts",
         {}, run_now_with_force_true_while_active, expect_both_running),
    Case("a superseded Job counted missed, crash before its delete: missed once after restart",
         CRON, missed_then_crash_before_the_delete, expect_missed_once),
    Case("the API server refuses the Job template (422): InvalidSpec holds for that generation, "
         "no create is tried again until the spec changes",
         {}, api_refuses_the_job_template, expect_invalid_until_the_spec_changes),
    Case("the CronJob is replaced by hand while its run is active: the run is still counted",
         CRON, cronjob_replaced_while_its_run_is_active, expect_the_old_cronjobs_run_counted),
    Case("the finalizer release meets a 409, history 0: not pruned until released, counted "
         "once", {"history": {"successfulJobs": 0}}, release_conflicts_then_prune,
         expect_counted_once_and_pruned),
    Case("a cancel token handled by an older version (annotation) is not handled again",
         {}, legacy_annotations_migrate, expect_old_cancel_not_redone),
    Case("Enqueue, maxConcurrency 2, maxQueued 3, six run-nows: 2 active, 3 queued FIFO, 1 "
         "skipped; never more than 2 active as they drain",
         {**ENQ, "maxConcurrency": 2, "maxQueued": 3}, six_triggers,
         expect_two_active_three_queued_one_skipped),
    Case("Enqueue: two CronJob ticks while a run is active are queued, none superseded, "
         "admitted one at a time in order", {**CRON, **ENQ}, ticks_while_a_run_is_active,
         expect_each_tick_queued_and_run_in_order),
    Case("Enqueue: a retry due while the slot is taken is queued, then started once",
         {**ENQ, **RETRY}, retry_due_while_the_slot_is_taken,
         expect_retry_queued_then_started_once),
    Case("cancel with queued runs: the queue is dropped, counted skipped, waiting Jobs deleted",
         {**CRON, **ENQ}, cancel_with_queued_runs, expect_queue_dropped_and_counted_skipped),
    Case("run-at an hour ahead: queued with notBefore across a restart, started at its time",
         {}, run_at_in_an_hour, expect_waits_then_starts_at_its_time),
    Case("run-at 'tomorrow': InvalidTrigger naming the annotation, token handled, no run",
         {}, run_at_not_a_time, expect_invalid_run_at),
    Case("Allow with maxConcurrency 1: a second run-now is rejected naming the limit",
         {"concurrencyPolicy": "Allow", "maxConcurrency": 1}, second_run_over_max_concurrency,
         expect_rejected_naming_the_limit),
    Case("a run held suspended by an admission system: Queued in active, Overdue Queued past "
         "startingDeadlineSeconds, counted normally once it runs",
         {"schedule": {"cron": "0 0 1 1 *", "startingDeadlineSeconds": 300}},
         held_by_an_admission_system, expect_queued_then_overdue_then_counted),
    Case("a queued run's Job created, then a crash before the status write: started once",
         ENQ, queued_run_created_then_crash_before_the_write, expect_started_once),
    Case("Enqueue, operator timing: a run due while another is active is queued with its "
         "scheduled time", {**EVERY7, **ENQ}, operator_timed_run_due_while_active,
         expect_scheduled_queued_with_its_time),
    Case("a 5-day backfill: one run at a time, oldest first, historical BGJOB_SCHEDULED_TIME, "
         "a restart midway runs no time twice, completed once",
         {"schedule": {"daily": "02:00"}}, five_day_backfill_with_a_restart,
         expect_five_runs_in_order_once),
    Case("a backfill of more than 1000 times: InvalidTrigger naming the annotation, no run, "
         "until the annotation is removed", {"schedule": {"every": "1h"}},
         backfill_of_too_many_times, expect_invalid_until_removed),
    Case("cancel stops a backfill midway: no further time starts",
         {"schedule": {"daily": "02:00"}}, backfill_cancelled_midway,
         expect_stopped_after_two),
    Case("a backfill run fails and so does its retry: counted failed once, then completed",
         {"schedule": {"daily": "02:00"}, **RETRY}, backfill_run_fails_then_its_retry_fails,
         expect_one_failed_after_its_retry),
    Case("a default the parameterSchema refuses: InvalidSpec naming spec.parameters.days "
         "once, the CronJob untouched, no run until the spec is fixed",
         {**CRON, "parameterSchema": [DAYS], "parameters": {"days": "7"}},
         bad_default_over_a_working_schedule, expect_invalid_spec_and_the_cronjob_kept),
    Case("a run-now override the parameterSchema refuses: InvalidTrigger naming the "
         "parameter once, token handled, no Job",
         {"parameterSchema": [DAYS], "parameters": {"days": "7"}},
         bad_override_on_a_run_now, expect_invalid_trigger_naming_the_parameter),
    Case("a required parameter without a default, no schedule: the spec is fine, a run-now "
         "without the value is refused",
         {"parameterSchema": [{**DAYS, "required": True}]},
         required_parameter_missing_on_a_manual_only_job, expect_the_run_refused_not_the_spec),
    Case("a failed run's termination message: runs[].output and lastRun.output, its pods read "
         "once", {}, failed_run_with_a_termination_message,
         expect_output_in_runs_and_last_run_read_once),
    Case("freshness 2h, no success: Stale turns True at creation + 2h by its own wake-up "
         "(no write before), one Warning event; a success clears it; unset removes it",
         FRESH_2H, never_succeeds_for_two_hours, expect_stale_on_time_then_cleared_by_a_success),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reconcile(case: Case) -> None:
    w = world(**copy.deepcopy(case.spec))
    case.script(w)
    case.expect(w)
    w.settle()  # and every row ends in a steady state
