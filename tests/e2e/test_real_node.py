"""The shipping proof on a real kubelet: the image built from the Dockerfile runs as the chart's
Deployment, and BackgroundJobs run as real containers (real exit codes, a timeout the kubelet
enforces, a cancel that kills a running container, a retry, logs through the API server).

The tests share one release and run in file order: install, runs, upgrade, uninstall."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from typing import Any

import pytest
import yaml

import realnode
from tests.conftest import ROOT, eventually
from tests.e2e.conftest import RELEASE, RELEASE_NS, REPOSITORY, RealCluster
from tests.integration.helpers import annotate, jobs, status, wait_runs

pytestmark = pytest.mark.e2e

EXAMPLES_NS = "bgjob-examples"
NS = "e2e"

INSIDE = """
import errno, getpass, json, os
status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())
try:
    open('/bgjob-write-test', 'w')
    root = 'writable'
except OSError as exc:
    root = errno.errorcode[exc.errno]
open('/tmp/bgjob-write-test', 'w').close()
print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'user': getpass.getuser(),
                  'root': root, **{k: status[k].strip() for k in
                  ('CapEff', 'CapPrm', 'CapBnd', 'NoNewPrivs', 'Seccomp')}}))
"""


def _pod(real: RealCluster) -> dict[str, Any]:
    pods = real.operator_pods()
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod["status"].get("conditions") or [])


def _restarts(pod: dict[str, Any]) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses") or [])


def _ready_pod(real: RealCluster, not_uid: str = "") -> dict[str, Any] | None:
    pod = _pod(real)
    return pod if _ready(pod) and pod["metadata"]["uid"] != not_uid else None


def _bgj(name: str, command: str, **spec: Any) -> str:
    spec.setdefault("schedule", {"cron": "0 0 1 1 *"})  # far away: manual runs only
    spec["template"] = {"spec": {"template": {"spec": {"containers": [{
        "name": "main", "image": "busybox:1.36", "command": ["sh", "-c", command]}]}}}}
    return json.dumps({"apiVersion": "bgjob.dev/v1alpha1", "kind": "BackgroundJob",
                       "metadata": {"name": name, "namespace": NS}, "spec": spec})


def _last(real: RealCluster, name: str) -> dict[str, Any]:
    return dict(status(real, name, NS).get("lastRun") or {})


def test_the_operator_pod_is_ready_with_no_restarts_under_the_charts_security_context(
        release: RealCluster) -> None:
    pod = eventually(lambda: _ready_pod(release), 60, what="operator pod Ready")
    assert pod["spec"]["nodeName"] == realnode.NODE_NAME
    assert pod["status"]["podIP"] == "127.0.0.1"  # probes and the servers stay on loopback
    assert pod["spec"]["containers"][0]["image"] == f"{REPOSITORY}:dev"
    name = pod["metadata"]["name"]
    out = release.kubectl("-n", RELEASE_NS, "exec", name, "--", "python3", "-c", INSIDE).stdout
    inside = json.loads(out)
    assert (inside["uid"], inside["gid"], inside["user"]) == (65532, 65532, "nonroot")
    assert int(inside["CapEff"], 16) == 0 and int(inside["CapPrm"], 16) == 0
    assert inside["NoNewPrivs"] == "1"
    assert inside["Seccomp"] == "2"  # filter mode: the RuntimeDefault profile
    assert inside["root"] == "EROFS"
    logs = release.kubectl("-n", RELEASE_NS, "logs", name).stdout
    assert "Traceback" not in logs and "KeyError" not in logs, logs[-2000:]
    # kopf's own session talks to the same API server as the rest (it once dialled
    # kubernetes.default.svc, which nothing here resolves); a retried 429 at start is fine
    server = f"https://127.0.0.1:{release.lc.api_port}/"
    for line in logs.splitlines():
        assert "Request attempt" not in line or server in line, line
    time.sleep(12)  # past the liveness probe's initial delay: still no restart
    assert _restarts(_pod(release)) == 0


def _probe_counts(real: RealCluster, pod: str) -> dict[str, float]:
    text = real.node.kubelet_get("/metrics/probes")
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("prober_probe_total{") and f'pod="{pod}"' in line:
            kind = re.search(r'probe_type="(\w+)"', line)
            result = re.search(r'result="(\w+)"', line)
            if kind and result:
                key = f"{kind.group(1)}/{result.group(1)}"
                counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_liveness_and_readiness_probes_really_probe(release: RealCluster) -> None:
    pod = _pod(release)["metadata"]["name"]
    def probed(more_than: dict[str, float]) -> dict[str, float] | None:
        counts = _probe_counts(release, pod)
        kinds = ("Liveness/successful", "Readiness/successful")
        return counts if all(counts.get(k, 0) > more_than.get(k, 0) for k in kinds) else None

    first = eventually(lambda: probed({}), 60, what="probe counts")
    later = eventually(lambda: probed(first), 60, what="more probes")
    # once Ready it stayed Ready, and liveness never failed
    assert later.get("Readiness/failed", 0) == first.get("Readiness/failed", 0), later
    assert not later.get("Liveness/failed"), later
    # the ports the kubelet probes are the operator's own, on 127.0.0.1 of the node
    for port, path in ((release.health_port, "/readyz"), (release.health_port, "/healthz"),
                       (release.metrics_port, "/metrics")):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            assert resp.status == 200, path
            if path == "/metrics":
                assert b"bgjob_" in resp.read()


def test_examples_run_as_real_containers_with_logs(release: RealCluster) -> None:
    release.kubectl("apply", "-f", str(ROOT / "examples"))
    out = release.plugin("-n", EXAMPLES_NS, "run", "document-cleanup", "--wait", "--logs")
    assert "cleaning documents at level normal" in out.stdout, out.stdout
    wait_runs(release, "document-cleanup", EXAMPLES_NS, 1, timeout=60)
    run = dict(status(release, "document-cleanup", EXAMPLES_NS)["lastRun"])
    assert (run["result"], run.get("exitCode")) == ("Succeeded", 0), run
    logs = release.plugin("-n", EXAMPLES_NS, "logs", "document-cleanup").stdout
    assert "cleaning documents at level normal" in logs
    annotate(release, "document-refresh", EXAMPLES_NS, run_now="e2e-1",
             run_parameters='{"scope":"all"}')
    wait_runs(release, "document-refresh", EXAMPLES_NS, 1, timeout=60)
    logs = release.plugin("-n", EXAMPLES_NS, "logs", "document-refresh").stdout
    assert "refreshing all in batches of 500" in logs, logs


def test_failure_timeout_cancel_and_retry_on_real_containers(release: RealCluster) -> None:
    release.kubectl("create", "namespace", NS)
    for doc in (
        _bgj("fails", "echo failing; exit 3"),
        # ignores SIGTERM: the kubelet kills it after the grace period
        _bgj("too-slow", "trap '' TERM; sleep 120", timeoutSeconds=3),
        _bgj("long", "sleep 120"),
        _bgj("flaky", 'echo "attempt $BGJOB_ATTEMPT"; [ "$BGJOB_ATTEMPT" -ge 2 ]',
             retry={"limit": 2, "backoff": {"initialDelaySeconds": 1, "factor": 1.0,
                                            "maxDelaySeconds": 1, "jitter": 0.0}}),
    ):
        release.kubectl("apply", "-f", "-", input=doc)
    for name in ("fails", "too-slow", "long", "flaky"):
        annotate(release, name, NS, run_now="e2e-1")

    eventually(lambda: _last(release, "fails").get("result") == "Failed", 90, what="Failed")
    assert _last(release, "fails")["exitCode"] == 3
    assert "failing" in release.plugin("-n", NS, "logs", "fails").stdout

    eventually(lambda: status(release, "long", NS).get("active"), 60, what="long active")
    eventually(lambda: any(p["status"].get("phase") == "Running"
                           for p in release.items("pods", NS, "bgjob.dev/backgroundjob=long")),
               60, what="long's container running")
    annotate(release, "long", NS, cancel="e2e-c")
    eventually(lambda: _last(release, "long").get("result") == "Cancelled", 90,
               what="Cancelled")
    eventually(lambda: not release.items("pods", NS, "bgjob.dev/backgroundjob=long"), 90,
               what="the cancelled run's pod gone")

    eventually(lambda: _last(release, "too-slow").get("result") == "DeadlineExceeded", 120,
               what="DeadlineExceeded")

    s = wait_runs(release, "flaky", NS, 2, timeout=120)
    assert _last(release, "flaky")["result"] == "Succeeded", s
    assert (s["stats"]["failed"], s["stats"]["succeeded"], s["stats"]["retries"]) == (1, 1, 1)
    assert sorted(r["attempt"] for r in s["runs"]) == [1, 2]


def test_helm_upgrade_to_a_changed_image_restarts_the_pod_and_loses_or_repeats_nothing(
        release: RealCluster) -> None:
    old = _pod(release)
    tar = release.images / "bgjob-operator-dev2.tar"
    subprocess.run(["bash", str(ROOT / "hack" / "image.sh"), "retag", f"{REPOSITORY}:dev",
                    f"{REPOSITORY}:dev2", str(tar)], check=True)
    release.node.ctr("images", "import", str(tar))
    release.kubectl("apply", "-f", "-", input=_bgj("across", "sleep 8; echo done"))
    annotate(release, "across", NS, run_now="u1")
    eventually(lambda: status(release, "across", NS).get("active"), 60, what="run in flight")

    release.helm("upgrade", RELEASE, str(ROOT / "charts" / "bgjob-operator"), "-n", RELEASE_NS,
                 *release.install_values("dev2"), "--wait", "--timeout", "180s")
    new = eventually(lambda: _ready_pod(release, not_uid=old["metadata"]["uid"]), 120,
                     what="the new pod Ready")
    assert new["spec"]["containers"][0]["image"] == f"{REPOSITORY}:dev2"
    assert _restarts(new) == 0

    s = wait_runs(release, "across", NS, 1, timeout=90)
    assert _last(release, "across")["result"] == "Succeeded", s
    annotate(release, "across", NS, run_now="u2")  # the new pod acts
    wait_runs(release, "across", NS, 2, timeout=90)
    time.sleep(5)  # nothing more may come: no second Job for u1, no recount
    s = status(release, "across", NS)
    assert (s["stats"]["runs"], s["stats"]["succeeded"]) == (2, 2), s["stats"]
    assert len(jobs(release, "across", NS)) == 2
    assert len({r["job"] for r in s["runs"]}) == 2


def test_helm_uninstall_keeps_the_crd_and_every_backgroundjob(release: RealCluster) -> None:
    def names(namespace: str) -> list[str]:
        items = json.loads(release.kubectl("-n", namespace, "get", "bgj", "-o", "json").stdout)
        return sorted(d["metadata"]["name"] for d in items["items"])

    before = names(NS), names(EXAMPLES_NS)
    examples = sorted(d["metadata"]["name"] for f in (ROOT / "examples").glob("*.yaml")
                      for d in yaml.safe_load_all(f.read_text())
                      if d and d["kind"] == "BackgroundJob")
    assert len(before[0]) == 5 and before[1] == examples
    out = release.helm("uninstall", RELEASE, "-n", RELEASE_NS, "--wait")
    assert "kept due to the resource policy" in out.stdout + out.stderr
    eventually(lambda: not release.operator_pods(), 60, what="the operator pod gone")
    assert release.kubectl("get", "crd", "backgroundjobs.bgjob.dev", "-o", "name").stdout
    assert (names(NS), names(EXAMPLES_NS)) == before
    assert not release.kubectl("get", "clusterrole", "-l",
                               f"app.kubernetes.io/instance={RELEASE}", "-o", "name").stdout
