"""Golden tests of what ``kubectl bgjob`` prints, from fixed objects and a fixed ``now``.

The expected text lives in ``tests/unit/golden/*.txt``; after an intended change, regenerate it
with ``UPDATE_GOLDEN=1 pytest tests/unit/test_cliview.py`` and review the diff.
"""

from __future__ import annotations

import copy
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bgjob import api, cli, clicomplete, clirun, clisession, cliview

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text + "\n")
    assert text + "\n" == path.read_text(), f"{name} changed; see the module docstring"


def cleanup() -> dict[str, Any]:
    run = {"trigger": "scheduled", "attempt": 1, "reason": "", "message": ""}
    return {
        "metadata": {"name": "document-cleanup", "namespace": "platform",
                     "creationTimestamp": "2026-11-01T09:00:00Z"},
        "spec": {"schedule": {"cron": "0 2 * * *", "timeZone": "Europe/Berlin"},
                 "suspend": False, "concurrencyPolicy": "Forbid", "timeoutSeconds": 7200,
                 "parameters": {"cleanup_level": "normal"},
                 "retry": {"limit": 3, "nonRetryableExitCodes": [2, 64], "backoff": {
                     "initialDelaySeconds": 60, "factor": 2.0, "maxDelaySeconds": 3600}}},
        "status": {
            "schedule": {"kind": "cron", "cron": "0 2 * * *", "timeZone": "Europe/Berlin",
                         "description": "At 02:00, every day", "mode": "CronJob",
                         "nextRunTimes": ["2026-11-23T01:00:00Z", "2026-11-24T01:00:00Z",
                                          "2026-11-25T01:00:00Z"]},
            "cronJob": "document-cleanup",
            "active": [{"job": "document-cleanup-29395260", "trigger": "manual",
                        "attempt": 1, "startTime": "2026-11-22T11:58:00Z"}],
            "lastSuccessfulTime": "2026-11-22T01:00:12Z",
            "lastRun": {**run, "job": "document-cleanup-29394180", "result": "Succeeded"},
            "runs": [
                {**run, "job": "document-cleanup-29394180", "startTime": "2026-11-22T01:00:00Z",
                 "durationSeconds": 12.4, "result": "Succeeded", "exitCode": 0},
                {**run, "job": "document-cleanup-29392740-r2", "trigger": "retry",
                 "attempt": 2, "startTime": "2026-11-21T01:02:00Z",
                 "durationSeconds": 3725.0, "result": "DeadlineExceeded",
                 "reason": "DeadlineExceeded"},
                {**run, "job": "document-cleanup-29392740", "startTime": "2026-11-21T01:00:00Z",
                 "durationSeconds": 75.5, "result": "Failed", "exitCode": 1,
                 "reason": "BackoffLimitExceeded"},
            ],
            "stats": {"runs": 120, "succeeded": 117, "failed": 3, "successRate": 0.975,
                      "averageDurationSeconds": 11.8, "consecutiveFailures": 0,
                      "retries": 2, "missed": 1},
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Scheduled",
                 "message": "the schedule is in place",
                 "lastTransitionTime": "2026-11-01T09:00:01Z"},
                {"type": "Suspended", "status": "False", "reason": "Active", "message": "",
                 "lastTransitionTime": "2026-11-01T09:00:01Z"},
                {"type": "Failing", "status": "False", "reason": "LastRunSucceeded",
                 "message": "", "lastTransitionTime": "2026-11-22T01:00:12Z"},
                {"type": "Overdue", "status": "False", "reason": "OnTime", "message": "",
                 "lastTransitionTime": "2026-11-01T09:00:01Z"},
            ],
        },
    }


def late() -> dict[str, Any]:
    obj = copy.deepcopy(cleanup())
    obj["metadata"].update(name="health-check", namespace="ops")
    obj["status"]["schedule"].update(description="Every 15m", timeZone="UTC",
                                     nextRunTimes=["2026-11-22T12:15:00Z"])
    obj["status"]["conditions"][3].update(
        status="True", reason="MissedSchedule", lastTransitionTime="2026-11-22T11:45:30Z",
        message="the run due at 2026-11-22T11:45:00Z did not start within "
                "startingDeadlineSeconds and was skipped")
    obj["status"]["stats"].update(runs=4, succeeded=2, failed=2, successRate=0.5,
                                  consecutiveFailures=2, missed=3)
    obj["status"]["active"] = []
    return obj


