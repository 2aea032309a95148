"""kopf wiring: what triggers a reconcile. Thin on purpose; the logic is in ``reconciler``.

Only ``index`` and ``on.event`` handlers are used: they write nothing onto our objects (no
finalizer, no last-handled-configuration annotation, nothing in status), so a GitOps tool sees no
drift. kopf holds every handler back until the indexes finished their initial listing, which is
what lets a restarted operator see all Jobs before it judges any BackgroundJob.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import kopf

from bgjob import api
from bgjob.k8s import Kube
from bgjob.metrics import Metrics
from bgjob.reconciler import Observed, Reconciler

log = logging.getLogger("bgjob.handlers")
Key = tuple[str, str]
MAX_ERROR_BACKOFF = 300.0


def _slim(body: kopf.Body, keep_spec: bool) -> dict[str, Any]:
    """Keep what the reconciler reads: memory per object is a benchmark number."""
    meta = body.get("metadata", {})
    slim_meta = {k: meta[k] for k in ("name", "namespace", "uid", "generation",
                                      "resourceVersion", "creationTimestamp", "labels",
                                      "annotations", "ownerReferences") if k in meta}
    out: dict[str, Any] = {"metadata": _plain(slim_meta), "status": _plain(body.get("status", {}))}
    if keep_spec:
        out["spec"] = _plain(body.get("spec", {}))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class Controller:
    """Serialises reconciles per object, coalesces bursts, and owns the requeue timers."""

    def __init__(self, kube: Kube, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.reconciler = Reconciler(kube, metrics=metrics)
        self.locks: dict[Key, asyncio.Lock] = {}
        self.pending: set[Key] = set()
        self.timers: dict[Key, asyncio.TimerHandle] = {}
        self.failures: dict[Key, int] = {}
        self.bgjobs: kopf.Index[Key, dict[str, Any]] | None = None
        self.jobs: kopf.Index[Key, dict[str, Any]] | None = None
        self.cronjobs: kopf.Index[Key, dict[str, Any]] | None = None

    def bind(self, kwargs: dict[str, Any]) -> None:
        self.bgjobs = kwargs["bgjob_index"]
        self.jobs = kwargs["job_index"]
        self.cronjobs = kwargs["cronjob_index"]

    def observe(self, key: Key) -> Observed | None:
        assert self.bgjobs is not None and self.jobs is not None and self.cronjobs is not None
        if key not in self.bgjobs:
            return None
        bj = next(iter(self.bgjobs[key]))
        uid = bj["metadata"]["uid"]
        jobs = list(self.jobs.get(key, []))
        cronjobs = list(self.cronjobs.get(key, []))
        owned = [c for c in cronjobs if any(r.get("uid") == uid for r in
                                            c["metadata"].get("ownerReferences") or [])]
        chosen = owned or cronjobs
        return Observed(bj=bj, jobs=jobs, cronjob=chosen[0] if chosen else None)

    async def reconcile(self, key: Key) -> None:
        if key in self.pending:
            return  # a pass is already queued and will see the newest state
        self.pending.add(key)
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:
            self.pending.discard(key)
            obs = self.observe(key)
            if obs is None:
                self.forget(key)
                return
            started = time.monotonic()
            try:
                outcome = await asyncio.to_thread(self.reconciler.reconcile, obs)
            except Exception:
                self._count("error", started)
                n = self.failures.get(key, 0) + 1
                self.failures[key] = n
                delay = min(MAX_ERROR_BACKOFF, 2.0 ** n) * random.uniform(0.8, 1.2)
                log.exception("reconcile %s/%s failed; retrying in %.0fs", *key, delay)
                self.requeue(key, delay)
                return
            self._count("success", started)
            self.failures.pop(key, None)
            if outcome.requeue_after is not None:
                self.requeue(key, outcome.requeue_after)

    def _count(self, result: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.reconciled(result, time.monotonic() - started)

    def requeue(self, key: Key, delay: float) -> None:
        old = self.timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self.timers[key] = loop.call_later(
            max(0.0, delay), lambda: asyncio.ensure_future(self.reconcile(key)))

    def forget(self, key: Key) -> None:
        timer = self.timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self.locks.pop(key, None)
        self.failures.pop(key, None)
        self.reconciler.forget(key)


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    owned = {api.LABEL_OWNER: kopf.PRESENT}

    @kopf.index(api.GROUP, api.VERSION, api.PLURAL, id="bgjob_index", registry=registry)
    def bgjob_index(**kw: Any) -> Any:
        return {(kw["namespace"], kw["name"]): _slim(kw["body"], keep_spec=True)}

    @kopf.index("batch", "v1", "jobs", labels=owned, id="job_index", registry=registry)
    def job_index(**kw: Any) -> Any:
        return {(kw["namespace"], kw["labels"][api.LABEL_OWNER]): _slim(kw["body"], False)}

    @kopf.index("batch", "v1", "cronjobs", labels=owned, id="cronjob_index",
                registry=registry)
    def cronjob_index(**kw: Any) -> Any:
        return {(kw["namespace"], kw["labels"][api.LABEL_OWNER]): _slim(kw["body"], False)}

    @kopf.on.event(api.GROUP, api.VERSION, api.PLURAL, registry=registry)
    async def bgjob_event(**kw: Any) -> None:
        controller.bind(kw)
        key = (kw["namespace"], kw["name"])
        if kw["event"].get("type") == "DELETED":
            controller.forget(key)
            return
        await controller.reconcile(key)

    @kopf.on.event("batch", "v1", "jobs", labels=owned, registry=registry)
    async def job_event(**kw: Any) -> None:
        controller.bind(kw)
        await controller.reconcile((kw["namespace"], kw["labels"][api.LABEL_OWNER]))

    @kopf.on.event("batch", "v1", "cronjobs", labels=owned, registry=registry)
    async def cronjob_event(**kw: Any) -> None:
        controller.bind(kw)
        await controller.reconcile((kw["namespace"], kw["labels"][api.LABEL_OWNER]))
