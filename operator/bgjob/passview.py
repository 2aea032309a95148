"""Step 10 of a pass: what status says about the schedule and the conditions, from what the
pass decided. Pure: reads the pass, returns the new status."""

from __future__ import annotations

from typing import Any

from bgjob import retry, schedruns, schedule
from bgjob import status as st
from bgjob.api import BackgroundJobStatus, ScheduleStatus
from bgjob.passctx import Pass
from bgjob.vocab import (
    ANN_RESUME,
    EXPIRED,
    FAILING,
    INVALID_SCHEDULE,
    INVALID_SPEC,
    OVERDUE,
    QUEUED_REASON,
    READY,
    SUSPENDED,
    WARNING,
)


def schedule_status(ctx: Pass) -> BackgroundJobStatus:
    """The schedule in force: the spec's, or after a bad edit the last good one (its next run
    times are what will really happen)."""
    new, c, sched = ctx.new, ctx.compiled, ctx.schedule
    if ctx.spec is None:
        return new  # unreadable spec: keep describing what still runs
    if ctx.spec.schedules:
        return _entries_status(ctx)
    if c is None or sched is None:
        if ctx.problem is not None and ctx.problem.reason in (INVALID_SPEC, INVALID_SCHEDULE):
            return new
        return new.model_copy(update={"schedule": None, "cron_job": None, "schedules": None})
    nxt = [] if ctx.suspended else schedule.next_run_times(c, ctx.now, c.anchor or ctx.now)
    if c.at is not None and new.last_schedule_time is not None:
        nxt = []  # a one-off that has run
    update: dict[str, Any] = {"schedule": ScheduleStatus(
        kind=c.kind, cron=c.cron, time_zone=c.time_zone, description=c.description,
        mode=c.mode.value, next_run_times=[t for t in (st.fmt(x) for x in nxt) if t],
        missed_through=st.fmt(ctx.missed_through),
        skipped_through=st.fmt(ctx.skipped_through),
        in_force=sched.model_dump(by_alias=True, exclude_none=True, mode="json"),
    )}
    update["schedules"] = None
    is_cron = c.mode is schedule.Mode.CRONJOB
    cj_name = str(((ctx.cronjob or {}).get("metadata") or {}).get("name", ""))
    update["cron_job"] = (cj_name or None) if is_cron else None
    last = ((ctx.cronjob or {}).get("status") or {}).get("lastScheduleTime")
    if is_cron and last and (new.last_schedule_time or "") < last:
        update["last_schedule_time"] = last
    return new.model_copy(update=update)


def _entries_status(ctx: Pass) -> BackgroundJobStatus:
    """spec.schedules: one status entry each (in spec order), and status.schedule sums them
    up: a short description for ``kubectl get``, the merged next three run times."""
    new, rows, merged = ctx.new, [], []
    specs = (ctx.spec.schedules if ctx.spec is not None else None) or []
    for e in ctx.entries:
        c = e.compiled
        state = schedruns.state(ctx, e)
        nxt = [] if ctx.suspended else schedule.next_run_times(c, ctx.now, c.anchor or ctx.now)
        if c.at is not None and state.last_schedule_time is not None:
            nxt = []
        merged += nxt
        rows.append(state.model_copy(update={
            "kind": c.kind, "cron": c.cron, "time_zone": c.time_zone,
            "description": c.description, "mode": c.mode.value, "cron_job": None,
            "next_run_times": [t for t in (st.fmt(x) for x in nxt) if t],
            "in_force": e.in_force}))
    names = [r.name for r in rows]
    for name, old in ctx.entry_state.items():  # a bad entry not in force keeps its row
        if name not in names and any(s.name == name for s in specs):
            rows.append(old)
    last = max(filter(None, [new.last_schedule_time, *(r.last_schedule_time for r in rows)]),
               default=None)
    zones = sorted({r.time_zone for r in rows})
    summary = ScheduleStatus(
        kind="schedules", time_zone=zones[0] if len(zones) == 1 else ", ".join(zones),
        description=f"{len(rows)} schedules: {', '.join(r.name for r in rows)}",
        mode=schedule.Mode.OPERATOR.value,
        next_run_times=[t for t in (st.fmt(x) for x in sorted(merged)[:schedule.NEXT_RUN_COUNT])
                        if t])
    return new.model_copy(update={"schedule": summary, "schedules": rows, "cron_job": None,
                                  "last_schedule_time": last})


