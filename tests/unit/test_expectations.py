"""In-flight expectations, table-driven with an injected clock (cases read as sentences)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bgjob.expectations import (
    EXPECTATIONS_TTL,
    Expectations,
    Op,
    OwnerExpectations,
    resource_version,
)

OWNER = ("ns", "nightly")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def job(name: str, rv: int, uid: str = "", **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": uid or f"uid-{name}",
                         "resourceVersion": str(rv), **meta},
            "status": {}}


def rvs(view: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {name: resource_version(obj) for name, obj in view.items()}


@dataclass
class Case:
    name: str
    writes: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[tuple[str, str]] = field(default_factory=list)   # (name, uid)
    informer: list[dict[str, Any]] = field(default_factory=list)
    seen_through: int = 0
    elapsed: float = 0.0
    expect: dict[str, int] = field(default_factory=dict)           # name -> rv in the view
    left: int = 0                                                  # expectations still pending


CASES = [
    Case("nothing written, the view is the informer's",
         informer=[job("a", 5)], expect={"a": 5}),
    Case("created, informer has not shown it: a second pass sees our Job",
         writes=[job("a", 10)], expect={"a": 10}, left=1),
    Case("created, informer shows it at our rv: expectation met",
         writes=[job("a", 10)], informer=[job("a", 10)], expect={"a": 10}),
    Case("created, informer shows a newer rv: the informer wins",
         writes=[job("a", 10)], informer=[job("a", 12)], expect={"a": 12}),
    Case("patched, informer still shows the older copy: ours is laid over",
         writes=[job("a", 20)], informer=[job("a", 15)], expect={"a": 20}, left=1),
    Case("created, then deleted by someone before the informer saw it, informer past our rv",
         writes=[job("a", 10)], informer=[], seen_through=11, expect={}),
    Case("created, informer not yet past our rv: still ours",
         writes=[job("a", 10)], informer=[], seen_through=9, expect={"a": 10}, left=1),
    Case("created, the event is lost and the rv unknown: the TTL ends it",
         writes=[job("a", 10)], elapsed=EXPECTATIONS_TTL + 1, expect={}),
    Case("created, just inside the TTL: still ours",
         writes=[job("a", 10)], elapsed=EXPECTATIONS_TTL - 1, expect={"a": 10}, left=1),
    Case("created, but the informer shows another object of that name: its uid wins",
         writes=[job("a", 10, uid="ours")], informer=[job("a", 8, uid="theirs")],
         expect={"a": 8}),
    Case("deleted, informer still shows it: a second pass does not see it",
         deletes=[("a", "uid-a")], informer=[job("a", 5), job("b", 6)], expect={"b": 6},
         left=1),
    Case("deleted, informer dropped it: expectation met",
         deletes=[("a", "uid-a")], informer=[job("b", 6)], expect={"b": 6}),
    Case("deleted, informer shows it terminating (a finalizer holds it): visible again",
         deletes=[("a", "uid-a")],
         informer=[job("a", 7, deletionTimestamp="2026-11-23T10:00:00Z")], expect={"a": 7}),
    Case("deleted, a new object took the name: the new one is visible",
         deletes=[("a", "old")], informer=[job("a", 9, uid="new")], expect={"a": 9}),
    Case("deleted, the event is lost: the TTL shows the informer's copy again",
         deletes=[("a", "uid-a")], informer=[job("a", 5)], elapsed=EXPECTATIONS_TTL + 1,
         expect={"a": 5}),
    Case("written and deleted in one pass: the delete is the last word",
         writes=[job("a", 10)], deletes=[("a", "uid-a")], informer=[job("a", 10)],
         expect={}, left=1),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_view(case: Case) -> None:
    clock = Clock()
    exp = OwnerExpectations(clock=clock)
    for obj in case.writes:
        exp.expect_write(OWNER, obj)
    for name, uid in case.deletes:
        exp.expect_delete(OWNER, name, uid)
    clock.now += case.elapsed
    view = exp.view(OWNER, case.informer, seen_through=case.seen_through)
    assert rvs(view) == case.expect
    assert len(exp.pending(OWNER)) == case.left
    assert exp.satisfied(OWNER) is (case.left == 0)


def test_the_same_view_twice_acts_once() -> None:
    """A fast second pass: the create is remembered until the watch delivers it, then gone."""
    exp = OwnerExpectations(clock=Clock())
    exp.expect_write(OWNER, job("run-1", 30))
    assert "run-1" in exp.view(OWNER, [])
    assert "run-1" in exp.view(OWNER, [])            # still in flight: never create it again
    assert rvs(exp.view(OWNER, [job("run-1", 31)])) == {"run-1": 31}
    assert exp.satisfied(OWNER) and len(exp) == 0
    assert exp.view(OWNER, []) == {}                 # deleted later: not re-injected


def test_expiry_is_counted() -> None:
    clock = Clock()
    exp = OwnerExpectations(ttl=10, clock=clock)
    exp.expect_write(OWNER, job("a", 1))
    exp.expect_delete(OWNER, "b")
    clock.now += 11
    assert exp.pending(OWNER) == []                  # expired ones are not pending
    exp.view(OWNER, [job("b", 2)])
    assert exp.expired_total == 2 and len(exp) == 0


def test_owners_and_the_mapping_form_are_separate() -> None:
    exp = OwnerExpectations(clock=Clock())
    exp.expect_write(("ns", "x"), job("a", 4))
    assert exp.view(("ns", "y"), {"a": job("a", 1)}) == {"a": job("a", 1)}
    assert rvs(exp.view(("ns", "x"), {"a": job("a", 1)})) == {"a": 4}


def test_a_deleted_event_ends_a_write_at_once() -> None:
    exp = OwnerExpectations(clock=Clock())
    exp.expect_write(OWNER, job("a", 10, uid="u1"))
    exp.observed_deleted(OWNER, "a", uid="other")    # another object's event: no effect
    assert "a" in exp.view(OWNER, [])
    exp.observed_deleted(OWNER, "a", uid="u1")
    assert exp.view(OWNER, []) == {} and exp.satisfied(OWNER)
    exp.observed_deleted(OWNER, "never-known")       # harmless


def test_forget_drops_an_owner() -> None:
    exp = OwnerExpectations(clock=Clock())
    exp.expect_write(OWNER, job("a", 1))
    exp.expect_delete(OWNER, "b")
    exp.forget(OWNER)
    assert len(exp) == 0 and exp.view(OWNER, []) == {}


def test_pending_lists_what_is_in_flight_oldest_first() -> None:
    clock = Clock()
    exp = OwnerExpectations(clock=clock)
    exp.expect_write(OWNER, job("a", 1))
    clock.now += 1
    exp.expect_delete(OWNER, "b", uid="uid-b", resource_version=7)
    got = [(e.name, e.op, e.uid, e.resource_version) for e in exp.pending(OWNER)]
    assert got == [("a", Op.WRITE, "uid-a", 1), ("b", Op.DELETE, "uid-b", 7)]


def test_what_we_wrote_is_a_copy() -> None:
    exp = OwnerExpectations(clock=Clock())
    obj = job("a", 3)
    exp.expect_write(OWNER, obj)
    obj["metadata"] = {"name": "changed"}
    assert resource_version(exp.view(OWNER, [])["a"]) == 3


@pytest.mark.parametrize(("rv", "value"), [("42", 42), ("", 0), (None, 0), ("abc", 0)])
def test_resource_version(rv: str | None, value: int) -> None:
    assert resource_version({"metadata": {"resourceVersion": rv}}) == value
    assert resource_version(None) == 0


def test_passes_in_threads_do_not_corrupt_it() -> None:
    exp = OwnerExpectations(clock=Clock())

    def work(i: int) -> None:
        owner = ("ns", f"o{i % 4}")
        for n in range(200):
            exp.expect_write(owner, job(f"j{i}-{n}", n + 1))
            exp.view(owner, [job(f"j{i}-{n}", n + 1)])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(exp) == 0


class DateClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def names(jobs: list[dict[str, Any]]) -> dict[str, int]:
    return {j["metadata"]["name"]: resource_version(j) for j in jobs}


def test_the_reconcilers_view_of_jobs() -> None:
    clock = DateClock()
    exp = Expectations(clock)
    exp.wrote_job(OWNER, job("run-1", 10))
    exp.deleted_job(OWNER, "old-1")
    seen = [job("old-1", 3), job("other", 4)]
    assert names(exp.jobs(OWNER, seen)) == {"other": 4, "run-1": 10}
    assert names(exp.jobs(OWNER, [job("other", 4)], seen_through=11)) == {"other": 4}
    assert len(exp) == 0


def test_the_reconcilers_jobs_expire_on_its_own_clock() -> None:
    clock = DateClock()
    exp = Expectations(clock, ttl=timedelta(minutes=5))
    exp.wrote_job(OWNER, job("run-1", 10))
    clock.now += timedelta(minutes=4)
    assert names(exp.jobs(OWNER, [])) == {"run-1": 10}
    clock.now += timedelta(minutes=2)
    assert exp.jobs(OWNER, []) == []


def test_the_reconcilers_view_of_its_cronjob() -> None:
    clock = DateClock()
    exp = Expectations(clock)
    assert exp.cronjob(OWNER, None) is None
    exp.wrote_cronjob(OWNER, job("nightly", 20))
    assert resource_version(exp.cronjob(OWNER, job("nightly", 19))) == 20   # watch behind
    assert resource_version(exp.cronjob(OWNER, None)) == 20
    assert resource_version(exp.cronjob(OWNER, job("nightly", 21))) == 21  # caught up
    assert resource_version(exp.cronjob(OWNER, job("nightly", 19))) == 19   # and forgotten
    exp.wrote_cronjob(OWNER, job("nightly", 30))
    exp.wrote_cronjob(OWNER, None)                                        # deleted: no wait
    assert exp.cronjob(OWNER, None) is None
    exp.wrote_cronjob(OWNER, job("nightly", 40))
    exp.forget(OWNER)
    assert exp.cronjob(OWNER, None) is None and len(exp) == 0
