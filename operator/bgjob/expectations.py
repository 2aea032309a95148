"""What this operator just wrote to its children, remembered until its informer shows it.

Why: a pass reads children from informer caches, which lag the API by a watch event. Without
memory of its own writes, a second pass that runs before the event arrives would create a Job
again, delete one twice, or judge a run by the state before our patch. client-go solves this with
``ControllerExpectations`` (counts of pending adds/deletes per owner, with a 5-minute TTL so a
lost event cannot block the controller forever) and ``UIDTrackingControllerExpectations``
(which objects are being deleted). This module keeps the same promise with names instead of
counts, because our child names are deterministic and a pass needs the objects themselves:

* a write (create, patch, update) is laid over the informer's copy until the informer shows that
  object at our resourceVersion or newer;
* a delete hides the object until the informer stops showing it, or shows it terminating
  (``deletionTimestamp``, e.g. held by a finalizer), or shows another object (uid) of that name;
* every expectation ends after ``ttl`` seconds whatever happened, so a lost event costs at most
  one TTL. With ``seen_through`` (the resourceVersion the informer has applied every event up
  to) a write whose object the informer no longer has is known to be deleted at once: the Job
  someone removed before the informer showed it is not re-injected at all.

Pure: no client, no kopf; the clock is injected so tests drive time. Thread-safe, because passes
of different owners run in a thread pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

Obj = dict[str, Any]
Clock = Callable[[], float]
# client-go's ExpectationsTimeout: long enough for any watch delay that is not an outage,
# short enough that a lost event heals without a restart.
EXPECTATIONS_TTL = 300.0


class Op(StrEnum):
    WRITE = "Write"     # created, patched or updated: the informer must show this or newer
    DELETE = "Delete"   # the informer must stop showing it (or show it terminating)


def resource_version(obj: Mapping[str, Any] | None) -> int:
    """resourceVersion as a number (0 when absent or not numeric).

    The API calls resourceVersions opaque; every in-tree store (etcd) makes them a
    monotonic revision, and comparing them is what tells "the informer caught up" apart.
    """
    text = str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
    return int(text) if text.isdigit() else 0


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


@dataclass(frozen=True)
class Expectation:
    name: str
    op: Op
    uid: str                    # "" when unknown: then any object of the name is ours
    resource_version: int       # of our write (WRITE); of the object we deleted, if known
    obj: Obj | None             # what the API answered to our write (WRITE only)
    since: float                # clock reading when recorded

    def _same_object(self, seen: Mapping[str, Any]) -> bool:
        uid = str(_meta(seen).get("uid") or "")
        return not self.uid or not uid or uid == self.uid

    def met(self, seen: Mapping[str, Any] | None, seen_through: int) -> bool:
        """Whether the informer's copy (``seen``, None when absent) has caught up with us."""
        if self.op is Op.WRITE:
            if seen is None:
                # Absent although the informer applied events past our write: deleted since.
                return 0 < self.resource_version <= seen_through
            return (not self._same_object(seen)
                    or resource_version(seen) >= self.resource_version)
        if seen is None or not self._same_object(seen):
            return True
        return bool(_meta(seen).get("deletionTimestamp"))


