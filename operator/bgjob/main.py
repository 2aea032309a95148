"""``bgjob-operator``: runs the operator against the current kubeconfig or in-cluster config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import kopf

from bgjob import api, serving
from bgjob.handlers import Controller, register
from bgjob.k8s import Kube, load_config
from bgjob.leader import Elector
from bgjob.metrics import Metrics

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="bgjob-operator",
        description="Reconciles BackgroundJobs (bgjob.dev/v1alpha1) into native CronJobs and Jobs.",
    )
    parser.add_argument("--namespace", action="append", default=None,
                        help="watch only this namespace (repeatable; env BGJOB_NAMESPACE, "
                        "comma-separated; default: all namespaces)")
    parser.add_argument("--metrics-port", type=int, default=int(env("BGJOB_METRICS_PORT", "8080")),
                        help="Prometheus /metrics port (env BGJOB_METRICS_PORT, default 8080)")
    parser.add_argument("--health-port", type=int, default=int(env("BGJOB_HEALTH_PORT", "8081")),
                        help="/healthz and /readyz port (env BGJOB_HEALTH_PORT, default 8081)")
    parser.add_argument("--log-format", choices=["text", "json"],
                        default=env("BGJOB_LOG_FORMAT", "text"),
                        help="log format (env BGJOB_LOG_FORMAT, default text)")
    parser.add_argument("--peering", action="store_true",
                        default=env("BGJOB_PEERING", "") in ("1", "true"),
                        help="run with other replicas, one active: leader election on a "
                        "coordination.k8s.io Lease (env BGJOB_PEERING=1)")
    parser.add_argument("--lease-namespace", default=env("BGJOB_LEASE_NAMESPACE")
                        or env("POD_NAMESPACE") or _own_namespace(),
                        help="namespace of the Lease with --peering (env BGJOB_LEASE_NAMESPACE "
                        "or POD_NAMESPACE; default: the pod's own namespace)")
    parser.add_argument("--lease-name", default=env("BGJOB_LEASE_NAME", "bgjob-operator"),
                        help="name of the Lease with --peering (default bgjob-operator)")
    parser.add_argument("--kubeconfig", default=env("KUBECONFIG"),
                        help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    parser.add_argument("--listen-address", default=env("BGJOB_LISTEN_ADDRESS", "0.0.0.0"),
                        help="address for the metrics and health servers")
    args = parser.parse_args(argv)
    if args.namespace is None:
        args.namespace = [n for n in env("BGJOB_NAMESPACE", "").split(",") if n]
    return args


def _own_namespace() -> str:
    try:
        with open(SA_NAMESPACE_FILE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def identity() -> str:
    """The Lease holder's name: the pod's (downward API), else host and process, unique."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def setup_logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("kopf").setLevel(logging.WARNING)
    if os.environ.get("BGJOB_DEBUG"):
        logging.getLogger("bgjob").setLevel(logging.DEBUG)
    if os.environ.get("BGJOB_DEBUG") == "kopf":  # the framework's own view, for diagnosis
        logging.getLogger("kopf").setLevel(logging.DEBUG)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds a diff base (a deep copy of the whole body) for every event, but only
    on.create/update/field handlers use it, and we register none. Skipping it saved a tenth of
    the operator's CPU in a 1,000-object cold start (py-spy), and kopf never has a reason to
    write its last-handled-configuration annotation onto a user's object."""

    def build(self, *, body: kopf.Body,
              extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure(settings: kopf.OperatorSettings) -> None:
    """Keep kopf's bookkeeping out of status and under our annotation prefix."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    settings.posting.enabled = False
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # The handler returns at once (the work queue runs the pass), so a per-object worker has
    # nothing to wait for: let it go soon, with the raw event it holds (5 s by default).
    settings.batching.idle_timeout = 0.5
    # No batching.worker_limit: kopf holds every object's worker until all indexes finished
    # their initial listing, and a global limit below the number of objects deadlocks the
    # start (found by the benchmark: 100 BackgroundJobs and a limit of 64 never started).


def _elector(args: argparse.Namespace, kube: Kube, controller: Controller,
             metrics: Metrics) -> Elector | None:
    """With ``--peering``, leader election gates the controller and fences every write;
    without it this replica is always the active one."""
    if not args.peering:
        metrics.leader.set(1)
        return None
    controller.leading = False
    elector = Elector(Kube(kube.api_client), args.lease_namespace, args.lease_name,
                      identity(), on_started=controller.start_leading,
                      on_stopped=controller.stop_leading, metrics=metrics)
    kube.fence = elector.leading
    return elector


def _on_signals(elector: Elector, stop: asyncio.Event) -> None:
    """Replace kopf's SIGTERM/SIGINT handlers (once it installed them): hand the Lease back
    first, so a standby takes over while this process is still shutting kopf down."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def release_then_stop() -> None:
        await elector.release()
        stop.set()

    def handle() -> None:
        if not tasks:
            tasks.add(loop.create_task(release_then_stop()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle)


async def run(args: argparse.Namespace) -> None:
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    kube = Kube(load_config(args.kubeconfig))
    metrics = Metrics()
    metrics.track_writes(kube.writes)
    health = serving.Health()
    serving.KopfErrors.attach(health)
    registry = kopf.OperatorRegistry()
    controller = Controller(kube, metrics)
    register(registry, controller)
    elector = _elector(args, kube, controller, metrics)
    stop = asyncio.Event()

    @kopf.on.startup(registry=registry)
    def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: through the official client's in-cluster config, which honours
        # KUBERNETES_SERVICE_HOST/PORT as bgjob.k8s does; kopf's login_with_service_account
        # always dials kubernetes.default.svc, which a pod without cluster DNS cannot resolve
        # (found on the real node: kopf never connected while the rest of the process did).
        return kopf.login_with_kubeconfig(**kwargs) if not os.environ.get(
            "KUBERNETES_SERVICE_HOST") else kopf.login_via_client(**kwargs)

    runners = await serving.start(args.listen_address, args.metrics_port, args.health_port,
                                  metrics, health)
    probe = asyncio.create_task(serving.probe_api(kube, args.namespace, health))
    health.caches = controller.synced
    syncing = asyncio.create_task(controller.sync(args.namespace))
    # kopf runs standalone in every replica: its only handler (on.event) writes nothing and
    # feeds the caches, which a standby keeps warm; leader election gates what acts.
    health.operator_task = asyncio.create_task(kopf.operator(
        registry=registry,
        standalone=True,
        namespaces=args.namespace,
        clusterwide=not args.namespace,
        ready_flag=health.started,
        stop_flag=stop,
    ))
    electing: asyncio.Task[None] | None = None
    if elector is not None:
        electing = asyncio.create_task(elector.run())
        await asyncio.wait([health.operator_task, asyncio.create_task(health.started.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        _on_signals(elector, stop)
    try:
        await health.operator_task
    finally:
        if elector is not None and electing is not None:
            electing.cancel()
            await elector.release()
        probe.cancel()
        syncing.cancel()
        controller.stop()
        for runner in runners:
            await runner.cleanup()


def _memory_report_on_sigusr1(path: str) -> None:
    """``BGJOB_TRACEMALLOC=<file>``: on SIGUSR1, write where the heap was allocated (for the
    benchmark's memory-per-object measure)."""
    import tracemalloc

    tracemalloc.start(12)

    def dump(*_: Any) -> None:
        snapshot = tracemalloc.take_snapshot()
        stats = snapshot.statistics("lineno")
        total = sum(s.size for s in stats)
        with open(path, "w") as f:
            f.write(f"total {total / 1024:.0f} KiB in {len(stats)} lines\n")
            for stat in stats[:40]:
                f.write(f"{stat.size / 1024:10.0f} KiB {stat.count:8d}  {stat.traceback}\n")
            for stat in snapshot.statistics("traceback")[:5]:
                f.write(f"\n{stat.size / 1024:.0f} KiB {stat.count}\n")
                f.write("\n".join(stat.traceback.format()) + "\n")

    signal.signal(signal.SIGUSR1, dump)


M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core), and
    memory freed in a thread's arena rarely goes back to the system. With 16 reconcile threads
    and the informer threads, a burst of passes left RSS far above the live heap: at 1,000
    BackgroundJobs with history 265 MiB after the burst against 167 MiB after a restart
    (benchmark, launch cells). Two arenas is what ``MALLOC_ARENA_MAX=2`` gives; set here, before
    any thread starts, so it holds however the operator is run. Not glibc (musl): nothing."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return  # the environment decides
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def main(argv: Sequence[str] | None = None) -> None:
    limit_malloc_arenas()
    args = parse_args(argv)
    setup_logging(args.log_format)
    if os.environ.get("BGJOB_TRACEMALLOC"):
        _memory_report_on_sigusr1(os.environ["BGJOB_TRACEMALLOC"])
    logging.getLogger("bgjob").info("bgjob-operator starting (namespaces: %s)",
                                    ", ".join(args.namespace) or "all")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
