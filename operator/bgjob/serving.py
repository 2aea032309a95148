"""The operator's two small HTTP servers: ``/metrics`` and ``/healthz`` + ``/readyz``.

Both run on the operator's event loop (aiohttp, which kopf brings), so a blocked loop fails the
liveness probe, which is the point of it.

* ``/healthz``: the process is alive and kopf's watch loop is still running.
* ``/readyz``: kopf finished starting, the informers listed every Job and CronJob of ours,
  the operator's own listing of BackgroundJobs in every watched namespace succeeded within
  the last ``READY_WINDOW`` seconds (connected to the API server, the CRD is installed, RBAC
  allows the list), and kopf reported no failed API request in the last
  ``KOPF_ERROR_WINDOW`` seconds. The last check is there because kopf talks to the API through
  its own HTTP session and credentials: a pod once went Ready while every kopf request failed
  on DNS, and our own listing could not see it. kopf logs each failed attempt before it
  retries, and that log record is the signal (``KopfErrors``). A standby replica is ready too:
  it serves ``/metrics`` and keeps its caches warm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bgjob import api
from bgjob.k8s import Kube, path_for
from bgjob.metrics import Metrics

log = logging.getLogger("bgjob.serving")
# Unready within READY_WINDOW of losing the API server (the contract says 35 s at most): the
# probe's own timeout plus one interval fit well inside it.
PROBE_INTERVAL = 5.0
PROBE_TIMEOUT = 5.0
READY_WINDOW = 20.0
KOPF_ERROR_WINDOW = 20.0  # kopf retries a failed request after 1-2 s, so errors keep coming
KOPF_CLIENT_LOGGERS = "kopf._cogs.clients"
# kopf logs a failed request through its caller's logger (kopf._core.reactor.observation for the
# start-up discovery, kopf.objects for patches), not its client module's: listen to all of kopf
# and pick the failed requests by their wording. Seen on the real node: a pod went Ready while
# every discovery request failed, because the records came from the observation logger.
KOPF_LOGGER = "kopf"
KOPF_FAILED_REQUEST = "Request attempt "


@dataclass
class Health:
    started: asyncio.Event = field(default_factory=asyncio.Event)
    listed_at: float | None = None
    last_error: str = ""
    operator_task: asyncio.Task[None] | None = None
    caches: asyncio.Event | None = None  # the child informers' initial listing is done
    kopf_error_at: float | None = None
    kopf_error: str = ""

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
        if self.kopf_error_at is not None and now - self.kopf_error_at < KOPF_ERROR_WINDOW:
            return False, f"kopf cannot reach the API server: {self.kopf_error}"
        return True, "ok"


class KopfErrors(logging.Handler):
    """Notes kopf's failed API requests in ``Health`` (attached to kopf's client loggers)."""

    def __init__(self, health: Health, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(logging.ERROR)
        self.health = health
        self.clock = clock

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith(KOPF_FAILED_REQUEST):
            return
        self.health.kopf_error_at = self.clock()
        self.health.kopf_error = message[:300]

    @classmethod
    def attach(cls, health: Health) -> KopfErrors:
        handler = cls(health)
        logging.getLogger(KOPF_LOGGER).addHandler(handler)
        return handler


async def probe_api(kube: Kube, namespaces: Sequence[str], health: Health,
                    interval: float = PROBE_INTERVAL) -> None:
    """List BackgroundJobs (one item per namespace is enough) now and every ``interval``."""
    scopes: list[str | None] = list(namespaces) or [None]
    paths = [path_for(api.API_VERSION, api.PLURAL, ns) for ns in scopes]
    while True:
        try:
            for path in paths:
                await asyncio.to_thread(kube.request, "GET", path, None, "application/json",
                                        [("limit", "1")], PROBE_TIMEOUT)
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
