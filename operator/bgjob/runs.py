"""Steps 5 to 9 of a pass: every way a run starts — cancel, admission of the CronJob's Jobs,
run-now, due retries, operator-timed schedules — decided under one concurrency policy, so
``Forbid`` holds across all of them. No I/O here: each step records its decisions in the pass
as actions (``Pass.plan``), and the reconciler has ``Effects.apply`` make them real."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bgjob import (
    accounting,
    api,
    backfilling,
    manifests,
    queueing,
    schedruns,
    schedule,
    timing,
    triggers,
)
from bgjob import status as st
from bgjob.api import ConcurrencyPolicy, PendingRetry, QueuedRun
from bgjob.gate import Verdict
from bgjob.params import run_problem
from bgjob.passctx import AdmitJob, CancelRuns, CreateJob, Pass, SpecProblem
from bgjob.triggers import Action
from bgjob.vocab import (
    ANN_PARAMETERS,
    ANN_RETRY_OF,
    CRONJOB_INSTANTIATE,
    EV_MISSED_SCHEDULE,
    EV_RUN_CANCELLED,
    EV_TRIGGER_REJECTED,
    INVALID_TRIGGER,
    NORMAL,
    READY,
    WARNING,
)

log = logging.getLogger("bgjob.runs")


def _names(jobs: list[dict[str, Any]]) -> list[str]:
    return [j["metadata"]["name"] for j in jobs]


def step_cancel(ctx: Pass) -> None:
    token = triggers.pending_cancel(ctx.annotations, ctx.old.last_handled_cancel)
    if token is None:
        return
    stopped = _names(ctx.active_jobs())
    if stopped:
        ctx.plan(CancelRuns(stopped, token))
    ctx.new = ctx.new.model_copy(update={"last_handled_cancel": token})
    ctx.set_retries([])
    dropped = ctx.new.queued
    for entry in dropped:  # queued runs never started: skipped, their waiting Jobs deleted
        queueing.forget_waiting(ctx, entry)
    ctx.set_queue([])
    ctx.count_skipped(len(dropped))
    stopped_backfill = backfilling.cancel(ctx)
    ctx.event(NORMAL, EV_RUN_CANCELLED, f"Cancelled {len(stopped)} active run(s)"
              + (f": {', '.join(stopped)}" if stopped else " (none was active)")
              + (f"; dropped {len(dropped)} queued run(s)" if dropped else "")
              + ("; stopped the backfill" if stopped_backfill else ""))


def step_admit(ctx: Pass) -> None:
    """The CronJob's Jobs come suspended; each is admitted, left waiting, or missed, by
    the same rules as every other run. Jobs of an older operator get the finalizer."""
    spec = ctx.spec
    waiting = [j for j in ctx.jobs.values()
               if accounting.awaiting_admission(j) and not accounting.deleting(j)]
    for job in ctx.jobs.values():
        if (not accounting.has_finalizer(job) and not accounting.awaiting_admission(job)
                and not accounting.finished(job) and not accounting.deleting(job)):
            ctx.plan(AdmitJob(job["metadata"]["name"]))  # a running Job of an older version
    if not waiting or spec is None or not ctx.template_ok:
        return
    deadline = schedruns.admit_deadline(ctx)

    def due(job: dict[str, Any]) -> str:
        ann = job["metadata"].get("annotations") or {}
        return str(ann.get(api.ANN_CRONJOB_SCHEDULED)
                   or job["metadata"].get("creationTimestamp") or "")

    decided = set(ctx.new.accounted)  # missed in an earlier pass, not deleted yet
    ctx.to_delete += [j["metadata"]["name"] for j in waiting
                      if accounting.uid_of(j) in decided]
    queued = {q.job for q in ctx.new.queued}  # waiting in the queue: step_queue starts them
    waiting = [j for j in waiting if accounting.uid_of(j) not in decided
               and j["metadata"]["name"] not in queued]
    manual = [j for j in waiting if (j["metadata"].get("annotations") or {}).get(
        CRONJOB_INSTANTIATE) == "manual"]
    scheduled = sorted((j for j in waiting if j not in manual), key=due)
    scheduled = [j for j in scheduled if not schedruns.skip_at_admission(
        ctx, j, st.parse_time(due(j)) or ctx.now)]  # skip list and active window
    started = max((due(j) for j in ctx.jobs.values() if not accounting.awaiting_admission(j)
                   and api.ANN_CRONJOB_SCHEDULED in (j["metadata"].get("annotations") or {})),
                  default="")
    # Superseded: only the most recent time is ever started (and never one older than a time
    # that already started) — except under Enqueue, where every time waits its turn.
    enqueue = spec.concurrency_policy is ConcurrencyPolicy.ENQUEUE
    while scheduled and not enqueue and (len(scheduled) > 1 or due(scheduled[0]) < started):
        _miss(ctx, scheduled.pop(0), "a newer scheduled run superseded it")
    for job in manual + scheduled:
        is_manual = job in manual
        when = st.parse_time(due(job)) or ctx.now
        if not is_manual and ctx.suspended:
            _miss(ctx, job, "the schedule is suspended")
            continue
        if not is_manual and deadline is not None and (ctx.now - when).total_seconds() > \
                deadline:
            _miss(ctx, job, f"it could not start within {deadline}s")
            continue
        name = job["metadata"]["name"]
        verdict = queueing.verdict(ctx)
        if verdict is Verdict.WAIT:
            if not is_manual and deadline is not None:
                ctx.wake_at(when + timedelta(seconds=deadline + 1))
            continue  # waits for a slot; the end of an active run brings us back
        if verdict in (Verdict.QUEUE, Verdict.SKIP):
            entry = QueuedRun(job=name, trigger="manual" if is_manual else "scheduled",
                              since=st.fmt(ctx.now) or "",
                              scheduled_time=None if is_manual else due(job) or None,
                              waiting_job=True)
            queueing.enqueue(ctx, entry, verdict, f"{entry.trigger.capitalize()} run {name}")
            continue
        if verdict is Verdict.REPLACE:
            ctx.plan(CancelRuns(_names(ctx.active_jobs()), f"replaced-by:{name}"))
        ctx.plan(AdmitJob(name))


def _miss(ctx: Pass, job: dict[str, Any], why: str) -> None:
    """A waiting Job that will not run: counted missed now, deleted after the write."""
    uid = accounting.uid_of(job)
    stats = ctx.new.stats.model_copy(update={"missed": ctx.new.stats.missed + 1})
    ctx.new = ctx.new.model_copy(update={"stats": stats,
                                         "accounted": [*ctx.new.accounted, uid]})
    ctx.to_delete.append(job["metadata"]["name"])
    ctx.event(WARNING, EV_MISSED_SCHEDULE, f"Scheduled run {job['metadata']['name']} "
              f"did not start: {why}")


def step_run_now(ctx: Pass) -> None:
    problem = triggers.trigger_problem(ctx.annotations) or _typed_problem(ctx)
    if problem is not None:
        ctx.trigger_problem = SpecProblem(INVALID_TRIGGER, problem)
    if ctx.spec is None or not ctx.template_ok:
        return  # no template to run; the token waits until the spec is fixed
    token = ctx.annotations.get(api.ANN_RUN_NOW, "")
    job_name = manifests.manual_job_name(ctx.name, token)
    active = ctx.active_jobs()
    decision = triggers.decide_run_now(ctx.annotations, ctx.old.last_handled_run_now,
                                       job_name in ctx.jobs, len(active),
                                       ctx.spec.concurrency_policy)
    if decision.action is Action.NONE:
        before = st.condition(ctx.old, READY)
        if problem is not None and (before is None or (before.reason, before.message)
                                    != (INVALID_TRIGGER, problem)):
            ctx.event(WARNING, INVALID_TRIGGER, problem)  # once: on the way into it
        return
    if decision.action is Action.INVALID or (problem is not None
                                             and decision.action is not Action.ADOPT):
        ctx.handled_run_now(decision.token)  # never runs (nor queues) later by surprise
        ctx.event(WARNING, INVALID_TRIGGER, f"run-now {decision.token!r} not started: "
                  f"{decision.problem or problem}")
        return
    params = decision.params
    if decision.action is Action.ADOPT:
        ctx.handled_run_now(decision.token)
        return
    # Answered once, whatever happens next: a refused run is an event, not a retry loop.
    ctx.handled_run_now(decision.token)
    what = f"Manual run {decision.token!r}"
    if decision.not_before is not None and decision.not_before > ctx.now:
        entry = QueuedRun(job=job_name, trigger="manual", since=st.fmt(ctx.now) or "",
                          not_before=st.fmt(decision.not_before), parameters=params)
        full = len(ctx.new.queued) >= (ctx.spec.queue_limit if ctx.spec.concurrency_policy
                                       is ConcurrencyPolicy.ENQUEUE else api.MAX_QUEUED)
        queueing.enqueue(ctx, entry, Verdict.SKIP if full else Verdict.QUEUE,
                         f"{what} (run-at {st.fmt(decision.not_before)})")
        ctx.wake_at(decision.not_before)
        return
    verdict = queueing.verdict(ctx, force=decision.force)
    if verdict is Verdict.WAIT:
        limit = ctx.spec.run_limit
        why = ("concurrencyPolicy is Forbid" if ctx.spec.concurrency_policy
               is ConcurrencyPolicy.FORBID else f"maxConcurrency is {limit}")
        ctx.event(WARNING, EV_TRIGGER_REJECTED, f"run-now {decision.token!r} not "
                  f"started: {why} and {len(active)} run(s) are active "
                  f"({', '.join(j['metadata']['name'] for j in active)}); set "
                  f"{api.ANN_RUN_FORCE}: \"true\" to run anyway")
        return
    if verdict in (Verdict.QUEUE, Verdict.SKIP):
        entry = QueuedRun(job=job_name, trigger="manual", since=st.fmt(ctx.now) or "",
                          parameters=params)
        queueing.enqueue(ctx, entry, verdict, what)
        return
    if verdict is Verdict.REPLACE:
        ctx.plan(CancelRuns(_names(active), f"replaced-by:{job_name}"))
    ctx.plan(CreateJob(_manual_manifest(ctx, job_name, params),
                       f"manual run {decision.token!r}", due=ctx.run_now_seen))


def _typed_problem(ctx: Pass) -> str | None:
    """A run-now whose effective parameters the parameterSchema refuses (checked on every
    pass while a run-now annotation is set, so Ready says so until the trigger is fixed)."""
    if ctx.spec is None or not ctx.spec.parameter_schema or api.ANN_RUN_NOW not in \
            ctx.annotations:
        return None
    overrides = triggers.parse_parameters(ctx.annotations.get(api.ANN_RUN_PARAMETERS))
    return run_problem(ctx.spec, overrides, triggers.FIELD_PARAMS)


def _manual_manifest(ctx: Pass, job_name: str, params: dict[str, str]) -> dict[str, Any]:
    assert ctx.spec is not None
    return manifests.job_manifest(
        ctx.bj, ctx.spec, job_name, "manual", params=params,
        extra_annotations={ANN_PARAMETERS: json.dumps(params, sort_keys=True)}
        if params else None)


def step_retries(ctx: Pass) -> None:
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
            verdict = queueing.verdict(ctx)
            if verdict is Verdict.WAIT:
                keep.append(pending)  # waits for a slot; the end of an active run brings us
                continue
            if verdict is Verdict.REPLACE:
                ctx.event(NORMAL, EV_RUN_CANCELLED, f"Pending retry of {pending.job} "
                          "dropped: a newer run is active and concurrencyPolicy is Replace")
                continue
            if verdict in (Verdict.QUEUE, Verdict.SKIP):
                queueing.enqueue(ctx, QueuedRun(
                    job=job_name, trigger="retry", since=st.fmt(ctx.now) or "",
                    scheduled_time=pending.scheduled_time, parameters=pending.parameters,
                    attempt=pending.attempt, first_job=root, schedule=pending.schedule),
                    verdict,
                    f"Retry {job_name} of {pending.job}")
                continue
            extra = {ANN_RETRY_OF: root}
            if pending.parameters:
                extra[ANN_PARAMETERS] = json.dumps(pending.parameters, sort_keys=True)
            manifest = manifests.job_manifest(
                ctx.bj, spec, job_name, "retry", attempt=pending.attempt,
                scheduled=st.parse_time(pending.scheduled_time),
                params=pending.parameters, extra_annotations=extra,
                schedule_name=pending.schedule)
            ctx.plan(CreateJob(manifest, f"retry of {pending.job}", _retry_undo(pending),
                               due=due))
        started += 1
    stats = ctx.new.stats.model_copy(update={"retries": ctx.new.stats.retries + started})
    ctx.new = ctx.new.model_copy(update={"stats": stats})
    ctx.set_retries(keep)


def _retry_undo(pending: PendingRetry) -> Callable[[Pass], None]:
    """A retry whose Job could not be created stays pending (and is not counted started)."""
    def undo(ctx: Pass) -> None:
        stats = ctx.new.stats.model_copy(update={"retries": ctx.new.stats.retries - 1})
        ctx.new = ctx.new.model_copy(update={"stats": stats})
        ctx.set_retries([*ctx.new.pending_retries, pending])
    return undo


def step_schedule(ctx: Pass) -> None:
    if ctx.spec is None:
        return
    for entry in schedruns.entries(ctx):
        _time_schedule(ctx, entry)


def _time_schedule(ctx: Pass, e: schedruns.Entry) -> None:
    """One schedule in force (spec.schedule, or one entry of spec.schedules)."""
    c = e.compiled
    if c.mode is schedule.Mode.OPERATOR:
        last = schedruns.last_scheduled(ctx, e)
        floor = schedruns.floor(ctx, e)
    elif ctx.cronjob is not None and accounting.controlled_by(ctx.cronjob, ctx.uid):
        last = st.parse_time((ctx.cronjob.get("status") or {}).get("lastScheduleTime"))
        floor = st.parse_time(ctx.cronjob["metadata"].get("creationTimestamp")) or ctx.now
    else:
        return
    plan = timing.plan(c, last_scheduled=last, floor=floor,
                       missed_through=schedruns.missed_through(ctx, e), now=ctx.now,
                       deadline_seconds=e.deadline_seconds, suspended=ctx.suspended,
                       skipped_through=schedruns.skipped_through(ctx, e))
    started = plan.run is not None and ctx.template_ok and _start_scheduled(
        ctx, plan.run, e)
    if c.mode is schedule.Mode.OPERATOR:  # CronJob mode counts skips at admission
        schedruns.count_skipped(ctx, e, plan.skipped)
    if started and plan.more:
        ctx.wake_in(0)  # catchUp All: the next late time, when the policy lets it start
    if plan.missed:
        stats = ctx.new.stats.model_copy(
            update={"missed": ctx.new.stats.missed + len(plan.missed)})
        ctx.new = ctx.new.model_copy(update={"stats": stats})
        schedruns.counted_missed(ctx, e, max(plan.missed))
        shown = ", ".join(st.fmt(t) or "" for t in plan.missed[-3:])
        more = f" and {len(plan.missed) - 3} earlier" if len(plan.missed) > 3 else ""
        of = f" of schedule {e.name}" if e.name else ""
        ctx.event(WARNING, EV_MISSED_SCHEDULE, f"{len(plan.missed)} scheduled run(s){of} did "
                  f"not start in time and were skipped: {shown}{more}")
    if plan.overdue is not None and not started:
        through = schedruns.missed_through(ctx, e)
        missed_for_good = plan.overdue in plan.missed or (
            through is not None and plan.overdue <= through)
        if ctx.overdue is None or plan.overdue < ctx.overdue[0]:
            ctx.overdue = (plan.overdue, missed_for_good)
    ctx.wake_at(plan.wake)
    if plan.run is not None and not started:
        grace = e.deadline_seconds
        if grace is not None:  # blocked: count it missed once its deadline is over
            ctx.wake_at(plan.run + timedelta(seconds=grace + 1))


def _start_scheduled(ctx: Pass, due: datetime, e: schedruns.Entry) -> bool:
    """Start the Operator-timed run for ``due`` under the concurrency policy."""
    assert ctx.spec is not None
    job_name = schedruns.job_name(ctx, e, due)
    before = st.fmt(schedruns.last_scheduled(ctx, e))
    queued = any(q.job == job_name for q in ctx.new.queued)
    if job_name not in ctx.jobs and not queued:
        verdict = queueing.verdict(ctx)
        if verdict is Verdict.WAIT:
            log.info("%s/%s: run due %s waits: no free slot (%d active)", ctx.ns, ctx.name,
                     st.fmt(due), len(ctx.active_jobs()))
            return False
        schedruns.set_last_scheduled(ctx, e, st.fmt(due))
        if verdict in (Verdict.QUEUE, Verdict.SKIP):
            entry = QueuedRun(job=job_name, trigger="scheduled", since=st.fmt(ctx.now) or "",
                              scheduled_time=st.fmt(due), parameters=e.parameters,
                              schedule=e.name or None)
            queueing.enqueue(ctx, entry, verdict, f"Scheduled run due {st.fmt(due)}")
            return True
        if verdict is Verdict.REPLACE:
            ctx.plan(CancelRuns(_names(ctx.active_jobs()), f"replaced-by:{job_name}"))
        manifest = schedruns.job_manifest(ctx, e, job_name, due)

        def undo(ctx: Pass) -> None:  # not created: the time stays unmet, tried again
            schedruns.set_last_scheduled(ctx, e, before)

        ctx.plan(CreateJob(manifest, f"scheduled run due {st.fmt(due)}", undo, due=due))
    schedruns.set_last_scheduled(ctx, e, st.fmt(due))
    return True


def step_held(ctx: Pass) -> None:
    """A run admitted by us but held suspended by an admission system (Kueue) is queued, not
    running: no timeout runs meanwhile (the Job controller resets activeDeadlineSeconds on
    resume), and once it has waited longer than ``startingDeadlineSeconds`` the BackgroundJob
    is ``Overdue`` with reason ``Queued``."""
    deadline = ctx.schedule.starting_deadline_seconds if ctx.schedule else None
    if deadline is None:
        return
    for job in ctx.active_jobs():
        if not (job.get("spec") or {}).get("suspend"):
            continue
        since = st.parse_time(job["metadata"].get("creationTimestamp")) or ctx.now
        late = since + timedelta(seconds=deadline)
        if late <= ctx.now:
            if ctx.held is None or since < ctx.held[1]:
                ctx.held = (job["metadata"]["name"], since)
        else:
            ctx.wake_at(late + timedelta(seconds=1))


def _retry_root(job: dict[str, Any] | None) -> str | None:
    """The first attempt of a retry Job (pending retries written before the second wave
    carry only the failed Job's name)."""
    ann = ((job or {}).get("metadata") or {}).get("annotations") or {}
    return ann.get(ANN_RETRY_OF)
