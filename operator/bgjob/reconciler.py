"""The reconcile loop for one BackgroundJob, as numbered steps.

Level-based: each pass reads the object and its children as the watches last saw them, decides
with the pure rules (schedule, manifests, status), makes the few writes needed, and writes status
once at the end when, and only when, it changed. A bad spec sets ``Ready=False`` and touches no
child, so a bad edit never breaks a working schedule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from bgjob import api, manifests, retry, schedule, timing, triggers
from bgjob import status as st
from bgjob.api import (
    BackgroundJobSpec,
    BackgroundJobStatus,
    ConcurrencyPolicy,
    PendingRetry,
    Retry,
    ScheduleStatus,
)
from bgjob.k8s import AlreadyExists, Invalid, Kube, KubeError, NotFound
from bgjob.metrics import Metrics
from bgjob.triggers import Action

log = logging.getLogger("bgjob.reconciler")

RECHECK_CONFLICT_SECONDS = 300.0  # a foreign object in our way: look again now and then
NORMAL, WARNING = "Normal", "Warning"


@dataclass
class Observed:
    """What the watches show: the BackgroundJob, its Jobs and its CronJob (if any)."""

    bj: dict[str, Any]
    jobs: list[dict[str, Any]] = field(default_factory=list)
    cronjob: dict[str, Any] | None = None


@dataclass
class Outcome:
    requeue_after: float | None = None
    status_written: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)


class SpecProblem(Exception):
    """A spec the schema let through but the operator cannot run: becomes Ready=False."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def validation_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"spec.{loc}: {err['msg']}" if loc else f"spec: {err['msg']}"


