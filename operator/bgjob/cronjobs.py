"""Keeping the owned CronJob in line with the spec: create, update, revert drift, remove.

Split from the reconciler because it is one self-contained step: given the desired manifest and
what the watch shows, make at most one write and say what happened. A bad spec never reaches
here (the reconciler stops first), so a bad edit never touches a working CronJob.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bgjob import manifests
from bgjob.accounting import controlled_by
from bgjob.k8s import AlreadyExists, Invalid, Kube, KubeError, NotFound
from bgjob.vocab import CHILD_CONFLICT, EV_SCHEDULED, INVALID_SPEC, NORMAL, WARNING


class ChildProblem(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Synced:
    cronjob: dict[str, Any] | None
    events: list[tuple[str, str, str]] = field(default_factory=list)
    written: bool = False


def sync(kube: Kube, bj: dict[str, Any], desired: dict[str, Any] | None,
         existing: dict[str, Any] | None) -> Synced:
    """Bring the CronJob to ``desired`` (None: there should be none). Raises ChildProblem."""
    meta = bj["metadata"]
    ns, uid = meta["namespace"], meta["uid"]
    cj_name = manifests.cronjob_name(meta["name"])
    if desired is None:
        if existing is not None and controlled_by(existing, uid):
            kube.delete("batch/v1", "cronjobs", ns, cj_name)
            return Synced(None, [(NORMAL, EV_SCHEDULED, f"Removed CronJob {cj_name}: the "
                                  "schedule is no longer timed by a CronJob")], written=True)
        return Synced(None)
    if existing is None:
        try:
            created = kube.create(desired, "cronjobs")
            return Synced(created, [(NORMAL, EV_SCHEDULED, f"Created CronJob {cj_name}")],
                          written=True)
        except AlreadyExists:
            try:
                existing = kube.get("batch/v1", "cronjobs", ns, cj_name)
            except NotFound:
                return Synced(None)  # gone in between: the next pass creates it
        except Invalid as exc:
            raise ChildProblem(INVALID_SPEC, f"spec.template: {exc.message}") from None
    if not controlled_by(existing, uid):
        raise ChildProblem(CHILD_CONFLICT, f"CronJob {cj_name} exists and is not owned by this "
                           "BackgroundJob; it is left untouched")
    drift = manifests.cronjob_drift(desired, existing)
    if not drift:
        return Synced(existing)
    update = {**desired, "metadata": {**desired["metadata"],
                                      "resourceVersion": existing["metadata"].get(
                                          "resourceVersion")}}
    try:
        updated = kube.replace(update, "cronjobs")
    except Invalid as exc:
        raise ChildProblem(INVALID_SPEC, f"spec.template: {exc.message}") from None
    except KubeError as exc:
        if exc.status == 409:  # changed under us; the watch brings it back to us
            return Synced(existing)
        raise
    hash_only = drift == ["spec.jobTemplate"]
    if hash_only:
        return Synced(updated, [(NORMAL, EV_SCHEDULED, f"Updated CronJob {cj_name}")],
                      written=True)
    return Synced(updated, [(WARNING, EV_SCHEDULED, f"Reverted CronJob {cj_name}: "
                             f"{', '.join(drift)} differed from the BackgroundJob (changed "
                             "outside the operator, or the spec changed)")], written=True)
