"""Issue 17 on the local control plane: typed parameters (the API server's CEL rules, the
operator's InvalidSpec and InvalidTrigger, the plugin refusing before it writes), a run's output
in status (the pod driver writes termination messages as a kubelet does), and freshness (Stale
set on time by the operator's own wake-up, and cleared by a successful run)."""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bgjob.status import parse_time
from tests.conftest import Cluster, Operator, eventually
from tests.integration.helpers import (
    annotate,
    condition,
    handled,
    job_names,
    manifest,
    wait_runs,
)
from tests.integration.test_plugin import bgjob, one_line_error

pytestmark = pytest.mark.integration

SCHEMA = [
    {"name": "days", "type": "Integer", "minimum": 1, "maximum": 30, "required": True,
     "description": "age of documents to remove"},
    {"name": "level", "enum": ["light", "deep"]},
    {"name": "since", "type": "Date"},
]


def ready(cluster: Cluster, name: str, ns: str) -> None:
    eventually(lambda: condition(cluster, name, ns, "Ready").get("status") == "True",
               what=f"{name} Ready")


def wait_condition(cluster: Cluster, name: str, ns: str, ctype: str, timeout: float = 30,
                   **want: str) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        cond = condition(cluster, name, ns, ctype)
        return cond if all(cond.get(k) == v for k, v in want.items()) else None

    return eventually(seen, timeout, what=f"{ctype} {want}")


def apply(cluster: Cluster, ns: str, name: str, **spec: Any) -> Any:
    return cluster.kubectl("-n", ns, "apply", "-f", "-", input=manifest(name, **spec),
                           check=False)


def test_a_parameter_schema_contradicting_itself_is_refused_at_apply_time(
        cluster: Cluster, namespace: str) -> None:
    cases = [
        ({"name": "n", "type": "Integer", "minimum": 5, "maximum": 1},
         "minimum must not be above maximum"),
        ({"name": "n", "type": "String", "maximum": 1},
         "minimum and maximum need type Integer or Number"),
        ({"name": "n", "type": "Integer", "pattern": "^1"}, "pattern needs type String"),
        ({"name": "n", "type": "Integer", "enum": ["1", "two"]},
         "every enum value must be of the parameter's type"),
    ]
    for entry, why in cases:
        res = apply(cluster, namespace, "contradiction", parameterSchema=[entry])
        assert res.returncode != 0 and why in res.stderr, (entry, res.stderr)
    twice = apply(cluster, namespace, "contradiction",
                  parameterSchema=[{"name": "n"}, {"name": "n", "type": "Integer"}])
    assert twice.returncode != 0 and "Duplicate value" in twice.stderr, twice.stderr
    assert cluster.get("bgj", "contradiction", namespace) is None


