"""A small in-memory stand-in for ``bgjob.k8s.Kube`` plus the bits of the world the reconciler
depends on (the Job controller's outcomes, the CronJob controller's ticks and pruning), with an
injected clock. Like the CronJob controller's fake job control: enough API semantics to make
a corner case a table row — resourceVersion preconditions (409), AlreadyExists, finalizers
holding a deleted object, merge patches — and nothing more."""

from __future__ import annotations

import builtins
import copy
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from bgjob import api
from bgjob.k8s import AlreadyExists, KubeError, NotFound
from bgjob.passctx import Observed

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a top of the hour, like topOfTheHour()


def fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeKube:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._rv = itertools.count(100)
        self._uid = itertools.count(1)
        self.writes: list[tuple[str, str, str]] = []   # (verb, plural, name)
        self.events: list[tuple[str, str, str]] = []
        self.lists: list[tuple[str, str]] = []            # (plural, selector) read
        self.fail_next: dict[tuple[str, str], KubeError] = {}  # (verb, plural) -> error, once

    # -- the Kube interface --------------------------------------------------------------

    def _check(self, verb: str, plural: str) -> None:
        err = self.fail_next.pop((verb, plural), None)
        if err is not None:
            raise err

    def _bump(self, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))

    def create(self, manifest: dict[str, Any], plural: str) -> dict[str, Any]:
        self._check("create", plural)
        meta = manifest["metadata"]
        key = (plural, meta["namespace"], meta["name"])
        if key in self.objects:
            raise AlreadyExists(409, "AlreadyExists", f"{plural} {meta['name']} exists")
        obj = copy.deepcopy(manifest)
        obj["metadata"]["uid"] = f"uid-{next(self._uid)}"
        obj["metadata"]["creationTimestamp"] = fmt(self.clock())
        obj.setdefault("status", {})
        self._bump(obj)
        self.objects[key] = obj
        self.writes.append(("create", plural, meta["name"]))
        return copy.deepcopy(obj)

    def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise NotFound(404, "NotFound", f"{plural} {name} not found")
        return copy.deepcopy(obj)

    def list(self, api_version: str, plural: str, namespace: str | None,
             label_selector: str = "") -> list[dict[str, Any]]:
        """Pods only (a row adds them with ``pod``); ``key=value`` selectors."""
        self.lists.append((plural, label_selector))
        key, _, value = label_selector.partition("=")
        return [copy.deepcopy(o) for (p, n, _), o in self.objects.items()
                if p == plural and n == namespace
                and (not key or (o["metadata"].get("labels") or {}).get(key) == value)]

    def replace(self, manifest: dict[str, Any], plural: str) -> dict[str, Any]:
        self._check("replace", plural)
        meta = manifest["metadata"]
        key = (plural, meta["namespace"], meta["name"])
        cur = self.objects.get(key)
        if cur is None:
            raise NotFound(404, "NotFound", "gone")
        if meta.get("resourceVersion") and meta["resourceVersion"] != \
                cur["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "stale")
        obj = copy.deepcopy(manifest)
        for k in ("uid", "creationTimestamp"):
            obj["metadata"][k] = cur["metadata"][k]
        obj["status"] = cur.get("status", {})
        self._bump(obj)
        self.objects[key] = obj
        self.writes.append(("replace", plural, meta["name"]))
        return copy.deepcopy(obj)

    def patch(self, api_version: str, plural: str, namespace: str, name: str,
              patch: dict[str, Any], sub: str | None = None) -> dict[str, Any]:
        self._check("patch", plural)
        key = (plural, namespace, name)
        cur = self.objects.get(key)
        if cur is None:
            raise NotFound(404, "NotFound", f"{plural} {name} not found")
        want_rv = (patch.get("metadata") or {}).get("resourceVersion")
        if want_rv and want_rv != cur["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        body = copy.deepcopy(patch)
        (body.get("metadata") or {}).pop("resourceVersion", None)
        if sub == "status":
            body = {"status": body.get("status")}
        obj = merge(cur, body)
        self._bump(obj)
        self.writes.append(("patch" + (f"/{sub}" if sub else ""), plural, name))
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            del self.objects[key]
        else:
            self.objects[key] = obj
        return copy.deepcopy(obj)

    def delete(self, api_version: str, plural: str, namespace: str, name: str,
               propagation: str = "Background") -> None:
        self._check("delete", plural)
        self.writes.append(("delete", plural, name))
        self.remove(plural, namespace, name)

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any],
                     resource_version: str = "") -> dict[str, Any]:
        body: dict[str, Any] = {"status": patch}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return self.patch(api.API_VERSION, api.PLURAL, namespace, name, body, sub="status")

    def event(self, bj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    # -- the world -----------------------------------------------------------------------

    def remove(self, plural: str, namespace: str, name: str) -> None:
        """Delete as the API server does: finalizers hold the object with a deletionTimestamp."""
        key = (plural, namespace, name)
        obj = self.objects.get(key)
        if obj is None:
            return
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = fmt(self.clock())
                self._bump(obj)
        else:
            del self.objects[key]

    def jobs(self, ns: str = "ns", owner: str | None = None) -> builtins.list[dict[str, Any]]:
        return [copy.deepcopy(o) for (p, n, _), o in sorted(self.objects.items())
                if p == "jobs" and n == ns and (owner is None or (
                    o["metadata"].get("labels") or {}).get(api.LABEL_OWNER) == owner)]

    def job(self, name: str, ns: str = "ns") -> dict[str, Any] | None:
        return self.objects.get(("jobs", ns, name))

    def bj(self, name: str = "bj", ns: str = "ns") -> dict[str, Any]:
        return self.objects[(api.PLURAL, ns, name)]

    def observed(self, name: str = "bj", ns: str = "ns") -> Observed:
        bj = copy.deepcopy(self.objects[(api.PLURAL, ns, name)])
        cjs = [copy.deepcopy(o) for (p, n, _), o in self.objects.items() if p == "cronjobs"
               and n == ns and (o["metadata"].get("labels") or {}).get(api.LABEL_OWNER) == name]
        return Observed(bj=bj, jobs=self.jobs(ns, name), cronjob=cjs[0] if cjs else None)

    def finish(self, name: str, ok: bool = True, exit_code: int = 1, after: float = 5,
               ns: str = "ns", reason: str = "") -> None:
        """The Job controller's verdict on a running Job (it never touches a suspended one)."""
        job = self.objects[("jobs", ns, name)]
        start = job["metadata"]["creationTimestamp"]
        done = fmt(self.clock() + timedelta(seconds=0))
        job["status"] = {"startTime": start, "conditions": [{
            "type": "Complete" if ok else "Failed", "status": "True",
            "reason": reason or ("CompletionsReached" if ok else "BackoffLimitExceeded"),
            "message": "" if ok else f"Container main failed with exit code {exit_code}",
            "lastTransitionTime": done}], **({"completionTime": done} if ok else {})}
        self._bump(job)

    def pod(self, job: str, message: str, ns: str = "ns") -> None:
        """The Job's pod, ended, its main container's termination message as a kubelet
        writes it."""
        self.objects[("pods", ns, f"{job}-pod")] = {
            "metadata": {"name": f"{job}-pod", "namespace": ns,
                         "creationTimestamp": fmt(self.clock()),
                         "labels": {"batch.kubernetes.io/job-name": job}},
            "spec": {"containers": [{"name": "main"}]},
            "status": {"containerStatuses": [{"name": "main", "state": {"terminated": {
                "exitCode": 1, "message": message}}}]}}

    def unsuspended(self, name: str, ns: str = "ns") -> bool:
        job = self.objects.get(("jobs", ns, name))
        return job is not None and not (job.get("spec") or {}).get("suspend")

    def cronjob_tick(self, at: datetime, ns: str = "ns", name: str = "bj",
                     manual: bool = False) -> str:
        """What the CronJob controller does at a due time: a Job from the template (here
        suspended, as the operator's template says), owned by the CronJob."""
        cj = next(o for (p, n, _), o in self.objects.items() if p == "cronjobs" and n == ns
                  and o["metadata"]["labels"].get(api.LABEL_OWNER) == name)
        tpl = copy.deepcopy(cj["spec"]["jobTemplate"])
        minutes = int(at.timestamp() // 60)
        job_name = f"{cj['metadata']['name']}-{minutes}" if not manual else f"{name}-by-hand"
        ann = dict(tpl["metadata"].get("annotations") or {})
        if manual:
            ann["cronjob.kubernetes.io/instantiate"] = "manual"
        else:
            ann[api.ANN_CRONJOB_SCHEDULED] = fmt(at)
        manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
            "name": job_name, "namespace": ns, "labels": tpl["metadata"].get("labels") or {},
            "annotations": ann, "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "CronJob", "name": cj["metadata"]["name"],
                "uid": cj["metadata"]["uid"], "controller": True}]},
            "spec": tpl["spec"]}
        self.create(manifest, "jobs")
        self.writes.pop()  # not the operator's write
        if not manual:
            cj.setdefault("status", {})["lastScheduleTime"] = fmt(at)
            self._bump(cj)
        return job_name

    def cronjob_prune(self, ns: str = "ns", name: str = "bj") -> None:
        """The CronJob controller's history limits: delete finished Jobs beyond them."""
        cj = next(o for (p, n, _), o in self.objects.items() if p == "cronjobs" and n == ns
                  and o["metadata"]["labels"].get(api.LABEL_OWNER) == name)
        mine = [j for j in self.jobs(ns, name) if any(
            r.get("uid") == cj["metadata"]["uid"] for r in j["metadata"]["ownerReferences"])]
        for ok, limit in ((True, cj["spec"]["successfulJobsHistoryLimit"]),
                          (False, cj["spec"]["failedJobsHistoryLimit"])):
            done = [j for j in mine if any(
                c["type"] == ("Complete" if ok else "Failed")
                for c in (j.get("status") or {}).get("conditions") or [])]
            done.sort(key=lambda j: j["metadata"]["creationTimestamp"], reverse=True)
            for j in done[limit:]:
                self.remove("jobs", ns, j["metadata"]["name"])
