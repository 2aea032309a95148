"""Runs the local control plane, the CRD, the examples and the operator until Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack" / "cluster"))

import localcluster  # noqa: E402


def main() -> int:
    workdir = ROOT / ".local" / "cluster"
    with localcluster.running(workdir) as cluster:
        print(f"control plane ({cluster.bin_dir.name}) up in {cluster.start_seconds:.1f}s")
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                        "crd/backgroundjobs.bgjob.dev")
        print(cluster.kubectl("apply", "-f", str(ROOT / "examples")).stdout.rstrip())
        kubectl = cluster.bin_dir / "kubectl"
        print("\nIn another shell:")
        print(f"  export KUBECONFIG={cluster.kubeconfig}")
        print(f"  export PATH={cluster.bin_dir}:{ROOT / '.venv' / 'bin'}:$PATH")
        print("  kubectl get backgroundjobs -A")
        print("  kubectl bgjob list -A")
        print("  kubectl bgjob -n bgjob-examples run document-cleanup --wait --logs")
        print("  curl -s 127.0.0.1:8080/metrics | grep ^bgjob_; curl -s 127.0.0.1:8081/readyz")
        print(f"(kubectl here is {kubectl}; logs of the control plane: {cluster.logs})\n")
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


if __name__ == "__main__":
    sys.exit(main())