class OwnerExpectations:
    """Per owner key, the children written or deleted and not yet seen by the informer.

    One instance per child kind (Jobs, CronJobs, or the owner objects themselves), because
    names are unique only within a kind. ``owner`` is any hashable key, e.g. (namespace, name).
    """

    def __init__(self, ttl: float = EXPECTATIONS_TTL, clock: Clock = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._by_owner: dict[Hashable, dict[str, Expectation]] = {}
        self.expired_total = 0  # expectations that ended by TTL: each is a lost or late event

    # -- recording ----------------------------------------------------------------------------

    def expect_write(self, owner: Hashable, obj: Mapping[str, Any]) -> None:
        """After a create, patch or update: ``obj`` is the API's answer (with its rv)."""
        meta = _meta(obj)
        self._put(owner, Expectation(
            name=str(meta["name"]), op=Op.WRITE, uid=str(meta.get("uid") or ""),
            resource_version=resource_version(obj), obj=dict(obj), since=self._clock()))

    def expect_delete(self, owner: Hashable, name: str, uid: str = "",
                      resource_version: int = 0) -> None:
        """After a delete was accepted (or answered 404: then the informer will drop it)."""
        self._put(owner, Expectation(name=name, op=Op.DELETE, uid=uid,
                                     resource_version=resource_version, obj=None,
                                     since=self._clock()))

    def _put(self, owner: Hashable, exp: Expectation) -> None:
        with self._lock:
            self._by_owner.setdefault(owner, {})[exp.name] = exp

    def observed_deleted(self, owner: Hashable, name: str, uid: str = "") -> None:
        """The informer delivered a DELETED event: any expectation on that object is over
        (a write of an object now gone must not be laid over the store)."""
        with self._lock:
            group = self._by_owner.get(owner)
            exp = group.get(name) if group else None
            if group is None or exp is None or (uid and exp.uid and uid != exp.uid):
                return
            del group[name]
            if not group:
                del self._by_owner[owner]

    def forget(self, owner: Hashable) -> None:
        """The owner is gone: drop everything about it."""
        with self._lock:
            self._by_owner.pop(owner, None)

    # -- reading ------------------------------------------------------------------------------

    def view(self, owner: Hashable, seen: Mapping[str, Obj] | Iterable[Obj],
             seen_through: int = 0) -> dict[str, Obj]:
        """The children a pass should act on: the informer's (``seen``, by name or as a list),
        with our writes it does not show yet laid over and our deletions it still shows taken
        out. Expectations that are met or expired end here.

        ``seen_through``: the resourceVersion up to which the informer applied every event,
        read *before* ``seen`` was taken (so ``seen`` is at least that new); 0 when unknown.
        """
        current = dict(seen) if isinstance(seen, Mapping) else {
            str(_meta(o)["name"]): o for o in seen}
        now = self._clock()
        with self._lock:
            group = self._by_owner.get(owner)
            if not group:
                return current
            for name, exp in list(group.items()):
                copy = current.get(name)
                if exp.met(copy, seen_through):
                    del group[name]
                elif now - exp.since > self._ttl:
                    del group[name]
                    self.expired_total += 1
                elif exp.op is Op.WRITE:
                    assert exp.obj is not None
                    current[name] = exp.obj
                else:
                    current.pop(name, None)
            if not group:
                del self._by_owner[owner]
        return current

    def pending(self, owner: Hashable) -> list[Expectation]:
        """Unexpired expectations of ``owner`` as of the last ``view`` (oldest first)."""
        now = self._clock()
        with self._lock:
            group = self._by_owner.get(owner) or {}
            return sorted((e for e in group.values() if now - e.since <= self._ttl),
                          key=lambda e: e.since)

    def satisfied(self, owner: Hashable) -> bool:
        """client-go's SatisfiedExpectations: nothing of ours is still in flight (or it all
        expired). A caller that must not act on a stale cache at all can wait for this."""
        return not self.pending(owner)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(g) for g in self._by_owner.values())


class Expectations:
    """The reconciler's view: Jobs (many per BackgroundJob) and the one CronJob, each kind in
    its own ``OwnerExpectations``, on the reconciler's datetime clock.

    ``seen_through`` (``Informer.seen_through`` or ``Informer.snapshot``) is optional
    everywhere; without it a write whose object vanished unseen ends by the TTL.
    """

    def __init__(self, clock: Callable[[], datetime],
                 ttl: timedelta = timedelta(seconds=EXPECTATIONS_TTL)) -> None:
        def seconds() -> float:
            return clock().timestamp()

        self._jobs = OwnerExpectations(ttl.total_seconds(), seconds)
        self._cronjobs = OwnerExpectations(ttl.total_seconds(), seconds)

    def wrote_job(self, key: Hashable, job: Mapping[str, Any]) -> None:
        self._jobs.expect_write(key, job)

    def deleted_job(self, key: Hashable, name: str, uid: str = "") -> None:
        self._jobs.expect_delete(key, name, uid)

    def jobs(self, key: Hashable, seen: Iterable[Obj], seen_through: int = 0) -> list[Obj]:
        """The informer's Jobs with our writes laid over and our deletions taken out."""
        return list(self._jobs.view(key, seen, seen_through).values())

    def wrote_cronjob(self, key: Hashable, cronjob: Mapping[str, Any] | None) -> None:
        """After creating or updating the CronJob; None after deleting it (nothing to wait
        for: the mode switched and the pass no longer reads it)."""
        self._cronjobs.forget(key)
        if cronjob is not None:
            self._cronjobs.expect_write(key, cronjob)

    def cronjob(self, key: Hashable, seen: Obj | None, seen_through: int = 0) -> Obj | None:
        """Our CronJob write while the informer has not shown it, else the informer's."""
        ours = [e.name for e in self._cronjobs.pending(key)]
        view = self._cronjobs.view(key, [seen] if seen is not None else [], seen_through)
        for name in ours:
            if name in view:
                return view[name]
        return seen

    def forget(self, key: Hashable) -> None:
        self._jobs.forget(key)
        self._cronjobs.forget(key)

    def __len__(self) -> int:
        return len(self._jobs) + len(self._cronjobs)
