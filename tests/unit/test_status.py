"""Status folding: each finished Job counted exactly once; conditions; merge patches."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bgjob import status as st
from bgjob.api import BackgroundJobStatus, RunRecord

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def job(name: str, start: str, done: str | None = None, ok: bool = True,
        reason: str = "", message: str = "", trigger: str = "scheduled",
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    conds = []
    if done:
        conds = [{"type": "Complete" if ok else "Failed", "status": "True",
                  "reason": reason or ("CompletionsReached" if ok else "BackoffLimitExceeded"),
                  "message": message, "lastTransitionTime": done}]
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": {"bgjob.dev/trigger": trigger},
                     "finalizers": ["bgjob.dev/accounting"],
                     "annotations": annotations or {}, "creationTimestamp": start},
        "status": {"startTime": start, "conditions": conds,
                   **({"completionTime": done} if done and ok else {})},
    }


def fold(status: BackgroundJobStatus, jobs: list[dict[str, Any]],
         records: int = 20) -> BackgroundJobStatus:
    return st.fold_runs(status, jobs, records)[0]


def test_running_job_is_active_and_last_run() -> None:
    s = fold(BackgroundJobStatus(), [job("a", "2026-11-23T09:00:00Z")])
    assert [r.job for r in s.active] == ["a"]
    assert s.last_run is not None and s.last_run.result == "Running"
    assert s.stats.runs == 0


def test_finished_jobs_are_counted_once_across_passes() -> None:
    jobs = [job("a", "2026-11-23T09:00:00Z", "2026-11-23T09:00:10Z"),
            job("b", "2026-11-23T09:01:00Z", "2026-11-23T09:01:30Z", ok=False,
                message="Container main failed with exit code 3")]
    s = fold(BackgroundJobStatus(), jobs)
    again = fold(s, jobs)
    assert again == s
    assert (s.stats.runs, s.stats.succeeded, s.stats.failed) == (2, 1, 1)
    assert s.stats.success_rate == 0.5
    assert s.stats.average_duration_seconds == 20.0
    assert s.stats.consecutive_failures == 1
    assert s.last_successful_time == "2026-11-23T09:00:10Z"
    assert s.last_failure_time == "2026-11-23T09:01:30Z"
    assert [r.job for r in s.runs] == ["b", "a"]
    assert s.runs[0].exit_code == 3 and s.runs[1].exit_code == 0


def test_pruned_jobs_are_not_recounted_and_records_are_bounded() -> None:
    s = BackgroundJobStatus()
    for i in range(5):
        s = fold(s, [job(f"j{i}", f"2026-11-23T09:0{i}:00Z", f"2026-11-23T09:0{i}:05Z")],
                 records=3)
    assert s.stats.runs == 5
    assert [r.job for r in s.runs] == ["j4", "j3", "j2"]
    # j0 still exists (history kept more Jobs than records), its finalizer released after it
    # was counted: pushed out of the records, never recounted.
    j0 = job("j0", "2026-11-23T09:00:00Z", "2026-11-23T09:00:05Z")
    j0["metadata"]["finalizers"] = []
    s2 = fold(s, [j0], records=3)
    assert s2.stats.runs == 5


def test_jobs_finished_while_down_are_all_counted_oldest_first() -> None:
    jobs = [job(f"j{i}", f"2026-11-23T09:0{i}:00Z", f"2026-11-23T09:0{i}:05Z", ok=i != 2)
            for i in range(4)]
    s = fold(BackgroundJobStatus(), jobs, records=2)
    assert (s.stats.runs, s.stats.failed, s.stats.consecutive_failures) == (4, 1, 0)
    assert [r.job for r in s.runs] == ["j3", "j2"]


def test_result_classification() -> None:
    deadline = st.observe(job("d", "2026-11-23T09:00:00Z", "2026-11-23T09:10:00Z", ok=False,
                              reason="DeadlineExceeded"))
    assert deadline.result == "DeadlineExceeded" and deadline.duration_seconds == 600
    cancelled = st.observe(job("c", "2026-11-23T09:00:00Z", "2026-11-23T09:01:00Z", ok=False,
                               annotations={st.ANN_CANCELLED: "tok"}))
    assert cancelled.result == "Cancelled"
    manual = st.observe(job("m", "2026-11-23T09:00:00Z",
                            annotations={"cronjob.kubernetes.io/instantiate": "manual"}))
    assert manual.trigger == "manual"
    scheduled = st.observe(job("s", "2026-11-23T09:00:00Z", annotations={
        "batch.kubernetes.io/cronjob-scheduled-timestamp": "2026-11-23T09:00:00Z"}))
    assert scheduled.scheduled_time == "2026-11-23T09:00:00Z"


def test_condition_transition_time_moves_only_on_flips() -> None:
    c1 = st.set_condition([], "Ready", True, "Scheduled", "", 1, NOW)
    later = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    c2 = st.set_condition(c1, "Ready", True, "Scheduled", "x", 2, later)
    assert c2[0].last_transition_time == "2026-11-23T10:00:00Z"
    c3 = st.set_condition(c2, "Ready", False, "InvalidSchedule", "bad", 3, later)
    assert c3[0].last_transition_time == "2026-11-23T11:00:00Z"


def test_merge_patch_is_minimal() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1], "gone": 1}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "e": [1, 2]}
    assert st.merge_patch(old, new) == {"b": {"d": 4}, "e": [1, 2], "gone": None}
    assert st.merge_patch(new, new) == {}


def test_prune_keeps_the_newest_per_outcome_and_never_a_running_job() -> None:
    def rec(name: str, result: str, done: str | None) -> RunRecord:
        return RunRecord(job=name, trigger="manual", result=result, completion_time=done)

    records = [rec("s1", "Succeeded", "2026-11-23T09:01:00Z"),
               rec("s2", "Succeeded", "2026-11-23T09:02:00Z"),
               rec("s3", "Succeeded", "2026-11-23T09:03:00Z"),
               rec("f1", "Failed", "2026-11-23T09:01:30Z"),
               rec("c1", "Cancelled", "2026-11-23T09:02:30Z"),
               rec("r", "Running", None)]
    assert sorted(st.prune(records, successful=2, failed=1)) == ["f1", "s1"]
    assert sorted(st.prune(records, successful=0, failed=0)) == ["c1", "f1", "s1", "s2", "s3"]


def test_exit_code_comes_from_the_newest_failed_pod() -> None:
    def pod(created: str, code: int) -> dict[str, Any]:
        return {"metadata": {"creationTimestamp": created}, "status": {"containerStatuses": [
            {"name": "main", "state": {"terminated": {"exitCode": code}}}]}}

    assert st.exit_code_of([pod("2026-11-23T09:00:00Z", 3), pod("2026-11-23T09:01:00Z", 7)]) == 7
    assert st.exit_code_of([pod("2026-11-23T09:00:00Z", 0)]) is None
    assert st.exit_code_of([]) is None


def test_a_learnt_exit_code_survives_later_refreshes() -> None:
    failed = job("f", "2026-11-23T09:00:00Z", "2026-11-23T09:01:00Z", ok=False,
                 annotations={st.ANN_EXIT_CODE: "5"})
    first = fold(BackgroundJobStatus(), [failed])
    assert first.runs[0].exit_code == 5
    failed["metadata"]["annotations"] = {}
    again = fold(first, [failed])
    assert again.runs[0].exit_code == 5 and again.stats.runs == 1


def _pod(created: str, statuses: list[dict[str, Any]],
         containers: tuple[str, ...] = ("main", "sidecar")) -> dict[str, Any]:
    return {"metadata": {"creationTimestamp": created},
            "spec": {"containers": [{"name": n} for n in containers]},
            "status": {"containerStatuses": statuses}}


def _term(name: str, message: str | None) -> dict[str, Any]:
    term: dict[str, Any] = {"exitCode": 1}
    if message is not None:
        term["message"] = message
    return {"name": name, "state": {"terminated": term}}


def test_output_is_the_main_containers_termination_message_cut_at_1_kib() -> None:
    # the main container is the template's first, wherever the kubelet lists its status
    pod = _pod("2026-11-23T09:00:00Z", [_term("sidecar", "sidecar says"), _term("main", "done")])
    assert st.output_of([pod]) == "done"
    older = _pod("2026-11-23T08:00:00Z", [_term("main", "old")])
    assert st.output_of([older, pod]) == "done"  # the newest pod
    assert st.output_of([_pod("t", [_term("main", None)]), older]) == "old"
    assert st.output_of([_pod("t", [_term("main", "  \n")])]) is None
    assert st.output_of([]) is None
    long = "é" * 600  # 1,200 bytes: cut at 1 KiB, never inside a character
    cut = st.output_of([_pod("t", [_term("main", long)])])
    assert cut is not None and len(cut.encode()) <= 1024 and cut == "é" * 512


def test_a_learnt_output_is_recorded_and_survives_later_refreshes() -> None:
    failed = job("f", "2026-11-23T09:00:00Z", "2026-11-23T09:01:00Z", ok=False,
                 annotations={st.ANN_OUTPUT: "ERROR: disk full"})
    first = fold(BackgroundJobStatus(), [failed])
    assert first.runs[0].output == "ERROR: disk full"
    assert first.last_run is not None and first.last_run.output == "ERROR: disk full"
    failed["metadata"]["annotations"] = {}  # the next pass reads no pod
    again = fold(first, [failed])
    assert again.runs[0].output == "ERROR: disk full"
