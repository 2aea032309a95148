"""The concurrency gate: may a run start now? One pure rule for every way a run starts
(the CronJob's Jobs, the operator's timing, run-now, retries, the queue, backfill), so
``concurrencyPolicy`` and ``maxConcurrency`` hold across all of them."""

from __future__ import annotations

from enum import StrEnum

from bgjob.api import ConcurrencyPolicy


class Verdict(StrEnum):
    START = "Start"        # a slot is free
    REPLACE = "Replace"    # cancel the active runs, then start (Replace)
    WAIT = "Wait"          # no slot (Forbid, or Allow at maxConcurrency): not now
    QUEUE = "Queue"        # Enqueue: join the queue, start when a slot frees
    SKIP = "Skip"          # Enqueue with a full queue: this run does not happen


def free_slots(limit: int | None, active: int) -> int | None:
    """Runs that may still start now (None: no limit)."""
    return None if limit is None else max(0, limit - active)


def decide(policy: ConcurrencyPolicy, limit: int | None, active: int, *,
           queued_ahead: int = 0, queue_limit: int = 0, force: bool = False) -> Verdict:
    """What happens to one new run.

    ``queued_ahead`` counts runs already waiting in the queue and eligible now: under Enqueue
    a new run never overtakes them (first in, first out). ``force`` (``run-force: "true"``)
    starts the run whatever the policy, as the contract allows for manual runs.
    """
    if force:
        return Verdict.START
    if policy is ConcurrencyPolicy.REPLACE:
        return Verdict.REPLACE if active else Verdict.START
    room = free_slots(limit, active)
    if policy is ConcurrencyPolicy.ENQUEUE:
        if queued_ahead == 0 and (room is None or room > 0):
            return Verdict.START
        return Verdict.QUEUE if queued_ahead < queue_limit else Verdict.SKIP
    return Verdict.START if room is None or room > 0 else Verdict.WAIT
