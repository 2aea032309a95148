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

from bgjob import accounting, api, manifests, schedule, timing, triggers
from bgjob import status as st
from bgjob.api import ConcurrencyPolicy, PendingRetry
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
    ctx.event(NORMAL, EV_RUN_CANCELLED, f"Cancelled {len(stopped)} active run(s)"
              + (f": {', '.join(stopped)}" if stopped else " (none was active)"))


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
    deadline = ctx.schedule.starting_deadline_seconds if ctx.schedule else None

    def due(job: dict[str, Any]) -> str:
        ann = job["metadata"].get("annotations") or {}
        return str(ann.get(api.ANN_CRONJOB_SCHEDULED)
                   or job["metadata"].get("creationTimestamp") or "")

    decided = set(ctx.new.accounted)  # missed in an earlier pass, not deleted yet
    ctx.to_delete += [j["metadata"]["name"] for j in waiting
                      if accounting.uid_of(j) in decided]
    waiting = [j for j in waiting if accounting.uid_of(j) not in decided]
    manual = [j for j in waiting if (j["metadata"].get("annotations") or {}).get(
        CRONJOB_INSTANTIATE) == "manual"]
    scheduled = sorted((j for j in waiting if j not in manual), key=due)
    started = max((due(j) for j in ctx.jobs.values() if not accounting.awaiting_admission(j)
                   and api.ANN_CRONJOB_SCHEDULED in (j["metadata"].get("annotations") or {})),
                  default="")
    # Superseded: only the most recent time is ever started (and never one older than a time
    # that already started).
    while scheduled and (len(scheduled) > 1 or due(scheduled[0]) < started):
        _miss(ctx, scheduled.pop(0), "a newer scheduled run superseded it")
    candidates = manual + scheduled
    for job in candidates:
        is_manual = job in manual
        when = st.parse_time(due(job)) or ctx.now
        if not is_manual and ctx.suspended:
            _miss(ctx, job, "the schedule is suspended")
            continue
        if not is_manual and deadline is not None and (ctx.now - when).total_seconds() > \
                deadline:
            _miss(ctx, job, f"it could not start within {deadline}s")
            continue
        active = ctx.active_jobs()
        policy = spec.concurrency_policy
        if active and policy is ConcurrencyPolicy.FORBID:
            if not is_manual and deadline is not None:
                ctx.wake_at(when + timedelta(seconds=deadline + 1))
            continue  # waits for the active run; its end brings us back
        if active and policy is ConcurrencyPolicy.REPLACE:
            ctx.plan(CancelRuns(_names(active), f"replaced-by:{job['metadata']['name']}"))
        ctx.plan(AdmitJob(job["metadata"]["name"]))


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
    problem = triggers.trigger_problem(ctx.annotations)
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
    if decision.action is Action.INVALID:
        ctx.handled_run_now(decision.token)  # never runs later by surprise
        ctx.event(WARNING, INVALID_TRIGGER, f"run-now {decision.token!r} not started: "
                  f"{decision.problem}")
        return
    params = decision.params
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
        ctx.plan(CancelRuns(_names(active), f"replaced-by:{job_name}"))
    manifest = manifests.job_manifest(
        ctx.bj, ctx.spec, job_name, "manual", params=params,
        extra_annotations={ANN_PARAMETERS: json.dumps(params, sort_keys=True)}
        if params else None)
    # Answered once, whatever the API says: a refused run is an event, not a retry loop.
    ctx.handled_run_now(decision.token)
    ctx.plan(CreateJob(manifest, f"manual run {decision.token!r}", due=ctx.run_now_seen))


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
    c, sched = ctx.compiled, ctx.schedule
    if c is None or sched is None or ctx.spec is None:
        return
    if c.mode is schedule.Mode.OPERATOR:
        last = st.parse_time(ctx.new.last_schedule_time)
        floor = st.parse_time(ctx.bj["metadata"].get("creationTimestamp")) or ctx.now
    elif ctx.cronjob is not None and accounting.controlled_by(ctx.cronjob, ctx.uid):
        last = st.parse_time((ctx.cronjob.get("status") or {}).get("lastScheduleTime"))
        floor = st.parse_time(ctx.cronjob["metadata"].get("creationTimestamp")) or ctx.now
    else:
        return
    plan = timing.plan(c, last_scheduled=last, floor=floor,
                       missed_through=ctx.missed_through, now=ctx.now,
                       deadline_seconds=sched.starting_deadline_seconds,
                       suspended=ctx.suspended)
    started = plan.run is not None and ctx.template_ok and _start_scheduled(
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


def _start_scheduled(ctx: Pass, due: datetime) -> bool:
    """Start the Operator-timed run for ``due`` under the concurrency policy."""
    assert ctx.spec is not None
    job_name = manifests.scheduled_job_name(ctx.name, due)
    before = ctx.new.last_schedule_time
    if job_name not in ctx.jobs:
        active = ctx.active_jobs()
        policy = ctx.spec.concurrency_policy
        if active and policy is ConcurrencyPolicy.FORBID:
            log.info("%s/%s: run due %s waits: Forbid and %d active", ctx.ns, ctx.name,
                     st.fmt(due), len(active))
            return False
        if active and policy is ConcurrencyPolicy.REPLACE:
            ctx.plan(CancelRuns(_names(active), f"replaced-by:{job_name}"))
        manifest = manifests.job_manifest(ctx.bj, ctx.spec, job_name, "scheduled",
                                          scheduled=due)

        def undo(ctx: Pass) -> None:  # not created: the time stays unmet, tried again
            ctx.new = ctx.new.model_copy(update={"last_schedule_time": before})

        ctx.plan(CreateJob(manifest, f"scheduled run due {st.fmt(due)}", undo, due=due))
    ctx.new = ctx.new.model_copy(update={"last_schedule_time": st.fmt(due)})
    return True


def _retry_root(job: dict[str, Any] | None) -> str | None:
    """The first attempt of a retry Job (pending retries written before the second wave
    carry only the failed Job's name)."""
    ann = ((job or {}).get("metadata") or {}).get("annotations") or {}
    return ann.get(ANN_RETRY_OF)
