"""Pure retry rules: classification of a finished attempt and the backoff between attempts.

Kubernetes' own pod backoff is fixed (10 s doubling, capped at 6 min) and a failed Job is final.
Here every Job has ``backoffLimit: 0`` and a failed attempt becomes a *new* Job after
``min(initial * factor^(n-1), max)`` seconds, spread by ±jitter, up to ``retry.limit`` extra
attempts. Exit codes in ``nonRetryableExitCodes`` end the run at once (each Job carries them as
a ``podFailurePolicy`` FailJob rule, so Kubernetes itself stops the pod retrying too).
"""

from __future__ import annotations

import random
from enum import StrEnum

from bgjob.api import Backoff, Retry, RunRecord

POD_FAILURE_POLICY = "PodFailurePolicy"  # the Job condition reason when a FailJob rule matched


class Verdict(StrEnum):
    SUCCEEDED = "Succeeded"
    CANCELLED = "Cancelled"       # stopped on purpose: never retried
    RETRY = "Retry"               # failed, another attempt will follow
    NON_RETRYABLE = "NonRetryable"  # failed with an exit code that forbids retrying
    EXHAUSTED = "Exhausted"       # failed on its last allowed attempt
    RUNNING = "Running"


def classify(rec: RunRecord, retry: Retry) -> Verdict:
    if rec.result in ("Running", "Queued"):
        return Verdict.RUNNING
    if rec.result == "Succeeded":
        return Verdict.SUCCEEDED
    if rec.result == "Cancelled":
        return Verdict.CANCELLED
    if rec.reason == POD_FAILURE_POLICY or (
            rec.exit_code is not None and rec.exit_code in retry.non_retryable_exit_codes):
        return Verdict.NON_RETRYABLE
    if rec.attempt >= 1 + retry.limit:
        return Verdict.EXHAUSTED
    return Verdict.RETRY


def is_final_failure(rec: RunRecord, retry: Retry) -> bool:
    return classify(rec, retry) in (Verdict.NON_RETRYABLE, Verdict.EXHAUSTED)


def base_delay(backoff: Backoff, failed_attempt: int) -> float:
    """Seconds before the attempt after ``failed_attempt`` (1 = the first try failed)."""
    raw = backoff.initial_delay_seconds * backoff.factor ** max(0, failed_attempt - 1)
    return float(min(raw, backoff.max_delay_seconds))


def delay(backoff: Backoff, failed_attempt: int, rng: random.Random | None = None) -> float:
    """The base delay spread by up to ±jitter, never negative."""
    base = base_delay(backoff, failed_attempt)
    if backoff.jitter <= 0 or base <= 0:
        return base
    spread = (rng or random).uniform(-backoff.jitter, backoff.jitter)
    return max(0.0, round(base * (1 + spread), 3))
