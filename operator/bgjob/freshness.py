"""Freshness: is the last success older than ``spec.freshness.maxAgeSinceSuccess``?

The rule is pure and takes ``now``; ``apply`` puts its verdict into the pass: the condition
``Stale`` (absent when freshness is unset), the Warning event ``Stale`` once on the way into
it, and a wake-up at the moment the job will turn stale, so the condition flips on time with no
write in between (a fresh job's condition does not change from pass to pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bgjob import status as st
from bgjob.api import BackgroundJobStatus
from bgjob.passctx import Pass
from bgjob.schedule import parse_duration
from bgjob.vocab import STALE, STALE_FALSE, STALE_TRUE, WARNING

WAKE_PADDING = timedelta(seconds=1)  # like the CronJob controller's 100 ms, with clock slack


@dataclass(frozen=True)
class Verdict:
    stale: bool
    reason: str
    message: str
    stale_at: datetime  # when it turns (or turned) stale: last success (or creation) + max age


def judge(max_age: timedelta, max_age_text: str, last_success: datetime | None,
          created: datetime, now: datetime) -> Verdict:
    """Stale when the last success, or the creation if none, is more than ``max_age`` ago."""
    since = last_success or created
    stale_at = since + max_age
    what = (f"the last success was at {st.fmt(last_success)}" if last_success
            else f"no run has succeeded since the creation at {st.fmt(created)}")
    if now > stale_at:
        return Verdict(True, STALE_TRUE, f"{what}, more than {max_age_text} ago "
                       "(spec.freshness.maxAgeSinceSuccess)", stale_at)
    return Verdict(False, STALE_FALSE, f"{what}; stale after {st.fmt(stale_at)} without a "
                   "success", stale_at)


def apply(ctx: Pass) -> BackgroundJobStatus:
    """The Stale condition for this pass (step 10); needs ``ctx.new`` with this pass's runs
    counted."""
    new = ctx.new
    if ctx.spec is None:
        return new  # unreadable spec: keep what was said
    if ctx.spec.freshness is None:  # unset (or just removed): no Stale condition
        if st.condition(new, STALE) is None:
            return new
        return new.model_copy(update={"conditions": [c for c in new.conditions
                                                     if c.type != STALE]})
    text = ctx.spec.freshness.max_age_since_success
    created = st.parse_time(ctx.bj["metadata"].get("creationTimestamp")) or ctx.now
    verdict = judge(parse_duration(text), text, st.parse_time(new.last_successful_time),
                    created, ctx.now)
    before = st.condition(ctx.old, STALE)
    if verdict.stale and (before is None or before.status != "True"):
        ctx.event(WARNING, STALE, verdict.message)
    if not verdict.stale:
        ctx.wake_at(verdict.stale_at + WAKE_PADDING)
    conds = st.set_condition(new.conditions, STALE, verdict.stale, verdict.reason,
                             verdict.message, ctx.generation, ctx.now)
    return new.model_copy(update={"conditions": conds})
