"""The informer's store: grouped by BackgroundJob, exact after a relist, compact."""

from __future__ import annotations

import json
from typing import Any, cast

from bgjob.informer import Informer, pack, unpack
from bgjob.k8s import Kube


def job(uid: str, owner: str | None, ns: str = "ns", rv: str = "1") -> dict[str, Any]:
    labels = {"bgjob.dev/backgroundjob": owner} if owner else {}
    return {"metadata": {"name": f"job-{uid}", "namespace": ns, "uid": uid, "labels": labels,
                         "resourceVersion": rv, "managedFields": [{"big": "x" * 500}]},
            "spec": {"template": {}}, "status": {"active": 1}}


def informer(changes: list[tuple[str, str]]) -> Informer:
    return Informer(cast(Kube, None), "batch/v1", "jobs", None, changes.append)


def test_store_groups_children_by_their_backgroundjob() -> None:
    inf = informer([])
    assert inf._put(job("a", "cleanup")) == [("ns", "cleanup")]
    inf._put(job("b", "cleanup"))
    inf._put(job("c", "report"))
    assert sorted(j["metadata"]["uid"] for j in inf.get(("ns", "cleanup"))) == ["a", "b"]
    assert "spec" not in inf.get(("ns", "report"))[0]  # children keep metadata and status
    assert "managedFields" not in inf.get(("ns", "report"))[0]["metadata"]
    # a relabel moves it, and both groups change
    assert inf._put(job("c", "cleanup", rv="2")) == [("ns", "report"), ("ns", "cleanup")]
    assert inf.get(("ns", "report")) == []
    assert inf._delete(job("a", "cleanup")) == [("ns", "cleanup")]
    assert inf._delete(job("zz", "cleanup")) == []
    assert len(inf) == 2


def test_a_relist_replaces_the_store_and_reports_every_key_that_may_differ() -> None:
    inf = informer([])
    inf._put(job("a", "cleanup"))
    inf._put(job("b", "gone"))
    changed = inf._replace([job("a", "cleanup", rv="5"), job("c", "new")])
    assert changed == {("ns", "cleanup"), ("ns", "gone"), ("ns", "new")}
    assert inf.get(("ns", "gone")) == []
    assert inf.get(("ns", "cleanup"))[0]["metadata"]["resourceVersion"] == "5"


def test_pack_round_trips_the_slim_object() -> None:
    body = job("a", "cleanup")
    body["spec"] = {"schedule": {"cron": "0 2 * * *"}}
    slim = unpack(pack(body, keep_spec=True))
    assert slim["spec"] == body["spec"] and slim["status"] == body["status"]
    assert len(pack(body, keep_spec=True)) < 400


class _Lines:
    """A Kube stand-in that serves one watch stream."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def stream_lines(self, path: str, query: object) -> list[str]:
        return self.lines


def test_seen_through_follows_the_events_applied_to_the_store() -> None:
    events = [{"type": "ADDED", "object": job("a", "cleanup", rv="10")},
              {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
              {"type": "DELETED", "object": job("a", "cleanup", rv="15")}]
    seen: list[tuple[int, int]] = []
    inf = Informer(cast(Kube, _Lines([json.dumps(e) for e in events])), "batch/v1", "jobs",
                   None, lambda key: seen.append((inf.seen_through, len(inf.get(key)))))
    assert inf.seen_through == 0
    assert inf._watch("5") == "15"
    # each change is announced with the store and the number already updated together
    assert seen == [(10, 1), (15, 0)]
    assert inf.snapshot(("ns", "cleanup")) == (15, [])
    inf._seen("9")  # never goes back
    assert inf.seen_through == 15
