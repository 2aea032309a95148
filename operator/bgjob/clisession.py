"""The plugin's session with the cluster: the client, the namespace, and one-line error
wording for every failure (CRD missing, not found, forbidden, unreachable); plus the shared
output helpers (-o json|yaml)."""

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import yaml
from kubernetes.config.config_exception import ConfigException

from bgjob import api, cliview, manifests
from bgjob.k8s import Forbidden, Kube, KubeError, NotFound, load_config, path_for

T = TypeVar("T")
EXIT_ERROR = 1
EXIT_TIMEOUT = 124
TOO_MANY_TRIES = 10
PARAM_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class CliError(Exception):
    """A failure the user should read as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _dump(doc: Any, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(doc, indent=2))
    else:
        print(yaml.safe_dump(doc, sort_keys=False), end="")


class Session:
    """One plugin invocation's view of the cluster: client, namespace, error wording."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        try:
            self.kube = Kube(load_config(args.kubeconfig, args.context, retries=0))
        except (ConfigException, OSError, TypeError, ValueError) as exc:
            raise CliError(f"no usable kubeconfig: {str(exc).splitlines()[0]}") from None
        self.server = str(self.kube.api_client.configuration.host)
        self.namespace = args.namespace or _kubeconfig_namespace(args)

    def call(self, fn: Callable[[], T], name: str | None = None) -> T:
        """Run one API call; turn every failure into a one-line CliError. Like kubectl, a
        429 (priority and fairness, or storage still initializing) is retried a few times."""
        for attempt in range(TOO_MANY_TRIES):
            try:
                return fn()
            except CliError:
                raise
            except KubeError as exc:
                if exc.status == 429 and attempt + 1 < TOO_MANY_TRIES:
                    time.sleep(1)
                    continue
                raise self.explain(exc, name) from None
            except Exception as exc:
                raise self.explain(exc, name) from None
        raise AssertionError("unreachable")

    def explain(self, exc: Exception, name: str | None = None) -> CliError:
        if isinstance(exc, NotFound):
            if name and "not found" in exc.message:
                return CliError(f'backgroundjob "{name}" not found in namespace '
                                f'"{self.namespace}"')
            return CliError("the BackgroundJob CRD is not installed in this cluster "
                            "(kubectl apply -f crds/, or install the Helm chart)")
        if isinstance(exc, Forbidden):
            return CliError(f"forbidden: {exc.message}")
        if isinstance(exc, KubeError):
            return CliError(f"{exc.reason or 'error'}: {exc.message}")
        return CliError(f"cannot reach the API server at {self.server}: {_root_cause(exc)}")

    def get(self, name: str) -> dict[str, Any]:
        return self.call(lambda: self.kube.get(api.API_VERSION, api.PLURAL, self.namespace,
                                               name), name)

    def all(self, all_namespaces: bool = False) -> list[dict[str, Any]]:
        ns = None if all_namespaces else self.namespace
        items = self.call(lambda: self.kube.list(api.API_VERSION, api.PLURAL, ns))
        return sorted(items, key=lambda i: (i["metadata"].get("namespace", ""),
                                            i["metadata"]["name"]))

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call(lambda: self.kube.patch(api.API_VERSION, api.PLURAL, self.namespace,
                                                 name, body), name)

    def job(self, job: str) -> dict[str, Any] | None:
        def get() -> dict[str, Any] | None:
            try:
                return self.kube.get("batch/v1", "jobs", self.namespace, job)
            except NotFound:  # the Job is not there (yet, or any more)
                return None

        return self.call(get)

    def events(self, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={name},involvedObject.kind={api.KIND}"
        doc = self.call(lambda: self.kube.request(
            "GET", path_for("v1", "events", self.namespace),
            query=[("fieldSelector", selector)]))
        return cliview.recent_events(doc.get("items") or [])

    def pods(self, job: str) -> list[dict[str, Any]]:
        items = self.call(lambda: self.kube.list(
            "v1", "pods", self.namespace, f"{manifests.JOB_NAME_LABEL}={job}"))
        return sorted(items, key=lambda p: p["metadata"].get("creationTimestamp", ""))

    def stream_logs(self, pod: str, container: str | None, follow: bool) -> Iterator[str]:
        query = [("follow", "true" if follow else "false")]
        if container:
            query.append(("container", container))
        path = path_for("v1", "pods", self.namespace, pod, "log")
        lines = self.kube.stream_lines(path, query)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except NotFound as exc:
                raise CliError(f"no logs: {exc.message}") from None
            except Exception as exc:
                raise self.explain(exc) from None
            yield line


def _root_cause(exc: BaseException) -> str:
    while True:
        inner = getattr(exc, "reason", None)
        if isinstance(inner, BaseException) and inner is not exc:
            exc = inner
            continue
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    if "Connection refused" in text or isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return text[:200]


def _kubeconfig_namespace(args: argparse.Namespace) -> str:
    from kubernetes import config

    try:
        contexts, ctx = config.list_kube_config_contexts(config_file=args.kubeconfig)
        if args.context:
            ctx = next(c for c in contexts if c["name"] == args.context)
        return str(ctx["context"].get("namespace") or "default")
    except Exception:
        return "default"


def _output(args: argparse.Namespace, doc: Any) -> bool:
    """Print ``doc`` for scripts when -o json|yaml was asked for."""
    if getattr(args, "output", "table") in ("json", "yaml"):
        _dump(doc, args.output)
        return True
    return False


def _as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _empty(s: Session, all_namespaces: bool, what: str = "BackgroundJobs") -> None:
    where = "" if all_namespaces else f" in namespace {s.namespace}"
    print(f"No {what} found{where}.", file=sys.stderr)
