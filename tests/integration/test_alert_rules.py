"""The chart's alerts, unit-tested with ``promtool test rules`` on the rendered PrometheusRule.

Every alert has a timeline that fires it, one that must not, and one where it resolves (success
after failure, resume after suspend, the operator back up). Series carry the target labels the
Prometheus Operator adds (``job``, ``pod``, ``instance``, …) and, as the chart's ServiceMonitor
has ``honorLabels``, the operator's own ``namespace``. Debian's promtool 2.42 has no
``--coverage``: ``test_every_alert_has_every_kind_of_timeline`` checks the same thing here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.monitoring import (
    RELEASE_NS,
    alert_rules,
    promtool,
    render,
    rendered_annotations,
    write_rules,
)

pytestmark = pytest.mark.integration

JOB = "bgjob-operator-metrics"
POD = "bgjob-operator-5c9d7b8f6d-x2k8p"
NEW_POD = "bgjob-operator-5c9d7b8f6d-q7wmz"
FIRES, SILENT, RESOLVES = "fires", "must not fire", "resolves"


# promtool's notation: "1x3" is four samples (1 1 1 1), "_x3" three missing ones, "stale" a
# staleness marker (the operator removed the series), "0+1x40" a counter rising by 1 a minute.


def series(metric: str, pod: str = POD, **labels: str) -> str:
    target = {"job": JOB, "service": JOB, "endpoint": "metrics", "container": "operator",
              "pod": pod, "instance": f"10.244.0.{7 if pod == POD else 9}:8080"}
    if "namespace" not in labels:
        labels["namespace"] = RELEASE_NS  # the target's, for the operator's own series
    body = ", ".join(f'{k}="{v}"' for k, v in {**target, **labels}.items())
    return f"{metric}{{{body}}}"


def bj(metric: str, name: str, pod: str = POD, ns: str = "team-a", **labels: str) -> str:
    return series(metric, pod, namespace=ns, backgroundjob=name, **labels)


def cond(name: str, ctype: str, status: str, reason: str, pod: str = POD) -> str:
    return bj("bgjob_status_condition", name, pod, type=ctype, status=status, reason=reason)


@dataclass
class Case:
    alert: str
    kind: str
    story: str
    input: list[tuple[str, str]]
    # eval time -> the alerts firing then: (labels besides alertname and severity, $value)
    expect: dict[str, list[tuple[dict[str, str], str]]] = field(default_factory=dict)


def obj(name: str, ns: str = "team-a") -> dict[str, str]:
    return {"namespace": ns, "backgroundjob": name}


OPERATOR = {"namespace": RELEASE_NS, "job": JOB}

CASES = [
    # -- BackgroundJobFailing: bgjob_consecutive_failures > 0
    Case("BackgroundJobFailing", FIRES, "a run fails for good at 2m; another at 11m",
         [(bj("bgjob_consecutive_failures", "report"), "0 0 1x8 2x12")],
         {"6m": [], "7m": [(obj("report"), "1")], "20m": [(obj("report"), "2")]}),
    Case("BackgroundJobFailing", FIRES, "the operator pod is replaced at 7m: still one alert",
         [(bj("bgjob_consecutive_failures", "report"), "1x6 stale"),
          (bj("bgjob_consecutive_failures", "report", NEW_POD), "_x7 1x13")],
         {"5m": [(obj("report"), "1")], "12m": [(obj("report"), "1")]}),
    Case("BackgroundJobFailing", SILENT, "fixed by a rerun within the `for`; a healthy job",
         [(bj("bgjob_consecutive_failures", "report"), "0 1 1 1 0x10"),
          (bj("bgjob_consecutive_failures", "healthy"), "0x13")],
         {"3m": [], "6m": [], "12m": []}),
    Case("BackgroundJobFailing", RESOLVES, "success after failure; resume after auto-suspend",
         [(bj("bgjob_consecutive_failures", "report"), "1x10 0x10"),
          (bj("bgjob_consecutive_failures", "nightly"), "1 2 3x10 0x8")],
         {"9m": [(obj("nightly"), "3"), (obj("report"), "1")], "13m": []}),
    # -- BackgroundJobRetriesExhausted: Failing=True reason RetriesExhausted
    Case("BackgroundJobRetriesExhausted", FIRES,
         "limit 2: fail, retry, fail, retry, fail at 5m (the issue's replay); stays firing",
         [(cond("exhaust", "Failing", "True", "RetryPending"), "1 stale 1 stale"),
          (cond("exhaust", "Failing", "True", "RetryRunning"), "_ 1 stale 1 1 stale"),
          (cond("exhaust", "Failing", "True", "RetriesExhausted"), "_x5 1x25")],
         {"9m": [], "10m": [(obj("exhaust"), "1")], "19m": [(obj("exhaust"), "1")],
          "30m": [(obj("exhaust"), "1")]}),
    Case("BackgroundJobRetriesExhausted", FIRES, "a non-retryable exit code: final at once",
         [(cond("fatal", "Failing", "True", "RetriesExhausted"), "1x20")],
         {"4m": [], "5m": [(obj("fatal"), "1")], "20m": [(obj("fatal"), "1")]}),
    Case("BackgroundJobRetriesExhausted", SILENT,
         "a retry succeeds; retry limit 0 fails with LastRunFailed (BackgroundJobFailing's)",
         [(cond("flaky", "Failing", "True", "RetryPending"), "1 stale"),
          (cond("flaky", "Failing", "True", "RetryRunning"), "_ 1 stale"),
          (cond("flaky", "Failing", "False", "LastRunSucceeded"), "_ _ 1x20"),
          (cond("once", "Failing", "True", "LastRunFailed"), "1x20")],
         {"1m": [], "8m": [], "20m": []}),
    Case("BackgroundJobRetriesExhausted", RESOLVES, "a successful run at 10m",
         [(cond("exhaust", "Failing", "True", "RetriesExhausted"), "1x9 stale"),
          (cond("exhaust", "Failing", "False", "LastRunSucceeded"), "_x10 1x10")],
         {"7m": [(obj("exhaust"), "1")], "10m": [], "15m": []}),
    # -- BackgroundJobOverdue: Overdue=True
    Case("BackgroundJobOverdue", FIRES,
         "not started, then skipped at 4m (another reason, the same alert)",
         [(cond("nightly", "Overdue", "True", "NotStarted"), "1x3 stale"),
          (cond("nightly", "Overdue", "True", "MissedSchedule"), "_x4 1x16")],
         {"4m": [], "5m": [(obj("nightly"), "1")], "12m": [(obj("nightly"), "1")]}),
    Case("BackgroundJobOverdue", SILENT, "late by two minutes, then started",
         [(cond("nightly", "Overdue", "True", "NotStarted"), "1 1 stale"),
          (cond("nightly", "Overdue", "False", "OnTime"), "_ _ 1x10")],
         {"1m": [], "6m": [], "10m": []}),
    Case("BackgroundJobOverdue", RESOLVES, "suspended at 10m, resumed and on time at 16m",
         [(cond("nightly", "Overdue", "True", "NotStarted"), "1x9 stale"),
          (cond("nightly", "Overdue", "False", "Suspended"), "_x10 1x5 stale"),
          (cond("nightly", "Overdue", "False", "OnTime"), "_x16 1x5")],
         {"7m": [(obj("nightly"), "1")], "11m": [], "20m": []}),
    # -- BackgroundJobMissedRuns: increase(bgjob_missed_runs_total[1h]) > 0
    Case("BackgroundJobMissedRuns", FIRES, "a miss at 3m (the series was there at 0 before)",
         [(bj("bgjob_missed_runs_total", "nightly"), "0 0 0 1x70")],
         {"7m": [], "8m": [(obj("nightly"), "")], "60m": [(obj("nightly"), "")]}),
    Case("BackgroundJobMissedRuns", SILENT, "no miss; an operator restart resets the counter",
         [(bj("bgjob_missed_runs_total", "nightly"), "0x10 stale"),
          (bj("bgjob_missed_runs_total", "nightly", NEW_POD), "_x11 0x10"),
          (bj("bgjob_missed_runs_total", "steady"), "3x20")],
         {"5m": [], "15m": [], "20m": []}),
    Case("BackgroundJobMissedRuns", RESOLVES, "an hour after the last miss",
         [(bj("bgjob_missed_runs_total", "nightly"), "0 0 0 1x70")],
         {"30m": [(obj("nightly"), "")], "64m": []}),
    # -- BackgroundJobStale: bgjob_stale == 1 (the Stale condition; only with spec.freshness)
    Case("BackgroundJobStale", FIRES, "no success within maxAgeSinceSuccess from 2m; the "
         "operator pod is replaced at 10m: still one alert",
         [(bj("bgjob_stale", "export"), "0 0 1x8 stale"),
          (bj("bgjob_stale", "export", NEW_POD), "_x11 1x10")],
         {"6m": [], "7m": [(obj("export"), "1")], "20m": [(obj("export"), "1")]}),
    Case("BackgroundJobStale", SILENT, "fresh; stale for two minutes only; freshness unset",
         [(bj("bgjob_stale", "export"), "0x20"),
          (bj("bgjob_stale", "other"), "1 1 0x10"),
          (bj("bgjob_active_runs", "unwatched"), "0x20")],
         {"1m": [], "8m": [], "15m": []}),
    Case("BackgroundJobStale", RESOLVES, "a successful run at 10m",
         [(bj("bgjob_stale", "export"), "1x9 0x10")],
         {"7m": [(obj("export"), "1")], "10m": [], "15m": []}),
    # -- BgjobOperatorDown: absent(up{job, namespace} == 1)
    Case("BgjobOperatorDown", FIRES, "scrapes fail from 4m",
         [(series("up"), "1x3 0x20")],
         {"8m": [], "9m": [(OPERATOR, "1")], "20m": [(OPERATOR, "1")]}),
    Case("BgjobOperatorDown", FIRES, "no target at all (the pod is gone)",
         [(series("up", job="other-metrics"), "1x10")],
         {"5m": [(OPERATOR, "1")]}),
    Case("BgjobOperatorDown", SILENT, "a two-minute restart; another release's target down",
         [(series("up"), "1x3 0 0 1x15"),
          (series("up", job="other-metrics", namespace="other"), "0x20")],
         {"3m": [], "8m": [], "15m": []}),
    Case("BgjobOperatorDown", RESOLVES, "the operator is back up at 11m",
         [(series("up"), "1 0x9 1x10")],
         {"7m": [(OPERATOR, "1")], "11m": [], "15m": []}),
    # -- BgjobOperatorReconcileErrors: rate(errors[5m]) > 0 for 15m
    Case("BgjobOperatorReconcileErrors", FIRES, "a pass fails every minute",
         [(series("bgjob_reconcile_total", result="error"), "0+1x40")],
         {"15m": [], "17m": [(OPERATOR, "")], "40m": [(OPERATOR, "")]}),
    Case("BgjobOperatorReconcileErrors", SILENT,
         "a burst of errors (an API server restart); another release's errors",
         [(series("bgjob_reconcile_total", result="error"), "0 0 5 10x30"),
          (series("bgjob_reconcile_total", result="error", job="other-metrics"), "0+1x30")],
         {"5m": [], "10m": [], "25m": []}),
    Case("BgjobOperatorReconcileErrors", RESOLVES, "errors stop at 20m",
         [(series("bgjob_reconcile_total", result="error"), "0+1x20 20x20")],
         {"18m": [(OPERATOR, "")], "27m": []}),
]


def test_every_alert_has_every_kind_of_timeline(tmp_path: Path) -> None:
    alerts = alert_rules(render(tmp_path))
    assert set(alerts) == {"BackgroundJobFailing", "BackgroundJobRetriesExhausted",
                           "BackgroundJobOverdue", "BackgroundJobMissedRuns",
                           "BackgroundJobStale", "BgjobOperatorDown",
                           "BgjobOperatorReconcileErrors"}
    covered = {(c.alert, c.kind) for c in CASES}
    assert covered == {(a, k) for a in alerts for k in (FIRES, SILENT, RESOLVES)}


def test_every_alert_has_a_for_a_summary_naming_the_object_and_a_runbook(
        tmp_path: Path) -> None:
    docs = render(tmp_path, "metrics.prometheusRule.runbookBaseUrl=https://docs.example/bgjob")
    for name, rule in alert_rules(docs).items():
        assert rule["for"] and rule["for"] != "0s", name
        assert rule["annotations"]["runbook_url"] == f"https://docs.example/bgjob#{name.lower()}"
        if name.startswith("BackgroundJob"):
            assert "by (namespace, backgroundjob)" in rule["expr"], name
            assert "{{ $labels.namespace }}/{{ $labels.backgroundjob }}" in \
                rule["annotations"]["summary"], name
        else:
            assert f"{RELEASE_NS}/bgjob-operator" in rule["annotations"]["summary"], name
    custom = alert_rules(render(tmp_path, "metrics.prometheusRule.for=2m",
                                "metrics.prometheusRule.forByAlert.BgjobOperatorDown=30s"))
    assert custom["BackgroundJobFailing"]["for"] == "2m"
    assert custom["BgjobOperatorDown"]["for"] == "30s"
    assert custom["BgjobOperatorReconcileErrors"]["for"] == "15m"


def test_the_servicemonitor_honors_our_labels_by_default(tmp_path: Path) -> None:
    def endpoint(*sets: str) -> dict[str, Any]:
        docs = render(tmp_path, *sets)
        monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
        return dict(monitor["spec"]["endpoints"][0])

    assert endpoint()["honorLabels"] is True
    assert endpoint("metrics.serviceMonitor.honorLabels=false")["honorLabels"] is False


def promtool_tests(rules: dict[str, dict[str, Any]], rules_file: Path) -> dict[str, Any]:
    tests = []
    for case in CASES:
        rule = rules[case.alert]
        severity = rule["labels"]["severity"]
        checks = []
        for at, firing in case.expect.items():
            exp = []
            for labels, value in firing:
                full = {"severity": severity, **labels}
                exp.append({"exp_labels": full, "exp_annotations": rendered_annotations(
                    rule, {"alertname": case.alert, **full}, value)})
            checks.append({"eval_time": at, "alertname": case.alert, "exp_alerts": exp})
        tests.append({"interval": "1m",
                      "input_series": [{"series": s, "values": v} for s, v in case.input],
                      "alert_rule_test": checks})
    return {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}


def test_promtool_checks_and_unit_tests_the_rendered_rules(tmp_path: Path) -> None:
    docs = render(tmp_path)  # the chart's defaults: the `for`s users get
    rules_file = write_rules(docs, tmp_path / "bgjob-rules.yaml")
    check = promtool("check", "rules", str(rules_file))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 7 rules found" in check.stdout
    spec = tmp_path / "bgjob-rules.test.yaml"
    spec.write_text(yaml.safe_dump(promtool_tests(alert_rules(docs), rules_file),
                                   sort_keys=False))
    res = promtool("test", "rules", str(spec))
    assert res.returncode == 0, f"{res.stdout}{res.stderr}\n(test file: {spec})"
    assert "SUCCESS" in res.stdout
    # one promtool test group per case: a failure above names the alert and the eval time
    assert len(yaml.safe_load(spec.read_text())["tests"]) == len(CASES)
