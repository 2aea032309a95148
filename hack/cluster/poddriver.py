"""The pod driver: stands in for a kubelet on the local control plane.

There is no kubelet and no node, so nothing would ever run a pod. The driver watches pods and
writes their status the way a kubelet would (through the ``pods/status`` subresource): first
``Running``, then ``Succeeded`` or ``Failed`` with a container exit code. The real Job controller
sees those outcomes and finishes Jobs exactly as in a cluster.

Like a kubelet it also owns a Node (``sim-node``, address 127.0.0.1): it binds every pod to it
(``pods/binding``, as the scheduler would) and serves the kubelet's ``/containerLogs`` endpoint
over TLS on 127.0.0.1, so ``kubectl logs`` and ``kubectl bgjob logs`` work through the real API
server. A bound pod being deleted is finished and removed the way a kubelet does it (status
``Failed`` with exit code 137, then a zero-grace delete), so cancel and Replace behave as in a
cluster.

Convention (first match wins), read when the pod first appears:

* pod annotations ``sim.bgjob.dev/exit-code``, ``sim.bgjob.dev/duration-seconds`` and
  ``sim.bgjob.dev/never-start: "true"`` (the pod stays Pending, like an unpullable image);
* otherwise any container env var whose name ends in ``SIM_EXIT_CODE`` /
  ``SIM_DURATION_SECONDS`` / ``SIM_NEVER_START`` — so a BackgroundJob parameter ``SIM_EXIT_CODE``
  (env ``BGJOB_PARAM_SIM_EXIT_CODE``) chooses the outcome of one manual run;
* otherwise exit code 0 after 1 second.

A container's termination message (``state.terminated.message``) is, as a kubelet writes it:
the text of the annotation ``sim.bgjob.dev/termination-message`` or of an env var ending in
``SIM_TERMINATION_MESSAGE`` (what the program would write to its termination-message file);
otherwise, for a container with ``terminationMessagePolicy: FallbackToLogsOnError`` that
failed, the tail of its log (the last 80 lines, at most 2,048 bytes).
"""

from __future__ import annotations

import argparse
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("poddriver")
PREFIX = "sim.bgjob.dev/"
NODE = "sim-node"


@dataclass(frozen=True)
class Plan:
    exit_code: int = 0
    duration_seconds: float = 1.0
    never_start: bool = False
    termination_message: str | None = None


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
        termination_message=pick("termination-message", "SIM_TERMINATION_MESSAGE"),
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


FALLBACK_LINES = 80      # the kubelet's tail for FallbackToLogsOnError
FALLBACK_BYTES = 2048


def _container_statuses(pod: dict[str, Any], state: dict[str, Any],
                        plan: Plan | None = None) -> list[dict[str, Any]]:
    out = []
    for c in pod["spec"]["containers"]:
        own = state
        if plan is not None and "terminated" in state:
            message = termination_message(pod, c["name"], plan)
            if message is not None:
                own = {"terminated": {**state["terminated"], "message": message}}
        out.append({"name": c["name"], "image": c.get("image", ""), "imageID": "",
                    "ready": "running" in state, "restartCount": 0,
                    "started": "running" in state, "state": own})
    return out


def termination_message(pod: dict[str, Any], container: str, plan: Plan) -> str | None:
    """What a kubelet reports as the ended container's message (pure; see the module doc)."""
    if plan.termination_message is not None:
        return plan.termination_message
    spec: dict[str, Any] = next((c for c in (pod.get("spec") or {}).get("containers") or []
                                 if c.get("name") == container), {})
    if spec.get("terminationMessagePolicy") != "FallbackToLogsOnError" or plan.exit_code == 0:
        return None
    tail = "\n".join(log_lines(pod, container, plan)[-FALLBACK_LINES:]) + "\n"
    return tail.encode()[-FALLBACK_BYTES:].decode(errors="ignore")


def log_lines(pod: dict[str, Any], container: str, plan: Plan) -> list[str]:
    """What the simulated container "prints": its command line, then its exit (pure)."""
    spec: dict[str, Any] = next((c for c in (pod.get("spec") or {}).get("containers") or []
                 if c.get("name") == container), {})
    argv = [*(spec.get("command") or []), *(spec.get("args") or [])]
    name = pod["metadata"]["name"]
    lines = [f"sim: {name}/{container} started (image {spec.get('image', '?')})"]
    if argv:
        lines.append("sim: $ " + " ".join(argv))
    lines.append(f"sim: exit code {plan.exit_code}")
    return lines


@dataclass
class Run:
    """One simulated pod: its log lines so far and whether its container has ended."""
    pod: dict[str, Any]
    plan: Plan
    lines: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


# A kubelet keeps trying to report a pod's status until the API server takes it or the pod is
# gone; it never gives up on a connection error. So does the driver: without this, a pod whose
# final patch fell into an API outage stayed Running forever and its Job never finished.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 15.0  # a hung connection during an outage is a failure, not a wait
GIVE_UP = (404, 409, 422)       # gone, or a write that can never succeed as it is


def transient(exc: BaseException) -> bool:
    """Worth retrying: connection and timeout errors, 429, and 5xx (pure, unit-tested)."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        return status == 0 or status == 429 or status >= 500
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)  # OSError: timeouts too


def backoff_delays(first: float = RETRY_FIRST_SECONDS,
                   cap: float = RETRY_MAX_SECONDS) -> Iterator[float]:
    """0.5, 1, 2, 4, 8, 10, 10, … seconds: doubling, bounded."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


