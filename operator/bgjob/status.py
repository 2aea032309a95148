"""Pure status rules: observe Jobs, fold finished runs into stats exactly once, set conditions.

Status is rebuilt from the children on every pass, except the true counters in ``stats``, which
accumulate. Which finished Jobs are folded in is ``accounting``'s rule (a finalizer on every Job
and ``status.accounted``), so each is counted exactly once, also when it is pruned or the
operator was down.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from bgjob import accounting, api
from bgjob.api import BackgroundJobStatus, Condition, RunRecord, RunRef, Stats
from bgjob.vocab import CRONJOB_INSTANTIATE, LABEL_SCHEDULE

RUNNING = "Running"
QUEUED = "Queued"     # admitted by us, held suspended by an admission system (Kueue)
SUCCEEDED = "Succeeded"
FAILED = "Failed"
DEADLINE_EXCEEDED = "DeadlineExceeded"
CANCELLED = "Cancelled"
ANN_CANCELLED = f"{api.GROUP}/cancelled"
ANN_EXIT_CODE = f"{api.GROUP}/exit-code"  # in memory only: the code read from the Job's pod
ANN_OUTPUT = f"{api.GROUP}/output"        # in memory only: the termination message read there
MAX_OUTPUT_BYTES = 1024
_EXIT_CODE = re.compile(r"exit code (\d+)")


def fmt(t: datetime | None) -> str | None:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _final_condition(job: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return dict(cond)
    return None


def trigger_of(job: dict[str, Any]) -> str:
    meta = job.get("metadata") or {}
    if (meta.get("annotations") or {}).get(CRONJOB_INSTANTIATE) == "manual":
        return "manual"  # kubectl create job --from=cronjob/...
    return str((meta.get("labels") or {}).get(api.LABEL_TRIGGER, "scheduled"))


def observe(job: dict[str, Any]) -> RunRecord:
    """The run record of one Job as it is now."""
    meta = job.get("metadata") or {}
    ann = meta.get("annotations") or {}
    status = job.get("status") or {}
    final = _final_condition(job)
    start = status.get("startTime") or meta.get("creationTimestamp")
    scheduled = ann.get(api.ANN_CRONJOB_SCHEDULED) or ann.get(api.ANN_SCHEDULED_TIME)
    text = str(ann.get(api.ANN_ATTEMPT, "1") or "1")
    attempt = int(text) if text.isdigit() and int(text) > 0 else 1  # hand-edited: first try
    base = {"job": meta.get("name", ""), "trigger": trigger_of(job), "attempt": attempt,
            "scheduled_time": scheduled or None, "start_time": start,
            "schedule": (meta.get("labels") or {}).get(LABEL_SCHEDULE) or None}
    if final is None:
        held = bool((job.get("spec") or {}).get("suspend"))
        return RunRecord(**base, result=QUEUED if held else RUNNING)
    done = status.get("completionTime") or final.get("lastTransitionTime")
    begin, end = parse_time(start), parse_time(done)
    duration = round((end - begin).total_seconds(), 3) if begin and end else None
    reason, message = final.get("reason", "") or "", final.get("message", "") or ""
    exit_code: int | None = None
    if final["type"] == "Complete":
        result, exit_code = SUCCEEDED, 0
    elif ANN_CANCELLED in ann:
        result = CANCELLED
    elif reason == "DeadlineExceeded":
        result = DEADLINE_EXCEEDED
    else:
        result = FAILED
    if exit_code is None:
        match = _EXIT_CODE.search(message)
        exit_code = int(match.group(1)) if match else None
    if ann.get(ANN_EXIT_CODE, "").isdigit():
        exit_code = int(ann[ANN_EXIT_CODE])
    return RunRecord(**base, completion_time=done, duration_seconds=duration, result=result,
                     exit_code=exit_code, reason=reason, message=message[:512],
                     output=ann.get(ANN_OUTPUT))


def is_active(result: str) -> bool:
    """Not ended: running, or queued (suspended by an admission system)."""
    return result in (RUNNING, QUEUED)


def is_failure(result: str) -> bool:
    return result in (FAILED, DEADLINE_EXCEEDED)


def fold_runs(status: BackgroundJobStatus, jobs: Iterable[dict[str, Any]],
              run_records: int,
              final_failure: Callable[[RunRecord], bool] | None = None,
              ) -> tuple[BackgroundJobStatus, list[RunRecord]]:
    """Fold the Jobs' current state into status: active runs, newly ended runs, stats.

    Which Jobs are new is decided by ``accounting`` (finalizer and ``status.accounted``), never
    by names or times, so no Job is counted twice and none is skipped, whatever the history
    limits. ``final_failure`` says which failures end a run (no retry follows): only those count
    in ``consecutiveFailures``, which is about runs, not attempts. Returns the new status and
    the records counted now, oldest first.
    """
    final = final_failure or (lambda r: is_failure(r.result))
    visible = [j for j in jobs if not accounting.awaiting_admission(j)]
    fresh = accounting.to_count(visible, status.accounted)
    fresh_uids = {accounting.uid_of(j) for j in fresh}
    records = [observe(j) for j in visible if accounting.uid_of(j) not in fresh_uids]
    active = sorted((r for r in records if is_active(r.result)),
                    key=lambda r: (r.start_time or "", r.job))
    finished = [r for r in records if not is_active(r.result)]
    new = sorted((_ended(j) for j in fresh), key=lambda r: (r.completion_time or "", r.job))

    stats = status.stats
    runs = [r for r in status.runs if r.job not in {n.job for n in new}]
    last_success, last_failure = status.last_successful_time, status.last_failure_time
    for rec in new:
        stats = _count(stats, rec, final(rec))
        runs.insert(0, rec)
        if rec.result == SUCCEEDED:
            last_success = max(filter(None, [last_success, rec.completion_time]))
        elif is_failure(rec.result):
            last_failure = max(filter(None, [last_failure, rec.completion_time]))
    runs = sorted(runs, key=lambda r: (r.completion_time or "", r.job), reverse=True)
    runs = runs[:run_records]
    # Records of Jobs that still exist are refreshed (e.g. an exit code learnt later).
    by_name = {r.job: r for r in finished}
    runs = [_refresh(r, by_name.get(r.job)) for r in runs]

    latest_active = active[-1] if active else None
    last_run = runs[0] if runs else status.last_run
    if latest_active and (last_run is None or (latest_active.start_time or "") >
                          (last_run.start_time or "")):
        last_run = latest_active
    held = accounting.still_held(status.accounted, jobs)
    return status.model_copy(update={
        "active": [RunRef(job=r.job, trigger=r.trigger, attempt=r.attempt,
                          start_time=r.start_time, result=r.result,
                          schedule=r.schedule) for r in active],
        "runs": runs,
        "stats": stats,
        "last_run": last_run,
        "last_successful_time": last_success,
        "last_failure_time": last_failure,
        "accounted": held + sorted(fresh_uids - set(held)),
    }), new


def _ended(job: dict[str, Any]) -> RunRecord:
    """The record of a Job being counted; one deleted before it finished ended Cancelled."""
    rec = observe(job)
    if not is_active(rec.result):
        return rec
    done = (job.get("metadata") or {}).get("deletionTimestamp")
    begin, end = parse_time(rec.start_time), parse_time(done)
    duration = round((end - begin).total_seconds(), 3) if begin and end else None
    return rec.model_copy(update={"result": CANCELLED, "completion_time": done,
                                  "duration_seconds": duration, "reason": "Deleted",
                                  "message": "the Job was deleted before it finished"})


def _refresh(old: RunRecord, seen: RunRecord | None) -> RunRecord:
    if seen is None:
        return old
    learnt: dict[str, Any] = {}  # read from the pod once, when the run was counted
    if seen.exit_code is None and old.exit_code is not None:
        learnt["exit_code"] = old.exit_code
    if seen.output is None and old.output is not None:
        learnt["output"] = old.output
    return seen.model_copy(update=learnt) if learnt else seen


def needs_exit_code(job: dict[str, Any]) -> bool:
    """A failed Job whose conditions do not say the exit code (only its pod knows it)."""
    rec = observe(job)
    return is_failure(rec.result) and rec.exit_code is None


def exit_code_of(pods: Iterable[dict[str, Any]]) -> int | None:
    """The first non-zero container exit code among a Job's pods, newest pod first."""
    ordered = sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""),
                     reverse=True)
    for pod in ordered:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            code = ((cs.get("state") or {}).get("terminated") or {}).get("exitCode")
            if isinstance(code, int) and code != 0:
                return code
    return None


