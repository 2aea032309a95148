"""Freshness as a table: when a BackgroundJob is stale, and the moment it turns stale."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bgjob import freshness

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)

# (story, last success, now, stale?, message start)
CASES = [
    ("never succeeded, created 25h ago, max 26h", None, T0 + 25 * H, False,
     "no run has succeeded since the creation at 2026-11-23T10:00:00Z; stale after "
     "2026-11-24T12:00:00Z"),
    ("never succeeded, created 27h ago", None, T0 + 27 * H, True,
     "no run has succeeded since the creation at 2026-11-23T10:00:00Z, more than 26h ago"),
    ("exactly 26h after the success: not older yet", T0, T0 + 26 * H, False,
     "the last success was at 2026-11-23T10:00:00Z; stale after"),
    ("one second past", T0, T0 + 26 * H + timedelta(seconds=1), True,
     "the last success was at 2026-11-23T10:00:00Z, more than 26h ago"),
    ("a recent success after an old creation", T0 + 30 * H, T0 + 40 * H, False,
     "the last success was at 2026-11-24T16:00:00Z"),
]


@pytest.mark.parametrize(("story", "success", "now", "stale", "message"), CASES,
                         ids=[c[0] for c in CASES])
def test_judge(story: str, success: datetime | None, now: datetime, stale: bool,
               message: str) -> None:
    v = freshness.judge(26 * H, "26h", success, T0, now)
    assert v.stale is stale
    assert v.reason == ("NoRecentSuccess" if stale else "Fresh")
    assert v.message.startswith(message), v.message
    assert v.stale_at == (success or T0) + 26 * H
