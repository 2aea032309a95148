"""A real Kubernetes control plane on 127.0.0.1, built from Go modules (see build.sh).

It runs etcd, kube-apiserver and kube-controller-manager (cronjob, job, garbage-collector,
ttl-after-finished and namespace controllers among others) as child processes, plus the pod
driver that stands in for a kubelet. Tests and the README's first command both use it, so the
operator is always exercised against the same real API machinery a cluster has.

Children are started with PR_SET_PDEATHSIG, so they die with the Python process even when a
test run is killed; ``stop()`` terminates them in reverse order and waits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVICE_CIDR = "10.96.0.0/16"
CONTROLLERS = ",".join(
    [
        "cronjob-controller",
        "job-controller",
        "garbage-collector-controller",
        "ttl-after-finished-controller",
        "namespace-controller",
        "serviceaccount-controller",
        "serviceaccount-token-controller",
        "pod-garbage-collector-controller",
        "clusterrole-aggregation-controller",
    ]
)
# A real node (realnode.py) runs Deployments and mounts ServiceAccount tokens: these too.
REAL_NODE_CONTROLLERS = ",".join(
    ["deployment-controller", "replicaset-controller", "root-ca-certificate-publisher-controller"]
)
_PR_SET_PDEATHSIG = 1


def build() -> Path:
    """Build (or reuse the cached) binaries and return their directory."""
    out = subprocess.run(
        ["bash", str(HERE / "build.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    """A CA, a serving cert for 127.0.0.1/localhost, an admin client cert, and SA keys."""
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "admin.crt").exists():
        return
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=bgjob-local-ca", cwd=pki)
    (pki / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key",
             "-out", "apiserver.csr", "-subj", "/CN=kube-apiserver", cwd=pki)
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "3650", "-extfile", "san.ext",
             "-out", "apiserver.crt", cwd=pki)
    (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "admin.key",
             "-out", "admin.csr", "-subj", "/O=system:masters/CN=bgjob-admin", cwd=pki)
    _openssl("x509", "-req", "-in", "admin.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "3650", "-extfile", "client.ext",
             "-out", "admin.crt", cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def kubeconfig_text(server: str, pki: Path, user: str = "admin", token: str | None = None) -> str:
    if token is None:
        cred = (f"    client-certificate: {pki / 'admin.crt'}\n"
                f"    client-key: {pki / 'admin.key'}\n")
    else:
        cred = f"    token: {token}\n"
    return (
        "apiVersion: v1\nkind: Config\n"
        "clusters:\n- name: bgjob-local\n  cluster:\n"
        f"    server: {server}\n    certificate-authority: {pki / 'ca.crt'}\n"
        f"users:\n- name: {user}\n  user:\n{cred}"
        "contexts:\n- name: bgjob-local\n  context:\n"
        f"    cluster: bgjob-local\n    user: {user}\n"
        "current-context: bgjob-local\n"
    )


@dataclass
class LocalCluster:
    """One control plane in ``workdir``; ``kubeconfig`` is the admin (system:masters) config."""

    workdir: Path
    bin_dir: Path = field(default_factory=build)
    with_pod_driver: bool = True
    real_node: bool = False  # a kubelet will join (realnode.py): admission and controllers for it
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    api_port: int = 0

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig),
             *args],
            check=check, capture_output=True, text=True, input=input,
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        log.close()
        self.procs.append((name, proc))

    def _wait_http(self, name: str, url: str, timeout: float, tls: bool,
                   verify: bool = True) -> None:
        ctx: ssl.SSLContext | None = None
        if tls:
            ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
            ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
            if not verify:  # kube-controller-manager serves a self-signed loopback cert
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for pname, proc in self.procs:
                if proc.poll() is not None:
                    tail = (self.logs / f"{pname}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{pname} exited with {proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except Exception as exc:  # not up yet; remember why for the timeout message
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready at {url} after {timeout}s: {last}")

    def start(self) -> LocalCluster:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        make_pki(self.pki)
        pki = self.pki
        etcd_port, etcd_peer = free_port(), free_port()
        self.api_port = free_port()
        kcm_port = free_port()
        etcd_dir = self.workdir / "etcd"
        shutil.rmtree(etcd_dir, ignore_errors=True)
        self._spawn("etcd", [
            str(self.bin_dir / "etcd"), "--data-dir", str(etcd_dir),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        self._wait_http("etcd", f"http://127.0.0.1:{etcd_port}/health", 30, tls=False)
        self._spawn("kube-apiserver", [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}", "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            *([] if self.real_node else ["--disable-admission-plugins=ServiceAccount"]),
            # logs and exec through a real kubelet (its webhook authorizes system:masters)
            f"--kubelet-client-certificate={pki / 'admin.crt'}",
            f"--kubelet-client-key={pki / 'admin.key'}",
            "--kubelet-preferred-address-types=InternalIP",  # never a DNS lookup of a node name
            f"--audit-log-path={self.logs / 'audit.log'}",
            f"--audit-policy-file={self._audit_policy()}",
            "--audit-log-maxsize=200", "--audit-log-maxbackup=1",
            "--profiling=false", "--v=1",
        ])
        self.kubeconfig.write_text(kubeconfig_text(self.server, pki))
        self._wait_http("kube-apiserver", f"{self.server}/readyz", 90, tls=True)
        self._spawn("kube-controller-manager", [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={kcm_port}",
            "--leader-elect=false", "--use-service-account-credentials=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--controllers={CONTROLLERS}"
            + (f",{REAL_NODE_CONTROLLERS}" if self.real_node else ""),
            "--concurrent-cron-job-syncs=5", "--v=1",
        ])
        self._wait_http("kube-controller-manager", f"https://127.0.0.1:{kcm_port}/healthz", 60,
                        tls=True, verify=False)
        if self.with_pod_driver:
            self._spawn("pod-driver", [sys.executable, str(HERE / "poddriver.py"),
                                       "--kubeconfig", str(self.kubeconfig),
                                       "--tls-cert", str(pki / "apiserver.crt"),
                                       "--tls-key", str(pki / "apiserver.key")])
        self.start_seconds = time.monotonic() - started
        return self

    def _audit_policy(self) -> Path:
        """Metadata-level audit of writes only: the benchmark counts API writes from it."""
        path = self.workdir / "audit-policy.yaml"
        path.write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
            "rules:\n- level: Metadata\n"
            "  verbs: [create, update, patch, delete, deletecollection]\n"
            "- level: None\n"
        )
        return path

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path) -> Path:
        """A kubeconfig acting as a ServiceAccount (token from the TokenRequest API)."""
        self.kubectl("create", "namespace", namespace, check=False)
        self.kubectl("-n", namespace, "create", "serviceaccount", name, check=False)
        token = self.kubectl("-n", namespace, "create", "token", name,
                             "--duration=24h").stdout.strip()
        path.write_text(kubeconfig_text(self.server, self.pki, user=f"sa-{name}", token=token))
        return path

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    start_seconds: float = 0.0


@contextlib.contextmanager
def running(workdir: Path, with_pod_driver: bool = True,
            real_node: bool = False) -> Iterator[LocalCluster]:
    cluster = LocalCluster(workdir=workdir, with_pod_driver=with_pod_driver, real_node=real_node)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def main() -> None:
    """``python hack/cluster/localcluster.py [DIR]``: run a control plane until Ctrl-C."""
    workdir = Path(sys.argv[1] if len(sys.argv) > 1 else ".local/cluster").resolve()
    with running(workdir) as cluster:
        print(f"control plane up in {cluster.start_seconds:.1f}s")
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
