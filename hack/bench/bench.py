"""The benchmark: bgjob-operator against the local control plane, next to a direct client.

``python hack/bench/bench.py --quick`` (N=100, what CI runs) or ``--full`` (N = 100, 1,000,
5,000). Each N gets a fresh control plane; the operator runs as a subprocess under its own
ServiceAccount with the chart's RBAC (never cluster-admin, so API priority and fairness apply).
API writes are counted from the API server's audit log (user = the operator's ServiceAccount)
and cross-checked with the operator's own ``bgjob_api_writes_total``. Timed cells (direct
client, cold start, restart) are repeated (3 times in full mode, once in quick) and reported
as median with min and max. Launch cells (``launch.py``) measure what users feel: launch skew
and status lag with M runs due at once among N BackgroundJobs with history, and memory.
Results go to ``bench-results/<mode>.json`` and ``<mode>.md``.
Everything listens and connects on 127.0.0.1 and every phase has a deadline, so the run ends
by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "hack" / "cluster"))

import localcluster  # noqa: E402

SA_NS, SA_NAME = "bgjob-system", "bgjob-operator"
SA_USER = f"system:serviceaccount:{SA_NS}:{SA_NAME}"
BJ = "/apis/bgjob.dev/v1alpha1"
PHASE_TIMEOUT = 900.0


# Schedules start 12 hours after the benchmark starts, one minute apart, each firing once a
# month: no two BackgroundJobs fire in the same minute and no run fires while the benchmark
# measures (the 3N indexes used at N=5,000 span about 10 days).
FIRST_MINUTE = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=12)


def spread_cron(i: int) -> str:
    """The i-th minute from FIRST_MINUTE as a monthly cron in UTC (the default zone)."""
    t = FIRST_MINUTE + timedelta(minutes=i)
    return f"{t.minute} {t.hour} {t.day} * *"


def bgjob(name: str, i: int, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedule": {"cron": spread_cron(i)},
        "template": {"spec": {"template": {"spec": {"containers": [
            {"name": "main", "image": "busybox:1.36"}]}}}},
    }
    spec.update(extra)
    return {"apiVersion": "bgjob.dev/v1alpha1", "kind": "BackgroundJob",
            "metadata": {"name": name}, "spec": spec}


def cronjob(name: str, i: int) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
            "spec": {"schedule": spread_cron(i), "jobTemplate": {"spec": {"template": {
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "main", "image": "busybox:1.36"}]}}}}}}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


class Api:
    """A keep-alive async client on 127.0.0.1 (admin cert, or a bearer token)."""

    def __init__(self, lc: localcluster.LocalCluster, token: str | None = None,
                 limit: int = 256) -> None:
        ctx = ssl.create_default_context(cafile=str(lc.pki / "ca.crt"))
        if token is None:
            ctx.load_cert_chain(str(lc.pki / "admin.crt"), str(lc.pki / "admin.key"))
        self.base = lc.server
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=limit), headers=headers,
            timeout=aiohttp.ClientTimeout(total=120))

    async def call(self, method: str, path: str, body: Any = None,
                   content_type: str = "application/json", ok: tuple[int, ...] = (200, 201),
                   ) -> dict[str, Any]:
        for attempt in range(20):
            async with self.session.request(
                    method, self.base + path, data=None if body is None else json.dumps(body),
                    headers={"Content-Type": content_type}) as resp:
                if resp.status == 429 and attempt < 19:
                    await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                    continue
                data = await resp.read()
                if resp.status not in ok:
                    raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
                return dict(json.loads(data)) if data else {}
        raise RuntimeError("unreachable")

    async def close(self) -> None:
        await self.session.close()


async def gather_limited(n: int, conc: int, fn: Callable[[int], Awaitable[Any]]) -> None:
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with sem:
            await fn(i)

    await asyncio.gather(*(one(i) for i in range(n)))


class Audit:
    """Writes by the operator's ServiceAccount, read from the API server's audit log."""

    def __init__(self, lc: localcluster.LocalCluster) -> None:
        self.path = lc.logs / "audit.log"

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def writes(self, since: int, until: int | None = None, agent: str = "") -> Counter[str]:
        out: Counter[str] = Counter()
        with open(self.path, "rb") as f:
            f.seek(since)
            data = f.read() if until is None else f.read(until - since)
        for line in data.splitlines():
            ev = json.loads(line)
            if ev.get("user", {}).get("username") != SA_USER or ev.get("stage") != \
                    "ResponseComplete" or not ev.get("userAgent", "").startswith(agent):
                continue
            ref = ev.get("objectRef") or {}
            res = ref.get("resource", "?") + (f"/{ref['subresource']}"
                                              if ref.get("subresource") else "")
            out[f"{ev['verb']} {res}"] += 1
        return out


class OperatorProc:
    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.kubeconfig, self.log = kubeconfig, log
        self.health = localcluster.free_port()
        self.metrics = localcluster.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bgjob", "--listen-address", "127.0.0.1", "--health-port",
             str(self.health), "--metrics-port", str(self.metrics), "--kubeconfig",
             str(self.kubeconfig)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            preexec_fn=localcluster._die_with_parent)
        out.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None

    def _stat(self) -> list[str]:
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()

    def cpu_seconds(self) -> float:
        fields = self._stat()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        assert self.proc is not None
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]

    def scrape(self, name: str = "") -> dict[str, float]:
        query = f"?name[]={name}" if name else ""  # one family: cheap for the operator
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics{query}",
                                    timeout=10) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def processed(self) -> int:
        """BackgroundJobs that had a successful pass in this process: each one gets its
        gauges then (bgjob_active_runs is set for every object)."""
        try:
            return sum(1 for k in self.scrape("bgjob_active_runs")
                       if k.startswith("bgjob_active_runs{"))
        except OSError:
            return 0

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health}/readyz",
                                        timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], interval: float = 0.2,
                   limit: float = PHASE_TIMEOUT) -> None:
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {limit:.0f}s")
        await asyncio.sleep(interval)


async def converged(api: Api, ns: str, n: int) -> bool:
    """All n BackgroundJobs Ready with their CronJob."""
    bjs = await api.call("GET", f"{BJ}/namespaces/{ns}/backgroundjobs")
    ready = sum(1 for b in bjs["items"] if any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (b.get("status") or {}).get("conditions") or []))
    if ready < n:
        return False
    cjs = await api.call("GET", f"/apis/batch/v1/namespaces/{ns}/cronjobs?limit=1")
    remaining = int(cjs["metadata"].get("remainingItemCount") or 0)
    return len(cjs["items"]) + remaining >= n


async def create_namespace(api: Api, ns: str) -> None:
    await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": ns}}, ok=(201, 409))


def operator_identity(lc: localcluster.LocalCluster, work: Path) -> Path:
    """The chart's ServiceAccount and RBAC (rendered by helm), and a kubeconfig with its
    token."""
    rendered = subprocess.run(
        [str(lc.bin_dir / "helm"), "template", "bgjob-operator", str(ROOT / "charts" /
         "bgjob-operator"), "-n", SA_NS, "--set", "crds.enabled=false"],
        capture_output=True, text=True, check=True,
        env=dict(os.environ, HELM_CACHE_HOME=str(work / "helm"),
                 HELM_CONFIG_HOME=str(work / "helm"), HELM_DATA_HOME=str(work / "helm"))).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in (
        "ClusterRole", "ClusterRoleBinding")]
    lc.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    lc.kubectl("wait", "--for=condition=Established", "--timeout=60s",
               "crd/backgroundjobs.bgjob.dev")
    lc.kubectl("create", "namespace", SA_NS, check=False)
    lc.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))
    return lc.service_account_kubeconfig(SA_NS, SA_NAME, work / "operator.kubeconfig")


def token_of(kubeconfig: Path) -> str:
    doc = yaml.safe_load(kubeconfig.read_text())
    return str(doc["users"][0]["user"]["token"])


async def direct_client(lc: localcluster.LocalCluster, token: str, n: int,
                        sweep: list[int], repeat: int) -> dict[str, Any]:
    """The fastest plain client: N CronJob POSTs, async and keep-alive, under the operator's
    own ServiceAccount; each concurrency of the sweep is timed ``repeat`` times and the best
    concurrency is chosen by its median."""
    admin = Api(lc)
    times: dict[int, list[float]] = {}
    try:
        for r in range(repeat):
            for conc in sweep:
                ns = f"direct-{conc}-{r}"
                await create_namespace(admin, ns)
                api = Api(lc, token, limit=conc)
                started = time.monotonic()
                await gather_limited(n, conc, lambda i, ns=ns, api=api: api.call(  # type: ignore[misc]
                    "POST", f"/apis/batch/v1/namespaces/{ns}/cronjobs", cronjob(f"cj-{i}", i)))
                times.setdefault(conc, []).append(time.monotonic() - started)
                await api.close()
                await admin.call("DELETE", f"/api/v1/namespaces/{ns}", ok=(200, 202))
                await wait_gone(admin, ns)
    finally:
        await admin.close()
    best = min(times, key=lambda c: statistics.median(times[c]))
    return {"seconds_by_concurrency": {c: spread(v) for c, v in times.items()},
            "best_concurrency": best, "best_seconds": statistics.median(times[best]),
            "best_spread": spread(times[best])}


async def wait_gone(api: Api, ns: str) -> None:
    """Namespace deletion finished (the namespace controller removed everything in it), so
    the next repeat starts from the same state."""
    async def gone() -> bool:
        try:
            await api.call("GET", f"/api/v1/namespaces/{ns}")
        except RuntimeError as exc:
            return ": 404 " in str(exc)
        return False

    await wait_for(f"namespace {ns} deleted", gone, 0.5)


async def trigger_latency(lc: localcluster.LocalCluster, token: str, count: int,
                          burst: bool) -> dict[str, Any]:
    """run-now PATCH → the Job seen on a watch; and a direct Job POST → seen on the watch."""
    admin = Api(lc)
    ns = f"latency-{'burst' if burst else 'idle'}"
    await create_namespace(admin, ns)
    targets = 10
    for i in range(2 * targets):  # suspended Jobs: no pods, only the trigger path is measured
        await admin.call("POST", f"{BJ}/namespaces/{ns}/backgroundjobs", bgjob(
            f"lat-{i}" if i < targets else f"noise-{i}", i, concurrencyPolicy="Allow",
            history={"runRecords": 5},
            template={"spec": {"suspend": True, "template": {"spec": {"containers": [
                {"name": "main", "image": "busybox:1.36"}]}}}}))
    await wait_for("latency targets ready", lambda: converged(admin, ns, 2 * targets))
    seen: dict[str, float] = {}
    watch_ready = asyncio.Event()

    async def watch() -> None:
        listing = await admin.call("GET", f"/apis/batch/v1/namespaces/{ns}/jobs")
        rv = listing["metadata"]["resourceVersion"]
        url = (f"{admin.base}/apis/batch/v1/namespaces/{ns}/jobs?watch=1&resourceVersion={rv}"
               "&allowWatchBookmarks=false")
        async with admin.session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            watch_ready.set()
            async for line in resp.content:
                ev = json.loads(line)
                if ev["type"] == "ADDED":
                    seen.setdefault(ev["object"]["metadata"]["name"], time.monotonic())

    watcher = asyncio.create_task(watch())
    await watch_ready.wait()
    noise_stop = asyncio.Event()

    async def noise() -> None:
        """A burst on other objects: schedule edits, 20 at a time, up to ~100 per second
        (each one a reconcile pass, a CronJob update and a status write)."""
        i = 0
        while not noise_stop.is_set():
            await asyncio.gather(*(admin.call(
                "PATCH", f"{BJ}/namespaces/{ns}/backgroundjobs/noise-{targets + (i + k) % targets}",
                {"spec": {"schedule": {"cron": spread_cron(5000 + (i + k) % 3000)}}},
                "application/merge-patch+json") for k in range(20)))
            i += 20
            await asyncio.sleep(0.2)

    noisy = asyncio.create_task(noise()) if burst else None
    trig: list[float] = []
    direct: list[float] = []
    sa = Api(lc, token)
    from bgjob.manifests import manual_job_name  # the operator's own naming rule

    async def seen_within(name: str, t0: float) -> float:
        deadline = t0 + 30
        while name not in seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {name} not seen")
            await asyncio.sleep(0.001)
        return seen[name] - t0

    try:
        for k in range(count):
            target = f"lat-{k % targets}"
            token_ = f"t{k}"
            t0 = time.monotonic()
            await admin.call("PATCH", f"{BJ}/namespaces/{ns}/backgroundjobs/{target}",
                             {"metadata": {"annotations": {"bgjob.dev/run-now": token_}}},
                             "application/merge-patch+json")
            trig.append(await seen_within(manual_job_name(target, token_), t0))
            name = f"direct-{k}"
            t0 = time.monotonic()
            await sa.call("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", {
                "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never",
                         "containers": [{"name": "main", "image": "busybox:1.36"}]}}}})
            direct.append(await seen_within(name, t0))
    finally:
        noise_stop.set()
        if noisy:
            await noisy
        watcher.cancel()
        await sa.close()
        await admin.close()
    ms = 1000.0
    return {"triggers": count, "trigger_p50_ms": pct(trig, 0.5) * ms,
            "trigger_p99_ms": pct(trig, 0.99) * ms, "direct_p50_ms": pct(direct, 0.5) * ms,
            "direct_p99_ms": pct(direct, 0.99) * ms,
            "added_p50_ms": (pct(trig, 0.5) - pct(direct, 0.5)) * ms,
            "added_p99_ms": (pct(trig, 0.99) - pct(direct, 0.99)) * ms}


def per(c: Counter[str], n: int) -> dict[str, float]:
    return {k: round(v / n, 3) for k, v in sorted(c.items())}


async def run_cell(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cell: dict[str, Any] = {"n": n}
    with localcluster.running(work / f"plane-{n}") as lc:
        kc = operator_identity(lc, work)
        token = token_of(kc)
        audit = Audit(lc)
        admin = Api(lc)
        op = OperatorProc(kc, work / f"operator-{n}.log")
        try:
            # 1. the direct client's time for N CronJobs (best of a concurrency sweep)
            cell["direct"] = await direct_client(lc, token, n, args.sweep, args.repeat)

            # 2. memory at N = 0
            op.start()
            await wait_for("operator ready", lambda: asyncio.sleep(0, op.ready()), 0.2, 60)
            await asyncio.sleep(2)
            cell["rss_kib_n0"] = op.rss_kib()
            op.stop()

            # 3. cold start: N pre-created, then the operator starts; repeated in a fresh
            #    namespace (the previous one deleted first), median and spread reported
            colds: list[float] = []
            cpus: list[float] = []
            rss: list[int] = []
            for r in range(args.repeat):
                ns = f"cold-{r}"
                await create_namespace(admin, ns)
                await gather_limited(n, 64, lambda i, ns=ns: admin.call(  # type: ignore[misc]
                    "POST", f"{BJ}/namespaces/{ns}/backgroundjobs", bgjob(f"bj-{i}", i)))
                mark = audit.mark()
                op.start()
                await wait_for("cold convergence", lambda ns=ns: converged(  # type: ignore[misc]
                    admin, ns, n), 0.25)
                colds.append(time.monotonic() - op.started)
                cpus.append(op.cpu_seconds())
                await asyncio.sleep(3)
                rss.append(op.rss_kib())
                if r == args.repeat - 1:
                    cell["writes_per_create"] = per(audit.writes(mark), n)
                    break
                op.stop()
                await admin.call("DELETE", f"/api/v1/namespaces/{ns}", ok=(200, 202))
                await wait_gone(admin, ns)
            cold_ns = f"cold-{args.repeat - 1}"
            cell["cold_seconds"] = statistics.median(colds)
            cell["cold_spread"] = spread(colds)
            cell["cold_cpu_seconds"] = statistics.median(cpus)
            cell["cold_cpu_spread"] = spread(cpus)
            cell["rss_kib"] = int(statistics.median(rss))
            cell["rss_spread"] = spread([float(v) for v in rss])
            cell["kib_per_object"] = (cell["rss_kib"] - cell["rss_kib_n0"]) / n

            # 4. streamed in: N more while the operator runs
            await create_namespace(admin, "stream")
            started = time.monotonic()
            await gather_limited(n, 64, lambda i: admin.call(
                "POST", f"{BJ}/namespaces/stream/backgroundjobs", bgjob(f"bj-{i}", i + n)))
            await wait_for("stream convergence", lambda: converged(admin, "stream", n), 0.25)
            cell["stream_seconds"] = time.monotonic() - started
            await asyncio.sleep(3)

            # 5. idle: nothing changes, nothing should be written
            idle = args.idle_long if n == 1000 else args.idle
            mark = audit.mark()
            await asyncio.sleep(idle)
            cell["idle_seconds"] = idle
            cell["idle_writes"] = sum(audit.writes(mark).values())

            # 6. restart: all 2N objects processed again, at what cost (repeated)
            restarts: list[float] = []
            restart_writes: list[int] = []
            total = 2 * n
            for _ in range(args.repeat):
                op.stop()
                mark = audit.mark()
                op.start()
                await wait_for("restart processed", lambda: asyncio.sleep(
                    0, op.ready() and op.processed() >= total), 0.1)
                restarts.append(time.monotonic() - op.started)
                await asyncio.sleep(3)
                restart_writes.append(sum(audit.writes(mark).values()))
            since_restart = mark
            cell["restart_seconds"] = statistics.median(restarts)
            cell["restart_spread"] = spread(restarts)
            cell["restart_writes"] = max(restart_writes)
            cell["rss_kib_2n"] = op.rss_kib()

            # 7. spec update, run, delete: writes per object
            k = min(n, 50)
            mark = audit.mark()
            await gather_limited(k, 16, lambda i: admin.call(
                "PATCH", f"{BJ}/namespaces/{cold_ns}/backgroundjobs/bj-{i}",
                {"spec": {"schedule": {"cron": spread_cron(i + 2 * n)}}},
                "application/merge-patch+json"))

            async def updated() -> bool:
                items = (await admin.call("GET", f"{BJ}/namespaces/{cold_ns}/backgroundjobs"))[
                    "items"]
                return all((b.get("status") or {}).get("observedGeneration") ==
                           b["metadata"]["generation"] for b in items)

            await wait_for("spec updates", updated)
            await asyncio.sleep(3)
            cell["writes_per_update"] = per(audit.writes(mark), k)

            mark = audit.mark()
            await gather_limited(k, 16, lambda i: admin.call(
                "PATCH", f"{BJ}/namespaces/{cold_ns}/backgroundjobs/bj-{i}",
                {"metadata": {"annotations": {"bgjob.dev/run-now": "bench"}}},
                "application/merge-patch+json"))

            async def ran() -> bool:
                items = (await admin.call("GET", f"{BJ}/namespaces/{cold_ns}/backgroundjobs"))[
                    "items"]
                done = [b for b in items
                        if ((b.get("status") or {}).get("stats") or {}).get("runs", 0) >= 1]
                return len(done) >= k

            await wait_for("runs", ran)
            await asyncio.sleep(3)
            cell["writes_per_run"] = per(audit.writes(mark), k)

            mark = audit.mark()
            await gather_limited(k, 16, lambda i: admin.call(
                "DELETE", f"{BJ}/namespaces/{cold_ns}/backgroundjobs/bj-{i}"))
            await asyncio.sleep(5)
            cell["writes_per_delete"] = per(audit.writes(mark), k)

            # 8. trigger latency, idle and under a burst (at the smallest N only)
            if n == min(args.n):
                cell["latency_idle"] = await trigger_latency(lc, token, args.triggers, False)
                cell["latency_burst"] = await trigger_latency(lc, token, args.triggers, True)

            # 9. cross-check: the operator's own counter of its writes against the audit
            #    log's writes by the operator's user agent since this process started
            own = sum(v for key, v in op.scrape("bgjob_api_writes_total").items()
                      if key.startswith("bgjob_api_writes_total{"))
            seen = sum(audit.writes(since_restart, agent="bgjob-operator/").values())
            cell["crosscheck"] = {"operator_counter": own, "audit_log": seen}
        finally:
            op.stop()
            await admin.close()
    return cell


def versions() -> dict[str, str]:
    import kopf
    import kubernetes

    from bgjob import __version__

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    return {"bgjob_operator": __version__, "commit": commit, "python": platform.python_version(),
            "kopf": kopf.__version__ if hasattr(kopf, "__version__") else "?",
            "kubernetes_client": kubernetes.__version__,
            "control_plane": localcluster.build().name, "cpus": str(os.cpu_count()),
            "machine": platform.machine(), "kernel": platform.release()}


def span(s: dict[str, float]) -> str:
    """Median with min-max of the repeats."""
    return f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})"


def table(result: dict[str, Any]) -> str:
    rows = [f"Median (min-max) of {result['repeat']} repeats where a range is shown.", "",
            "| N | cold start (s) | direct client (s) | ratio | streamed (s) | writes/create | "
            "idle writes | restart (s) / writes | RSS (MiB) | KiB/object | CPU-s per 1k |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in result["cells"]:
        direct = c["direct"]["best_seconds"]
        writes = ", ".join(f"{k} {v:g}" for k, v in c["writes_per_create"].items())
        rss = c["rss_spread"]
        rows.append(
            f"| {c['n']} | {span(c['cold_spread'])} | {direct:.2f} (conc "
            f"{c['direct']['best_concurrency']}) | {c['cold_seconds'] / direct:.1f}x | "
            f"{c['stream_seconds']:.1f} | {writes} | {c['idle_writes']} in "
            f"{c['idle_seconds']:.0f} s | {span(c['restart_spread'])} / {c['restart_writes']} | "
            f"{rss['median'] / 1024:.0f} ({rss['min'] / 1024:.0f}-{rss['max'] / 1024:.0f}) | "
            f"{c['kib_per_object']:.1f} | {1000 * c['cold_cpu_seconds'] / c['n']:.1f} |")
    lat = [c for c in result["cells"] if "latency_idle" in c]
    if lat:
        rows.append("")
        rows.append("| trigger latency | p50 (ms) | p99 (ms) | direct Job POST p50 / p99 (ms) |"
                    " added p50 / p99 (ms) |")
        rows.append("|---|---|---|---|---|")
        for kind in ("latency_idle", "latency_burst"):
            d = lat[0][kind]
            rows.append(f"| {kind.split('_')[1]} ({d['triggers']} triggers) | "
                        f"{d['trigger_p50_ms']:.1f} | {d['trigger_p99_ms']:.1f} | "
                        f"{d['direct_p50_ms']:.1f} / {d['direct_p99_ms']:.1f} | "
                        f"{d['added_p50_ms']:.1f} / {d['added_p99_ms']:.1f} |")
    c0 = result["cells"][0]
    rows.append("")
    for key in ("writes_per_update", "writes_per_run", "writes_per_delete"):
        rows.append(f"- {key.replace('_', ' ')} (N={c0['n']}): "
                    + (", ".join(f"{k} {v:g}" for k, v in c0[key].items()) or "0"))
    return "\n".join(rows)


def chart_memory_limit_mib() -> float:
    """The chart's default memory limit (values.yaml), in MiB."""
    values = yaml.safe_load((ROOT / "charts" / "bgjob-operator" / "values.yaml").read_text())
    text = str(values["resources"]["limits"]["memory"])
    number = float(re.sub(r"[A-Za-z]+$", "", text))
    unit = text[len(text.rstrip("KMGiB")):]
    return number * {"Mi": 1, "Gi": 1024, "Ki": 1 / 1024, "M": 1e6 / 2**20,
                     "G": 1e9 / 2**20}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="N=100, short idle window (CI)")
    parser.add_argument("--no-cells", action="store_true",
                        help="only the launch cells (to build or profile them)")
    parser.add_argument("--profile", default="",
                        help="directory: py-spy the operator (raw stacks) through the history "
                        "settling, the restart and the launch; with BGJOB_TRACEMALLOC=<file> "
                        "set, a heap report with history too (slows the operator: numbers "
                        "from a profiled run are not results)")
    mode.add_argument("--full", action="store_true", help="N = 100, 1,000, 5,000")
    parser.add_argument("--n", type=int, action="append", help="override the N values")
    parser.add_argument("--out", default=str(ROOT / "bench-results"))
    parser.add_argument("--idle-long", type=float, default=0.0,
                        help="the long idle window at N=1,000 (default 600 s full)")
    parser.add_argument("--repeat", type=int, default=0,
                        help="repeats of the timed cells (default: 3 full, 1 quick)")
    parser.add_argument("--launch-n", type=int, action="append",
                        help="override the N values of the launch cells (default: 1,000 and "
                        "5,000 full, 60 quick; 0 for none)")
    parser.add_argument("--m", type=int, default=0,
                        help="runs due at once per mode in a launch cell (500 full, 20 quick)")
    args = parser.parse_args()
    full = args.full
    args.n = [] if args.no_cells else (args.n or ([100, 1000, 5000] if full else [100]))
    args.sweep = [1, 8, 32, 128] if full else [32]  # quick: the best concurrency of the full runs
    args.idle = 60.0 if full else 10.0
    args.idle_long = args.idle_long or (600.0 if full else args.idle)
    args.triggers = 300 if full else 30
    args.repeat = args.repeat or (3 if full else 1)  # quick: CI proves it runs, in < 3 min
    args.launch_n = [x for x in (args.launch_n or ([1000, 5000] if full else [60])) if x]
    args.m = args.m or (500 if full else 20)
    # Launch cells: T1 (operator timing) is ``gap`` s before T2 (a minute boundary, CronJob
    # mode) and at least ``lead`` s after the schedule edits start; quick mode restarts the
    # operator within the lead (it takes a second at N=100) to keep CI short.
    args.lead, args.gap = (60.0, 60.0) if full else (8.0, 12.0)
    mode_name = "full" if full else "quick"
    work = Path(tempfile.mkdtemp(prefix="bgjob-bench-"))
    started = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import launch  # this directory; they use the helpers above
    import launchreport
    from profiler import Profiler

    cells: list[dict[str, Any]] = []
    launch_cells: list[dict[str, Any]] = []
    plan = [("cell", n) for n in args.n if n] + [("launch", n) for n in args.launch_n]
    text = ""
    for kind, n in plan:  # written after every cell, so a long run keeps what it measured
        if kind == "cell":
            cells.append(asyncio.run(run_cell(n, args, work)))
        else:
            launch_cells.append(asyncio.run(launch.run_launch_cell(
                n, min(args.m, n // 2), args.lead, args.gap, not full, work,
                Profiler(Path(args.profile) if args.profile else None))))
        result = {"mode": mode_name, "repeat": args.repeat, "versions": versions(),
                  "cells": cells, "launch_cells": launch_cells,
                  "wall_seconds": time.monotonic() - started}
        if launch_cells:
            result["memory"] = launchreport.memory_summary(launch_cells,
                                                           chart_memory_limit_mib())
        (out / f"{mode_name}.json").write_text(json.dumps(result, indent=2) + "\n")
        text = (table(result) if cells else "") + "\n\n" + launchreport.table(result)
        (out / f"{mode_name}.md").write_text(text.strip() + "\n")
    shutil.rmtree(work, ignore_errors=True)  # kept when a phase failed: logs are in it
    print(text)


if __name__ == "__main__":
    main()
