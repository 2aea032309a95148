"""Runs the local control plane, the CRD, the examples and the operator until Ctrl-C.

``--real-node``: a kubelet with containerd joins (hack/cluster/realnode.py, root only), the
operator image is built from the Dockerfile (hack/image.sh) and the chart installs it as a pod;
the examples run as real containers."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack" / "cluster"))

import localcluster  # noqa: E402
import realnode  # noqa: E402

IMAGE = "localhost/bgjob/bgjob-operator:dev"


def hints(cluster: localcluster.LocalCluster, metrics: int, health: int) -> None:
    print("\nIn another shell:")
    print(f"  export KUBECONFIG={cluster.kubeconfig}")
    print(f"  export PATH={cluster.bin_dir}:{ROOT / '.venv' / 'bin'}:$PATH")
    print("  kubectl get backgroundjobs -A")
    print("  kubectl bgjob list -A")
    print("  kubectl bgjob -n bgjob-examples run document-cleanup --wait --logs")
    print(f"  curl -s 127.0.0.1:{metrics}/metrics | grep ^bgjob_; "
          f"curl -s 127.0.0.1:{health}/readyz")
    print(f"(kubectl here is {cluster.bin_dir / 'kubectl'}; logs of the control plane: "
          f"{cluster.logs})\n")


def host_process(cluster: localcluster.LocalCluster) -> int:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/backgroundjobs.bgjob.dev")
    print(cluster.kubectl("apply", "-f", str(ROOT / "examples")).stdout.rstrip())
    hints(cluster, 8080, 8081)
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    operator = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "bgjob-operator"), "--listen-address", "127.0.0.1"],
        env=env)
    try:
        return operator.wait()
    except KeyboardInterrupt:
        operator.send_signal(signal.SIGINT)
        operator.wait(timeout=20)
        return 0


def _port(preferred: int) -> int:
    """The usual port if it is free on 127.0.0.1, else any free one (the pod shares the
    machine's network namespace)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return localcluster.free_port()


def chart_on_the_node(cluster: localcluster.LocalCluster) -> int:
    """The chart's Deployment on the real node, as tests/e2e installs it."""
    metrics, health = _port(8080), _port(8081)
    values = cluster.workdir / "values-real-node.json"
    values.write_text(json.dumps({
        "image": {"repository": IMAGE.rsplit(":", 1)[0], "tag": "dev", "pullPolicy": "Never"},
        "hostNetwork": True, "metrics": {"port": metrics}, "health": {"port": health},
        "extraArgs": ["--listen-address=127.0.0.1"], "logFormat": "text",
        "extraEnv": [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                     {"name": "KUBERNETES_SERVICE_PORT", "value": str(cluster.api_port)}],
    }))
    helm = subprocess.run(
        [str(cluster.bin_dir / "helm"), "--kubeconfig", str(cluster.kubeconfig), "install",
         "bgjob-operator", str(ROOT / "charts" / "bgjob-operator"), "-n", "bgjob-system",
         "--create-namespace", "-f", str(values), "--wait", "--timeout", "180s"],
        capture_output=True, text=True, env=dict(os.environ, HELM_CONFIG_HOME=str(
            cluster.workdir / "helm-config"), HELM_CACHE_HOME=str(cluster.workdir / "helm-cache"),
            HELM_DATA_HOME=str(cluster.workdir / "helm-data")))
    if helm.returncode != 0:
        print(helm.stderr, file=sys.stderr)
        return 1
    print(cluster.kubectl("-n", "bgjob-system", "get", "pods", "-o", "wide").stdout.rstrip())
    print(cluster.kubectl("apply", "-f", str(ROOT / "examples")).stdout.rstrip())
    hints(cluster, metrics, health)
    print("  kubectl -n bgjob-system logs deploy/bgjob-operator -f")
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/up.sh")
    parser.add_argument("--real-node", action="store_true",
                        help="run the operator as the chart's pod on a real kubelet (root)")
    args = parser.parse_args()
    workdir = ROOT / ".local" / "cluster"
    if not args.real_node:
        with localcluster.running(workdir) as cluster:
            print(f"control plane ({cluster.bin_dir.name}) up in {cluster.start_seconds:.1f}s")
            return host_process(cluster)
    why = realnode.missing()
    if why:
        print(f"up: --real-node: {why}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    images = ROOT / ".local" / "image"
    subprocess.run(["bash", str(ROOT / "hack" / "image.sh"), str(images / "bgjob-operator.tar")],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["bash", str(ROOT / "hack" / "image.sh"), "node-images", str(images)],
                   check=True)
    tarballs = [images / "pause.tar", images / "busybox.tar", images / "bgjob-operator.tar"]
    with localcluster.running(workdir, with_pod_driver=False, real_node=True) as cluster, \
            realnode.running(cluster, tarballs) as node:
        print(f"control plane up in {cluster.start_seconds:.1f}s, real node "
              f"{realnode.NODE_NAME} Ready in {node.start_seconds:.1f}s")
        return chart_on_the_node(cluster)


if __name__ == "__main__":
    sys.exit(main())
