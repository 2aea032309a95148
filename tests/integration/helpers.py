"""Builders and probes shared by the integration tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import Cluster, eventually


def manifest(name: str, **spec: Any) -> str:
    """A BackgroundJob as JSON (kubectl takes it as YAML); the pod driver runs its pods."""
    spec.setdefault("template", {"spec": {"template": {"spec": {
        "containers": [{"name": "main", "image": "busybox:1.36"}]}}}})
    return json.dumps({"apiVersion": "bgjob.dev/v1alpha1", "kind": "BackgroundJob",
                       "metadata": {"name": name}, "spec": spec})


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def soon(seconds: float) -> str:
    return rfc3339(datetime.now(UTC) + timedelta(seconds=seconds))


def status(cluster: Cluster, name: str, ns: str) -> dict[str, Any]:
    return dict(((cluster.get("bgj", name, ns) or {}).get("status")) or {})


def condition(cluster: Cluster, name: str, ns: str, ctype: str) -> dict[str, Any]:
    for cond in status(cluster, name, ns).get("conditions") or []:
        if cond["type"] == ctype:
            return dict(cond)
    return {}


def jobs(cluster: Cluster, name: str, ns: str) -> list[dict[str, Any]]:
    return cluster.items("jobs", ns, f"bgjob.dev/backgroundjob={name}")


def job_names(cluster: Cluster, name: str, ns: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in jobs(cluster, name, ns))


def annotate(cluster: Cluster, name: str, ns: str, **annotations: str) -> None:
    pairs = [f"bgjob.dev/{k.replace('_', '-')}={v}" for k, v in annotations.items()]
    cluster.kubectl("-n", ns, "annotate", "--overwrite", f"bgj/{name}", *pairs)


def reasons(cluster: Cluster, name: str, ns: str) -> list[str]:
    return [e["reason"] for e in cluster.events(ns, name)]


def wait_event(cluster: Cluster, name: str, ns: str, reason: str,
               timeout: float = 30) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((e for e in cluster.events(ns, name) if e["reason"] == reason), None)

    return eventually(find, timeout, what=f"event {reason}")


def wait_runs(cluster: Cluster, name: str, ns: str, count: int,
              timeout: float = 60) -> dict[str, Any]:
    """Status once ``count`` runs have finished."""
    def done() -> dict[str, Any] | None:
        s = status(cluster, name, ns)
        return s if (s.get("stats") or {}).get("runs", 0) >= count else None

    return eventually(done, timeout, what=f"{count} finished runs of {name}")


def handled(cluster: Cluster, name: str, ns: str, token: str, timeout: float = 30) -> None:
    eventually(lambda: status(cluster, name, ns).get("lastHandledRunNow") == token, timeout,
               what=f"run-now {token} handled")
