"""Golden tests of the plugin with the second wave's schedules: describe with several named
schedules and a skip list, list's SCHEDULE column, validate with --skip-date/--skip-cron."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bgjob import cli, clisession, cliview
from tests.unit.test_cliview import NOW, golden


def two_schedules() -> dict[str, Any]:
    return {
        "apiVersion": "bgjob.dev/v1alpha1", "kind": "BackgroundJob",
        "metadata": {"name": "report", "namespace": "platform",
                     "creationTimestamp": "2026-11-01T00:00:00Z"},
        "spec": {
            "parameters": {"scope": "incremental"},
            "schedules": [
                {"name": "weekdays", "cron": "0 9 * * 1-5", "timeZone": "Europe/Berlin",
                 "skip": {"dates": ["2026-12-25", "2026-12-26"]}},
                {"name": "sunday-full", "weekly": {"day": "Sunday", "time": "12:00"},
                 "timeZone": "Europe/Berlin", "parameters": {"scope": "full"},
                 "activeUntil": "2027-06-30T00:00:00Z", "catchUp": "All"},
            ],
            "template": {"spec": {"template": {"spec": {"containers": [{"name": "m"}]}}}},
        },
        "status": {
            "schedule": {"kind": "schedules", "timeZone": "Europe/Berlin", "mode": "Operator",
                         "description": "2 schedules: weekdays, sunday-full",
                         "nextRunTimes": ["2026-11-22T11:00:00Z", "2026-11-23T08:00:00Z",
                                          "2026-11-24T08:00:00Z"]},
            "schedules": [
                {"name": "weekdays", "description": "At 09:00 AM, Monday through Friday",
                 "mode": "Operator", "timeZone": "Europe/Berlin",
                 "nextRunTimes": ["2026-11-23T08:00:00Z"]},
                {"name": "sunday-full", "description": "At 12:00, every Sunday",
                 "mode": "Operator", "timeZone": "Europe/Berlin",
                 "nextRunTimes": ["2026-11-22T11:00:00Z"]},
            ],
            "stats": {"runs": 4, "succeeded": 4, "skipped": 2},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Scheduled",
                            "lastTransitionTime": "2026-11-01T00:00:00Z"}],
        },
    }


def test_describe_and_list_with_two_schedules() -> None:
    obj = two_schedules()
    golden("describe-schedules.txt", cliview.describe(obj, [], NOW,
                                                      local=ZoneInfo("America/New_York")))
    assert "2 schedules: weekdays, sunday-full" in cliview.list_table([obj], NOW)


def test_validate_leaves_out_skip_dates_and_skip_crons(
        capsys: pytest.CaptureFixture[str]) -> None:
    cli.cmd_validate(cli.build_parser().parse_args(
        ["validate", "daily:00:30", "--tz", "Europe/Berlin", "--from", "2026-03-27T12:00:00Z",
         "--count", "3", "--skip-date", "2026-03-29", "--skip-cron", "* * * * 1"]))
    golden("validate-skip.txt", capsys.readouterr().out.rstrip("\n"))


@pytest.mark.parametrize(("flag", "value", "field"), [
    ("--skip-date", "2026-02-30", "spec.schedule.skip.dates[0]"),
    ("--skip-cron", "61 * * * *", "spec.schedule.skip.cron[0]"),
])
def test_validate_names_a_bad_skip(flag: str, value: str, field: str) -> None:
    with pytest.raises(clisession.CliError, match="^" + re.escape(field)):
        cli.cmd_validate(cli.build_parser().parse_args(["validate", "@daily", flag, value]))
