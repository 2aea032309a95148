"""Metrics, health endpoints and JSON logs of the running operator, on the real control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import localcluster
from tests.conftest import ROOT, Cluster, Operator, eventually
from tests.integration.helpers import annotate, condition, handled, manifest, wait_runs

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_follow_runs_survive_a_restart_and_vanish_with_the_object(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(manifest("metered", schedule={"cron": "0 3 * * *"}), namespace)
    eventually(lambda: condition(cluster, "metered", namespace, "Ready").get("status") == "True")
    annotate(cluster, "metered", namespace, run_now="a")
    handled(cluster, "metered", namespace, "a")
    wait_runs(cluster, "metered", namespace, 1)
    annotate(cluster, "metered", namespace, run_now="b",
             run_parameters='{"SIM_EXIT_CODE":"4"}')
    wait_runs(cluster, "metered", namespace, 2)
    obj = {"namespace": namespace, "backgroundjob": "metered"}

    def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        s = scrape(operator.metrics_port)
        return s if sample(s, "bgjob_runs_total", **obj, trigger="manual",
                           result="Failed") == 1 else None

    s = eventually(counted, 20, what="runs counted")
    assert sample(s, "bgjob_runs_total", **obj, trigger="manual", result="Succeeded") == 1
    assert sample(s, "bgjob_run_duration_seconds_count", **obj, result="Succeeded") == 1
    assert sample(s, "bgjob_consecutive_failures", **obj) == 1
    assert sample(s, "bgjob_active_runs", **obj) == 0
    assert sample(s, "bgjob_overdue", **obj) == 0
    assert (sample(s, "bgjob_next_run_timestamp_seconds", **obj) or 0) > 0
    success = sample(s, "bgjob_last_success_timestamp_seconds", **obj)
    assert success and success > 1.7e9
    assert (sample(s, "bgjob_reconcile_total", result="success") or 0) > 0

    # a restart: gauges come back from status, counters start from zero
    operator.stop()
    operator.start()

    def restored() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        try:
            s = scrape(operator.metrics_port)
        except OSError:
            return None
        return s if sample(s, "bgjob_consecutive_failures", **obj) == 1 else None

    s = eventually(restored, 30, what="gauges restored")
    assert sample(s, "bgjob_last_success_timestamp_seconds", **obj) == success
    assert sample(s, "bgjob_runs_total", **obj, trigger="manual", result="Failed") is None

    cluster.kubectl("-n", namespace, "delete", "bgj", "metered")
    eventually(lambda: not [k for k in scrape(operator.metrics_port)
                            if ("backgroundjob", "metered") in k[1]], 20,
               what="series removed")


def test_health_endpoints(cluster: Cluster, operator: Operator) -> None:
    base = f"http://127.0.0.1:{operator.health_port}"
    eventually(lambda: get(f"{base}/readyz")[0] == 200, 30, what="ready")
    assert get(f"{base}/healthz") == (200, "ok\n")


def test_not_ready_without_the_api_and_json_logs(cluster: Cluster, tmp_path: Path) -> None:
    """Pointed at a dead API server the operator is alive but not ready; logs are JSON."""
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(cluster.kubeconfig.read_text().replace(
        cluster.lc.server, "https://127.0.0.1:1"))
    health = localcluster.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgjob", "--listen-address", "127.0.0.1", "--health-port",
         str(health), "--metrics-port", str(localcluster.free_port()), "--log-format", "json",
         "--kubeconfig", str(dead)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        base = f"http://127.0.0.1:{health}"

        def alive() -> bool:
            try:
                return get(f"{base}/healthz")[0] == 200
            except OSError:
                return False

        eventually(alive, 20, what="healthz")
        code, body = get(f"{base}/readyz")
        assert code == 503 and "initial listing" in body and "not done" in body
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    lines = [line for line in out.decode().splitlines() if line.strip()]
    assert lines
    for line in lines:
        doc = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message"} <= doc.keys()
