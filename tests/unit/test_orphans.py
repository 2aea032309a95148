"""The orphan sweep: Jobs held by our finalizer whose BackgroundJob is gone are released, and
only then (the API is asked first: kopf may not have shown a BackgroundJob that exists)."""

from __future__ import annotations

from typing import Any

from bgjob import api
from bgjob.handlers import Controller
from tests.unit.fakekube import T0, Clock, FakeKube, fmt

FIN = "bgjob.dev/accounting"
KEY = ("ns", "bj")


class StubInformer:
    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube

    def get(self, key: tuple[str, str]) -> list[dict[str, Any]]:
        return self.kube.jobs(key[0], key[1])

    def owner_keys(self) -> list[tuple[str, str]]:
        return [KEY]


def held_job(kube: FakeKube, name: str, deleting: bool = True) -> None:
    meta: dict[str, Any] = {
        "name": name, "namespace": "ns", "uid": f"u-{name}", "resourceVersion": "5",
        "labels": {api.LABEL_OWNER: "bj"}, "finalizers": [FIN],
        "ownerReferences": [{"uid": "gone-uid", "controller": True}]}
    if deleting:
        meta["deletionTimestamp"] = fmt(T0)
    kube.objects[("jobs", "ns", name)] = {"metadata": meta, "spec": {}, "status": {}}


def controller(kube: FakeKube) -> Controller:
    c = Controller(kube)  # type: ignore[arg-type]
    c.informers["jobs"] = [StubInformer(kube)]  # type: ignore[list-item]
    c.acting.set()
    return c


def test_jobs_of_a_deleted_backgroundjob_are_released() -> None:
    kube = FakeKube(Clock())
    held_job(kube, "a")
    held_job(kube, "live", deleting=False)
    controller(kube)._release_orphans(KEY)
    assert kube.job("a") is None  # released, so the API server finished the deletion
    live = kube.job("live")
    assert live is not None and live["metadata"]["finalizers"] == [FIN]


def test_nothing_is_released_while_the_backgroundjob_exists_or_on_a_standby() -> None:
    kube = FakeKube(Clock())
    held_job(kube, "a")
    kube.objects[(api.PLURAL, "ns", "bj")] = {"metadata": {"name": "bj", "namespace": "ns"}}
    controller(kube)._release_orphans(KEY)  # kopf has not shown it yet, but it exists
    assert kube.job("a") is not None
    del kube.objects[(api.PLURAL, "ns", "bj")]
    standby = controller(kube)
    standby.acting.clear()
    standby._release_orphans(KEY)
    assert kube.job("a") is not None
