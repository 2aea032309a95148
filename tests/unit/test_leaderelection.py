"""Leader election: the pure decision as a table, and two candidates on an in-memory Lease
with a clock the test moves (no sleeps, no cluster)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from bgjob import leaderelection as le
from bgjob.k8s import AlreadyExists, Kube, KubeError, NotFound, NotLeader
from bgjob.leader import Elector
from bgjob.metrics import Metrics

T = le.Timing()
WALL = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)
STAMP = le.micro_time(WALL)
HELD = le.Record("b", 10, "2026-12-03T17:00:00.000000Z", "2026-12-03T17:59:59.000000Z", 3, "7")


@pytest.mark.parametrize(("name", "observed", "seen_for", "action", "holder", "transitions"), [
    ("no lease: create it, holding it", None, 0.0, le.Action.CREATE, "a", 0),
    ("ours: renew, keep transitions", le.Record("a", 10, "x", "y", 2, "5"), 0.0,
     le.Action.RENEW, "a", 2),
    ("held by another, just seen: wait", HELD, 0.0, le.Action.WAIT, None, None),
    ("held by another, unchanged for 9.9 s: wait", HELD, 9.9, le.Action.WAIT, None, None),
    ("held by another, unchanged for 10 s: take over", HELD, 10.0, le.Action.ACQUIRE, "a", 4),
    ("released (no holder): take it at once", le.Record("", 1, "x", "y", 3, "8"), 0.0,
     le.Action.ACQUIRE, "a", 4),
    ("released with the 1 s duration, seen for a while: take it",
     le.Record("", 1, "x", "y", 3, "8"), 5.0, le.Action.ACQUIRE, "a", 4),
    ("a holder with its own short duration expires on it",
     le.Record("b", 5, "x", "y", 0, "9"), 5.0, le.Action.ACQUIRE, "a", 1),
])
def test_decide(name: str, observed: le.Record | None, seen_for: float, action: le.Action,
                holder: str | None, transitions: int | None) -> None:
    d = le.decide(observed, 100.0, 100.0 + seen_for, WALL, "a", T)
    assert d.action is action, name
    if holder is None:
        assert d.write is None
        return
    assert d.write is not None and d.write.holder == holder
    assert d.write.transitions == transitions and d.write.renew_time == STAMP
    assert d.write.lease_duration == T.lease_duration
    if observed is not None:  # the write is conditional on what was read
        assert d.write.resource_version == observed.resource_version
    if action is le.Action.RENEW:
        assert observed is not None and d.write.acquire_time == observed.acquire_time
    else:
        assert d.write.acquire_time == STAMP


@pytest.mark.parametrize(("renewed_ago", "leading"), [
    (None, False), (0.0, True), (6.9, True), (7.0, False), (30.0, False)])
def test_a_leader_acts_only_within_the_renew_deadline(renewed_ago: float | None,
                                                      leading: bool) -> None:
    renewed_at = None if renewed_ago is None else 50.0 - renewed_ago
    assert le.still_leading(renewed_at, 50.0, T) is leading


def test_release_and_manifest_round_trip() -> None:
    gone = le.released(HELD, WALL)
    assert gone.holder == "" and gone.lease_duration == 1 and gone.transitions == 3
    body = le.manifest("ns", "lease", gone)
    assert body["metadata"]["resourceVersion"] == "7"
    assert body["spec"]["holderIdentity"] is None and body["spec"]["leaseDurationSeconds"] == 1
    assert le.parse(body) == gone
    assert le.parse(None) is None


# -- two candidates on one in-memory Lease ---------------------------------------------------

@dataclass
class LeaseStore:
    """The API server's part: a Lease with resourceVersions and conditional updates."""

    lease: dict[str, Any] | None = None
    rv: int = 0
    down: bool = False
    writes: list[tuple[str, str]] = field(default_factory=list)

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json",
                query: list[tuple[str, str]] | None = None,
                timeout: float = 60) -> dict[str, Any]:
        if self.down:
            raise KubeError(0, "Unreachable", "connection refused")
        if method == "GET":
            if self.lease is None:
                raise NotFound(404, "NotFound", "no lease")
            return json.loads(json.dumps(self.lease))  # type: ignore[no-any-return]
        if method == "POST" and self.lease is not None:
            raise AlreadyExists(409, "AlreadyExists", "exists")
        if method == "PUT" and (self.lease is None or body["metadata"].get("resourceVersion")
                                != self.lease["metadata"]["resourceVersion"]):
            raise KubeError(409, "Conflict", "the object has been modified")
        self.rv += 1
        self.lease = json.loads(json.dumps(body))
        assert self.lease is not None
        self.lease["metadata"]["resourceVersion"] = str(self.rv)
        self.writes.append((method, body["spec"]["holderIdentity"] or ""))
        return self.lease


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def candidate(store: LeaseStore, clock: Clock, name: str,
              log: list[str]) -> tuple[Elector, Metrics]:
    metrics = Metrics()
    kube: Any = store  # duck-typed: the elector only calls request()
    elector = Elector(kube, "ns", "bgjob-operator", name, clock=clock, metrics=metrics,
                      on_started=lambda: log.append(f"{name} started"),
                      on_stopped=lambda: log.append(f"{name} stopped"),
                      wall=lambda: WALL)
    return elector, metrics