def conditions(ctx: Pass) -> BackgroundJobStatus:
    new, spec, now, gen = ctx.new, ctx.spec, ctx.now, ctx.generation
    conds = list(new.conditions)
    problem = ctx.problem or ctx.run_problem or ctx.trigger_problem
    if problem is not None:
        message = problem.message
        if ctx.problem is not None and ctx.schedule is not None and ctx.compiled is not None \
                and ctx.problem.reason == INVALID_SCHEDULE:
            message += f"; the last valid schedule ({ctx.compiled.description}) stays in force"
        before = st.condition(ctx.old, READY)
        if (before is None or before.reason != problem.reason
                or before.message != message) and problem is ctx.problem:
            ctx.event(WARNING, problem.reason, message)
        conds = st.set_condition(conds, READY, False, problem.reason, message, gen, now)
    elif schedruns.expired(ctx):
        conds = st.set_condition(conds, READY, True, EXPIRED, "activeUntil has passed: no "
                                 "scheduled run is due any more; runs only when triggered",
                                 gen, now)
    else:
        scheduled = spec is not None and (spec.schedule is not None or bool(spec.schedules))
        conds = st.set_condition(
            conds, READY, True, "Scheduled" if scheduled else "ManualOnly",
            "the schedule is in place" if scheduled else "runs only when triggered", gen, now)
    if spec is not None and ctx.auto_suspended:
        conds = st.set_condition(
            conds, SUSPENDED, True, "AutoSuspended",
            f"suspended after {new.stats.consecutive_failures} failed runs in a row; "
            f"annotate {ANN_RESUME}=<new token> or set spec.suspend to resume", gen, now)
    elif spec is not None:
        conds = st.set_condition(conds, SUSPENDED, spec.suspend,
                                 "Suspended" if spec.suspend else "Active",
                                 "spec.suspend is true" if spec.suspend else "", gen, now)
    conds = st.set_condition(conds, FAILING, *_failing(ctx), gen, now)
    if ctx.overdue is not None:
        due, gone = ctx.overdue
        conds = st.set_condition(
            conds, OVERDUE, True, "MissedSchedule" if gone else "NotStarted",
            f"the run due at {st.fmt(due)} did not start"
            + (" within startingDeadlineSeconds and was skipped" if gone else " yet"),
            gen, now)
    elif ctx.held is not None:
        job, since = ctx.held
        deadline = ctx.schedule.starting_deadline_seconds if ctx.schedule else 0
        conds = st.set_condition(
            conds, OVERDUE, True, QUEUED_REASON,
            f"run {job} has waited queued (suspended by its admission system) since "
            f"{st.fmt(since)}, longer than startingDeadlineSeconds ({deadline}s)", gen, now)
    elif spec is not None and ctx.suspended:
        conds = st.set_condition(conds, OVERDUE, False, "Suspended",
                                 "nothing is due while suspended", gen, now)
    elif problem is None or st.condition(new, OVERDUE) is None:
        conds = st.set_condition(conds, OVERDUE, False, "OnTime", "", gen, now)
    return new.model_copy(update={"conditions": conds, "observed_generation": gen})


def _failing(ctx: Pass) -> tuple[bool, str, str]:
    new = ctx.new
    failing, reason, message = st.failing_condition(new)
    if not failing or not new.runs:
        return failing, reason, message
    verdict = retry.classify(new.runs[0], ctx.retry_policy)
    retrying = [j["metadata"]["name"] for j in ctx.active_jobs() if st.trigger_of(j) == "retry"]
    if new.retry is not None:
        return True, "RetryPending", (f"{message}; attempt {new.retry.attempt} starts at "
                                      f"{new.retry.next_retry_time}")
    if retrying:  # the retry started in this very pass: not final yet
        return True, "RetryRunning", f"{message}; retry {retrying[0]} is running"
    if ctx.retry_policy.limit > 0 or verdict is retry.Verdict.NON_RETRYABLE:
        return True, "RetriesExhausted", message
    return failing, reason, message
