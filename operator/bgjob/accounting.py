"""Pure accounting rules: which Jobs to count now, and which finished Jobs may be let go.

The Job controller's way (KEP-2307), turned round for runs: every Job of a BackgroundJob carries
the ``bgjob.dev/accounting`` finalizer, so nothing (the CronJob's history limit, a user, the
garbage collector, a TTL) can remove it before it is counted. A pass counts a finished Job and
records its UID in ``status.accounted`` in the same status write; only after that write does it
remove the finalizer. A Job is counted exactly when it still has the finalizer and its UID is not
in ``status.accounted``; a UID leaves that list once the Job shows no finalizer (or is gone).
A crash between any two steps is redone safely: nothing is counted twice, nothing is lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bgjob.vocab import ANN_ADMITTED, FINALIZER


def controlled_by(obj: dict[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def earlier_cronjob_run(job: dict[str, Any], cronjob_name: str, bj_created: str) -> bool:
    """A run admitted from an earlier CronJob of this BackgroundJob (replaced by hand, or
    removed on a switch to operator timing): it carries our finalizer (only the operator adds
    it, at admission), its controller is a CronJob of our CronJob's name, and it was made after
    this BackgroundJob was (a deleted namesake's Jobs are older). Still ours to count."""
    meta = job.get("metadata") or {}
    refs = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
    return (has_finalizer(job) and len(refs) == 1 and refs[0].get("kind") == "CronJob"
            and refs[0].get("name") == cronjob_name
            and str(meta.get("creationTimestamp") or "") >= bj_created)


def uid_of(job: dict[str, Any]) -> str:
    return str((job.get("metadata") or {}).get("uid", ""))


def has_finalizer(job: dict[str, Any]) -> bool:
    return FINALIZER in ((job.get("metadata") or {}).get("finalizers") or [])


def deleting(job: dict[str, Any]) -> bool:
    return bool((job.get("metadata") or {}).get("deletionTimestamp"))


def finished(job: dict[str, Any]) -> bool:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return True
    return False


def awaiting_admission(job: dict[str, Any]) -> bool:
    """A Job the native CronJob (or ``kubectl create job --from``) made from the suspended
    template, which the operator has not let run yet."""
    meta = job.get("metadata") or {}
    return (bool((job.get("spec") or {}).get("suspend"))
            and ANN_ADMITTED not in (meta.get("annotations") or {})
            and not finished(job))


def to_count(jobs: Iterable[dict[str, Any]], accounted: Iterable[str]) -> list[dict[str, Any]]:
    """Jobs whose end is not counted yet: finished (or deleted before they finished) and still
    holding our finalizer, and not recorded in ``status.accounted``."""
    done = set(accounted)
    return [j for j in jobs if has_finalizer(j) and uid_of(j) not in done
            and (finished(j) or deleting(j)) and not awaiting_admission(j)]


def still_held(accounted: Iterable[str], jobs: Iterable[dict[str, Any]]) -> list[str]:
    """The accounted UIDs whose Jobs still exist with our finalizer, or still wait at the gate
    (a missed Job, counted, not yet deleted: the native CronJob does not copy the template's
    finalizers, so nothing else marks it): they stay in the list until the Job is seen
    released or gone. Order is kept, so status does not churn."""
    holding = {uid_of(j) for j in jobs if has_finalizer(j) or awaiting_admission(j)}
    return [uid for uid in accounted if uid in holding]


def release(accounted: Iterable[str], jobs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs whose finalizer can go now: counted (UID recorded) and still holding it, or being
    deleted before they were ever admitted (never a run, nothing to count)."""
    done = set(accounted)
    return [j for j in jobs if has_finalizer(j) and (
        uid_of(j) in done or (awaiting_admission(j) and deleting(j)))]


def without_finalizer(job: dict[str, Any]) -> list[str]:
    return [f for f in (job.get("metadata") or {}).get("finalizers") or [] if f != FINALIZER]


def with_finalizer(job: dict[str, Any]) -> list[str]:
    return [*without_finalizer(job), FINALIZER]
