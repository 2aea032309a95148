"""What users feel at scale: launch skew, status lag and memory with history (issue 19).

One cell per N, on its own control plane (with the pod driver, which finishes the pods):

1. the operator starts on an empty cluster (RSS at N = 0);
2. N BackgroundJobs are created and converge; each gets a realistic history — 3 succeeded and
   1 failed Job, made by the benchmark as finished Jobs that carry the accounting finalizer,
   exactly as the operator leaves its own runs — and the operator counts all 4N (status
   records, stats) and releases their finalizers ("history settled");
3. RSS with that history; a restart (time to every object's pass, writes, peak RSS);
4. M of them get an operator-timed ``at`` schedule due at T1, and M others a daily cron due at
   T2 = T1 + 60 s (CronJob mode: the native controller makes each Job suspended at T2 and the
   operator admits it). A watch on Jobs and one on BackgroundJobs (namespace ``launch``, which
   holds only these 2M; the other N - 2M are in ``hist``) time each run: due → Job created
   (operator timing) or due → created by the CronJob controller → admitted by the operator
   (CronJob mode), and Job finished → the BackgroundJob's status shows its result.

Times are wall-clock on this machine (the API server, the controller manager, the pod driver,
the operator and the benchmark share its clock). Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import bench
from profiler import Profiler

import localcluster

HIST_NS, LAUNCH_NS = "hist", "launch"
HISTORY = (("ok-0", True), ("fail-0", False), ("ok-1", True), ("ok-2", True))
SETTLE_TIMEOUT = 1800.0
LAUNCH_TIMEOUT = 600.0


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def history_job(bj: dict[str, Any], suffix: str, k: int) -> dict[str, Any]:
    """A finished run as the operator leaves it before counting: owned by the BackgroundJob,
    labelled, admitted, holding the accounting finalizer; suspended so that no pod is made
    (its outcome is written into status by the benchmark, as a kubelet-less Job controller
    test does)."""
    meta = bj["metadata"]
    name = meta["name"]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": f"{name}-{suffix}", "namespace": meta["namespace"],
        "labels": {"bgjob.dev/backgroundjob": name, "bgjob.dev/trigger": "scheduled"},
        "annotations": {"bgjob.dev/attempt": "1", "bgjob.dev/admitted": "true",
                        "bgjob.dev/scheduled-time": iso(HIST_START + timedelta(hours=k))},
        "ownerReferences": [{"apiVersion": "bgjob.dev/v1alpha1", "kind": "BackgroundJob",
                             "name": name, "uid": meta["uid"], "controller": True,
                             "blockOwnerDeletion": True}],
        "finalizers": ["bgjob.dev/accounting"]},
        "spec": {"suspend": True, "backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "main",
                                                      "image": "busybox:1.36"}]}}}}


HIST_START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


def finished_status(ok: bool, k: int) -> dict[str, Any]:
    start = HIST_START + timedelta(hours=k)
    end = start + timedelta(seconds=12 + k)
    when = iso(end)
    if ok:
        conds = [{"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": when,
                  "lastTransitionTime": when},
                 {"type": "Complete", "status": "True", "lastProbeTime": when,
                  "lastTransitionTime": when}]
        return {"status": {"startTime": iso(start), "completionTime": when, "succeeded": 1,
                           "conditions": conds}}
    conds = [{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
              "lastProbeTime": when, "lastTransitionTime": when},
             {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
              "message": "Job has reached the specified backoff limit", "lastProbeTime": when,
              "lastTransitionTime": when}]
    return {"status": {"startTime": iso(start), "failed": 1, "conditions": conds}}


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": bench.pct(values, 0.5), "p99": bench.pct(values, 0.99),
            "max": max(values)}


def peak_rss_kib(op: bench.OperatorProc) -> int:
    assert op.proc is not None
    text = Path(f"/proc/{op.proc.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1))  # type: ignore[union-attr]


def load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


async def list_all(api: bench.Api, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cont = ""
    while True:
        sep = "&" if "?" in path else "?"
        doc = await api.call("GET", f"{path}{sep}limit=500" + (f"&continue={cont}" if cont
                                                               else ""))
        items += doc["items"]
        cont = doc["metadata"].get("continue") or ""
        if not cont:
            return items


async def ready_count(api: bench.Api, ns: str) -> tuple[int, int, int]:
    """BackgroundJobs Ready, those whose stats count their whole history, and Jobs still
    holding the accounting finalizer (released once counted)."""
    bjs = await list_all(api, f"{bench.BJ}/namespaces/{ns}/backgroundjobs")
    ready = counted = 0
    for b in bjs:
        st = b.get("status") or {}
        if any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions")
               or []):
            ready += 1
        if (st.get("stats") or {}).get("runs", 0) >= len(HISTORY):
            counted += 1
    jobs = await list_all(api, f"/apis/batch/v1/namespaces/{ns}/jobs")
    held = sum(1 for j in jobs if "bgjob.dev/accounting" in (j["metadata"].get("finalizers")
                                                             or []))
    return ready, counted, held


class Watcher:
    """Jobs and BackgroundJobs of one namespace, each event's arrival timed (wall clock)."""

    def __init__(self, api: bench.Api, ns: str) -> None:
        self.api, self.ns = api, ns
        self.added: dict[str, float] = {}
        self.admitted: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.scheduled: dict[str, str] = {}  # the CronJob's scheduled timestamp
        self.created: dict[str, str] = {}
        self.shown: dict[str, float] = {}    # the BackgroundJob's status shows the result
        self.tasks: list[asyncio.Task[None]] = []
        self.ready = 0
        self.both_ready = asyncio.Event()

    async def start(self) -> None:
        self.tasks = [asyncio.create_task(self._watch(f"/apis/batch/v1/namespaces/{self.ns}/jobs",
                                                      self._job)),
                      asyncio.create_task(self._watch(
                          f"{bench.BJ}/namespaces/{self.ns}/backgroundjobs", self._bj))]
        await asyncio.wait_for(self.both_ready.wait(), 60)

    async def _watch(self, path: str, on: Any) -> None:
        listing = await self.api.call("GET", path + "?limit=1")
        rv = listing["metadata"]["resourceVersion"]
        url = f"{self.api.base}{path}?watch=1&resourceVersion={rv}&allowWatchBookmarks=false"
        async with self.api.session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            self.ready += 1
            if self.ready == 2:
                self.both_ready.set()
            async for line in resp.content:
                now = time.time()
                ev = json.loads(line)
                if ev["type"] in ("ADDED", "MODIFIED"):
                    on(ev["object"], now)

    def _job(self, job: dict[str, Any], now: float) -> None:
        meta = job["metadata"]
        name = meta["name"]
        self.added.setdefault(name, now)
        ann = meta.get("annotations") or {}
        if "batch.kubernetes.io/cronjob-scheduled-timestamp" in ann:
            self.scheduled[name] = ann["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        self.created.setdefault(name, meta.get("creationTimestamp", ""))
        if not (job.get("spec") or {}).get("suspend"):
            self.admitted.setdefault(name, now)
        for c in (job.get("status") or {}).get("conditions") or []:
            if c["type"] in ("Complete", "Failed") and c["status"] == "True":
                self.finished.setdefault(name, now)

    def _bj(self, bj: dict[str, Any], now: float) -> None:
        for rec in (bj.get("status") or {}).get("runs") or []:
            if rec.get("result") in ("Succeeded", "Failed", "DeadlineExceeded", "Cancelled"):
                self.shown.setdefault(rec["job"], now)

    def stop(self) -> None:
        for t in self.tasks:
            t.cancel()


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def launch(admin: bench.Api, op: bench.OperatorProc, audit: bench.Audit, m: int,
                 lead: float, gap: float,
                 during_lead: Callable[[], Awaitable[None]] | None = None,
                 prof: Profiler | None = None) -> dict[str, Any]:
    """M operator-timed runs due at T1, M CronJob-mode runs due at T2 = T1 + gap, the first
    minute boundary that leaves ``lead`` seconds for the schedule edits (and ``during_lead``,
    which must end before T1)."""
    now = datetime.now(UTC)
    t2 = (now + timedelta(seconds=lead + gap + 59)).replace(second=0, microsecond=0)
    t1 = t2 - timedelta(seconds=gap)
    watcher = Watcher(admin, LAUNCH_NS)
    await watcher.start()
    path = f"{bench.BJ}/namespaces/{LAUNCH_NS}/backgroundjobs"
    merge = "application/merge-patch+json"
    await bench.gather_limited(m, 32, lambda i: admin.call(
        "PATCH", f"{path}/bj-{i}", {"spec": {"schedule": {"cron": None, "at": iso(t1)}}},
        merge))
    await bench.gather_limited(m, 32, lambda i: admin.call(
        "PATCH", f"{path}/bj-{m + i}",
        {"spec": {"schedule": {"cron": f"{t2.minute} {t2.hour} * * *"}}}, merge))

    async def edits_seen() -> bool:
        items = await list_all(admin, path)
        return all((b.get("status") or {}).get("observedGeneration") ==
                   b["metadata"]["generation"] for b in items)

    await bench.wait_for("schedule edits", edits_seen, 1.0, LAUNCH_TIMEOUT)
    if during_lead is not None:
        await during_lead()
    margin = t1.timestamp() - time.time()  # < 0: the setup overran T1 (reported)
    if prof is not None:
        prof.start(op, "launch")
    cpu0, mark = op.cpu_seconds(), audit.mark()
    op_jobs = {bench_scheduled_name(f"bj-{i}", t1) for i in range(m)}

    async def all_shown() -> bool:
        cron_jobs = [n for n in watcher.scheduled if watcher.scheduled[n] == iso(t2)]
        return (time.time() > t2.timestamp() and len(cron_jobs) >= m
                and all(n in watcher.shown for n in op_jobs)
                and all(n in watcher.shown for n in cron_jobs))

    await bench.wait_for("launched runs shown in status", all_shown, 0.5,
                         t2.timestamp() - time.time() + LAUNCH_TIMEOUT)
    await asyncio.sleep(3)
    if prof is not None:
        prof.stop()
    cpu = op.cpu_seconds() - cpu0
    writes = audit.writes(mark)
    watcher.stop()
    cron_jobs = [n for n in watcher.scheduled if watcher.scheduled[n] == iso(t2)]
    d1, d2 = t1.timestamp(), t2.timestamp()
    delay = {**op.scrape("bgjob_run_start_delay_seconds_count"),
             **op.scrape("bgjob_run_start_delay_seconds_sum")}
    return {
        "m": m, "t1": iso(t1), "t2": iso(t2), "gap_seconds": gap, "margin_seconds": margin,
        "operator_timed": {
            "due_to_created": quantiles([watcher.added[n] - d1 for n in op_jobs]),
            "status_lag": quantiles([watcher.shown[n] - watcher.finished[n] for n in op_jobs
                                     if n in watcher.finished]),
        },
        "cronjob_mode": {
            "due_to_created_by_cronjob_controller": quantiles(
                [watcher.added[n] - d2 for n in cron_jobs]),
            "native_skew_from_creation_timestamp": quantiles(
                [_ts(watcher.created[n]) - d2 for n in cron_jobs]),
            "due_to_admitted": quantiles([watcher.admitted[n] - d2 for n in cron_jobs]),
            "status_lag": quantiles([watcher.shown[n] - watcher.finished[n]
                                     for n in cron_jobs if n in watcher.finished]),
        },
        "operator_histogram": {k: v for k, v in delay.items() if k.startswith("bgjob_")},
        "writes": dict(writes),
        "writes_per_run": bench.per(writes, 2 * m),
        "status_patches_per_run": writes.get("patch backgroundjobs/status", 0) / (2 * m),
        "cpu_seconds": cpu, "cpu_ms_per_run": 1000 * cpu / (2 * m),
        "rss_kib_after": op.rss_kib(), "peak_rss_kib": peak_rss_kib(op), "load": load(),
    }


def bench_scheduled_name(name: str, due: datetime) -> str:
    from bgjob.manifests import scheduled_job_name  # the operator's own naming rule
    return scheduled_job_name(name, due)


async def make_history(admin: bench.Api, ns: str, count: int, offset: int) -> None:
    """N BackgroundJobs (names bj-<offset+i>) and 4 finished Jobs each."""
    path = f"{bench.BJ}/namespaces/{ns}/backgroundjobs"
    made: dict[int, dict[str, Any]] = {}

    async def one(i: int) -> None:
        made[i] = await admin.call("POST", path, bench.bgjob(f"bj-{offset + i}", offset + i))

    await bench.gather_limited(count, 64, one)

    async def jobs(i: int) -> None:
        for k, (suffix, ok) in enumerate(HISTORY):
            job = history_job(made[i], suffix, k)
            await admin.call("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", job)
            await admin.call("PATCH", f"/apis/batch/v1/namespaces/{ns}/jobs/"
                             f"{job['metadata']['name']}/status", finished_status(ok, k),
                             "application/merge-patch+json")

    await bench.gather_limited(count, 32, jobs)


async def run_launch_cell(n: int, m: int, lead: float, gap: float, restart_in_lead: bool,
                          work: Path, prof: Profiler) -> dict[str, Any]:
    cell: dict[str, Any] = {"n": n, "m": m, "load_start": load()}
    with localcluster.running(work / f"launch-plane-{n}") as lc:
        kc = bench.operator_identity(lc, work)
        audit = bench.Audit(lc)
        admin = bench.Api(lc)
        op = bench.OperatorProc(kc, work / f"launch-operator-{n}.log")
        try:
            op.start()
            await bench.wait_for("operator ready", lambda: asyncio.sleep(0, op.ready()),
                                 0.2, 60)
            await asyncio.sleep(2)
            cell["rss_kib_n0"] = op.rss_kib()
            for ns in (HIST_NS, LAUNCH_NS):
                await bench.create_namespace(admin, ns)
            started = time.monotonic()
            mark = audit.mark()
            prof.start(op, f"history-n{n}")
            await make_history(admin, LAUNCH_NS, 2 * m, 0)
            await make_history(admin, HIST_NS, n - 2 * m, 2 * m)
            cell["history_created_seconds"] = time.monotonic() - started

            async def settled() -> bool:
                got = [await ready_count(admin, ns) for ns in (HIST_NS, LAUNCH_NS)]
                return (sum(g[0] for g in got) >= n and sum(g[1] for g in got) >= n
                        and sum(g[2] for g in got) == 0)

            await bench.wait_for("history settled", settled, 2.0, SETTLE_TIMEOUT)
            cell["history_settled_seconds"] = time.monotonic() - started
            prof.stop()
            cell["history_writes"] = dict(audit.writes(mark))
            await asyncio.sleep(3)
            cell["rss_kib_history"] = op.rss_kib()
            cell["peak_rss_kib_history"] = peak_rss_kib(op)
            cell["load_history"] = load()
            await asyncio.to_thread(prof.heap, op, f"history-n{n}")

            async def restart() -> None:
                op.stop()
                mark = audit.mark()
                op.start()
                prof.start(op, f"restart-n{n}")
                await bench.wait_for("restart processed", lambda: asyncio.sleep(
                    0, op.ready() and op.processed() >= n), 0.1, SETTLE_TIMEOUT)
                cell["restart_seconds"] = time.monotonic() - op.started
                prof.stop()
                await asyncio.sleep(3)
                cell["restart_writes"] = sum(audit.writes(mark).values())
                cell["restart_peak_rss_kib"] = peak_rss_kib(op)
                cell["restart_rss_kib"] = op.rss_kib()
                cell["load_restart"] = load()

            cell["restart_in_lead"] = restart_in_lead
            if not restart_in_lead:
                await restart()
            cell["launch"] = await launch(admin, op, audit, m, lead, gap,
                                          restart if restart_in_lead else None, prof)
        finally:
            op.stop()
            await admin.close()
    return cell
