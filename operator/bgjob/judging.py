"""Step 3 of a pass: count what ended, judge each ended attempt (a retry of its own, or the
end of its run), and autoSuspend. Decisions go into the pass; nothing here writes."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from bgjob import backfilling, retry
from bgjob import status as st
from bgjob.api import PendingRetry, Retry
from bgjob.passctx import Pass
from bgjob.vocab import (
    ANN_PARAMETERS,
    ANN_RESUME,
    ANN_RETRY_OF,
    EV_AUTO_SUSPENDED,
    EV_RESUMED,
    EV_RETRIES_EXHAUSTED,
    EV_RETRY_SCHEDULED,
    EV_RUN_FAILED,
    EV_RUN_STARTED,
    EV_RUN_SUCCEEDED,
    NORMAL,
    WARNING,
)


def step_account(ctx: Pass) -> None:
    records = ctx.spec.history.run_records if ctx.spec else max(len(ctx.old.runs), 1)
    policy = ctx.retry_policy
    ctx.new, fresh = st.fold_runs(ctx.new, ctx.jobs.values(), records,
                                  lambda r: retry.is_final_failure(r, policy))
    _run_events(ctx, fresh)
    for rec in fresh:
        _judge(ctx, rec, policy)
    backfilling.count(ctx, fresh)
    step_auto_suspend(ctx)


def _run_events(ctx: Pass, fresh: list[Any]) -> None:
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


def _judge(ctx: Pass, rec: Any, policy: Retry) -> None:
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
        if not isinstance(params, dict):  # a hand-edited annotation: run without overrides
            params = {}
        done = st.parse_time(rec.completion_time) or ctx.now
        wait = retry.delay(policy.backoff, rec.attempt)
        at = done + timedelta(seconds=wait)
        pending = PendingRetry(attempt=rec.attempt + 1, next_retry_time=st.fmt(at) or "",
                               job=rec.job, first_job=ann.get(ANN_RETRY_OF) or rec.job,
                               scheduled_time=rec.scheduled_time, schedule=rec.schedule,
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


def step_auto_suspend(ctx: Pass) -> None:
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
