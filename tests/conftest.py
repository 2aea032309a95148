"""Shared fixtures: one real control plane per session, a fresh namespace per test, the operator
as a subprocess (its log is attached to failing tests), and ``eventually`` for polling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack" / "cluster"))

import localcluster  # noqa: E402

T = TypeVar("T")


def eventually(fn: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.5,
               what: str = "condition") -> T:
    """Poll ``fn`` until it returns a truthy value (or stops raising AssertionError)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s; last: {last!r}")
        time.sleep(interval)


class Cluster:
    """Test-side access to the control plane, as the admin user, through real kubectl."""

    def __init__(self, lc: localcluster.LocalCluster) -> None:
        self.lc = lc
        self.kubeconfig = lc.kubeconfig

    def kubectl(self, *args: str, check: bool = True,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        res = self.lc.kubectl(*args, check=False, input=input)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {res.stderr.strip()}")
        return res

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        res = self.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
        if res.returncode != 0:
            if "NotFound" in res.stderr or "not found" in res.stderr:
                return None
            raise AssertionError(res.stderr)
        return dict(json.loads(res.stdout))

    def items(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["-n", namespace, "get", kind, "-o", "json"]
        if selector:
            args += ["-l", selector]
        return list(json.loads(self.kubectl(*args).stdout)["items"])

    def apply(self, manifest: str, namespace: str) -> None:
        self.kubectl("-n", namespace, "apply", "-f", "-", input=manifest)

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [e for e in self.items("events", namespace)
                if e["involvedObject"].get("name") == name]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    lc = localcluster.LocalCluster(workdir=workdir)
    lc.start()
    try:
        c = Cluster(lc)
        c.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        c.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                  "crd/backgroundjobs.bgjob.dev")
        yield c
    finally:
        lc.stop()


class Operator:
    """``bgjob-operator`` as a child process; restartable, so tests can kill it mid-flight."""

    def __init__(self, kubeconfig: Path, log_path: Path, args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.args = args or []
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port = localcluster.free_port()
        self.metrics_port = localcluster.free_port()

    def start(self) -> None:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1",
                   BGJOB_DEBUG="1", **self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bgjob", "--listen-address", "127.0.0.1",
             "--health-port", str(self.health_port),
             "--metrics-port", str(self.metrics_port), *self.args],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            preexec_fn=localcluster._die_with_parent,
        )
        log.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, offset: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read()[-20000:].decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0


@pytest.fixture(scope="session")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(autouse=True)
def _mark_operator_log(request: pytest.FixtureRequest) -> None:
    """Remember where the operator log stood when the test began (see the report hook)."""
    if "operator" in request.fixturenames:
        op: Operator = request.getfixturevalue("operator")
        request.node.operator_log_offset = op.log_size()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On failure, attach what the operator logged while the test ran."""
    rep = yield
    op = getattr(item, "funcargs", {}).get("operator")
    if rep.when == "call" and rep.failed and isinstance(op, Operator):
        offset = getattr(item, "operator_log_offset", 0)
        rep.sections.append(("operator log", op.log_tail(offset)))
    return rep
