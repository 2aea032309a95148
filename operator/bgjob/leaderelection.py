"""Leader election on a ``coordination.k8s.io/v1`` Lease: the pure rules, in client-go's shape.

Why our own Lease and not kopf peering: with kopf peering, replicas of equal priority all pause,
nothing bounds how long a dead leader blocks the others, and kopf's pause does not reach our own
loops (informers, the work queue's timers, the reconcile pool). A Lease gives one holder at a
time, a renew deadline after which a leader that cannot renew stops acting on its own, and a
release on shutdown so a standby takes over at once.

The safety argument, as in client-go: the holder renews every ``retry_period``; it stops acting
once ``renew_deadline`` has passed since its last successful renewal; a candidate takes the Lease
only after it saw the same record unchanged for ``lease_duration`` (measured on its own clock,
so no two clocks need agree); ``renew_deadline < lease_duration`` leaves a margin between the
two. Every write carries the resourceVersion it was decided from, so of two candidates deciding
on the same record only one write succeeds.

Nothing here does I/O; ``bgjob.leader`` runs the loop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

LEASE_API_VERSION = "coordination.k8s.io/v1"
LEASE_PLURAL = "leases"


@dataclass(frozen=True)
class Timing:
    """client-go's shape (15 s / 10 s / 2 s there), scaled to the contract's 15 s handover.

    A standby first sees the dead holder's last renewal up to one ``retry_period`` after it was
    written, and takes over on its first try at least ``lease_duration`` later: the handover
    after a crash takes up to ``lease_duration + 2 * retry_period`` plus one pass. With
    client-go's numbers that is 19 s; with 10 s / 1.5 s it is 13 s. The renew deadline keeps
    client-go's ratio (two thirds of the lease), so a leader that cannot renew stops acting
    3 s before anyone may take over.
    """

    lease_duration: float = 10.0
    renew_deadline: float = 7.0
    retry_period: float = 1.5


@dataclass(frozen=True)
class Record:
    """The Lease's spec as the election reads it, with the resourceVersion it came with."""

    holder: str = ""
    lease_duration: float = 0.0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0
    resource_version: str = ""


class Action(enum.Enum):
    CREATE = "create"    # no Lease yet: create it, holding it
    ACQUIRE = "acquire"  # free or expired: take it over (transitions + 1)
    RENEW = "renew"      # ours: renew it
    WAIT = "wait"        # someone else holds it and it has not expired


@dataclass(frozen=True)
class Decision:
    action: Action
    write: Record | None  # the record to write (CREATE, ACQUIRE, RENEW), else None
    reason: str


def micro_time(now: datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(lease: dict[str, Any] | None) -> Record | None:
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    return Record(holder=spec.get("holderIdentity") or "",
                  lease_duration=float(spec.get("leaseDurationSeconds") or 0),
                  acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                  transitions=int(spec.get("leaseTransitions") or 0),
                  resource_version=str((lease.get("metadata") or {}).get("resourceVersion", "")))


def manifest(namespace: str, name: str, record: Record) -> dict[str, Any]:
    """The whole Lease to create or to PUT; the resourceVersion makes a PUT conditional."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if record.resource_version:
        meta["resourceVersion"] = record.resource_version
    return {"apiVersion": LEASE_API_VERSION, "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": record.holder or None,
                     "leaseDurationSeconds": max(1, round(record.lease_duration)),
                     "acquireTime": record.acquire_time, "renewTime": record.renew_time,
                     "leaseTransitions": record.transitions}}


def decide(observed: Record | None, observed_at: float, now: float, wall: datetime,
           identity: str, timing: Timing) -> Decision:
    """What ``identity`` does about the Lease it just read.

    ``observed`` is the record read now (None: there is no Lease); ``observed_at`` is when, on
    this process's monotonic clock ``now``, this candidate first saw that exact record (a
    changed record restarts the count); ``wall`` is the wall-clock time written into the Lease
    for people and other tools to read. Returns:

    * CREATE: there is no Lease; create one held by us;
    * RENEW: we hold it; write a new renewTime (keeping acquireTime and transitions);
    * ACQUIRE: it is free (no holder, after a release) or its holder has not renewed for
      ``leaseDurationSeconds`` as we measured; take it, one more transition;
    * WAIT: another holder's lease is still running.
    """
    stamp = micro_time(wall)
    if observed is None:
        return Decision(Action.CREATE, Record(identity, timing.lease_duration, stamp, stamp, 0),
                        "no lease yet")
    if observed.holder == identity:
        return Decision(Action.RENEW, replace(observed, lease_duration=timing.lease_duration,
                                              renew_time=stamp), "ours")
    duration = observed.lease_duration or timing.lease_duration
    if observed.holder and now - observed_at < duration:
        return Decision(Action.WAIT, None,
                        f"held by {observed.holder} for {duration - (now - observed_at):.1f}s more")
    why = "free" if not observed.holder else f"{observed.holder} stopped renewing"
    return Decision(Action.ACQUIRE, replace(observed, holder=identity,
                                            lease_duration=timing.lease_duration,
                                            acquire_time=stamp, renew_time=stamp,
                                            transitions=observed.transitions + 1), why)


def still_leading(renewed_at: float | None, now: float, timing: Timing) -> bool:
    """Whether the holder may still act: its last successful write of the Lease is younger
    than the renew deadline. Checked at every write, so a leader whose loop is stuck in a
    hanging request stops acting on time all the same."""
    return renewed_at is not None and now - renewed_at < timing.renew_deadline


def released(observed: Record, wall: datetime) -> Record:
    """What a holder writes on a graceful shutdown: no holder and a one-second duration, so
    every candidate sees it free on its next try (client-go's ReleaseOnCancel)."""
    stamp = micro_time(wall)
    return replace(observed, holder="", lease_duration=1.0, renew_time=stamp,
                   acquire_time=stamp)
