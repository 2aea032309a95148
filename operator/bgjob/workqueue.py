"""A per-key work queue for asyncio, in the spirit of client-go's rate-limited workqueue.

Why a queue of keys and not of events: a pass reads the newest state from caches, so any number
of changes to one object while a pass runs need exactly one more pass, never one each. The queue
guarantees, per key:

* at most one pass at a time (two passes of one object would both act on the same state);
* coalescing: while a pass is waiting to run, further requests for the key are dropped;
* one requeue timer (a newer requeue replaces the older one), for timed work such as the next
  schedule or a pending retry;
* exponential backoff with jitter after a failed pass (``2**n`` seconds, capped), reset by the
  next success, so a broken object neither hot-loops nor waits forever.

Nothing here knows about Kubernetes; ``process`` does the work and returns when to come back.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)
MAX_ERROR_BACKOFF = 300.0
log = logging.getLogger("bgjob.workqueue")


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# (delay, callback) -> handle: the event loop's call_later, injectable for tests.
Scheduler = Callable[[float, Callable[[], None]], Cancellable]


class WorkQueue(Generic[K]):
    """Serialises, coalesces, requeues and backs off ``process(key)`` calls.

    ``process`` returns the delay after which the key wants another pass, or None; an exception
    means the pass failed and is retried with backoff. ``gate``, when given, holds every pass
    until it is set (e.g. until the caches have listed).
    """

    def __init__(self, process: Callable[[K], Awaitable[float | None]], *,
                 gate: asyncio.Event | None = None,
                 max_backoff: float = MAX_ERROR_BACKOFF,
                 jitter: Callable[[float, float], float] = random.uniform,
                 call_later: Scheduler | None = None,
                 describe: Callable[[K], str] = str,
                 what: str = "pass") -> None:
        self._process = process
        self._gate = gate
        self.max_backoff = max_backoff
        self._jitter = jitter
        self._call_later = call_later
        self._describe = describe
        self._what = what
        self.locks: dict[K, asyncio.Lock] = {}
        self.pending: set[K] = set()
        self.timers: dict[K, Cancellable] = {}
        self.failures: dict[K, int] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    async def add(self, key: K) -> None:
        """Run a pass of ``key`` now, after the one in progress, or not at all if one is
        already waiting (it will read the newest state anyway). Returns when the pass this
        call caused (if any) has finished."""
        if key in self.pending:
            return
        self.pending.add(key)
        if self._gate is not None:
            await self._gate.wait()
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:
            if self._gate is not None:  # it may have closed while this waited for the lock
                await self._gate.wait()
            self.pending.discard(key)
            try:
                again = await self._process(key)
            except Exception:
                n = self.failures.get(key, 0) + 1
                self.failures[key] = n
                delay = self.backoff(n)
                log.exception("%s %s failed; retrying in %.0fs", self._what,
                              self._describe(key), delay)
                self.add_after(key, delay)
                return
            self.failures.pop(key, None)
            if again is not None:
                self.add_after(key, again)

    def backoff(self, failures: int) -> float:
        """The delay after ``failures`` failed passes in a row: 2, 4, 8 … seconds up to the
        cap, spread by ±20 % so objects that failed together do not retry together."""
        return min(self.max_backoff, 2.0 ** failures) * self._jitter(0.8, 1.2)

    def add_after(self, key: K, delay: float) -> None:
        """Run a pass of ``key`` after ``delay`` seconds, replacing any earlier timer."""
        old = self.timers.pop(key, None)
        if old is not None:
            old.cancel()
        call_later = self._call_later or asyncio.get_running_loop().call_later
        self.timers[key] = call_later(max(0.0, delay),
                                      lambda: self._spawn(key))

    def spawn(self, key: K) -> None:
        """``add`` without waiting for it (from a caller that must not be held up)."""
        self._spawn(key)

    def _spawn(self, key: K) -> None:
        # The loop keeps only weak references to tasks: hold each until it is done.
        task = asyncio.ensure_future(self.add(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_timers(self) -> None:
        """Drop every requeue timer (a standby keeps none; the next leader re-derives them)."""
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()

    def forget(self, key: K) -> None:
        """The object is gone: drop its timer, lock and failure count."""
        timer = self.timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self.locks.pop(key, None)
        self.failures.pop(key, None)