def _controlled_by(obj: dict[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


ANN_MISSED_THROUGH = f"{api.GROUP}/missed-through"
ANN_RESUME = f"{api.GROUP}/resume"
ANN_LAST_RESUME = f"{api.GROUP}/last-handled-resume"
ANN_RETRY_OF = f"{api.GROUP}/retry-of"      # on retry Jobs: the first attempt's Job
ANN_PARAMETERS = f"{api.GROUP}/parameters"  # on manual Jobs: the overrides, for their retries
CONFLICT_RETRY_SECONDS = 1.0


def _rv(obj: dict[str, Any] | None) -> int:
    """resourceVersion as a number (etcd revisions are); 0 when absent or opaque."""
    text = str(((obj or {}).get("metadata") or {}).get("resourceVersion", ""))
    return int(text) if text.isdigit() else 0


def _finished(job: dict[str, Any]) -> bool:
    return st.observe(job).result != st.RUNNING


@dataclass
class Pass:
    """Everything one reconcile pass reads and decides, so the steps stay short."""

    bj: dict[str, Any]
    now: datetime
    ns: str
    name: str
    generation: int
    annotations: dict[str, str]
    base_rv: str
    old_raw: dict[str, Any]
    old: BackgroundJobStatus
    new: BackgroundJobStatus
    jobs: dict[str, dict[str, Any]]
    out: Outcome = field(default_factory=Outcome)
    spec: BackgroundJobSpec | None = None
    compiled: schedule.Compiled | None = None
    problem: SpecProblem | None = None
    trigger_problem: SpecProblem | None = None
    cronjob: dict[str, Any] | None = None
    annotation_updates: dict[str, str] = field(default_factory=dict)
    overdue: tuple[datetime, bool] | None = None  # due time, and whether it is missed for good
    auto_suspended: bool = False

    @property
    def suspended(self) -> bool:
        """The schedule is paused by spec.suspend or by autoSuspend."""
        return bool(self.spec and self.spec.suspend) or self.auto_suspended

    def wake_at(self, when: datetime | None) -> None:
        if when is None:
            return
        delay = max(0.05, (when - self.now).total_seconds())
        if self.out.requeue_after is None or delay < self.out.requeue_after:
            self.out.requeue_after = delay

    def event(self, type_: str, reason: str, message: str) -> None:
        self.out.events.append((type_, reason, message))

    def active_jobs(self) -> list[dict[str, Any]]:
        """Running Jobs not already being cancelled."""
        return [j for j in self.jobs.values() if not _finished(j)
                and st.ANN_CANCELLED not in (j["metadata"].get("annotations") or {})]


class Reconciler:
    def __init__(self, kube: Kube, clock: Callable[[], datetime] | None = None,
                 metrics: Metrics | None = None) -> None:
        self.kube = kube
        self.metrics = metrics
        self.clock = clock or (lambda: datetime.now(UTC))
        # Children we created or changed whose watch event has not arrived yet (like
        # client-go's "expectations"): without them a fast second pass would act twice.
        self.recent_cronjobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.recent_jobs: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        # Our last write to each BackgroundJob (response resourceVersion, status, annotations):
        # until the watch delivers an object at least that new, a pass builds on what we wrote.
        self.written: dict[tuple[str, str], tuple[int, dict[str, Any], dict[str, str]]] = {}
        # Jobs we pruned that the watch still shows: never delete them twice.
        self.deleted_jobs: dict[tuple[str, str], set[str]] = {}

    def forget(self, key: tuple[str, str]) -> None:
        for cache in (self.recent_cronjobs, self.recent_jobs, self.written, self.deleted_jobs):
            cache.pop(key, None)
        if self.metrics is not None:
            self.metrics.forget(key)

    def reconcile(self, obs: Observed) -> Outcome:
        ctx = self._begin(obs)

        ### 1: Load the spec; what the schema could not reject becomes InvalidSpec.
        try:
            ctx.spec = BackgroundJobSpec.model_validate(ctx.bj.get("spec") or {})
        except ValidationError as exc:
            ctx.problem = SpecProblem("InvalidSpec", validation_message(exc))

        ### 2: Compile the schedule (InvalidSchedule names the field).
        if ctx.spec is not None and ctx.spec.schedule is not None:
            try:
                compiled = schedule.compile_schedule(ctx.spec.schedule, ctx.ns, ctx.name)
                ctx.compiled = replace(compiled, anchor=self._created(ctx))
            except schedule.ScheduleError as exc:
                ctx.problem = SpecProblem("InvalidSchedule", str(exc))

        ### 3: Fold what the Jobs show into status (always: runs go on under a bad edit);
        ###    judge each newly finished attempt: retry it, or end the run; autoSuspend.
        self._learn_exit_codes(ctx)
        run_records = ctx.spec.history.run_records if ctx.spec else max(len(ctx.old.runs), 20)
        policy = ctx.spec.retry if ctx.spec else Retry()
        ctx.new = st.fold_runs(ctx.new, ctx.jobs.values(), run_records,
                               lambda r: retry.is_final_failure(r, policy))
        self._run_events(ctx.old, ctx.new, ctx.out)
        self._step_judge_attempts(ctx)
        self._step_auto_suspend(ctx)

        ### 4: Bring the CronJob in line (only with a valid spec; never on a bad one).
        self._step_cronjob(ctx, obs)

        ### 5: A new cancel token stops every active run (and drops a pending retry).
        self._step_cancel(ctx)

        ### 6: A new run-now token starts one manual run (suspended or not).
        self._step_run_now(ctx)

        ### 7: A pending retry whose time has come starts, under the concurrency policy.
        self._step_retry(ctx)

        ### 8: Scheduled runs: start the due one (Operator mode) and judge missed/overdue ones.
        self._step_schedule(ctx)

        ### 9: Schedule description, conditions, observedGeneration.
        ctx.new = self._schedule_status(ctx.new, ctx.spec, ctx.compiled, ctx.cronjob, ctx.now,
                                        ctx.problem, ctx.suspended)
        ctx.new = self._conditions(ctx)

        ### 10: Write our annotations and status (only what changed), then the events.
        if not self._write(ctx):
            return ctx.out
        if self.metrics is not None:
            self.metrics.record((ctx.ns, ctx.name), ctx.old, ctx.new)

        ### 11: Prune finished Jobs we own beyond the history limits (now that they are counted).
        self._step_prune(ctx)
        return ctx.out

    # -- reading -------------------------------------------------------------------------

    def _begin(self, obs: Observed) -> Pass:
        bj = obs.bj
        meta = bj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        key = (ns, name)
        old_raw = dict(bj.get("status") or {})
        annotations = dict(meta.get("annotations") or {})
        base_rv = str(meta.get("resourceVersion", ""))
        cached = self.written.get(key)
        if cached is not None and cached[0] > _rv(bj):
            base_rv, old_raw = str(cached[0]), cached[1]  # the watch is behind our own write
            annotations.update(cached[2])
        else:
            self.written.pop(key, None)
        try:
            old = BackgroundJobStatus.model_validate(old_raw)
        except ValidationError:  # a status from an older operator: rebuild it
            old = BackgroundJobStatus()
        jobs = {j["metadata"]["name"]: j for j in obs.jobs}
        gone = self.deleted_jobs.get(key)
        if gone:
            gone &= jobs.keys()  # forget deletions the watch has delivered
            for job_name in gone:
                del jobs[job_name]
        recent = self.recent_jobs.get(key, {})
        for job_name, job in list(recent.items()):
            seen = jobs.get(job_name)
            if seen is not None and _rv(seen) >= _rv(job):
                del recent[job_name]  # the watch caught up
            else:
                jobs[job_name] = job
        if not recent:
            self.recent_jobs.pop(key, None)
        return Pass(bj=bj, now=self.clock(), ns=ns, name=name,
                    generation=int(meta.get("generation") or 0), annotations=annotations,
                    base_rv=base_rv, old_raw=old_raw, old=old, new=old, jobs=jobs)

    def _learn_exit_codes(self, ctx: Pass) -> None:
        """A failed Job's conditions rarely carry the exit code; its pod does. One read per
        newly failed Job; the run record keeps the code after that."""
        known = {r.job for r in ctx.old.runs}
        for job_name, job in list(ctx.jobs.items()):
            if job_name in known or not st.needs_exit_code(job):
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

    @staticmethod
    def _created(ctx: Pass) -> datetime:
        return st.parse_time(ctx.bj["metadata"].get("creationTimestamp")) or ctx.now

    def _remember_job(self, ctx: Pass, job: dict[str, Any]) -> None:
        ctx.jobs[job["metadata"]["name"]] = job
        self.recent_jobs.setdefault((ctx.ns, ctx.name), {})[job["metadata"]["name"]] = job

    # -- step 3 --------------------------------------------------------------------------

    def _step_cronjob(self, ctx: Pass, obs: Observed) -> None:
        key = (ctx.ns, ctx.name)
        cached = self.recent_cronjobs.get(key)
        ctx.cronjob = obs.cronjob
        if cached is not None:
            if obs.cronjob is not None and _rv(obs.cronjob) >= _rv(cached):
                self.recent_cronjobs.pop(key, None)
            else:
                ctx.cronjob = cached
        stuck = self._blocked_on_same_generation(ctx.old, ctx.generation)
        if stuck:  # keep reporting it: the write would fail the same way again
            ready = st.condition(ctx.old, "Ready")
            assert ready is not None
            ctx.problem = ctx.problem or SpecProblem(ready.reason, ready.message)
        if ctx.problem is None and ctx.spec is not None and not stuck:
            try:
                ctx.cronjob = self._sync_cronjob(ctx.bj, ctx.spec, ctx.compiled, ctx.cronjob,
                                                 ctx.suspended, ctx.out)
            except SpecProblem as exc:
                ctx.problem = exc
                if exc.reason == "ChildConflict":  # look again now and then: it may go away
                    ctx.out.requeue_after = RECHECK_CONFLICT_SECONDS

    # -- step 3: retries and autoSuspend ------------------------------------------------

    def _step_judge_attempts(self, ctx: Pass) -> None:
        """Each attempt that finished since the last pass is judged once (oldest first)."""
        if ctx.spec is None:
            return
        policy = ctx.spec.retry
        known = {r.job for r in ctx.old.runs}
        fresh = [r for r in reversed(ctx.new.runs) if r.job not in known]
        for rec in fresh:
            verdict = retry.classify(rec, policy)
            if verdict is retry.Verdict.RETRY:
                done = st.parse_time(rec.completion_time) or ctx.now
                wait = retry.delay(policy.backoff, rec.attempt)
                at = done + timedelta(seconds=wait)
                pending = PendingRetry(attempt=rec.attempt + 1, next_retry_time=st.fmt(at) or "",
                                       job=rec.job)
                ctx.new = ctx.new.model_copy(update={"retry": pending})
                ctx.event(NORMAL, "RetryScheduled", f"Run {rec.job} failed ({rec.result}"
                          + (f", exit code {rec.exit_code}" if rec.exit_code is not None else "")
                          + f"); attempt {rec.attempt + 1} of {1 + policy.limit} starts in "
                          f"{wait:.0f}s at {st.fmt(at)}")
            elif verdict is retry.Verdict.NON_RETRYABLE or (
                    verdict is retry.Verdict.EXHAUSTED and policy.limit > 0):
                why = (f"exit code {rec.exit_code} is non-retryable"
                       if verdict is retry.Verdict.NON_RETRYABLE
                       else f"all {1 + policy.limit} attempts failed")
                ctx.event(WARNING, "RetriesExhausted", f"Run {rec.job} failed for good: {why}")

    def _step_auto_suspend(self, ctx: Pass) -> None:
        """Suspend the schedule after N failed runs in a row, in status only (spec belongs to
        the user and their GitOps tool); a new bgjob.dev/resume token or spec.suspend lifts it."""
        spec = ctx.spec
        if spec is None:
            return
        before = st.condition(ctx.old, "Suspended")
        was_auto = before is not None and before.reason == "AutoSuspended"
        resume = (ctx.annotations.get(ANN_RESUME) or "").strip()
        if resume and resume != ctx.annotations.get(ANN_LAST_RESUME):
            ctx.annotation_updates[ANN_LAST_RESUME] = resume
            if was_auto:
                stats = ctx.new.stats.model_copy(update={"consecutive_failures": 0})
                ctx.new = ctx.new.model_copy(update={"stats": stats})
                ctx.event(NORMAL, "Resumed", f"Schedule resumed by {ANN_RESUME}={resume}")
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
            ctx.event(WARNING, "AutoSuspended", f"Schedule suspended after "
                      f"{ctx.new.stats.consecutive_failures} failed runs in a row; annotate "
                      f"{ANN_RESUME}=<new token> to resume")

    # -- steps 5 to 8 --------------------------------------------------------------------

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
            self._remember_job(ctx, patched)
            stopped.append(job_name)
        return stopped

    def _step_cancel(self, ctx: Pass) -> None:
        token = triggers.pending_cancel(ctx.annotations)
        if token is None:
            return
        stopped = self._cancel(ctx, ctx.active_jobs(), token)
        ctx.annotation_updates[triggers.ANN_LAST_CANCEL] = token
        ctx.new = ctx.new.model_copy(update={"retry": None})
        ctx.event(NORMAL, "RunCancelled", f"Cancelled {len(stopped)} active run(s)"
                  + (f": {', '.join(stopped)}" if stopped else " (none was active)"))

    def _step_run_now(self, ctx: Pass) -> None:
        try:
            params = triggers.parse_parameters(ctx.annotations.get(api.ANN_RUN_PARAMETERS))
        except triggers.TriggerError as exc:
            params = None
            if ctx.annotations.get(api.ANN_RUN_NOW):
                ctx.trigger_problem = SpecProblem("InvalidTrigger", str(exc))
        if ctx.spec is None:
            return  # no template to run; the token waits until the spec is fixed
        job_name = manifests.manual_job_name(ctx.name, ctx.annotations.get(api.ANN_RUN_NOW, ""))
        active = ctx.active_jobs()
        decision = triggers.decide_run_now(ctx.annotations, ctx.old.last_handled_run_now,
                                           job_name in ctx.jobs, len(active),
                                           ctx.spec.concurrency_policy)
        if decision.action is Action.NONE:
            return
        ctx.new = ctx.new.model_copy(update={"last_handled_run_now": decision.token})
        if params is None:
            assert ctx.trigger_problem is not None
            ctx.event(WARNING, "InvalidTrigger", f"run-now {decision.token!r} not started: "
                      f"{ctx.trigger_problem.message}")
            return
        if decision.action is Action.ADOPT:
            return
        if decision.action is Action.REJECT:
            ctx.event(WARNING, "TriggerRejected", f"run-now {decision.token!r} not started: "
                      f"concurrencyPolicy is Forbid and {len(active)} run(s) are active "
                      f"({', '.join(j['metadata']['name'] for j in active)}); set "
                      f"{api.ANN_RUN_FORCE}: \"true\" to run anyway")
            return
        if decision.action is Action.REPLACE:
            self._cancel(ctx, active, f"replaced-by:{job_name}")
        manifest = manifests.job_manifest(
            ctx.bj, ctx.spec, job_name, "manual", params=params,
            extra_annotations={ANN_PARAMETERS: json.dumps(params, sort_keys=True)}
            if params else None)
        self._create_job(ctx, manifest)

    def _step_retry(self, ctx: Pass) -> None:
        pending, spec = ctx.new.retry, ctx.spec
        if pending is None or spec is None:
            return
        due = st.parse_time(pending.next_retry_time) or ctx.now
        if due > ctx.now:
            ctx.wake_at(due)
            return
        failed = ctx.jobs.get(pending.job) or {"metadata": {"name": pending.job}}
        fmeta = failed["metadata"]
        fann = fmeta.get("annotations") or {}
        root = fann.get(ANN_RETRY_OF) or pending.job
        job_name = manifests.retry_job_name(root, pending.attempt)
        if job_name not in ctx.jobs:
            active = ctx.active_jobs()
            if active and spec.concurrency_policy is ConcurrencyPolicy.FORBID:
                return  # waits for the active run; its end brings us back
            if active and spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
                ctx.event(NORMAL, "RunCancelled", f"Pending retry of {pending.job} dropped: "
                          f"a newer run is active and concurrencyPolicy is Replace")
                ctx.new = ctx.new.model_copy(update={"retry": None})
                return
            try:
                params = json.loads(fann.get(ANN_PARAMETERS) or "{}")
            except json.JSONDecodeError:
                params = {}
            scheduled = st.parse_time(fann.get(api.ANN_SCHEDULED_TIME)
                                      or fann.get(api.ANN_CRONJOB_SCHEDULED))
            extra = {ANN_RETRY_OF: root}
            if params:
                extra[ANN_PARAMETERS] = json.dumps(params, sort_keys=True)
            manifest = manifests.job_manifest(ctx.bj, spec, job_name, "retry",
                                              attempt=pending.attempt, scheduled=scheduled,
                                              params=params, extra_annotations=extra)
            if not self._create_job(ctx, manifest):
                return
        stats = ctx.new.stats.model_copy(update={"retries": ctx.new.stats.retries + 1})
        ctx.new = ctx.new.model_copy(update={"retry": None, "stats": stats})

    def _create_job(self, ctx: Pass, manifest: dict[str, Any]) -> bool:
        try:
            created = self.kube.create(manifest, "jobs")
        except AlreadyExists:
            meta = manifest["metadata"]
            try:
                existing = self.kube.get("batch/v1", "jobs", ctx.ns, meta["name"])
            except NotFound:
                return False  # deleted in between; the next pass decides again
            if _controlled_by(existing, ctx.bj["metadata"]["uid"]):
                self._remember_job(ctx, existing)
                return True  # made by an earlier pass: adopted, never a second run
            ctx.problem = ctx.problem or SpecProblem(
                "ChildConflict", f"Job {meta['name']} exists and is not owned by this "
                "BackgroundJob; it is left untouched")
            return False
        except Invalid as exc:
            ctx.problem = ctx.problem or SpecProblem("InvalidSpec",
                                                     f"spec.template: {exc.message}")
            return False
        self._remember_job(ctx, created)
        return True

    def _step_schedule(self, ctx: Pass) -> None:
        spec, c = ctx.spec, ctx.compiled
        if spec is None or c is None or spec.schedule is None or (
                ctx.problem is not None and ctx.problem.reason != "ChildConflict"):
            return
        operator_mode = c.mode is schedule.Mode.OPERATOR
        if operator_mode:
            last = st.parse_time(ctx.new.last_schedule_time)
            floor = self._created(ctx)
        elif ctx.cronjob is not None and ctx.problem is None:
            cj_status = ctx.cronjob.get("status") or {}
            last = st.parse_time(cj_status.get("lastScheduleTime"))
            floor = st.parse_time(ctx.cronjob["metadata"].get("creationTimestamp")) or ctx.now
        else:
            return
        missed_through = st.parse_time(ctx.annotations.get(ANN_MISSED_THROUGH))
        plan = timing.plan(c, last_scheduled=last, floor=floor, missed_through=missed_through,
                           now=ctx.now, deadline_seconds=spec.schedule.starting_deadline_seconds,
                           suspended=ctx.suspended)
        started = plan.run is not None and self._start_scheduled(ctx, plan.run)
        if plan.missed:
            stats = ctx.new.stats.model_copy(
                update={"missed": ctx.new.stats.missed + len(plan.missed)})
            ctx.new = ctx.new.model_copy(update={"stats": stats})
            ctx.annotation_updates[ANN_MISSED_THROUGH] = st.fmt(max(plan.missed)) or ""
            shown = ", ".join(st.fmt(t) or "" for t in plan.missed[-3:])
            more = f" and {len(plan.missed) - 3} earlier" if len(plan.missed) > 3 else ""
            ctx.event(WARNING, "MissedSchedule", f"{len(plan.missed)} scheduled run(s) did "
                      f"not start in time and were skipped: {shown}{more}")
        if plan.overdue is not None and not started:
            missed_for_good = plan.overdue in plan.missed or (
                missed_through is not None and plan.overdue <= missed_through)
            ctx.overdue = (plan.overdue, missed_for_good)
        ctx.wake_at(plan.wake)
        if plan.run is not None and not started:
            grace = spec.schedule.starting_deadline_seconds
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
            if not self._create_job(ctx, manifest):
                return False
        ctx.new = ctx.new.model_copy(update={"last_schedule_time": st.fmt(due)})
        return True

    # -- steps 9 and 10 ------------------------------------------------------------------

    def _write(self, ctx: Pass) -> bool:
        """Annotations, then status with the resourceVersion it was computed from, so a
        stale view can never be written (a 409 means: wait for the watch and redo)."""
        key = (ctx.ns, ctx.name)
        rv = ctx.base_rv
        ann_updates = {k: v for k, v in ctx.annotation_updates.items()
                       if ctx.annotations.get(k) != v}
        try:
            if ann_updates:
                resp = self.kube.patch(api.API_VERSION, api.PLURAL, ctx.ns, ctx.name, {
                    "metadata": {"annotations": ann_updates, "resourceVersion": rv}})
                rv = str(resp["metadata"]["resourceVersion"])
                ctx.annotations.update(ann_updates)
                self.written[key] = (int(rv) if rv.isdigit() else 0, ctx.old_raw,
                                     {k: ctx.annotations[k] for k in ctx.annotation_updates})
            status = st.to_dict(ctx.new)
            patch = st.merge_patch(ctx.old_raw, status)
            if patch:
                log.debug("%s/%s status patch: %s", ctx.ns, ctx.name, patch)
                resp = self.kube.patch_status(ctx.ns, ctx.name, patch, resource_version=rv)
                new_rv = str(resp["metadata"]["resourceVersion"])
                self.written[key] = (int(new_rv) if new_rv.isdigit() else 0, status,
                                     {k: ctx.annotations[k] for k in ctx.annotation_updates
                                      if k in ctx.annotations})
                ctx.out.status_written = True
        except NotFound:
            return False
        except KubeError as exc:
            if exc.status != 409:
                raise
            log.debug("%s/%s changed while reconciling; redoing", ctx.ns, ctx.name)
            ctx.out.requeue_after = CONFLICT_RETRY_SECONDS
            return False
        for type_, reason, message in ctx.out.events:
            log.info("%s/%s %s: %s", ctx.ns, ctx.name, reason, message)
            self.kube.event(ctx.bj, type_, reason, message)
        return True

    def _step_prune(self, ctx: Pass) -> None:
        if ctx.spec is None:
            return
        uid = ctx.bj["metadata"]["uid"]
        keep = ctx.new.retry.job if ctx.new.retry else ""
        ours = [st.observe(j) for j in ctx.jobs.values()
                if _controlled_by(j, uid) and j["metadata"]["name"] != keep]
        for job_name in st.prune(ours, ctx.spec.history.successful_jobs,
                                 ctx.spec.history.failed_jobs):
            self.kube.delete("batch/v1", "jobs", ctx.ns, job_name)
            ctx.jobs.pop(job_name, None)
            self.deleted_jobs.setdefault((ctx.ns, ctx.name), set()).add(job_name)

    # -- step 3 --------------------------------------------------------------------------

    @staticmethod
    def _blocked_on_same_generation(old: BackgroundJobStatus, generation: int) -> bool:
        """A child write that failed for this very spec would fail again: do not retry it."""
        ready = st.condition(old, "Ready")
        return (ready is not None and ready.status == "False"
                and ready.reason == "InvalidSpec" and ready.observed_generation == generation)

    def _sync_cronjob(self, bj: dict[str, Any], spec: BackgroundJobSpec,
                      compiled: schedule.Compiled | None, existing: dict[str, Any] | None,
                      suspended: bool, out: Outcome) -> dict[str, Any] | None:
        meta = bj["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        cj_name = manifests.cronjob_name(name)
        if compiled is None or compiled.mode is not schedule.Mode.CRONJOB:
            if existing is not None and _controlled_by(existing, uid):
                self.kube.delete("batch/v1", "cronjobs", ns, cj_name)
                self.recent_cronjobs.pop((ns, name), None)
                out.events.append((NORMAL, "Scheduled", f"Removed CronJob {cj_name}: the "
                                   "schedule is now timed by the operator"
                                   if compiled else f"Removed CronJob {cj_name}"))
            return None
        desired = manifests.cronjob_manifest(bj, spec, compiled, suspend=suspended)
        if existing is None:
            try:
                created = self.kube.create(desired, "cronjobs")
                self.recent_cronjobs[(ns, name)] = created
                out.events.append((NORMAL, "Scheduled",
                                   f"Created CronJob {cj_name}: {compiled.description}"))
                return created
            except AlreadyExists:
                existing = self.kube.get("batch/v1", "cronjobs", ns, cj_name)
            except Invalid as exc:
                raise SpecProblem("InvalidSpec", f"spec.template: {exc.message}") from None
        if not _controlled_by(existing, uid):
            raise SpecProblem("ChildConflict", f"CronJob {cj_name} exists and is not owned by "
                              "this BackgroundJob; it is left untouched")
        want = desired["metadata"]["annotations"][manifests.ANN_SPEC_HASH]
        have = ((existing.get("metadata") or {}).get("annotations") or {}).get(
            manifests.ANN_SPEC_HASH)
        if want == have:
            return existing
        desired["metadata"]["resourceVersion"] = existing["metadata"].get("resourceVersion")
        try:
            updated = self.kube.replace(desired, "cronjobs")
        except Invalid as exc:
            raise SpecProblem("InvalidSpec", f"spec.template: {exc.message}") from None
        except KubeError as exc:
            if exc.status == 409:  # changed under us; the watch brings it back to us
                return existing
            raise
        self.recent_cronjobs[(ns, name)] = updated
        out.events.append((NORMAL, "Scheduled", f"Updated CronJob {cj_name}: "
                           f"{compiled.description}"))
        return updated

    # -- step 4 --------------------------------------------------------------------------

    @staticmethod
    def _run_events(old: BackgroundJobStatus, new: BackgroundJobStatus, out: Outcome) -> None:
        seen = {r.job for r in old.active} | {r.job for r in old.runs}
        for ref in new.active:
            if ref.job not in seen:
                out.events.append((NORMAL, "RunStarted", f"Started {ref.trigger} run "
                                   f"{ref.job} (attempt {ref.attempt})"))
        counted = {r.job for r in old.runs}
        for rec in reversed(new.runs):
            if rec.job in counted:
                continue
            if rec.result == st.SUCCEEDED:
                out.events.append((NORMAL, "RunSucceeded", f"Run {rec.job} succeeded in "
                                   f"{rec.duration_seconds}s"))
            elif st.is_failure(rec.result):
                code = f", exit code {rec.exit_code}" if rec.exit_code is not None else ""
                out.events.append((WARNING, "RunFailed", f"Run {rec.job} ended "
                                   f"{rec.result}{code}: {rec.message or rec.reason}"))

    # -- step 8 --------------------------------------------------------------------------

    @staticmethod
    def _schedule_status(new: BackgroundJobStatus, spec: BackgroundJobSpec | None,
                         compiled: schedule.Compiled | None, cronjob: dict[str, Any] | None,
                         now: datetime, problem: SpecProblem | None,
                         suspended: bool) -> BackgroundJobStatus:
        if problem is not None and problem.reason in ("InvalidSpec", "InvalidSchedule"):
            return new  # keep describing the schedule that still runs
        update: dict[str, Any] = {}
        if spec is None or compiled is None:
            update = {"schedule": None, "cron_job": None}
        else:
            nxt = [] if suspended else schedule.next_run_times(compiled, now,
                                                               compiled.anchor or now)
            if compiled.at is not None and new.last_schedule_time is not None:
                nxt = []  # a one-off that has run
            update["schedule"] = ScheduleStatus(
                kind=compiled.kind, cron=compiled.cron, time_zone=compiled.time_zone,
                description=compiled.description, mode=compiled.mode.value,
                next_run_times=[t for t in (st.fmt(x) for x in nxt) if t],
            )
            is_cron = compiled.mode is schedule.Mode.CRONJOB
            update["cron_job"] = (_name_of(cronjob) or None) if is_cron else None
            last = ((cronjob or {}).get("status") or {}).get("lastScheduleTime")
            if is_cron and last and (new.last_schedule_time or "") < last:
                update["last_schedule_time"] = last
        return new.model_copy(update=update)

    @staticmethod
    def _conditions(ctx: Pass) -> BackgroundJobStatus:
        new, spec, now, gen = ctx.new, ctx.spec, ctx.now, ctx.generation
        conds = list(new.conditions)
        problem = ctx.problem or ctx.trigger_problem
        if problem is not None:
            before = st.condition(ctx.old, "Ready")
            if (before is None or before.reason != problem.reason
                    or before.message != problem.message) and problem is ctx.problem:
                ctx.event(WARNING, problem.reason, problem.message)
            conds = st.set_condition(conds, "Ready", False, problem.reason, problem.message,
                                     gen, now)
        else:
            scheduled = spec is not None and spec.schedule is not None
            conds = st.set_condition(
                conds, "Ready", True, "Scheduled" if scheduled else "ManualOnly",
                "the schedule is in place" if scheduled else "runs only when triggered",
                gen, now)
        if spec is not None and ctx.auto_suspended:
            conds = st.set_condition(
                conds, "Suspended", True, "AutoSuspended",
                f"suspended after {new.stats.consecutive_failures} failed runs in a row; "
                f"annotate {ANN_RESUME}=<new token> or set spec.suspend to resume", gen, now)
        elif spec is not None:
            conds = st.set_condition(conds, "Suspended", spec.suspend,
                                     "Suspended" if spec.suspend else "Active",
                                     "spec.suspend is true" if spec.suspend else "", gen, now)
        failing, reason, message = st.failing_condition(new)
        if failing and spec is not None and new.runs:
            verdict = retry.classify(new.runs[0], spec.retry)
            retrying = [j["metadata"]["name"] for j in ctx.active_jobs()
                        if st.trigger_of(j) == "retry"]
            if new.retry is not None:
                reason, message = "RetryPending", (
                    f"{message}; attempt {new.retry.attempt} starts at "
                    f"{new.retry.next_retry_time}")
            elif retrying:  # the retry started in this very pass: not final yet
                reason, message = "RetryRunning", f"{message}; retry {retrying[0]} is running"
            elif spec.retry.limit > 0 or verdict is retry.Verdict.NON_RETRYABLE:
                reason = "RetriesExhausted"
        conds = st.set_condition(conds, "Failing", failing, reason, message, gen, now)
        if ctx.overdue is not None:
            due, gone = ctx.overdue
            conds = st.set_condition(
                conds, "Overdue", True, "MissedSchedule" if gone else "NotStarted",
                f"the run due at {st.fmt(due)} did not start"
                + (" within startingDeadlineSeconds and was skipped" if gone else " yet"),
                gen, now)
        elif spec is not None and ctx.suspended:
            conds = st.set_condition(conds, "Overdue", False, "Suspended",
                                     "nothing is due while suspended", gen, now)
        elif problem is None or st.condition(new, "Overdue") is None:
            conds = st.set_condition(conds, "Overdue", False, "OnTime", "", gen, now)
        return new.model_copy(update={"conditions": conds, "observed_generation": gen})


def _name_of(cronjob: dict[str, Any] | None) -> str:
    return str(((cronjob or {}).get("metadata") or {}).get("name", ""))

