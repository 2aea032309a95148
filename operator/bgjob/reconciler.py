"""The reconcile pass for one BackgroundJob, as numbered steps.

Level-based: each pass reads the object and its children as the watches last saw them, decides
with the pure rules (schedule, timing, retry, accounting, manifests, status), makes the child
writes it needs, records everything it decided in **one** status write, and only after that
write lets go of what it counted (finalizers) and prunes. The operator is the single gate for
every run: Jobs it creates itself, and Jobs the native CronJob makes suspended, which it admits
under ``concurrencyPolicy``. A bad spec sets ``Ready=False`` and touches no child, so a bad edit
never breaks a working schedule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bgjob import (
    accounting,
    backfilling,
    cronjobs,
    freshness,
    judging,
    manifests,
    params,
    queueing,
    runs,
    schedruns,
    schedule,
)
from bgjob import status as st
from bgjob.api import (
    BackgroundJobSpec,
    BackgroundJobStatus,
    NamedSchedule,
    Retry,
    Schedule,
    ScheduleEntryStatus,
)
from bgjob.effects import Effects
from bgjob.expectations import Expectations
from bgjob.k8s import Kube, KubeError, NotFound
from bgjob.metrics import Metrics
from bgjob.passctx import Observed, Outcome, Pass, SpecProblem, validation_message
from bgjob.passview import conditions, schedule_status
from bgjob.vocab import (
    CHILD_CONFLICT,
    INVALID_SCHEDULE,
    INVALID_SPEC,
    LEGACY_LAST_CANCEL,
    LEGACY_LAST_RESUME,
    LEGACY_MISSED_THROUGH,
    READY,
)

__all__ = ["Observed", "Outcome", "Reconciler", "SpecProblem", "validation_message"]

log = logging.getLogger("bgjob.reconciler")

RECHECK_CONFLICT_SECONDS = 300.0  # a foreign object in our way: look again now and then
CONFLICT_RETRY_SECONDS = 1.0
CREATE_RETRY_SECONDS = 10.0       # a refused or failed create is tried again this much later


def _rv(obj: dict[str, Any] | None) -> int:
    """resourceVersion as a number (etcd revisions are); 0 when absent or opaque."""
    text = str(((obj or {}).get("metadata") or {}).get("resourceVersion", ""))
    return int(text) if text.isdigit() else 0


class Reconciler:
    def __init__(self, kube: Kube, clock: Callable[[], datetime] | None = None,
                 metrics: Metrics | None = None) -> None:
        self.kube = kube
        self.metrics = metrics
        self.clock = clock or (lambda: datetime.now(UTC))
        # What we created, changed or deleted that the watches have not shown yet (client-go's
        # expectations, with a TTL so a lost event never wedges a BackgroundJob).
        self.expect = Expectations(self.clock)
        self.fx = Effects(kube, self.expect, metrics, self.clock)
        # Our last status write to each BackgroundJob (response resourceVersion and status):
        # until the watch delivers an object at least that new, a pass builds on what we wrote.
        self.written: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}

    def forget(self, key: tuple[str, str]) -> None:
        self.expect.forget(key)
        self.written.pop(key, None)
        if self.metrics is not None:
            self.metrics.forget(key)

    def reconcile(self, obs: Observed) -> Outcome:
        ctx = self._begin(obs)
        if ctx.bj["metadata"].get("deletionTimestamp"):
            ### 0: Being deleted: let every Job go, counted or not (nothing may get stuck).
            self.fx.release(ctx, [j for j in [*ctx.jobs.values(), *ctx.orphans]
                                  if accounting.has_finalizer(j)])
            return ctx.out

        ### 1: Load the spec; what the schema could not reject becomes InvalidSpec.
        self._step_spec(ctx)

        ### 2: Compile the schedule; after a bad edit keep timing by the last good one.
        self._step_compile(ctx)

        ### 3: Count every Job that ended, exactly once; judge each ended attempt (retry it or
        ###    end the run); autoSuspend.
        self.fx.learn_from_pods(ctx)
        judging.step_account(ctx)

        ### 4: Bring the CronJob in line, reverting drift (only with a valid spec).
        self._step_cronjob(ctx, obs)

        ### 5: A new cancel token stops every active run and drops pending retries.
        runs.step_cancel(ctx)
        self.fx.apply(ctx)

        ### 6: Queued runs start first in, first out, while slots are free.
        queueing.step_queue(ctx)
        self.fx.apply(ctx)

        ### 7: Admit the Jobs the CronJob made suspended, under the concurrency policy.
        runs.step_admit(ctx)
        self.fx.apply(ctx)

        ### 8: A new run-now token starts (or queues) one manual run, suspended or not.
        runs.step_run_now(ctx)
        self.fx.apply(ctx)

        ### 9: Pending retries whose time has come start, under the concurrency policy.
        runs.step_retries(ctx)
        self.fx.apply(ctx)

        ### 10: Scheduled runs: start the due one (Operator mode); judge missed/overdue,
        ###     and runs held queued by an admission system (Kueue) past their deadline.
        runs.step_schedule(ctx)
        self.fx.apply(ctx)
        runs.step_held(ctx)

        ### 11: A new backfill value starts a backfill; its next due times start when the gate
        ###     has room (after the live runs above, which go first).
        backfilling.step_begin(ctx)
        backfilling.step_advance(ctx)
        self.fx.apply(ctx)

        ### 12: Schedule description, conditions, observedGeneration.
        ctx.new = schedule_status(ctx)
        ctx.new = conditions(ctx)
        ctx.new = freshness.apply(ctx)

        ### 13: One status write holding everything this pass decided, then the events.
        if not self._write(ctx):
            return ctx.out
        if self.metrics is not None:
            self.metrics.record((ctx.ns, ctx.name), ctx.old, ctx.new)

        ### 14: Now that it is recorded: let counted Jobs go, drop missed waiting Jobs, prune.
        self.fx.release(ctx, accounting.release(ctx.new.accounted, ctx.jobs.values())
                      + ctx.orphans)
        for job_name in ctx.to_delete:
            self.fx.delete_job(ctx, job_name)
        self._step_prune(ctx)
        return ctx.out

    # -- reading -------------------------------------------------------------------------

    def _begin(self, obs: Observed) -> Pass:
        bj = obs.bj
        meta = bj["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        key = (ns, name)
        old_raw = dict(bj.get("status") or {})
        base_rv = str(meta.get("resourceVersion", ""))
        cached = self.written.get(key)
        if cached is not None and cached[0] > _rv(bj):
            base_rv, old_raw = str(cached[0]), cached[1]  # the watch is behind our own write
        else:
            self.written.pop(key, None)
        try:
            old = BackgroundJobStatus.model_validate(old_raw)
        except ValidationError:  # a status from an older operator: rebuild it
            old = BackgroundJobStatus()
        annotations = dict(meta.get("annotations") or {})
        old = _migrate(old, annotations)
        # Children are ours by controller UID, never by label alone: a foreign Job carrying the
        # label, or the Jobs of a deleted namesake awaiting garbage collection, are not.
        cronjob = self.expect.cronjob(key, obs.cronjob, obs.cronjobs_seen_through)
        cj_uid = (cronjob or {}).get("metadata", {}).get("uid") \
            if cronjob is not None and accounting.controlled_by(cronjob, uid) else None
        seen = self.expect.jobs(key, obs.jobs, obs.jobs_seen_through)
        jobs: dict[str, dict[str, Any]] = {}
        orphans = []
        created = str(meta.get("creationTimestamp") or "")
        for job in seen:
            if accounting.controlled_by(job, uid) or (
                    cj_uid and accounting.controlled_by(job, cj_uid)) or (
                    accounting.earlier_cronjob_run(job, manifests.cronjob_name(name), created)):
                jobs[job["metadata"]["name"]] = job
            elif accounting.has_finalizer(job) and accounting.deleting(job):
                orphans.append(job)  # a deleted namesake's, held: let it go uncounted
        return Pass(bj=bj, now=self.clock(), ns=ns, name=name, uid=uid,
                    generation=int(meta.get("generation") or 0), annotations=annotations,
                    base_rv=base_rv, old_raw=old_raw, old=old, new=old, jobs=jobs,
                    cronjob=cronjob, orphans=orphans, run_now_seen=obs.run_now_seen)

    # -- steps 1 and 2 -------------------------------------------------------------------

    def _step_spec(self, ctx: Pass) -> None:
        raw = ctx.bj.get("spec") or {}
        try:
            ctx.spec = BackgroundJobSpec.model_validate(raw)
        except ValidationError as exc:
            ctx.problem = SpecProblem(INVALID_SPEC, validation_message(exc))
            try:  # judge ended attempts by the retry rules if that part is readable
                ctx.retry_policy = Retry.model_validate(raw.get("retry") or {})
            except ValidationError:
                ctx.retry_policy = Retry()
            return
        ctx.retry_policy = ctx.spec.retry
        bad = manifests.template_problem(ctx.spec.template) or params.spec_problem(ctx.spec)
        if bad is not None:
            ctx.problem = SpecProblem(INVALID_SPEC, bad)
            ctx.template_ok = False
            return
        ready = st.condition(ctx.old, READY)
        if (ready is not None and ready.status == "False" and ready.reason == INVALID_SPEC
                and ready.observed_generation == ctx.generation):
            # The API server refused a child made from this very spec: the same write would
            # fail again, so none is tried until the spec changes (and Ready stays False).
            ctx.problem = SpecProblem(INVALID_SPEC, ready.message)
            ctx.template_ok = False

    def _step_compile(self, ctx: Pass) -> None:
        spec = ctx.spec
        if spec is not None and spec.schedules:
            self._step_compile_entries(ctx)
            return
        if spec is None or spec.schedule is None:
            return
        try:
            ctx.compiled = schedule.compile_schedule(spec.schedule, ctx.ns, ctx.name)
            ctx.schedule = spec.schedule
        except schedule.ScheduleError as exc:
            ctx.problem = ctx.problem or SpecProblem(INVALID_SCHEDULE, str(exc))
            kept = ctx.old.schedule.in_force if ctx.old.schedule else None
            if kept is None:
                return
            try:  # the last valid schedule stays in force until the spec is fixed
                ctx.schedule = Schedule.model_validate(kept)
                ctx.compiled = schedule.compile_schedule(ctx.schedule, ctx.ns, ctx.name)
            except (ValidationError, schedule.ScheduleError):
                ctx.schedule = ctx.compiled = None
                return
        if ctx.compiled is not None:
            ctx.compiled = replace(ctx.compiled, anchor=st.parse_time(
                ctx.bj["metadata"].get("creationTimestamp")) or ctx.now)

    def _step_compile_entries(self, ctx: Pass) -> None:
        """spec.schedules: each entry compiled on its own; a bad edit of one keeps that
        entry's last valid version in force (``status.schedules[].inForce``)."""
        assert ctx.spec is not None and ctx.spec.schedules
        created = st.parse_time(ctx.bj["metadata"].get("creationTimestamp")) or ctx.now
        fresh = ctx.old.observed_generation is None  # the object's first pass
        for i, entry in enumerate(ctx.spec.schedules):
            sched: NamedSchedule = entry
            try:
                c = schedule.compile_schedule(entry, ctx.ns, ctx.name,
                                              f"spec.schedules[{i}]", entry.name)
            except schedule.ScheduleError as exc:
                ctx.problem = ctx.problem or SpecProblem(INVALID_SCHEDULE, str(exc))
                old = ctx.entry_state.get(entry.name)
                if old is None or old.in_force is None:
                    continue
                try:  # this entry's last valid version stays in force
                    sched = NamedSchedule.model_validate(old.in_force)
                    c = schedule.compile_schedule(sched, ctx.ns, ctx.name,
                                                  f"spec.schedules[{i}]", entry.name)
                except (ValidationError, schedule.ScheduleError):
                    continue
            if entry.name not in ctx.entry_state:  # a new entry does not run the past
                ctx.entry_state[entry.name] = ScheduleEntryStatus(
                    name=entry.name, since=st.fmt(created if fresh else ctx.now))
            ctx.entries.append(schedruns.Entry(
                entry.name, replace(c, anchor=created), sched.starting_deadline_seconds,
                dict(sched.parameters), sched.model_dump(by_alias=True, exclude_none=True,
                                                         mode="json")))

    # -- step 4 --------------------------------------------------------------------------

    def _step_cronjob(self, ctx: Pass, obs: Observed) -> None:
        if ctx.problem is not None or ctx.spec is None:
            return  # a bad spec never touches the CronJob that works
        c = ctx.compiled
        desired = None
        if c is not None and c.mode is schedule.Mode.CRONJOB:
            paused = schedruns.cronjob_paused(ctx)  # outside activeFrom/activeUntil
            desired = manifests.cronjob_manifest(ctx.bj, ctx.spec, c,
                                                 suspend=ctx.suspended or paused)
        if desired is None and ctx.cronjob is not None and not accounting.controlled_by(
                ctx.cronjob, ctx.uid):
            return  # someone else's CronJob of that name, and we need none: leave it
        try:
            res = cronjobs.sync(self.kube, ctx.bj, desired, ctx.cronjob)
        except cronjobs.ChildProblem as exc:
            ctx.problem = SpecProblem(exc.reason, exc.message)
            if exc.reason == CHILD_CONFLICT:  # look again now and then: it may go away
                ctx.wake_in(RECHECK_CONFLICT_SECONDS)
            return
        if res.written:
            self.expect.wrote_cronjob((ctx.ns, ctx.name), res.cronjob)
        ctx.cronjob = res.cronjob
        for ev in res.events:
            ctx.event(*ev)

    # -- writes --------------------------------------------------------------------------

    def _write(self, ctx: Pass) -> bool:
        """The one status write, with the resourceVersion it was computed from, so a stale
        view can never be written (a 409 means: wait for the watch and redo)."""
        key = (ctx.ns, ctx.name)
        if ctx.missed_through is not None and ctx.new.schedule is not None:
            sched = ctx.new.schedule.model_copy(
                update={"missed_through": st.fmt(ctx.missed_through)})
            ctx.new = ctx.new.model_copy(update={"schedule": sched})
        status = st.to_dict(ctx.new)
        patch = st.merge_patch(ctx.old_raw, status)
        if set(patch) == {"accounted"} and set(ctx.new.accounted) <= set(ctx.old.accounted):
            patch = {}  # only forgetting released UIDs: wait for a write that is due anyway
        if patch:
            try:
                resp = self.kube.patch_status(ctx.ns, ctx.name, patch,
                                              resource_version=ctx.base_rv)
            except NotFound:
                return False
            except KubeError as exc:
                if exc.status != 409:
                    raise
                log.debug("%s/%s changed while reconciling; redoing", ctx.ns, ctx.name)
                ctx.out.requeue_after = CONFLICT_RETRY_SECONDS
                return False
            new_rv = str(resp["metadata"]["resourceVersion"])
            self.written[key] = (int(new_rv) if new_rv.isdigit() else 0, status)
            ctx.out.status_written = True
        for type_, reason, message in ctx.out.events:
            log.info("%s/%s %s: %s", ctx.ns, ctx.name, reason, message)
            self.kube.event(ctx.bj, type_, reason, message)
        return True

    def _step_prune(self, ctx: Pass) -> None:
        """Finished operator-made Jobs beyond the history limits (the CronJob prunes its own);
        they were counted, so deleting them loses nothing."""
        if ctx.spec is None:
            return
        ours = [st.observe(j) for j in ctx.jobs.values()
                if accounting.controlled_by(j, ctx.uid) and not accounting.deleting(j)
                and not accounting.has_finalizer(j)]  # released first (maybe a later pass)
        for job_name in st.prune(ours, ctx.spec.history.successful_jobs,
                                 ctx.spec.history.failed_jobs):
            self.fx.delete_job(ctx, job_name)


def _migrate(old: BackgroundJobStatus, annotations: dict[str, str]) -> BackgroundJobStatus:
    """Progress that versions before the second wave kept in annotations, read once: status
    wins as soon as it holds a value, and the annotations are never written again."""
    update: dict[str, Any] = {}
    if old.last_handled_cancel is None and annotations.get(LEGACY_LAST_CANCEL):
        update["last_handled_cancel"] = annotations[LEGACY_LAST_CANCEL]
    if old.last_handled_resume is None and annotations.get(LEGACY_LAST_RESUME):
        update["last_handled_resume"] = annotations[LEGACY_LAST_RESUME]
    legacy_missed = annotations.get(LEGACY_MISSED_THROUGH)
    if old.schedule is not None and old.schedule.missed_through is None and legacy_missed:
        update["schedule"] = old.schedule.model_copy(update={"missed_through": legacy_missed})
    if old.retry is not None and not old.pending_retries:
        update["pending_retries"] = [old.retry]
    return old.model_copy(update=update) if update else old

