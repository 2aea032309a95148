"""The one module that talks to the Kubernetes API (writes and the few reads not served by watches).

It speaks plain dicts over the official client's REST layer (no model classes: the operator
never needs them and they cost CPU and memory), counts every write it makes (the benchmark and
the steady-state test read the counter), and converts ``ApiException`` into the small set of
errors the reconciler decides on, once, here at the border.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from bgjob import __version__, api

USER_AGENT = f"bgjob-operator/{__version__}"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message or reason)
        self.status = status
        self.reason = reason
        self.message = message or reason


class NotFound(KubeError):
    pass


class AlreadyExists(KubeError):
    pass


class Invalid(KubeError):
    """The API server refused the object (422, or 400 for a malformed one)."""


class Forbidden(KubeError):
    pass


class NotLeader(KubeError):
    """A write refused before it was sent: this replica is not the active one (``fence``)."""


def _convert(status: int, reason: str, raw: Any) -> KubeError:
    message = ""
    try:
        body = json.loads(raw or "{}")
        message, reason = body.get("message", ""), body.get("reason", reason)
    except (ValueError, TypeError):
        message = str(raw or "")
    kind: type[KubeError] = KubeError
    if status == 404:
        kind = NotFound
    elif status == 409 and reason == "AlreadyExists":
        kind = AlreadyExists
    elif status in (400, 422):
        kind = Invalid
    elif status == 403:
        kind = Forbidden
    return kind(status, reason, message)


_DECODER = json.JSONDecoder()


def _metadata_of(data: bytes) -> dict[str, Any]:
    """``{"metadata": …}`` of an object as the API server sends it. A status patch answers
    with the whole object, and decoding a status with its run records was the largest single
    CPU cost of a launch burst (py-spy); the operator reads only the resourceVersion back.
    The first ``"metadata":`` key is the top-level one: it follows only ``apiVersion`` and
    ``kind`` (plain strings), so it parses exactly the metadata object. Anything else: decode
    it all."""
    text = data.decode()
    at = text.find('"metadata":')
    if at < 0:
        return dict(json.loads(text)) if text else {}
    start = at + len('"metadata":')
    while text[start] in " \t\r\n":
        start += 1
    meta, _ = _DECODER.raw_decode(text, start)
    return {"metadata": meta}


def load_config(kubeconfig: str | None = None, context: str | None = None,
                retries: int | None = None) -> client.ApiClient:
    """In-cluster config when there, else the kubeconfig (``KUBECONFIG`` or ~/.kube/config)."""
    cfg = client.Configuration()
    cfg.retries = retries
    try:
        if kubeconfig or context:
            raise config.ConfigException("explicit kubeconfig")
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, context=context,
                                client_configuration=cfg)
    cfg.connection_pool_maxsize = 32
    api_client = client.ApiClient(cfg)
    api_client.user_agent = USER_AGENT
    return api_client


def path_for(api_version: str, plural: str, namespace: str | None, name: str | None = None,
             sub: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def _resource(method: str, path: str) -> str:
    """``jobs``, ``backgroundjobs/status``…: what a write went to, for the write counters."""
    parts = path.strip("/").split("/")
    idx = parts.index("namespaces") + 2 if "namespaces" in parts else len(parts) - 1
    rest = parts[idx:]
    if method == "POST" or len(rest) < 3:
        return rest[0]
    return f"{rest[0]}/{rest[2]}"


class Kube:
    """Thread-safe thin REST wrapper; ``writes`` counts requests by verb and resource.

    ``fence``, when set, is asked before every write: with two replicas only the leader may
    write, and asking here, at the one door every write goes through, covers the passes and
    releases already running in threads when leadership is lost (``bgjob.leader``)."""

    def __init__(self, api_client: client.ApiClient,
                 fence: Callable[[], bool] | None = None) -> None:
        self.api_client = api_client
        self.fence = fence
        self.writes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json",
                query: list[tuple[str, str]] | None = None,
                timeout: float = 60, only_metadata: bool = False) -> dict[str, Any]:
        """The decoded answer; with ``only_metadata`` only its ``metadata`` (what a write
        needs back, the resourceVersion), without decoding a large status or spec."""
        if method != "GET":
            if self.fence is not None and not self.fence():
                raise NotLeader(0, "NotLeader", f"{method} {path}: this replica is on standby")
            with self._lock:
                self.writes[f"{method} {_resource(method, path)}"] += 1
        method_, url, headers, payload, post = self.api_client.param_serialize(
            method, path, query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"],
        )
        try:
            resp = self.api_client.call_api(method_, url, header_params=headers, body=payload,
                                            post_params=post, _request_timeout=timeout)
            data = resp.read()
        except ApiException as exc:
            raise _convert(int(exc.status or 0), exc.reason or "", exc.body) from None
        if not 200 <= resp.status < 300:
            raise _convert(resp.status, resp.reason or "", data)
        if only_metadata:
            return _metadata_of(data)
        return dict(json.loads(data)) if data else {}

    def stream_lines(self, path: str, query: list[tuple[str, str]]) -> Iterator[str]:
        """A streamed GET (a watch, or pod logs with ``follow``), one decoded line at a time."""
        method_, url, headers, payload, post = self.api_client.param_serialize(
            "GET", path, query_params=query, header_params={"Accept": "*/*"},
            auth_settings=["BearerToken"])
        try:
            resp = self.api_client.call_api(method_, url, header_params=headers, body=payload,
                                            post_params=post, _request_timeout=None)
        except ApiException as exc:
            raise _convert(int(exc.status or 0), exc.reason or "", exc.body) from None
        if not 200 <= resp.status < 300:
            raise _convert(resp.status, resp.reason or "", resp.read())
        pending = b""
        for chunk in resp.response.stream(4096, decode_content=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")

    # -- objects -------------------------------------------------------------------------

    def create(self, manifest: dict[str, Any], plural: str) -> dict[str, Any]:
        ns = manifest["metadata"].get("namespace")
        return self.request("POST", path_for(manifest["apiVersion"], plural, ns), manifest)

    def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return self.request("GET", path_for(api_version, plural, namespace, name))

    def list(self, api_version: str, plural: str, namespace: str | None,
             label_selector: str = "") -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        items = self.request("GET", path_for(api_version, plural, namespace), query=query)
        return list(items.get("items") or [])

    def replace(self, manifest: dict[str, Any], plural: str) -> dict[str, Any]:
        meta = manifest["metadata"]
        return self.request("PUT", path_for(manifest["apiVersion"], plural, meta["namespace"],
                                            meta["name"]), manifest)

    def patch(self, api_version: str, plural: str, namespace: str, name: str,
              patch: dict[str, Any], sub: str | None = None) -> dict[str, Any]:
        return self.request("PATCH", path_for(api_version, plural, namespace, name, sub), patch,
                            content_type="application/merge-patch+json")

    def delete(self, api_version: str, plural: str, namespace: str, name: str,
               propagation: str = "Background") -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        with contextlib.suppress(NotFound):
            self.request("DELETE", path_for(api_version, plural, namespace, name), body)

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any],
                     resource_version: str = "") -> dict[str, Any]:
        """A merge patch of status; with ``resource_version`` it fails (409) on a stale view.
        Returns only the object's ``metadata`` (its new resourceVersion is what a pass
        needs)."""
        body: dict[str, Any] = {"status": patch}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return self.request("PATCH", path_for(api.API_VERSION, api.PLURAL, namespace, name,
                                              "status"), body,
                            content_type="application/merge-patch+json", only_metadata=True)

    def event(self, bj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the BackgroundJob; failures to record are never fatal."""
        meta = bj["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": api.API_VERSION, "kind": api.KIND,
                               "name": meta["name"], "namespace": meta["namespace"],
                               "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "type": type_, "reason": reason, "message": message[:1024],
            "firstTimestamp": now[:19] + "Z", "lastTimestamp": now[:19] + "Z", "count": 1,
            "source": {"component": "bgjob-operator"},
            "reportingComponent": "bgjob.dev/operator", "reportingInstance": "bgjob-operator",
        }
        with contextlib.suppress(KubeError):  # the answer is not read: metadata only
            self.request("POST", path_for("v1", "events", meta["namespace"]), body,
                         only_metadata=True)
