"""Pure rules for ``bgjob.dev/backfill``: re-running the times a schedule would have fired in a
past range.

A backfill is started by a new annotation value, ``{"from": T1, "until": T2}`` (an optional
``"token"`` repeats the same range). Its due times are computed once from the schedule in force
(skip rules applied) and walked with a pointer, ``status.backfill.next``: each run's Job name is
``<name>-b<id>-<due time in minutes>``, so a pass repeated after a crash finds the Job it made
and never starts a time twice, and the runs never sit in ``status.queued`` (a 1,000-time
backfill would flood it). Runs start one at a time (``Allow`` with ``maxConcurrency``: up to
that many), never overlapping each other, under the same gate as every other run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bgjob import manifests
from bgjob import status as st
from bgjob.vocab import ANN_BACKFILL

FIELD = f"metadata.annotations[{ANN_BACKFILL}]"
MAX_TIMES = 1000
RUNNING, COMPLETED, CANCELLED = "Running", "Completed", "Cancelled"


class BackfillError(ValueError):
    """A backfill the operator cannot act on; the message names the annotation."""


@dataclass(frozen=True)
class Request:
    start: datetime
    until: datetime
    ident: str   # short hash of the annotation value: names this backfill's Jobs


def parse(text: str) -> Request:
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BackfillError(f"{FIELD}: not valid JSON ({exc.msg} at character {exc.pos}); "
                            'expected {"from": "<RFC 3339>", "until": "<RFC 3339>"}') from None
    if not isinstance(value, dict) or not {"from", "until"} <= set(value) or \
            set(value) - {"from", "until", "token"}:
        raise BackfillError(f'{FIELD}: must be a JSON object {{"from": ..., "until": ...}} '
                            '(and an optional "token")')
    times = []
    for key in ("from", "until"):
        raw = value[key]
        when = st.parse_time(raw) if isinstance(raw, str) and "T" in raw.upper() else None
        if when is None or when.tzinfo is None:
            raise BackfillError(f"{FIELD}: {key} must be an RFC 3339 time with an offset, "
                                f"like 2026-12-01T00:00:00Z, not {raw!r}")
        times.append(when)
    start, until = times
    if start >= until:
        raise BackfillError(f"{FIELD}: from ({st.fmt(start)}) must be before until "
                            f"({st.fmt(until)})")
    return Request(start, until, manifests.short_hash(text.strip(), 5))


Due = tuple[datetime, str]  # a due time and the spec.schedules entry it belongs to ("")


def due_times(between: Callable[[datetime, datetime, int], list[Due]],
              req: Request) -> list[Due]:
    """The due times in [from, until), at most ``MAX_TIMES``; more is an error, not a cut.
    ``between(since, until, limit)`` gives the times in [since, until), skip rules and active
    windows applied, ascending."""
    times = [d for d in between(req.start, req.until, MAX_TIMES + 1)
             if req.start <= d[0] < req.until]
    if len(times) > MAX_TIMES:
        raise BackfillError(f"{FIELD}: the schedule fires more than {MAX_TIMES} times between "
                            f"{st.fmt(req.start)} and {st.fmt(req.until)}; split the range")
    return times


def job_name(name: str, ident: str, due: datetime, entry: str = "") -> str:
    minutes = int(due.timestamp() // 60)
    return manifests.fit_name(name, f"b{ident}-{entry}-{minutes}" if entry
                              else f"b{ident}-{minutes}")


def belongs(name: str, ident: str, root: str, entries: Iterable[str] = ()) -> bool:
    """Whether a run whose first Job is ``root`` is one of this backfill's (its retries name
    their first Job in ``bgjob.dev/retry-of``). Recomputed, not matched by prefix: a long
    BackgroundJob name is cut differently for different suffixes."""
    head, _, minutes = root.rpartition("-")
    if not head or not minutes.isdigit():
        return False
    due = datetime.fromtimestamp(int(minutes) * 60, UTC)
    return any(job_name(name, ident, due, e) == root for e in ("", *entries))


def following(times: list[Due], current: Due) -> Due | None:
    """The due time after ``current`` (ties ordered by entry name); None: it was the last."""
    later = [d for d in times if d > current]
    return min(later) if later else None