def output_of(pods: Iterable[dict[str, Any]]) -> str | None:
    """The main container's termination message (the main container is the pod template's
    first one), from the newest pod that has one, cut to its first 1 KiB; None when there is
    none. With ``terminationMessagePolicy: FallbackToLogsOnError`` a failed container's
    message is the tail of its log."""
    ordered = sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""),
                     reverse=True)
    for pod in ordered:
        containers = (pod.get("spec") or {}).get("containers") or []
        main = containers[0].get("name") if containers else None
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") != main:
                continue
            message = ((cs.get("state") or {}).get("terminated") or {}).get("message")
            if isinstance(message, str) and message.strip():
                cut = message.encode()[:MAX_OUTPUT_BYTES]
                return cut.decode(errors="ignore")
    return None


def prune(records: Iterable[RunRecord], successful: int, failed: int) -> list[str]:
    """Finished Jobs beyond the history limits, oldest first out (as the CronJob controller
    keeps its own); running Jobs are never pruned."""
    out: list[str] = []
    done = [r for r in records if not is_active(r.result)]
    for keep, group in ((successful, [r for r in done if r.result == SUCCEEDED]),
                        (failed, [r for r in done if r.result != SUCCEEDED])):
        newest_first = sorted(group, key=lambda r: (r.completion_time or "", r.job),
                              reverse=True)
        out += [r.job for r in newest_first[keep:]]
    return out


