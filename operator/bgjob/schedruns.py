"""Step 9's bookkeeping for every schedule in force: ``spec.schedule`` or each entry of
``spec.schedules``, the skip list and the active window.

``runs`` decides when a scheduled run starts (one gate, one concurrency policy for all); this
module says, per schedule, where its timing stands (last started due time, what was counted
missed or skipped), how its Jobs are named and labelled, and counts skipped due times. The
single ``spec.schedule`` keeps its state where it always was (``status.lastScheduleTime``,
``status.schedule.missedThrough``), so nothing changes for it; each ``spec.schedules`` entry
keeps its own in ``status.schedules[]``. No I/O here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bgjob import accounting, manifests, skiprules, timing
from bgjob import status as st
from bgjob.api import CatchUp, ScheduleEntryStatus
from bgjob.passctx import Pass
from bgjob.schedule import Compiled
from bgjob.vocab import ANN_PARAMETERS, EV_RUN_SKIPPED, NORMAL


@dataclass(frozen=True)
class Entry:
    """One schedule in force: ``name`` is "" for spec.schedule."""

    name: str
    compiled: Compiled
    deadline_seconds: int | None
    parameters: dict[str, str] = field(default_factory=dict)
    in_force: dict[str, Any] = field(default_factory=dict)  # the entry as it is timed


def entries(ctx: Pass) -> list[Entry]:
    if ctx.compiled is not None and ctx.schedule is not None:
        return [Entry("", ctx.compiled, ctx.schedule.starting_deadline_seconds)]
    return list(ctx.entries)


def state(ctx: Pass, e: Entry) -> ScheduleEntryStatus:
    return ctx.entry_state.setdefault(e.name, ScheduleEntryStatus(name=e.name))


def _update(ctx: Pass, e: Entry, **changes: Any) -> None:
    ctx.entry_state[e.name] = state(ctx, e).model_copy(update=changes)


def last_scheduled(ctx: Pass, e: Entry) -> datetime | None:
    if not e.name:
        return st.parse_time(ctx.new.last_schedule_time)
    return st.parse_time(state(ctx, e).last_schedule_time)


def set_last_scheduled(ctx: Pass, e: Entry, when: str | None) -> None:
    if not e.name:
        ctx.new = ctx.new.model_copy(update={"last_schedule_time": when})
    else:
        _update(ctx, e, last_schedule_time=when)


def floor(ctx: Pass, e: Entry) -> datetime:
    """When the timing of this schedule began: the object's creation for spec.schedule, the
    first pass that saw it for an entry of spec.schedules (added later, it does not run
    the past)."""
    if e.name:
        since = st.parse_time(state(ctx, e).since)
        if since is not None:
            return since
    return st.parse_time(ctx.bj["metadata"].get("creationTimestamp")) or ctx.now


def missed_through(ctx: Pass, e: Entry) -> datetime | None:
    return ctx.missed_through if not e.name else st.parse_time(state(ctx, e).missed_through)


def skipped_through(ctx: Pass, e: Entry) -> datetime | None:
    return ctx.skipped_through if not e.name else st.parse_time(state(ctx, e).skipped_through)


def counted_missed(ctx: Pass, e: Entry, through: datetime) -> None:
    if not e.name:
        ctx.missed_through = through
    else:
        _update(ctx, e, missed_through=st.fmt(through))


def count_skipped(ctx: Pass, e: Entry, times: list[datetime]) -> None:
    """Due times the skip list names: counted in stats.skipped once each, one event."""
    if not times:
        return
    ctx.count_skipped(len(times))
    if not e.name:
        ctx.skipped_through = max(times)
    else:
        _update(ctx, e, skipped_through=st.fmt(max(times)))
    why = skiprules.skip_reason(e.compiled.rules, times[-1], e.compiled.zone) or "skip list"
    shown = ", ".join(st.fmt(t) or "" for t in times[-3:])
    more = f" and {len(times) - 3} earlier" if len(times) > 3 else ""
    of = f" of schedule {e.name}" if e.name else ""
    ctx.event(NORMAL, EV_RUN_SKIPPED, f"{len(times)} scheduled run(s){of} skipped: {shown}"
              f"{more} ({why})")


def job_name(ctx: Pass, e: Entry, due: datetime) -> str:
    base = f"{ctx.name}-{e.name}" if e.name else ctx.name
    return manifests.scheduled_job_name(base, due)


def job_manifest(ctx: Pass, e: Entry, name: str, due: datetime) -> dict[str, Any]:
    """A scheduled run's Job; an entry's parameters ride along in the parameters annotation,
    so its retries keep them (spec.parameters < schedule parameters < run-parameters)."""
    assert ctx.spec is not None
    extra = {ANN_PARAMETERS: json.dumps(e.parameters, sort_keys=True)} if e.parameters else None
    return manifests.job_manifest(ctx.bj, ctx.spec, name, "scheduled", scheduled=due,
                                  params=e.parameters or None, extra_annotations=extra,
                                  schedule_name=e.name or None)


def admit_deadline(ctx: Pass) -> int | None:
    """The deadline a CronJob-made Job is admitted within: startingDeadlineSeconds, and with
    catchUp None the overdue grace when unset (a late run never starts)."""
    if ctx.schedule is None:
        return None
    deadline = ctx.schedule.starting_deadline_seconds
    if deadline is None and ctx.schedule.catch_up is CatchUp.NONE:
        return int(timing.DEFAULT_OVERDUE_GRACE.total_seconds())
    return deadline


def skip_at_admission(ctx: Pass, job: dict[str, Any], when: datetime) -> bool:
    """CronJob mode: a Job made for a due time the skip list names, or outside the active
    window (made in the moment before the CronJob was suspended), is dropped: counted
    skipped (the window's are not due times, so not counted), deleted after the write."""
    c = ctx.compiled
    if c is None:
        return False
    inside = skiprules.active(c.rules, when)
    why = skiprules.skip_reason(c.rules, when, c.zone) if inside else None
    if inside and why is None:
        return False
    ctx.new = ctx.new.model_copy(update={"accounted": [*ctx.new.accounted,
                                                       accounting.uid_of(job)]})
    ctx.to_delete.append(job["metadata"]["name"])
    if why is not None:
        ctx.count_skipped()
        ctx.event(NORMAL, EV_RUN_SKIPPED, f"Scheduled run {job['metadata']['name']} "
                  f"skipped: {why}")
    return True


def expired(ctx: Pass) -> bool:
    """Every schedule in force is past its activeUntil: nothing will run on schedule again."""
    timed = entries(ctx)
    return bool(timed) and all(skiprules.expired(e.compiled.rules, ctx.now) for e in timed)


def cronjob_paused(ctx: Pass) -> bool:
    """The CronJob is suspended outside the active window (it would only make Jobs to drop);
    a pass at each edge of the window flips it."""
    c = ctx.compiled
    if c is None:
        return False
    r = c.rules
    for edge in (r.active_from, r.active_until):
        if edge is not None and edge > ctx.now:
            ctx.wake_at(edge)
    return not skiprules.active(r, ctx.now)
