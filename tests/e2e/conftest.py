"""The real node for the end-to-end suite: the image built from the Dockerfile, a control plane
with a kubelet, containerd and runc, and the chart installed as it ships (pullPolicy Never).

Not skipped anywhere: on a machine that cannot run a real node the suite fails and says what
to install (hack/setup.sh installs it when run as root, as CI is)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import localcluster
import realnode
from tests.conftest import ROOT, Cluster, eventually

CHART = ROOT / "charts" / "bgjob-operator"
RELEASE = "bgjob-operator"
RELEASE_NS = "bgjob-system"
REPOSITORY = "localhost/bgjob/bgjob-operator"
POD_SELECTOR = f"app.kubernetes.io/name=bgjob-operator,app.kubernetes.io/instance={RELEASE}"


class RealCluster(Cluster):
    """The test's view: admin kubectl, helm, the plugin, and the node's containerd."""

    node: realnode.RealNode
    images: Path

    def __init__(self, lc: localcluster.LocalCluster, node: realnode.RealNode,
                 images: Path) -> None:
        super().__init__(lc)
        self.node = node
        self.images = images
        self.metrics_port = localcluster.free_port()
        self.health_port = localcluster.free_port()

    def env(self) -> dict[str, str]:
        work = self.lc.workdir
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig),
                    PATH=f"{self.lc.bin_dir}:{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
                    HELM_CACHE_HOME=str(work / "helm-cache"),
                    HELM_CONFIG_HOME=str(work / "helm-config"),
                    HELM_DATA_HOME=str(work / "helm-data"))

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([str(self.lc.bin_dir / "helm"), *args], capture_output=True,
                             text=True, env=self.env())
        assert res.returncode == 0, (f"helm {' '.join(args)}: {res.stdout}{res.stderr}\n"
                                     f"{self.diagnose()}")
        return res

    def diagnose(self) -> str:
        """What a failing test needs to say: the pods, their events, the operator's log."""
        parts = [self.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout,
                 self.kubectl("-n", RELEASE_NS, "describe", "pods", check=False).stdout[-4000:]]
        for pod in self.operator_pods():
            name = str(pod["metadata"]["name"])
            for previous in ("--previous=false", "--previous=true"):
                parts.append(self.kubectl("-n", RELEASE_NS, "logs", name, previous,
                                          "--tail=40", check=False).stdout)
        kubelet = self.lc.logs / "kubelet.log"
        parts.append(kubelet.read_text(errors="replace")[-3000:] if kubelet.exists() else "")
        return "\n".join(parts)

    def plugin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([str(ROOT / ".venv" / "bin" / "kubectl-bgjob"), *args],
                             capture_output=True, text=True, env=self.env(), timeout=180)
        assert not check or res.returncode == 0, f"bgjob {' '.join(args)}: {res.stderr}"
        return res

    def operator_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.items("pods", RELEASE_NS, POD_SELECTOR)
                if not p["metadata"].get("deletionTimestamp")]

    def install_values(self, tag: str) -> list[str]:
        """The chart as it ships, plus what this node needs: the pod on the host network
        (the API server listens on 127.0.0.1 only; there is no kube-proxy or cluster DNS), its
        servers on 127.0.0.1 and on ports of their own."""
        overrides = {
            "image": {"repository": REPOSITORY, "tag": tag, "pullPolicy": "Never"},
            "hostNetwork": True,
            "metrics": {"port": self.metrics_port},
            "health": {"port": self.health_port},
            "extraArgs": ["--listen-address=127.0.0.1"],
            "extraEnv": [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                         {"name": "KUBERNETES_SERVICE_PORT", "value": str(self.lc.api_port)}],
        }
        path = self.lc.workdir / f"values-{tag}.json"
        path.write_text(json.dumps(overrides))
        return ["-f", str(path)]


def build_images(out: Path) -> list[Path]:
    """The operator image from the Dockerfile (hack/image.sh) and the node's own images."""
    operator = out / "bgjob-operator.tar"
    subprocess.run(["bash", str(ROOT / "hack" / "image.sh"), str(operator)], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["bash", str(ROOT / "hack" / "image.sh"), "node-images", str(out)],
                   check=True)
    return [out / "pause.tar", out / "busybox.tar", operator]


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    why = realnode.missing()
    if why:
        pytest.fail(f"the e2e suite needs a real node: {why}", pytrace=False)
    images = tmp_path_factory.mktemp("images")
    tarballs = build_images(images)
    with localcluster.running(tmp_path_factory.mktemp("real"), with_pod_driver=False,
                              real_node=True) as lc, realnode.running(lc, tarballs) as node:
        yield RealCluster(lc, node, images)


@pytest.fixture(scope="session")
def release(real: RealCluster) -> RealCluster:
    """``helm install --wait`` of the chart with the image built here."""
    real.helm("install", RELEASE, str(CHART), "-n", RELEASE_NS, "--create-namespace",
              *real.install_values("dev"), "--wait", "--timeout", "180s")
    eventually(lambda: real.operator_pods(), 30, what="the operator pod")
    return real
