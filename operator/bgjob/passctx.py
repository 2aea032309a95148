"""What one reconcile pass reads and decides, kept in one place so the steps stay short."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from bgjob import accounting
from bgjob import status as st
from bgjob.api import (
    BackgroundJobSpec,
    BackgroundJobStatus,
    PendingRetry,
    QueuedRun,
    Retry,
    Schedule,
    ScheduleEntryStatus,
)
from bgjob.schedule import Compiled
from bgjob.vocab import ANN_ADMITTED


@dataclass
class Observed:
    """What the watches show: the BackgroundJob, its Jobs and its CronJob (if any)."""

    bj: dict[str, Any]
    jobs: list[dict[str, Any]] = field(default_factory=list)
    cronjob: dict[str, Any] | None = None
    # The resourceVersions up to which the informers hold every event, read with the objects
    # (Informer.snapshot); 0 when unknown. They end an expectation on an object deleted unseen.
    jobs_seen_through: int = 0
    cronjobs_seen_through: int = 0
    # When this process first saw the current run-now token (the due time of a manual run).
    run_now_seen: datetime | None = None


@dataclass
class Outcome:
    requeue_after: float | None = None
    status_written: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)


class SpecProblem(Exception):
    """A spec the schema let through but the operator cannot run: becomes Ready=False."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def validation_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"spec.{loc}: {err['msg']}" if loc else f"spec: {err['msg']}"


@dataclass
class CreateJob:
    """Create one run's Job. ``undo`` puts back what the step recorded if the Job could not
    be created now (a pending retry stays pending, a scheduled time stays unmet)."""

    manifest: dict[str, Any]
    what: str
    undo: Callable[[Pass], None] | None = None
    # When the run was due, for bgjob_run_start_delay_seconds: the scheduled time, the retry's
    # nextRetryTime, or when this process first saw the run-now token. None: not measured.
    due: datetime | None = None


@dataclass
class CancelRuns:
    jobs: list[str]
    token: str


@dataclass
class AdmitJob:
    """Let a Job run: unsuspend it and give it the accounting finalizer (one patch)."""

    name: str
    before: dict[str, Any] | None = None  # the Job as seen, put back if the patch fails


Action = CreateJob | CancelRuns | AdmitJob


@dataclass
class Pass:
    bj: dict[str, Any]
    now: datetime
    ns: str
    name: str
    uid: str
    generation: int
    annotations: dict[str, str]
    base_rv: str
    old_raw: dict[str, Any]
    old: BackgroundJobStatus
    new: BackgroundJobStatus
    jobs: dict[str, dict[str, Any]]           # ours, by controller UID
    cronjob: dict[str, Any] | None = None
    orphans: list[dict[str, Any]] = field(default_factory=list)  # labelled, not ours, held
    out: Outcome = field(default_factory=Outcome)
    spec: BackgroundJobSpec | None = None
    retry_policy: Retry = field(default_factory=Retry)
    template_ok: bool = True
    compiled: Compiled | None = None
    schedule: Schedule | None = None          # the schedule in force (the spec's, or kept)
    problem: SpecProblem | None = None
    trigger_problem: SpecProblem | None = None
    run_problem: SpecProblem | None = None    # a run's Job was refused this pass
    overdue: tuple[datetime, bool] | None = None  # due time, and whether it is missed for good
    held: tuple[str, datetime] | None = None  # a run held suspended (Kueue) past its deadline
    auto_suspended: bool = False
    missed_through: datetime | None = None
    skipped_through: datetime | None = None
    # spec.schedules: the entries in force (schedruns.Entry) and each one's timing state
    entries: list[Any] = field(default_factory=list)
    entry_state: dict[str, ScheduleEntryStatus] = field(default_factory=dict)
    to_delete: list[str] = field(default_factory=list)  # waiting Jobs missed: after the write
    actions: list[Action] = field(default_factory=list)  # decided, not yet applied
    run_now_seen: datetime | None = None      # Observed.run_now_seen

    def __post_init__(self) -> None:
        if self.old.schedule is not None:
            self.missed_through = st.parse_time(self.old.schedule.missed_through)
            self.skipped_through = st.parse_time(self.old.schedule.skipped_through)
        self.entry_state = {e.name: e for e in self.old.schedules or []}

    @property
    def suspended(self) -> bool:
        """The schedule is paused by spec.suspend or by autoSuspend."""
        return bool(self.spec and self.spec.suspend) or self.auto_suspended

    def wake_at(self, when: datetime | None) -> None:
        if when is not None:
            self.wake_in((when - self.now).total_seconds())

    def wake_in(self, seconds: float) -> None:
        delay = max(0.05, seconds)
        if self.out.requeue_after is None or delay < self.out.requeue_after:
            self.out.requeue_after = delay

    def event(self, type_: str, reason: str, message: str) -> None:
        self.out.events.append((type_, reason, message))

    def active_jobs(self) -> list[dict[str, Any]]:
        """Runs that hold a slot: admitted, not finished, not being cancelled or deleted."""
        return [j for j in self.jobs.values()
                if not accounting.finished(j) and not accounting.awaiting_admission(j)
                and not accounting.deleting(j)
                and st.ANN_CANCELLED not in (j["metadata"].get("annotations") or {})]

    def set_retries(self, pending: list[PendingRetry]) -> None:
        """The pending retries, earliest first; ``status.retry`` mirrors the earliest."""
        ordered = sorted(pending, key=lambda p: (p.next_retry_time, p.job))
        self.new = self.new.model_copy(update={"pending_retries": ordered,
                                               "retry": ordered[0] if ordered else None})

    def plan(self, action: Action) -> None:
        """Record a decision, and its effect on what the next decisions see (a run about to
        start holds a slot, a run being cancelled frees one). ``Effects.apply`` then makes it
        real and lays the API's answer over this guess."""
        self.actions.append(action)
        if isinstance(action, CreateJob):
            job = copy.deepcopy(action.manifest)
            self.jobs[job["metadata"]["name"]] = job
        elif isinstance(action, CancelRuns):
            for name in action.jobs:
                job = copy.deepcopy(self.jobs[name])
                job["metadata"].setdefault("annotations", {})[st.ANN_CANCELLED] = action.token
                self.jobs[name] = job
        else:
            action.before = self.jobs[action.name]
            job = copy.deepcopy(action.before)
            job["metadata"].setdefault("annotations", {})[ANN_ADMITTED] = "true"
            job.setdefault("spec", {})["suspend"] = False
            self.jobs[action.name] = job

    def set_queue(self, queued: list[QueuedRun]) -> None:
        """The queue, first in first out (by ``since``; a stable sort keeps the order of runs
        queued in the same pass)."""
        ordered = sorted(queued, key=lambda q: q.since)
        self.new = self.new.model_copy(update={"queued": ordered,
                                               "queued_count": len(ordered)})

    def queued_ahead(self) -> int:
        """Queued runs that may start now (a run-at run before its time waits aside)."""
        return sum(1 for q in self.new.queued
                   if (st.parse_time(q.not_before) or self.now) <= self.now)

    def count_skipped(self, n: int = 1) -> None:
        stats = self.new.stats.model_copy(update={"skipped": self.new.stats.skipped + n})
        self.new = self.new.model_copy(update={"stats": stats})

    def handled_run_now(self, token: str) -> None:
        self.new = self.new.model_copy(update={"last_handled_run_now": token})
