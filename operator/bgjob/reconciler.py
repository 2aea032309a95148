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

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from bgjob import accounting, api, cronjobs, manifests, retry, schedule, timing, triggers
from bgjob import status as st
from bgjob.api import (
    BackgroundJobSpec,
    BackgroundJobStatus,
    ConcurrencyPolicy,
    PendingRetry,
    Retry,
    Schedule,
)
from bgjob.expectations import Expectations
from bgjob.k8s import AlreadyExists, Invalid, Kube, KubeError, NotFound
from bgjob.metrics import Metrics
from bgjob.passctx import Observed, Outcome, Pass, SpecProblem, validation_message
from bgjob.passview import conditions, schedule_status
from bgjob.triggers import Action
from bgjob.vocab import (
    ANN_ADMITTED,
    ANN_PARAMETERS,
    ANN_RESUME,
    ANN_RETRY_OF,
    CHILD_CONFLICT,
    CRONJOB_INSTANTIATE,
    EV_AUTO_SUSPENDED,
    EV_MISSED_SCHEDULE,
    EV_RESUMED,
    EV_RETRIES_EXHAUSTED,
    EV_RETRY_SCHEDULED,
    EV_RUN_CANCELLED,
    EV_RUN_FAILED,
    EV_RUN_STARTED,
    EV_RUN_SUCCEEDED,
    EV_TRIGGER_REJECTED,
    FAILED_CREATE,
    INVALID_SCHEDULE,
    INVALID_SPEC,
    INVALID_TRIGGER,
    LEGACY_LAST_CANCEL,
    LEGACY_LAST_RESUME,
    LEGACY_MISSED_THROUGH,
    NORMAL,
    WARNING,
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
            self._release(ctx, [j for j in obs.jobs if accounting.has_finalizer(j)])
            return ctx.out

        ### 1: Load the spec; what the schema could not reject becomes InvalidSpec.
        self._step_spec(ctx)

        ### 2: Compile the schedule; after a bad edit keep timing by the last good one.
        self._step_compile(ctx)

        ### 3: Count every Job that ended, exactly once; judge each ended attempt (retry it or
        ###    end the run); autoSuspend.
        self._step_account(ctx)

        ### 4: Bring the CronJob in line, reverting drift (only with a valid spec).
        self._step_cronjob(ctx, obs)

        ### 5: A new cancel token stops every active run and drops pending retries.
        self._step_cancel(ctx)

        ### 6: Admit the Jobs the CronJob made suspended, under the concurrency policy.
        self._step_admit(ctx)

        ### 7: A new run-now token starts one manual run (suspended or not).
        self._step_run_now(ctx)

        ### 8: Pending retries whose time has come start, under the concurrency policy.
        self._step_retries(ctx)

        ### 9: Scheduled runs: start the due one (Operator mode); judge missed/overdue.
        self._step_schedule(ctx)

        ### 10: Schedule description, conditions, observedGeneration.
        ctx.new = schedule_status(ctx)
        ctx.new = conditions(ctx)

        ### 11: One status write holding everything this pass decided, then the events.
        if not self._write(ctx):
            return ctx.out
        if self.metrics is not None:
            self.metrics.record((ctx.ns, ctx.name), ctx.old, ctx.new)

        ### 12: Now that it is recorded: let counted Jobs go, drop missed waiting Jobs, prune.
        self._release(ctx, accounting.release(ctx.new.accounted, ctx.jobs.values())
                      + ctx.orphans)
        for job_name in ctx.to_delete:
            self._delete_job(ctx, job_name)
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
        cronjob = self.expect.cronjob(key, obs.cronjob)
        cj_uid = (cronjob or {}).get("metadata", {}).get("uid") \
            if cronjob is not None and cronjobs.controlled_by(cronjob, uid) else None
        seen = self.expect.jobs(key, obs.jobs)
        jobs: dict[str, dict[str, Any]] = {}
        orphans = []
        for job in seen:
            if cronjobs.controlled_by(job, uid) or (cj_uid and cronjobs.controlled_by(job, cj_uid)):
                jobs[job["metadata"]["name"]] = job
            elif accounting.has_finalizer(job) and accounting.deleting(job):
                orphans.append(job)  # ours once (an old CronJob's), now being removed
        return Pass(bj=bj, now=self.clock(), ns=ns, name=name, uid=uid,
                    generation=int(meta.get("generation") or 0), annotations=annotations,
                    base_rv=base_rv, old_raw=old_raw, old=old, new=old, jobs=jobs,
                    cronjob=cronjob, orphans=orphans)

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
        bad = manifests.template_problem(ctx.spec.template)
        if bad is not None:
            ctx.problem = SpecProblem(INVALID_SPEC, bad)
            ctx.template_ok = False

    def _step_compile(self, ctx: Pass) -> None:
        spec = ctx.spec
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

    # -- step 3 --------------------------------------------------------------------------

    def _step_account(self, ctx: Pass) -> None:
        self._learn_exit_codes(ctx)
        records = ctx.spec.history.run_records if ctx.spec else max(len(ctx.old.runs), 1)
        policy = ctx.retry_policy
        ctx.new, fresh = st.fold_runs(ctx.new, ctx.jobs.values(), records,
                                      lambda r: retry.is_final_failure(r, policy))
        self._run_events(ctx, fresh)
        for rec in fresh:
            self._judge(ctx, rec, policy)
        self._step_auto_suspend(ctx)

    def _learn_exit_codes(self, ctx: Pass) -> None:
        """A failed Job's conditions rarely carry the exit code; its pod does. One read per
        Job about to be counted; the run record keeps the code after that."""
        for job in accounting.to_count(ctx.jobs.values(), ctx.old.accounted):
            job_name = job["metadata"]["name"]
            if not st.needs_exit_code(job):
                continue
            try:
                pods = self.kube.list("v1", "pods", ctx.ns,
                                      f"{manifests.JOB_NAME_LABEL}={job_name}")
            except KubeError as exc:
                log.debug("%s/%s: cannot read pods of %s: %s", ctx.ns, ctx.name, job_name, exc)
                continue
            code = st.exit_code_of(pods)
            if code is not None:
                meta = dict(job["metadata"])
                meta["annotations"] = {**(meta.get("annotations") or {}),
                                       st.ANN_EXIT_CODE: str(code)}
                ctx.jobs[job_name] = {**job, "metadata": meta}

    def _run_events(self, ctx: Pass, fresh: list[Any]) -> None:
        seen = {r.job for r in ctx.old.active} | {r.job for r in ctx.old.runs}
        for ref in ctx.new.active:
            if ref.job not in seen:
                ctx.event(NORMAL, EV_RUN_STARTED, f"Started {ref.trigger} run {ref.job} "
                          f"(attempt {ref.attempt})")
        for rec in fresh:
            if rec.result == st.SUCCEEDED:
                ctx.event(NORMAL, EV_RUN_SUCCEEDED, f"Run {rec.job} succeeded in "
                          f"{rec.duration_seconds}s")
            elif st.is_failure(rec.result):
                code = f", exit code {rec.exit_code}" if rec.exit_code is not None else ""
                ctx.event(WARNING, EV_RUN_FAILED, f"Run {rec.job} ended {rec.result}{code}: "
                          f"{rec.message or rec.reason}")

    def _judge(self, ctx: Pass, rec: Any, policy: Retry) -> None:
        """One ended attempt, judged once (it was just counted): a pending retry of its own,
        or the end of its run."""
        verdict = retry.classify(rec, policy)
        if verdict is retry.Verdict.RETRY:
            job = ctx.jobs.get(rec.job) or {"metadata": {}}
            ann = job["metadata"].get("annotations") or {}
            try:
                params = json.loads(ann.get(ANN_PARAMETERS) or "{}")
            except json.JSONDecodeError:
                params = {}
            done = st.parse_time(rec.completion_time) or ctx.now
            wait = retry.delay(policy.backoff, rec.attempt)
            at = done + timedelta(seconds=wait)
            pending = PendingRetry(attempt=rec.attempt + 1, next_retry_time=st.fmt(at) or "",
                                   job=rec.job, first_job=ann.get(ANN_RETRY_OF) or rec.job,
                                   scheduled_time=rec.scheduled_time,
                                   parameters={str(k): str(v) for k, v in params.items()})
            ctx.set_retries([*ctx.new.pending_retries, pending])
            ctx.event(NORMAL, EV_RETRY_SCHEDULED, f"Run {rec.job} failed ({rec.result}"
                      + (f", exit code {rec.exit_code}" if rec.exit_code is not None else "")
                      + f"); attempt {rec.attempt + 1} of {1 + policy.limit} starts in "
                      f"{wait:.0f}s at {st.fmt(at)}")
        elif verdict is retry.Verdict.NON_RETRYABLE or (
                verdict is retry.Verdict.EXHAUSTED and policy.limit > 0):
            why = (f"exit code {rec.exit_code} is non-retryable"
                   if verdict is retry.Verdict.NON_RETRYABLE
                   else f"all {1 + policy.limit} attempts failed")
            ctx.event(WARNING, EV_RETRIES_EXHAUSTED, f"Run {rec.job} failed for good: {why}")

    def _step_auto_suspend(self, ctx: Pass) -> None:
        """Suspend the schedule after N failed runs in a row, in status only (spec belongs to
        the user and their GitOps tool); a new bgjob.dev/resume token or spec.suspend lifts it."""
        spec = ctx.spec
        if spec is None:
            return
        before = st.condition(ctx.old, "Suspended")
        was_auto = before is not None and before.reason == "AutoSuspended"
        resume = (ctx.annotations.get(ANN_RESUME) or "").strip()
        if resume and resume != ctx.old.last_handled_resume:
            ctx.new = ctx.new.model_copy(update={"last_handled_resume": resume})
            if was_auto:
                stats = ctx.new.stats.model_copy(update={"consecutive_failures": 0})
                ctx.new = ctx.new.model_copy(update={"stats": stats})
                ctx.event(NORMAL, EV_RESUMED, f"Schedule resumed by {ANN_RESUME}={resume}")
                return
        if spec.suspend:
            return  # the user's own suspension replaces the automatic one
        if was_auto:
            ctx.auto_suspended = True
            return
        limit = spec.auto_suspend.after_consecutive_failures if spec.auto_suspend else None
        if limit is not None and ctx.new.stats.consecutive_failures >= limit and (
                ctx.new.stats.consecutive_failures > ctx.old.stats.consecutive_failures):
            ctx.auto_suspended = True
            ctx.event(WARNING, EV_AUTO_SUSPENDED, f"Schedule suspended after "
                      f"{ctx.new.stats.consecutive_failures} failed runs in a row; annotate "
                      f"{ANN_RESUME}=<new token> to resume")

    # -- step 4 --------------------------------------------------------------------------

    def _step_cronjob(self, ctx: Pass, obs: Observed) -> None:
        if ctx.problem is not None or ctx.spec is None:
            return  # a bad spec never touches the CronJob that works
        c = ctx.compiled
        desired = None
        if c is not None and c.mode is schedule.Mode.CRONJOB:
            desired = manifests.cronjob_manifest(ctx.bj, ctx.spec, c, suspend=ctx.suspended)
        if desired is None and ctx.cronjob is not None and not cronjobs.controlled_by(
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

    # -- steps 5 to 9 --------------------------------------------------------------------

    def _cancel(self, ctx: Pass, jobs: list[dict[str, Any]], token: str) -> list[str]:
        """Stop runs and keep their records: a 1 s deadline makes the Job controller end
        them as failed; the annotation makes the record say Cancelled and stops retries."""
        stopped = []
        for job in jobs:
            job_name = job["metadata"]["name"]
            try:
                patched = self.kube.patch("batch/v1", "jobs", ctx.ns, job_name, {
                    "metadata": {"annotations": {st.ANN_CANCELLED: token}},
                    "spec": {"activeDeadlineSeconds": 1},
                })
            except NotFound:
                continue
            self._remember(ctx, patched)
            stopped.append(job_name)
        return stopped

    def _step_cancel(self, ctx: Pass) -> None:
        token = triggers.pending_cancel(ctx.annotations, ctx.old.last_handled_cancel)
        if token is None:
            return
        stopped = self._cancel(ctx, ctx.active_jobs(), token)
        ctx.new = ctx.new.model_copy(update={"last_handled_cancel": token})
        ctx.set_retries([])
        ctx.event(NORMAL, EV_RUN_CANCELLED, f"Cancelled {len(stopped)} active run(s)"
                  + (f": {', '.join(stopped)}" if stopped else " (none was active)"))

    def _step_admit(self, ctx: Pass) -> None:
        """The CronJob's Jobs come suspended; each is admitted, left waiting, or missed, by
        the same rules as every other run. Jobs of an older operator get the finalizer."""
        spec = ctx.spec
        waiting = [j for j in ctx.jobs.values() if accounting.awaiting_admission(j)]
        for job in ctx.jobs.values():
            if (not accounting.has_finalizer(job) and not accounting.awaiting_admission(job)
                    and not accounting.finished(job) and not accounting.deleting(job)):
                self._admit(ctx, job)  # adopt a running Job of an older version
        if not waiting or spec is None or not ctx.template_ok:
            return
        deadline = ctx.schedule.starting_deadline_seconds if ctx.schedule else None

        def due(job: dict[str, Any]) -> str:
            ann = job["metadata"].get("annotations") or {}
            return str(ann.get(api.ANN_CRONJOB_SCHEDULED)
                       or job["metadata"].get("creationTimestamp") or "")

        manual = [j for j in waiting if (j["metadata"].get("annotations") or {}).get(
            CRONJOB_INSTANTIATE) == "manual"]
        scheduled = sorted((j for j in waiting if j not in manual), key=due)
        for job in scheduled[:-1]:  # superseded: only the most recent time is ever started
            self._miss(ctx, job, "a newer scheduled run superseded it")
        candidates = manual + scheduled[-1:]
        for job in candidates:
            is_manual = job in manual
            when = st.parse_time(due(job)) or ctx.now
            if not is_manual and ctx.suspended:
                self._miss(ctx, job, "the schedule is suspended")
                continue
            if not is_manual and deadline is not None and (ctx.now - when).total_seconds() > \
                    deadline:
                self._miss(ctx, job, f"it could not start within {deadline}s")
                continue
            active = ctx.active_jobs()
            policy = spec.concurrency_policy
            if active and policy is ConcurrencyPolicy.FORBID:
                if not is_manual and deadline is not None:
                    ctx.wake_at(when + timedelta(seconds=deadline + 1))
                continue  # waits for the active run; its end brings us back
            if active and policy is ConcurrencyPolicy.REPLACE:
                self._cancel(ctx, active, f"replaced-by:{job['metadata']['name']}")
            self._admit(ctx, job)

    def _admit(self, ctx: Pass, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        try:
            patched = self.kube.patch("batch/v1", "jobs", ctx.ns, meta["name"], {
                "metadata": {"resourceVersion": meta.get("resourceVersion"),
                             "finalizers": accounting.with_finalizer(job),
                             "annotations": {ANN_ADMITTED: "true"}},
                "spec": {"suspend": False},
            })
        except NotFound:
            return
        except KubeError as exc:
            if exc.status != 409:
                raise
            ctx.wake_in(CONFLICT_RETRY_SECONDS)  # changed under us: look again
            return
        self._remember(ctx, patched)

    def _miss(self, ctx: Pass, job: dict[str, Any], why: str) -> None:
        """A waiting Job that will not run: counted missed now, deleted after the write."""
        uid = accounting.uid_of(job)
        if uid in ctx.new.accounted:
            ctx.to_delete.append(job["metadata"]["name"])  # counted before; delete again
            return
        stats = ctx.new.stats.model_copy(update={"missed": ctx.new.stats.missed + 1})
        ctx.new = ctx.new.model_copy(update={"stats": stats,
                                             "accounted": [*ctx.new.accounted, uid]})
        ctx.to_delete.append(job["metadata"]["name"])
        ctx.event(WARNING, EV_MISSED_SCHEDULE, f"Scheduled run {job['metadata']['name']} "
                  f"did not start: {why}")

    def _step_run_now(self, ctx: Pass) -> None:
        try:
            params = triggers.parse_parameters(ctx.annotations.get(api.ANN_RUN_PARAMETERS))
        except triggers.TriggerError as exc:
            params = None
            if ctx.annotations.get(api.ANN_RUN_NOW):
                ctx.trigger_problem = SpecProblem(INVALID_TRIGGER, str(exc))
        if ctx.spec is None or not ctx.template_ok:
            return  # no template to run; the token waits until the spec is fixed
        token = ctx.annotations.get(api.ANN_RUN_NOW, "")
        job_name = manifests.manual_job_name(ctx.name, token)
        active = ctx.active_jobs()
        decision = triggers.decide_run_now(ctx.annotations, ctx.old.last_handled_run_now,
                                           job_name in ctx.jobs, len(active),
                                           ctx.spec.concurrency_policy)
        if decision.action is Action.NONE:
            return
        if params is None:
            assert ctx.trigger_problem is not None
            ctx.handled_run_now(decision.token)
            ctx.event(WARNING, INVALID_TRIGGER, f"run-now {decision.token!r} not started: "
                      f"{ctx.trigger_problem.message}")
            return
        if decision.action is Action.ADOPT:
            ctx.handled_run_now(decision.token)
            return
        if decision.action is Action.REJECT:
            ctx.handled_run_now(decision.token)
            ctx.event(WARNING, EV_TRIGGER_REJECTED, f"run-now {decision.token!r} not "
                      f"started: concurrencyPolicy is Forbid and {len(active)} run(s) are "
                      f"active ({', '.join(j['metadata']['name'] for j in active)}); set "
                      f"{api.ANN_RUN_FORCE}: \"true\" to run anyway")
            return
        if decision.action is Action.REPLACE:
            self._cancel(ctx, active, f"replaced-by:{job_name}")
        manifest = manifests.job_manifest(
            ctx.bj, ctx.spec, job_name, "manual", params=params,
            extra_annotations={ANN_PARAMETERS: json.dumps(params, sort_keys=True)}
            if params else None)
        if self._create_job(ctx, manifest, f"manual run {decision.token!r}") is not None:
            ctx.handled_run_now(decision.token)  # started, adopted or refused for good

    def _step_retries(self, ctx: Pass) -> None:
        spec = ctx.spec
        if spec is None or not ctx.template_ok or not ctx.new.pending_retries:
            return
        keep: list[PendingRetry] = []
        started = 0
        for pending in ctx.new.pending_retries:
            due = st.parse_time(pending.next_retry_time) or ctx.now
            if due > ctx.now:
                ctx.wake_at(due)
                keep.append(pending)
                continue
            root = pending.first_job or _retry_root(ctx.jobs.get(pending.job)) or pending.job
            job_name = manifests.retry_job_name(root, pending.attempt)
            if job_name not in ctx.jobs:
                active = ctx.active_jobs()
                if active and spec.concurrency_policy is ConcurrencyPolicy.FORBID:
                    keep.append(pending)  # waits for the active run; its end brings us back
                    continue
                if active and spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
                    ctx.event(NORMAL, EV_RUN_CANCELLED, f"Pending retry of {pending.job} "
                              "dropped: a newer run is active and concurrencyPolicy is Replace")
                    continue
                extra = {ANN_RETRY_OF: root}
                if pending.parameters:
                    extra[ANN_PARAMETERS] = json.dumps(pending.parameters, sort_keys=True)
                manifest = manifests.job_manifest(
                    ctx.bj, spec, job_name, "retry", attempt=pending.attempt,
                    scheduled=st.parse_time(pending.scheduled_time),
                    params=pending.parameters, extra_annotations=extra)
                if not self._create_job(ctx, manifest, f"retry of {pending.job}"):
                    keep.append(pending)
                    continue
            started += 1
        stats = ctx.new.stats.model_copy(update={"retries": ctx.new.stats.retries + started})
        ctx.new = ctx.new.model_copy(update={"stats": stats})
        ctx.set_retries(keep)

    def _step_schedule(self, ctx: Pass) -> None:
        c, sched = ctx.compiled, ctx.schedule
        if c is None or sched is None or ctx.spec is None:
            return
        if c.mode is schedule.Mode.OPERATOR:
            last = st.parse_time(ctx.new.last_schedule_time)
            floor = st.parse_time(ctx.bj["metadata"].get("creationTimestamp")) or ctx.now
        elif ctx.cronjob is not None and cronjobs.controlled_by(ctx.cronjob, ctx.uid):
            last = st.parse_time((ctx.cronjob.get("status") or {}).get("lastScheduleTime"))
            floor = st.parse_time(ctx.cronjob["metadata"].get("creationTimestamp")) or ctx.now
        else:
            return
        plan = timing.plan(c, last_scheduled=last, floor=floor,
                           missed_through=ctx.missed_through, now=ctx.now,
                           deadline_seconds=sched.starting_deadline_seconds,
                           suspended=ctx.suspended)
        started = plan.run is not None and ctx.template_ok and self._start_scheduled(
            ctx, plan.run)
        if plan.missed:
            stats = ctx.new.stats.model_copy(
                update={"missed": ctx.new.stats.missed + len(plan.missed)})
            ctx.new = ctx.new.model_copy(update={"stats": stats})
            ctx.missed_through = max(plan.missed)
            shown = ", ".join(st.fmt(t) or "" for t in plan.missed[-3:])
            more = f" and {len(plan.missed) - 3} earlier" if len(plan.missed) > 3 else ""
            ctx.event(WARNING, EV_MISSED_SCHEDULE, f"{len(plan.missed)} scheduled run(s) did "
                      f"not start in time and were skipped: {shown}{more}")
        if plan.overdue is not None and not started:
            missed_for_good = plan.overdue in plan.missed or (
                ctx.missed_through is not None and plan.overdue <= ctx.missed_through)
            ctx.overdue = (plan.overdue, missed_for_good)
        ctx.wake_at(plan.wake)
        if plan.run is not None and not started:
            grace = sched.starting_deadline_seconds
            if grace is not None:  # blocked: count it missed once its deadline is over
                ctx.wake_at(plan.run + timedelta(seconds=grace + 1))

    def _start_scheduled(self, ctx: Pass, due: datetime) -> bool:
        """Start the Operator-timed run for ``due`` under the concurrency policy."""
        assert ctx.spec is not None
        job_name = manifests.scheduled_job_name(ctx.name, due)
        if job_name not in ctx.jobs:
            active = ctx.active_jobs()
            policy = ctx.spec.concurrency_policy
            if active and policy is ConcurrencyPolicy.FORBID:
                log.info("%s/%s: run due %s waits: Forbid and %d active", ctx.ns, ctx.name,
                         st.fmt(due), len(active))
                return False
            if active and policy is ConcurrencyPolicy.REPLACE:
                self._cancel(ctx, active, f"replaced-by:{job_name}")
            manifest = manifests.job_manifest(ctx.bj, ctx.spec, job_name, "scheduled",
                                              scheduled=due)
            if not self._create_job(ctx, manifest, f"scheduled run due {st.fmt(due)}"):
                return False
        ctx.new = ctx.new.model_copy(update={"last_schedule_time": st.fmt(due)})
        return True

    # -- writes --------------------------------------------------------------------------

    def _remember(self, ctx: Pass, job: dict[str, Any]) -> None:
        ctx.jobs[job["metadata"]["name"]] = job
        self.expect.wrote_job((ctx.ns, ctx.name), job)

    def _create_job(self, ctx: Pass, manifest: dict[str, Any], what: str) -> bool | None:
        """Create one run's Job. True: it exists now (created or adopted); False: not now,
        try again later; None: refused for good (a condition or event says why)."""
        meta = manifest["metadata"]
        try:
            created = self.kube.create(manifest, "jobs")
        except AlreadyExists:
            try:
                existing = self.kube.get("batch/v1", "jobs", ctx.ns, meta["name"])
            except NotFound:
                return False  # deleted in between; the next pass decides again
            if cronjobs.controlled_by(existing, ctx.uid):
                self._remember(ctx, existing)
                return True  # made by an earlier pass: adopted, never a second run
            ctx.problem = ctx.problem or SpecProblem(
                CHILD_CONFLICT, f"Job {meta['name']} exists and is not owned by this "
                "BackgroundJob; it is left untouched")
            return None
        except Invalid as exc:
            ctx.problem = ctx.problem or SpecProblem(INVALID_SPEC,
                                                     f"spec.template: {exc.message}")
            return None
        except KubeError as exc:
            # Quota, RBAC, admission webhooks, an overloaded API server: this run only; the
            # rest of the pass goes on, and the run is tried again a little later.
            message = f"{what}: Job {meta['name']} was refused ({exc.status}): {exc.message}"
            ctx.run_problem = SpecProblem(FAILED_CREATE, message)
            ctx.event(WARNING, FAILED_CREATE, message)
            ctx.wake_in(CREATE_RETRY_SECONDS)
            return False
        self._remember(ctx, created)
        return True

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

    def _release(self, ctx: Pass, jobs: list[dict[str, Any]]) -> None:
        """Remove our finalizer (only after the count is written); guarded by the Job's
        resourceVersion so no one else's finalizer change is lost."""
        for job in jobs:
            meta = job["metadata"]
            try:
                patched = self.kube.patch("batch/v1", "jobs", meta.get("namespace", ctx.ns),
                                          meta["name"], {"metadata": {
                                              "resourceVersion": meta.get("resourceVersion"),
                                              "finalizers": accounting.without_finalizer(job)}})
            except NotFound:
                continue
            except KubeError as exc:
                if exc.status != 409:
                    raise
                ctx.wake_in(CONFLICT_RETRY_SECONDS)
                continue
            if meta["name"] in ctx.jobs:
                self._remember(ctx, patched)

    def _delete_job(self, ctx: Pass, job_name: str) -> None:
        self.kube.delete("batch/v1", "jobs", ctx.ns, job_name)
        self.expect.deleted_job((ctx.ns, ctx.name), job_name)
        ctx.jobs.pop(job_name, None)

    def _step_prune(self, ctx: Pass) -> None:
        """Finished operator-made Jobs beyond the history limits (the CronJob prunes its own);
        they were counted, so deleting them loses nothing."""
        if ctx.spec is None:
            return
        ours = [st.observe(j) for j in ctx.jobs.values()
                if cronjobs.controlled_by(j, ctx.uid) and not accounting.deleting(j)]
        for job_name in st.prune(ours, ctx.spec.history.successful_jobs,
                                 ctx.spec.history.failed_jobs):
            self._delete_job(ctx, job_name)


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


def _retry_root(job: dict[str, Any] | None) -> str | None:
    """The first attempt of a retry Job (pending retries written before the second wave
    carry only the failed Job's name)."""
    ann = ((job or {}).get("metadata") or {}).get("annotations") or {}
    return ann.get(ANN_RETRY_OF)
