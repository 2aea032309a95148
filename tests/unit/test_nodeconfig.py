"""The real node's configuration keeps every listener on loopback and the pods' network closed:
these are the safety rules of running a kubelet on a shared machine, so they are pinned here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import nodeconfig
import realnode

STATE, DATA, SOCK = Path("/run/n"), Path("/var/tmp/n"), Path("/run/n/containerd.sock")


def test_the_pod_bridge_has_no_gateway_no_masquerade_and_state_of_its_own() -> None:
    conf = json.loads(nodeconfig.cni_conflist(STATE))
    bridge = next(p for p in conf["plugins"] if p["type"] == "bridge")
    assert (bridge["isGateway"], bridge["isDefaultGateway"], bridge["ipMasq"]) == (
        False, False, False)
    assert bridge["bridge"] == nodeconfig.BRIDGE
    assert bridge["ipam"]["dataDir"].startswith(str(STATE))
    assert "routes" not in bridge["ipam"]


def test_containerd_serves_on_its_own_socket_and_streams_on_loopback() -> None:
    toml = nodeconfig.containerd_toml(STATE, DATA, SOCK)
    assert f'address = "{SOCK}"' in toml
    assert 'stream_server_address = "127.0.0.1"' in toml
    assert re.findall(r'^(?:root|state) = "([^"]+)"', toml, re.M) == [
        f"{DATA}/containerd/root", f"{STATE}/containerd/state"]
    assert f'conf_dir = "{STATE}/net.d"' in toml
    assert "restrict_oom_score_adj = true" in toml


def test_the_kubelet_listens_on_loopback_only_and_touches_no_iptables() -> None:
    conf = yaml.safe_load(nodeconfig.kubelet_yaml(STATE, SOCK, Path("/ca.crt"), 10250, 10248))
    assert (conf["address"], conf["healthzBindAddress"]) == ("127.0.0.1", "127.0.0.1")
    assert conf["readOnlyPort"] == 0
    assert conf["authentication"]["anonymous"]["enabled"] is False
    assert conf["authorization"]["mode"] == "Webhook"
    assert conf["makeIPTablesUtilChains"] is False
    assert conf["containerRuntimeEndpoint"] == f"unix://{SOCK}"
    assert conf["cgroupRoot"] == f"/{nodeconfig.CGROUP_ROOT}"


def test_without_root_the_real_node_fails_naming_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    why = realnode.missing()
    assert why and "root" in why
    assert all(pkg in why for pkg in ("containerd", "runc", "containernetworking-plugins",
                                      "buildah", "mmdebstrap"))
