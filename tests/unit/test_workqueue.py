"""The work queue: serialised per key, coalesced, one timer per key, backoff on failure.

Deterministic: passes block on events the test releases, timers go to a fake scheduler the
test fires by hand, and the jitter is fixed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from bgjob.workqueue import WorkQueue


@dataclass
class Timer:
    delay: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Scheduler:
    timers: list[Timer] = field(default_factory=list)

    def __call__(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(delay, callback)
        self.timers.append(timer)
        return timer

    def live(self) -> list[float]:
        return [t.delay for t in self.timers if not t.cancelled]

    def fire(self) -> None:
        """Run every live timer's callback, as the loop would when its time comes."""
        due, self.timers = [t for t in self.timers if not t.cancelled], []
        for t in due:
            t.callback()


class Work:
    """A ``process`` that records calls and blocks until released (when asked to)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.running: set[str] = set()
        self.gates: dict[str, asyncio.Event] = {}
        self.results: dict[str, list[float | Exception | None]] = {}
        self.max_parallel = 0

    def hold(self, key: str) -> asyncio.Event:
        self.gates[key] = asyncio.Event()
        return self.gates[key]

    async def __call__(self, key: str) -> float | None:
        self.calls.append(key)
        self.running.add(key)
        self.max_parallel = max(self.max_parallel, len(self.running))
        try:
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
            results = self.results.get(key) or [None]
            result = results.pop(0) if len(results) > 1 else results[0]
            if isinstance(result, Exception):
                raise result
            return result
        finally:
            self.running.discard(key)


def make(work: Work, gate: asyncio.Event | None = None) -> tuple[WorkQueue[str], Scheduler]:
    sched = Scheduler()
    queue: WorkQueue[str] = WorkQueue(work, gate=gate, call_later=sched,
                                      jitter=lambda lo, hi: 1.0, max_backoff=300.0)
    return queue, sched


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_one_pass_at_a_time_per_key_and_bursts_coalesce() -> None:
    async def go() -> None:
        work = Work()
        queue, _ = make(work)
        release = work.hold("a")
        first = asyncio.ensure_future(queue.add("a"))
        await settle()
        burst = [asyncio.ensure_future(queue.add("a")) for _ in range(5)]
        await settle()
        assert work.calls == ["a"]                # the burst waits behind the running pass
        assert queue.pending == {"a"}             # as one queued pass
        release.set()
        await asyncio.gather(first, *burst)
        assert work.calls == ["a", "a"] and work.max_parallel == 1
        assert queue.pending == set()

    asyncio.run(go())


def test_different_keys_run_side_by_side() -> None:
    async def go() -> None:
        work = Work()
        queue, _ = make(work)
        ra, rb = work.hold("a"), work.hold("b")
        tasks = [asyncio.ensure_future(queue.add(k)) for k in ("a", "b")]
        await settle()
        assert work.running == {"a", "b"}
        ra.set()
        rb.set()
        await asyncio.gather(*tasks)

    asyncio.run(go())


def test_nothing_runs_before_the_gate_opens() -> None:
    async def go() -> None:
        work = Work()
        gate = asyncio.Event()
        queue, _ = make(work, gate)
        task = asyncio.ensure_future(queue.add("a"))
        coalesced = asyncio.ensure_future(queue.add("a"))
        await settle()
        assert work.calls == [] and queue.pending == {"a"}
        gate.set()
        await asyncio.gather(task, coalesced)
        assert work.calls == ["a"]

    asyncio.run(go())


def test_a_requeue_delay_sets_one_timer_and_a_newer_one_replaces_it() -> None:
    async def go() -> None:
        work = Work()
        work.results["a"] = [30.0, 5.0, None]
        queue, sched = make(work)
        await queue.add("a")
        assert sched.live() == [30.0]
        await queue.add("a")
        assert sched.live() == [5.0]              # the 30 s timer was cancelled
        sched.fire()
        await settle()
        assert work.calls == ["a", "a", "a"] and sched.live() == []

    asyncio.run(go())


def test_negative_delays_run_at_once() -> None:
    async def go() -> None:
        work = Work()
        queue, sched = make(work)
        queue.add_after("a", -3)
        assert sched.live() == [0.0]

    asyncio.run(go())


@pytest.mark.parametrize(("failures", "delay"), [(1, 2.0), (2, 4.0), (5, 32.0), (8, 256.0),
                                                 (9, 300.0), (30, 300.0)])
def test_backoff_doubles_up_to_the_cap(failures: int, delay: float) -> None:
    queue: WorkQueue[str] = WorkQueue(Work(), jitter=lambda lo, hi: 1.0)
    assert queue.backoff(failures) == delay


def test_backoff_is_spread_by_the_jitter() -> None:
    spread: list[tuple[float, float]] = []

    def jitter(lo: float, hi: float) -> float:
        spread.append((lo, hi))
        return hi

    queue: WorkQueue[str] = WorkQueue(Work(), jitter=jitter)
    assert queue.backoff(3) == pytest.approx(9.6)
    assert spread == [(0.8, 1.2)]


def test_failures_back_off_and_a_success_resets_them() -> None:
    async def go() -> None:
        work = Work()
        work.results["a"] = [RuntimeError("boom"), RuntimeError("boom"), 60.0]
        queue, sched = make(work)
        await queue.add("a")
        assert queue.failures == {"a": 1} and sched.live() == [2.0]
        sched.fire()
        await settle()
        assert queue.failures == {"a": 2} and sched.live() == [4.0]
        sched.fire()
        await settle()
        assert queue.failures == {} and sched.live() == [60.0]
        assert work.calls == ["a", "a", "a"]

    asyncio.run(go())


def test_forget_drops_the_timer_lock_and_failures() -> None:
    async def go() -> None:
        work = Work()
        work.results["a"] = [RuntimeError("boom")]
        queue, sched = make(work)
        await queue.add("a")
        assert "a" in queue.locks and queue.failures == {"a": 1}
        queue.forget("a")
        assert sched.live() == [] and queue.locks == {} and queue.failures == {}
        assert queue.timers == {}
        queue.forget("never-seen")                # harmless

    asyncio.run(go())


def test_the_event_loops_timer_is_the_default() -> None:
    async def go() -> None:
        work = Work()
        queue: WorkQueue[str] = WorkQueue(work)
        queue.add_after("a", 0.01)
        await asyncio.sleep(0.05)
        await settle()
        assert work.calls == ["a"]

    asyncio.run(go())


def test_a_gate_that_closes_while_a_pass_waits_for_the_lock_holds_it() -> None:
    """Leadership lost while a pass of the same key runs: the queued pass does not start."""
    async def go() -> None:
        work = Work()
        gate = asyncio.Event()
        gate.set()
        queue, _ = make(work, gate)
        release = work.hold("a")
        first = asyncio.ensure_future(queue.add("a"))
        await settle()
        second = asyncio.ensure_future(queue.add("a"))
        await settle()
        gate.clear()          # step down
        release.set()
        await first
        await settle()
        assert work.calls == ["a"] and not second.done()
        gate.set()            # leading again
        await second
        assert work.calls == ["a", "a"]

    asyncio.run(go())


def test_cancel_timers_leaves_no_timer_to_act() -> None:
    async def go() -> None:
        queue, sched = make(Work())
        queue.add_after("a", 5)
        queue.add_after("b", 9)
        queue.cancel_timers()
        assert sched.live() == [] and queue.timers == {}

    asyncio.run(go())
