"""The reconcile loop for one BackgroundJob, as numbered steps.

Level-based: each pass reads the object and its children as the watches last saw them, decides
with the pure rules (schedule, manifests, status), makes the few writes needed, and writes status
once at the end when, and only when, it changed. A bad spec sets ``Ready=False`` and touches no
child, so a bad edit never breaks a working schedule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bgjob import manifests, schedule
from bgjob import status as st
from bgjob.api import BackgroundJobSpec, BackgroundJobStatus, ScheduleStatus
from bgjob.k8s import AlreadyExists, Invalid, Kube, KubeError, NotFound

log = logging.getLogger("bgjob.reconciler")

RECHECK_CONFLICT_SECONDS = 300.0  # a foreign object in our way: look again now and then
NORMAL, WARNING = "Normal", "Warning"


@dataclass
class Observed:
    """What the watches show: the BackgroundJob, its Jobs and its CronJob (if any)."""

    bj: dict[str, Any]
    jobs: list[dict[str, Any]] = field(default_factory=list)
    cronjob: dict[str, Any] | None = None


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


def _controlled_by(obj: dict[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


class Reconciler:
    def __init__(self, kube: Kube, clock: Callable[[], datetime] | None = None) -> None:
        self.kube = kube
        self.clock = clock or (lambda: datetime.now(UTC))
        # Children we created whose watch event has not arrived yet (like client-go's
        # "expectations"): without it a fast second pass would POST again and get a 409.
        self.recent_cronjobs: dict[tuple[str, str], dict[str, Any]] = {}
        # The status we last wrote, keyed by the resourceVersion it was written over: until the
        # watch delivers our own write, a pass sees the old object and must not write it again.
        self.written: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}

    def reconcile(self, obs: Observed) -> Outcome:
        now = self.clock()
        bj = obs.bj
        meta = bj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        generation = int(meta.get("generation") or 0)
        out = Outcome()
        old_raw = dict(bj.get("status") or {})
        rv = str(meta.get("resourceVersion", ""))
        stale_rv, ours = self.written.get((ns, name), ("", {}))
        if stale_rv and stale_rv == rv:
            old_raw = ours  # the watch has not caught up with our last write yet
        else:
            self.written.pop((ns, name), None)
        try:
            old = BackgroundJobStatus.model_validate(old_raw)
        except ValidationError:  # a status from an older operator: rebuild it
            old = BackgroundJobStatus()
        new = old
        problem: SpecProblem | None = None

        ### 1: Load the spec; what the schema could not reject becomes InvalidSpec.
        spec: BackgroundJobSpec | None = None
        compiled: schedule.Compiled | None = None
        try:
            spec = BackgroundJobSpec.model_validate(bj.get("spec") or {})
        except ValidationError as exc:
            problem = SpecProblem("InvalidSpec", validation_message(exc))

        ### 2: Compile the schedule (InvalidSchedule names the field).
        if spec is not None and spec.schedule is not None:
            try:
                compiled = schedule.compile_schedule(spec.schedule, ns, name)
            except schedule.ScheduleError as exc:
                problem = SpecProblem("InvalidSchedule", str(exc))

        ### 3: Bring the CronJob in line (only with a valid spec; never on a bad one).
        cronjob = obs.cronjob or self.recent_cronjobs.get((ns, name))
        if cronjob and obs.cronjob:
            self.recent_cronjobs.pop((ns, name), None)
        stuck = self._blocked_on_same_generation(old, generation)
        if problem is None and spec is not None and not stuck:
            try:
                cronjob = self._sync_cronjob(bj, spec, compiled, cronjob, out)
            except SpecProblem as exc:
                problem = exc
        elif stuck:
            out.requeue_after = RECHECK_CONFLICT_SECONDS

        ### 4: Fold what the Jobs show into status (always: runs go on under a bad edit).
        run_records = spec.history.run_records if spec else max(len(old.runs), 20)
        new = st.fold_runs(new, obs.jobs, run_records)
        self._run_events(old, new, out)

        ### 5: Schedule, conditions, observedGeneration.
        anchor = st.parse_time(meta.get("creationTimestamp")) or now
        new = self._schedule_status(new, spec, compiled, cronjob, now, anchor, problem)
        new = self._conditions(new, spec, problem, generation, now, out, old)

        ### 6: One status write, only when something changed; then the events.
        patch = st.merge_patch(old_raw, st.to_dict(new))
        if patch:
            log.debug("%s/%s status patch: %s", ns, name, patch)
            try:
                self.kube.patch_status(ns, name, patch)
                self.written[(ns, name)] = (rv, st.to_dict(new))
                out.status_written = True
            except NotFound:
                return out
        for type_, reason, message in out.events:
            log.info("%s/%s %s: %s", ns, name, reason, message)
            self.kube.event(bj, type_, reason, message)
        return out

    # -- step 3 --------------------------------------------------------------------------

    @staticmethod
    def _blocked_on_same_generation(old: BackgroundJobStatus, generation: int) -> bool:
        """A child write that failed for this very spec would fail again: do not retry it."""
        ready = st.condition(old, "Ready")
        return (ready is not None and ready.status == "False"
                and ready.reason in ("ChildConflict", "InvalidSpec")
                and ready.observed_generation == generation)

    def _sync_cronjob(self, bj: dict[str, Any], spec: BackgroundJobSpec,
                      compiled: schedule.Compiled | None, existing: dict[str, Any] | None,
                      out: Outcome) -> dict[str, Any] | None:
        meta = bj["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        cj_name = manifests.cronjob_name(name)
        if compiled is None or compiled.mode is not schedule.Mode.CRONJOB:
            if existing is not None and _controlled_by(existing, uid):
                self.kube.delete("batch/v1", "cronjobs", ns, cj_name)
                self.recent_cronjobs.pop((ns, name), None)
                out.events.append((NORMAL, "Scheduled", f"Removed CronJob {cj_name}: the "
                                   "schedule is now timed by the operator"
                                   if compiled else f"Removed CronJob {cj_name}"))
            return None
        desired = manifests.cronjob_manifest(bj, spec, compiled, suspend=spec.suspend)
        if existing is None:
            try:
                created = self.kube.create(desired, "cronjobs")
                self.recent_cronjobs[(ns, name)] = created
                out.events.append((NORMAL, "Scheduled",
                                   f"Created CronJob {cj_name}: {compiled.description}"))
                return created
            except AlreadyExists:
                existing = self.kube.get("batch/v1", "cronjobs", ns, cj_name)
            except Invalid as exc:
                raise SpecProblem("InvalidSpec", f"spec.template: {exc.message}") from None
        if not _controlled_by(existing, uid):
            raise SpecProblem("ChildConflict", f"CronJob {cj_name} exists and is not owned by "
                              "this BackgroundJob; it is left untouched")
        want = desired["metadata"]["annotations"][manifests.ANN_SPEC_HASH]
        have = ((existing.get("metadata") or {}).get("annotations") or {}).get(
            manifests.ANN_SPEC_HASH)
        if want == have:
            return existing
        desired["metadata"]["resourceVersion"] = existing["metadata"].get("resourceVersion")
        try:
            updated = self.kube.replace(desired, "cronjobs")
        except Invalid as exc:
            raise SpecProblem("InvalidSpec", f"spec.template: {exc.message}") from None
        except KubeError as exc:
            if exc.status == 409:  # changed under us; the watch brings it back to us
                return existing
            raise
        self.recent_cronjobs[(ns, name)] = updated
        out.events.append((NORMAL, "Scheduled", f"Updated CronJob {cj_name}: "
                           f"{compiled.description}"))
        return updated

    # -- step 4 --------------------------------------------------------------------------

    @staticmethod
    def _run_events(old: BackgroundJobStatus, new: BackgroundJobStatus, out: Outcome) -> None:
        seen = {r.job for r in old.active} | {r.job for r in old.runs}
        for ref in new.active:
            if ref.job not in seen:
                out.events.append((NORMAL, "RunStarted", f"Started {ref.trigger} run "
                                   f"{ref.job} (attempt {ref.attempt})"))
        counted = {r.job for r in old.runs}
        for rec in reversed(new.runs):
            if rec.job in counted:
                continue
            if rec.result == st.SUCCEEDED:
                out.events.append((NORMAL, "RunSucceeded", f"Run {rec.job} succeeded in "
                                   f"{rec.duration_seconds}s"))
            elif st.is_failure(rec.result):
                code = f", exit code {rec.exit_code}" if rec.exit_code is not None else ""
                out.events.append((WARNING, "RunFailed", f"Run {rec.job} ended "
                                   f"{rec.result}{code}: {rec.message or rec.reason}"))

    # -- step 5 --------------------------------------------------------------------------

    @staticmethod
    def _schedule_status(new: BackgroundJobStatus, spec: BackgroundJobSpec | None,
                         compiled: schedule.Compiled | None, cronjob: dict[str, Any] | None,
                         now: datetime, anchor: datetime,
                         problem: SpecProblem | None) -> BackgroundJobStatus:
        """``anchor`` (creation time) keeps operator-timed next runs stable between passes."""
        if problem is not None and problem.reason in ("InvalidSpec", "InvalidSchedule"):
            return new  # keep describing the schedule that still runs
        update: dict[str, Any] = {}
        if spec is None or compiled is None:
            update = {"schedule": None, "cron_job": None}
        else:
            nxt = [] if spec.suspend else schedule.next_run_times(compiled, now, anchor)
            update["schedule"] = ScheduleStatus(
                kind=compiled.kind, cron=compiled.cron, time_zone=compiled.time_zone,
                description=compiled.description, mode=compiled.mode.value,
                next_run_times=[t for t in (st.fmt(x) for x in nxt) if t],
            )
            update["cron_job"] = _name_of(cronjob) or None
            last = ((cronjob or {}).get("status") or {}).get("lastScheduleTime")
            if last and (new.last_schedule_time or "") < last:
                update["last_schedule_time"] = last
        return new.model_copy(update=update)

    @staticmethod
    def _conditions(new: BackgroundJobStatus, spec: BackgroundJobSpec | None,
                    problem: SpecProblem | None, generation: int, now: datetime,
                    out: Outcome, old: BackgroundJobStatus) -> BackgroundJobStatus:
        conds = list(new.conditions)
        if problem is not None:
            before = st.condition(old, "Ready")
            if before is None or before.reason != problem.reason or (
                    before.message != problem.message):
                out.events.append((WARNING, problem.reason, problem.message))
            conds = st.set_condition(conds, "Ready", False, problem.reason, problem.message,
                                     generation, now)
        else:
            scheduled = spec is not None and spec.schedule is not None
            conds = st.set_condition(
                conds, "Ready", True, "Scheduled" if scheduled else "ManualOnly",
                "the schedule is in place" if scheduled else "runs only when triggered",
                generation, now)
        if spec is not None:
            conds = st.set_condition(conds, "Suspended", spec.suspend,
                                     "Suspended" if spec.suspend else "Active",
                                     "spec.suspend is true" if spec.suspend else "",
                                     generation, now)
        failing, reason, message = st.failing_condition(new)
        conds = st.set_condition(conds, "Failing", failing, reason, message, generation, now)
        if st.condition(new, "Overdue") is None:
            conds = st.set_condition(conds, "Overdue", False, "OnTime", "", generation, now)
        return new.model_copy(update={"conditions": conds, "observed_generation": generation})


def _name_of(cronjob: dict[str, Any] | None) -> str:
    return str(((cronjob or {}).get("metadata") or {}).get("name", ""))

