"""Child manifests and names: pure builders, checked field by field."""

from __future__ import annotations

import copy
from typing import Any

from bgjob import manifests
from bgjob.api import BackgroundJobSpec
from bgjob.schedule import compile_schedule

BJ: dict[str, Any] = {"metadata": {"name": "document-cleanup", "namespace": "platform",
                                   "uid": "u-1"}}


def spec(**kw: Any) -> BackgroundJobSpec:
    base: dict[str, Any] = {
        "schedule": {"daily": "02:00", "timeZone": "Europe/Berlin",
                     "startingDeadlineSeconds": 300},
        "parameters": {"cleanup_level": "normal", "dry-run": "no"},
        "timeoutSeconds": 7200,
        "retry": {"limit": 2, "nonRetryableExitCodes": [64, 2, 2]},
        "template": {"metadata": {"labels": {"team": "docs"}}, "spec": {"template": {"spec": {
            "containers": [{"name": "main", "image": "busybox",
                            "env": [{"name": "BGJOB_NAME", "value": "overridden?"},
                                    {"name": "KEEP", "value": "1"}]}]}}}},
    }
    base.update(kw)
    return BackgroundJobSpec.model_validate(base)


def env_of(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod_spec["containers"][0]["env"]}


def test_cronjob_carries_the_contract() -> None:
    s = spec()
    c = compile_schedule(s.schedule, "platform", "document-cleanup")  # type: ignore[arg-type]
    cj = manifests.cronjob_manifest(BJ, s, c, suspend=False)
    assert cj["metadata"]["name"] == "document-cleanup"
    assert cj["metadata"]["ownerReferences"] == [{
        "apiVersion": "bgjob.dev/v1alpha1", "kind": "BackgroundJob", "name": "document-cleanup",
        "uid": "u-1", "controller": True, "blockOwnerDeletion": True}]
    cs = cj["spec"]
    assert (cs["schedule"], cs["timeZone"], cs["startingDeadlineSeconds"]) == (
        "0 2 * * *", "Europe/Berlin", 300)
    # The operator is the gate: the CronJob allows, and makes its Jobs suspended.
    assert (cs["concurrencyPolicy"], cs["suspend"]) == ("Allow", False)
    assert cs["jobTemplate"]["spec"]["suspend"] is True
    assert cs["jobTemplate"]["metadata"]["finalizers"] == ["bgjob.dev/accounting"]
    assert (cs["successfulJobsHistoryLimit"], cs["failedJobsHistoryLimit"]) == (3, 3)
    tpl = cs["jobTemplate"]
    assert tpl["metadata"]["labels"] == {"team": "docs", "bgjob.dev/backgroundjob":
                                         "document-cleanup", "bgjob.dev/trigger": "scheduled"}
    job = tpl["spec"]
    assert job["activeDeadlineSeconds"] == 7200
    assert job["backoffLimit"] == 0
    assert job["podFailurePolicy"] == {"rules": [{"action": "FailJob", "onExitCodes": {
        "operator": "In", "values": [2, 64]}}]}
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    env = env_of(pod)
    assert env["BGJOB_NAME"] == "document-cleanup"
    assert env["BGJOB_TRIGGER"] == "scheduled" and env["BGJOB_ATTEMPT"] == "1"
    assert env["BGJOB_JOB_NAME"] == {"fieldRef": {
        "fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}
    assert "BGJOB_SCHEDULED_TIME" not in env  # the CronJob's Jobs carry it as an annotation
    assert env["BGJOB_PARAM_CLEANUP_LEVEL"] == "normal" and env["BGJOB_PARAM_DRY_RUN"] == "no"
    assert env["KEEP"] == "1"


def test_spec_hash_changes_with_the_spec_only() -> None:
    s = spec()
    c = compile_schedule(s.schedule, "platform", "document-cleanup")  # type: ignore[arg-type]
    a = manifests.cronjob_manifest(BJ, s, c, suspend=False)
    b = manifests.cronjob_manifest(BJ, s, c, suspend=False)
    d = manifests.cronjob_manifest(BJ, s, c, suspend=True)
    key = manifests.ANN_SPEC_HASH
    assert a["metadata"]["annotations"][key] == b["metadata"]["annotations"][key]
    assert a["metadata"]["annotations"][key] != d["metadata"]["annotations"][key]


def test_manual_job_overrides_parameters_and_keeps_user_restart_policy() -> None:
    s = spec(retry={"limit": 0})
    s.template["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    job = manifests.job_manifest(BJ, s, "document-cleanup-m-abc", "manual",
                                 params={"cleanup_level": "deep"})
    assert job["metadata"]["name"] == "document-cleanup-m-abc"
    assert job["metadata"]["labels"]["bgjob.dev/trigger"] == "manual"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    assert env_of(pod)["BGJOB_PARAM_CLEANUP_LEVEL"] == "deep"
    assert env_of(pod)["BGJOB_SCHEDULED_TIME"] == ""
    assert "podFailurePolicy" not in job["spec"]


def test_names_stay_within_limits_and_are_deterministic() -> None:
    long = "a" * 80
    assert len(manifests.cronjob_name(long)) == 52
    assert manifests.cronjob_name(long) == manifests.cronjob_name(long)
    assert manifests.cronjob_name("short") == "short"
    for name in (manifests.manual_job_name(long, "tok"), manifests.retry_job_name(long, 3)):
        assert len(name) <= 63
    assert manifests.manual_job_name("x", "t1") != manifests.manual_job_name("x", "t2")
    assert manifests.retry_job_name("x-123", 2) == "x-123-r2"
    assert manifests.fit_name("b" * 70, "s").endswith("-s")
    assert manifests.fit_name("b" * 70, "s") != manifests.fit_name("b" * 69 + "c", "s")


def test_env_key_normalises() -> None:
    assert manifests.env_key("batch-size.v2") == "BGJOB_PARAM_BATCH_SIZE_V2"


def test_containers_fall_back_to_their_log_as_termination_message_unless_set() -> None:
    s = spec(template={"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "busybox"},
        {"name": "side", "image": "busybox", "terminationMessagePolicy": "File"}]}}}})
    pod = manifests.job_manifest(BJ, s, "j", "manual")["spec"]["template"]["spec"]
    assert [c["terminationMessagePolicy"] for c in pod["containers"]] == [
        "FallbackToLogsOnError", "File"]
    assert s.schedule is not None
    cj = manifests.cronjob_manifest(BJ, s, compile_schedule(s.schedule, "platform", "x"),
                                    suspend=False)
    tpl = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert tpl["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # Drift is judged by the spec hash of what we sent, not field by field: the CronJob as the
    # API server returns it (its defaults filled in) is in line, so no update follows.
    stored = copy.deepcopy(cj)
    for c in stored["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]:
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("imagePullPolicy", "IfNotPresent")
    assert manifests.cronjob_drift(cj, stored) == []
    changed = spec(template={"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "busybox", "terminationMessagePolicy": "File"}]}}}})
    assert changed.schedule is not None
    want = manifests.cronjob_manifest(BJ, changed, compile_schedule(
        changed.schedule, "platform", "x"), suspend=False)
    assert manifests.cronjob_drift(want, stored) == ["spec.jobTemplate"]
