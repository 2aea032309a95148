"""Step 10 of a pass: what status says about the schedule and the conditions, from what the
pass decided. Pure: reads the pass, returns the new status."""

from __future__ import annotations

from typing import Any

from bgjob import retry, schedule
from bgjob import status as st
from bgjob.api import BackgroundJobStatus, ScheduleStatus
from bgjob.passctx import Pass
from bgjob.vocab import (
    ANN_RESUME,
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
    if c is None or sched is None:
        if ctx.problem is not None and ctx.problem.reason in (INVALID_SPEC, INVALID_SCHEDULE):
            return new
        return new.model_copy(update={"schedule": None, "cron_job": None})
    nxt = [] if ctx.suspended else schedule.next_run_times(c, ctx.now, c.anchor or ctx.now)
    if c.at is not None and new.last_schedule_time is not None:
        nxt = []  # a one-off that has run
    update: dict[str, Any] = {"schedule": ScheduleStatus(
        kind=c.kind, cron=c.cron, time_zone=c.time_zone, description=c.description,
        mode=c.mode.value, next_run_times=[t for t in (st.fmt(x) for x in nxt) if t],
        missed_through=st.fmt(ctx.missed_through),
        in_force=sched.model_dump(by_alias=True, exclude_none=True, mode="json"),
    )}
    is_cron = c.mode is schedule.Mode.CRONJOB
    cj_name = str(((ctx.cronjob or {}).get("metadata") or {}).get("name", ""))
    update["cron_job"] = (cj_name or None) if is_cron else None
    last = ((ctx.cronjob or {}).get("status") or {}).get("lastScheduleTime")
    if is_cron and last and (new.last_schedule_time or "") < last:
        update["last_schedule_time"] = last
    return new.model_copy(update=update)


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
    else:
        scheduled = spec is not None and spec.schedule is not None
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
