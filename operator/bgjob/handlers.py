"""kopf wiring: what triggers a reconcile. Thin on purpose; the logic is in ``reconciler``.

Only an ``on.event`` handler is used for BackgroundJobs: it writes nothing onto our objects (no
finalizer, no last-handled-configuration annotation, nothing in status), so a GitOps tool sees
no drift. The children (Jobs, CronJobs) come from our own informers (``bgjob.informer``), and
no pass runs before they finished their initial listing: that is what lets a restarted operator
see all Jobs before it judges any BackgroundJob.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kopf

from bgjob import accounting, api
from bgjob.informer import Informer, pack, unpack
from bgjob.k8s import Kube, KubeError, NotFound, NotLeader
from bgjob.metrics import Metrics
from bgjob.reconciler import Observed, Reconciler
from bgjob.workqueue import MAX_ERROR_BACKOFF, WorkQueue

log = logging.getLogger("bgjob.handlers")
Key = tuple[str, str]
# Passes run in threads because the API client blocks. Python's default pool is sized cpu+4,
# and in a container cpu is the node's count, not the pod's limit: a fixed pool keeps the number
# of passes in flight the same everywhere (below the client's 32 connections). On the 2-core
# benchmark machine 16 instead of 6 made no measurable difference; CPU was the limit there.
RECONCILE_THREADS = 16


class Controller:
    """The operator's glue: child informers, the newest BackgroundJob bodies, and the work
    queue (``bgjob.workqueue``) that runs the reconciler's passes in a thread pool."""

    def __init__(self, kube: Kube, metrics: Metrics | None = None) -> None:
        self.kube = kube
        self.metrics = metrics
        self.reconciler = Reconciler(kube, metrics=metrics)
        self.bgjobs: dict[Key, bytes] = {}  # the newest body kopf delivered, packed
        # The run-now token of each BackgroundJob and when this process first saw it: a manual
        # run is due then (bgjob_run_start_delay_seconds; the object keeps no write time).
        self.run_now_seen: dict[Key, tuple[str, datetime]] = {}
        self.informers: dict[str, list[Informer]] = {"jobs": [], "cronjobs": []}
        self.synced = asyncio.Event()
        # Passes run only while both hold: caches synced and this replica the leader (always,
        # without leader election). A standby keeps its caches warm and acts on nothing.
        self.leading = True
        self.acting = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pool = ThreadPoolExecutor(RECONCILE_THREADS, thread_name_prefix="reconcile")
        self.queue: WorkQueue[Key] = WorkQueue(
            self._pass, gate=self.acting, max_backoff=MAX_ERROR_BACKOFF,
            describe=lambda key: "/".join(key), what="reconcile")

    async def sync(self, namespaces: Sequence[str]) -> None:
        """Start the child informers and open the gate once every one has listed."""
        self.loop = asyncio.get_running_loop()
        scopes: list[str | None] = list(namespaces) or [None]
        for ns in scopes:
            for plural, group in self.informers.items():
                informer = Informer(self.kube, "batch/v1", plural, ns, self._child_changed)
                group.append(informer)
                informer.start()
        while not all(i.synced.is_set() for i in self._all_informers()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # no thread parked on the events: shutdown stays quick
        self.synced.set()
        log.info("caches synced: %d Jobs, %d CronJobs",
                 *(sum(len(i) for i in group) for group in self.informers.values()))
        self._open_gate()

    def _open_gate(self) -> None:
        if self.leading and self.synced.is_set():
            self.acting.set()
            # Jobs of BackgroundJobs deleted while no replica acted: their deletion events
            # are gone, so look at every key once (each is checked against the API first).
            for key in {k for i in self.informers["jobs"] for k in i.owner_keys()}:
                self.pool.submit(self._release_orphans, key)

    def start_leading(self) -> None:
        """This replica became the active one: every known BackgroundJob gets a pass, which
        re-derives its timers, retries and schedules from status (a standby armed none)."""
        self.leading = True
        self._open_gate()
        for key in list(self.bgjobs):
            self.queue.add_after(key, 0)

    def stop_leading(self) -> None:
        """Leadership is lost: no new pass starts, and no timer is left to start one. Passes
        already running in threads are stopped at their next write by the Kube fence."""
        self.leading = False
        self.acting.clear()
        self.queue.cancel_timers()

    def _all_informers(self) -> list[Informer]:
        return [i for group in self.informers.values() for i in group]

    def stop(self) -> None:
        for informer in self._all_informers():
            informer.stopped.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _child_changed(self, key: Key) -> None:
        """From an informer thread: a Job or CronJob of ``key`` changed."""
        if self.loop is None:
            return
        if key in self.bgjobs:
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.reconcile(key)))
        elif self.acting.is_set():
            self.pool.submit(self._release_orphans, key)

    def _release_orphans(self, key: Key) -> None:
        """Jobs of a BackgroundJob that is gone, being deleted (the garbage collector follows
        the owner): nothing will count them, so their accounting finalizer goes, or they would
        be stuck. Only deleting Jobs: a live one may belong to an object kopf has not shown."""
        held = [job for informer in self.informers["jobs"] for job in informer.get(key)
                if accounting.has_finalizer(job) and accounting.deleting(job)]
        if not held or key in self.bgjobs or not self.acting.is_set():
            return
        try:  # kopf may not have shown a BackgroundJob that exists: ask before letting go
            self.kube.get(api.API_VERSION, api.PLURAL, key[0], key[1])
            return  # it exists: its own pass counts and releases these Jobs
        except NotFound:
            pass
        except KubeError as exc:
            log.debug("cannot tell whether %s/%s exists: %s", *key, exc)
            return
        for job in held:
            if not self.acting.is_set():
                return
            meta = job["metadata"]
            try:
                self.kube.patch("batch/v1", "jobs", meta["namespace"], meta["name"], {
                    "metadata": {"resourceVersion": meta.get("resourceVersion"),
                                 "finalizers": accounting.without_finalizer(job)}})
                log.info("released Job %s/%s of a deleted BackgroundJob", key[0],
                         meta["name"])
            except NotLeader:
                return
            except KubeError as exc:
                log.debug("release of %s/%s: %s", meta["namespace"], meta["name"], exc)

    def seen(self, key: Key, body: Any) -> None:
        self.bgjobs[key] = pack(body, keep_spec=True)
        token = ((body.get("metadata") or {}).get("annotations") or {}).get(api.ANN_RUN_NOW)
        if token and self.run_now_seen.get(key, ("",))[0] != token:
            self.run_now_seen[key] = (token, datetime.now(UTC))

    def observe(self, key: Key) -> Observed | None:
        packed = self.bgjobs.get(key)
        if packed is None:
            return None
        bj = unpack(packed)
        uid = bj["metadata"]["uid"]
        jobs_through, jobs = self._snapshot("jobs", key)
        cronjobs_through, cronjobs = self._snapshot("cronjobs", key)
        owned = [c for c in cronjobs if any(r.get("uid") == uid for r in
                                            c["metadata"].get("ownerReferences") or [])]
        chosen = owned or cronjobs
        current = (bj["metadata"].get("annotations") or {}).get(api.ANN_RUN_NOW)
        seen = self.run_now_seen.get(key)
        return Observed(bj=bj, jobs=jobs, cronjob=chosen[0] if chosen else None,
                        jobs_seen_through=jobs_through, cronjobs_seen_through=cronjobs_through,
                        run_now_seen=seen[1] if seen and seen[0] == current else None)

    def _snapshot(self, kind: str, key: Key) -> tuple[int, list[dict[str, Any]]]:
        """The children of ``key`` from every informer of ``kind``, with the lowest number
        they all hold every event up to (a conservative ``seen_through``)."""
        through: int | None = None
        objs: list[dict[str, Any]] = []
        for informer in self.informers[kind]:
            seen, found = informer.snapshot(key)
            through = seen if through is None else min(through, seen)
            objs.extend(found)
        return through or 0, objs

    async def reconcile(self, key: Key) -> None:
        """A pass of ``key`` (awaited, so kopf's worker for the object waits for it). On a
        standby, nothing: kopf's handler returns at once, so the next event still refreshes
        the cached body, and ``start_leading`` queues every key."""
        if self.leading:
            await self.queue.add(key)

    def enqueue(self, key: Key) -> None:
        """A pass of ``key``, without waiting for it: kopf's handler returns at once, so its
        per-object worker (which holds the whole raw event, managed fields and all) ends
        after ``batching.idle_timeout`` instead of living until the pass ran. Awaiting it
        kept one worker and one event per BackgroundJob alive while thousands of passes
        queued after a restart (tracemalloc: the largest part of the heap at that moment)."""
        if self.leading:
            self.queue.spawn(key)

    async def _pass(self, key: Key) -> float | None:
        """One reconcile of ``key`` (the queue holds its lock): the requeue delay, or None."""
        obs = self.observe(key)
        if obs is None:
            self.forget(key)
            return None
        started = time.monotonic()
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(
                self.pool, self.reconciler.reconcile, obs)
        except NotLeader:
            log.info("pass of %s/%s stopped: no longer the leader", *key)
            return None
        except Exception:
            self._count("error", started)
            raise
        self._count("success", started)
        return outcome.requeue_after

    def _count(self, result: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.reconciled(result, time.monotonic() - started)

    def requeue(self, key: Key, delay: float) -> None:
        self.queue.add_after(key, delay)

    def forget(self, key: Key) -> None:
        self.run_now_seen.pop(key, None)
        self.queue.forget(key)
        self.reconciler.forget(key)


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    @kopf.on.event(api.GROUP, api.VERSION, api.PLURAL, registry=registry)
    async def bgjob_event(**kw: Any) -> None:
        key = (kw["namespace"], kw["name"])
        if kw["event"].get("type") == "DELETED":
            controller.bgjobs.pop(key, None)
            controller.forget(key)
            if controller.acting.is_set():  # its Jobs' deletion events may have come first
                controller.pool.submit(controller._release_orphans, key)
            return
        controller.seen(key, kw["body"])
        controller.enqueue(key)
