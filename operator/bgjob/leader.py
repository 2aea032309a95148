"""The leader-election loop: reads the Lease, applies ``leaderelection.decide``, writes.

Thin on purpose: every rule is in ``bgjob.leaderelection``. This module only times the tries,
makes the two API calls per try through ``bgjob.k8s`` (in a thread, with a short timeout, so a
hanging request cannot outlive the renew deadline by much), and tells the controller when this
replica starts and stops acting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bgjob import leaderelection as le
from bgjob.k8s import Kube, KubeError, NotFound, path_for
from bgjob.metrics import Metrics

log = logging.getLogger("bgjob.leader")


class Elector:
    """One candidate. ``leading()`` is the fence the operator's writes ask; ``on_started`` and
    ``on_stopped`` open and close the work queue's gate."""

    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, *,
                 on_started: Callable[[], None], on_stopped: Callable[[], None],
                 metrics: Metrics | None = None, timing: le.Timing | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing or le.Timing()
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.metrics = metrics
        self.clock = clock
        self.wall = wall
        self.renewed_at: float | None = None  # when the last write of ours that held began
        self.acting = False
        self._observed: le.Record | None = None
        self._observed_at = 0.0
        self._timeout = self.timing.renew_deadline / 2
        self._round = asyncio.Lock()  # one round at a time, and none during the release
        self._stopping = False

    def leading(self) -> bool:
        return le.still_leading(self.renewed_at, self.clock(), self.timing)

    async def run(self) -> None:
        log.info("leader election: lease %s/%s as %s", self.namespace, self.name,
                 self.identity)
        while not self._stopping:
            await self.try_once()
            await asyncio.sleep(self.timing.retry_period)

    async def try_once(self) -> None:
        """One round: read, decide, write; then step down if the deadline has passed."""
        async with self._round:
            if not self._stopping:
                await self._round_locked()

    async def _round_locked(self) -> None:
        now = self.clock()
        try:
            record = le.parse(await asyncio.to_thread(self._get))
        except Exception as exc:  # the API is unreachable: the deadline decides
            log.warning("reading the lease failed: %s", exc)
            self._check_deadline()
            return
        if record != self._observed:
            self._observed, self._observed_at = record, now
        decision = le.decide(record, self._observed_at, now, self.wall(), self.identity,
                             self.timing)
        if decision.write is None:
            if self.acting:
                self._step_down(f"the lease is {decision.reason}")
            return
        try:
            written = await asyncio.to_thread(self._write, decision.action, decision.write)
        except KubeError as exc:  # 409: someone else wrote first
            log.log(logging.INFO if exc.status == 409 else logging.WARNING,
                    "lease %s failed: %s", decision.action.value, exc)
            self._check_deadline()
            return
        except Exception as exc:
            log.warning("lease %s failed: %s", decision.action.value, exc)
            self._check_deadline()
            return
        self._observed, self._observed_at = le.parse(written), now
        if self._stopping:  # released meanwhile: this write is undone by the release
            return
        self.renewed_at = now
        if not self.acting:
            self._start(decision.reason)

    def _check_deadline(self) -> None:
        if self.acting and not self.leading():
            self._step_down("could not renew the lease within the renew deadline")

    def _start(self, why: str) -> None:
        self.acting = True
        log.info("became the leader (%s)", why)
        if self.metrics is not None:
            self.metrics.leadership(True)
        self.on_started()

    def _step_down(self, why: str) -> None:
        self.renewed_at = None
        if not self.acting:
            return
        self.acting = False
        log.warning("stopped leading: %s", why)
        if self.metrics is not None:
            self.metrics.leadership(False)
        self.on_stopped()

    async def release(self) -> None:
        """On a graceful shutdown: stop acting, then hand the Lease back so a standby takes
        over on its next try instead of waiting out the lease duration. No round runs after
        this one begins: a renewal in flight could otherwise take the Lease back."""
        self._stopping = True
        self._step_down("shutting down")  # at once, even if a round is still in flight
        async with self._round:
            await self._release_locked()

    async def _release_locked(self) -> None:
        mine = self._observed  # the newest record we read or wrote; the PUT is conditional
        if mine is None or mine.holder != self.identity:
            return
        try:
            written = await asyncio.to_thread(self._write, le.Action.RENEW,
                                              le.released(mine, self.wall()))
            self._observed = le.parse(written)
            log.info("released the lease")
        except Exception as exc:
            log.warning("releasing the lease failed: %s", exc)

    # -- I/O -----------------------------------------------------------------------------

    def _path(self, name: str | None = None) -> str:
        return path_for(le.LEASE_API_VERSION, le.LEASE_PLURAL, self.namespace, name)

    def _get(self) -> dict[str, Any] | None:
        try:
            return self.kube.request("GET", self._path(self.name), timeout=self._timeout)
        except NotFound:
            return None

    def _write(self, action: le.Action, record: le.Record) -> dict[str, Any]:
        body = le.manifest(self.namespace, self.name, record)
        if action is le.Action.CREATE:
            return self.kube.request("POST", self._path(), body, timeout=self._timeout)
        return self.kube.request("PUT", self._path(self.name), body, timeout=self._timeout)
