"""Backfill rules: the annotation, the due times in [from, until), the names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bgjob import backfill
from bgjob.backfill import BackfillError


def hourly(since: datetime, until: datetime, limit: int) -> list[datetime]:
    """A stand-in schedule: every hour on the hour, in (since, until]."""
    t = since.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    out: list[datetime] = []
    while t <= until and len(out) < limit:
        out.append(t)
        t += timedelta(hours=1)
    return out


def pairs(fn: Any) -> Any:
    """A schedule of one entry, asked in [since, until) as the operator's due_times is."""
    def between(since: datetime, until: datetime, limit: int) -> list[tuple[datetime, str]]:
        return [(t, "") for t in fn(since - timedelta(microseconds=1), until, limit)
                if t < until]
    return between


def test_half_open_range() -> None:
    req = backfill.parse('{"from": "2026-12-01T00:00:00Z", "until": "2026-12-01T03:00:00Z"}')
    times = backfill.due_times(pairs(hourly), req)
    assert [t.hour for t, _ in times] == [0, 1, 2]  # from is in, until is out


def test_five_days_daily() -> None:
    def daily(since: datetime, until: datetime, limit: int) -> list[datetime]:
        return [t for t in hourly(since, until, 10_000) if t.hour == 2][:limit]
    req = backfill.parse('{"from": "2026-11-25T00:00:00+00:00", "until": "2026-11-30T00:00:00Z"}')
    assert [t.day for t, _ in backfill.due_times(pairs(daily), req)] == [25, 26, 27, 28, 29]


def test_more_than_a_thousand_times_is_an_error_not_a_cut() -> None:
    req = backfill.parse('{"from": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"}')
    with pytest.raises(BackfillError, match=r"more than 1000 times"):
        backfill.due_times(pairs(hourly), req)


@pytest.mark.parametrize(("text", "fragment"), [
    ("yesterday", "not valid JSON"),
    ('["2026-12-01T00:00:00Z"]', "must be a JSON object"),
    ('{"from": "2026-12-01T00:00:00Z"}', "must be a JSON object"),
    ('{"from": "2026-12-01", "until": "2026-12-02T00:00:00Z"}', "from must be an RFC 3339"),
    ('{"from": "2026-12-01T00:00:00", "until": "2026-12-02T00:00:00Z"}', "with an offset"),
    ('{"from": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}', "must be before"),
    ('{"from": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z", "x": 1}', "object"),
])
def test_bad_values_name_the_annotation(text: str, fragment: str) -> None:
    with pytest.raises(BackfillError, match=r"annotations\[bgjob.dev/backfill\]") as err:
        backfill.parse(text)
    assert fragment in str(err.value)


def test_a_token_makes_the_same_range_new() -> None:
    a = backfill.parse('{"from": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z"}')
    b = backfill.parse('{"from": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z", '
                       '"token": "2"}')
    assert a.ident != b.ident and (a.start, a.until) == (b.start, b.until)


@pytest.mark.parametrize("name", ["nightly", "a-very-long-backgroundjob-name-" + "x" * 31])
def test_names_are_deterministic_and_recognised(name: str) -> None:
    due = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    job = backfill.job_name(name, "abcde", due)
    assert len(job) <= 63 and job == backfill.job_name(name, "abcde", due)
    assert backfill.belongs(name, "abcde", job)
    assert not backfill.belongs(name, "fffff", job)
    assert not backfill.belongs(name, "abcde", f"{name}-m-1234567890")


def test_entries_name_their_jobs_and_tie_in_name_order() -> None:
    due = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    a, b = backfill.job_name("bj", "abcde", due, "weekday"), backfill.job_name(
        "bj", "abcde", due, "weekend")
    assert a != b and backfill.belongs("bj", "abcde", a, ["weekday", "weekend"])
    assert not backfill.belongs("bj", "abcde", a, [])  # an entry it does not know
    times = [(due, "weekday"), (due, "weekend"), (due + timedelta(hours=1), "weekday")]
    assert backfill.following(times, (due, "weekday")) == (due, "weekend")
    assert backfill.following(times, (due, "weekend")) == (due + timedelta(hours=1), "weekday")
    assert backfill.following(times, times[-1]) is None
