"""The pod driver: stands in for a kubelet on the local control plane.

There is no kubelet and no node, so nothing would ever run a pod. The driver watches pods and
writes their status the way a kubelet would (through the ``pods/status`` subresource): first
``Running``, then ``Succeeded`` or ``Failed`` with a container exit code. The real Job controller
sees those outcomes and finishes Jobs exactly as in a cluster. Pods stay unbound (no nodeName),
so deleting them is immediate.

Convention (first match wins), read when the pod first appears:

* pod annotations ``sim.bgjob.dev/exit-code``, ``sim.bgjob.dev/duration-seconds`` and
  ``sim.bgjob.dev/never-start: "true"`` (the pod stays Pending, like an unpullable image);
* otherwise any container env var whose name ends in ``SIM_EXIT_CODE`` /
  ``SIM_DURATION_SECONDS`` / ``SIM_NEVER_START`` — so a BackgroundJob parameter ``SIM_EXIT_CODE``
  (env ``BGJOB_PARAM_SIM_EXIT_CODE``) chooses the outcome of one manual run;
* otherwise exit code 0 after 1 second.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("poddriver")
PREFIX = "sim.bgjob.dev/"


@dataclass(frozen=True)
class Plan:
    exit_code: int = 0
    duration_seconds: float = 1.0
    never_start: bool = False


def plan_for(pod: dict[str, Any]) -> Plan:
    """Read the simulated outcome from the pod (pure: tested in the unit tests)."""
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    env: dict[str, str] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for var in container.get("env") or []:
            if var.get("value") is not None:
                env[var["name"]] = str(var["value"])

    def pick(key: str, env_suffix: str) -> str | None:
        if PREFIX + key in ann:
            return str(ann[PREFIX + key])
        for name, value in env.items():
            if name.endswith(env_suffix) and value != "":
                return value
        return None

    exit_code = pick("exit-code", "SIM_EXIT_CODE")
    duration = pick("duration-seconds", "SIM_DURATION_SECONDS")
    never = pick("never-start", "SIM_NEVER_START")
    return Plan(
        exit_code=int(exit_code) if exit_code is not None else 0,
        duration_seconds=float(duration) if duration is not None else 1.0,
        never_start=(never or "").lower() == "true",
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _container_statuses(pod: dict[str, Any], state: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "ready": "running" in state,
            "restartCount": 0,
            "started": "running" in state,
            "state": state,
        }
        for c in pod["spec"]["containers"]
    ]


class Driver:
    def __init__(self, api: client.CoreV1Api) -> None:
        self.api = api
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def _patch(self, ns: str, name: str, status: dict[str, Any]) -> bool:
        try:
            self.api.patch_namespaced_pod_status(name, ns, {"status": status})
            return True
        except ApiException as exc:
            if exc.status not in (404, 409, 422):
                log.warning("patch %s/%s failed: %s", ns, name, exc.reason)
            return False

    def run_pod(self, pod: dict[str, Any], plan: Plan) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        started = _now()
        running = {"running": {"startedAt": started}}
        ok = self._patch(ns, name, {
            "phase": "Running", "startTime": started,
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": _container_statuses(pod, running),
        })
        if not ok:
            return
        time.sleep(plan.duration_seconds)
        terminated = {"terminated": {
            "exitCode": plan.exit_code, "startedAt": started, "finishedAt": _now(),
            "reason": "Completed" if plan.exit_code == 0 else "Error",
        }}
        self._patch(ns, name, {
            "phase": "Succeeded" if plan.exit_code == 0 else "Failed",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": _container_statuses(pod, terminated),
        })

    def handle(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") not in (
            None, "Pending"
        ):
            return
        key = meta["uid"]
        with self.lock:
            if key in self.seen:
                return
            self.seen.add(key)
        plan = plan_for(pod)
        if plan.never_start:
            return
        threading.Thread(target=self.run_pod, args=(pod, plan), daemon=True).start()

    def loop(self) -> None:
        rv = ""
        while True:
            try:
                if not rv:
                    listing = self.api.list_pod_for_all_namespaces(
                        _preload_content=False).json()  # plain dicts, no model parsing
                    rv = listing["metadata"]["resourceVersion"]
                    for pod in listing["items"]:
                        self.handle(pod)
                stream = watch.Watch().stream(
                    self.api.list_pod_for_all_namespaces, resource_version=rv,
                    timeout_seconds=300, allow_watch_bookmarks=True)
                for event in stream:
                    obj = event["raw_object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.handle(obj)
            except ApiException as exc:
                if exc.status == 410:
                    rv = ""
                else:
                    log.warning("watch failed: %s", exc.reason)
                    time.sleep(1)
            except Exception as exc:  # the driver must outlive API hiccups
                log.warning("watch error: %s", exc)
                time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config.load_kube_config(config_file=args.kubeconfig)
    Driver(client.CoreV1Api()).loop()


if __name__ == "__main__":
    main()
