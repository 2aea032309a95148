"""The concurrency gate as a table: policy, limit, active runs, queue ahead → verdict."""

from __future__ import annotations

import pytest

from bgjob.api import ConcurrencyPolicy as P
from bgjob.gate import Verdict as V
from bgjob.gate import decide, free_slots

ROWS = [
    # policy, limit, active, queued ahead, queue limit, force, verdict
    (P.FORBID, 1, 0, 0, 0, False, V.START),
    (P.FORBID, 1, 1, 0, 0, False, V.WAIT),
    (P.FORBID, 1, 1, 0, 0, True, V.START),
    (P.REPLACE, 1, 0, 0, 0, False, V.START),
    (P.REPLACE, 1, 2, 0, 0, False, V.REPLACE),
    (P.ALLOW, None, 50, 0, 0, False, V.START),
    (P.ALLOW, 2, 1, 0, 0, False, V.START),
    (P.ALLOW, 2, 2, 0, 0, False, V.WAIT),
    (P.ALLOW, 2, 2, 0, 0, True, V.START),
    (P.ENQUEUE, 1, 0, 0, 10, False, V.START),
    (P.ENQUEUE, 1, 1, 0, 10, False, V.QUEUE),
    (P.ENQUEUE, 2, 1, 0, 10, False, V.START),
    (P.ENQUEUE, 2, 1, 1, 10, False, V.QUEUE),   # a free slot, but a run waits ahead: FIFO
    (P.ENQUEUE, 2, 2, 3, 3, False, V.SKIP),     # the queue is full
    (P.ENQUEUE, 1, 1, 0, 0, False, V.SKIP),     # maxQueued 0: never queues
    (P.ENQUEUE, 1, 1, 3, 3, True, V.START),     # run-force jumps the queue
]


@pytest.mark.parametrize(("policy", "limit", "active", "ahead", "qlimit", "force", "want"),
                         ROWS)
def test_decide(policy: P, limit: int | None, active: int, ahead: int, qlimit: int,
                force: bool, want: V) -> None:
    assert decide(policy, limit, active, queued_ahead=ahead, queue_limit=qlimit,
                  force=force) is want


def test_free_slots() -> None:
    assert free_slots(None, 9) is None
    assert free_slots(2, 1) == 1
    assert free_slots(2, 5) == 0
