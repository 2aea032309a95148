"""A real node for the local control plane: containerd, runc and a kubelet on 127.0.0.1.

The pod driver stays the fast path for the integration suite; this node is the shipping proof
(the image built here, the chart's Deployment as a real pod, Jobs as real containers).

What it takes from the machine, and how it gives it back:
- containerd and the kubelet run in a private mount namespace of their own (``unshare``) with
  tmpfs over the fixed paths they use outside their roots (``/run/netns``, ``/run/containerd``,
  ``/var/lib/cni``, ``/var/log/pods``, ``/var/log/containers``, ``/var/lib/kubelet``): every
  overlay, volume and network-namespace mount, pod log and cache lives and dies there, so even a
  SIGKILLed test run leaves no mount or file behind.
- the kubelet makes no iptables chains (``makeIPTablesUtilChains: false``).
- pods' cgroups go under ``cgroupRoot`` (``/bgjob-node``) and containerd's shims carry this
  node's socket in their command line: leftovers of an earlier run are found by those two
  marks and killed before a new node starts (and on exit, from atexit and signal handlers).
- the pod network is a CNI ``bridge`` (``bgjob0``) with no address on the host side, no gateway
  and no masquerade: pods have no route off the machine. The bridge is deleted on exit.
- the kubelet, its healthz and containerd's stream server listen on 127.0.0.1; containerd's API
  is a unix socket. Only one real node runs on a machine at a time (a lock file says so).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import localcluster
import nodeconfig
from nodeconfig import BRIDGE, CGROUP_ROOT, CNI_BIN

# The kubelet refuses a loopback --node-ip, looks its node name up in DNS and otherwise takes
# the address of the default route's interface (so hostNetwork pods and probes would use the
# machine's outside address). A --hostname-override that is an IP is taken as the node's
# address as it is: the node is named 127.0.0.1, and nothing is looked up.
NODE_NAME = "127.0.0.1"
STATE = Path("/run/bgjob-node")  # short: unix socket paths are limited to 108 bytes
DATA = Path("/var/tmp/bgjob-node")  # images and pod volumes: on disk, /run may be a small tmpfs
# Fixed paths of containerd, CNI and the kubelet outside their configured roots (network
# namespaces, shim sockets, CNI's result cache, pod logs and their links, the device-plugin
# socket): each gets a tmpfs in the node's own mount namespace.
SHARED_DIRS = tuple(Path(p) for p in ("/run/netns", "/run/containerd", "/var/lib/cni",
                                      "/var/log/pods", "/var/log/containers",
                                      "/var/lib/kubelet"))
PACKAGES = ("containerd runc containernetworking-plugins buildah podman mmdebstrap busybox-static"
            " gcc libc6-dev")


def missing() -> str | None:
    """Why this machine cannot run a real node, or None. CI is root; anyone else is told what
    to install (the e2e suite fails with this text rather than skipping)."""
    if os.geteuid() != 0:
        return ("the real node needs root (containerd, runc, mounts, a bridge); run the e2e "
                f"suite as root, with these Debian packages installed: {PACKAGES}")
    tools = ["containerd", "runc", "ctr", "unshare", "nsenter", "ip", "buildah", "podman",
             "mmdebstrap", "gcc"]
    absent = [t for t in tools if shutil.which(t) is None]
    if not (CNI_BIN / "bridge").exists():
        absent.append(f"{CNI_BIN}/bridge")
    if not Path("/bin/busybox").exists():
        absent.append("/bin/busybox")
    if absent:
        return (f"missing {', '.join(absent)}; as root: apt-get install -y {PACKAGES} "
                "(hack/setup.sh does this when run as root)")
    return None


def build_node_binaries() -> Path:
    """kubelet and kube-scheduler from the pinned k8s.io/kubernetes module, cached by version."""
    out = subprocess.run(["bash", str(localcluster.HERE / "build.sh"), "node"], check=True,
                         stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def _kill_pids(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _cgroup_dirs() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    found = [p for p in base.glob(f"*/{CGROUP_ROOT}") if p.is_dir()]
    if (base / CGROUP_ROOT).is_dir():  # cgroup v2 unified
        found.append(base / CGROUP_ROOT)
    return found


def _our_processes(socket: Path) -> set[int]:
    """Shims serving this node's containerd, and everything in the node's cgroups."""
    pids: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            if cmd and b"containerd-shim" in cmd[0] and str(socket).encode() in cmd:
                pids.add(int(proc.name))
    for top in _cgroup_dirs():
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(x) for x in procs.read_text().split())
    pids.discard(os.getpid())
    return pids


def cleanup(state: Path = STATE) -> None:
    """Remove what a node (this one, or an earlier run that was killed) left: its processes,
    its cgroups, its bridge, its state and data. Mounts need nothing: their namespace dies with the
    last process in it."""
    socket = state / "containerd.sock"
    for pidfile in state.glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            _kill_pids({int(pidfile.read_text())})
    for _ in range(50):
        pids = _our_processes(socket)
        if not pids:
            break
        _kill_pids(pids)
        time.sleep(0.1)
    for top in _cgroup_dirs():
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    for shared in SHARED_DIRS:
        if (state / f"created{str(shared).replace('/', '-')}").exists():
            with contextlib.suppress(OSError):
                shared.rmdir()  # only when empty: nobody else used it meanwhile
    shutil.rmtree(DATA, ignore_errors=True)
    if state.exists():
        for child in state.iterdir():
            if child.name != "lock":
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


@dataclass
class RealNode:
    """One kubelet with containerd, registered with ``cluster`` as node ``127.0.0.1``."""

    cluster: localcluster.LocalCluster
    images: list[Path] = field(default_factory=list)  # docker-archive tarballs to import
    state: Path = STATE
    bin_dir: Path = field(default_factory=build_node_binaries)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    start_seconds: float = 0.0
    kubelet_port: int = 0
    healthz_port: int = 0
    _lock: IO[str] | None = None

    @property
    def socket(self) -> Path:
        return self.state / "containerd.sock"

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", str(self.socket), "-n", "k8s.io", *args],
                              check=True, capture_output=True, text=True)

    def kubelet_get(self, path: str) -> str:
        """GET from the kubelet's own port as the admin (the API server's node proxy refuses
        loopback addresses). Its serving certificate is self-signed; it is 127.0.0.1."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        pki = self.cluster.pki
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        url = f"https://127.0.0.1:{self.kubelet_port}{path}"
        with urllib.request.urlopen(url, timeout=10, context=ctx) as resp:
            return str(resp.read().decode())

    def start(self) -> RealNode:
        why = missing()
        if why:
            raise RuntimeError(f"real node: {why}")
        started = time.monotonic()
        self.state.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.state / "lock", "w")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"real node: another one runs on this machine ({self.state})") from None
        cleanup(self.state)
        atexit.register(self.stop)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, self._on_signal)
        self._write_configs()
        self._start_containerd()
        for image in self.images:
            self.ctr("images", "import", str(image))
        self._start_kubelet()
        self._start_scheduler()
        self._register()
        self.start_seconds = time.monotonic() - started
        return self

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop()
        raise SystemExit(128 + signum)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        self.cluster.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.cluster.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                preexec_fn=localcluster._die_with_parent)
        log.close()
        (self.state / f"{name}.pid").write_text(str(proc.pid))
        self.procs.append((name, proc))
        return proc

    def _write_configs(self) -> None:
        s = self.state
        (s / "net.d").mkdir(parents=True, exist_ok=True)
        (s / "net.d" / "10-bgjob.conflist").write_text(nodeconfig.cni_conflist(s))
        (s / "containerd.toml").write_text(nodeconfig.containerd_toml(s, DATA, self.socket))
        # Nothing to resolve names off the machine: pods get an empty resolver list.
        (s / "resolv.conf").write_text("options ndots:1\n")
        self.kubelet_port = localcluster.free_port()
        self.healthz_port = localcluster.free_port()
        (s / "kubelet.yaml").write_text(nodeconfig.kubelet_yaml(
            s, self.socket, self.cluster.pki / "ca.crt", self.kubelet_port, self.healthz_port))

    def _start_containerd(self) -> None:
        for shared in SHARED_DIRS:  # mount points for the tmpfs below; removed again if ours
            if not shared.exists():
                shared.mkdir(parents=True)
                (self.state / f"created{str(shared).replace('/', '-')}").touch()
        # One mount namespace for containerd, its shims and the kubelet (they must share mounts):
        # tmpfs over the paths containerd and CNI use outside its root, so nothing is left there.
        mounts = "".join(f" && mount -t tmpfs tmpfs {d}" for d in SHARED_DIRS)
        script = (f"mount --make-rprivate /{mounts}"
                  f' && exec containerd --config "{self.state}/containerd.toml"')
        proc = self._spawn("containerd", ["unshare", "--mount", "--", "sh", "-c", script])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"containerd exited:\n{self._tail('containerd')}")
            if self.socket.exists() and subprocess.run(
                    ["ctr", "--address", str(self.socket), "version"],
                    capture_output=True, check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"containerd not ready:\n{self._tail('containerd')}")

    def _tail(self, name: str) -> str:
        return (self.cluster.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def _make_cgroup_root(self) -> None:
        """The kubelet wants cgroupRoot to exist in every hierarchy (cgroup v1 here)."""
        base = Path("/sys/fs/cgroup")
        unified = (base / "cgroup.controllers").exists()  # cgroup v2 only: one hierarchy
        for hier in [base] if unified else list(base.iterdir()):
            if hier.is_dir() and not hier.is_symlink() and (hier / "cgroup.procs").exists():
                ours = hier / CGROUP_ROOT
                ours.mkdir(exist_ok=True)
                for knob in ("cpuset.cpus", "cpuset.mems"):  # empty until copied from above
                    if (hier / knob).exists() and not (ours / knob).read_text().strip():
                        (ours / knob).write_text((hier / knob).read_text())

    def _start_kubelet(self) -> None:
        self._make_cgroup_root()
        containerd = dict(self.procs)["containerd"]
        self._spawn("kubelet", [
            "nsenter", f"--mount=/proc/{containerd.pid}/ns/mnt", "--",
            str(self.bin_dir / "kubelet"),
            f"--config={self.state / 'kubelet.yaml'}",
            f"--kubeconfig={self.cluster.kubeconfig}",
            f"--root-dir={DATA / 'kubelet'}",
            f"--cert-dir={self.state / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}", "--v=1",
        ])

    def _start_scheduler(self) -> None:
        port = localcluster.free_port()
        kubeconfig = str(self.cluster.kubeconfig)
        self._spawn("kube-scheduler", [
            str(self.bin_dir / "kube-scheduler"), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", "--leader-elect=false",
            "--v=1",
        ])

    def _register(self) -> None:
        """Wait for the node, then lift the not-ready taint it registered with: no
        node-lifecycle controller runs in this plane to do it."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n"
                                       f"{self._tail(name)}")
            got = self.cluster.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
            if got.returncode != 0:
                time.sleep(0.3)
                continue
            node_doc = json.loads(got.stdout)
            taints = node_doc["spec"].get("taints") or []
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in node_doc["status"].get("conditions") or [])
            if ready:
                if taints:
                    self.cluster.kubectl("patch", "node", NODE_NAME, "--type=json", "-p",
                                         '[{"op":"remove","path":"/spec/taints"}]', check=False)
                    continue
                return
            time.sleep(0.3)
        raise TimeoutError(f"node not Ready:\n{self._tail('kubelet')}")

    def stop(self) -> None:
        """Kubelet first (it would restart what containerd stops), then everything else."""
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        cleanup(self.state)
        if self._lock is not None:
            (self.state / "lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.state.rmdir()
            self._lock.close()
            self._lock = None


@contextlib.contextmanager
def running(cluster: localcluster.LocalCluster, images: list[Path]) -> Iterator[RealNode]:
    node = RealNode(cluster=cluster, images=images)
    try:
        yield node.start()
    finally:
        node.stop()
