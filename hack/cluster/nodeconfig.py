"""The real node's configuration files, as pure functions of its paths and ports (realnode.py
writes them). Every address in them is 127.0.0.1 or a unix socket."""

from __future__ import annotations

import json
from pathlib import Path

BRIDGE = "bgjob0"
POD_CIDR = "10.244.0.0/24"
CGROUP_ROOT = "bgjob-node"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
CNI_BIN = Path("/usr/lib/cni")


def cni_conflist(state: Path) -> str:
    """A bridge with no address on the host side, no gateway and no masquerade: pods reach
    each other and nothing else."""
    return json.dumps({
        "cniVersion": "1.0.0", "name": "bgjob",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": False, "isDefaultGateway": False,
             "ipMasq": False, "hairpinMode": False,
             "ipam": {"type": "host-local", "dataDir": str(state / "ipam"),
                      "ranges": [[{"subnet": POD_CIDR}]]}},
            {"type": "loopback"},
        ],
    }, indent=1)


def containerd_toml(state: Path, data: Path, socket: Path) -> str:
    """restrict_oom_score_adj: runc may not lower oom_score_adj in this sandbox (every sandbox
    failed without it); the stream server (exec, logs) on 127.0.0.1."""
    return f"""version = 2
root = "{data}/containerd/root"
state = "{state}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{data}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{state}/net.d"
"""""


def kubelet_yaml(state: Path, socket: Path, ca: Path, port: int, healthz_port: int) -> str:
    """Webhook authn/authz against the cluster CA, cgroupfs under CGROUP_ROOT (cgroup v1 is
    allowed), no swap check, a resolver list of our own, thresholds low enough for a busy disk,
    no image GC, no iptables chains."""
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: {port}
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
readOnlyPort: 0
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
containerRuntimeEndpoint: unix://{socket}
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
failCgroupV1: false
failSwapOn: false
resolvConf: {state / 'resolv.conf'}
evictionHard: {{memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%,
  nodefs.inodesFree: 1%}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
makeIPTablesUtilChains: false
serializeImagePulls: false
maxPods: 50
"""""