def typed() -> dict[str, Any]:
    """Typed parameters and run output (issue 17)."""
    obj = copy.deepcopy(cleanup())
    obj["spec"]["parameters"] = {"cleanup_level": "normal", "days": "7", "note": "nightly"}
    obj["spec"]["parameterSchema"] = [
        {"name": "cleanup_level", "type": "String", "enum": ["light", "normal", "deep"],
         "description": "how hard to clean"},
        {"name": "days", "type": "Integer", "minimum": 1, "maximum": 30, "required": True,
         "description": "age of documents to remove"},
        {"name": "since", "type": "Date"},
    ]
    failed = obj["status"]["runs"][2]
    failed["output"] = "removing 120 documents\nERROR: database is read-only\n"
    obj["status"]["runs"][0]["output"] = "removed 42 documents"
    obj["status"]["lastRun"] = {**failed}
    return obj


def manual_only() -> dict[str, Any]:
    return {"metadata": {"name": "reindex", "namespace": "platform",
                         "creationTimestamp": "2026-11-22T11:59:15Z"},
            "spec": {}, "status": {"stats": {"runs": 0}}}


EVENTS = [
    {"type": "Normal", "reason": "RunStarted", "lastTimestamp": "2026-11-22T11:58:00Z",
     "message": "Started manual run document-cleanup-29395260 (attempt 1)"},
    {"type": "Warning", "reason": "RunFailed", "lastTimestamp": "2026-11-21T01:01:15Z",
     "message": "Run document-cleanup-29392740 ended Failed, exit code 1"},
]


def test_list_tables() -> None:
    items = [cleanup(), late(), manual_only()]
    golden("list.txt", cliview.list_table(items, NOW))
    golden("list-wide-all.txt", cliview.list_table(items, NOW, wide=True,
                                                   all_namespaces=True))


def test_describe() -> None:
    golden("describe.txt", cliview.describe(cleanup(), cliview.recent_events(EVENTS), NOW,
                                            local=NEW_YORK))
    golden("describe-manual-only.txt", cliview.describe(manual_only(), [], NOW, local=UTC))


def test_typed_parameters_and_output() -> None:
    golden("describe-typed.txt", cliview.describe(typed(), [], NOW, local=UTC))
    golden("history-wide.txt", cliview.history_table(typed(), NOW, wide=True))
    assert cliview.one_line("a\n\n b \nc") == "a | b | c"
    assert cliview.one_line("a\n" + "x" * 200 + "\nlast") == "..." + "x" * 90 + " | last"
    assert len(cliview.one_line("x" * 200)) == 100 and cliview.one_line(None) == "-"


def test_history_stats_overdue() -> None:
    golden("history.txt", cliview.history_table(cleanup(), NOW))
    golden("stats.txt", cliview.stats_table([cleanup(), late()], all_namespaces=True))
    items = cliview.overdue_items([cleanup(), late()])
    assert [i["metadata"]["name"] for i in items] == ["health-check"]
    golden("overdue.txt", cliview.overdue_table(items, NOW))


def test_suspend_change_is_a_patch_a_gitops_user_can_repeat() -> None:
    golden("suspend-dry-run.txt", cliview.suspend_change("document-cleanup", "platform", True))


@pytest.mark.parametrize(("text", "want"), [
    (None, "<none>"), ("2026-11-22T11:59:15Z", "45s"), ("2026-11-22T11:00:00Z", "1h"),
    ("2026-11-22T10:00:00Z", "2h"), ("2026-11-19T12:00:00Z", "3d"),
    ("2026-11-22T12:15:00Z", "in 15m"),
])
def test_age(text: str | None, want: str) -> None:
    assert cliview.age(text, NOW) == want


