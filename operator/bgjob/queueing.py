"""The queue of a pass (``status.queued``): runs waiting for a slot under ``Enqueue`` or for
their time (``run-at``), started first in, first out. Each entry's Job name is fixed when it
joins, and it leaves the queue in the same status write that records its start, so a pass
repeated after a crash finds the Job and never starts a run twice."""

from __future__ import annotations

import json
import logging

from bgjob import accounting, gate, manifests
from bgjob import status as st
from bgjob.api import QueuedRun
from bgjob.gate import Verdict
from bgjob.passctx import AdmitJob, CreateJob, Pass
from bgjob.vocab import (
    ANN_PARAMETERS,
    ANN_RETRY_OF,
    EV_RUN_QUEUED,
    EV_RUN_SKIPPED,
    NORMAL,
    WARNING,
)

log = logging.getLogger("bgjob.queueing")


def forget_waiting(ctx: Pass, entry: QueuedRun) -> None:
    """A queued run that will not happen: its suspended Job (if the CronJob made one) is
    marked decided in ``status.accounted`` and deleted after the write."""
    job = ctx.jobs.get(entry.job)
    if entry.waiting_job and job is not None and accounting.awaiting_admission(job):
        ctx.new = ctx.new.model_copy(
            update={"accounted": [*ctx.new.accounted, accounting.uid_of(job)]})
        ctx.to_delete.append(entry.job)


def step_queue(ctx: Pass) -> None:
    """Queued runs start first in, first out, while slots are free. A run queued for later
    (run-at) waits aside until its time and holds nobody up."""
    spec = ctx.spec
    if spec is None or not ctx.template_ok or not ctx.new.queued:
        return
    keep: list[QueuedRun] = []
    full = False
    for entry in ctx.new.queued:
        not_before = st.parse_time(entry.not_before)
        if not_before is not None and not_before > ctx.now:
            ctx.wake_at(not_before)
            keep.append(entry)
            continue
        job = ctx.jobs.get(entry.job)
        if job is not None and not accounting.awaiting_admission(job):
            if entry.trigger == "retry":  # started by a pass that did not get to record it
                _add_retries(ctx, 1)
            continue
        if entry.waiting_job and job is None:
            log.info("%s/%s: queued Job %s is gone; dropped from the queue", ctx.ns,
                     ctx.name, entry.job)
            continue
        room = gate.free_slots(spec.run_limit, len(ctx.active_jobs()))
        if full or room == 0:
            full = True
            keep.append(entry)
            continue
        _start_queued(ctx, entry)
    ctx.set_queue(keep)


def _start_queued(ctx: Pass, entry: QueuedRun) -> None:
    assert ctx.spec is not None
    if entry.waiting_job:
        ctx.plan(AdmitJob(entry.job))
        return
    extra: dict[str, str] = {}
    if entry.first_job:
        extra[ANN_RETRY_OF] = entry.first_job
    if entry.parameters:
        extra[ANN_PARAMETERS] = json.dumps(entry.parameters, sort_keys=True)
    manifest = manifests.job_manifest(
        ctx.bj, ctx.spec, entry.job, entry.trigger, attempt=entry.attempt,
        scheduled=st.parse_time(entry.scheduled_time), params=entry.parameters,
        extra_annotations=extra or None, schedule_name=entry.schedule)
    retry = entry.trigger == "retry"
    if retry:
        _add_retries(ctx, 1)

    def undo(ctx: Pass) -> None:  # not created: back in the queue, in its place
        if retry:
            _add_retries(ctx, -1)
        ctx.set_queue([*ctx.new.queued, entry])

    # Due (for bgjob_run_start_delay_seconds, so the wait in the queue shows): a run-at time,
    # a scheduled run's time, else when the run joined the queue.
    due = st.parse_time(entry.not_before or (entry.scheduled_time if entry.trigger
                                             == "scheduled" else entry.since))
    ctx.plan(CreateJob(manifest, f"queued {entry.trigger} run {entry.job}", undo, due=due))


def _add_retries(ctx: Pass, n: int) -> None:
    stats = ctx.new.stats.model_copy(update={"retries": ctx.new.stats.retries + n})
    ctx.new = ctx.new.model_copy(update={"stats": stats})


def verdict(ctx: Pass, force: bool = False) -> Verdict:
    """The gate's answer for one new run now."""
    assert ctx.spec is not None
    return gate.decide(ctx.spec.concurrency_policy, ctx.spec.run_limit,
                       len(ctx.active_jobs()), queued_ahead=ctx.queued_ahead(),
                       queue_limit=ctx.spec.queue_limit, force=force)


def enqueue(ctx: Pass, entry: QueuedRun, verdict: Verdict, what: str) -> None:
    """QUEUE: the run joins the queue; SKIP: the queue is full, the run does not happen."""
    if verdict is Verdict.QUEUE:
        ctx.set_queue([*ctx.new.queued, entry])
        ctx.event(NORMAL, EV_RUN_QUEUED, f"{what} queued ({len(ctx.new.queued)} waiting): "
                  f"{len(ctx.active_jobs())} run(s) active, the limit is "
                  f"{ctx.spec.run_limit if ctx.spec else 1}")
        return
    forget_waiting(ctx, entry)
    ctx.count_skipped()
    ctx.event(WARNING, EV_RUN_SKIPPED, f"{what} skipped: the queue is full "
              f"(maxQueued {ctx.spec.queue_limit if ctx.spec else 0})")