def value(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def test_one_leader_then_takeover_after_the_lease_expires() -> None:
    store, clock, log = LeaseStore(), Clock(), list[str]()
    a, ma = candidate(store, clock, "a", log)
    b, mb = candidate(store, clock, "b", log)

    async def scenario() -> None:
        await a.try_once()
        await b.try_once()
        assert log == ["a started"] and a.leading() and not b.leading()
        for _ in range(8):  # a renews every retry period; b keeps waiting
            clock.now += T.retry_period
            await a.try_once()
            await b.try_once()
        assert log == ["a started"]
        store.down = True  # a is cut off from the API server (b too, for now)
        clock.now += T.renew_deadline - 0.1
        assert a.leading()
        clock.now += 0.1
        assert not a.leading()  # the fence closes on its own, loop or no loop
        await a.try_once()
        assert log == ["a started", "a stopped"]
        store.down = False
        await b.try_once()  # the record it sees is unchanged, but it has seen it for 7 s
        assert not b.leading()
        clock.now += T.lease_duration - T.renew_deadline
        await b.try_once()
        assert log == ["a started", "a stopped", "b started"] and b.leading()
        await a.try_once()  # a comes back: it waits
        assert not a.leading() and log[-1] == "b started"

    asyncio.run(scenario())
    assert value(ma, "bgjob_leader") == 0 and value(mb, "bgjob_leader") == 1
    assert value(ma, "bgjob_leader_transitions_total") == 1
    assert value(mb, "bgjob_leader_transitions_total") == 1
    assert store.lease is not None and store.lease["spec"]["leaseTransitions"] == 1


def test_release_hands_over_on_the_next_try() -> None:
    store, clock, log = LeaseStore(), Clock(), list[str]()
    a, _ = candidate(store, clock, "a", log)
    b, _ = candidate(store, clock, "b", log)

    async def scenario() -> None:
        await a.try_once()
        await b.try_once()
        await a.release()
        assert not a.leading() and log == ["a started", "a stopped"]
        assert store.lease is not None and store.lease["spec"]["holderIdentity"] is None
        clock.now += 0.5
        await b.try_once()
        assert b.leading() and log[-1] == "b started"

    asyncio.run(scenario())


def test_two_candidates_deciding_on_the_same_record_one_wins() -> None:
    store, clock, log = LeaseStore(), Clock(), list[str]()
    a, _ = candidate(store, clock, "a", log)
    b, _ = candidate(store, clock, "b", log)

    async def scenario() -> None:
        await a.try_once()
        await a.release()  # free: both will try to take it
        real_get = store.request

        def stale_get(method: str, path: str, *args: Any, **kw: Any) -> dict[str, Any]:
            if method == "GET":
                return snapshot
            return real_get(method, path, *args, **kw)

        snapshot = real_get("GET", "")
        store.request = stale_get  # type: ignore[method-assign]
        await a.try_once()
        await b.try_once()  # decided on the same record: its conditional PUT gets a 409
        assert a.leading() != b.leading()

    asyncio.run(scenario())
    assert sum(1 for _, holder in store.writes[-2:] if holder) == 1


def test_fence_refuses_writes_before_they_are_sent() -> None:
    class Client:
        def param_serialize(self, *args: Any, **kw: Any) -> Any:
            raise AssertionError("a fenced write must not reach the client")

    kube = Kube(Client(), fence=lambda: False)
    with pytest.raises(NotLeader):
        kube.patch("batch/v1", "jobs", "ns", "x", {})
    assert not kube.writes  # refused, not sent: nothing to count


def test_the_timing_keeps_its_promises() -> None:
    """A leader stops before anyone may take over, and a crash is handed over in 15 s with
    room for one pass (the worst case is the lease plus two retry periods)."""
    t = le.Timing()
    assert 1.2 * t.retry_period < t.renew_deadline < t.lease_duration
    assert t.lease_duration + 2 * t.retry_period <= 13.0


def test_no_round_after_the_release_takes_the_lease_back() -> None:
    store, clock, log = LeaseStore(), Clock(), list[str]()
    a, _ = candidate(store, clock, "a", log)

    async def scenario() -> None:
        await a.try_once()
        await a.release()
        clock.now += 1
        await a.try_once()  # the loop's next round, had it not stopped: the lease is free
        assert not a.leading() and log == ["a started", "a stopped"]
        writes = len(store.writes)
        await a.release()  # main's finally releases again after the signal handler did
        assert len(store.writes) == writes

    asyncio.run(scenario())
    assert store.lease is not None and store.lease["spec"]["holderIdentity"] is None