@pytest.mark.parametrize(("seconds", "want"), [
    (None, "-"), (0.4, "0.4s"), (12.44, "12.4s"), (75.5, "1m16s"), (3725, "1h02m"),
])
def test_duration(seconds: float | None, want: str) -> None:
    assert cliview.duration(seconds) == want


def test_validate_output(capsys: pytest.CaptureFixture[str]) -> None:
    cli.cmd_validate(cli.build_parser().parse_args(
        ["validate", "every:90m", "--from", "2026-03-29T00:00:00", "--tz", "Europe/Berlin",
         "--count", "3"]))
    golden("validate.txt", capsys.readouterr().out.rstrip("\n"))


# -- the plugin's pure parts ---------------------------------------------------------------

def test_parameters_are_judged_before_anything_is_written() -> None:
    assert clirun.parse_params(["scope=full", "SIM_EXIT_CODE=3", "empty="]) == {
        "scope": "full", "SIM_EXIT_CODE": "3", "empty": ""}
    for bad in ("novalue", "=x", "1st=x", "a b=c"):
        with pytest.raises(clisession.CliError, match="--param"):
            clirun.parse_params([bad])


def test_run_patch_clears_an_earlier_runs_parameters_and_force() -> None:
    ann = clirun.run_patch("17", {}, False)["metadata"]["annotations"]
    assert ann == {api.ANN_RUN_NOW: "17", api.ANN_RUN_PARAMETERS: None, api.ANN_RUN_FORCE: None,
                   "bgjob.dev/run-at": None}
    ann = clirun.run_patch("18", {"b": "2", "a": "1"}, True)["metadata"]["annotations"]
    assert json.loads(ann[api.ANN_RUN_PARAMETERS]) == {"a": "1", "b": "2"}
    assert ann[api.ANN_RUN_FORCE] == "true"
    assert clirun.parse_at("2026-12-24T07:00:00+01:00") == "2026-12-24T06:00:00Z"
    with pytest.raises(clisession.CliError, match=r"^--at: must be an RFC 3339 time"):
        clirun.parse_at("tomorrow 6am")


def test_completion_candidates() -> None:
    parser = cli.build_parser()
    asked: list[str | None] = []

    def names(ns: str | None) -> list[str]:
        asked.append(ns)
        return ["cleanup", "report"]

    assert clicomplete.candidates(parser, [""], names)[:3] == [
        "backfill", "cancel", "completion"]
    assert clicomplete.candidates(parser, ["-n", "ops", "de"], names) == ["describe"]
    assert clicomplete.candidates(parser, ["-n", "ops", "describe", "c"], names) == ["cleanup"]
    assert asked == ["ops"]
    assert clicomplete.candidates(parser, ["describe", "cleanup", ""], names) == []
    assert clicomplete.candidates(parser, ["run", "--f"], names) == ["--force"]
    assert clicomplete.candidates(parser, ["run", "--param", "x=1", ""], names) == [
        "cleanup", "report"]
    assert clicomplete.candidates(parser, ["list", ""], names) == []
    assert clicomplete.candidates(parser, ["nope", ""], names) == []


def test_queue_table_lists_runs_in_start_order() -> None:
    obj = {"metadata": {"name": "bj"}, "status": {"queued": [
        {"job": "bj-m-1", "trigger": "manual", "since": "2026-11-22T11:59:00Z",
         "parameters": {"scope": "full"}},
        {"job": "bj-29390520", "trigger": "scheduled", "since": "2026-11-22T11:59:30Z",
         "scheduledTime": "2026-11-22T11:59:00Z", "waitingJob": True},
        {"job": "bj-m-2", "trigger": "manual", "since": "2026-11-22T11:00:00Z",
         "notBefore": "2026-11-23T06:00:00Z"}]}}
    lines = cliview.queue_table(obj, datetime(2026, 11, 22, 12, 0, tzinfo=UTC)).splitlines()
    assert lines[0].split()[:3] == ["JOB", "TRIGGER", "ATTEMPT"]
    assert [line.split()[0] for line in lines[1:]] == ["bj-m-1", "bj-29390520", "bj-m-2"]
    assert "scope=full" in lines[1] and "2026-11-23T06:00:00Z" in lines[3]
    assert lines[1].split()[3] == "1m"
