"""``kubectl bgjob`` against the real control plane with the operator running.

Every verb runs as a user would run it: the ``kubectl-bgjob`` console script, found by the real
kubectl on PATH (one test), or called directly with ``--kubeconfig``. The pod driver serves pod
logs like a kubelet, so ``--logs`` and ``logs`` read real ``pods/log`` responses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import localcluster
from tests.conftest import ROOT, Cluster, Operator, eventually
from tests.integration.helpers import condition, job_names, manifest, soon, status

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
PLUGIN = str(BIN / "kubectl-bgjob")


def bgjob(kubeconfig: Path | str, *args: str, timeout: float = 120,
          check: int | None = 0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([PLUGIN, "--kubeconfig", str(kubeconfig), *args], text=True,
                         capture_output=True, timeout=timeout, env=dict(os.environ, TZ="UTC"))
    if check is not None:
        assert res.returncode == check, (
            f"kubectl bgjob {' '.join(args)}: rc {res.returncode}, want {check}\n"
            f"stdout: {res.stdout}\nstderr: {res.stderr}")
    return res


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    """Errors are one ``error: …`` line (after any progress lines, such as the Job name of
    ``run --wait``) and a non-zero exit, never a traceback."""
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), res.stderr
    assert sum(line.startswith("error") for line in lines) == 1, res.stderr
    assert "Traceback" not in res.stderr and len(lines[-1]) < 400
    return lines[-1]


def ready(cluster: Cluster, name: str, ns: str) -> None:
    eventually(lambda: condition(cluster, name, ns, "Ready").get("status") == "True",
               what=f"{name} Ready")


def test_run_wait_logs_then_every_reading_verb(cluster: Cluster, operator: Operator,
                                               namespace: str) -> None:
    kc = cluster.kubeconfig
    cluster.apply(manifest("reports", schedule={"cron": "0 3 * * *", "timeZone": "Asia/Tokyo"},
                           parameters={"scope": "recent"},
                           template={"spec": {"template": {"spec": {"containers": [{
                               "name": "main", "image": "busybox:1.36",
                               "command": ["sh", "-c", "echo report $BGJOB_PARAM_SCOPE"]}]}}}}),
                  namespace)
    ready(cluster, "reports", namespace)

    ok = bgjob(kc, "-n", namespace, "run", "reports", "--param", "scope=full", "--wait",
               "--logs")
    job_ok = re.search(r"job\.batch/(\S+)", ok.stderr).group(1)  # type: ignore[union-attr]
    assert job_ok.startswith("reports-m-")
    assert "sim: $ sh -c echo report $BGJOB_PARAM_SCOPE" in ok.stdout  # streamed pod log
    assert "sim: exit code 0" in ok.stdout
    assert f"{job_ok}: Succeeded (exit code 0)" in ok.stderr
    env = {e["name"]: e.get("value") for e in cluster.get("job", job_ok, namespace)[  # type: ignore[index]
        "spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BGJOB_PARAM_SCOPE"] == "full"

    failed = bgjob(kc, "-n", namespace, "run", "reports", "--param", "SIM_EXIT_CODE=3",
                   "--wait", check=3)  # exits with the run's exit code
    job_bad = re.search(r"job\.batch/(\S+)", failed.stderr).group(1)  # type: ignore[union-attr]
    assert f"{job_bad}: Failed (exit code 3)" in failed.stderr
    # parameters of one run do not leak into the next
    plain = bgjob(kc, "-n", namespace, "run", "reports").stdout.strip()
    assert plain.startswith("job.batch/reports-m-")
    eventually(lambda: (status(cluster, "reports", namespace).get("stats") or {}).get("runs")
               == 3, 30, what="3 runs")
    ann = cluster.get("bgj", "reports", namespace)["metadata"]["annotations"]  # type: ignore[index]
    assert "bgjob.dev/run-parameters" not in ann

    listed = bgjob(kc, "-n", namespace, "list").stdout.splitlines()
    assert listed[0].split()[:3] == ["NAME", "SCHEDULE", "SUSPENDED"]
    assert listed[1].startswith("reports ") and "At 03:00" in listed[1]
    wide = bgjob(kc, "-n", namespace, "list", "-o", "wide").stdout
    assert "Asia/Tokyo" in wide and "66.7%" in wide
    all_ns = bgjob(kc, "list", "-A").stdout
    assert re.search(rf"^{namespace}\s+reports\s", all_ns, re.M)
    as_json = json.loads(bgjob(kc, "-n", namespace, "list", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in as_json["items"]] == ["reports"]
    as_yaml = yaml.safe_load(bgjob(kc, "-n", namespace, "describe", "reports", "-o",
                                   "yaml").stdout)
    assert as_yaml["status"]["stats"]["runs"] == 3

    described = bgjob(kc, "-n", namespace, "describe", "reports").stdout
    assert "In words:    At 03:00" in described
    assert "Time zone:   Asia/Tokyo" in described
    assert re.search(r"  \w{3} [-\d]{10} 03:00 JST   \(local \w{3} [-\d]{10} 18:00 UTC\)",
                     described), described
    assert job_ok in described and job_bad in described
    assert "Stats:         3 runs, 2 succeeded, 1 failed" in described
    assert re.search(r"Failing\s+False\s+LastRunSucceeded", described)
    assert re.search(r"Warning\s+RunFailed", described) and "Events:" in described

    history = bgjob(kc, "-n", namespace, "history", "reports").stdout.splitlines()
    assert history[0].split()[:3] == ["JOB", "TRIGGER", "ATTEMPT"]
    bad_row = next(line for line in history if line.startswith(job_bad))
    assert re.search(r"manual\s+1\s+\S+\s+\S+s\s+Failed\s+3\s+BackoffLimitExceeded", bad_row)
    runs = json.loads(bgjob(kc, "-n", namespace, "history", "reports", "-o", "json").stdout)
    assert len(runs) == 3 and {r["job"] for r in runs} >= {job_ok, job_bad}

    stats = bgjob(kc, "-n", namespace, "stats").stdout.splitlines()
    assert stats[1].split()[:4] == ["reports", "3", "2", "1"]
    one = json.loads(bgjob(kc, "-n", namespace, "stats", "reports", "-o", "json").stdout)
    assert one[f"{namespace}/reports"]["runs"] == 3

    logs_ok = bgjob(kc, "-n", namespace, "logs", "reports", "--run", job_ok).stdout
    assert "sim: exit code 0" in logs_ok and job_ok in logs_ok
    logs_bad = bgjob(kc, "-n", namespace, "logs", "reports", "--run", job_bad).stdout
    assert "sim: exit code 3" in logs_bad
    latest = bgjob(kc, "-n", namespace, "logs", "reports").stdout
    assert "sim: exit code 0" in latest  # the newest run (the plain one) succeeded

    assert "No overdue BackgroundJobs found" in bgjob(kc, "-n", namespace, "overdue").stderr


def test_run_wait_follows_retries_to_the_final_exit_code(cluster: Cluster, operator: Operator,
                                                         namespace: str) -> None:
    cluster.apply(manifest("flaky", retry={"limit": 1, "backoff": {
        "initialDelaySeconds": 1, "jitter": 0}}), namespace)
    ready(cluster, "flaky", namespace)
    res = bgjob(cluster.kubeconfig, "-n", namespace, "run", "flaky", "--param",
                "SIM_EXIT_CODE=5", "--wait", check=5)
    assert "retry: attempt 2 as " in res.stderr
    first, second = job_names(cluster, "flaky", namespace)
    assert f"{first}: Failed (exit code 5)" in res.stderr
    assert f"{second}: Failed (exit code 5)" in res.stderr and second == f"{first}-r2"


def test_forbid_rejection_cancel_and_overdue(cluster: Cluster, operator: Operator,
                                             namespace: str) -> None:
    kc = cluster.kubeconfig
    # An `at` run that comes due while a manual run is active under Forbid is skipped after
    # its startingDeadlineSeconds: the BackgroundJob is overdue.
    cluster.apply(manifest("busy", schedule={"at": soon(4), "startingDeadlineSeconds": 2}),
                  namespace)
    ready(cluster, "busy", namespace)
    job = bgjob(kc, "-n", namespace, "run", "busy", "--param", "SIM_DURATION_SECONDS=30")
    job_name = job.stdout.strip().removeprefix("job.batch/")
    eventually(lambda: status(cluster, "busy", namespace).get("active"), 20, what="active")

    rejected = bgjob(kc, "-n", namespace, "run", "busy", "--wait", check=None)
    assert "TriggerRejected" in one_line_error(rejected)

    eventually(lambda: condition(cluster, "busy", namespace, "Overdue").get("status") == "True",
               30, what="Overdue")
    overdue = bgjob(kc, "overdue", "-A").stdout
    assert re.search(rf"^{namespace}\s+busy\s+MissedSchedule\s+\S+\s+1\s+the run due at",
                     overdue, re.M), overdue
    assert [i["metadata"]["name"] for i in json.loads(bgjob(
        kc, "-n", namespace, "overdue", "-o", "json").stdout)["items"]] == ["busy"]

    cancelled = bgjob(kc, "-n", namespace, "cancel", "busy").stdout
    assert f"cancel requested for busy: {job_name}" in cancelled
    eventually(lambda: (status(cluster, "busy", namespace).get("lastRun") or {}).get("result")
               == "Cancelled", 30, what="Cancelled")


def test_suspend_and_resume_with_dry_run(cluster: Cluster, operator: Operator,
                                         namespace: str) -> None:
    kc = cluster.kubeconfig
    cluster.apply(manifest("nightly", schedule={"daily": "02:00"}), namespace)
    ready(cluster, "nightly", namespace)
    before = cluster.get("bgj", "nightly", namespace)["metadata"]  # type: ignore[index]

    dry = bgjob(kc, "-n", namespace, "suspend", "nightly", "--dry-run").stdout
    assert "spec:\n  suspend: true" in dry
    assert (f"kubectl -n {namespace} patch backgroundjob nightly --type merge "
            "-p '{\"spec\":{\"suspend\":true}}'") in dry
    after = cluster.get("bgj", "nightly", namespace)["metadata"]  # type: ignore[index]
    assert after["resourceVersion"] == before["resourceVersion"]  # nothing written

    assert "suspended" in bgjob(kc, "-n", namespace, "suspend", "nightly").stdout
    eventually(lambda: condition(cluster, "nightly", namespace, "Suspended").get("status")
               == "True", what="Suspended")
    assert cluster.get("cronjob", "nightly", namespace)["spec"]["suspend"] is True  # type: ignore[index]

    assert "resumed" in bgjob(kc, "-n", namespace, "resume", "nightly").stdout
    eventually(lambda: condition(cluster, "nightly", namespace, "Suspended").get("status")
               == "False", what="resumed")
    obj = cluster.get("bgj", "nightly", namespace)
    assert obj["spec"]["suspend"] is False  # type: ignore[index]


def test_kubectl_finds_the_plugin_and_completion(cluster: Cluster, namespace: str) -> None:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}",
               KUBECONFIG=str(cluster.kubeconfig))
    kubectl = str(localcluster.build() / "kubectl")
    plugins = subprocess.run([kubectl, "plugin", "list"], text=True, capture_output=True,
                             env=env)
    assert "kubectl-bgjob" in plugins.stdout
    res = subprocess.run([kubectl, "bgjob", "validate", "every:7m", "--count", "2",
                          "--from", "2026-01-01T00:00:00Z"],
                         text=True, capture_output=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[1:] == ["  2026-01-01T00:07:00+00:00  (2026-01-01T00:07:00Z)",
                                           "  2026-01-01T00:14:00+00:00  (2026-01-01T00:14:00Z)"]
    res = subprocess.run([kubectl, "bgjob", "-n", namespace, "list"], text=True,
                         capture_output=True, env=env)
    assert res.returncode == 0 and "No BackgroundJobs found" in res.stderr
    # kubectl's own completion asks the kubectl_complete-bgjob executable on PATH
    cluster.apply(manifest("nightly-report"), namespace)

    def complete(*words: str) -> list[str]:
        res = subprocess.run([kubectl, "__complete", "bgjob", *words], text=True,
                             capture_output=True, env=env)
        return [line for line in res.stdout.splitlines() if not line.startswith(":")]

    assert complete("ru") == ["run"]
    assert complete("run", "--wa") == ["--wait"]
    assert complete("-n", namespace, "describe", "nightly") == ["nightly-report"]
    assert complete("-n", namespace, "describe", "nightly-report", "") == []
    # the bash script for the kubectl-bgjob command asks the same code
    script = bgjob(cluster.kubeconfig, "completion", "bash").stdout
    bash = shutil.which("bash")
    assert bash
    probe = subprocess.run([bash, "-c", script + "\nCOMP_WORDS=(kubectl-bgjob ru); "
                            "COMP_CWORD=1; _kubectl_bgjob; echo ${COMPREPLY[@]}; "
                            f"COMP_WORDS=(kubectl-bgjob -n {namespace} logs nig); "
                            "COMP_CWORD=4; _kubectl_bgjob; echo ${COMPREPLY[@]}"],
                           text=True, capture_output=True, env=env)
    assert probe.stdout.splitlines() == ["run", "nightly-report"], probe.stderr


# -- errors: one line, non-zero -----------------------------------------------------------

@pytest.fixture(scope="module")
def bare_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localcluster.LocalCluster]:
    """A second control plane without the CRD, for the "not installed" path."""
    with localcluster.running(tmp_path_factory.mktemp("bare"), with_pod_driver=False) as lc:
        yield lc


def test_every_error_is_one_line_and_non_zero(cluster: Cluster, operator: Operator,
                                              namespace: str, tmp_path: Path,
                                              bare_cluster: localcluster.LocalCluster) -> None:
    kc = cluster.kubeconfig
    cluster.apply(manifest("exists"), namespace)
    ready(cluster, "exists", namespace)

    err = one_line_error(bgjob(kc, "-n", namespace, "describe", "ghost", check=None))
    assert err == f'error: backgroundjob "ghost" not found in namespace "{namespace}"'
    for verb in ("run", "cancel", "suspend", "resume", "history", "logs"):
        assert "not found" in one_line_error(bgjob(kc, "-n", namespace, verb, "ghost",
                                                   check=None))

    err = one_line_error(bgjob(bare_cluster.kubeconfig, "list", check=None))
    assert "the BackgroundJob CRD is not installed" in err

    sa_kc = cluster.lc.service_account_kubeconfig(namespace, "nobody",
                                                  tmp_path / "sa.kubeconfig")
    for args in (["list"], ["describe", "exists"], ["run", "exists"]):
        err = one_line_error(bgjob(sa_kc, "-n", namespace, *args, check=None))
        assert err.startswith("error: forbidden: ") and "system:serviceaccount" in err

    unreachable = tmp_path / "down.kubeconfig"
    unreachable.write_text(re.sub(r"https://127\.0\.0\.1:\d+", "https://127.0.0.1:1",
                                  Path(kc).read_text()))
    err = one_line_error(bgjob(unreachable, "list", check=None, timeout=30))
    assert err == "error: cannot reach the API server at https://127.0.0.1:1: connection refused"

    err = one_line_error(bgjob(tmp_path / "missing.kubeconfig", "list", check=None))
    assert err.startswith("error: no usable kubeconfig")

    # parameters are judged before anything is written
    rv = cluster.get("bgj", "exists", namespace)["metadata"]["resourceVersion"]  # type: ignore[index]
    for bad in ("novalue", "1st=x", "=x"):
        err = one_line_error(bgjob(kc, "-n", namespace, "run", "exists", "--param", bad,
                                   check=None))
        assert "--param" in err
    assert cluster.get("bgj", "exists", namespace)["metadata"]["resourceVersion"] == rv  # type: ignore[index]

    err = one_line_error(bgjob(kc, "-n", namespace, "logs", "exists", check=None))
    assert "has no runs yet" in err
    err = one_line_error(bgjob(kc, "validate", "0 0 31 2 *", check=None))
    assert err.startswith("error: spec.schedule.cron:") and "never fire" in err
    err = one_line_error(bgjob(kc, "validate", "daily:02:00", "--tz", "Mars/Olympus",
                               check=None))
    assert err.startswith("error: spec.schedule.timeZone: unknown time zone")
    usage = bgjob(kc, "frobnicate", check=2)
    assert one_line_error(usage).startswith("error: argument VERB: invalid choice")


def test_every_verb_has_help_with_an_example() -> None:
    verbs = ["list", "describe", "run", "cancel", "suspend", "resume", "history", "logs",
             "overdue", "stats", "validate", "completion"]
    top = subprocess.run([PLUGIN, "--help"], text=True, capture_output=True, cwd=ROOT)
    assert top.returncode == 0 and all(v in top.stdout for v in verbs)
    for verb in verbs:
        res = subprocess.run([PLUGIN, verb, "--help"], text=True, capture_output=True)
        assert res.returncode == 0 and "\nexample:\n  " in res.stdout, verb
        assert "kubectl bgjob " in res.stdout.split("example:")[1], verb
