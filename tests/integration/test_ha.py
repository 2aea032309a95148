"""High availability on a real control plane: two operator processes with ``--peering``, each
under its own ServiceAccount (the chart's RBAC, rendered per replica) so the audit log says who
wrote what; exactly one acts, a SIGKILLed leader is replaced within 15 s, a SIGTERMed one hands
over at once, and ``/readyz`` follows the API server through a proxy the test cuts.

A plane of its own: the session's operator watches every namespace and would act here too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

import localcluster
from bgjob.manifests import manual_job_name
from tests.conftest import ROOT, Cluster, Operator, eventually
from tests.integration.helpers import annotate, handled, manifest

pytestmark = pytest.mark.integration

CHART = ROOT / "charts" / "bgjob-operator"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
NAMES = [f"bj-{i}" for i in range(5)]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with localcluster.running(tmp_path_factory.mktemp("ha")) as lc:
        c = Cluster(lc)
        c.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        c.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                  "crd/backgroundjobs.bgjob.dev")
        yield c


def http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def gauge(op: Operator, name: str) -> float | None:
    code, text = http(op.metrics_port, f"/metrics?name[]={name}")
    if code != 200:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def ready(op: Operator) -> bool:
    return http(op.health_port, "/readyz")[0] == 200


@dataclass
class Replicas:
    cluster: Cluster
    release_ns: str
    ops: dict[str, Operator] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)

    def leader(self) -> str:
        """The one replica whose bgjob_leader is 1 while every other says 0."""
        def find() -> str | None:
            values = {n: gauge(op, "bgjob_leader") for n, op in self.ops.items()
                      if op.proc is not None}
            leaders = [n for n, v in values.items() if v == 1]
            ok = len(leaders) == 1 and all(v == 0 for n, v in values.items() if n != leaders[0])
            return leaders[0] if ok else None

        return eventually(find, 30, 0.2, what="exactly one leader")


def _helm(cluster: Cluster, *args: str) -> str:
    lc = cluster.lc
    res = subprocess.run([str(lc.bin_dir / "helm"), *args], capture_output=True, text=True,
                         env=dict(os.environ, HELM_CACHE_HOME=str(lc.workdir / "helm-cache"),
                                  HELM_CONFIG_HOME=str(lc.workdir / "helm-config"),
                                  HELM_DATA_HOME=str(lc.workdir / "helm-data")))
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture
def replicas(plane: Cluster, namespace_ha: str, tmp_path: Path) -> Iterator[Replicas]:
    """Replicas a and b, each as the ServiceAccount of its own rendering of the chart's HA
    values (replicas: 2, peering.enabled), sharing the Lease in a fresh release namespace."""
    release_ns = f"ha-sys-{uuid.uuid4().hex[:6]}"
    plane.kubectl("create", "namespace", release_ns)
    reps = Replicas(plane, release_ns)
    rendered = []
    for name in ("a", "b"):
        sa = f"bgjob-{name}"
        out = _helm(plane, "template", f"{name}-{release_ns}", str(CHART), "-n", release_ns,
                    "--set", f"replicas=2,peering.enabled=true,serviceAccount.name={sa},"
                    "crds.enabled=false,rbac.aggregateToDefaultRoles=false")
        docs = [d for d in yaml.safe_load_all(out) if d and d["kind"] in RBAC_KINDS]
        text = "\n---\n".join(yaml.safe_dump(d) for d in docs)
        plane.kubectl("apply", "-f", "-", input=text)
        rendered.append(text)
        kc = plane.lc.service_account_kubeconfig(release_ns, sa, tmp_path / f"{name}.kubeconfig")
        reps.users[name] = f"system:serviceaccount:{release_ns}:{sa}"
        reps.ops[name] = Operator(kc, tmp_path / f"{name}.log", args=[
            "--peering", "--lease-namespace", release_ns, "--namespace", namespace_ha])
    try:
        yield reps
    finally:
        for op in reps.ops.values():
            op.stop()
        for text in rendered:
            plane.kubectl("delete", "--wait=false", "--ignore-not-found", "-f", "-",
                          input=text, check=False)
        plane.kubectl("delete", "namespace", release_ns, "--wait=false", check=False)


@pytest.fixture
def namespace_ha(plane: Cluster) -> Iterator[str]:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    plane.kubectl("create", "namespace", ns)
    yield ns
    plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def writes(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """Every write the API server audited in ``namespace``."""
    out = []
    for line in (cluster.lc.logs / "audit.log").read_text().splitlines():
        ev = json.loads(line)
        if (ev.get("objectRef") or {}).get("namespace") == namespace:
            out.append(ev)
    return out


def by_user(events: list[dict[str, Any]], users: dict[str, str]) -> Counter[str]:
    names = {u: n for n, u in users.items()}
    return Counter(names[e["user"]["username"]] for e in events
                   if e["user"]["username"] in names)


def created_jobs(events: list[dict[str, Any]]) -> Counter[str]:
    """Job name -> how many creates of it succeeded (a second would be a doubled run)."""
    return Counter(e["objectRef"].get("name", "?") for e in events
                   if e["verb"] == "create" and e["objectRef"]["resource"] == "jobs"
                   and (e.get("responseStatus") or {}).get("code") == 201)


def start_both(reps: Replicas, ns: str) -> str:
    for op in reps.ops.values():
        op.start()
    for name, op in reps.ops.items():
        eventually(functools.partial(ready, op), 60, 0.5, what=f"replica {name} ready")
    for name in NAMES:
        reps.cluster.apply(manifest(name, concurrencyPolicy="Allow",
                                    history={"successfulJobs": 50, "failedJobs": 50}), ns)
    return reps.leader()


def test_one_replica_acts_and_a_killed_leader_is_replaced_within_15s(
        replicas: Replicas, namespace_ha: str) -> None:
    c, ns = replicas.cluster, namespace_ha
    leader = start_both(replicas, ns)
    standby = next(n for n in replicas.ops if n != leader)
    assert gauge(replicas.ops[standby], "bgjob_leader") == 0 and ready(replicas.ops[standby])

    expected: list[str] = []
    for round_ in range(4):  # 20 triggers; one token per object at a time (it is one value)
        for name in NAMES:
            annotate(c, name, ns, run_now=f"r{round_}")
            expected.append(manual_job_name(name, f"r{round_}"))
        for name in NAMES:
            handled(c, name, ns, f"r{round_}")
    def twenty() -> Counter[str] | None:
        found = created_jobs(writes(c, ns))
        return found if sum(found.values()) >= 20 else None

    jobs = eventually(twenty, 30, what="20 Job creates in the audit log")
    assert sorted(jobs) == sorted(expected) and set(jobs.values()) == {1}, jobs
    who = by_user(writes(c, ns), replicas.users)
    assert set(who) == {leader}, who  # the Jobs, the status patches, the events: one replica
    print(f"\n20 triggers -> 20 Jobs; writes by replica: {dict(who)}")

    # a trigger in flight at the kill, and one made after it
    annotate(c, "bj-1", ns, run_now="before-kill")
    killed_at = time.monotonic()
    replicas.ops[leader].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    replicas.ops[leader].proc.wait()  # type: ignore[union-attr]
    at_death = by_user(writes(c, ns), replicas.users)
    annotate(c, "bj-0", ns, run_now="after-kill")
    after_kill = manual_job_name("bj-0", "after-kill")
    eventually(lambda: c.get("job", after_kill, ns), 30, 0.2, what="the Job after the kill")
    handover = time.monotonic() - killed_at
    print(f"SIGKILL of the leader -> the standby created the next Job in {handover:.1f}s")
    assert handover <= 15.0
    handled(c, "bj-1", ns, "before-kill")
    replicas.ops[leader].proc = None
    assert gauge(replicas.ops[standby], "bgjob_leader") == 1
    assert (gauge(replicas.ops[standby], "bgjob_leader_transitions_total") or 0) >= 1

    time.sleep(1)
    jobs = created_jobs(writes(c, ns))  # nothing lost, nothing doubled across the handover
    expected += [manual_job_name("bj-1", "before-kill"), after_kill]
    assert sorted(jobs) == sorted(expected) and set(jobs.values()) == {1}, jobs
    after = by_user(writes(c, ns), replicas.users)
    assert after[leader] == at_death[leader], (at_death, after)  # nothing after its death
    assert after[standby] > 0 and at_death[standby] == 0, (at_death, after)


def test_sigterm_hands_the_lease_over_within_3s(replicas: Replicas, namespace_ha: str) -> None:
    c, ns = replicas.cluster, namespace_ha
    leader = start_both(replicas, ns)
    standby = next(n for n in replicas.ops if n != leader)
    annotate(c, "bj-0", ns, run_now="warm")
    handled(c, "bj-0", ns, "warm")

    termed_at = time.monotonic()
    replicas.ops[leader].proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    annotate(c, "bj-2", ns, run_now="after-term")
    eventually(lambda: gauge(replicas.ops[standby], "bgjob_leader") == 1, 10, 0.05,
               what="the standby leads")
    lease_handover = time.monotonic() - termed_at
    after_term = manual_job_name("bj-2", "after-term")
    eventually(lambda: c.get("job", after_term, ns), 15, 0.1, what="the Job after SIGTERM")
    job_handover = time.monotonic() - termed_at
    print(f"\nSIGTERM of the leader -> standby leading in {lease_handover:.1f}s, "
          f"the next Job created in {job_handover:.1f}s")
    assert lease_handover <= 3.0
    assert replicas.ops[leader].proc.wait(timeout=30) == 0  # type: ignore[union-attr]
    replicas.ops[leader].proc = None
    jobs = created_jobs(writes(c, ns))
    assert set(jobs.values()) == {1} and after_term in jobs, jobs


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of the API server that the test cuts and restores
    (stopping the plane's API server would break the other tests)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = localcluster.free_port()
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def open(self) -> None:
        self.stop.clear()
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(64)
        srv.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, args=(srv,), daemon=True)
        self.thread.start()

    def _accept(self, srv: socket.socket) -> None:
        with srv:
            while not self.stop.is_set():
                try:
                    client, _ = srv.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.target))
                self.conns += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.conns.clear()


def test_readyz_goes_503_when_the_api_server_is_unreachable_and_200_again(
        plane: Cluster, namespace_ha: str, tmp_path: Path) -> None:
    proxy = Proxy(plane.lc.api_port)
    proxy.open()
    kc = tmp_path / "proxied.kubeconfig"
    kc.write_text(localcluster.kubeconfig_text(f"https://127.0.0.1:{proxy.port}",
                                               plane.lc.pki))
    op = Operator(kc, tmp_path / "operator.log", args=["--namespace", namespace_ha])
    op.start()
    try:
        eventually(lambda: ready(op), 60, 0.5, what="ready through the proxy")
        proxy.cut()
        cut_at = time.monotonic()
        eventually(lambda: not ready(op), 40, 0.5, what="unready without the API server")
        unready_after = time.monotonic() - cut_at
        why = http(op.health_port, "/readyz")
        assert http(op.health_port, "/healthz")[0] == 200  # alive: no restart for an outage
        proxy.open()
        back_at = time.monotonic()
        eventually(lambda: ready(op), 60, 0.5, what="ready again after the API came back")
        ready_after = time.monotonic() - back_at
        print(f"\n/readyz 503 {unready_after:.1f}s after the API server went away ({why}), "
              f"200 again {ready_after:.1f}s after it came back")
        assert unready_after <= 35.0 and why[0] == 503
    finally:
        op.stop()
        proxy.cut()
