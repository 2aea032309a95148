"""Pure builders for the children: names, the CronJob, and operator-created Jobs.

Every builder returns plain dicts, the shape the API server takes, so they are golden-tested
without a cluster. Names are deterministic functions of the owner and the run, which is what
makes a restarted operator adopt instead of duplicating.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from datetime import datetime
from typing import Any

from bgjob import api
from bgjob.api import BackgroundJobSpec
from bgjob.schedule import Compiled
from bgjob.vocab import ANN_ADMITTED, FINALIZER, LABEL_SCHEDULE

MAX_NAME = 63
MAX_CRONJOB_NAME = 52  # the CronJob controller appends "-<11 digits>" to its Jobs
ANN_SPEC_HASH = f"{api.GROUP}/spec-hash"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def fit_name(base: str, suffix: str = "", limit: int = MAX_NAME) -> str:
    """``base-suffix`` within ``limit`` characters; long bases keep a hash of themselves."""
    full = f"{base}-{suffix}" if suffix else base
    if len(full) <= limit:
        return full
    tail = f"-{short_hash(base)}" + (f"-{suffix}" if suffix else "")
    return base[: limit - len(tail)].rstrip("-.") + tail


def cronjob_name(name: str) -> str:
    return fit_name(name, limit=MAX_CRONJOB_NAME)


def scheduled_job_name(name: str, scheduled: datetime) -> str:
    """Same scheme as the CronJob controller: scheduled time in minutes since the epoch."""
    return fit_name(name, str(int(scheduled.timestamp() // 60)))


def manual_job_name(name: str, token: str) -> str:
    return fit_name(name, f"m-{short_hash(token, 10)}")


def retry_job_name(first_job: str, attempt: int) -> str:
    return fit_name(first_job, f"r{attempt}")


def owner_reference(bj: dict[str, Any]) -> dict[str, Any]:
    meta = bj["metadata"]
    return {
        "apiVersion": api.API_VERSION, "kind": api.KIND, "name": meta["name"],
        "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
    }


def env_key(key: str) -> str:
    return "BGJOB_PARAM_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


def _env(name: str, trigger: str, attempt: int, scheduled: str | None,
         params: dict[str, str]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "BGJOB_NAME", "value": name},
        {"name": "BGJOB_TRIGGER", "value": trigger},
        {"name": "BGJOB_ATTEMPT", "value": str(attempt)},
        {"name": "BGJOB_JOB_NAME", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}}},
    ]
    if scheduled is not None:
        env.append({"name": "BGJOB_SCHEDULED_TIME", "value": scheduled})
    env += [{"name": env_key(k), "value": v} for k, v in sorted(params.items())]
    return env


def job_template(name: str, spec: BackgroundJobSpec, trigger: str, attempt: int = 1,
                 scheduled: str | None = None, params: dict[str, str] | None = None,
                 extra_annotations: dict[str, str] | None = None,
                 schedule_name: str | None = None) -> dict[str, Any]:
    """The JobTemplateSpec for one run: the user's template plus the contract's additions."""
    tpl = copy.deepcopy(spec.template)
    meta = tpl.setdefault("metadata", {}) or {}
    tpl["metadata"] = meta
    labels = dict(meta.get("labels") or {})
    labels.update({api.LABEL_OWNER: name, api.LABEL_TRIGGER: trigger})
    if schedule_name:
        labels[LABEL_SCHEDULE] = schedule_name
    meta["labels"] = labels
    annotations = dict(meta.get("annotations") or {})
    annotations[api.ANN_ATTEMPT] = str(attempt)
    if extra_annotations:
        annotations.update(extra_annotations)
    meta["annotations"] = annotations

    job_spec = tpl.setdefault("spec", {})
    job_spec.setdefault("backoffLimit", 0)  # retries are ours, with real backoff
    if spec.timeout_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.timeout_seconds
    pod = job_spec.setdefault("template", {})
    pod_meta = pod.setdefault("metadata", {}) or {}
    pod["metadata"] = pod_meta
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), api.LABEL_OWNER: name}
    pod_spec = pod.setdefault("spec", {})
    if not pod_spec.get("restartPolicy"):
        pod_spec["restartPolicy"] = "Never"
    if spec.retry.non_retryable_exit_codes:
        job_spec["podFailurePolicy"] = {"rules": [{
            "action": "FailJob",
            "onExitCodes": {"operator": "In",
                            "values": sorted(set(spec.retry.non_retryable_exit_codes))},
        }]}
    env = _env(name, trigger, attempt, scheduled, {**spec.parameters, **(params or {})})
    for container in pod_spec.get("containers") or []:
        # A failure's last log lines become its termination message, so status shows a
        # run's output without access to pod logs (an explicit choice is kept).
        container.setdefault("terminationMessagePolicy", "FallbackToLogsOnError")
        ours = {e["name"] for e in env}
        container["env"] = [e for e in container.get("env") or [] if e.get("name") not in ours]
        container["env"] += env
    return tpl


def spec_hash(obj: dict[str, Any]) -> str:
    return short_hash(json.dumps(obj, sort_keys=True, separators=(",", ":")), 16)


def cronjob_manifest(bj: dict[str, Any], spec: BackgroundJobSpec, compiled: Compiled,
                     suspend: bool) -> dict[str, Any]:
    meta = bj["metadata"]
    name = meta["name"]
    schedule = spec.schedule
    assert schedule is not None
    cj_spec: dict[str, Any] = {
        "schedule": compiled.cron,
        "timeZone": compiled.time_zone,
        "suspend": suspend,
        # The operator is the single gate for every run (concurrencyPolicy holds across
        # scheduled, manual and retry runs): the CronJob makes its Jobs suspended, carrying the
        # accounting finalizer, and the operator admits, waits or skips each one.
        "concurrencyPolicy": "Allow",
        "successfulJobsHistoryLimit": spec.history.successful_jobs,
        "failedJobsHistoryLimit": spec.history.failed_jobs,
        "jobTemplate": job_template(name, spec, "scheduled"),
    }
    cj_spec["jobTemplate"]["spec"]["suspend"] = True
    cj_spec["jobTemplate"]["metadata"]["finalizers"] = [FINALIZER]
    if schedule.starting_deadline_seconds is not None:
        cj_spec["startingDeadlineSeconds"] = schedule.starting_deadline_seconds
    manifest: dict[str, Any] = {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {
            "name": cronjob_name(name), "namespace": meta["namespace"],
            "labels": {api.LABEL_OWNER: name},
            "ownerReferences": [owner_reference(bj)],
        },
        "spec": cj_spec,
    }
    manifest["metadata"]["annotations"] = {ANN_SPEC_HASH: spec_hash(cj_spec)}
    return manifest


def job_manifest(bj: dict[str, Any], spec: BackgroundJobSpec, job_name: str, trigger: str,
                 attempt: int = 1, scheduled: datetime | None = None,
                 params: dict[str, str] | None = None,
                 extra_annotations: dict[str, str] | None = None,
                 schedule_name: str | None = None) -> dict[str, Any]:
    meta = bj["metadata"]
    sched_text = scheduled.strftime("%Y-%m-%dT%H:%M:%SZ") if scheduled else ""
    annotations = dict(extra_annotations or {})
    if scheduled is not None:
        annotations[api.ANN_SCHEDULED_TIME] = sched_text
    tpl = job_template(meta["name"], spec, trigger, attempt, sched_text, params, annotations,
                       schedule_name)
    tpl_meta = tpl.get("metadata") or {}
    tpl_meta["annotations"] = {**(tpl_meta.get("annotations") or {}), ANN_ADMITTED: "true"}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            **tpl_meta,
            "name": job_name, "namespace": meta["namespace"],
            "ownerReferences": [owner_reference(bj)],
            "finalizers": [FINALIZER],
        },
        "spec": tpl["spec"],
    }


# The CronJob fields the operator sets and owns; a change to any of them made outside the
# operator is drift and is put back. The Job template is compared by the spec hash only (the API
# server fills in defaults there, so a field-by-field comparison would never settle).
CRONJOB_OWNED_FIELDS = ("schedule", "timeZone", "suspend", "concurrencyPolicy",
                        "startingDeadlineSeconds", "successfulJobsHistoryLimit",
                        "failedJobsHistoryLimit")


def cronjob_drift(desired: dict[str, Any], existing: dict[str, Any]) -> list[str]:
    """The owned fields of ``existing`` that differ from ``desired`` (empty: in line)."""
    want, have = desired.get("spec") or {}, existing.get("spec") or {}
    out = [f"spec.{k}" for k in CRONJOB_OWNED_FIELDS if want.get(k) != have.get(k)]
    want_tpl = (want.get("jobTemplate") or {}).get("spec") or {}
    have_tpl = (have.get("jobTemplate") or {}).get("spec") or {}
    if bool(want_tpl.get("suspend")) != bool(have_tpl.get("suspend")):
        out.append("spec.jobTemplate.spec.suspend")
    if _spec_hash_of(desired) != _spec_hash_of(existing):
        out.append("spec.jobTemplate")
    return out


def _spec_hash_of(obj: dict[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_SPEC_HASH)


def _check_str_map(value: Any, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return f"{path}: must be a map of strings, not {type(value).__name__}"
    for k, v in value.items():
        if not isinstance(v, str):
            return f"{path}.{k}: must be a string, not {type(v).__name__}"
    return None


def _check_map(value: Any, path: str) -> str | None:
    if value is not None and not isinstance(value, dict):
        return f"{path}: must be an object, not {type(value).__name__}"
    return None


def template_problem(template: dict[str, Any]) -> str | None:
    """The first path of ``spec.template`` the Job builder cannot work with, as a one-line
    message naming the field, or None. The schema keeps the template open (the API server
    judges the rest when a Job is created); this checks the parts the builder reads and
    writes, so a template the schema let through can never crash a pass."""
    base = "spec.template"
    meta = template.get("metadata")
    checks = [_check_map(meta, f"{base}.metadata")]
    if isinstance(meta, dict):
        checks += [_check_str_map(meta.get("labels"), f"{base}.metadata.labels"),
                   _check_str_map(meta.get("annotations"), f"{base}.metadata.annotations")]
    job_spec = template.get("spec")
    checks.append(_check_map(job_spec, f"{base}.spec"))
    pod = job_spec.get("template") if isinstance(job_spec, dict) else None
    checks.append(_check_map(pod, f"{base}.spec.template"))
    if isinstance(pod, dict):
        pmeta = pod.get("metadata")
        checks.append(_check_map(pmeta, f"{base}.spec.template.metadata"))
        if isinstance(pmeta, dict):
            checks.append(_check_str_map(pmeta.get("labels"),
                                         f"{base}.spec.template.metadata.labels"))
        pspec = pod.get("spec")
        checks.append(_check_map(pspec, f"{base}.spec.template.spec"))
        if isinstance(pspec, dict):
            checks.append(_containers_problem(pspec, f"{base}.spec.template.spec"))
    return next((c for c in checks if c), None)


def _containers_problem(pod_spec: dict[str, Any], path: str) -> str | None:
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return f"{path}.containers: must be a non-empty list of containers"
    for i, c in enumerate(containers):
        where = f"{path}.containers[{i}]"
        if not isinstance(c, dict):
            return f"{where}: must be an object, not {type(c).__name__}"
        env = c.get("env")
        if env is None:
            continue
        if not isinstance(env, list):
            return f"{where}.env: must be a list of {{name, value}} objects"
        for k, e in enumerate(env):
            if not isinstance(e, dict) or not isinstance(e.get("name"), str):
                return (f"{where}.env[{k}]: must be an object with a name "
                        f"(like {{name: A, value: \"1\"}}), not {e!r}")
    return None
