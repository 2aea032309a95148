"""The operator's two small HTTP servers: ``/metrics`` and ``/healthz`` + ``/readyz``.

Both run on the operator's event loop (aiohttp, which kopf brings), so a blocked loop fails the
liveness probe, which is the point of it.

* ``/healthz``: the process is alive and kopf's watch loop is still running.
* ``/readyz``: kopf finished starting, the informers listed every Job and CronJob of ours,
  and the operator's own listing of BackgroundJobs in every watched namespace succeeded within
  the last ``READY_WINDOW`` seconds (connected to the API server, the CRD is installed, RBAC
  allows the list).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bgjob import api
from bgjob.k8s import Kube, path_for
from bgjob.metrics import Metrics

log = logging.getLogger("bgjob.serving")
PROBE_INTERVAL = 10.0
READY_WINDOW = 35.0


@dataclass
class Health:
    started: asyncio.Event = field(default_factory=asyncio.Event)
    listed_at: float | None = None
    last_error: str = ""
    operator_task: asyncio.Task[None] | None = None
    caches: asyncio.Event | None = None  # the child informers' initial listing is done

    def alive(self) -> tuple[bool, str]:
        task = self.operator_task
        if task is not None and task.done():
            return False, "the operator's watch loop has stopped"
        return True, "ok"

    def ready(self, now: float | None = None) -> tuple[bool, str]:
        now = time.monotonic() if now is None else now
        if not self.started.is_set():
            return False, "starting"
        if self.caches is not None and not self.caches.is_set():
            return False, "initial listing of Jobs and CronJobs not done"
        if self.listed_at is None:
            return False, f"initial listing not done: {self.last_error or 'pending'}"
        if now - self.listed_at > READY_WINDOW:
            return False, f"API server unreachable: {self.last_error}"
        return True, "ok"


async def probe_api(kube: Kube, namespaces: Sequence[str], health: Health,
                    interval: float = PROBE_INTERVAL) -> None:
    """List BackgroundJobs (one item per namespace is enough) now and every ``interval``."""
    scopes: list[str | None] = list(namespaces) or [None]
    paths = [path_for(api.API_VERSION, api.PLURAL, ns) for ns in scopes]
    while True:
        try:
            for path in paths:
                await asyncio.to_thread(kube.request, "GET", path, None, "application/json",
                                        [("limit", "1")])
            health.listed_at = time.monotonic()
            health.last_error = ""
        except Exception as exc:
            health.last_error = f"{exc.__class__.__name__}: {exc}"[:300]
            log.warning("API probe failed: %s", health.last_error)
        await asyncio.sleep(interval)


def _answer(check: tuple[bool, str]) -> web.Response:
    ok, why = check
    return web.Response(status=200 if ok else 503, text=why + "\n")


async def start(listen: str, metrics_port: int, health_port: int, metrics: Metrics,
                health: Health) -> list[web.AppRunner]:
    async def metrics_handler(request: web.Request) -> web.Response:
        # ``name[]`` selects families, as prometheus_client's own handler does. Rendering
        # runs in a thread: with thousands of BackgroundJobs a full scrape takes long enough
        # to stall the event loop that serves the watches.
        names = request.query.getall("name[]", [])
        registry = metrics.registry.restricted_registry(names) if names else metrics.registry
        body = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return _answer(health.alive())

    async def readyz(_: web.Request) -> web.Response:
        return _answer(health.ready())

    runners = []
    for port, routes in ((metrics_port, [web.get("/metrics", metrics_handler)]),
                         (health_port, [web.get("/healthz", healthz),
                                        web.get("/readyz", readyz)])):
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, listen, port).start()
        runners.append(runner)
    return runners