def test_typed_parameters_refused_and_accepted(cluster: Cluster, operator: Operator,
                                               namespace: str) -> None:
    kc, ns = cluster.kubeconfig, namespace
    assert apply(cluster, ns, "cleanup", parameterSchema=SCHEMA,
                 parameters={"days": "7", "level": "light"}).returncode == 0
    ready(cluster, "cleanup", ns)

    # The plugin refuses with the operator's own rules, before writing anything.
    before = cluster.get("bgj", "cleanup", ns)["metadata"]  # type: ignore[index]
    for param, why in (("days=forty", "parameter days: 'forty' is not an Integer"),
                       ("days=31", "parameter days: '31' is above the maximum 30"),
                       ("level=medium", "parameter level: 'medium' is not one of light, deep")):
        line = one_line_error(bgjob(kc, "-n", ns, "run", "cleanup", "--param", param,
                                    check=None))
        assert line.startswith(f"error: --param: {why}"), line
    after = cluster.get("bgj", "cleanup", ns)["metadata"]  # type: ignore[index]
    assert after["resourceVersion"] == before["resourceVersion"]
    assert job_names(cluster, "cleanup", ns) == []

    # Written by hand past the plugin: InvalidTrigger naming the parameter, no run.
    annotate(cluster, "cleanup", ns, run_now="bad1", run_parameters='{"since": "yesterday"}')
    handled(cluster, "cleanup", ns, "bad1")
    cond = condition(cluster, "cleanup", ns, "Ready")
    assert (cond["status"], cond["reason"]) == ("False", "InvalidTrigger")
    assert cond["message"] == ("metadata.annotations[bgjob.dev/run-parameters]: parameter "
                               "since: 'yesterday' is not a Date (YYYY-MM-DD)")
    warned = [e for e in cluster.events(ns, "cleanup") if e["reason"] == "InvalidTrigger"
              and "bad1" in e["message"]]
    assert warned and warned[0]["type"] == "Warning" and "parameter since" in \
        warned[0]["message"]
    assert job_names(cluster, "cleanup", ns) == []

    # A good override runs, with the typed value in its env; Ready is True again.
    out = bgjob(kc, "-n", ns, "run", "cleanup", "--param", "days=30", "--param",
                "since=2026-12-01").stdout.strip()
    job = out.removeprefix("job.batch/")
    eventually(lambda: cluster.get("job", job, ns), 30, what="the good run's Job")
    env = {e["name"]: e.get("value") for e in cluster.get("job", job, ns)[  # type: ignore[index]
        "spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["BGJOB_PARAM_DAYS"], env["BGJOB_PARAM_SINCE"]) == ("30", "2026-12-01")
    ready(cluster, "cleanup", ns)
    described = bgjob(kc, "-n", ns, "describe", "cleanup").stdout
    assert re.search(r"days\s+Integer, >= 1, <= 30\s+7\s+yes\s+age of documents", described), \
        described

    # A default the schema refuses: InvalidSpec naming spec.parameters.days, no run.
    assert apply(cluster, ns, "cleanup", parameterSchema=SCHEMA,
                 parameters={"days": "0"}).returncode == 0
    cond = wait_condition(cluster, "cleanup", ns, "Ready", reason="InvalidSpec")
    assert cond["message"] == "spec.parameters.days: '0' is below the minimum 1"
    assert any(e["reason"] == "InvalidSpec" and e["type"] == "Warning"
               for e in cluster.events(ns, "cleanup"))


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def operator_writes(cluster: Cluster, ns: str) -> int:
    path = cluster.lc.logs / "audit.log"
    return sum(1 for line in path.read_text().splitlines()
               if f'"namespace":"{ns}"' in line and '"userAgent":"bgjob-operator/' in line)


def test_output_of_a_failed_run_and_stale_set_then_cleared(cluster: Cluster,
                                                           operator: Operator,
                                                           namespace: str) -> None:
    kc, ns = cluster.kubeconfig, namespace
    tpl = {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", "export-data"]},
        {"name": "sidecar", "image": "busybox:1.36"}]}}}}
    assert apply(cluster, ns, "export", template=tpl,
                 freshness={"maxAgeSinceSuccess": "1m"}).returncode == 0
    ready(cluster, "export", ns)
    created = cluster.get("bgj", "export", ns)["metadata"]["creationTimestamp"]  # type: ignore[index]
    fresh = condition(cluster, "export", ns, "Stale")
    assert (fresh["status"], fresh["reason"]) == ("False", "Fresh")

    # A failed run: its main container's log tail is its output (FallbackToLogsOnError).
    token = uuid.uuid4().hex[:8]
    annotate(cluster, "export", ns, run_now=token,
             run_parameters=json.dumps({"SIM_EXIT_CODE": "3"}))
    s = wait_runs(cluster, "export", ns, 1)
    want = "sim: $ sh -c export-data\nsim: exit code 3\n"
    assert s["runs"][0]["result"] == "Failed" and s["runs"][0]["output"].endswith(want)
    assert s["lastRun"]["output"] == s["runs"][0]["output"]
    assert len(s["runs"][0]["output"].encode()) <= 1024
    job = cluster.get("job", s["runs"][0]["job"], ns) or {}
    containers = job["spec"]["template"]["spec"]["containers"]
    assert [c["terminationMessagePolicy"] for c in containers] == ["FallbackToLogsOnError"] * 2
    wide = bgjob(kc, "-n", ns, "history", "export", "-o", "wide").stdout
    assert "OUTPUT" in wide.splitlines()[0] and "sim: exit code 3" in wide

    # Stale at creation + 1m, by the operator's own wake-up: no write while it waits.
    time.sleep(3)  # the run's finalizer release settles
    quiet_from = operator_writes(cluster, ns)

    def stale_yet() -> dict[str, Any] | None:
        writes = operator_writes(cluster, ns)  # first: a flip it saw is visible below
        cond = condition(cluster, "export", ns, "Stale")
        if cond.get("status") == "True":
            return cond
        assert writes == quiet_from, "the operator wrote while waiting to turn stale"
        return None

    stale = eventually(stale_yet, 90, what="Stale=True")
    assert stale["reason"] == "NoRecentSuccess"
    late = parse_time(stale["lastTransitionTime"]) - parse_time(created)  # type: ignore[operator]
    assert timedelta(minutes=1) <= late <= timedelta(minutes=1, seconds=10), late
    events = [e for e in cluster.events(ns, "export") if e["reason"] == "Stale"]
    assert len(events) == 1 and events[0]["type"] == "Warning"
    key = ("bgjob_stale", (("backgroundjob", "export"), ("namespace", ns)))
    eventually(lambda: scrape(operator.metrics_port).get(key) == 1, 10, what="bgjob_stale 1")

    # A successful run (with a termination message of its own) clears it.
    annotate(cluster, "export", ns, run_now=uuid.uuid4().hex[:8],
             run_parameters=json.dumps({"SIM_TERMINATION_MESSAGE": "exported 42 rows"}))
    s = wait_runs(cluster, "export", ns, 2)
    assert (s["runs"][0]["result"], s["runs"][0]["output"]) == ("Succeeded", "exported 42 rows")
    cleared = wait_condition(cluster, "export", ns, "Stale", status="False")
    assert cleared["reason"] == "Fresh"
    eventually(lambda: scrape(operator.metrics_port).get(key) == 0, 10, what="bgjob_stale 0")
    described = bgjob(kc, "-n", ns, "describe", "export").stdout
    assert "Last output (" in described and "  | exported 42 rows" in described
    assert len([e for e in cluster.events(ns, "export") if e["reason"] == "Stale"]) == 1

