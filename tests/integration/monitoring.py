"""The chart's monitoring, outside Kubernetes: rendered with helm, its rules checked and unit-tested
with promtool, loaded into a real Prometheus on 127.0.0.1 that scrapes the operator as the
Prometheus Operator would from the chart's ServiceMonitor, and the dashboard's queries with
Grafana's variables expanded.

``prometheus`` and ``promtool`` come from Debian's ``prometheus`` package (``hack/setup.sh``
installs it as root); helm from the local control plane's build.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

import localcluster
from tests.conftest import ROOT, eventually

CHART = ROOT / "charts" / "bgjob-operator"
RELEASE = "bgjob-operator"
RELEASE_NS = "bgjob-system"
MONITORING = ("metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,"
              "grafanaDashboard.enabled=true")


def tool(name: str) -> str:
    """``prometheus`` or ``promtool`` on PATH; missing is a failure, never a skip."""
    path = shutil.which(name)
    assert path, (f"{name} is not on PATH: run hack/setup.sh as root (it installs Debian's "
                  "prometheus package), or put prometheus and promtool 2.42+ on PATH")
    return path


@functools.cache
def helm_binary() -> Path:
    return localcluster.build() / "helm"


def render(workdir: Path, *sets: str) -> list[dict[str, Any]]:
    """``helm template`` of the chart with monitoring on, plus ``--set`` values."""
    args = [str(helm_binary()), "template", RELEASE, str(CHART), "-n", RELEASE_NS,
            "--set", MONITORING]
    for s in sets:
        args += ["--set", s]
    env = dict(os.environ, HELM_CACHE_HOME=str(workdir / "helm-cache"),
               HELM_CONFIG_HOME=str(workdir / "helm-config"),
               HELM_DATA_HOME=str(workdir / "helm-data"))
    res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, f"helm template: {res.stderr}"
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind)


def write_rules(docs: list[dict[str, Any]], path: Path) -> Path:
    """The PrometheusRule's groups as a plain rules file, as the Prometheus Operator mounts it."""
    path.write_text(yaml.safe_dump({"groups": of_kind(docs, "PrometheusRule")["spec"]["groups"]},
                                   sort_keys=False))
    return path


def alert_rules(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    groups = of_kind(docs, "PrometheusRule")["spec"]["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=120)


def rendered_annotations(rule: dict[str, Any], labels: dict[str, str],
                         value: str) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for an alert with these labels and
    value (the only template forms the chart uses: ``$labels.x`` and ``$value``)."""
    def one(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)
        return text.replace("{{ $value }}", value)

    out = {k: one(v) for k, v in rule.get("annotations", {}).items()}
    assert not [v for v in out.values() if "{{" in v], f"unexpected template in {out}"
    return out


def scrape_config(docs: list[dict[str, Any]], target: str, interval: str,
                  pod: str) -> dict[str, Any]:
    """What the Prometheus Operator generates from the chart's ServiceMonitor for one endpoint:
    ``honor_labels`` from the endpoint and the target labels it adds (namespace, service, pod,
    container, endpoint, job = the Service's name). The target is the operator on 127.0.0.1."""
    monitor = of_kind(docs, "ServiceMonitor")
    service = next(d for d in docs if d["kind"] == "Service"
                   and d["metadata"]["name"].endswith("-metrics"))
    deploy = of_kind(docs, "Deployment")
    endpoint = monitor["spec"]["endpoints"][0]
    svc = service["metadata"]["name"]
    container = deploy["spec"]["template"]["spec"]["containers"][0]["name"]
    return {
        "job_name": f"serviceMonitor/{monitor['metadata']['namespace']}/"
                    f"{monitor['metadata']['name']}/0",
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "metrics_path": endpoint.get("path", "/metrics"),
        "static_configs": [{"targets": [target], "labels": {
            "namespace": service["metadata"]["namespace"], "service": svc, "pod": pod,
            "container": container, "endpoint": endpoint["port"], "job": svc}}],
    }


class Prometheus:
    """A real Prometheus on 127.0.0.1 with its own storage in ``workdir``."""

    def __init__(self, workdir: Path, scrape: dict[str, Any], rules: Path,
                 evaluation_interval: str = "1s") -> None:
        self.workdir = workdir
        self.port = localcluster.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = {"global": {"scrape_interval": scrape["scrape_interval"],
                             "evaluation_interval": evaluation_interval},
                  "rule_files": [str(rules)], "scrape_configs": [scrape]}
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))
        check = promtool("check", "config", str(self.config))
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [tool("prometheus"), f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                preexec_fn=localcluster._die_with_parent)
        eventually(self._ready, 30, what="prometheus ready")

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log_tail()
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-5000:] if self.log.exists() else ""

    def api(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.base}/api/v1/{path}?{query}", timeout=10) as resp:
            doc = json.loads(resp.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: str) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}",
                        step=step)
        return list(data["result"])

    def label_values(self, label: str, match: str) -> list[str]:
        return list(self.api(f"label/{label}/values", **{"match[]": [match]}))

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])

    def firing(self, alertname: str, **labels: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts() if a["state"] == "firing"
                and a["labels"].get("alertname") == alertname
                and all(a["labels"].get(k) == v for k, v in labels.items())]

    def wait_targets_up(self, timeout: float = 30) -> None:
        def up() -> bool:
            targets = self.api("targets")["activeTargets"]
            return bool(targets) and all(t["health"] == "up" for t in targets)

        eventually(up, timeout, what="scrape target up")


def now() -> float:
    return time.time()


VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def expand(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variable interpolation for the forms the dashboard uses."""
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in variables, f"no value for ${name} in {expr}"
        return variables[name]

    return VARIABLE.sub(sub, expr)


def regex_of(values: list[str]) -> str:
    """A multi-value variable as Grafana's Prometheus data source puts it into ``=~"…"``:
    ``(a|b)``, regex characters escaped with two backslashes (one survives PromQL's string)."""
    escaped = [re.sub(r"([\\^$*+?.()|\[\]{}/])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
