"""cronspec against golden tables produced by robfig/cron v3 itself (hack/golden)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bgjob import cronspec

CASES = json.loads((Path(__file__).parent / "data" / "robfig_next.json").read_text())


def _id(case: dict[str, str]) -> str:
    return f"{case['cron']} {case['timeZone']} after {case['after']}"


# robfig also takes "@every 5m"; we offer that as schedule.every and refuse the macro.
TIMED = [c for c in CASES if not c.get("error") and not c["cron"].startswith("@every")]


@pytest.mark.parametrize("case", TIMED, ids=_id)
def test_next_times_match_the_cronjob_controller(case: dict[str, object]) -> None:
    expr = str(case["cron"])
    after = datetime.fromisoformat(str(case["after"]).replace("Z", "+00:00"))
    spec = cronspec.parse(expr)
    got = cronspec.next_times(spec, after, ZoneInfo(str(case["timeZone"])), 6)
    assert [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in got] == case["next"]


@pytest.mark.parametrize("case", [c for c in CASES if c.get("error")], ids=_id)
def test_expressions_the_controller_refuses_are_refused(case: dict[str, object]) -> None:
    with pytest.raises(cronspec.CronError):
        cronspec.parse(str(case["cron"]))


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * *", "expected 5 fields"),
        ("61 * * * *", "minute: '61' is out of range 0-59"),
        ("0 25 * * *", "hour: '25' is out of range 0-23"),
        ("0 0 * * 7", "day of week: '7' is out of range 0-6"),
        ("*/0 * * * *", "minute: bad step '0'"),
        ("5-1 * * * *", "starts after it ends"),
        ("x * * * *", "minute: 'x' is not a number"),
        ("@fortnightly", "unknown macro"),
        ("@every 5m", "unknown macro"),
        ("TZ=UTC 0 0 * * *", "use schedule.timeZone"),
    ],
)
def test_parse_errors_say_which_field(expr: str, message: str) -> None:
    with pytest.raises(cronspec.CronError, match=message.replace("*", r"\*")):
        cronspec.parse(expr)
