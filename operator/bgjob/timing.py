"""Pure timing rules: which due times are unmet, which one runs, which are missed, when to wake.

The same rules serve both modes. In Operator mode the plan says which scheduled run to start
now; in CronJob mode the native controller starts runs and the plan only judges whether it did
(Overdue, missed). The semantics follow the CronJob controller: only the most recent unmet time
is ever started (older ones are superseded and count as missed), and with
``startingDeadlineSeconds`` a time not started that late is skipped (missed) too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bgjob import cronspec, skiprules
from bgjob.api import CatchUp
from bgjob.schedule import Compiled, Mode

# Without startingDeadlineSeconds a run may start late, but one not started this long after its
# time is reported Overdue (the CronJob controller normally starts a run within a second).
DEFAULT_OVERDUE_GRACE = timedelta(seconds=60)
CATCH_UP_ALL_WINDOW = timedelta(hours=24)  # catchUp All without startingDeadlineSeconds
MAX_UNMET = 1000  # like the CronJob controller, do not enumerate an unbounded backlog
_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=366),
            timedelta(days=5 * 366))


@dataclass
class Plan:
    run: datetime | None = None               # start this scheduled run now (Operator mode)
    more: bool = False                        # catchUp All: more late times wait behind run
    missed: list[datetime] = field(default_factory=list)  # newly missed, not counted before
    skipped: list[datetime] = field(default_factory=list)  # newly skipped, not counted before
    overdue: datetime | None = None           # oldest due time that should have started by now
    wake: datetime | None = None              # look again at this time


def times_between(c: Compiled, since: datetime, until: datetime,
                  limit: int = MAX_UNMET) -> list[datetime]:
    """Run times ``t`` with ``since < t <= until`` inside the active window, ascending, at
    most ``limit`` of them (skipped times included: the caller tells them apart)."""
    r = c.rules
    if r.active_from is not None:
        since = max(since, r.active_from - timedelta(seconds=1))
    if r.active_until is not None:
        until = min(until, r.active_until - timedelta(seconds=1))
    if until <= since:
        return []
    if c.at is not None:
        return [c.at] if since < c.at <= until else []
    if not c.cron:
        assert c.interval is not None and c.anchor is not None
        step = c.interval.total_seconds()
        first = max(1, int((since - c.anchor).total_seconds() // step))
        out: list[datetime] = []
        k = first
        while len(out) < limit:
            t = c.anchor + timedelta(seconds=step * k)
            if t > until:
                break
            if t > since:
                out.append(t)
            k += 1
        return out
    spec = cronspec.parse(c.cron)
    out = []
    t = since
    while len(out) < limit:
        nxt = cronspec.next_after(spec, t, c.zone)
        if nxt is None or nxt > until:
            break
        out.append(nxt)
        t = nxt
    return out


def latest_at_or_before(c: Compiled, since: datetime, now: datetime) -> datetime | None:
    """The most recent run time in ``(since, now]``, without walking a long backlog."""
    for window in _WINDOWS:
        start = max(since, now - window)
        times = times_between(c, start, now)
        if times and len(times) < MAX_UNMET:
            return times[-1]
        if times:  # dense schedule: the window was too wide, walk the last hour closely
            return times_between(c, max(since, now - timedelta(minutes=61)), now)[-1]
        if start == since:
            return None
    return None


def next_after(c: Compiled, now: datetime) -> datetime | None:
    times = times_between(c, now, now + timedelta(days=5 * 366), limit=1)
    return times[0] if times else None


def _catch_up(c: Compiled, unmet: list[datetime], now: datetime,
              deadline: timedelta | None, out: Plan) -> list[datetime]:
    """Which unmet times run (``out.run``, one per pass, oldest first for All) and which are
    missed (returned). Latest and None: only the most recent time may start (None gave it a
    deadline); All: every time within the deadline (24 h when unset), oldest first."""
    if c.catch_up is CatchUp.ALL:
        window = deadline if deadline is not None else CATCH_UP_ALL_WINDOW
        runnable = [t for t in unmet if now - t <= window]
        if runnable and c.mode is Mode.OPERATOR:
            out.run, out.more = runnable[0], len(runnable) > 1
        return [t for t in unmet if t not in runnable]
    latest = unmet[-1]
    missed = list(unmet[:-1])  # superseded: only the most recent time is ever started
    if deadline is not None and now - latest > deadline:
        missed.append(latest)
    elif c.mode is Mode.OPERATOR:
        out.run = latest
    return missed


def plan(c: Compiled, *, last_scheduled: datetime | None, floor: datetime,
         missed_through: datetime | None, now: datetime, deadline_seconds: int | None,
         suspended: bool, skipped_through: datetime | None = None) -> Plan:
    """Judge the due times after ``max(last_scheduled, floor)``.

    ``floor`` is when timing began (the object's or the CronJob's creation); ``missed_through``
    and ``skipped_through`` are the newest due times already counted as missed and skipped, so
    each is counted once. Times the skip list names never run and are never missed.
    """
    if suspended:
        return Plan()  # nothing is due while paused; a resume judges the gap
    since = max(last_scheduled or floor, floor)
    deadline = timedelta(seconds=deadline_seconds) if deadline_seconds is not None else None
    if deadline is None and c.catch_up is CatchUp.NONE:
        deadline = DEFAULT_OVERDUE_GRACE  # None: a run that cannot start on time never runs
    grace = deadline if deadline is not None else DEFAULT_OVERDUE_GRACE
    unmet = times_between(c, since, now)
    if len(unmet) >= MAX_UNMET:
        latest = latest_at_or_before(c, since, now)
        if latest is not None and latest != unmet[-1]:
            unmet.append(latest)
    out = Plan()
    skipped = [t for t in unmet if skiprules.skip_reason(c.rules, t, c.zone) is not None]
    out.skipped = [t for t in skipped if skipped_through is None or t > skipped_through]
    unmet = [t for t in unmet if t not in skipped]
    if unmet:
        missed = _catch_up(c, unmet, now, deadline, out)
        out.missed = [t for t in missed if missed_through is None or t > missed_through]
        late = [t for t in unmet if now - t > grace or t in missed]
        # Starting ``run`` clears this (the next run started); otherwise it is the report.
        out.overdue = late[0] if late else None
        pending = [t + grace + timedelta(seconds=1) for t in unmet
                   if t not in late and t != out.run]
        out.wake = min(pending) if pending else None
    nxt = next_after(c, now)
    if nxt is not None:
        # Operator mode starts the run then; CronJob mode checks the controller did, after grace.
        at = nxt if c.mode is Mode.OPERATOR else nxt + grace + timedelta(seconds=1)
        out.wake = min(filter(None, [out.wake, at]))
    return out


def due_times(schedules: list[Compiled], since: datetime, until: datetime,
              limit: int = MAX_UNMET) -> list[tuple[datetime, str]]:
    """Every time the schedules would have run in ``[since, until)``, for a backfill: skip
    rules and active windows applied, ascending (ties by schedule name), at most ``limit``.

    Each time comes with the name of its spec.schedules entry ("" for spec.schedule). Pure, in
    UTC; a caller that needs to know whether the range held more than ``limit`` asks for
    ``limit + 1``. ``every`` series count from each Compiled's ``anchor``.
    """
    out: list[tuple[datetime, str]] = []
    start = since - timedelta(microseconds=1)  # times_between excludes its lower end
    end = until - timedelta(microseconds=1)    # and includes its upper one
    for c in schedules:
        times = times_between(c, start, end, limit=limit + MAX_UNMET)
        out += [(t, c.name) for t in times
                if skiprules.skip_reason(c.rules, t, c.zone) is None][:limit]
    return sorted(out, key=lambda x: (x[0], x[1]))[:limit]