def _count(stats: Stats, rec: RunRecord, final_failure: bool) -> Stats:
    runs = stats.runs + 1
    succeeded = stats.succeeded + (rec.result == SUCCEEDED)
    failed = stats.failed + is_failure(rec.result)
    consecutive = 0 if rec.result == SUCCEEDED else stats.consecutive_failures + final_failure
    avg = stats.average_duration_seconds
    if rec.duration_seconds is not None:
        prev_n = stats.runs  # runs with a duration: every counted run has one
        avg = round(((avg or 0.0) * prev_n + rec.duration_seconds) / runs, 3)
    decided = succeeded + failed
    return stats.model_copy(update={
        "runs": runs, "succeeded": succeeded, "failed": failed,
        "consecutive_failures": consecutive, "average_duration_seconds": avg,
        "success_rate": round(succeeded / decided, 4) if decided else None,
    })


def set_condition(conditions: list[Condition], ctype: str, status: bool, reason: str,
                  message: str, generation: int, now: datetime) -> list[Condition]:
    """Replace one condition; ``lastTransitionTime`` moves only when the status flips."""
    value = "True" if status else "False"
    old = next((c for c in conditions if c.type == ctype), None)
    ltt = old.last_transition_time if old and old.status == value else fmt(now)
    assert ltt is not None
    new = Condition(type=ctype, status=value, reason=reason, message=message,
                    last_transition_time=ltt, observed_generation=generation)
    out = [c for c in conditions if c.type != ctype] + [new]
    order = {"Ready": 0, "Suspended": 1, "Failing": 2, "Overdue": 3}
    return sorted(out, key=lambda c: order.get(c.type, 9))


def condition(status: BackgroundJobStatus, ctype: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == ctype), None)


def failing_condition(status: BackgroundJobStatus) -> tuple[bool, str, str]:
    last = next((r for r in status.runs), None)
    if last is None:
        return False, "NoRuns", "no run has finished yet"
    if is_failure(last.result):
        return True, "LastRunFailed", f"run {last.job} ended {last.result}" + (
            f" (exit code {last.exit_code})" if last.exit_code is not None else "")
    return False, "LastRunSucceeded", f"run {last.job} ended {last.result}"


def to_dict(status: BackgroundJobStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 merge patch turning ``old`` into ``new``; ``{}`` when they are equal."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            sub = merge_patch(old[key], value)
            if isinstance(sub, dict) and isinstance(value, dict) and not sub:
                continue
            patch[key] = sub
    return patch
