"""The backfill steps of a pass: a new ``bgjob.dev/backfill`` value starts a backfill, each pass
starts its next due time when the gate has room, and ended runs are counted in its progress.
No I/O: runs are started as ``CreateJob`` actions like every other run."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bgjob import backfill, gate, manifests, queueing, retry, schedruns, timing
from bgjob import status as st
from bgjob.api import BackfillStatus, ConcurrencyPolicy, RunRecord
from bgjob.backfill import BackfillError
from bgjob.passctx import CreateJob, Pass, SpecProblem
from bgjob.vocab import (
    ANN_BACKFILL,
    ANN_PARAMETERS,
    ANN_RETRY_OF,
    EV_BACKFILL_COMPLETED,
    EV_BACKFILL_STARTED,
    INVALID_TRIGGER,
    NORMAL,
    WARNING,
)

INVALID = "Invalid"


def _between(ctx: Pass) -> Any:
    """Due times of the schedules in force in [since, until), skip rules and active windows
    applied (``timing.due_times``), each with its spec.schedules entry ("" for
    spec.schedule)."""
    compiled = [e.compiled for e in schedruns.entries(ctx)]

    def between(since: datetime, until: datetime, limit: int) -> list[backfill.Due]:
        return timing.due_times(compiled, since, until, limit)

    return between


def _entries(ctx: Pass) -> list[str]:
    return [e.name for e in schedruns.entries(ctx) if e.name]


def _set(ctx: Pass, bf: BackfillStatus | None) -> None:
    ctx.new = ctx.new.model_copy(update={"backfill": bf})


def step_begin(ctx: Pass) -> None:
    """A new annotation value starts a backfill (replacing one in progress); a bad one is
    ``InvalidTrigger`` naming the annotation, handled once, and nothing runs."""
    text = (ctx.annotations.get(ANN_BACKFILL) or "").strip()
    bf = ctx.new.backfill
    if text and text == ctx.new.last_handled_backfill:
        if bf is not None and bf.phase == INVALID:  # still the bad value: Ready stays False
            ctx.trigger_problem = ctx.trigger_problem or SpecProblem(INVALID_TRIGGER,
                                                                     bf.message)
        return
    if not text or ctx.spec is None or not ctx.template_ok:
        return  # nothing new, or no template to run: the value waits until the spec is fixed
    ctx.new = ctx.new.model_copy(update={"last_handled_backfill": text})
    try:
        req = backfill.parse(text)
        if not schedruns.entries(ctx):
            raise BackfillError(f"{backfill.FIELD}: the BackgroundJob has no schedule to "
                                "backfill")
        times = backfill.due_times(_between(ctx), req)
    except BackfillError as exc:
        _set(ctx, BackfillStatus.model_validate({
            "from": "", "until": "", "id": "", "phase": INVALID, "message": str(exc)}))
        ctx.trigger_problem = ctx.trigger_problem or SpecProblem(INVALID_TRIGGER, str(exc))
        ctx.event(WARNING, INVALID_TRIGGER, f"backfill not started: {exc}")
        return
    if bf is not None and bf.phase == backfill.RUNNING:
        ctx.event(NORMAL, EV_BACKFILL_COMPLETED, f"Backfill {bf.id} stopped after "
                  f"{bf.started} of {bf.total} runs: a new backfill replaces it")
    new = BackfillStatus.model_validate({
        "from": st.fmt(req.start), "until": st.fmt(req.until), "id": req.ident,
        "total": len(times), "next": st.fmt(times[0][0]) if times else None,
        "nextSchedule": times[0][1] or None if times else None,
        "phase": backfill.RUNNING if times else backfill.COMPLETED,
        "completionTime": None if times else st.fmt(ctx.now)})
    _set(ctx, new)
    ctx.event(NORMAL, EV_BACKFILL_STARTED, f"Backfill {req.ident} of {len(times)} run(s) due "
              f"from {st.fmt(req.start)} until {st.fmt(req.until)} started")
    if not times:
        ctx.event(NORMAL, EV_BACKFILL_COMPLETED, f"Backfill {req.ident} completed: the "
                  "schedule has no due time in the range")


def _root(job: dict[str, Any]) -> str:
    ann = job["metadata"].get("annotations") or {}
    return str(ann.get(ANN_RETRY_OF) or job["metadata"]["name"])


def _cap(ctx: Pass) -> int:
    """Backfill runs never overlap each other, except under Allow with maxConcurrency."""
    spec = ctx.spec
    assert spec is not None
    if spec.concurrency_policy is ConcurrencyPolicy.ALLOW and spec.max_concurrency:
        return spec.max_concurrency
    return 1


def step_advance(ctx: Pass) -> None:
    """Start the next due times while the gate has room; complete once all have ended."""
    bf, spec = ctx.new.backfill, ctx.spec
    entries = {e.name: e for e in schedruns.entries(ctx)}
    if bf is None or bf.phase != backfill.RUNNING or spec is None or not ctx.template_ok \
            or not entries:
        return
    until = st.parse_time(bf.until)
    assert until is not None
    names = _entries(ctx)
    while bf.next is not None:
        due = st.parse_time(bf.next)
        assert due is not None
        entry = bf.next_schedule or ""
        name = backfill.job_name(ctx.name, bf.id, due, entry)
        if name not in ctx.jobs:
            mine = [j for j in ctx.active_jobs()
                    if backfill.belongs(ctx.name, bf.id, _root(j), names)]
            verdict = queueing.verdict(ctx)
            if len(mine) >= _cap(ctx) or verdict is not gate.Verdict.START:
                break  # waits: the end of a run brings the next pass
            params = entries[entry].parameters if entry in entries else {}
            manifest = manifests.job_manifest(
                ctx.bj, spec, name, "backfill", scheduled=due, params=params or None,
                extra_annotations={ANN_PARAMETERS: json.dumps(params, sort_keys=True)}
                if params else None, schedule_name=entry or None)
            ctx.plan(CreateJob(manifest, f"backfill run due {bf.next}", _undo(bf)))
        times = _between(ctx)(due, until, len(entries) + 1)
        nxt = backfill.following(times, (due, entry))
        bf = bf.model_copy(update={"started": bf.started + 1,
                                   "next": st.fmt(nxt[0]) if nxt else None,
                                   "next_schedule": (nxt[1] or None) if nxt else None})
        _set(ctx, bf)
    if bf.next is None and not _in_flight(ctx, bf):
        _set(ctx, bf.model_copy(update={"phase": backfill.COMPLETED,
                                        "completion_time": st.fmt(ctx.now)}))
        ctx.event(NORMAL, EV_BACKFILL_COMPLETED, f"Backfill {bf.id} completed: {bf.total} "
                  f"run(s), {bf.succeeded} succeeded, {bf.failed} failed")


def _undo(before: BackfillStatus) -> Any:
    def undo(ctx: Pass) -> None:  # not created: the time is tried again
        _set(ctx, before)
    return undo


def _in_flight(ctx: Pass, bf: BackfillStatus) -> bool:
    """A run of the backfill still active, or a retry of one pending or queued."""
    names = _entries(ctx)
    return (any(backfill.belongs(ctx.name, bf.id, _root(j), names) for j in ctx.active_jobs())
            or any(backfill.belongs(ctx.name, bf.id, p.first_job or p.job, names)
                   for p in ctx.new.pending_retries)
            or any(backfill.belongs(ctx.name, bf.id, q.first_job or q.job, names)
                   for q in ctx.new.queued))


def count(ctx: Pass, fresh: list[RunRecord]) -> None:
    """Runs of the backfill that just ended: a success, or a failure no retry follows."""
    bf = ctx.new.backfill
    if bf is None or bf.phase != backfill.RUNNING:
        return
    ok = bad = 0
    for rec in fresh:
        job = ctx.jobs.get(rec.job)
        root = _root(job) if job is not None else rec.job
        if not backfill.belongs(ctx.name, bf.id, root, _entries(ctx)):
            continue
        if rec.result == st.SUCCEEDED:
            ok += 1
        elif retry.is_final_failure(rec, ctx.retry_policy):
            bad += 1
    if ok or bad:
        _set(ctx, bf.model_copy(update={"succeeded": bf.succeeded + ok,
                                        "failed": bf.failed + bad}))


def cancel(ctx: Pass) -> bool:
    """A cancel token stops a running backfill: no further time starts."""
    bf = ctx.new.backfill
    if bf is None or bf.phase != backfill.RUNNING:
        return False
    _set(ctx, bf.model_copy(update={"phase": backfill.CANCELLED, "next": None,
                                    "next_schedule": None,
                                    "completion_time": st.fmt(ctx.now)}))
    return True
