"""Retry maths and classification, as tables."""

from __future__ import annotations

import random

import pytest

from bgjob.api import Backoff, Retry, RunRecord
from bgjob.retry import Verdict, base_delay, classify, delay, is_final_failure


@pytest.mark.parametrize(("backoff", "attempt", "seconds"), [
    (Backoff(initial_delay_seconds=60, factor=2.0, max_delay_seconds=3600), 1, 60),
    (Backoff(initial_delay_seconds=60, factor=2.0, max_delay_seconds=3600), 2, 120),
    (Backoff(initial_delay_seconds=60, factor=2.0, max_delay_seconds=3600), 3, 240),
    (Backoff(initial_delay_seconds=60, factor=2.0, max_delay_seconds=3600), 7, 3600),  # capped
    (Backoff(initial_delay_seconds=10, factor=1.0, max_delay_seconds=3600), 5, 10),    # constant
    (Backoff(initial_delay_seconds=5, factor=3.0, max_delay_seconds=100), 3, 45),
    (Backoff(initial_delay_seconds=0, factor=2.0, max_delay_seconds=100), 4, 0),
])
def test_base_delay(backoff: Backoff, attempt: int, seconds: float) -> None:
    assert base_delay(backoff, attempt) == seconds


def test_jitter_spreads_within_bounds_and_is_seeded() -> None:
    b = Backoff(initial_delay_seconds=100, factor=2.0, max_delay_seconds=1000, jitter=0.1)
    rng = random.Random(7)
    samples = [delay(b, 1, rng) for _ in range(500)]
    assert all(90 <= s <= 110 for s in samples)
    assert max(samples) - min(samples) > 15  # it really spreads
    assert delay(Backoff(initial_delay_seconds=100, jitter=0.0), 1) == 100


def rec(result: str, attempt: int = 1, code: int | None = None, reason: str = "") -> RunRecord:
    return RunRecord(job="j", trigger="scheduled", attempt=attempt, result=result,
                     exit_code=code, reason=reason)


POLICY = Retry(limit=2, non_retryable_exit_codes=[2, 64])


@pytest.mark.parametrize(("record", "verdict"), [
    (rec("Succeeded"), Verdict.SUCCEEDED),
    (rec("Running"), Verdict.RUNNING),
    (rec("Cancelled"), Verdict.CANCELLED),
    (rec("Failed", 1, 1), Verdict.RETRY),
    (rec("Failed", 2, 1), Verdict.RETRY),
    (rec("Failed", 3, 1), Verdict.EXHAUSTED),
    (rec("DeadlineExceeded", 1), Verdict.RETRY),
    (rec("DeadlineExceeded", 3), Verdict.EXHAUSTED),
    (rec("Failed", 1, 64), Verdict.NON_RETRYABLE),
    (rec("Failed", 1, None, "PodFailurePolicy"), Verdict.NON_RETRYABLE),
    (rec("Failed", 1, None), Verdict.RETRY),  # exit code unknown: retryable
])
def test_classify(record: RunRecord, verdict: Verdict) -> None:
    assert classify(record, POLICY) is verdict
    assert is_final_failure(record, POLICY) is (
        verdict in (Verdict.EXHAUSTED, Verdict.NON_RETRYABLE))


def test_no_retry_configured_makes_every_failure_final() -> None:
    assert classify(rec("Failed", 1, 1), Retry()) is Verdict.EXHAUSTED