class Driver:
    def __init__(self, api: client.CoreV1Api,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = api
        self.sleep = sleep
        self.seen: set[str] = set()
        self.runs: dict[str, Run] = {}  # "ns/name" -> the pod's simulated run
        self.lock = threading.Lock()

    def _retrying(self, what: str, call: Callable[[], object]) -> bool:
        """Run ``call`` until it succeeds (True), or fails for good (False: the pod is gone,
        or the API refuses the write), retrying transient errors with bounded backoff."""
        delays = backoff_delays()
        while True:
            try:
                call()
                return True
            except Exception as exc:
                if isinstance(exc, ApiException) and exc.status in GIVE_UP:
                    return False
                if not transient(exc):
                    log.warning("%s failed: %s", what, exc)
                    return False
                delay = next(delays)
                log.info("%s: %s; retrying in %.1fs", what,
                         exc.reason if isinstance(exc, ApiException) else exc, delay)
                self.sleep(delay)

    def _patch(self, ns: str, name: str, status: dict[str, Any]) -> bool:
        return self._retrying(f"patch {ns}/{name} status", lambda: (
            self.api.patch_namespaced_pod_status(
                name, ns, {"status": status}, _request_timeout=REQUEST_TIMEOUT_SECONDS)))

    def register_node(self, port: int) -> None:
        """Create (or refresh) the Node the pods are bound to, pointing at our log server."""
        try:
            self.api.create_node({"metadata": {"name": NODE, "labels": {
                "kubernetes.io/hostname": NODE}}}, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise
        now = _now()
        self.api.patch_node_status(NODE, {"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "pod driver", "lastHeartbeatTime": now,
                            "lastTransitionTime": now}],
        }}, _preload_content=False)

    def bind(self, ns: str, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}}
        try:
            self.api.create_namespaced_pod_binding(name, ns, body, _preload_content=False)
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("bind %s/%s failed: %s", ns, name, exc.reason)

    def run_pod(self, pod: dict[str, Any], run: Run) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if not pod["spec"].get("nodeName"):
            self.bind(ns, name)
        if run.plan.never_start:
            return
        started = _now()
        running = {"running": {"startedAt": started}}
        ok = self._patch(ns, name, {
            "phase": "Running", "startTime": started,
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": _container_statuses(pod, running),
        })
        if not ok:
            return
        container = pod["spec"]["containers"][0]["name"]
        all_lines = log_lines(pod, container, run.plan)
        run.lines.extend(all_lines[:-1])
        if run.done.wait(run.plan.duration_seconds):
            return  # deleted meanwhile: finish() wrote the outcome
        run.lines.append(all_lines[-1])
        run.done.set()
        terminated = {"terminated": {
            "exitCode": run.plan.exit_code, "startedAt": started, "finishedAt": _now(),
            "reason": "Completed" if run.plan.exit_code == 0 else "Error",
        }}
        self._patch(ns, name, {
            "phase": "Succeeded" if run.plan.exit_code == 0 else "Failed",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": _container_statuses(pod, terminated, run.plan),
        })

    def finish(self, pod: dict[str, Any]) -> None:
        """A bound pod is being deleted: stop it like a kubelet would, then remove it."""
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        with self.lock:
            run = self.runs.pop(f"{ns}/{name}", None)
        if run is not None and not run.done.is_set():
            run.lines.append("sim: killed (exit code 137)")
            run.done.set()
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            now = _now()
            self._patch(ns, name, {
                "phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": _container_statuses(pod, {"terminated": {
                    "exitCode": 137, "reason": "Error", "startedAt": now, "finishedAt": now}}),
            })
        self._retrying(f"delete {ns}/{name}", lambda: self.api.delete_namespaced_pod(
            name, ns, grace_period_seconds=0, _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT_SECONDS))

    def handle(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            if (pod.get("spec") or {}).get("nodeName"):
                threading.Thread(target=self.finish, args=(pod,), daemon=True).start()
            return
        if (pod.get("status") or {}).get("phase") not in (None, "Pending"):
            return
        key = meta["uid"]
        with self.lock:
            if key in self.seen:
                return
            self.seen.add(key)
            run = Run(pod, plan_for(pod))
            self.runs[f"{meta['namespace']}/{meta['name']}"] = run
        threading.Thread(target=self.run_pod, args=(pod, run), daemon=True).start()

    def logs(self, ns: str, name: str) -> Run | None:
        with self.lock:
            return self.runs.get(f"{ns}/{name}")

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


def log_server(driver: Driver, cert: str, key: str) -> ThreadingHTTPServer:
    """The kubelet's ``/containerLogs/{ns}/{pod}/{container}`` on 127.0.0.1 (TLS)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            run = driver.logs(parts[1], parts[2]) if (
                len(parts) == 4 and parts[0] == "containerLogs") else None
            if run is None:
                self.send_error(404, "no such container")
                return
            follow = urllib.parse.parse_qs(url.query).get("follow") == ["true"]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = 0
            while True:
                done = run.done.is_set()
                for line in run.lines[sent:]:
                    data = (line + "\n").encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    sent += 1
                self.wfile.flush()
                if done or not follow:
                    break
                run.done.wait(0.2)
            self.wfile.write(b"0\r\n\r\n")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--tls-cert", required=True, help="serving cert for the log endpoint")
    parser.add_argument("--tls-key", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config.load_kube_config(config_file=args.kubeconfig)
    driver = Driver(client.CoreV1Api())
    server = log_server(driver, args.tls_cert, args.tls_key)
    driver.register_node(server.server_address[1])
    driver.loop()


if __name__ == "__main__":
    main()
